//! The session secret: the DataRow of an inserted `tenancy.enter_session` is dropped like
//! every inserted reply, and its value handed to the connection state (the next opening's
//! secret), in any chunking, whatever happens to the request that carried it.

use super::*;

/// A session opening and its statement count, queued with the position of its enter.
fn session_opening(commit_first: bool, implicit: bool, schema: bool) -> (Opening<'static>, u32) {
    let o = Opening {
        commit_first,
        implicit,
        read_only: implicit,
        enter: Enter::Session {
            hi: 1,
            lo: -2,
            secret: 77,
            next: 78,
        },
        search_path: schema.then_some("\"t_1\", public"),
    };
    let (_, n) = queued(|b| encode::opening(&o, false, b));
    (o, n)
}

fn harness_with(o: &Opening<'_>) -> Harness {
    let mut h = Harness::armed();
    h.m.queue_with_secret(|b| encode::opening(o, false, b), encode::secret_at(o));
    h
}

/// The replies to an opening of `n` statements, the enter (at `enter`) returning `secret`.
fn replies(n: u32, enter: u32, secret: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend(be::bind_complete());
        if i == enter {
            out.extend(be::row(secret));
            out.extend(be::complete("SELECT 1"));
        } else {
            // BEGIN, COMMIT or the search path (one short row of its own).
            out.extend(be::row("other"));
            out.extend(be::complete("SELECT 1"));
        }
    }
    out
}

fn carrier_ok() -> Vec<u8> {
    [
        be::bind_complete(),
        be::row("42"),
        be::complete("SELECT 1"),
        be::ready(b'T'),
    ]
    .concat()
}

#[test]
fn the_enter_statement_is_where_the_secret_comes_from() {
    // (commit_first, implicit, schema) -> index of enter_session among the statements.
    let table = [
        ((false, true, false), 0, 1),
        ((true, true, false), 1, 2),
        ((false, false, false), 1, 2),
        ((true, false, true), 2, 4),
        ((false, false, true), 1, 3),
    ];
    for ((commit_first, implicit, schema), at, n) in table {
        let (o, stmts) = session_opening(commit_first, implicit, schema);
        assert_eq!(
            encode::secret_at(&o),
            Some(at),
            "{commit_first} {implicit} {schema}"
        );
        assert_eq!(stmts, n, "{commit_first} {implicit} {schema}");
    }
    let token = Opening {
        commit_first: true,
        implicit: false,
        read_only: false,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    };
    assert_eq!(encode::secret_at(&token), None);
}

#[test]
fn the_next_secret_is_read_from_the_dropped_row_in_every_chunking() {
    for (case, (commit_first, implicit, schema)) in [
        (false, true, false),
        (true, true, false),
        (false, false, false),
        (true, false, true),
    ]
    .into_iter()
    .enumerate()
    {
        let (o, n) = session_opening(commit_first, implicit, schema);
        let at = encode::secret_at(&o).expect("session opening");
        let server = [replies(n, at, "-9223372036854775808"), carrier_ok()].concat();
        for chunks in chunkings(server.len(), 300 + case as u64) {
            let mut h = harness_with(&o);
            h.write(&fe::run("s1"), &[]).expect("write");
            let got = h.read(&server, &chunks).expect("read");
            assert_eq!(got, carrier_ok(), "case {case}, chunks {chunks:?}");
            assert_eq!(
                h.m.take_secret(),
                Some(i64::MIN),
                "case {case}, chunks {chunks:?}"
            );
            assert_eq!(h.m.take_secret(), None, "a secret is taken once");
            assert!(h.m.skips().is_empty());
            assert!(!h.m.failed);
        }
    }
}

