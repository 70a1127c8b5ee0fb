//! Attacks on the tenant context from SQL running inside a tenant's transaction.

use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{self, ContextImpl};
use tenancy_sdk::TenantId;

use crate::support::*;

async fn count_tenant(client: &tokio_postgres::Client, t: TenantId) -> i64 {
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
                    // PL/pgSQL: the forged setting destroys A's binding, so the insert has
                    // no tenant and fails. Native: the setting means nothing, the row is A's.
                    match tx
                        .query_one(
                            "INSERT INTO customers (email, name) VALUES ('i@b', 'planted') RETURNING tenant_id",
                            &[],
                        )
                        .await
                    {
                        Ok(row) => {
                            assert_eq!(imp, ContextImpl::Native, "{imp:?} let a forged context write");
                            assert_eq!(row.get::<_, uuid::Uuid>(0), a.as_uuid(), "{imp:?}: the row went to B");
                        }
                        Err(_) => assert_eq!(imp, ContextImpl::PlPgSql, "{imp:?} refused A's own insert"),
                    }
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
                    if imp == ContextImpl::PlPgSql {
                        assert!(rows.is_empty(), "a forged binding must see nothing");
                    }
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

/// A token of the kid the tests sign with, as it would appear inside any text.
const TOKEN_PREFIX: &str = "v1.test.";

/// While many transactions of tenant A run through the SDK (read-write, read-only, opened
/// by a statement, by `batch_execute` and by `client()`), a second runtime-role session
/// polls `pg_stat_activity`, which shows every session of its role, and never sees a token.
#[tokio::test]
async fn another_runtime_session_never_sees_a_token_in_pg_stat_activity() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 6);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        let spy = runtime_client(&db).await;
        let done = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..6 {
            let pool = pool.clone();
            workers.push(tokio::spawn(async move {
                for i in 0..40 {
                    let mut tx = match (w + i) % 3 {
                        0 => pool.begin(a).await,
                        _ => pool.begin_read_only(a).await,
                    }
                    .expect("begin");
                    match i % 4 {
                        0 => {
                            tx.client().await.expect("client");
                            // Idle inside the transaction: its last query stays on show.
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                        1 => tx
                            .batch_execute("SELECT 1 /* spied */")
                            .await
                            .expect("batch"),
                        _ => {}
                    }
                    let n: i64 = tx
                        .query_one("SELECT count(*) /* spied */ FROM customers", &[])
                        .await
                        .expect("count")
                        .get(0);
                    assert_eq!(n, 2);
                    tx.commit().await.expect("commit");
                }
            }));
        }
        let watcher = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let (mut polls, mut seen_sdk) = (0u32, 0u32);
                while !done.load(Ordering::Relaxed) {
                    let rows = spy
                        .query(
                            "SELECT coalesce(query, '') FROM pg_stat_activity \
                              WHERE pid <> pg_backend_pid() AND datname = current_database()",
                            &[],
                        )
                        .await
                        .expect("pg_stat_activity");
                    polls += 1;
                    for r in rows {
                        let q: String = r.get(0);
                        assert!(
                            !q.contains(TOKEN_PREFIX),
                            "{imp:?}: pg_stat_activity shows a token to another runtime session: {q}"
                        );
                        if q.contains("spied") || q.contains("tenancy.enter") {
                            seen_sdk += 1;
                        }
                    }
                }
                (polls, seen_sdk)
            })
        };
        for w in workers {
            w.await.expect("worker");
        }
        done.store(true, Ordering::Relaxed);
        let (polls, seen_sdk) = watcher.await.expect("watcher");
        assert!(
            polls > 10 && seen_sdk > 0,
            "{imp:?}: the spy saw too little to tell ({polls} polls, {seen_sdk} SDK statements)"
        );
    }
}

