//! Attacks on the tenant context from SQL running inside a tenant's transaction.

use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{self, ContextImpl};
use tenancy_sdk::TenantId;

use crate::support::*;

pub(crate) async fn count_tenant(client: &tokio_postgres::Client, t: TenantId) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM customers WHERE tenant_id = $1",
            &[&t.as_uuid()],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn set_config_with_another_tenants_id_switches_nothing() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 2);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, a, 1).await;
        seed(&pool, b, 2).await;
        // Every way injected SQL could name B: raw id, id with a made-up binding.
        for value in [
            b.to_string(),
            format!("{b}.{}", "0".repeat(64)),
            format!("{b}.{}", "f".repeat(64)),
        ] {
            for write in [false, true] {
                let mut tx = pool.begin(a).await.expect("begin");
                assert_eq!(
                    tx.query("SELECT 1 FROM customers", &[])
                        .await
                        .expect("q")
                        .len(),
                    1
                );
                tx.query_one("SELECT set_config('tenancy.ctx', $1, true)", &[&value])
                    .await
                    .expect("set_config");
                if write {
                    // Neither context reads tenancy.ctx on a direct connection (native:
                    // backend memory; PL/pgSQL: the session context, which comes first):
                    // the setting means nothing, the row is A's.
                    let row = tx
                        .query_one(
                            "INSERT INTO customers (email, name) VALUES ('i@b', 'planted') RETURNING tenant_id",
                            &[],
                        )
                        .await
                        .unwrap_or_else(|e| panic!("{imp:?} refused A's own insert: {e}"));
                    assert_eq!(
                        row.get::<_, uuid::Uuid>(0),
                        a.as_uuid(),
                        "{imp:?}: the row went to B"
                    );
                    tx.rollback().await.expect("rollback");
                } else {
                    let rows = tx
                        .query("SELECT tenant_id FROM customers", &[])
                        .await
                        .expect("q");
                    assert!(
                        rows.iter()
                            .all(|r| r.get::<_, uuid::Uuid>(0) == a.as_uuid()),
                        "{imp:?}: a forged context saw another tenant's rows"
                    );
                    assert_eq!(rows.len(), 1, "{imp:?}: A's own row");
                    tx.execute("UPDATE customers SET name = 'hijacked'", &[])
                        .await
                        .expect("update");
                    tx.execute("DELETE FROM invoices", &[])
                        .await
                        .expect("delete");
                    tx.commit().await.expect("commit");
                }
            }
        }
        let mut tx = pool.begin(b).await.expect("begin b");
        let names: Vec<String> = tx
            .query("SELECT name FROM customers ORDER BY name", &[])
            .await
            .expect("b rows")
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await.expect("commit");
        assert_eq!(
            names,
            ["customer 0", "customer 1"],
            "{imp:?}: B's rows changed"
        );
    }
}

#[tokio::test]
async fn injected_set_config_inside_a_statement_cannot_switch_tenant() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 1).await;
    seed(&pool, b, 3).await;
    let mut tx = pool.begin(a).await.expect("begin");
    // A classic string-concatenated query with an injected payload.
    let name = format!("x' OR set_config('tenancy.ctx', '{b}', true) IS NOT NULL OR '1'='1");
    let sql = format!("SELECT tenant_id FROM customers WHERE name = '{name}'");
    let first = tx.query(&sql, &[]).await.expect("injected query runs");
    assert!(first
        .iter()
        .all(|r| r.get::<_, uuid::Uuid>(0) == a.as_uuid()));
    let after = tx
        .query("SELECT tenant_id FROM customers", &[])
        .await
        .expect("q");
    assert!(
        after
            .iter()
            .all(|r| r.get::<_, uuid::Uuid>(0) != b.as_uuid()),
        "B's rows leaked"
    );
    drop(tx);
}

