//! Tenant transactions through PgBouncer in transaction mode (Debian's `pgbouncer`, started
//! here in front of the test cluster, as the same unprivileged user as the server): the
//! pooler hands each transaction whichever backend is free, so tokens cannot be bound to a
//! backend pid and nothing named may outlive a transaction. Every test connects as the
//! runtime role.

use std::collections::HashSet;
use std::time::Duration;

use tenancy_pg::testing::TestDb;
use tenancy_pg::{PgBouncer, PgBouncerOptions};
use tenancy_sdk::bootstrap::{ContextImpl, RUNTIME_ROLE};
use tenancy_sdk::{Error, PoolOptions, Pooler, TenantId, TenantPool, TenantTx};
use tokio_postgres::Client;

use crate::support::*;

/// PgBouncer in transaction mode with `server_pool` backends for the runtime role.
async fn bouncer(db: &TestDb, server_pool: u32) -> PgBouncer {
    PgBouncer::start(
        db.cluster,
        PgBouncerOptions {
            users: vec![RUNTIME_ROLE.to_owned()],
            default_pool_size: server_pool,
            ..Default::default()
        },
    )
    .await
    .expect("pgbouncer starts")
}

fn pooled_pool(db: &TestDb, bouncer: &PgBouncer, max_size: usize) -> TenantPool {
    TenantPool::new(
        bouncer.config_as(RUNTIME_ROLE, &db.name),
        key(),
        PoolOptions {
            max_size,
            pooler: Pooler::Transaction,
            ..Default::default()
        },
    )
    .expect("pool")
}

async fn bouncer_client(db: &TestDb, bouncer: &PgBouncer) -> Client {
    connect(bouncer.config_as(RUNTIME_ROLE, &db.name)).await
}

/// The backend pid a transaction runs on.
async fn backend(tx: &mut TenantTx) -> i32 {
    tx.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// Sixteen SDK connections share three backends: 16 tasks run 12 transactions each
/// (read-write, read-only, simple query), every one of them refused nowhere, each seeing
/// only its own tenant's rows; the transactions ran on more than one backend per SDK
/// connection, so the binding did not depend on which backend the pooler handed out.
#[tokio::test]
async fn concurrent_tenants_through_pgbouncer_are_never_refused_and_stay_isolated() {
    for (imp, db) in fresh_dbs().await {
        let bouncer = bouncer(&db, 3).await;
        let pool = pooled_pool(&db, &bouncer, 16);
        let tenants: Vec<TenantId> = (0..16).map(|_| TenantId::new_random()).collect();
        let mut tasks = Vec::new();
        for (i, &t) in tenants.iter().enumerate() {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                let mut backends = HashSet::new();
                for round in 0..12 {
                    match round % 3 {
                        0 => {
                            let mut tx = pool.begin(t).await?;
                            backends.insert(backend(&mut tx).await);
                            let n = tx
                                .execute(
                                    "INSERT INTO customers (email, name) VALUES ($1, $2)",
                                    &[&format!("c{round}@{i}.example"), &"n"],
                                )
                                .await?;
                            assert_eq!(n, 1);
                            tx.commit().await?;
                        }
                        1 => {
                            let mut tx = pool.begin_read_only(t).await?;
                            let rows = tx.query("SELECT tenant_id FROM customers", &[]).await?;
                            let expected = t.as_uuid();
                            assert!(
                                rows.iter().all(|r| r.get::<_, uuid::Uuid>(0) == expected),
                                "a tenant saw another tenant's rows"
                            );
                            assert_eq!(rows.len(), round / 3 + 1);
                            tx.commit().await?;
                        }
                        _ => {
                            let mut tx = pool.begin(t).await?;
                            tx.batch_execute("UPDATE customers SET name = 'm'").await?;
                            let m: i64 = tx
                                .query_one(
                                    "SELECT count(*) FROM customers WHERE name = $1",
                                    &[&"m"],
                                )
                                .await?
                                .get(0);
                            assert_eq!(m as usize, round / 3 + 1);
                            tx.commit().await?;
                        }
                    }
                }
                Ok::<_, Error>(backends)
            }));
        }
        let mut all = HashSet::new();
        let mut refused = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(b) => all.extend(b),
                Err(e) => refused.push(e.to_string()),
            }
        }
        assert!(
            refused.is_empty(),
            "{imp:?}: {} refused: {refused:?}",
            refused.len()
        );
        assert!(
            all.len() <= 3,
            "{imp:?}: PgBouncer had 3 backends, the transactions saw {all:?}"
        );
        // Every tenant's rows, counted as the superuser: 4 each, nothing lost.
        let su = db.connect_superuser().await.expect("superuser");
        let per_tenant: Vec<i64> = su
            .query("SELECT count(*) FROM customers GROUP BY tenant_id", &[])
            .await
            .expect("count")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(per_tenant, vec![4; 16], "{imp:?}");
        // A tenant with no rows sees none of the others'.
        assert!(visible_tenants(&pool, TenantId::new_random())
            .await
            .is_empty());
        drop(pool);
        bouncer.stop().await;
    }
}

