//! Attacks on the PL/pgSQL session context (direct connections): its state in temporary
//! sequences of the owner role, entered with a per-connection secret that rotates on every
//! opening. Each test runs as the runtime role, by hand (what injected SQL can do) or
//! through the pool (what the next tenant on the connection sees).

use tenancy_pg::testing::TestDb;
use tenancy_sdk::{ContextKey, Error, TenantId};
use tokio_postgres::Client;

use crate::support::*;

/// The tenant id as `tenancy.enter_session` takes it: two big-endian int8 halves.
fn halves(t: TenantId) -> (i64, i64) {
    let b = *t.as_uuid().as_bytes();
    let (hi, lo) = b.split_at(8);
    (
        i64::from_be_bytes(hi.try_into().expect("8 bytes")),
        i64::from_be_bytes(lo.try_into().expect("8 bytes")),
    )
}

/// Microseconds since the Unix epoch, strictly increasing within the process (tokens
/// are single-use per backend).
fn issue_micros() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let next = |prev: i64| prev.max(now - 1) + 1;
    next(
        LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| Some(next(p)))
            .unwrap_or(now - 1),
    )
}

async fn pid(c: &Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

/// `tenancy.init_session` with a token `key` signed for backend `pid`.
async fn init_with(c: &Client, key: &ContextKey, pid: i32) -> Result<i64, tokio_postgres::Error> {
    let token = key.sign(TenantId::new_random(), pid, issue_micros(), 60_000_000);
    Ok(
        c.query_one("SELECT tenancy.init_session($1)", &[&token.as_str()])
            .await?
            .get(0),
    )
}

/// `tenancy.init_session` as the SDK calls it: with a token for this backend.
async fn init(c: &Client) -> Result<i64, tokio_postgres::Error> {
    init_with(c, &key(), pid(c).await).await
}

/// `tenancy.enter_session` with bound parameters, as the SDK sends it; returns the
/// secret for the next opening (the random `next` it passed, once the database took it).
async fn enter(c: &Client, t: TenantId, secret: i64) -> Result<i64, tokio_postgres::Error> {
    let (hi, lo) = halves(t);
    let next: i64 = rand::random();
    let stored: i64 = c
        .query_one(
            "SELECT tenancy.enter_session($1, $2, $3, $4)",
            &[&hi, &lo, &secret, &next],
        )
        .await?
        .get(0);
    assert_eq!(
        stored, next,
        "enter_session returns the next secret it stored"
    );
    Ok(stored)
}

async fn current(c: &Client) -> Option<uuid::Uuid> {
    c.query_one("SELECT tenancy.current_tenant_id()", &[])
        .await
        .expect("current_tenant_id")
        .get(0)
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// A PL/pgSQL database with tenants A (one customer) and B (two).
async fn set_up() -> (TestDb, TenantId, TenantId) {
    let db = fresh_db_plpgsql().await;
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let p = pool(&db, 1);
    seed(&p, a, 1).await;
    seed(&p, b, 2).await;
    (db, a, b)
}

#[tokio::test]
async fn a_wrong_session_secret_is_refused_and_burns_the_right_one() {
    let (db, a, b) = set_up().await;
    let c = runtime_client(&db).await;
    let s = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    let e = enter(&c, b, s.wrapping_add(1))
        .await
        .expect_err("a wrong secret entered");
    assert!(message(&e).contains("wrong session secret"), "{e}");
    assert_eq!(e.code().map(|c| c.code()), Some("28000"));
    c.batch_execute("ROLLBACK").await.expect("rollback");
    // The right secret no longer works either: the guess burnt it.
    c.batch_execute("BEGIN").await.expect("begin");
    let e = enter(&c, a, s)
        .await
        .expect_err("the secret survived a wrong guess");
    assert!(message(&e).contains("wrong session secret"), "{e}");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(current(&c).await, None);
}

#[tokio::test]
async fn a_used_session_secret_is_refused() {
    let (db, a, b) = set_up().await;
    let c = runtime_client(&db).await;
    let s0 = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    let s1 = enter(&c, a, s0).await.expect("enter a");
    assert_ne!(s1, s0, "the secret rotates");
    assert_eq!(current(&c).await, Some(a.as_uuid()));
    assert_eq!(crate::context::count_tenant(&c, a).await, 1);
    c.batch_execute("COMMIT").await.expect("commit");
    // Replayed (injected SQL that saw it in a statement log, say): refused, in a later
    // transaction and in the same one.
    for same_tx in [false, true] {
        let c = runtime_client(&db).await;
        let used = init(&c).await.expect("init");
        c.batch_execute("BEGIN").await.expect("begin");
        let live = enter(&c, a, used).await.expect("first use");
        if !same_tx {
            c.batch_execute("COMMIT; BEGIN")
                .await
                .expect("new transaction");
        }
        let e = enter(&c, b, used)
            .await
            .expect_err("a used secret entered again");
        assert!(message(&e).contains("wrong session secret"), "{e}");
        c.batch_execute("ROLLBACK").await.expect("rollback");
        // And the replay burnt the live one.
        c.batch_execute("BEGIN").await.expect("begin");
        enter(&c, a, live)
            .await
            .expect_err("the live secret survived a replay");
        c.batch_execute("ROLLBACK").await.expect("rollback");
    }
}

#[tokio::test]
async fn the_context_of_an_earlier_transaction_on_the_backend_reads_null() {
    let (db, a, _) = set_up().await;
    let c = runtime_client(&db).await;
    let s = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    let s = enter(&c, a, s).await.expect("enter");
    assert_eq!(crate::context::count_tenant(&c, a).await, 1);
    c.batch_execute("COMMIT").await.expect("commit");
    // The sequences still hold A (setval is not transactional), but for another
    // transaction: a later explicit one, an implicit one, one after a ROLLBACK.
    assert_eq!(current(&c).await, None, "implicit transaction");
    assert_eq!(crate::context::count_tenant(&c, a).await, 0);
    c.batch_execute("BEGIN").await.expect("begin");
    assert_eq!(current(&c).await, None, "explicit transaction");
    assert_eq!(crate::context::count_tenant(&c, a).await, 0);
    c.batch_execute("ROLLBACK").await.expect("rollback");
    c.batch_execute("BEGIN").await.expect("begin");
    enter(&c, a, s).await.expect("enter");
    c.batch_execute("ROLLBACK; BEGIN")
        .await
        .expect("rolled back");
    assert_eq!(
        current(&c).await,
        None,
        "after the entering transaction rolled back"
    );
    c.batch_execute("ROLLBACK").await.expect("rollback");
}

/// Nothing the check hashes or compares follows a session setting: hostile values set
/// inside the transaction keep its tenant, and keep any other transaction at none.
#[tokio::test]
async fn hostile_session_settings_neither_lose_nor_forge_the_session_context() {
    let (db, a, _) = set_up().await;
    let c = runtime_client(&db).await;
    let mut s = init(&c).await.expect("init");
    let hostile = [
        "SET LOCAL extra_float_digits = -15",
        "SET LOCAL extra_float_digits = 3",
        "SET LOCAL DateStyle = 'SQL, DMY'",
        "SET LOCAL DateStyle = 'German'",
        "SET LOCAL TimeZone = 'Pacific/Kiritimati'",
        "SET LOCAL TimeZone = 'UTC-14'",
        "SET LOCAL IntervalStyle = 'iso_8601'",
        "SET LOCAL bytea_output = 'escape'",
        "SET LOCAL search_path = public, pg_temp, pg_catalog",
        "SET LOCAL search_path = ''",
        "SET LOCAL lc_monetary = 'C'",
    ];
    for set in hostile {
        c.batch_execute("BEGIN").await.expect("begin");
        s = enter(&c, a, s).await.expect("enter");
        c.batch_execute(set).await.expect(set);
        assert_eq!(
            current(&c).await,
            Some(a.as_uuid()),
            "{set} lost the context"
        );
        let n: i64 = c
            .query_one("SELECT count(*) FROM public.customers", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 1, "{set}");
        c.batch_execute("COMMIT").await.expect("commit");
        c.batch_execute(&format!("BEGIN; {set}")).await.expect(set);
        assert_eq!(
            current(&c).await,
            None,
            "{set} revived an earlier transaction's context"
        );
        c.batch_execute("ROLLBACK").await.expect("rollback");
    }
}

#[tokio::test]
async fn the_runtime_role_can_neither_move_nor_read_the_session_state() {
    let (db, a, b) = set_up().await;
    let c = runtime_client(&db).await;
    let s = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    enter(&c, a, s).await.expect("enter");
    let (b_hi, b_lo) = halves(b);
    let attempts = [
        format!("SELECT setval('pg_temp.tenancy_ctx_hi', {b_hi})"),
        format!("SELECT setval('pg_temp.tenancy_ctx_lo', {b_lo})"),
        "SELECT setval('pg_temp.tenancy_ctx_tx', 1)".to_owned(),
        "SELECT nextval('pg_temp.tenancy_ctx_lo')".to_owned(),
        "SELECT nextval('pg_temp.tenancy_ctx_tx')".to_owned(),
        "SELECT last_value FROM pg_temp.tenancy_ctx_secret".to_owned(),
        "SELECT currval('pg_temp.tenancy_ctx_secret')".to_owned(),
        "SELECT nextval('pg_temp.tenancy_ctx_secret')".to_owned(),
        "SELECT setval('pg_temp.tenancy_ctx_secret', 1)".to_owned(),
        "ALTER SEQUENCE pg_temp.tenancy_ctx_lo RESTART WITH 5".to_owned(),
        "DROP SEQUENCE pg_temp.tenancy_ctx_hi".to_owned(),
        "DELETE FROM tenancy_private.context_sessions".to_owned(),
    ];
    for sql in &attempts {
        c.batch_execute("SAVEPOINT s").await.expect("savepoint");
        let r = c.batch_execute(sql).await;
        assert!(r.is_err(), "the runtime role ran {sql}");
        c.batch_execute("ROLLBACK TO SAVEPOINT s")
            .await
            .expect("rollback to");
        assert_eq!(current(&c).await, Some(a.as_uuid()), "after {sql}");
    }
    // pg_sequence_last_value without privilege: an error before PostgreSQL 18, NULL from
    // 18 on; either way no value.
    c.batch_execute("SAVEPOINT s").await.expect("savepoint");
    if let Ok(row) = c
        .query_one(
            "SELECT pg_sequence_last_value('pg_temp.tenancy_ctx_secret')",
            &[],
        )
        .await
    {
        assert_eq!(
            row.get::<_, Option<i64>>(0),
            None,
            "the runtime role read the session secret"
        );
    }
    c.batch_execute("ROLLBACK TO SAVEPOINT s")
        .await
        .expect("rollback to");
    assert_eq!(current(&c).await, Some(a.as_uuid()));
    // No catalog view shows the secret either.
    let shown: Option<i64> = c
        .query_one(
            "SELECT last_value FROM pg_sequences WHERE sequencename = 'tenancy_ctx_secret'",
            &[],
        )
        .await
        .expect("pg_sequences")
        .get(0);
    assert_eq!(shown, None);
    c.batch_execute("ROLLBACK").await.expect("rollback");
}

#[tokio::test]
async fn init_runs_once_per_backend_even_after_discard() {
    let (db, a, _) = set_up().await;
    let c = runtime_client(&db).await;
    let s = init(&c).await.expect("init");
    let e = init(&c).await.expect_err("a second init");
    assert!(message(&e).contains("already initialised"), "{e}");
    for discard in ["DISCARD TEMP", "DISCARD ALL"] {
        c.batch_execute(discard).await.expect(discard);
        let e = init(&c).await.expect_err("init after DISCARD");
        assert!(
            message(&e).contains("already initialised"),
            "{discard}: {e}"
        );
    }
    // The state is gone with the sequences: no context, and no entering again.
    c.batch_execute("BEGIN").await.expect("begin");
    let e = enter(&c, a, s)
        .await
        .expect_err("entered after DISCARD TEMP");
    assert!(message(&e).contains("no session context"), "{e}");
    c.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(current(&c).await, None);
    // Another backend initialises as usual.
    let other = runtime_client(&db).await;
    init(&other).await.expect("init on another connection");
}

#[tokio::test]
async fn discard_sequences_changes_nothing_for_the_next_opening() {
    let (db, a, _) = set_up().await;
    let c = runtime_client(&db).await;
    let s = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    let s = enter(&c, a, s).await.expect("enter");
    c.batch_execute("COMMIT; DISCARD SEQUENCES")
        .await
        .expect("discard");
    c.batch_execute("BEGIN").await.expect("begin");
    enter(&c, a, s)
        .await
        .expect("the secret is read from the sequence, not currval");
    assert_eq!(current(&c).await, Some(a.as_uuid()));
    c.batch_execute("COMMIT").await.expect("commit");
}

/// The runtime role may not create temporary objects: a sequence of its own named like
/// the session state (before init, or after DISCARD TEMP dropped the real ones) would
/// forge a context. Where it may, init refuses.
#[tokio::test]
async fn temporary_objects_of_the_runtime_role_cannot_forge_a_session_context() {
    let (db, a, b) = set_up().await;
    let c = runtime_client(&db).await;
    let e = c
        .batch_execute("CREATE TEMP SEQUENCE tenancy_ctx_secret")
        .await
        .expect_err("the runtime role created a temporary object");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    // A database that grants TEMPORARY to the runtime role (as PostgreSQL's default to
    // PUBLIC does): init refuses rather than hand out a context that can be forged.
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "GRANT TEMPORARY ON DATABASE \"{}\" TO tenancy_app",
        db.name
    ))
    .await
    .expect("grant");
    let c = runtime_client(&db).await;
    let refused = init(&c).await;
    if refused.is_ok() {
        // What the refusal prevents: drop the owner's sequences, make one's own.
        let (hi, lo) = halves(b);
        c.batch_execute(&format!(
            "DISCARD TEMP;
             CREATE TEMP SEQUENCE tenancy_ctx_hi MINVALUE -9223372036854775808;
             CREATE TEMP SEQUENCE tenancy_ctx_lo MINVALUE -9223372036854775808;
             CREATE TEMP SEQUENCE tenancy_ctx_tx MINVALUE -9223372036854775808;
             BEGIN;
             SELECT setval('tenancy_ctx_hi', {hi}), setval('tenancy_ctx_lo', {lo}),
                    setval('tenancy_ctx_tx', hashfloat8extended(date_part('epoch', transaction_timestamp()), 0))"
        ))
        .await
        .expect("forge");
        assert_ne!(
            current(&c).await,
            Some(b.as_uuid()),
            "a forged session context"
        );
        panic!("init_session ran for a role that may create temporary objects");
    }
    let e = refused.expect_err("checked above");
    assert!(message(&e).contains("may create temporary objects"), "{e}");
    // The pool says what to fix instead of serving with a forgeable context.
    let p = pool(&db, 1);
    let err = p
        .begin(a)
        .await
        .expect_err("a pool on a forgeable database");
    assert!(err.to_string().contains("REVOKE TEMPORARY"), "{err}");
}