#[test]
fn the_secret_is_kept_when_the_carrying_statement_then_fails() {
    // The server rotated the secret before the statement failed: the new one is the
    // connection's, whether the transaction commits or not.
    let (o, n) = session_opening(false, false, false);
    let failed = [
        be::bind_complete(),
        be::error("division by zero"),
        be::ready(b'E'),
    ]
    .concat();
    let server = [replies(n, 1, "12345"), failed.clone()].concat();
    for chunks in chunkings(server.len(), 400) {
        let mut h = harness_with(&o);
        h.write(&fe::run("s1"), &[]).expect("write");
        assert_eq!(h.read(&server, &chunks).expect("read"), failed);
        assert_eq!(h.m.take_secret(), Some(12345), "chunks {chunks:?}");
        assert!(!h.m.failed, "the carrier failed, not the opening");
    }
}

#[test]
fn a_refused_enter_leaves_no_secret() {
    // A wrong (burnt) secret: the error passes as the carrier's reply, and the connection
    // has no secret for another opening.
    let (o, _) = session_opening(false, false, false);
    let server = [
        be::bind_complete(),
        be::complete("BEGIN"),
        be::error("tenancy: wrong session secret"),
        be::ready(b'E'),
    ]
    .concat();
    let mut h = harness_with(&o);
    h.m.set_secret(5);
    assert_eq!(h.m.take_secret(), Some(5));
    h.write(&fe::run("s1"), &[]).expect("write");
    let got = h.read(&server, &[]).expect("read");
    assert_eq!(
        got,
        [be::error("tenancy: wrong session secret"), be::ready(b'E')].concat()
    );
    assert!(h.m.failed);
    assert_eq!(h.m.take_secret(), None);
}

#[test]
fn only_the_enter_row_is_a_secret() {
    // The search path's row (after the enter) and the carrier's own rows are not taken.
    let (o, n) = session_opening(false, false, true);
    let server = [replies(n, 1, "99"), carrier_ok()].concat();
    let mut h = harness_with(&o);
    h.write(&fe::run("s1"), &[]).expect("write");
    h.read(&server, &[]).expect("read");
    assert_eq!(h.m.take_secret(), Some(99));
    // A token opening takes nothing from its rows.
    let token = Opening {
        commit_first: false,
        implicit: false,
        read_only: false,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    };
    let mut h = harness_with(&token);
    h.write(&fe::run("s1"), &[]).expect("write");
    let server = [replies(2, 1, "1234"), carrier_ok()].concat();
    assert_eq!(h.read(&server, &[]).expect("read"), carrier_ok());
    assert_eq!(h.m.take_secret(), None);
}

#[test]
fn a_row_that_is_not_one_int8_is_no_secret() {
    // Too long for the capture, not a number, two columns: none is a secret, and none
    // breaks the stream.
    let two_columns = {
        let mut b = 2u16.to_be_bytes().to_vec();
        for v in ["1", "2"] {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v.as_bytes());
        }
        msg(b'D', &b)
    };
    let bad_rows = [
        be::row(&"1".repeat(40)),
        be::row("12x"),
        be::row(""),
        two_columns,
        msg(b'D', &[]),
    ];
    for (i, row) in bad_rows.into_iter().enumerate() {
        let (o, _) = session_opening(false, true, false);
        let server = [
            be::bind_complete(),
            row,
            be::complete("SELECT 1"),
            carrier_ok(),
        ]
        .concat();
        for chunks in chunkings(server.len(), 500 + i as u64).iter().step_by(5) {
            let mut h = harness_with(&o);
            h.m.set_secret(3);
            assert_eq!(h.m.take_secret(), Some(3));
            h.write(&fe::run("s1"), &[]).expect("write");
            assert_eq!(
                h.read(&server, chunks).expect("read"),
                carrier_ok(),
                "row {i}"
            );
            assert_eq!(h.m.take_secret(), None, "row {i}, chunks {chunks:?}");
            assert!(h.reader_at_boundary());
        }
    }
}