/// A pool left in direct mode that finds itself behind PgBouncer (its BackendKeyData is
/// not the backend's) refuses to connect and names the setting that fixes it.
#[tokio::test]
async fn a_direct_pool_behind_pgbouncer_refuses_with_the_fix() {
    let db = fresh_db().await;
    let bouncer = bouncer(&db, 2).await;
    let pool = TenantPool::new(
        bouncer.config_as(RUNTIME_ROLE, &db.name),
        key(),
        PoolOptions {
            wait_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    )
    .expect("pool");
    let err = match pool.begin(TenantId::new_random()).await {
        Ok(_) => panic!("a direct pool behind PgBouncer must not hand out transactions"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Pool(_)) && msg.contains("Pooler::Transaction"),
        "{msg}"
    );
    // The same pool in transaction mode connected straight to PostgreSQL works too.
    let direct = TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            pooler: Pooler::Transaction,
            ..Default::default()
        },
    )
    .expect("pool");
    let t = TenantId::new_random();
    seed(&direct, t, 2).await;
    assert_eq!(visible_tenants(&direct, t).await.len(), 2);
}

/// The pid and start of the current transaction on `c`, as the pooled opening reads them.
async fn this_transaction(c: &Client) -> (i32, i64) {
    let row = c
        .query_one(
            "SELECT pg_backend_pid(), encode(timestamptz_send(transaction_timestamp()), 'hex')",
            &[],
        )
        .await
        .expect("transaction");
    let hex: String = row.get(1);
    (
        row.get(0),
        u64::from_str_radix(&hex, 16).expect("hex") as i64,
    )
}

/// A transaction-bound (v2) token enters only the transaction it names, once: replayed in
/// the same transaction, in a later transaction through the pooler (on whichever backend),
/// or in another connection's transaction, it is refused; a v1 token bound to a backend
/// is refused through the pooler when the backend changed, which is why pooled pools do
/// not use them.
#[tokio::test]
async fn transaction_tokens_are_single_use_and_bound_to_their_transaction() {
    for (imp, db) in fresh_dbs().await {
        let bouncer = bouncer(&db, 2).await;
        let c = bouncer_client(&db, &bouncer).await;
        let t = TenantId::new_random();
        let refused = |r: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>, what: &str| {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{imp:?}: {what} must be refused"));
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
                "{imp:?}: {what}: {e}"
            );
        };

        c.batch_execute("BEGIN").await.expect("begin");
        let (pid, start) = this_transaction(&c).await;
        let token = key().sign_for_transaction(t, pid, start, now_micros(), 60_000_000);
        let entered: uuid::Uuid = c
            .query_one("SELECT tenancy.enter($1)", &[&token.as_str()])
            .await
            .expect("a token for this transaction enters")
            .get(0);
        assert_eq!(entered, t.as_uuid());
        refused(
            c.query("SELECT tenancy.enter($1)", &[&token.as_str()])
                .await,
            "the same token again in its transaction",
        );
        c.batch_execute("ROLLBACK").await.expect("rollback");

        // Later transactions, wherever the pooler runs them; and one whose start the token
        // does not name although the pid matches.
        for what in ["replayed later", "replayed later again"] {
            c.batch_execute("BEGIN").await.expect("begin");
            refused(
                c.query("SELECT tenancy.enter($1)", &[&token.as_str()])
                    .await,
                what,
            );
            c.batch_execute("ROLLBACK").await.expect("rollback");
        }
        c.batch_execute("BEGIN").await.expect("begin");
        let (pid_now, start_now) = this_transaction(&c).await;
        let off_by_one =
            key().sign_for_transaction(t, pid_now, start_now - 1, now_micros(), 60_000_000);
        refused(
            c.query("SELECT tenancy.enter($1)", &[&off_by_one.as_str()])
                .await,
            "a token for an earlier start on this backend",
        );
        c.batch_execute("ROLLBACK").await.expect("rollback");

        // A token for another connection's open transaction: refused here, accepted there.
        let other = runtime_client(&db).await;
        other.batch_execute("BEGIN").await.expect("begin");
        let (opid, ostart) = this_transaction(&other).await;
        let foreign = key().sign_for_transaction(t, opid, ostart, now_micros(), 60_000_000);
        c.batch_execute("BEGIN").await.expect("begin");
        refused(
            c.query("SELECT tenancy.enter($1)", &[&foreign.as_str()])
                .await,
            "a token for another connection's transaction",
        );
        c.batch_execute("ROLLBACK").await.expect("rollback");
        let entered: uuid::Uuid = other
            .query_one("SELECT tenancy.enter($1)", &[&foreign.as_str()])
            .await
            .expect("the token enters its own transaction")
            .get(0);
        assert_eq!(entered, t.as_uuid());
        other.batch_execute("ROLLBACK").await.expect("rollback");

        if imp == ContextImpl::Native {
            // Native: a rolled-back savepoint takes the context, not the single-use mark.
            c.batch_execute("BEGIN").await.expect("begin");
            let (p, s) = this_transaction(&c).await;
            let tok = key().sign_for_transaction(t, p, s, now_micros(), 60_000_000);
            c.batch_execute("SAVEPOINT s").await.expect("savepoint");
            c.query("SELECT tenancy.enter($1)", &[&tok.as_str()])
                .await
                .expect("enter");
            c.batch_execute("ROLLBACK TO SAVEPOINT s")
                .await
                .expect("rollback to");
            refused(
                c.query("SELECT tenancy.enter($1)", &[&tok.as_str()]).await,
                "the token again after a rolled-back savepoint (native)",
            );
            c.batch_execute("ROLLBACK").await.expect("rollback");
        }
        drop(c);
        bouncer.stop().await;
    }
}

