//! Commit, rollback, drop, errors and cancellation all return a clean connection.

use std::time::Duration;

use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{TenantId, TenantPool};

use crate::support::*;

/// With a pool of one connection, the next transaction reuses the same backend; it must
/// begin cleanly (an open transaction left behind would make tenancy.enter refuse) and see
/// only its own tenant.
async fn assert_clean(pool: &TenantPool, expected_pid: i32) {
    let fresh = TenantId::new_random();
    let mut tx = pool.begin(fresh).await.expect("begin");
    let row = tx
        .query_one("SELECT pg_backend_pid(), tenancy.current_tenant_id(), (SELECT count(*) FROM customers)", &[])
        .await
        .expect("the next transaction must begin cleanly");
    assert_eq!(row.get::<_, i32>(0), expected_pid, "same pooled connection");
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(1), Some(fresh.as_uuid()));
    assert_eq!(row.get::<_, i64>(2), 0, "a new tenant sees no rows");
    tx.commit().await.expect("commit");
}

async fn pid_of(pool: &TenantPool, t: TenantId) -> i32 {
    let mut tx = pool.begin(t).await.expect("begin");
    let pid = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    tx.commit().await.expect("commit");
    pid
}

#[tokio::test]
async fn commit_rollback_drop_error_and_cancel_leave_no_tenant_state() {
    let db = fresh_db().await;
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    seed(&pool, a, 2).await;
    let pid = pid_of(&pool, a).await;

    // Commit.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.query("SELECT * FROM customers", &[]).await.expect("q");
    tx.commit().await.expect("commit");
    assert_clean(&pool, pid).await;

    // Rollback, and rollback really discards.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute("DELETE FROM customers", &[])
        .await
        .expect("delete");
    tx.rollback().await.expect("rollback");
    assert_eq!(visible_tenants(&pool, a).await.len(), 2);
    assert_clean(&pool, pid).await;

    // Drop without ending.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute("DELETE FROM customers", &[])
        .await
        .expect("delete");
    drop(tx);
    assert_eq!(
        visible_tenants(&pool, a).await.len(),
        2,
        "drop must roll back"
    );
    assert_clean(&pool, pid).await;

    // An error, then commit: refused, rolled back.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute("DELETE FROM customers", &[])
        .await
        .expect("delete");
    assert!(tx.execute("SELECT 1/0", &[]).await.is_err());
    assert!(matches!(
        tx.query("SELECT 1", &[]).await,
        Err(tenancy_sdk::Error::Aborted)
    ));
    assert!(matches!(
        tx.commit().await,
        Err(tenancy_sdk::Error::Aborted)
    ));
    assert_eq!(visible_tenants(&pool, a).await.len(), 2);
    assert_clean(&pool, pid).await;

    // A future cancelled while its statement runs.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute("DELETE FROM customers", &[])
        .await
        .expect("delete");
    let r = tokio::time::timeout(
        Duration::from_millis(50),
        tx.query("SELECT pg_sleep(0.3)", &[]),
    )
    .await;
    assert!(
        r.is_err(),
        "the statement should have been cancelled by the timeout"
    );
    drop(tx);
    assert_eq!(visible_tenants(&pool, a).await.len(), 2);
    assert_clean(&pool, pid).await;

    // A future cancelled while BEGIN + context are still in flight.
    let mut tx = pool.begin(a).await.expect("begin");
    let r = tokio::time::timeout(
        Duration::from_micros(1),
        tx.query("SELECT pg_sleep(0.2)", &[]),
    )
    .await;
    drop(r);
    drop(tx);
    assert_clean(&pool, pid).await;

    // A transaction that never ran a statement sends nothing and is clean too.
    let tx = pool.begin(a).await.expect("begin");
    drop(tx);
    assert_clean(&pool, pid).await;
}

