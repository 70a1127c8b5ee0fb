//! Attacks on the tenant context from SQL running inside a tenant's transaction.

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

#[tokio::test]
async fn a_replayed_entry_token_is_refused() {
    for (_, db) in fresh_dbs().await {
        replayed_entry_token_is_refused(&db).await;
    }
}

async fn replayed_entry_token_is_refused(db: &tenancy_pg::testing::TestDb) {
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
        .query_one("SELECT tenancy.enter($1)", &[&b_token])
        .await
        .expect_err("replay must fail");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    conn1.batch_execute("ROLLBACK").await.expect("rollback");

    // B's token used on another connection, even as that transaction's first message.
    let err = conn2
        .batch_execute(&format!("BEGIN; SELECT tenancy.enter('{b_token}')"))
        .await
        .expect_err("token bound to another backend");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("another connection"))
            .unwrap_or(false),
        "{err:?}"
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
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.enter('{}')",
            expired.as_str()
        ))
        .await
        .expect_err("expired");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("expired"))
            .unwrap_or(false),
        "{err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
    let other_key = tenancy_sdk::ContextKey::from_bytes("test".parse().expect("kid"), [9u8; 32]);
    let forged = other_key.sign(b, pid, now_micros(), 60_000_000);
    let err = conn2
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.enter('{}')",
            forged.as_str()
        ))
        .await
        .expect_err("forged");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("does not verify"))
            .unwrap_or(false),
        "{err:?}"
    );
    conn2.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(count_tenant(&conn2, b).await, 0);
}

/// Native only: a token is single-use per connection, so B's token seen in an earlier
/// transaction cannot open a new transaction for B, even from injected SQL that ends the
/// current transaction and begins another in the same message.
#[tokio::test]
async fn native_a_token_is_single_use_per_connection() {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    if bootstrap::context_impl(&su).await.expect("impl") != Some(ContextImpl::Native) {
        assert!(
            tenancy_pg::native_context_library(db.cluster.major_version()).is_none(),
            "the native library was built for this server but the database did not get the native context"
        );
        return;
    }
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, b, 2).await;
    let conn = runtime_client(&db).await;
    let b_token = enter_by_hand(&conn, b).await.expect("enter b");
    assert_eq!(count_tenant(&conn, b).await, 2);
    conn.batch_execute("COMMIT").await.expect("commit");
    enter_by_hand(&conn, a).await.expect("enter a");
    let err = conn
        .batch_execute(&format!("COMMIT; BEGIN; SELECT tenancy.enter('{b_token}')"))
        .await
        .expect_err("a used token must not open another transaction");
    assert!(
        err.as_db_error()
            .map(|d| d.message().contains("already used"))
            .unwrap_or(false),
        "{err:?}"
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");
    assert_eq!(count_tenant(&conn, b).await, 0);
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