/// Role defaults the runtime role stores for itself (a 1 ms statement timeout, a
/// read-only default, a search path hiding the application's tables) reach every new
/// backend PgBouncer opens; the pooled openings' `RESET ALL` and `SET LOCAL` limits win.
/// A session-level SET in one transaction does not reach the next one on the same
/// backend (PgBouncer has one).
#[tokio::test]
async fn hostile_defaults_and_session_settings_do_not_break_pooled_transactions() {
    for (imp, db) in fresh_dbs().await {
        let attacker = runtime_client(&db).await;
        attacker
            .batch_execute(&format!(
                "ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET statement_timeout = '1ms';
                 ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET default_transaction_read_only = on;
                 ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET search_path = pg_catalog;",
                db = db.name
            ))
            .await
            .expect("the runtime role may change its own defaults");
        let bouncer = bouncer(&db, 1).await;
        let pool = pooled_pool(&db, &bouncer, 2);
        let t = TenantId::new_random();
        for round in 0..4 {
            let what = format!("{imp:?} round {round}");
            let read_only = round % 2 == 1;
            let mut tx = if read_only {
                pool.begin_read_only(t).await.expect("begin")
            } else {
                pool.begin(t).await.expect("begin")
            };
            let row = tx
                .query_one(
                    "SELECT current_setting('statement_timeout'), current_setting('transaction_read_only'), \
                            current_setting('search_path'), current_setting('row_security'), \
                            (SELECT count(*) FROM customers), pg_sleep(0.02)::text",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: the transaction must run: {e}"));
            let got: Vec<String> = (0..4).map(|i| row.get(i)).collect();
            let ro = if read_only { "on" } else { "off" };
            assert_eq!(got, ["30s", ro, "\"$user\", public", "on"], "{what}");
            if !read_only {
                tx.execute(
                    "INSERT INTO customers (email, name) VALUES ($1, 'n')",
                    &[&format!("{round}@x.example")],
                )
                .await
                .unwrap_or_else(|e| panic!("{what}: write: {e}"));
            }
            // What this transaction leaves for the next one on the same backend.
            tx.batch_execute(
                "SET statement_timeout = 1; SET search_path = pg_catalog; SET row_security = off",
            )
            .await
            .expect("session SET");
            tx.commit().await.expect("commit");
        }
        let su = db.connect_superuser().await.expect("superuser");
        su.batch_execute(&format!(
            "ALTER ROLE tenancy_app IN DATABASE \"{}\" RESET ALL",
            db.name
        ))
        .await
        .expect("reset role defaults");
        drop(pool);
        bouncer.stop().await;
    }
}

/// A schema tenant and `client()` through the pooler: the search path is the tenant's,
/// statements prepared through `client()` and dropped inside the transaction leave
/// nothing behind on the backend.
#[tokio::test]
async fn schema_placement_and_client_work_through_pgbouncer() {
    let db = fresh_db().await;
    let bouncer = bouncer(&db, 1).await;
    let pool = pooled_pool(&db, &bouncer, 3);
    let t = TenantId::new_random();
    seed(&pool, t, 1).await;
    for _ in 0..3 {
        let mut tx = pool.begin_in_schema(t, "public").await.expect("begin");
        let path: String = tx
            .query_one("SELECT current_setting('search_path')", &[])
            .await
            .expect("path")
            .get(0);
        assert_eq!(path, "\"public\", public");
        let client = tx.client().await.expect("client");
        let stmt = client
            .prepare("SELECT count(*) FROM customers")
            .await
            .expect("prepare");
        let n: i64 = client.query_one(&stmt, &[]).await.expect("count").get(0);
        assert_eq!(n, 1);
        drop(stmt);
        tx.commit().await.expect("commit");
    }
    let left: i64 = runtime_client(&db)
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in%'",
            &[],
        )
        .await
        .expect("activity")
        .get(0);
    assert_eq!(left, 0, "no transaction left open on a backend");
}
