//! The channels that shared (pooled) tenant tables leave open by design, measured as the
//! runtime role so that THREAT-MODEL.md can state their current extent. None of them
//! returns another tenant's rows; each says something *about* them (how many, that they
//! are being written, which tables are locked). If one of these tests starts failing
//! because PostgreSQL closed the channel, tighten THREAT-MODEL.md to match.

use std::time::{Duration, Instant};

use tenancy_sdk::TenantId;

use crate::support::*;

/// `EXPLAIN ANALYZE` of a sequential scan reports how many rows the RLS filter removed:
/// the number of other tenants' rows in the table.
#[tokio::test]
async fn explain_analyze_reveals_how_many_rows_other_tenants_have() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 2);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, a, 3).await;
        seed(&pool, b, 7).await;

        let mut tx = pool.begin(a).await.expect("begin");
        tx.batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            .await
            .expect("planner settings");
        let plan: Vec<String> = tx
            .query(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM customers",
                &[],
            )
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await.expect("commit");
        let plan = plan.join("\n");
        assert!(
            plan.contains("actual rows=3"),
            "{imp:?}: tenant A sees only its own 3 rows:\n{plan}"
        );
        assert!(
            plan.contains("Rows Removed by Filter: 7"),
            "{imp:?}: the plan states B's row count (the residual channel):\n{plan}"
        );
    }
}

/// Cumulative statistics (`pg_stat_user_tables`) count every tenant's writes and are
/// readable by every role; column statistics (`pg_stats`) of a table with row-level
/// security are not.
#[tokio::test]
async fn table_statistics_count_every_tenants_writes_but_column_statistics_stay_hidden() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 2).await;
    seed(&pool, b, 9).await;

    // The owner analyzes (as autovacuum would), so pg_stats has rows for the table.
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    owner
        .batch_execute("ANALYZE customers")
        .await
        .expect("analyze");

    let runtime = runtime_client(&db).await;
    // Backends publish their counters at most once a second; wait for B's inserts.
    let deadline = Instant::now() + Duration::from_secs(15);
    let inserted = loop {
        let n: i64 = runtime
            .query_one(
                "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'customers'",
                &[],
            )
            .await
            .expect("pg_stat_user_tables")
            .get(0);
        if n >= 11 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        inserted, 11,
        "the runtime role sees the insert count of all tenants together (the residual channel)"
    );

    let column_stats: i64 = runtime
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'customers'",
            &[],
        )
        .await
        .expect("pg_stats")
        .get(0);
    assert_eq!(
        column_stats, 0,
        "pg_stats hides tables with row-level security from roles subject to it (most common values would show other tenants' emails)"
    );
    // Superuser: the owner is subject to the forced policy as well, so only a role that
    // bypasses row-level security sees them.
    let su = db.connect_superuser().await.expect("superuser");
    let owner_stats: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'customers'",
            &[],
        )
        .await
        .expect("pg_stats as superuser")
        .get(0);
    assert!(
        owner_stats > 0,
        "the hidden statistics exist (the check above is not vacuous)"
    );
}

/// `pg_locks` and `pg_stat_activity` show every session's locks and, for sessions of the
/// same role, the statement text: parameters are not shown, literals are.
#[tokio::test]
async fn lock_and_activity_views_show_other_tenants_sessions_but_not_their_parameters() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let b = TenantId::new_random();
    seed(&pool, b, 1).await;

    let mut tx = pool.begin(b).await.expect("begin");
    let secret = "b-secret-parameter@example.com";
    tx.execute(
        "UPDATE customers SET name = 'updated' WHERE email = $1",
        &[&secret],
    )
    .await
    .expect("update");

    let observer = runtime_client(&db).await;
    let row_locks: i64 = observer
        .query_one(
            // Clones of one template share the table's oid, and pg_locks lists every
            // database of the cluster: only this database's locks count.
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
              WHERE c.relname = 'customers' AND l.mode = 'RowExclusiveLock'
                AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .expect("pg_locks")
        .get(0);
    assert_eq!(
        row_locks, 1,
        "another session's write lock on the shared table is visible (the residual channel)"
    );
    let texts: Vec<String> = observer
        .query(
            "SELECT coalesce(query, '') FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        texts.iter().any(|q| q.contains("UPDATE customers")),
        "the statement text of a same-role session is visible: {texts:?}"
    );
    assert!(
        texts.iter().all(|q| !q.contains(secret)),
        "bound parameters never appear: {texts:?}"
    );
    tx.rollback().await.expect("rollback");
}