/// The PL/pgSQL context keeps a keyed binding in a setting; copying it elsewhere is useless.
/// (The native context keeps no setting at all.)
#[tokio::test]
async fn plpgsql_a_binding_replayed_from_an_earlier_transaction_or_another_connection_sees_nothing()
{
    let db = fresh_db_plpgsql().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 1).await;
    seed(&pool, b, 2).await;
    let conn1 = runtime_client(&db).await;
    let conn2 = runtime_client(&db).await;

    // B's binding from an earlier transaction on the same connection.
    enter_by_hand(&conn1, b).await.expect("enter b");
    let b_binding: String = conn1
        .query_one("SELECT current_setting('tenancy.ctx')", &[])
        .await
        .expect("ctx")
        .get(0);
    assert_eq!(count_tenant(&conn1, b).await, 2);
    conn1.batch_execute("COMMIT").await.expect("commit");

    enter_by_hand(&conn1, a).await.expect("enter a");
    conn1
        .query_one("SELECT set_config('tenancy.ctx', $1, true)", &[&b_binding])
        .await
        .expect("set");
    assert_eq!(
        count_tenant(&conn1, b).await,
        0,
        "replayed binding from an earlier transaction"
    );
    conn1.batch_execute("ROLLBACK").await.expect("rollback");

    // B's live binding taken from another connection, while B's transaction is open.
    enter_by_hand(&conn2, b).await.expect("enter b on conn2");
    let live: String = conn2
        .query_one("SELECT current_setting('tenancy.ctx')", &[])
        .await
        .expect("ctx")
        .get(0);
    enter_by_hand(&conn1, a).await.expect("enter a");
    conn1
        .query_one("SELECT set_config('tenancy.ctx', $1, true)", &[&live])
        .await
        .expect("set");
    assert_eq!(
        count_tenant(&conn1, b).await,
        0,
        "binding taken from another connection"
    );
    conn1.batch_execute("ROLLBACK").await.expect("rollback");
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
}

/// The functions that enter a context: `tenancy.enter` and `tenancy.enter_read_only` (the
/// opening of implicit read-only transactions) exist with both implementations, and the
/// second must refuse every token the first refuses, the same way.
async fn entry_functions(imp: ContextImpl, db: &TestDb) -> Vec<&'static str> {
    let su = db.connect_superuser().await.expect("superuser");
    let read_only: bool = su
        .query_one(
            "SELECT to_regprocedure('tenancy.enter_read_only(text)') IS NOT NULL",
            &[],
        )
        .await
        .expect("enter_read_only")
        .get(0);
    assert!(
        read_only,
        "tenancy.enter_read_only must exist on every database ({imp:?})"
    );
    vec!["tenancy.enter", "tenancy.enter_read_only"]
}

