//! What a runtime-role session can change about the sessions that come after it, and the
//! limits a pool's transactions run under.

use std::time::{Duration, Instant};

use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{Error, PoolOptions, TenantId, TenantPool, TenantTx};

use crate::support::*;

fn pool_with(db: &tenancy_pg::testing::TestDb, opts: PoolOptions) -> TenantPool {
    TenantPool::new(db.config_as(RUNTIME_ROLE), key(), opts).expect("pool")
}

/// Reads the settings a hostile session tries to change, inside `tx`: statement
/// timeout, read-only default, isolation, search path, work_mem. Then sleeps longer
/// than a 1 ms statement timeout, resolves an unqualified table name and writes.
async fn assert_sane_session(tx: &mut TenantTx, read_only: bool, what: &str) {
    let row = tx
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('default_transaction_read_only'), \
                    current_setting('transaction_isolation'), current_setting('search_path'), \
                    current_setting('work_mem'), current_setting('row_security'), \
                    (SELECT count(*) FROM customers), pg_sleep(0.02)::text",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: the next transaction must run: {e}"));
    let got: Vec<String> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(
        got,
        [
            "30s",
            "off",
            "read committed",
            "\"$user\", public",
            "4MB",
            "on"
        ],
        "{what}"
    );
    if !read_only {
        tx.execute(
            "INSERT INTO customers (email, name) VALUES ($1, 'n')",
            &[&format!("{}@x.example", rand::random::<u64>())],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: the next transaction must write: {e}"));
    }
}

