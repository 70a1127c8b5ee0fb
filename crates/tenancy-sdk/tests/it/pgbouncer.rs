//! Tenant transactions through PgBouncer in transaction mode (Debian's `pgbouncer`, started
//! here in front of the test cluster, as the same unprivileged user as the server): the
//! pooler hands each transaction whichever backend is free, so tokens cannot be bound to a
//! backend pid and nothing named may outlive a transaction. Every test connects as the
//! runtime role.

use std::collections::HashSet;
use std::time::Duration;

use tenancy_pg::testing::TestDb;
use tenancy_pg::{PgBouncer, PgBouncerOptions};
use tenancy_sdk::bootstrap::{self, ContextImpl, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{Error, PoolOptions, Pooler, TenantId, TenantPool, TenantTx};
use tokio_postgres::Client;

use crate::support::*;

/// PgBouncer in transaction mode with `server_pool` backends for the runtime role.
async fn bouncer(db: &TestDb, server_pool: u32) -> PgBouncer {
    bouncer_for(db.cluster, server_pool).await
}

/// The same in front of `cluster`.
async fn bouncer_for(cluster: &tenancy_pg::Cluster, server_pool: u32) -> PgBouncer {
    PgBouncer::start(
        cluster,
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
    pool_through(bouncer, &db.name, max_size)
}

/// A transaction-mode tenant pool on database `dbname` through `bouncer`.
fn pool_through(bouncer: &PgBouncer, dbname: &str, max_size: usize) -> TenantPool {
    TenantPool::new(
        bouncer.config_as(RUNTIME_ROLE, dbname),
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

/// Whether the server behind `c` keeps the replay registry of single-use tokens.
async fn registry_on(c: &Client) -> bool {
    c.query_one(
        "SELECT current_setting('tenancy_context.replay_slots', true) IS NOT NULL",
        &[],
    )
    .await
    .expect("registry setting")
    .get(0)
}

/// The error of `r` when it is a refusal (28000); panics otherwise.
fn refusal<T>(r: Result<T, tokio_postgres::Error>, what: &str) -> String {
    let e = match r {
        Ok(_) => panic!("{what} must be refused"),
        Err(e) => e,
    };
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{what}: {e}"
    );
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

/// Enters with `token` in a transaction of its own on `c` (through the pooler: whichever
/// backend it hands out), and returns what `enter` said; the transaction is rolled back.
async fn enter_once(c: &Client, token: &str) -> Result<uuid::Uuid, tokio_postgres::Error> {
    c.batch_execute("BEGIN").await.expect("begin");
    let r = c
        .query_one("SELECT tenancy.enter($1)", &[&token])
        .await
        .map(|r| r.get(0));
    c.batch_execute("ROLLBACK").await.expect("rollback");
    r
}

/// A single-use (v3) token enters once, server-wide: replayed through the pooler (on
/// whichever backend) or on a direct connection (another backend), it is refused. Its
/// tenant is what it enters (edited to name another tenant, its MAC fails); an expired
/// token and one that would live longer than the registry allows are refused.
#[tokio::test]
async fn single_use_tokens_enter_once_whichever_backend_they_reach() {
    let Some(db) = fresh_native_db().await else {
        return;
    };
    let bouncer = bouncer(&db, 2).await;
    let c = bouncer_client(&db, &bouncer).await;
    assert!(
        registry_on(&c).await,
        "clusters tenancy starts preload the native library"
    );
    let a = TenantId::new_random();
    let b = TenantId::new_random();
    let nonce = || rand::random::<[u8; 16]>();

    let token = key().sign_single_use(a, nonce(), now_micros(), 10_000_000);
    let entered = enter_once(&c, token.as_str())
        .await
        .expect("a fresh token enters");
    assert_eq!(entered, a.as_uuid());
    for what in [
        "replayed through the pooler",
        "replayed through the pooler again",
    ] {
        let msg = refusal(enter_once(&c, token.as_str()).await, what);
        assert!(msg.contains("already used"), "{what}: {msg}");
    }
    let direct = runtime_client(&db).await;
    let msg = refusal(
        enter_once(&direct, token.as_str()).await,
        "replayed on a direct connection",
    );
    assert!(msg.contains("already used"), "{msg}");

    // A's token names A: edited to name B, it no longer verifies.
    let fresh = key().sign_single_use(a, nonce(), now_micros(), 10_000_000);
    let for_b = fresh.as_str().replace(&a.to_string(), &b.to_string());
    let msg = refusal(enter_once(&c, &for_b).await, "A's token edited to name B");
    assert!(msg.contains("does not verify"), "{msg}");
    assert_eq!(
        enter_once(&c, fresh.as_str())
            .await
            .expect("the unedited token"),
        a.as_uuid()
    );

    let expired = key().sign_single_use(a, nonce(), now_micros() - 20_000_000, 10_000_000);
    let msg = refusal(enter_once(&c, expired.as_str()).await, "an expired token");
    assert!(msg.contains("expired"), "{msg}");
    let long = key().sign_single_use(a, nonce(), now_micros(), 300_000_000);
    let msg = refusal(enter_once(&c, long.as_str()).await, "a token living 300 s");
    assert!(msg.contains("lives too long"), "{msg}");
    drop(c);
    bouncer.stop().await;
}

/// A pool behind PgBouncer on a server with the registry opens its transactions with
/// single-use tokens, never in SQL text: while read-only and read-write transactions run,
/// no query text in `pg_stat_activity` holds a token, and each tenant sees its own rows.
#[tokio::test]
async fn pooled_single_use_openings_keep_tokens_out_of_query_text() {
    let Some(db) = fresh_native_db().await else {
        return;
    };
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "ALTER ROLE tenancy_app IN DATABASE {} SET log_statement = 'all'",
        db.name
    ))
    .await
    .expect("statement logging for this database");
    let bouncer = bouncer(&db, 2).await;
    let pool = pooled_pool(&db, &bouncer, 4);
    let t = TenantId::new_random();
    seed(&pool, t, 3).await;
    let watcher = runtime_client(&db).await;
    let pool2 = pool.clone();
    let runs = tokio::spawn(async move {
        for _ in 0..20 {
            let mut tx = pool2.begin_read_only(t).await?;
            tx.query_one("SELECT count(*), pg_sleep(0.01)::text FROM customers", &[])
                .await?;
            tx.commit().await?;
            let mut tx = pool2.begin(t).await?;
            tx.execute("UPDATE customers SET name = name", &[]).await?;
            tx.commit().await?;
        }
        Ok::<_, Error>(())
    });
    while !runs.is_finished() {
        let rows = watcher
            .query(
                "SELECT query FROM pg_stat_activity WHERE datname = current_database()",
                &[],
            )
            .await
            .expect("activity");
        for r in rows {
            let q: String = r.get(0);
            assert!(
                !q.contains("v3.") && !q.contains("v2."),
                "a token in query text: {q}"
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    runs.await.expect("task").expect("transactions");
    // Only the tenant's rows, through implicit read-only statements.
    assert_eq!(visible_tenants(&pool, t).await.len(), 3);
    assert!(visible_tenants(&pool, TenantId::new_random())
        .await
        .is_empty());
    // The openings were the single-use ones, each one call of tenancy.enter_pooled
    // (read_only true for implicit read-only transactions) with no SET statement in
    // front; no token is in the log.
    let log = std::fs::read_to_string(db.cluster.data_dir().join("tenancy-postgres.log"))
        .expect("the cluster's log file");
    assert!(
        log.contains("SELECT tenancy.enter_pooled($1::pg_catalog.text, true, 30000, "),
        "implicit single-use openings are logged"
    );
    assert!(log.contains("SELECT tenancy.enter_pooled($1::pg_catalog.text, false, 30000, "));
    assert!(
        !log.contains("SET statement_timeout = 30000")
            && !log.contains("pg_backend_pid(), tenancy.enter_read_only($1"),
        "no statement of the SQL opening"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("parameters:") && l.contains("'v3.")),
        "a context token in the server log"
    );
    drop(pool);
    bouncer.stop().await;
}

/// Whether database `app` on `cluster` got the native context (it must, where this build
/// has the library or `TENANCY_REQUIRE_NATIVE=1`).
async fn is_native(cluster: &tenancy_pg::Cluster) -> bool {
    let su = cluster.connect("app").await.expect("superuser");
    let native = bootstrap::context_impl(&su).await.expect("impl") == Some(ContextImpl::Native);
    assert!(native || !tenancy_pg::native_required());
    if !native {
        eprintln!("no native context library for this server: nothing to check");
    }
    native
}

/// A cluster of its own with `settings`, a database `app` on it bootstrapped like the test
/// template (roles, runtime with the native context where built, catalog, app tables).
async fn own_cluster(settings: &[(&str, &str)]) -> tenancy_pg::Cluster {
    own_cluster_with(settings, "").await
}

/// [`own_cluster`], running `before_runtime` as the superuser on `app` between the
/// database bootstrap and the runtime.
async fn own_cluster_with(settings: &[(&str, &str)], before_runtime: &str) -> tenancy_pg::Cluster {
    let mut opts = tenancy_pg::ClusterOptions::for_tests();
    opts.settings
        .extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cluster = tenancy_pg::Cluster::start(opts).await.expect("cluster");
    let admin = cluster.connect("postgres").await.expect("admin");
    admin
        .batch_execute("CREATE DATABASE app")
        .await
        .expect("create database");
    let su = cluster.connect("app").await.expect("superuser");
    bootstrap::bootstrap_cluster(&su)
        .await
        .expect("cluster bootstrap");
    bootstrap::bootstrap_database(&su, "app")
        .await
        .expect("database bootstrap");
    su.batch_execute(before_runtime)
        .await
        .expect("before the runtime");
    let mut owner = connect(cluster.config_as(OWNER_ROLE, "app")).await;
    bootstrap::install_runtime(&owner, &key())
        .await
        .expect("runtime");
    tenancy_catalog::migrate(&mut owner).await.expect("catalog");
    owner.batch_execute(APP_SCHEMA).await.expect("app tables");
    cluster
}

/// With a registry of one slot, the second unexpired single-use token finds it full and
/// is refused, the message naming the setting; nothing entered. A pool on that server
/// fails its transactions as refused rather than entering unrecorded.
#[tokio::test]
async fn a_full_replay_registry_refuses_and_names_the_setting() {
    let cluster = own_cluster(&[("tenancy_context.replay_slots", "1")]).await;
    if !is_native(&cluster).await {
        return;
    }
    let c = connect(cluster.config_as(RUNTIME_ROLE, "app")).await;
    let slots: String = c
        .query_one(
            "SELECT current_setting('tenancy_context.replay_slots')",
            &[],
        )
        .await
        .expect("setting")
        .get(0);
    assert_eq!(slots, "1");
    let t = TenantId::new_random();
    let first = key().sign_single_use(t, rand::random(), now_micros(), 10_000_000);
    enter_once(&c, first.as_str()).await.expect("the one slot");
    let second = key().sign_single_use(t, rand::random(), now_micros(), 10_000_000);
    let e = enter_once(&c, second.as_str())
        .await
        .expect_err("a full registry must refuse");
    let d = e.as_db_error().expect("db error");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    assert!(
        d.message().contains("replay registry is full"),
        "{}",
        d.message()
    );
    assert!(
        d.hint()
            .is_some_and(|h| h.contains("tenancy_context.replay_slots")),
        "{:?}",
        d.hint()
    );
    // The first token is still recorded: refused as used, not as full.
    let msg = refusal(
        enter_once(&c, first.as_str()).await,
        "the first token again",
    );
    assert!(msg.contains("already used"), "{msg}");
}

/// A server without the library preloaded has no registry: a pool behind PgBouncer falls
/// back to transaction-bound (v2) tokens and its transactions still run, isolated; a v3
/// token sent by hand is refused with the fix named.
#[tokio::test]
async fn without_preload_pooled_pools_fall_back_to_transaction_tokens() {
    let cluster = own_cluster(&[("shared_preload_libraries", "")]).await;
    let c = connect(cluster.config_as(RUNTIME_ROLE, "app")).await;
    assert!(!registry_on(&c).await);
    if is_native(&cluster).await {
        let tok = key().sign_single_use(
            TenantId::new_random(),
            rand::random(),
            now_micros(),
            10_000_000,
        );
        let e = enter_once(&c, tok.as_str()).await.expect_err("no registry");
        let d = e.as_db_error().expect("db error");
        assert!(d.message().contains("replay registry"), "{}", d.message());
        assert!(
            d.hint()
                .is_some_and(|h| h.contains("shared_preload_libraries")),
            "{:?}",
            d.hint()
        );
    }
    cluster
        .connect("app")
        .await
        .expect("superuser")
        .batch_execute("ALTER ROLE tenancy_app IN DATABASE app SET log_statement = 'all'")
        .await
        .expect("statement logging");
    let bouncer = bouncer_for(&cluster, 2).await;
    let pool = pool_through(&bouncer, "app", 4);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 2).await;
    seed(&pool, b, 1).await;
    for _ in 0..3 {
        assert_eq!(visible_tenants(&pool, a).await, vec![a.as_uuid(); 2]);
        let mut tx = pool.begin_read_only(b).await.expect("begin");
        let n: i64 = tx
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 1);
        tx.commit().await.expect("commit");
    }
    // The openings were transaction-bound: an opening query, then `tenancy.enter`.
    let log = std::fs::read_to_string(cluster.data_dir().join("tenancy-postgres.log"))
        .expect("the cluster's log file");
    assert!(log.contains("timestamptz_send(pg_catalog.transaction_timestamp())"));
    assert!(!log.contains("pg_backend_pid(), tenancy.enter"));
    drop(pool);
    bouncer.stop().await;
}

/// Signs a fresh single-use token for `t`.
fn single_use(t: TenantId) -> String {
    key()
        .sign_single_use(t, rand::random(), now_micros(), 10_000_000)
        .as_str()
        .to_owned()
}

/// `tenancy.enter_pooled` is the whole pooled opening: it refuses arguments it cannot
/// apply before it looks at the token (which then still enters, once), starts its own
/// statement's timer with the pool's statement timeout (a session's 1 ms does not cancel
/// the rest of the statement), resets session settings, and leaves the limits, row
/// security and search path for the rest of the transaction only; read-only, it makes the
/// transaction read-only and is refused in a subtransaction.
#[tokio::test]
async fn enter_pooled_checks_its_arguments_first_and_sets_the_transactions_limits() {
    let Some(db) = fresh_native_db().await else {
        return;
    };
    let c = runtime_client(&db).await;
    let t = TenantId::new_random();
    let call = "SELECT tenancy.enter_pooled($1::text, $2, $3, $4, $5, $6, $7)";
    let token = single_use(t);
    let major: i32 = c
        .query_one(
            "SELECT current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .expect("version")
        .get(0);
    let mut bad: Vec<(&str, Option<i32>, Option<&str>, &str)> = vec![
        ("a negative limit", Some(-1), None, "22023"),
        ("NULL read_only", Some(1000), None, "22004"),
        (
            "a search path that does not parse",
            Some(1000),
            Some("\"unclosed"),
            "22023",
        ),
    ];
    if major < 17 {
        bad.push(("transaction_timeout before 17", Some(1000), None, "0A000"));
    }
    for (what, st, path, code) in &bad {
        c.batch_execute("BEGIN").await.expect("begin");
        let read_only: Option<bool> = (*what != "NULL read_only").then_some(false);
        let tt: Option<i32> = what.starts_with("transaction_timeout").then_some(1000);
        let e = c
            .query_one(
                call,
                &[
                    &token,
                    &read_only,
                    st,
                    &Some(1000i32),
                    &None::<i32>,
                    &tt,
                    path,
                ],
            )
            .await
            .expect_err(what);
        assert_eq!(e.code().map(|c| c.code()), Some(*code), "{what}: {e:?}");
        c.batch_execute("ROLLBACK").await.expect("rollback");
    }

    // A session's leftovers: a 1 ms statement timeout, row security off, a search path.
    c.batch_execute(
        "SET statement_timeout = 1; SET row_security = off; SET search_path = pg_catalog",
    )
    .await
    .expect("session settings");
    c.batch_execute("BEGIN").await.expect("begin");
    let row = c
        .query_one(
            "SELECT tenancy.enter_pooled($1::text, false, 30000, 4000, 50000, NULL, E'\"public\", public'), \
                    pg_catalog.pg_sleep(0.05)::text, pg_catalog.pg_backend_pid()",
            &[&token],
        )
        .await
        .expect("the token enters, after the refused calls, and 1 ms does not cancel the statement");
    let (pid, own): (i32, i32) = (row.get(0), row.get(2));
    assert_eq!(pid, own, "returns the backend pid");
    let row = c
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), \
                    current_setting('idle_in_transaction_session_timeout'), current_setting('row_security'), \
                    current_setting('search_path'), current_setting('client_min_messages'), \
                    tenancy.current_tenant_id()",
            &[],
        )
        .await
        .expect("settings");
    let got: Vec<String> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(
        got,
        ["30s", "4s", "50s", "on", "\"public\", public", "notice"]
    );
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(6), Some(t.as_uuid()));
    c.batch_execute("COMMIT").await.expect("commit");
    // Transaction-local: the session's own values were reset (RESET ALL), not kept.
    let row = c
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('row_security'), \
                    tenancy.current_tenant_id() IS NULL",
            &[],
        )
        .await
        .expect("after commit");
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("0".into(), "on".into())
    );
    assert!(
        row.get::<_, bool>(2),
        "the context ended with its transaction"
    );

    // Once only.
    c.batch_execute("BEGIN").await.expect("begin");
    let msg = refusal(
        enter_pooled_plainly(&c, &token, false).await,
        "the token again",
    );
    assert!(msg.contains("already used"), "{msg}");
    c.batch_execute("ROLLBACK").await.expect("rollback");

    // Read-only: the transaction cannot write; not in a subtransaction.
    c.batch_execute("BEGIN").await.expect("begin");
    enter_pooled_plainly(&c, &single_use(t), true)
        .await
        .expect("read-only enter");
    let e = c
        .execute(
            "INSERT INTO customers (email, name) VALUES ('x@x.example', 'x')",
            &[],
        )
        .await
        .expect_err("read-only");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
    c.batch_execute("ROLLBACK; BEGIN; SAVEPOINT s")
        .await
        .expect("savepoint");
    let msg = refusal(
        enter_pooled_plainly(&c, &single_use(t), true).await,
        "read-only in a subtransaction",
    );
    assert!(msg.contains("subtransaction"), "{msg}");
    c.batch_execute("ROLLBACK").await.expect("rollback");
}