/// Re-running the whole bootstrap keeps a native database native, with
/// `tenancy.enter_read_only` owned by the owner role, executable by the runtime role only
/// and carrying the comment `tenancy check` trusts. A native database without it (its
/// native.sql, or the server's library, predates it) gets the PL/pgSQL context when the
/// runtime is reinstalled, rather than connections whose read-only openings cannot run.
#[tokio::test]
async fn native_rebootstrap_keeps_enter_read_only_and_a_database_without_it_gets_plpgsql() {
    let Some(db) = fresh_native_db().await else {
        return;
    };
    let su = db.connect_superuser().await.expect("superuser");
    let owner = connect(db.config_as(bootstrap::OWNER_ROLE)).await;
    for _ in 0..2 {
        bootstrap::bootstrap_database(&su, &db.name)
            .await
            .expect("bootstrap");
        bootstrap::install_runtime(&owner, &key())
            .await
            .expect("runtime");
    }
    assert_eq!(
        bootstrap::context_impl(&su).await.expect("impl"),
        Some(ContextImpl::Native)
    );
    let row = su
        .query_one(
            "SELECT pg_get_userbyid(p.proowner)::text, obj_description(p.oid, 'pg_proc'), \
                    has_function_privilege('tenancy_app', p.oid, 'EXECUTE'), \
                    NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0) \
               FROM pg_catalog.pg_proc p WHERE p.oid = 'tenancy.enter_read_only(text)'::regprocedure",
            &[],
        )
        .await
        .expect("enter_read_only");
    assert_eq!(row.get::<_, String>(0), bootstrap::OWNER_ROLE);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("tenancy:context-enter")
    );
    assert!(row.get::<_, bool>(2), "the runtime role must execute it");
    assert!(row.get::<_, bool>(3), "PUBLIC must not execute it");
    // A new tenant's row, written and then read in a read-only transaction by a new pool.
    let read_only = || async {
        let a = TenantId::new_random();
        let pool = pool(&db, 1);
        seed(&pool, a, 1).await;
        let mut tx = pool.begin_read_only(a).await.expect("begin read only");
        let row = tx
            .query_one(
                "SELECT count(*), current_setting('transaction_read_only') FROM customers",
                &[],
            )
            .await
            .expect("read");
        tx.commit().await.expect("commit");
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    assert_eq!(read_only().await, (1, "on".to_owned()));

    // (Taken out of the tenancy_context extension first, where it is a member.)
    su.batch_execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'tenancy_context') THEN \
           ALTER EXTENSION tenancy_context DROP FUNCTION tenancy.enter_read_only(text); END IF; END $$; \
         DROP FUNCTION tenancy.enter_read_only(text)",
    )
        .await
        .expect("drop");
    bootstrap::install_runtime(&owner, &key())
        .await
        .expect("runtime");
    assert_eq!(
        bootstrap::context_impl(&su).await.expect("impl"),
        Some(ContextImpl::PlPgSql)
    );
    assert_eq!(read_only().await, (1, "on".to_owned()));
}

#[tokio::test]
async fn a_replayed_entry_token_is_refused() {
    for (imp, db) in fresh_dbs().await {
        for enter in entry_functions(imp, &db).await {
            replayed_entry_token_is_refused(&db, enter).await;
        }
    }
}

async fn replayed_entry_token_is_refused(db: &TestDb, enter: &str) {
    let pool = pool(db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, b, 2).await;
    let conn1 = runtime_client(db).await;
    let conn2 = runtime_client(db).await;

    // B's entry token seen in an earlier transaction, replayed later inside A's transaction.
    let b_token = enter_by_hand(&conn1, b).await.expect("enter b");
    conn1.batch_execute("COMMIT").await.expect("commit");
    enter_by_hand(&conn1, a).await.expect("enter a");
    let err = conn1
        .query_one(&format!("SELECT {enter}($1)"), &[&b_token])
        .await
        .expect_err("replay must fail");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{enter}: {err:?}"
    );
    conn1.batch_execute("ROLLBACK").await.expect("rollback");

    // B's token used on another connection, even as that transaction's first message.
    let err = conn2
        .batch_execute(&format!("BEGIN; SELECT {enter}('{b_token}')"))
        .await
        .expect_err("token bound to another backend");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("another connection"))
            .unwrap_or(false),
        "{enter}: {err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");

    // An expired token, and one signed with a key the database does not know.
    let pid: i32 = conn2
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let expired = key().sign(b, pid, now_micros() - 120_000_000, 60_000_000);
    let err = conn2
        .batch_execute(&format!("BEGIN; SELECT {enter}('{}')", expired.as_str()))
        .await
        .expect_err("expired");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("expired"))
            .unwrap_or(false),
        "{enter}: {err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
    let other_key = tenancy_sdk::ContextKey::from_bytes("test".parse().expect("kid"), [9u8; 32]);
    let forged = other_key.sign(b, pid, now_micros(), 60_000_000);
    let err = conn2
        .batch_execute(&format!("BEGIN; SELECT {enter}('{}')", forged.as_str()))
        .await
        .expect_err("forged");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("does not verify"))
            .unwrap_or(false),
        "{enter}: {err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
    // A token of this connection, signed with the right key, with another tenant written in.
    let genuine = key().sign(b, pid, now_micros(), 60_000_000);
    let tampered = genuine
        .as_str()
        .replace(&b.to_string(), &TenantId::new_random().to_string());
    let err = conn2
        .batch_execute(&format!("BEGIN; SELECT {enter}('{tampered}')"))
        .await
        .expect_err("tampered");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("does not verify"))
            .unwrap_or(false),
        "{enter}: {err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(count_tenant(&conn2, b).await, 0);
}