/// Injected SQL in tenant A's transaction drops or burns the session context of its
/// pooled connection: B's next request (same pool of one) moves to a new connection
/// without an error, and sees B's rows only.
#[tokio::test]
async fn a_connection_whose_session_context_was_dropped_or_burnt_is_retired_without_an_error() {
    let (db, a, b) = set_up().await;
    let p = pool(&db, 1);
    // Each a list of simple queries (DISCARD ALL must run outside a transaction block).
    let injected: [&[&str]; 5] = [
        &["DISCARD TEMP"],
        &["COMMIT", "DISCARD ALL"],
        &["DISCARD SEQUENCES"],
        &["SELECT tenancy.enter_session(0, 0, 0, 0)"],
        &["SELECT setval('pg_temp.tenancy_ctx_hi', 0)"],
    ];
    for sqls in injected {
        let sql = sqls.join("; ");
        for read_only in [false, true] {
            let mut tx = p.begin(a).await.expect("begin a");
            assert_eq!(
                tx.query("SELECT 1 FROM customers", &[])
                    .await
                    .expect("a")
                    .len(),
                1
            );
            let pid_a: i32 = tx
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get(0);
            for sql in sqls {
                let _ = tx.batch_execute(sql).await;
            }
            let _ = tx.commit().await;
            let run = async {
                let mut tx = if read_only {
                    p.begin_read_only(b).await?
                } else {
                    p.begin(b).await?
                };
                let rows = tx.query("SELECT tenant_id FROM customers", &[]).await?;
                let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
                tx.commit().await?;
                Ok::<_, Error>((rows, pid))
            };
            let (rows, pid_b) = run.await.unwrap_or_else(|e| panic!("after {sql}: {e}"));
            assert_eq!(rows.len(), 2, "after {sql}");
            assert!(
                rows.iter()
                    .all(|r| r.get::<_, uuid::Uuid>(0) == b.as_uuid()),
                "after {sql}"
            );
            if sql.contains("DISCARD TEMP")
                || sql.contains("DISCARD ALL")
                || sql.contains("enter_session")
            {
                assert_ne!(pid_a, pid_b, "{sql}: the connection must be retired");
            }
        }
    }
}