/// A relay between client and server on a Unix socket that counts round trips: a new
/// one starts whenever the client sends after the server has answered. Messages the
/// client pipelines before any answer belong to the same round trip.
struct Relay {
    dir: std::path::PathBuf,
    round_trips: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// ReadyForQuery messages the server sent: one per Sync or simple query it processed,
    /// each a flush and a client wake-up.
    ready_for_query: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn start_relay(db: &tenancy_pg::testing::TestDb) -> Relay {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = std::env::temp_dir().join(format!("tenancy-relay-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).expect("relay dir");
    let port = db.cluster.port();
    let listener =
        tokio::net::UnixListener::bind(dir.join(format!(".s.PGSQL.{port}"))).expect("bind relay");
    let upstream = db.cluster.socket_dir().join(format!(".s.PGSQL.{port}"));
    let round_trips = Arc::new(AtomicUsize::new(0));
    let counter = round_trips.clone();
    let ready_for_query = Arc::new(AtomicUsize::new(0));
    let rfq = ready_for_query.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::UnixStream::connect(&upstream)
                .await
                .expect("connect upstream");
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            // True when the last bytes seen came from the server.
            let server_spoke = Arc::new(AtomicBool::new(true));
            let (flag, counter) = (server_spoke.clone(), counter.clone());
            let rfq = rfq.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if flag.swap(false, Ordering::SeqCst) {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                // Backend messages: a type byte, then a length that counts itself.
                let (mut header, mut got, mut left) = ([0u8; 5], 0usize, 0usize);
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for &b in &buf[..n] {
                        if left > 0 {
                            left -= 1;
                            continue;
                        }
                        header[got] = b;
                        got += 1;
                        if got == 5 {
                            if header[0] == b'Z' {
                                rfq.fetch_add(1, Ordering::SeqCst);
                            }
                            let len =
                                u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                            left = (len as usize).saturating_sub(4);
                            got = 0;
                        }
                    }
                    server_spoke.store(true, Ordering::SeqCst);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Relay {
        dir,
        round_trips,
        ready_for_query,
    }
}

/// On both context implementations.
#[tokio::test]
async fn a_tenant_read_costs_one_round_trip_more_than_a_bare_read() {
    for (imp, db) in fresh_dbs().await {
        tenant_read_round_trips(imp, &db).await;
    }
}

async fn tenant_read_round_trips(imp: bootstrap::ContextImpl, db: &tenancy_pg::testing::TestDb) {
    use std::sync::atomic::Ordering;
    let relay = start_relay(db).await;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(&relay.dir)
        .port(db.cluster.port())
        .user(tenancy_sdk::bootstrap::RUNTIME_ROLE)
        .dbname(&db.name);
    let pool = TenantPool::new(
        cfg.clone(),
        key(),
        tenancy_sdk::PoolOptions {
            max_size: 1,
            ..Default::default()
        },
    )
    .expect("pool");
    let a = TenantId::new_random();
    seed(&pool, a, 1).await;
    let sql = "SELECT name FROM customers WHERE id = $1";
    let id = uuid::Uuid::new_v4();
    // Warm up: connection and prepared statement.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.query_opt(sql, &[&id]).await.expect("warm");
    tx.commit().await.expect("commit");

    let before = relay.round_trips.load(Ordering::SeqCst);
    let mut tx = pool.begin(a).await.expect("begin");
    tx.query_opt(sql, &[&id]).await.expect("read");
    tx.commit().await.expect("commit");
    let tenant_read = relay.round_trips.load(Ordering::SeqCst) - before;

    // Read-only: there is no COMMIT (the context and the statement share one implicit
    // transaction).
    let mut read_only = Vec::new();
    let mut read_only_rfq = Vec::new();
    for _ in 0..5 {
        let before = relay.round_trips.load(Ordering::SeqCst);
        let rfq_before = relay.ready_for_query.load(Ordering::SeqCst);
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        tx.query_opt(sql, &[&id]).await.expect("read");
        tx.commit().await.expect("commit");
        read_only.push(relay.round_trips.load(Ordering::SeqCst) - before);
        read_only_rfq.push(relay.ready_for_query.load(Ordering::SeqCst) - rfq_before);
    }

    let bare = connect(cfg).await;
    let stmt = bare.prepare(sql).await.expect("prepare");
    let before = relay.round_trips.load(Ordering::SeqCst);
    let rfq_before = relay.ready_for_query.load(Ordering::SeqCst);
    bare.query_opt(&stmt, &[&id]).await.expect("bare read");
    let bare_read = relay.round_trips.load(Ordering::SeqCst) - before;
    let bare_rfq = relay.ready_for_query.load(Ordering::SeqCst) - rfq_before;
    assert_eq!(bare_rfq, 1);
    assert_eq!(
        read_only_rfq,
        vec![1; 5],
        "{imp:?}: a read-only point read is one Sync, like the bare read"
    );
    assert_eq!(read_only, vec![1; 5], "{imp:?}: one round trip");
    assert_eq!(bare_read, 1);
    assert_eq!(
        tenant_read, 2,
        "{imp:?}: BEGIN + signed context + statement must share one round trip; COMMIT is the other"
    );
    let _ = std::fs::remove_dir_all(&relay.dir);
}

/// A read-only transaction refuses writes, and its queued COMMIT ends it before the
/// connection's next user runs anything: with one connection, transactions for other
/// tenants right after it see only their own rows, and no transaction is left open.
#[tokio::test]
async fn a_read_only_transaction_refuses_writes_and_its_queued_commit_ends_it() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, a, 2).await;
        seed(&pool, b, 3).await;
        let pid = pid_of(&pool, a).await;

        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        assert!(tx.is_read_only());
        let err = tx
            .execute("UPDATE customers SET name = 'x'", &[])
            .await
            .expect_err("a read-only transaction must refuse writes");
        assert!(format!("{err:?}").contains("read-only"), "{imp:?}: {err:?}");
        assert!(matches!(
            tx.commit().await,
            Err(tenancy_sdk::Error::Aborted)
        ));
        assert_clean(&pool, pid).await;

        for i in 0..200 {
            let (t, n) = if i % 2 == 0 { (a, 2) } else { (b, 3) };
            let mut tx = pool.begin_read_only(t).await.expect("begin read only");
            let row = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM customers",
                    &[&t.as_uuid()],
                )
                .await
                .expect("read");
            assert_eq!(row.get::<_, i64>(0), n, "{imp:?}: iteration {i}");
            assert_eq!(
                row.get::<_, i64>(1),
                0,
                "{imp:?}: foreign rows at iteration {i}"
            );
            tx.commit().await.expect("commit");
        }
        // The last queued COMMIT ran: a plain transaction begins cleanly on the same backend.
        assert_clean(&pool, pid).await;

        // A finished read-only transaction on a connection nobody reuses is committed by
        // the pool's sweeper within milliseconds: the backend goes idle, not idle in
        // transaction (which would hold a snapshot and locks).
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        tx.query("SELECT 1 FROM customers", &[])
            .await
            .expect("read");
        tx.commit().await.expect("commit");
        let su = db.connect_superuser().await.expect("superuser");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state: Option<String> = su
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .expect("state")
                .get(0);
            if state.as_deref() == Some("idle") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{imp:?}: the connection stayed {state:?} after its read-only transaction"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_clean(&pool, pid).await;
    }
}