/// On both implementations a token is single-use per connection, so B's token seen in an
/// earlier transaction cannot open a new transaction for B, even from injected SQL that
/// ends the current transaction and begins another in the same message. Every entry
/// function of the implementation.
#[tokio::test]
async fn a_used_token_replayed_by_injected_sql_on_its_connection_is_refused() {
    for (imp, db) in fresh_dbs().await {
        for enter in entry_functions(imp, &db).await {
            token_is_single_use_per_connection(&db, enter).await;
        }
    }
}

async fn token_is_single_use_per_connection(db: &TestDb, enter: &str) {
    let pool = pool(db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, b, 2).await;
    let conn = runtime_client(db).await;
    let b_token = enter_by_hand(&conn, b).await.expect("enter b");
    assert_eq!(count_tenant(&conn, b).await, 2);
    conn.batch_execute("COMMIT").await.expect("commit");
    enter_by_hand(&conn, a).await.expect("enter a");
    let err = conn
        .batch_execute(&format!("COMMIT; BEGIN; SELECT {enter}('{b_token}')"))
        .await
        .expect_err("a used token must not open another transaction");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("already used"))
            .unwrap_or(false),
        "{enter}: {err:?}"
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(count_tenant(&conn, b).await, 0);
    if enter == "tenancy.enter_read_only" {
        // Refused inside a savepoint: see the next test.
        return;
    }
    // A savepoint that entered a context and rolled back takes the context with it.
    conn.batch_execute("BEGIN; SAVEPOINT s")
        .await
        .expect("savepoint");
    let pid: i32 = conn
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let tok = key().sign(b, pid, now_micros(), 60_000_000);
    conn.query_one("SELECT tenancy.enter($1)", &[&tok.as_str()])
        .await
        .expect("enter in a savepoint");
    assert_eq!(count_tenant(&conn, b).await, 2);
    conn.batch_execute("ROLLBACK TO SAVEPOINT s")
        .await
        .expect("rollback to");
    assert_eq!(
        count_tenant(&conn, b).await,
        0,
        "context survived its savepoint's rollback"
    );
    conn.batch_execute("COMMIT").await.expect("commit");
}

/// Signs tokens for one connection with strictly increasing issue times (the native
/// context accepts a token only if it was issued after the last one it accepted).
struct Signer {
    pid: i32,
    last: i64,
}

impl Signer {
    async fn new(conn: &tokio_postgres::Client) -> Signer {
        let pid = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        Signer { pid, last: 0 }
    }

    fn sign(&mut self, tenant: TenantId) -> String {
        self.last = now_micros().max(self.last + 1);
        key()
            .sign(tenant, self.pid, self.last, 60_000_000)
            .as_str()
            .to_owned()
    }
}

/// The first column of every row a simple query returned.
async fn simple_values(
    conn: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
    Ok(conn
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect())
}

fn some(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some((*v).to_owned())).collect()
}

/// A write refused because the transaction is read-only (SQLSTATE 25006).
fn assert_write_refused<T: std::fmt::Debug>(r: Result<T, tokio_postgres::Error>, what: &str) {
    let err = r.expect_err(what);
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{what}: {err:?}"
    );
}

