//! Table-driven cases: each is a frontend stream with messages queued in front of its
//! carrier and the server's replies; fed whole, cut at every offset and in random chunks,
//! the socket gets the same bytes and tokio-postgres the same replies.

use super::*;

/// One case.
struct Case {
    name: &'static str,
    /// Requests written (and counted) before the messages are queued.
    before: Vec<u8>,
    /// Simple queries sent ahead (`Splice::query_ahead`).
    ahead: u32,
    /// The queued messages and their statement count.
    queued: (Vec<u8>, u32),
    /// What tokio-postgres writes after queueing.
    carrier: Vec<u8>,
    /// Where the queued messages must land in `carrier`, and whether a Sync follows them.
    at: usize,
    sync: bool,
    /// Everything the server answers, from the first request on.
    server: Vec<u8>,
    /// What tokio-postgres must get.
    expect: Vec<u8>,
    /// Whether an inserted statement failed.
    failed: bool,
}

fn cases() -> Vec<Case> {
    let (opening, n) = explicit_opening();
    let opened = explicit_opening_replies();
    let carrier_ok = [
        be::bind_complete(),
        be::row("42"),
        be::complete("SELECT 1"),
        be::ready(b'T'),
    ]
    .concat();
    let query_ok = [
        be::row_description(),
        be::row("42"),
        be::complete("SELECT 1"),
        be::ready(b'T'),
    ]
    .concat();
    let run = fe::run("s3");
    let q = fe::query("SELECT 42");
    let implicit = Opening {
        commit_first: true,
        implicit: true,
        read_only: true,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    };
    let (implicit, implicit_n) = queued(|b| encode::opening(&implicit, true, b));
    let (enter, enter_n) = queued(|b| encode::transaction_enter("v2.k.t.1-2.3.4.mac", b));
    let (reset, reset_n) = queued(|b| encode::reset(true, b));
    let (parses, parses_n) = queued(|b| encode::parse_all(encode::PREPARED.iter().copied(), b));
    vec![
        Case {
            name: "extended carrier",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [opened.clone(), carrier_ok.clone()].concat(),
            expect: carrier_ok.clone(),
            failed: false,
        },
        Case {
            name: "simple-query carrier gets a Sync of the insertion's own",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: q.clone(),
            at: 0,
            sync: true,
            server: [opened.clone(), be::ready(b'T'), query_ok.clone()].concat(),
            expect: query_ok.clone(),
            failed: false,
        },
        Case {
            name: "error on an inserted statement, extended carrier",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                be::bind_complete(),
                be::complete("BEGIN"),
                be::bind_complete(),
                be::error("refused"),
                be::ready(b'E'),
            ]
            .concat(),
            expect: [be::error("refused"), be::ready(b'E')].concat(),
            failed: true,
        },
        Case {
            name: "error on an inserted statement, simple-query carrier",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: q.clone(),
            at: 0,
            sync: true,
            server: [
                be::bind_complete(),
                be::complete("BEGIN"),
                be::bind_complete(),
                be::error("refused"),
                be::ready(b'E'),
                query_ok.clone(),
            ]
            .concat(),
            expect: [be::error("refused"), query_ok.clone()].concat(),
            failed: true,
        },
        Case {
            name: "error on the carrier, extended",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                opened.clone(),
                be::bind_complete(),
                be::error("division by zero"),
                be::ready(b'E'),
            ]
            .concat(),
            expect: [
                be::bind_complete(),
                be::error("division by zero"),
                be::ready(b'E'),
            ]
            .concat(),
            failed: false,
        },
        Case {
            name: "error on the carrier, simple query",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: q.clone(),
            at: 0,
            sync: true,
            server: [
                opened.clone(),
                be::ready(b'T'),
                be::error("division by zero"),
                be::ready(b'E'),
            ]
            .concat(),
            expect: [be::error("division by zero"), be::ready(b'E')].concat(),
            failed: false,
        },
        Case {
            name: "notices, parameter status and notifications interleaved pass",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                be::notification("a"),
                be::bind_complete(),
                be::notice("n1"),
                be::complete("BEGIN"),
                be::parameter_status("TimeZone", "UTC"),
                be::bind_complete(),
                be::row(""),
                be::notice("n2"),
                be::complete("SELECT 1"),
                be::bind_complete(),
                be::row("\"t_1\", public"),
                be::complete("SELECT 1"),
                be::notification("b"),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: [
                be::notification("a"),
                be::notice("n1"),
                be::parameter_status("TimeZone", "UTC"),
                be::notice("n2"),
                be::notification("b"),
                carrier_ok.clone(),
            ]
            .concat(),
            failed: false,
        },
        Case {
            name: "replies to earlier requests pass, data rows included",
            before: [fe::run("s1"), q.clone()].concat(),
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                carrier_ok.clone(),
                query_ok.clone(),
                opened.clone(),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: [carrier_ok.clone(), query_ok.clone(), carrier_ok.clone()].concat(),
            failed: false,
        },
        Case {
            name: "a dropped statement's Close and Sync go first",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: [fe::close("s2"), run.clone()].concat(),
            at: fe::close("s2").len(),
            sync: false,
            server: [
                be::close_complete(),
                be::ready(b'I'),
                opened.clone(),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: [be::close_complete(), be::ready(b'I'), carrier_ok.clone()].concat(),
            failed: false,
        },
        Case {
            name: "a deferred COMMIT sent ahead goes first",
            before: vec![],
            ahead: 1,
            queued: (opening.clone(), n),
            carrier: [fe::query("COMMIT"), run.clone()].concat(),
            at: fe::query("COMMIT").len(),
            sync: false,
            server: [
                be::complete("COMMIT"),
                be::ready(b'I'),
                opened.clone(),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: [be::complete("COMMIT"), be::ready(b'I'), carrier_ok.clone()].concat(),
            failed: false,
        },
        Case {
            name: "implicit read-only opening with a deferred COMMIT, carried by a prepare",
            before: vec![],
            ahead: 0,
            queued: (implicit, implicit_n),
            carrier: fe::prepare("s4", "SELECT 42"),
            at: 0,
            sync: false,
            server: [
                be::bind_complete(),
                be::complete("COMMIT"),
                be::bind_complete(),
                be::row(""),
                be::complete("SELECT 1"),
                be::parse_complete(),
                msg(b't', &[0, 0]),
                be::row_description(),
                be::ready(b'I'),
            ]
            .concat(),
            expect: [
                be::parse_complete(),
                msg(b't', &[0, 0]),
                be::row_description(),
                be::ready(b'I'),
            ]
            .concat(),
            failed: false,
        },
        Case {
            name: "transaction-mode pooler: unnamed Parse of enter",
            before: vec![],
            ahead: 0,
            queued: (enter, enter_n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                be::parse_complete(),
                be::bind_complete(),
                be::row(""),
                be::complete("SELECT 1"),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: carrier_ok.clone(),
            failed: false,
        },
        Case {
            name: "reset in front of a Parse, error on it",
            before: vec![],
            ahead: 0,
            queued: (reset, reset_n),
            carrier: fe::prepare("s5", "SELECT 1"),
            at: 0,
            sync: false,
            server: [
                be::bind_complete(),
                be::error("prepared statement does not exist"),
                be::ready(b'I'),
            ]
            .concat(),
            expect: [
                be::error("prepared statement does not exist"),
                be::ready(b'I'),
            ]
            .concat(),
            failed: true,
        },
        Case {
            name: "statements prepared at connect, carried by an empty query",
            before: vec![],
            ahead: 0,
            queued: (parses, parses_n),
            carrier: fe::query(""),
            at: 0,
            sync: true,
            server: [
                vec![be::parse_complete(); parses_n as usize].concat(),
                be::ready(b'I'),
                be::empty_query(),
                be::ready(b'I'),
            ]
            .concat(),
            expect: [be::empty_query(), be::ready(b'I')].concat(),
            failed: false,
        },
        Case {
            name: "no-data replies of a statement without rows are dropped",
            before: vec![],
            ahead: 0,
            queued: (opening.clone(), n),
            carrier: run.clone(),
            at: 0,
            sync: false,
            server: [
                be::bind_complete(),
                be::no_data(),
                be::complete("BEGIN"),
                opened[be::bind_complete().len() + be::complete("BEGIN").len()..].to_vec(),
                carrier_ok.clone(),
            ]
            .concat(),
            expect: carrier_ok.clone(),
            failed: false,
        },
    ]
}

/// The socket's expected bytes for `c`.
fn wire(c: &Case) -> Vec<u8> {
    let mut w = c.before.clone();
    w.extend_from_slice(&c.carrier[..c.at]);
    w.extend_from_slice(&c.queued.0);
    if c.sync {
        w.extend_from_slice(&SYNC);
    }
    w.extend_from_slice(&c.carrier[c.at..]);
    w
}

fn set_up(c: &Case) -> Harness {
    let mut h = Harness::armed();
    h.write(&c.before, &[]).expect("earlier requests");
    h.m.queries_ahead = c.ahead;
    let (msgs, n) = (c.queued.0.clone(), c.queued.1);
    h.m.queue(|b| {
        b.extend_from_slice(&msgs);
        n
    });
    h
}

#[test]
fn every_case_in_every_chunking() {
    for (i, c) in cases().iter().enumerate() {
        let want_wire = wire(c);
        for chunks in chunkings(c.carrier.len(), i as u64) {
            let mut h = set_up(c);
            let got = h.write(&c.carrier, &chunks).expect("write");
            let got = [c.before.clone(), got].concat();
            assert_eq!(got, want_wire, "{}: frontend, chunks {chunks:?}", c.name);
        }
        for chunks in chunkings(c.server.len(), 100 + i as u64) {
            let mut h = set_up(c);
            h.write(&c.carrier, &[]).expect("write");
            let got = h.read(&c.server, &chunks).expect("read");
            assert_eq!(got, c.expect, "{}: backend, chunks {chunks:?}", c.name);
            assert_eq!(
                h.m.failed, c.failed,
                "{}: failed, chunks {chunks:?}",
                c.name
            );
            assert!(h.m.skips().is_empty(), "{}: left {:?}", c.name, h.m.skips());
            assert!(h.reader_at_boundary(), "{}", c.name);
        }
    }
}

#[test]
fn a_truncated_stream_passes_a_prefix_and_never_panics() {
    for c in cases() {
        for cut in 0..c.server.len() {
            let mut h = set_up(&c);
            h.write(&c.carrier, &[]).expect("write");
            let got = h.read(&c.server[..cut], &[cut / 2]).expect("read");
            assert!(c.expect.starts_with(&got), "{}: cut at {cut}", c.name);
        }
    }
}

#[test]
fn later_requests_after_a_case_are_not_filtered() {
    for c in cases() {
        let mut h = set_up(&c);
        h.write(&c.carrier, &[]).expect("write");
        h.read(&c.server, &[]).expect("read");
        let next = [
            be::bind_complete(),
            be::row("7"),
            be::complete("SELECT 1"),
            be::ready(b'I'),
        ]
        .concat();
        h.write(&fe::run("s9"), &[]).expect("write");
        assert_eq!(h.read(&next, &[]).expect("read"), next, "{}", c.name);
    }
}