/// A transaction that ends before its first statement (committed, rolled back or dropped)
/// still owes the COMMIT of the connection's previous read-only transaction, which it
/// had taken over: the next transaction on that connection must begin cleanly.
#[tokio::test]
async fn a_transaction_ended_before_its_first_statement_keeps_the_owed_commit() {
    for (_, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, a, 2).await;
        let pid = pid_of(&pool, a).await;
        for how in ["commit", "rollback", "drop"] {
            // A simple query makes the read-only transaction explicit on both context
            // implementations, so its COMMIT is deferred: now owed by the connection.
            let mut tx = pool.begin_read_only(a).await.expect("begin read only");
            tx.batch_execute("SELECT 1").await.expect("read");
            tx.commit().await.expect("commit");
            let tx = pool.begin_read_only(b).await.expect("begin read only");
            match how {
                "commit" => tx.commit().await.expect("commit"),
                "rollback" => tx.rollback().await.expect("rollback"),
                _ => drop(tx),
            }
            assert_clean(&pool, pid).await;
        }
    }
}

/// `end_without_round_trip` ends exactly the transactions that need no wait, with the
/// outcome `commit`/`rollback` would give, and leaves the others untouched.
#[tokio::test]
async fn ending_without_a_round_trip_is_only_offered_when_nothing_must_be_awaited() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        let pid = pid_of(&pool, a).await;

        // Never used, and read-only after a read: ended at once, connection clean.
        let mut tx = pool.begin(a).await.expect("begin");
        assert!(
            matches!(tx.end_without_round_trip(true), Some(Ok(()))),
            "{imp:?}"
        );
        drop(tx);
        assert_clean(&pool, pid).await;
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        tx.query_one("SELECT count(*) FROM customers", &[])
            .await
            .expect("read");
        assert!(
            matches!(tx.end_without_round_trip(true), Some(Ok(()))),
            "{imp:?}"
        );
        drop(tx);
        assert_clean(&pool, pid).await;

        // A failed read-only statement: commit reports the abort, as `commit` would.
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        tx.execute("UPDATE customers SET name = 'x'", &[])
            .await
            .expect_err("read-only");
        let ended = tx.end_without_round_trip(true);
        match ended {
            // Native: the failed statement's implicit transaction is already over.
            Some(r) => assert!(
                matches!(r, Err(tenancy_sdk::Error::Aborted)),
                "{imp:?} {r:?}"
            ),
            // PL/pgSQL: an explicit transaction is open and must be rolled back.
            None => assert!(matches!(
                tx.commit().await,
                Err(tenancy_sdk::Error::Aborted)
            )),
        }
        assert_clean(&pool, pid).await;

        // A write transaction must be awaited: nothing is ended, and the write still commits.
        let mut tx = pool.begin(a).await.expect("begin");
        tx.execute("UPDATE customers SET name = 'ended later'", &[])
            .await
            .expect("write");
        assert!(tx.end_without_round_trip(true).is_none(), "{imp:?}");
        assert!(tx.end_without_round_trip(false).is_none(), "{imp:?}");
        tx.commit().await.expect("commit");
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM customers WHERE name = 'ended later'",
                &[],
            )
            .await
            .expect("read")
            .get(0);
        assert_eq!(n, 2, "{imp:?}: the write committed");
        tx.commit().await.expect("commit");
        assert_clean(&pool, pid).await;
    }
}