/// Native: `tenancy.enter_read_only` (the opening of the SDK's implicit read-only
/// transactions) enters the context and makes its transaction read-only: SHOW says on, a
/// write fails with 25006, and neither injected SQL nor savepoints make it writable again.
/// The connection's next transaction is read-write and has no context. It is refused
/// inside a subtransaction, and a refused token uses nothing up.
#[tokio::test]
async fn native_enter_read_only_makes_its_transaction_read_only_and_only_that_one() {
    use tokio_postgres::error::SqlState;

    let Some(db) = fresh_native_db().await else {
        return;
    };
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    seed(&pool, a, 2).await;
    let conn = runtime_client(&db).await;
    let mut signer = Signer::new(&conn).await;
    let aid = a.to_string();
    let read_state = "SHOW transaction_read_only; SELECT tenancy.current_tenant_id()::text";

    // One implicit transaction (one simple-query message), as the SDK's openings are.
    let t = signer.sign(a);
    let got = simple_values(
        &conn,
        &format!(
            "SELECT tenancy.enter_read_only('{t}'); {read_state}; SELECT count(*)::text FROM customers"
        ),
    )
    .await
    .expect("enter read-only");
    assert_eq!(got, some(&[&aid, "on", &aid, "2"]));
    let got = simple_values(&conn, read_state).await.expect("next");
    assert_eq!(
        got,
        vec![Some("off".to_owned()), None],
        "the next transaction must be read-write and have no context"
    );

    // A write later in the same implicit transaction, and in an explicit one.
    let t = signer.sign(a);
    assert_write_refused(
        conn.batch_execute(&format!(
            "SELECT tenancy.enter_read_only('{t}'); INSERT INTO customers (email, name) VALUES ('ro@a', 'ro')"
        ))
        .await,
        "a write after enter_read_only",
    );
    let t = signer.sign(a);
    conn.batch_execute(&format!("BEGIN; SELECT tenancy.enter_read_only('{t}')"))
        .await
        .expect("explicit transaction");
    assert_write_refused(
        conn.execute("UPDATE customers SET name = 'x'", &[]).await,
        "a write in an explicit transaction",
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");

    // Injected SQL cannot switch the transaction back to read-write.
    for undo in [
        "SELECT set_config('transaction_read_only', 'off', true)",
        "SET transaction_read_only = off",
        "SET TRANSACTION READ WRITE",
    ] {
        let t = signer.sign(a);
        let err = conn
            .batch_execute(&format!(
                "SELECT tenancy.enter_read_only('{t}'); {undo}; INSERT INTO customers (email, name) VALUES ('ro@a', 'ro')"
            ))
            .await
            .expect_err(undo);
        assert_eq!(
            err.code(),
            Some(&SqlState::ACTIVE_SQL_TRANSACTION),
            "{undo}: {err:?}"
        );
    }

    // The next transaction on this connection writes (tenancy.enter, the read-write opening).
    let t = signer.sign(a);
    conn.batch_execute(&format!(
        "BEGIN; SELECT tenancy.enter('{t}'); INSERT INTO customers (email, name) VALUES ('rw@a', 'rw'); ROLLBACK"
    ))
    .await
    .expect("a read-write transaction after read-only ones");

    // Entered at the top of an explicit transaction, it lasts through later savepoints,
    // released or rolled back: each restores the read-only state it started with.
    let t = signer.sign(a);
    conn.batch_execute(&format!(
        "BEGIN; SELECT tenancy.enter_read_only('{t}'); SAVEPOINT s; RELEASE SAVEPOINT s; \
         SAVEPOINT s; SELECT 1; ROLLBACK TO SAVEPOINT s; RELEASE SAVEPOINT s"
    ))
    .await
    .expect("savepoints after enter_read_only");
    let got = simple_values(&conn, read_state)
        .await
        .expect("after savepoints");
    assert_eq!(got, some(&["on", &aid]));
    assert_write_refused(
        conn.execute("UPDATE customers SET name = 'x'", &[]).await,
        "a write after the savepoints",
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");

    // Inside a savepoint it is refused, before the token is looked at: a savepoint's end
    // would restore the read-write state while the context survived RELEASE.
    let good = signer.sign(a);
    conn.batch_execute("BEGIN; SAVEPOINT s")
        .await
        .expect("savepoint");
    let err = conn
        .query_one("SELECT tenancy.enter_read_only($1)", &[&good])
        .await
        .expect_err("enter_read_only in a savepoint");
    assert!(
        err.code() == Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
            && err
                .as_db_error()
                .is_some_and(|d| d.message().contains("subtransaction")),
        "{err:?}"
    );
    conn.batch_execute("ROLLBACK TO SAVEPOINT s")
        .await
        .expect("rollback to");
    let got = simple_values(&conn, read_state)
        .await
        .expect("after refusal");
    assert_eq!(got, vec![Some("off".to_owned()), None]);
    conn.batch_execute("ROLLBACK").await.expect("rollback");

    // A refused token (of another connection, issued later than `good`) uses nothing up:
    // `good` still enters, read-only.
    let other_pid = key()
        .sign(a, signer.pid + 1, now_micros() + 10_000_000, 60_000_000)
        .as_str()
        .to_owned();
    let err = conn
        .query_one("SELECT tenancy.enter_read_only($1)", &[&other_pid])
        .await
        .expect_err("a token of another connection");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    let got = simple_values(
        &conn,
        &format!("SELECT tenancy.enter_read_only('{good}'); SHOW transaction_read_only"),
    )
    .await
    .expect("a good token after a refused later one");
    assert_eq!(got, some(&[&aid, "on"]));
    let got = simple_values(&conn, read_state).await.expect("next");
    assert_eq!(got, vec![Some("off".to_owned()), None]);
}

/// Native: for every kind of bad token, `tenancy.enter_read_only` fails exactly like
/// `tenancy.enter` (same SQLSTATE, same message). A refusal consumes nothing, so each
/// token can be tried on both.
#[tokio::test]
async fn native_enter_read_only_refuses_every_token_enter_refuses_with_the_same_error() {
    let Some(db) = fresh_native_db().await else {
        return;
    };
    let conn = runtime_client(&db).await;
    let mut signer = Signer::new(&conn).await;
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let used = signer.sign(a);
    conn.batch_execute(&format!("BEGIN; SELECT tenancy.enter('{used}'); COMMIT"))
        .await
        .expect("enter");
    let now = now_micros();
    let genuine = signer.sign(b);
    let other_key = tenancy_sdk::ContextKey::from_bytes("test".parse().expect("kid"), [9u8; 32]);
    let unknown_kid = tenancy_sdk::ContextKey::from_bytes("nokey".parse().expect("kid"), [9u8; 32]);
    let bad = [
        ("replayed", used),
        (
            "another connection",
            key()
                .sign(b, signer.pid + 1, now, 60_000_000)
                .as_str()
                .to_owned(),
        ),
        (
            "expired",
            key()
                .sign(b, signer.pid, now - 120_000_000, 60_000_000)
                .as_str()
                .to_owned(),
        ),
        (
            "forged",
            other_key
                .sign(b, signer.pid, now, 60_000_000)
                .as_str()
                .to_owned(),
        ),
        (
            "unknown key",
            unknown_kid
                .sign(b, signer.pid, now, 60_000_000)
                .as_str()
                .to_owned(),
        ),
        ("tampered", genuine.replace(&b.to_string(), &a.to_string())),
        ("malformed", "v1.test.not-a-token".to_owned()),
    ];
    for (what, token) in bad {
        let mut errors = Vec::new();
        for enter in ["tenancy.enter", "tenancy.enter_read_only"] {
            let err = conn
                .query_one(&format!("SELECT {enter}($1)"), &[&token])
                .await
                .expect_err(what);
            let e = err
                .as_db_error()
                .unwrap_or_else(|| panic!("{what}: {err:?}"));
            errors.push((e.code().clone(), e.message().to_owned()));
        }
        assert_eq!(
            errors[0].0,
            tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            "{what}: {errors:?}"
        );
        assert_eq!(errors[0], errors[1], "{what}: the two functions disagree");
    }
    // None of the refusals used anything up: the genuine token still enters.
    let got: uuid::Uuid = conn
        .query_one("SELECT tenancy.enter_read_only($1)", &[&genuine])
        .await
        .expect("the genuine token")
        .get(0);
    assert_eq!(got, b.as_uuid());
}
