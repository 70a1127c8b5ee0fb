//! One test per assumption the splice makes about tokio-postgres (listed at the top of
//! `wire/mod.rs`). tokio-postgres runs over the real `SpliceStream` on an in-memory
//! duplex; the peer is a scripted byte peer that frames what it receives, logs every
//! frontend message and answers with the protocol's fixed replies (no SQL is run: these
//! pin tokio-postgres' framing, the behaviour under test).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;
use tokio_postgres::{Client, NoTls};

use super::super::{Enter, Opening, Splice, SpliceStream};
use super::{be, msg};

/// Frontend messages the peer received after start-up: (type, body).
type Log = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// The first NUL-terminated string of `b`, and the rest.
fn cstr(b: &[u8]) -> (String, &[u8]) {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (
        String::from_utf8_lossy(&b[..end]).into_owned(),
        &b[(end + 1).min(b.len())..],
    )
}

/// The scripted peer. `ready`: start-up's ReadyForQuery waits for it.
async fn peer(mut io: DuplexStream, log: Log, ready: oneshot::Receiver<()>) -> std::io::Result<()> {
    let len = io.read_u32().await? as usize;
    let mut startup = vec![0; len - 4];
    io.read_exact(&mut startup).await?;
    io.write_all(
        &[
            msg(b'R', &0u32.to_be_bytes()),
            msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]),
        ]
        .concat(),
    )
    .await?;
    let _ = ready.await;
    io.write_all(&be::ready(b'I')).await?;
    let mut statements: HashMap<String, String> = HashMap::new();
    let mut portals: HashMap<String, String> = HashMap::new();
    let mut copying = false;
    loop {
        let t = match io.read_u8().await {
            Ok(t) => t,
            Err(_) => return Ok(()),
        };
        let len = io.read_u32().await? as usize;
        let mut body = vec![0; len - 4];
        io.read_exact(&mut body).await?;
        log.lock().expect("log").push((t, body.clone()));
        let reply = match t {
            b'P' => {
                let (name, rest) = cstr(&body);
                statements.insert(name, cstr(rest).0);
                be::parse_complete()
            }
            b'D' if body.first() == Some(&b'S') => [msg(b't', &[0, 0]), be::no_data()].concat(),
            b'D' => be::no_data(),
            b'B' => {
                let (portal, rest) = cstr(&body);
                let sql = statements.get(&cstr(rest).0).cloned().unwrap_or_default();
                portals.insert(portal, sql);
                be::bind_complete()
            }
            b'E' if portals
                .get(&cstr(&body).0)
                .is_some_and(|s| s.starts_with("COPY refused")) =>
            {
                be::error("COPY FROM not supported with row-level security")
            }
            b'E' if portals
                .get(&cstr(&body).0)
                .is_some_and(|s| s.starts_with("COPY")) =>
            {
                copying = true;
                msg(b'G', &[0, 0, 0])
            }
            b'E' => be::complete("SELECT 0"),
            b'S' | b'H' | b'd' if copying => vec![],
            b'c' => {
                copying = false;
                be::complete("COPY 0")
            }
            b'S' => be::ready(b'I'),
            b'Q' if body == [0] => [be::empty_query(), be::ready(b'I')].concat(),
            b'Q' => [be::complete("SELECT 0"), be::ready(b'I')].concat(),
            b'C' => msg(b'3', &[]),
            b'X' => return Ok(()),
            _ => vec![],
        };
        io.write_all(&reply).await?;
    }
}

/// A client connected through a `SpliceStream` to the peer, armed as `wire::connect` does.
async fn connect() -> (Client, Arc<Splice>, Log) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let log = Log::default();
    let (go, ready) = oneshot::channel();
    tokio::spawn(peer(theirs, Arc::clone(&log), ready));
    let _ = go.send(());
    let splice = Arc::new(Splice::default());
    let stream = SpliceStream::new(ours, Arc::clone(&splice));
    let (client, connection) = tokio_postgres::Config::new()
        .user("u")
        .connect_raw(stream, NoTls)
        .await
        .expect("connect to the peer");
    tokio::spawn(connection);
    splice.arm();
    (client, splice, log)
}

fn take(log: &Log) -> Vec<(u8, Vec<u8>)> {
    std::mem::take(&mut *log.lock().expect("log"))
}

/// The name of the first statement parsed in `msgs`.
fn parsed(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter()
        .find(|(t, _)| *t == b'P')
        .map(|(_, b)| cstr(b).0)
        .unwrap_or_default()
}