/// A backend the SDK did not initialise (every backend behind a transaction-mode pooler):
/// SQL on it cannot give itself a session context, and with it a secret of its own to
/// enter any tenant. init_session takes only a v1 token the SDK signed for this backend.
#[tokio::test]
async fn sql_on_a_backend_the_sdk_did_not_initialise_cannot_give_itself_a_session_context() {
    let (db, _, b) = set_up().await;
    let c = runtime_client(&db).await;
    let me = pid(&c).await;
    let other_key = ContextKey::from_hex(
        "test".parse().expect("kid"),
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    )
    .expect("key");
    let v2 = key().sign_for_transaction(b, me, 0, issue_micros(), 60_000_000);
    let expired = key().sign(b, me, issue_micros() - 120_000_000, 60_000_000);
    let refused: [(&str, Result<i64, tokio_postgres::Error>); 6] = [
        (
            "no argument",
            c.query_one("SELECT tenancy.init_session()", &[])
                .await
                .map(|r| r.get(0)),
        ),
        (
            "junk",
            c.query_one("SELECT tenancy.init_session('v1.test.x.1.2.3.abc')", &[])
                .await
                .map(|r| r.get(0)),
        ),
        (
            "another backend",
            init_with(&c, &key(), me.wrapping_add(1)).await,
        ),
        ("another key", init_with(&c, &other_key, me).await),
        (
            "a v2 token",
            c.query_one("SELECT tenancy.init_session($1)", &[&v2.as_str()])
                .await
                .map(|r| r.get(0)),
        ),
        (
            "an expired token",
            c.query_one("SELECT tenancy.init_session($1)", &[&expired.as_str()])
                .await
                .map(|r| r.get(0)),
        ),
    ];
    for (what, r) in refused {
        assert!(r.is_err(), "init_session accepted {what}");
    }
    // Nothing was initialised: no secret enters B, whatever is guessed.
    for guess in [0i64, 1, -1] {
        c.batch_execute("BEGIN").await.expect("begin");
        let e = enter(&c, b, guess).await.expect_err("entered without init");
        assert!(message(&e).contains("no session context"), "{e}");
        c.batch_execute("ROLLBACK").await.expect("rollback");
    }
    assert_eq!(current(&c).await, None);
    assert_eq!(crate::context::count_tenant(&c, b).await, 0);
    // The SDK's own token initialises it.
    let s = init(&c).await.expect("init with the SDK's token");
    c.batch_execute("BEGIN").await.expect("begin");
    enter(&c, b, s).await.expect("enter");
    assert_eq!(current(&c).await, Some(b.as_uuid()));
    c.batch_execute("COMMIT").await.expect("commit");
}

