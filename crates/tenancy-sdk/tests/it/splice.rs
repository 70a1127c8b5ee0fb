//! The splice against a real server where tokio-postgres' framing departs from "one
//! ReadyForQuery per Sync": COPY FROM STDIN through `TenantTx::client()`.

use bytes::Bytes;
use futures_util::SinkExt;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{TenantId, TenantPool};

use crate::support::*;

/// Runs COPY FROM STDIN of one line into `table` through `client()` in a transaction of
/// `a`; returns the connection's backend pid and what the COPY returned.
async fn copy_through_client(
    pool: &TenantPool,
    a: TenantId,
    table: &str,
) -> (i32, Result<u64, String>) {
    let mut tx = pool.begin(a).await.expect("begin");
    let pid: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let client = tx.client().await.expect("client");
    let stmt = client
        .prepare(&format!("COPY {table} FROM STDIN"))
        .await
        .expect("prepare copy");
    let copied = async {
        let sink = client.copy_in::<_, Bytes>(&stmt).await?;
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"copied@example.com\tcopied\n"))
            .await?;
        sink.finish().await
    }
    .await
    .map_err(|e| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or(e.to_string())
    });
    drop(stmt);
    if copied.is_ok() {
        tx.commit().await.expect("commit after COPY");
    } else {
        // The splice drops the second ReadyForQuery of a refused COPY, which
        // tokio-postgres would otherwise hand to this ROLLBACK.
        tx.rollback().await.expect("rollback after a refused COPY");
    }
    (pid, copied)
}

/// The pid and the copied rows a later transaction of `a` sees in `table`.
async fn next_transaction(pool: &TenantPool, a: TenantId, table: &str) -> (i32, i64) {
    let mut tx = pool.begin(a).await.expect("begin");
    let row = tx
        .query_one(
            &format!(
                "SELECT pg_backend_pid(), (SELECT count(*) FROM {table} WHERE name = 'copied')"
            ),
            &[],
        )
        .await
        .expect("the statement after a COPY runs");
    tx.commit().await.expect("commit");
    (row.get(0), row.get(1))
}

/// Into a tenant table, COPY FROM is refused (row-level security) before the server
/// enters copy-in mode: the server answers both of the COPY's Syncs, tokio-postgres
/// expects one ReadyForQuery, and the splice drops the other. The connection stays in use
/// and its later transactions get their own replies.
#[tokio::test]
async fn a_copy_refused_before_copy_mode_keeps_the_connection_in_step() {
    let db = fresh_db().await;
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    seed(&pool, a, 2).await;
    let (pid, copied) = copy_through_client(&pool, a, "customers (email, name)").await;
    assert!(
        copied
            .as_ref()
            .is_err_and(|e| e.contains("row-level security")),
        "{copied:?}"
    );
    for _ in 0..3 {
        assert_eq!(next_transaction(&pool, a, "customers").await, (pid, 0));
        assert_eq!(visible_tenants(&pool, a).await, vec![a.as_uuid(); 2]);
    }
}

/// Into a table without row-level security the runtime role may write, COPY FROM runs:
/// two Syncs, one ReadyForQuery, so the splice can no longer match replies by counting on
/// that connection. The COPY and its commit work; the connection's next opening is
/// refused as an I/O error that closes it (never a mismatched reply), and the next
/// transaction's first statement runs on another connection and sees the copied row.
#[tokio::test]
async fn a_copy_in_copy_mode_retires_the_connection_before_any_reply_is_mismatched() {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "CREATE TABLE public.copy_target (email text, name text); \
         GRANT SELECT, INSERT ON public.copy_target TO {RUNTIME_ROLE}"
    ))
    .await
    .expect("a table without row-level security");
    let pool = pool(&db, 1);
    let a = TenantId::new_random();
    let (pid, copied) = copy_through_client(&pool, a, "public.copy_target").await;
    assert_eq!(copied, Ok(1));
    for _ in 0..3 {
        let (next, rows) = next_transaction(&pool, a, "public.copy_target").await;
        assert_ne!(next, pid, "the COPY's connection is not reused");
        assert_eq!(rows, 1, "the copied row committed");
    }
}