fn types(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| char::from(*t)).collect()
}

/// Runs every kind of request the SDK or its users make through tokio-postgres, and
/// returns each one's frontend messages.
async fn every_request(client: &mut Client, log: &Log) -> Vec<(&'static str, Vec<(u8, Vec<u8>)>)> {
    let mut out = Vec::new();
    let stmt = client.prepare("SELECT 1").await.expect("prepare");
    out.push(("prepare", take(log)));
    client.query(&stmt, &[]).await.expect("query");
    out.push(("query", take(log)));
    client.execute(&stmt, &[]).await.expect("execute");
    out.push(("execute", take(log)));
    client.query_opt("SELECT 2", &[]).await.expect("query text");
    out.push(("query text (prepare, then run)", take(log)));
    client
        .query_typed("SELECT 3", &[])
        .await
        .expect("query_typed");
    out.push(("query_typed", take(log)));
    client.simple_query("SELECT 4").await.expect("simple_query");
    out.push(("simple_query", take(log)));
    client.batch_execute("").await.expect("batch_execute");
    out.push(("batch_execute", take(log)));
    let tx = client.transaction().await.expect("begin");
    out.push(("transaction", take(log)));
    let portal = tx.bind(&stmt, &[]).await.expect("bind");
    out.push(("bind", take(log)));
    tx.query_portal(&portal, 10).await.expect("query_portal");
    out.push(("query_portal", take(log)));
    drop(portal);
    tx.commit().await.expect("commit");
    out.push(("portal close and commit", take(log)));
    out
}

#[tokio::test]
async fn one_sync_or_one_query_ends_every_request() {
    let (mut client, _, log) = connect().await;
    for (what, msgs) in every_request(&mut client, &log).await {
        let t = types(&msgs);
        let ends = t.chars().filter(|c| matches!(c, 'S' | 'Q')).count();
        let per_request = match what {
            // Two requests each: the Parse/Describe, then the run; the Close of the
            // statement `query_opt` prepared and dropped, then the unnamed
            // Parse/Bind/Describe/Execute; the Close of the dropped portal, then COMMIT.
            "query text (prepare, then run)" | "query_typed" | "portal close and commit" => 2,
            _ => 1,
        };
        assert_eq!(ends, per_request, "{what}: {t}");
        assert!(t.ends_with(['S', 'Q']), "{what}: {t}");
    }
}