/// The planner puts the session state's sequences in a statement's plan as constants: a
/// plan prepared and cached on the connection reads this transaction's tenant in every
/// transaction, and once DISCARD TEMP dropped the state it is planned again and reads
/// no context (never an error, never a stale tenant). A plan made before init_session
/// reads no context or the transaction's own tenant.
#[tokio::test]
async fn cached_plans_follow_the_session_state() {
    let (db, a, b) = set_up().await;
    let c = runtime_client(&db).await;
    let count = c
        .prepare("SELECT count(*) FROM customers")
        .await
        .expect("prepare");
    let who = c
        .prepare("SELECT tenancy.current_tenant_id()")
        .await
        .expect("prepare");
    // Planned (custom, then generic) before init: no context.
    for _ in 0..7 {
        let n: i64 = c.query_one(&count, &[]).await.expect("count").get(0);
        assert_eq!(n, 0);
    }
    let mut s = init(&c).await.expect("init");
    c.batch_execute("BEGIN").await.expect("begin");
    s = enter(&c, b, s).await.expect("enter");
    let n: i64 = c.query_one(&count, &[]).await.expect("count").get(0);
    // Kept (no context) or planned again (init_session may reset the plan cache when it
    // creates the temporary schema): never another tenant's rows.
    assert!(n == 0 || n == 2, "a plan made before init read {n} rows");
    c.batch_execute("COMMIT").await.expect("commit");
    // Planned after init, the same text: the tenant of each transaction, many times over
    // (the generic plan is cached after five runs).
    let count = c
        .prepare("SELECT count(*) FROM customers WHERE true")
        .await
        .expect("prepare");
    for i in 0..8 {
        let (t, want) = if i % 2 == 0 { (a, 1) } else { (b, 2) };
        c.batch_execute("BEGIN").await.expect("begin");
        s = enter(&c, t, s).await.expect("enter");
        let n: i64 = c.query_one(&count, &[]).await.expect("count").get(0);
        assert_eq!(n, want, "run {i}");
        let id: Option<uuid::Uuid> = c.query_one(&who, &[]).await.expect("who").get(0);
        assert_eq!(id, Some(t.as_uuid()), "run {i}");
        c.batch_execute("COMMIT").await.expect("commit");
        let n: i64 = c.query_one(&count, &[]).await.expect("count").get(0);
        assert_eq!(n, 0, "run {i}: the next transaction");
    }
    c.batch_execute("BEGIN").await.expect("begin");
    enter(&c, a, s).await.expect("enter");
    c.batch_execute("DISCARD SEQUENCES").await.expect("discard");
    c.batch_execute("COMMIT; DISCARD TEMP")
        .await
        .expect("discard temp");
    for _ in 0..2 {
        let n: i64 = c
            .query_one(&count, &[])
            .await
            .expect("after DISCARD TEMP")
            .get(0);
        assert_eq!(n, 0);
        let id: Option<uuid::Uuid> = c.query_one(&who, &[]).await.expect("who").get(0);
        assert_eq!(id, None);
    }
}
