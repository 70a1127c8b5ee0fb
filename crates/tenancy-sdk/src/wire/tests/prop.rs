//! Property test: random requests and replies, with and without an inserted opening that
//! succeeds or fails, asynchronous messages anywhere, random chunking of both directions.
//! What tokio-postgres gets equals the model's reference: the server's replies without
//! those of the inserted statements (whose first error, if any, stands for the carrier's
//! reply).

use proptest::prelude::{
    any, prop_assert, prop_assert_eq, proptest, ProptestConfig, Strategy, TestCaseError,
};
use proptest::{bool as pbool, collection, option, sample};

use super::*;

/// A request of tokio-postgres, and what the server answers it.
#[derive(Debug, Clone)]
struct Request {
    /// A simple Query (else Bind, Execute, Sync).
    simple: bool,
    rows: usize,
    fails: bool,
}

/// One scenario.
#[derive(Debug, Clone)]
struct Scenario {
    /// Requests answered before the opening is queued.
    before: Vec<Request>,
    /// Rows each inserted statement returns.
    inserted: Vec<usize>,
    /// The inserted statement that fails, if any.
    fail_at: Option<usize>,
    carrier: Request,
    /// Asynchronous messages: (position among the server's messages, kind).
    asyncs: Vec<(usize, u8)>,
    write_cuts: Vec<usize>,
    read_cuts: Vec<usize>,
}

fn request() -> impl Strategy<Value = Request> {
    (any::<bool>(), 0usize..4, pbool::weighted(0.2)).prop_map(|(simple, rows, fails)| Request {
        simple,
        rows,
        fails,
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        collection::vec(request(), 0..4),
        collection::vec(0usize..3, 1..5),
        option::weighted(0.3, 0usize..5),
        request(),
        collection::vec((0usize..64, sample::select(vec![b'N', b'S', b'A'])), 0..5),
        collection::vec(0usize..512, 0..12),
        collection::vec(0usize..1024, 0..24),
    )
        .prop_map(
            |(before, inserted, fail_at, carrier, asyncs, write_cuts, read_cuts)| {
                let fail_at = fail_at.filter(|&f| f < inserted.len());
                Scenario {
                    before,
                    inserted,
                    fail_at,
                    carrier,
                    asyncs,
                    write_cuts,
                    read_cuts,
                }
            },
        )
}

fn request_bytes(r: &Request) -> Vec<u8> {
    if r.simple {
        fe::query("SELECT v FROM t")
    } else {
        fe::run("s1")
    }
}

/// The server's answer to a request, message by message.
fn replies(r: &Request) -> Vec<Vec<u8>> {
    let mut m = Vec::new();
    m.push(if r.simple {
        be::row_description()
    } else {
        be::bind_complete()
    });
    m.extend((0..r.rows).map(|i| be::row(&i.to_string())));
    if r.fails {
        m.push(be::error("carrier failed"));
        m.push(be::ready(b'E'));
    } else {
        m.push(be::complete("SELECT"));
        m.push(be::ready(b'I'));
    }
    m
}

fn async_message(kind: u8) -> Vec<u8> {
    match kind {
        b'N' => be::notice("note"),
        b'S' => be::parameter_status("application_name", "x"),
        _ => be::notification("chan"),
    }
}

/// Server messages, each with whether tokio-postgres must get it.
fn server(s: &Scenario) -> Vec<(Vec<u8>, bool)> {
    let mut out: Vec<(Vec<u8>, bool)> = Vec::new();
    for r in &s.before {
        out.extend(replies(r).into_iter().map(|m| (m, true)));
    }
    let mut failed = false;
    for (i, &rows) in s.inserted.iter().enumerate() {
        if s.fail_at == Some(i) {
            out.push((be::error("refused"), true));
            failed = true;
            break;
        }
        out.push((be::bind_complete(), false));
        out.extend((0..rows).map(|_| (be::row("x"), false)));
        out.push((be::complete("SELECT 1"), false));
    }
    if s.carrier.simple {
        // The insertion's own Sync: the server runs the Query after it either way.
        out.push((be::ready(if failed { b'E' } else { b'T' }), false));
        out.extend(replies(&s.carrier).into_iter().map(|m| (m, true)));
    } else if failed {
        // The server skipped the carrier up to its Sync.
        out.push((be::ready(b'E'), true));
    } else {
        out.extend(replies(&s.carrier).into_iter().map(|m| (m, true)));
    }
    let mut asyncs = s.asyncs.clone();
    asyncs.sort_by_key(|a| std::cmp::Reverse(a.0));
    for (pos, kind) in asyncs {
        out.insert(pos.min(out.len()), (async_message(kind), true));
    }
    out
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let mut h = Harness::armed();
    let before: Vec<u8> = s.before.iter().flat_map(request_bytes).collect();
    h.write(&before, &s.write_cuts)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let opening = want_wire_opening(s);
    let n = s.inserted.len() as u32;
    let msgs = opening.clone();
    h.m.queue(|b| {
        b.extend_from_slice(&msgs);
        n
    });
    let carrier = request_bytes(&s.carrier);
    let wire = h
        .write(&carrier, &s.write_cuts)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut want_wire = opening;
    if s.carrier.simple {
        want_wire.extend_from_slice(&SYNC);
    }
    want_wire.extend_from_slice(&carrier);
    prop_assert_eq!(wire, want_wire);

    let msgs = server(s);
    let stream: Vec<u8> = msgs.iter().flat_map(|(m, _)| m.clone()).collect();
    let reference: Vec<u8> = msgs
        .iter()
        .filter(|(_, keep)| *keep)
        .flat_map(|(m, _)| m.clone())
        .collect();
    // Whole messages one by one, and random chunks: both give the reference.
    let mut whole = Harness::armed();
    whole
        .write(&before, &[])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let o = want_wire_opening(s);
    whole.m.queue(|b| {
        b.extend_from_slice(&o);
        n
    });
    whole
        .write(&carrier, &[])
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut one_by_one = Vec::new();
    for (m, _) in &msgs {
        one_by_one.extend(
            whole
                .read(m, &[])
                .map_err(|e| TestCaseError::fail(e.to_string()))?,
        );
    }
    prop_assert_eq!(&one_by_one, &reference);
    let got = h
        .read(&stream, &s.read_cuts)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&got, &reference);
    prop_assert_eq!(h.m.failed, s.fail_at.is_some());
    prop_assert!(h.m.skips().is_empty());
    Ok(())
}

fn want_wire_opening(s: &Scenario) -> Vec<u8> {
    let run = fe::run("tenancy_x");
    s.inserted
        .iter()
        .flat_map(|_| run[..run.len() - SYNC.len()].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn chunked_streams_filter_like_the_reference(s in scenario()) {
        check(&s)?;
    }
}