/// `ALTER ROLE tenancy_app … SET` is open to the runtime role itself (PostgreSQL lets
/// a role change its own defaults), so injected SQL can store a 1 ms statement
/// timeout, a read-only default, another isolation level or a search path that hides
/// the application's tables for every later session. The pool's connections carry
/// their own values in the startup packet, which take precedence. (Stored `IN
/// DATABASE` here so other tests sharing the cluster are not hit; the startup packet
/// overrides role-wide defaults the same way.)
#[tokio::test]
async fn runtime_role_defaults_cannot_break_new_connections() {
    for (imp, db) in fresh_dbs().await {
        let attacker = runtime_client(&db).await;
        attacker
            .batch_execute(&format!(
                "ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET statement_timeout = '1ms';
                 ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET default_transaction_read_only = on;
                 ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET default_transaction_isolation = 'serializable';
                 ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET search_path = pg_catalog;",
                db = db.name
            ))
            .await
            .expect("the runtime role may change its own defaults");
        // A plain session of the role now has them.
        let plain = runtime_client(&db).await;
        let ro: String = plain
            .query_one("SHOW default_transaction_read_only", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(ro, "on", "{imp:?}: the attack took effect");

        let pool = pool(&db, 2);
        let t = TenantId::new_random();
        for read_only in [false, true] {
            let mut tx = if read_only {
                pool.begin_read_only(t).await.expect("begin")
            } else {
                pool.begin(t).await.expect("begin")
            };
            assert_sane_session(&mut tx, read_only, &format!("{imp:?} ro={read_only}")).await;
            tx.commit().await.expect("commit");
        }
    }
}

/// A session-level `SET` (or `set_config(…, false)`) in one tenant's transaction is
/// gone when the next transaction on the same pooled connection runs its first
/// statement: on both context implementations, after a read-write or a read-only
/// transaction, for a next transaction of either kind, and for a first statement that
/// is parsed before its opening (the native implicit read-only path).
#[tokio::test]
async fn a_session_setting_does_not_reach_the_next_transaction_on_the_connection() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 1).await;
        for (a_read_only, b_read_only) in
            [(false, false), (false, true), (true, false), (true, true)]
        {
            let what = format!("{imp:?} a_ro={a_read_only} b_ro={b_read_only}");
            let mut tx = if a_read_only {
                pool.begin_read_only(a).await.expect("begin")
            } else {
                pool.begin(a).await.expect("begin")
            };
            tx.query("SELECT set_config('work_mem', '64kB', false)", &[])
                .await
                .expect("set_config");
            tx.batch_execute(
                "SET statement_timeout = 1; SET search_path = pg_catalog; \
                 SET default_transaction_read_only = on; SET row_security = off; \
                 SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            )
            .await
            .expect("session SET");
            tx.commit().await.expect("commit");

            let mut tx = if b_read_only {
                pool.begin_read_only(b).await.expect("begin")
            } else {
                pool.begin(b).await.expect("begin")
            };
            // New statement text each round: on the native implicit path its Parse goes
            // out before the opening.
            let n: i64 = tx
                .query_one(
                    &format!(
                        "SELECT count(*) + {} - {} FROM customers",
                        rand::random::<u16>() as i64,
                        0
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: unqualified name with A's search_path: {e:?}"))
                .get(0);
            assert!(n >= 0);
            assert_sane_session(&mut tx, b_read_only, &what).await;
            tx.commit().await.expect("commit");
        }
    }
}

/// The PL/pgSQL openings' reset (`tenancy.reset_session()`) is RESET ALL except for
/// the PL/pgSQL context's session-level single-use mark, `tenancy.last_issued`, which
/// a plain RESET ALL would erase (a keyed value: carrying it over forges nothing).
#[tokio::test]
async fn the_session_reset_keeps_the_plpgsql_single_use_mark() {
    let db = fresh_db_plpgsql().await;
    let c = runtime_client(&db).await;
    let row = c
        .query_one(
            "SELECT set_config('tenancy.last_issued', '123.abc', false), set_config('work_mem', '64kB', false), \
                    set_config('search_path', 'pg_catalog', false)",
            &[],
        )
        .await
        .expect("session settings");
    assert_eq!(row.get::<_, String>(0), "123.abc");
    c.batch_execute("SELECT tenancy.reset_session()")
        .await
        .expect("reset");
    let row = c
        .query_one(
            "SELECT current_setting('tenancy.last_issued', true), current_setting('work_mem'), current_setting('search_path')",
            &[],
        )
        .await
        .expect("read back");
    let got: Vec<String> = (0..3).map(|i| row.get(i)).collect();
    assert_eq!(got, ["123.abc", "4MB", "\"$user\", public"]);
}

/// Injected SQL that drops the connection's prepared statements (the SDK's and the
/// statement cache's) costs the next tenant nothing: its transaction moves to another
/// connection before anything of it runs, and the emptied one is not reused.
#[tokio::test]
async fn deallocated_statements_do_not_fail_the_next_tenant() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 2).await;
        for b_read_only in [false, true] {
            let what = format!("{imp:?} b_ro={b_read_only}");
            // B's statement is in the connection's cache.
            assert_eq!(visible_tenants(&pool, b).await.len(), 2, "{what}");
            let mut tx = pool.begin(a).await.expect("begin");
            tx.batch_execute("DEALLOCATE ALL")
                .await
                .expect("deallocate");
            tx.commit().await.expect("commit");
            let mut tx = if b_read_only {
                pool.begin_read_only(b).await.expect("begin")
            } else {
                pool.begin(b).await.expect("begin")
            };
            let rows = tx
                .query("SELECT tenant_id FROM customers", &[])
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            assert_eq!(rows.len(), 2, "{what}");
            tx.commit().await.expect("commit");
        }
    }
}