/// Reuse right around the moment the sweeper sends an idle connection's owed COMMIT: the
/// COMMIT and the next transaction's opening must reach the server in that order.
#[tokio::test]
async fn reuse_racing_the_commit_sweeper_never_breaks_a_transaction() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, a, 2).await;
        seed(&pool, b, 3).await;
        for i in 0..300u64 {
            let (t, n) = if i % 2 == 0 { (a, 2) } else { (b, 3) };
            let mut tx = pool.begin_read_only(t).await.expect("begin read only");
            if i % 3 != 0 {
                // Explicit (deferred COMMIT) on the native context too.
                tx.batch_execute("SELECT 1").await.expect("simple query");
            }
            let row = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM customers",
                    &[&t.as_uuid()],
                )
                .await
                .unwrap_or_else(|e| panic!("{imp:?}: iteration {i}: {e:?}"));
            assert_eq!(row.get::<_, i64>(0), n, "{imp:?}: iteration {i}");
            assert_eq!(row.get::<_, i64>(1), 0, "{imp:?}: iteration {i}");
            tx.commit().await.expect("commit");
            // 0 to 7 ms: before, around and after the sweeper's 2 ms age and 5 ms tick.
            tokio::time::sleep(Duration::from_micros((i * 2_741) % 7_000)).await;
        }
    }
}

/// When the database refuses a transaction's opening on a native-context connection
/// because the SDK's prepared statements were removed through `client()`, nothing hangs
/// and the connection is not reused. A prepared statement carrying the opening runs on
/// another connection instead (nothing of the transaction ran); a simple query, which
/// could commit on its own, is not run again and fails with `ContextRefused`.
#[tokio::test]
async fn a_refused_opening_fails_its_statement_and_retires_the_connection() {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    let imp = tenancy_sdk::bootstrap::context_impl(&su)
        .await
        .expect("impl")
        .expect("installed");
    if imp != tenancy_sdk::bootstrap::ContextImpl::Native {
        eprintln!("the native context is not installed here: nothing to check");
        return;
    }
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    seed(&pool, a, 2).await;
    for carrier in ["query", "batch_execute", "prepare"] {
        let old = pid_of(&pool, a).await;
        let mut tx = pool.begin(a).await.expect("begin");
        tx.client()
            .await
            .expect("client")
            .batch_execute("DEALLOCATE ALL")
            .await
            .expect("deallocate");
        tx.commit().await.expect("commit");

        let mut tx = pool.begin_read_only(a).await.expect("begin");
        let attempt = async {
            match carrier {
                "query" => tx.query("SELECT 1", &[]).await.map(|_| ()),
                "batch_execute" => tx.batch_execute("SELECT 1").await,
                _ => tx
                    .query(
                        &format!("SELECT {} FROM customers", rand::random::<u32>()),
                        &[],
                    )
                    .await
                    .map(|_| ()),
            }
        };
        let r = tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .unwrap_or_else(|_| panic!("{carrier}: a refused opening must not hang"));
        if carrier == "batch_execute" {
            assert!(
                matches!(r, Err(tenancy_sdk::Error::ContextRefused(_))),
                "{carrier}: {r:?}"
            );
        } else {
            assert!(r.is_ok(), "{carrier}: {r:?}");
        }
        drop(tx);
        // Let the dropped transaction's ROLLBACK finish and return the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let new = pid_of(&pool, a).await;
        assert_ne!(
            old, new,
            "{carrier}: the refused connection must be replaced"
        );
        assert_clean(&pool, new).await;
    }
}