#[test]
fn the_session_opening_binds_tenant_halves_and_secrets_as_binary_int8() {
    let (o, _) = session_opening(false, false, false);
    let Enter::Session {
        hi,
        lo,
        secret,
        next,
    } = o.enter
    else {
        panic!("a session opening");
    };
    let (bytes, _) = queued(|b| encode::opening(&o, false, b));
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("tenancy_enter_session\0"), "{text:?}");
    // One parameter format code, binary; four parameters of eight bytes each, in order.
    let mut params = 1i16.to_be_bytes().to_vec();
    params.extend_from_slice(&1i16.to_be_bytes());
    params.extend_from_slice(&4i16.to_be_bytes());
    for v in [hi, lo, secret, next] {
        params.extend_from_slice(&8i32.to_be_bytes());
        params.extend_from_slice(&v.to_be_bytes());
    }
    assert!(
        bytes.windows(params.len()).any(|w| w == params),
        "{params:?} in {text:?}"
    );
}

/// A DataRow of several text values.
fn row_of(values: &[&str]) -> Vec<u8> {
    let mut b = (values.len() as u16).to_be_bytes().to_vec();
    for v in values {
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    msg(b'D', &b)
}

/// A pooled single-use opening (unnamed statements: COMMIT?, BEGIN?, the statement
/// timeout unless the enter statement is `tenancy.enter_pooled`, the enter statement):
/// every reply is dropped, in any chunking, and the first column of the enter statement's
/// row (longer than the capture room) is the backend pid the watchdog reads; no session
/// secret comes of it.
#[test]
fn a_pooled_opening_hands_the_backend_pid_over_and_drops_its_replies() {
    let enter_row = row_of(&[
        "48213",
        "0b7f6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "30000",
        "30000",
        "60000",
        "on",
        "notice",
    ]);
    for (case, (commit_first, begin, timeout)) in [
        (false, None, true),
        (true, None, true),
        (false, Some(true), true),
        (true, Some(false), true),
        (false, None, false),
        (true, None, false),
        (false, Some(true), false),
        (true, Some(false), false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut server = Vec::new();
        let plain = u32::from(commit_first) + u32::from(begin.is_some());
        for _ in 0..plain {
            server.extend(
                [
                    be::parse_complete(),
                    be::bind_complete(),
                    be::complete("BEGIN"),
                ]
                .concat(),
            );
        }
        // The statement timeout: one short row.
        if timeout {
            server.extend(
                [
                    be::parse_complete(),
                    be::bind_complete(),
                    be::row("30000"),
                    be::complete("SELECT 1"),
                ]
                .concat(),
            );
        }
        server.extend(
            [
                be::parse_complete(),
                be::bind_complete(),
                enter_row.clone(),
                be::complete("SELECT 1"),
            ]
            .concat(),
        );
        server.extend(carrier_ok());
        for chunks in chunkings(server.len(), 500 + case as u64) {
            let mut h = Harness::armed();
            h.m.capture_backend = true;
            let stmts = 2 * (1 + plain + u32::from(timeout));
            h.m.queue_with_secret(
                |b| {
                    encode::pooled_opening(
                        commit_first,
                        begin,
                        timeout.then_some("SELECT set_config('statement_timeout', '30000', true)"),
                        "SELECT pg_backend_pid(), tenancy.enter($1)",
                        "v3.k.t.n.1.2.mac",
                        b,
                    )
                },
                Some(stmts - 1),
            );
            h.write(&fe::run("s1"), &[]).expect("write");
            let got = h.read(&server, &chunks).expect("read");
            assert_eq!(got, carrier_ok(), "case {case}, chunks {chunks:?}");
            assert_eq!(
                h.m.backend.load(std::sync::atomic::Ordering::Relaxed),
                48213,
                "case {case}, chunks {chunks:?}"
            );
            assert_eq!(h.m.take_secret(), None, "no session secret");
            assert!(h.m.skips().is_empty());
            assert!(!h.m.failed);
        }
    }
}