/// `tenancy.enter_pooled(token, read_only)` with 1 s limits and nothing else.
async fn enter_pooled_plainly(
    c: &Client,
    token: &str,
    read_only: bool,
) -> Result<tokio_postgres::Row, tokio_postgres::Error> {
    c.query_one(
        "SELECT tenancy.enter_pooled($1::text, $2, 1000, 1000, NULL, NULL, NULL)",
        &[&token, &read_only],
    )
    .await
}

/// A database whose extension is still at 1.0 (no tenancy.enter_pooled) keeps working
/// through PgBouncer with the SQL opening; the bootstrap updates the extension to this
/// build's version, and new connections then open with tenancy.enter_pooled.
#[tokio::test]
async fn a_database_at_extension_1_0_works_behind_pgbouncer_until_the_bootstrap_updates_it() {
    // Back to 1.0 after the bootstrap created the extension, before anything depends on
    // its functions.
    let cluster = own_cluster_with(
        &[],
        "ALTER ROLE tenancy_app IN DATABASE app SET log_statement = 'all';
         DO $$
         BEGIN
             IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'tenancy_context') THEN
                 DROP EXTENSION tenancy_context;
                 SET LOCAL ROLE tenancy_owner;
                 CREATE EXTENSION tenancy_context VERSION '1.0';
             END IF;
         END
         $$",
    )
    .await;
    let su = cluster.connect("app").await.expect("superuser");
    if !tenancy_test_support::context_extension_offered(&su).await {
        assert!(
            !tenancy_pg::native_required(),
            "the extension must be offered"
        );
        eprintln!("the server does not offer the tenancy_context extension: nothing to check");
        return;
    }
    assert_eq!(
        bootstrap::context_impl(&su).await.expect("impl"),
        Some(ContextImpl::Native)
    );
    let extversion = || async {
        su.query_one(
            "SELECT extversion, to_regprocedure('tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text)') IS NOT NULL \
               FROM pg_extension WHERE extname = 'tenancy_context'",
            &[],
        )
        .await
        .map(|r| (r.get::<_, String>(0), r.get::<_, bool>(1)))
        .expect("extension")
    };
    assert_eq!(extversion().await, ("1.0".to_owned(), false));

    let bouncer = bouncer_for(&cluster, 2).await;

    let log_path = cluster.data_dir().join("tenancy-postgres.log");
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let pool = pool_through(&bouncer, "app", 2);
    seed(&pool, a, 2).await;
    assert_eq!(visible_tenants(&pool, a).await, vec![a.as_uuid(); 2]);
    assert!(visible_tenants(&pool, b).await.is_empty());
    // Twice: the second run knows its parameter types and opens implicitly.
    for _ in 0..2 {
        assert_eq!(read_only_count(&pool, a).await, 2);
    }
    let log = std::fs::read_to_string(&log_path).expect("the cluster's log file");
    assert!(
        log.contains("SET statement_timeout = 30000")
            && log.contains("SELECT pg_catalog.pg_backend_pid(), tenancy.enter($1"),
        "the 1.0 opening"
    );
    assert!(!log.contains("SELECT tenancy.enter_pooled($1"));
    drop(pool);

    bootstrap::bootstrap_database(&su, "app")
        .await
        .expect("database bootstrap again");
    assert_eq!(
        extversion().await,
        (tenancy_pg::EXTENSION_VERSION.to_owned(), true),
        "updated"
    );
    let pool = pool_through(&bouncer, "app", 2);
    seed(&pool, b, 1).await;
    assert_eq!(visible_tenants(&pool, b).await, vec![b.as_uuid()]);
    assert_eq!(visible_tenants(&pool, a).await, vec![a.as_uuid(); 2]);
    for _ in 0..2 {
        assert_eq!(read_only_count(&pool, b).await, 1);
    }
    let log = std::fs::read_to_string(&log_path).expect("the cluster's log file");
    assert!(log.contains("SELECT tenancy.enter_pooled($1::pg_catalog.text, true, "));
    assert!(log.contains("SELECT tenancy.enter_pooled($1::pg_catalog.text, false, "));
    drop(pool);
    bouncer.stop().await;
}

/// The customers `tenant` sees in a read-only transaction.
async fn read_only_count(pool: &TenantPool, tenant: TenantId) -> i64 {
    let mut tx = pool.begin_read_only(tenant).await.expect("begin");
    let n = tx
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("count")
        .get(0);
    tx.commit().await.expect("commit");
    n
}