/// Native context, read-only: every statement is its own implicit transaction. Nothing is
/// left open between statements or after the last one (the backend is idle at once, not
/// idle in transaction), each statement sees only the tenant and refuses writes, and a
/// simple query or `client()` turns the rest of the transaction into an explicit one.
#[tokio::test]
async fn native_read_only_statements_run_in_implicit_transactions() {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    if tenancy_sdk::bootstrap::context_impl(&su)
        .await
        .expect("impl")
        != Some(tenancy_sdk::bootstrap::ContextImpl::Native)
    {
        eprintln!("the native context is not installed here: nothing to check");
        return;
    }
    let pool = pool(&db, 1);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 2).await;
    seed(&pool, b, 3).await;
    let pid = pid_of(&pool, a).await;
    // The settled state: a statement's error reaches the client before the server has
    // processed the Sync behind it, so `active` is waited out (up to 5 s).
    let backend_state = || async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let state = su
                .query_one("SELECT state FROM pg_stat_activity WHERE pid = $1", &[&pid])
                .await
                .expect("state")
                .get::<_, Option<String>>(0);
            if state.as_deref() != Some("active") || std::time::Instant::now() > deadline {
                return state;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };

    let count = "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM customers";
    let mut tx = pool.begin_read_only(a).await.expect("begin read only");
    for round in 0..3 {
        let row = tx.query_one(count, &[&a.as_uuid()]).await.expect("read");
        assert_eq!(
            (row.get::<_, i64>(0), row.get::<_, i64>(1)),
            (2, 0),
            "round {round}"
        );
        assert_eq!(
            backend_state().await.as_deref(),
            Some("idle"),
            "round {round}"
        );
    }
    let txid: Option<i64> = tx
        .query_one("SELECT txid_current_if_assigned()", &[])
        .await
        .expect("txid")
        .get(0);
    assert_eq!(
        txid, None,
        "a read-only statement assigns no transaction id"
    );
    let err = tx
        .execute("UPDATE customers SET name = 'x'", &[])
        .await
        .expect_err("a later statement must still refuse writes");
    assert!(format!("{err:?}").contains("read-only"), "{err:?}");
    assert!(matches!(
        tx.commit().await,
        Err(tenancy_sdk::Error::Aborted)
    ));
    assert_eq!(backend_state().await.as_deref(), Some("idle"));

    // A simple query in the middle: explicit from there on, still only this tenant.
    let mut tx = pool.begin_read_only(b).await.expect("begin read only");
    let row = tx.query_one(count, &[&b.as_uuid()]).await.expect("read");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 0));
    tx.batch_execute("SELECT 1").await.expect("simple query");
    let row = tx.query_one(count, &[&b.as_uuid()]).await.expect("read");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 0));
    assert_eq!(
        backend_state().await.as_deref(),
        Some("idle in transaction"),
        "explicit after the simple query"
    );
    tx.commit().await.expect("commit");
    assert_clean(&pool, pid).await;

    // A statement cancelled mid-flight, then dropped: the connection is fenced and clean.
    let mut tx = pool.begin_read_only(a).await.expect("begin read only");
    let r = tokio::time::timeout(
        Duration::from_millis(30),
        tx.query("SELECT pg_sleep(0.2)", &[]),
    )
    .await;
    assert!(r.is_err(), "the statement should have been cancelled");
    drop(tx);
    assert_clean(&pool, pid).await;
}

/// An opening in front of a first statement too large for one socket write (a 4 MiB
/// parameter, written in many pieces), and a reply larger than one read: the statement
/// still runs in the tenant's context, on both implementations and both kinds of
/// transaction.
#[tokio::test]
async fn openings_survive_large_statements_and_replies() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        let big = "x".repeat(4 << 20);
        for read_only in [true, false] {
            let mut tx = if read_only {
                pool.begin_read_only(a).await
            } else {
                pool.begin(a).await
            }
            .expect("begin");
            let row = tx
                .query_one(
                    "SELECT length($1::text), tenancy.current_tenant_id(), repeat('y', 3000000)",
                    &[&big],
                )
                .await
                .unwrap_or_else(|e| panic!("{imp:?} read_only={read_only}: {e:?}"));
            assert_eq!(row.get::<_, i32>(0), 4 << 20);
            assert_eq!(row.get::<_, Option<uuid::Uuid>>(1), Some(a.as_uuid()));
            assert_eq!(row.get::<_, String>(2).len(), 3_000_000);
            tx.commit().await.expect("commit");
        }
    }
}