/// Injected SQL in tenant A's transaction ends it and opens one for B with a token of B
/// issued for the same connection before A's (one it could have seen earlier): refused on
/// both implementations, whether the token comes as a literal in one message or as a
/// parameter.
#[tokio::test]
async fn a_harvested_token_replayed_by_injected_sql_in_another_tenants_transaction_is_refused() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 2).await;
        for as_parameter in [false, true] {
            // A token of B for this connection, issued after the last opening and before A's.
            let issued = now_micros();
            let mut tx = pool.begin(a).await.expect("begin a");
            let pid: i32 = tx
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get(0);
            let harvested = key().sign(b, pid, issued, 60_000_000);
            let replay = if as_parameter {
                tx.batch_execute("COMMIT; BEGIN")
                    .await
                    .expect("commit, begin");
                tx.query_one("SELECT tenancy.enter($1)", &[&harvested.as_str()])
                    .await
                    .map(|_| ())
            } else {
                tx.batch_execute(&format!(
                    "COMMIT; BEGIN; SELECT tenancy.enter('{}')",
                    harvested.as_str()
                ))
                .await
            };
            if replay.is_ok() {
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM customers", &[])
                    .await
                    .expect("count")
                    .get(0);
                panic!(
                    "{imp:?}: a replayed token of B opened B's rows to A's injected SQL ({n} rows)"
                );
            }
            let err = replay.expect_err("refused");
            assert!(
                format!("{err:?}").contains("already used"),
                "{imp:?}, parameter {as_parameter}: {err:?}"
            );
            drop(tx);
        }
        assert_eq!(
            visible_tenants(&pool, b).await.len(),
            2,
            "{imp:?}: B's own transactions still work"
        );
    }
}

/// PL/pgSQL keeps the single-use mark in a session setting the runtime role can write. A
/// made-up mark (however high), or a genuine one copied from another connection, counts as
/// no mark: it locks nobody out, neither set in a session nor as a role default for every
/// new connection. What it can do is what RESET does (the residual documented in
/// runtime.sql): an unexpired token of this very backend, issued before the last one
/// accepted, is admitted again. This test pins that extent; no SQL can read a token (see
/// the `pg_stat_activity` test).
#[tokio::test]
async fn plpgsql_a_made_up_or_copied_single_use_mark_locks_nobody_out() {
    let db = fresh_db_plpgsql().await;
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let pool = pool(&db, 1);
    seed(&pool, b, 2).await;
    let other = runtime_client(&db).await;
    enter_by_hand(&other, a)
        .await
        .expect("enter on another connection");
    other.batch_execute("COMMIT").await.expect("commit");
    let copied: String = other
        .query_one("SELECT current_setting('tenancy.last_issued')", &[])
        .await
        .expect("mark")
        .get(0);
    let huge = format!("9223372036854775807.{}", "0".repeat(64));
    for mark in [huge.clone(), copied, String::new()] {
        let mut tx = pool.begin(a).await.expect("begin a");
        tx.batch_execute(&format!("SET tenancy.last_issued = '{mark}'"))
            .await
            .expect("write the mark");
        tx.commit().await.expect("commit");
        assert_eq!(
            visible_tenants(&pool, b).await.len(),
            2,
            "the SDK's next opening after mark {mark:?}"
        );
        // The extent: with the mark gone, an unexpired token of this backend issued before
        // the last accepted one enters again.
        let issued = now_micros() - 1_000;
        let mut tx = pool.begin(a).await.expect("begin a");
        let pid: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let older = key().sign(b, pid, issued, 60_000_000);
        tx.batch_execute(&format!(
            "COMMIT; SET tenancy.last_issued = '{mark}'; BEGIN; SELECT tenancy.enter('{}')",
            older.as_str()
        ))
        .await
        .expect("a reset mark re-admits an older token of the same backend");
        tx.rollback().await.expect("rollback");
    }
    // A role default for every new connection of this database (set here by the superuser;
    // the runtime role may set its own defaults).
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "ALTER ROLE {} IN DATABASE {} SET tenancy.last_issued = '{huge}'",
        tenancy_sdk::bootstrap::RUNTIME_ROLE,
        db.name
    ))
    .await
    .expect("role default");
    let fresh = tenancy_sdk::TenantPool::new(
        db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        key(),
        Default::default(),
    )
    .expect("pool");
    assert_eq!(visible_tenants(&fresh, b).await.len(), 2);
    assert_eq!(visible_tenants(&fresh, b).await.len(), 2);
}

