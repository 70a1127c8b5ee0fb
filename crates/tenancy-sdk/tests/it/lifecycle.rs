//! Commit, rollback, drop, errors and cancellation all return a clean connection.

use std::time::Duration;

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

#[tokio::test]
async fn begin_and_context_share_one_round_trip_with_the_first_statement() {
    // The server sees BEGIN and tenancy.enter in one message: statement_timestamp of the
    // first statement equals the transaction's start only when it arrived pipelined
    // behind them, with no client round trip in between.
    let db = fresh_db().await;
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    let _ = pid_of(&pool, a).await; // warm the statement cache
    let mut tx = pool.begin(a).await.expect("begin");
    let row = tx
        .query_one(
            "SELECT extract(epoch FROM statement_timestamp() - transaction_timestamp())::float8",
            &[],
        )
        .await
        .expect("q");
    let gap_s: f64 = row.get(0);
    tx.commit().await.expect("commit");
    assert!(
        gap_s < 0.005,
        "first statement arrived {gap_s}s after BEGIN: not pipelined"
    );
}