/// Over TCP (a cluster that listens on 127.0.0.1, password authentication), the pool opens
/// its spliced sockets with the configuration's `hostaddr` and keepalive settings, and
/// tenant transactions work as on the Unix socket. A host that refuses connections gives
/// a pool error that says so.
#[tokio::test]
async fn tenant_pools_connect_over_tcp_with_the_configured_socket_settings() {
    let cluster = tenancy_pg::Cluster::start(tenancy_pg::ClusterOptions {
        tcp_port: Some(0),
        ..tenancy_pg::ClusterOptions::for_tests()
    })
    .await
    .expect("a cluster listening on TCP");
    assert!(cluster.listens_on_tcp());
    let su = cluster.connect("postgres").await.expect("superuser");
    su.batch_execute("CREATE DATABASE tcp_app")
        .await
        .expect("database");
    bootstrap::bootstrap_cluster(&su).await.expect("roles");
    su.batch_execute("ALTER ROLE tenancy_app PASSWORD 'tcp-test-password'")
        .await
        .expect("password");
    let su_app = cluster
        .connect("tcp_app")
        .await
        .expect("superuser on tcp_app");
    bootstrap::bootstrap_database(&su_app, "tcp_app")
        .await
        .expect("bootstrap");
    let owner = connect(cluster.config_as(OWNER_ROLE, "tcp_app")).await;
    bootstrap::install_runtime(&owner, &key())
        .await
        .expect("runtime");
    owner.batch_execute(APP_SCHEMA).await.expect("tables");

    let tcp_config = |port: u16| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("localhost")
            .hostaddr(std::net::IpAddr::from([127, 0, 0, 1]))
            .port(port)
            .user(RUNTIME_ROLE)
            .password("tcp-test-password")
            .dbname("tcp_app")
            .keepalives_idle(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        cfg
    };
    let pool =
        TenantPool::new(tcp_config(cluster.port()), key(), Default::default()).expect("pool");
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 2).await;
    seed(&pool, b, 3).await;
    for (t, n) in [(a, 2i64), (b, 3)] {
        let mut tx = pool.begin_read_only(t).await.expect("begin read only");
        let row = tx
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1), \
                        (SELECT client_addr::text FROM pg_stat_activity WHERE pid = pg_backend_pid()) \
                   FROM customers",
                &[&t.as_uuid()],
            )
            .await
            .expect("read over TCP");
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (n, 0));
        assert_eq!(
            row.get::<_, Option<String>>(2).as_deref(),
            Some("127.0.0.1/32")
        );
        tx.commit().await.expect("commit");
    }

    // Settings only tokio-postgres' own connect honours are refused, not ignored.
    let mut primary_only = tcp_config(cluster.port());
    primary_only.target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite);
    let err = TenantPool::new(primary_only, key(), Default::default())
        .expect_err("target_session_attrs is refused");
    assert!(err.to_string().contains("target_session_attrs"), "{err}");

    // Nothing listens on this port (it was free a moment ago).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let pool = TenantPool::new(
        tcp_config(closed),
        key(),
        tenancy_sdk::PoolOptions {
            wait_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .expect("pool");
    let err = pool.begin(a).await.expect_err("nothing listens there");
    let msg = err.to_string();
    assert!(
        matches!(err, tenancy_sdk::Error::Pool(_))
            && msg.contains("could not connect to localhost (127.0.0.1)"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_warmed_pool_opens_its_connections_ahead_and_hands_them_out() {
    let db = fresh_db().await;
    let pool = pool(&db, 3);
    assert_eq!(pool.status(), (0, 0), "connections open lazily");
    // More than the pool holds: it opens as many as it may.
    pool.warm(5).await.expect("warm");
    assert_eq!(pool.status(), (3, 3), "three open, all idle");
    // Warming again opens nothing more.
    pool.warm(2).await.expect("warm again");
    assert_eq!(pool.status(), (3, 3));
    let t = TenantId::new_random();
    let mut tx = pool.begin(t).await.expect("begin");
    tx.query_one("SELECT 1", &[])
        .await
        .expect("a warmed connection runs a transaction");
    tx.commit().await.expect("commit");
    assert_eq!(pool.status().0, 3, "no new connection was opened");
}