/// A refused opening is logged with its statement (`log_min_error_statement`): the
/// statement shows a placeholder, never the token. Tokens that expire before they arrive
/// make every opening of a pool fail, on both implementations and through every way a
/// transaction opens.
#[tokio::test]
async fn a_refused_opening_leaves_no_token_in_the_server_log() {
    for (imp, db) in fresh_dbs().await {
        let expired = tenancy_sdk::TenantPool::new(
            db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
            key(),
            tenancy_sdk::PoolOptions {
                max_size: 1,
                token_ttl: std::time::Duration::from_micros(1),
                ..Default::default()
            },
        )
        .expect("pool");
        let a = TenantId::new_random();
        for way in 0..4 {
            let mut tx = match way {
                0 | 3 => expired.begin(a).await,
                _ => expired.begin_read_only(a).await,
            }
            .expect("begin");
            let refused = match way {
                0 | 1 => tx.query("SELECT 1", &[]).await.map(|_| ()),
                2 => tx.batch_execute("SELECT 1").await,
                _ => tx.client().await.map(|_| ()),
            };
            let err = refused.expect_err("an expired token");
            assert!(
                format!("{err:?}").contains("expired"),
                "{imp:?} way {way}: {err:?}"
            );
            drop(tx);
        }
        let log = std::fs::read_to_string(db.cluster.data_dir().join("tenancy-postgres.log"))
            .expect("server log");
        assert!(
            log.contains("tenant context token has expired"),
            "{imp:?}: the refusals are in the log"
        );
        assert!(
            !log.contains(&format!("{TOKEN_PREFIX}{a}")),
            "{imp:?}: a token of the SDK is in the server log"
        );
    }
}