#[tokio::test]
async fn statements_are_named_s_n_and_portals_p_n_or_unnamed() {
    let (mut client, _, log) = connect().await;
    let all: Vec<_> = every_request(&mut client, &log)
        .await
        .into_iter()
        .flat_map(|(_, m)| m)
        .collect();
    let numbered = |s: &str, p: char| {
        s.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut parses = 0;
    for (t, body) in &all {
        match t {
            b'P' => {
                let name = cstr(body).0;
                assert!(name.is_empty() || numbered(&name, 's'), "Parse of {name:?}");
                parses += 1;
            }
            b'B' => {
                let (portal, rest) = cstr(body);
                let stmt = cstr(rest).0;
                assert!(
                    portal.is_empty() || numbered(&portal, 'p'),
                    "Bind to portal {portal:?}"
                );
                assert!(stmt.is_empty() || numbered(&stmt, 's'), "Bind of {stmt:?}");
            }
            _ => {}
        }
    }
    assert!(parses >= 3, "{all:?}");
}

#[tokio::test]
async fn a_request_is_written_on_its_futures_first_poll() {
    let (client, splice, log) = connect().await;
    let stmt = client.prepare("SELECT 1").await.expect("prepare");
    let name = parsed(&take(&log));
    let fut = client.query(&stmt, &[]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(take(&log).is_empty(), "written before its first poll");
    // Queued between creation and first poll (as `with_opening` does): the opening goes
    // in front of this request.
    splice.push_opening(&Opening {
        commit_first: false,
        implicit: false,
        read_only: false,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    });
    let rows = fut.await.expect("query with the opening in front");
    assert!(rows.is_empty());
    let msgs = take(&log);
    assert_eq!(types(&msgs), "BEBEBES");
    let bound: Vec<String> = msgs
        .iter()
        .filter(|(t, _)| *t == b'B')
        .map(|(_, b)| cstr(cstr(b).1).0)
        .collect();
    assert_eq!(bound, ["tenancy_begin", "tenancy_enter", &name]);
    assert!(!splice.take_failed());
}

#[tokio::test]
async fn no_request_is_a_flush() {
    let (mut client, _, log) = connect().await;
    let mut all: Vec<_> = every_request(&mut client, &log)
        .await
        .into_iter()
        .flat_map(|(_, m)| m)
        .collect();
    let copy = client
        .prepare("COPY t FROM STDIN")
        .await
        .expect("prepare copy");
    let sink = client.copy_in::<_, Bytes>(&copy).await.expect("copy_in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n"))
        .await
        .expect("copy data");
    sink.finish().await.expect("copy done");
    all.extend(take(&log));
    assert!(!all.iter().any(|(t, _)| *t == b'H'), "{}", types(&all));
}

#[tokio::test]
async fn a_dropped_statement_is_closed_by_a_request_of_its_own() {
    let (client, _, log) = connect().await;
    let stmt = client.prepare("SELECT 1").await.expect("prepare");
    let name = parsed(&take(&log));
    drop(stmt);
    client.batch_execute("").await.expect("next request");
    let msgs = take(&log);
    assert_eq!(types(&msgs), "CSQ");
    assert_eq!(msgs[0].1, [&[b'S'][..], name.as_bytes(), &[0]].concat());
}

#[tokio::test]
async fn copy_in_writes_two_syncs_and_then_the_splice_stops_inserting() {
    let (client, splice, log) = connect().await;
    let copy = client
        .prepare("COPY t FROM STDIN")
        .await
        .expect("prepare copy");
    take(&log);
    let sink = client.copy_in::<_, Bytes>(&copy).await.expect("copy_in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n"))
        .await
        .expect("copy data");
    assert_eq!(sink.finish().await.expect("copy done"), 0);
    // Two Syncs; the peer, like the server, answers one ReadyForQuery.
    assert_eq!(types(&take(&log)), "BESdcS");
    // Requests without an opening still work; one with an opening is refused, and the
    // connection is closed rather than mismatch replies.
    client
        .batch_execute("")
        .await
        .expect("plain request after COPY");
    splice.push_opening(&Opening {
        commit_first: false,
        implicit: true,
        read_only: true,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    });
    let e = client
        .query(&copy, &[])
        .await
        .expect_err("an opening after COPY");
    assert!(
        e.is_closed() || e.to_string().contains("COPY FROM STDIN"),
        "{e}"
    );
    assert!(client.is_closed());
}

#[tokio::test]
async fn a_copy_refused_before_copy_mode_writes_copy_fail_and_a_second_sync() {
    let (client, splice, log) = connect().await;
    let copy = client
        .prepare("COPY refused FROM STDIN")
        .await
        .expect("prepare copy");
    take(&log);
    let r = client.copy_in::<_, Bytes>(&copy).await;
    assert!(r.is_err());
    drop(r);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Both Syncs are answered (the server is not in copy-in mode). tokio-postgres expects
    // one ReadyForQuery (with none waiting it would close its connection on the second,
    // with a request waiting hand it to that one): the splice drops the second.
    assert_eq!(types(&take(&log)), "BESfS");
    assert!(!client.is_closed());
    splice.push_opening(&Opening {
        commit_first: false,
        implicit: true,
        read_only: true,
        enter: Enter::Token("v1.k.t.1.2.3.mac"),
        search_path: None,
    });
    client
        .batch_execute("")
        .await
        .expect("the next request, with an opening");
    assert_eq!(types(&take(&log)), "BESQ");
    assert!(!splice.take_failed());
}

#[tokio::test]
async fn start_up_ends_with_ready_for_query_before_connect_returns() {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let log = Log::default();
    let (go, ready) = oneshot::channel();
    tokio::spawn(peer(theirs, Arc::clone(&log), ready));
    let splice = Arc::new(Splice::default());
    let stream = SpliceStream::new(ours, Arc::clone(&splice));
    let config = tokio_postgres::Config::new().user("u").to_owned();
    let connecting = tokio::spawn(async move { config.connect_raw(stream, NoTls).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !connecting.is_finished(),
        "connect returned before ReadyForQuery"
    );
    let _ = go.send(());
    let (client, connection) = connecting.await.expect("join").expect("connect");
    tokio::spawn(connection);
    // Nothing written after start-up until the first request, and the key was read.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(take(&log).is_empty());
    assert_eq!(splice.key_pid(), Some(42));
    splice.arm();
    client.batch_execute("").await.expect("first request");
    assert_eq!(types(&take(&log)), "Q");
}