/// A tenant's injected SQL takes an ACCESS EXCLUSIVE lock on a shared tenant table,
/// lifts its own statement and lock timeouts and sleeps (or loops, catching the
/// cancel). The pool's transaction deadline ends that transaction (its backend is
/// terminated, releasing the lock), its caller gets `TransactionDeadline`, and another
/// tenant waiting on the table proceeds (its lock timeout, 10 s by default, is longer
/// than the deadline here).
#[tokio::test]
async fn an_injected_lock_is_released_within_the_transaction_deadline() {
    const DEADLINE: Duration = Duration::from_secs(2);
    for (imp, db) in fresh_dbs().await {
        let pool = pool_with(
            &db,
            PoolOptions {
                max_size: 2,
                transaction_deadline: DEADLINE,
                ..Default::default()
            },
        );
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 1).await;
        for hold in [
            "SELECT pg_sleep(600)",
            "DO $$ BEGIN LOOP BEGIN PERFORM pg_sleep(600); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END $$",
        ] {
            let what = format!("{imp:?} {hold}");
            let attacker = pool.clone();
            let sql = format!(
                "LOCK TABLE customers IN ACCESS EXCLUSIVE MODE; SET statement_timeout = 0; \
                 SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; {hold}"
            );
            let started = Instant::now();
            let held = tokio::spawn(async move {
                let mut tx = attacker.begin(a).await.expect("begin");
                let r = tx.batch_execute(&sql).await;
                drop(tx);
                r
            });
            // Wait until the lock is held.
            let su = db.connect_superuser().await.expect("superuser");
            loop {
                let n: i64 = su
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE relation = 'customers'::regclass AND mode = 'AccessExclusiveLock' AND granted",
                        &[],
                    )
                    .await
                    .expect("locks")
                    .get(0);
                if n > 0 {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(10), "{what}: the lock was never taken");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // B's own transaction is bounded by the same deadline: it starts half of it
            // after A, so A's end (within 1.25 times the deadline) comes first.
            tokio::time::sleep(DEADLINE / 2).await;
            let seen = tokio::time::timeout(Duration::from_secs(20), visible_tenants(&pool, b))
                .await
                .unwrap_or_else(|_| panic!("{what}: tenant B is still blocked by A's lock"));
            assert_eq!(seen.len(), 1, "{what}");
            let waited = started.elapsed();
            assert!(
                waited < DEADLINE * 3,
                "{what}: B waited {waited:?}, deadline {DEADLINE:?}"
            );
            let r = tokio::time::timeout(Duration::from_secs(10), held)
                .await
                .expect("A's statement ends")
                .expect("task");
            assert!(
                matches!(r, Err(Error::TransactionDeadline(d)) if d == DEADLINE),
                "{what}: {r:?}"
            );
            // The pool goes on.
            assert_eq!(visible_tenants(&pool, b).await.len(), 1, "{what}");
        }
    }
}

/// Injected SQL terminates every other backend of the runtime role, over and over,
/// while another tenant keeps using the pool: that tenant's requests never fail (a
/// transaction whose connection died before its first statement ran moves to
/// another connection), and the pool replaces the dead connections.
#[tokio::test]
async fn terminated_pool_connections_do_not_fail_another_tenants_next_request() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 4);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 1).await;
        let mut killed = 0i64;
        for round in 0..30 {
            // Fill the pool: four connections, idle.
            let txs: Vec<_> = futures_util::future::join_all((0..4).map(|_| pool.begin(b))).await;
            let mut txs: Vec<_> = txs.into_iter().map(|t| t.expect("begin")).collect();
            for tx in &mut txs {
                tx.query("SELECT 1 FROM customers", &[])
                    .await
                    .expect("warm");
            }
            for tx in txs {
                tx.commit().await.expect("commit");
            }
            // Tenant A's injected SQL.
            let mut tx = pool.begin(a).await.expect("begin");
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                      WHERE usename = current_user AND datname = current_database() AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("terminate")
                .get(0);
            killed += n;
            tx.commit().await.expect("commit");
            // Tenant B's next requests, read-write and read-only, at once.
            let rw = async {
                let mut tx = pool.begin(b).await?;
                let rows = tx.query("SELECT tenant_id FROM customers", &[]).await?;
                tx.commit().await?;
                Ok::<_, Error>(rows.len())
            };
            let ro = async {
                let mut tx = pool.begin_read_only(b).await?;
                let rows = tx.query("SELECT tenant_id FROM customers", &[]).await?;
                tx.commit().await?;
                Ok::<_, Error>(rows.len())
            };
            let (rw, ro) = futures_util::join!(rw, ro);
            assert_eq!(
                rw.unwrap_or_else(|e| panic!("{imp:?} round {round}: {e}")),
                1
            );
            assert_eq!(
                ro.unwrap_or_else(|e| panic!("{imp:?} round {round}: {e}")),
                1
            );
        }
        assert!(
            killed >= 30,
            "{imp:?}: the attack terminated {killed} backends"
        );
    }
}