/// At `extra_float_digits = -15` the text of a float epoch is `2e+09`: a binding that
/// hashed it would stay valid on its backend for years, with no token. The binding hashes
/// the transaction start's binary value, so a binding copied into a later transaction
/// sees nothing.
#[tokio::test]
async fn plpgsql_a_binding_made_at_extra_float_digits_minus_15_is_void_in_the_next_transaction() {
    let db = fresh_db_plpgsql().await;
    let pool = pool(&db, 1);
    let b = TenantId::new_random();
    seed(&pool, b, 2).await;
    let conn = runtime_client(&db).await;
    conn.batch_execute("SET extra_float_digits = -15")
        .await
        .expect("set");
    enter_by_hand(&conn, b).await.expect("enter b");
    let binding: String = conn
        .query_one("SELECT current_setting('tenancy.ctx')", &[])
        .await
        .expect("ctx")
        .get(0);
    conn.batch_execute("COMMIT").await.expect("commit");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.query_one("SELECT set_config('tenancy.ctx', $1, true)", &[&binding])
        .await
        .expect("set");
    assert_eq!(
        count_tenant(&conn, b).await,
        0,
        "a binding from an earlier transaction still grants B's rows"
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");
}

/// Session settings at hostile values, on both implementations: the SDK's openings still
/// work under each (set at connection start), and on a plain connection under each a
/// binding copied from an earlier transaction sees nothing and a used token is refused,
/// also after the setting changes back.
#[tokio::test]
async fn hostile_session_settings_neither_break_the_context_nor_keep_a_binding_or_token_valid() {
    let mut settings: Vec<(&str, &str)> = vec![
        ("extra_float_digits", "-15"),
        ("extra_float_digits", "3"),
        ("DateStyle", "SQL, DMY"),
        ("DateStyle", "German"),
        ("TimeZone", "Pacific/Kiritimati"),
        ("TimeZone", "+14"),
        ("TimeZone", "-12"),
        ("IntervalStyle", "sql_standard"),
        ("bytea_output", "escape"),
        ("search_path", "pg_temp, public"),
        ("search_path", "public, pg_catalog"),
        ("search_path", "tenancy, public, pg_catalog"),
        ("standard_conforming_strings", "off"),
    ];
    for (imp, db) in fresh_dbs().await {
        let probe = runtime_client(&db).await;
        // lc_numeric where the server has another locale than C.
        for locale in ["de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8"] {
            if probe
                .batch_execute(&format!("SET lc_numeric = '{locale}'"))
                .await
                .is_ok()
            {
                settings.push(("lc_numeric", locale));
                break;
            }
        }
        let b = TenantId::new_random();
        seed(&pool(&db, 1), b, 2).await;
        for (name, value) in &settings {
            // Through the SDK, the setting given at connection start.
            let mut cfg = db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE);
            cfg.options(format!("-c {name}={}", value.replace(' ', "\\ ")));
            let hostile =
                tenancy_sdk::TenantPool::new(cfg, key(), Default::default()).expect("pool");
            let a = TenantId::new_random();
            seed(&hostile, a, 3).await;
            for read_only in [false, true] {
                let mut tx = if read_only {
                    hostile.begin_read_only(a).await
                } else {
                    hostile.begin(a).await
                }
                .expect("begin");
                let row = tx
                    .query_one(
                        "SELECT count(*), current_setting($1) FROM customers",
                        &[name],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{imp:?} {name}={value}: {e:?}"));
                tx.commit().await.expect("commit");
                assert_eq!(row.get::<_, i64>(0), 3, "{imp:?} {name}={value}");
            }

            // On a plain connection: a binding and a token of one transaction, replayed in
            // the next one under the same value and under the default.
            let conn = runtime_client(&db).await;
            conn.query_one("SELECT set_config($1, $2, false)", &[name, value])
                .await
                .unwrap_or_else(|e| panic!("{name}={value}: {e:?}"));
            let token = enter_by_hand(&conn, b).await.expect("enter b");
            assert_eq!(count_tenant(&conn, b).await, 2, "{imp:?} {name}={value}");
            let binding: Option<String> = conn
                .query_one("SELECT current_setting('tenancy.ctx', true)", &[])
                .await
                .expect("ctx")
                .get(0);
            conn.batch_execute("COMMIT").await.expect("commit");
            for reset in [false, true] {
                if reset {
                    conn.batch_execute(&format!("RESET {name}"))
                        .await
                        .expect("reset");
                }
                conn.batch_execute("BEGIN").await.expect("begin");
                conn.query_one(
                    "SELECT set_config('tenancy.ctx', $1, true)",
                    &[&binding.clone().unwrap_or_default()],
                )
                .await
                .expect("set");
                assert_eq!(
                    count_tenant(&conn, b).await,
                    0,
                    "{imp:?} {name}={value}: a binding of an earlier transaction (reset {reset})"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
                let err = conn
                    .batch_execute(&format!("BEGIN; SELECT tenancy.enter('{token}')"))
                    .await
                    .expect_err("a used token");
                assert!(
                    format!("{err:?}").contains("already used"),
                    "{imp:?} {name}={value} (reset {reset}): {err:?}"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
            }
        }
    }
}

/// When the connection's statement cache spills, tokio-postgres closes the dropped
/// statements with requests of their own (Close, Sync) written just before the next
/// statement. The opening must still share that statement's Sync: in front of a Close it
/// would end with the Close's Sync (an implicit read-only transaction's context gone
/// before its statement ran, so the statement saw nothing) and a refusal would be reported
/// against the Close instead of the statement.
#[tokio::test]
async fn an_opening_behind_closed_statements_still_carries_the_context() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        for read_only in [true, false] {
            // More distinct statements than the cache holds (256), each in its own
            // transaction so each is opened by its own first statement.
            for i in 0..300 {
                let mut tx = if read_only {
                    pool.begin_read_only(a).await
                } else {
                    pool.begin(a).await
                }
                .expect("begin");
                let sql = format!("SELECT count(*) FROM customers WHERE {i} = {i}");
                let n: i64 = tx
                    .query_one(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{imp:?} read-only {read_only}, {i}: {e:?}"))
                    .get(0);
                tx.commit().await.expect("commit");
                assert_eq!(n, 2, "{imp:?} read-only {read_only}, statement {i}");
            }
        }
        // A refused opening behind closed statements is reported as the refusal.
        let expired = tenancy_sdk::TenantPool::new(
            db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
            key(),
            tenancy_sdk::PoolOptions {
                max_size: 1,
                token_ttl: std::time::Duration::from_micros(1),
                ..Default::default()
            },
        )
        .expect("pool");
        // The pool's own start-up statement is closed just before the first opening.
        let mut tx = expired.begin(a).await.expect("begin");
        let err = tx.query("SELECT 1", &[]).await.expect_err("expired");
        assert!(
            matches!(&err, tenancy_sdk::Error::ContextRefused(_))
                && format!("{err:?}").contains("expired"),
            "{imp:?}: {err:?}"
        );
    }
}

/// The context functions carry no `SET search_path`: every name in them is
/// schema-qualified. A session whose search_path puts a schema of look-alike operators
/// and functions ahead of pg_catalog (`=`/`<>` that always agree, a constant `sha256`)
/// changes nothing: a forged MAC, a token of another connection and a made-up binding are
/// still refused or see nothing, and a genuine token still enters.
#[tokio::test]
async fn look_alike_operators_ahead_of_pg_catalog_do_not_reach_the_context_functions() {
    for (imp, db) in fresh_dbs().await {
        let su = db.connect_superuser().await.expect("superuser");
        su.batch_execute(&format!(
            "CREATE SCHEMA lure; \
             CREATE FUNCTION lure.agree(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true'; \
             CREATE FUNCTION lure.differ_not(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false'; \
             CREATE FUNCTION lure.differ_not(bytea, bytea) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false'; \
             CREATE FUNCTION lure.sha256(bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS 'SELECT ''\\x00''::bytea'; \
             CREATE FUNCTION lure.length(text) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 101'; \
             CREATE OPERATOR lure.= (LEFTARG = text, RIGHTARG = text, FUNCTION = lure.agree); \
             CREATE OPERATOR lure.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = lure.differ_not); \
             CREATE OPERATOR lure.<> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = lure.differ_not); \
             GRANT USAGE ON SCHEMA lure TO {role}; \
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA lure TO {role}",
            role = bootstrap::RUNTIME_ROLE
        ))
        .await
        .expect("lure schema");
        let pool = pool(&db, 1);
        let b = TenantId::new_random();
        seed(&pool, b, 2).await;
        let conn = runtime_client(&db).await;
        conn.batch_execute("SET search_path = lure, pg_catalog, public")
            .await
            .expect("search_path");
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let genuine = key().sign(b, pid, now_micros(), 60_000_000);
        let forged = format!(
            "{}{}",
            &genuine.as_str()[..genuine.as_str().len() - 64],
            "f".repeat(64)
        );
        let elsewhere = key().sign(b, pid + 1, now_micros(), 60_000_000);
        for (token, refusal) in [
            (forged.as_str(), "does not verify"),
            (elsewhere.as_str(), "another connection"),
        ] {
            for enter in ["tenancy.enter", "tenancy.enter_read_only"] {
                let err = conn
                    .batch_execute(&format!("BEGIN; SELECT {enter}('{token}')"))
                    .await
                    .expect_err("a token that must be refused");
                assert!(
                    format!("{err:?}").contains(refusal),
                    "{imp:?} {enter}: {err:?}"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
            }
        }
        conn.batch_execute("BEGIN").await.expect("begin");
        conn.query_one(
            "SELECT set_config('tenancy.ctx', $1, true)",
            &[&format!("{b}.{}", "0".repeat(64))],
        )
        .await
        .expect("made-up binding");
        assert_eq!(
            count_tenant(&conn, b).await,
            0,
            "{imp:?}: a made-up binding"
        );
        conn.batch_execute("ROLLBACK").await.expect("rollback");
        conn.batch_execute(&format!(
            "BEGIN; SELECT tenancy.enter('{}')",
            genuine.as_str()
        ))
        .await
        .unwrap_or_else(|e| panic!("{imp:?}: a genuine token under the lure: {e:?}"));
        assert_eq!(
            count_tenant(&conn, b).await,
            2,
            "{imp:?}: the genuine context"
        );
        conn.batch_execute("COMMIT").await.expect("commit");
    }
}
