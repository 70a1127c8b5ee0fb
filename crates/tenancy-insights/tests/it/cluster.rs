//! Load generated through the SDK against a real PostgreSQL cluster: the recorder's
//! snapshot, pushed into a window, flags the tenant that takes most of the time.

use std::sync::Arc;
use std::time::Instant;

use tenancy_insights::{Recorder, RecorderOptions, Window, WindowOptions};
use tenancy_pg::testing::TemplateDb;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};

static TEMPLATE: TemplateDb = TemplateDb::new("insights_tpl");

const KEY_HEX: &str = "5f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f701";

fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

const APP_SQL: &str = "
CREATE TABLE items (
    tenant_id uuid NOT NULL,
    id        bigint GENERATED ALWAYS AS IDENTITY,
    label     text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy.make_tenant_table('items');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_taking_most_of_a_clusters_time_is_flagged_noisy() {
    let db = tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), APP_SQL).await;
    let recorder = Arc::new(Recorder::new(RecorderOptions {
        cluster: "main".into(),
        source: "it".into(),
        ..Default::default()
    }));
    let pool = TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            max_size: 4,
            observer: Some(recorder.clone()),
            ..Default::default()
        },
    )
    .expect("pool");

    let quiet: Vec<TenantId> = (0..8).map(|_| TenantId::new_random()).collect();
    let noisy = TenantId::new_random();
    for &t in quiet.iter().chain([&noisy]) {
        let mut tx = pool.begin(t).await.expect("begin");
        for i in 0..5 {
            tx.execute(
                "INSERT INTO items (tenant_id, label) VALUES ($1, $2)",
                &[&t.as_uuid(), &format!("item {i}")],
            )
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let _ = recorder.take(); // the set-up is not part of the load

    // Quiet tenants: point reads. The noisy one: reads that take 20 ms each.
    let mut tasks = Vec::new();
    for &t in &quiet {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let mut tx = pool.begin_read_only(t).await.expect("begin");
                let rows = tx
                    .query("SELECT id, label FROM items", &[])
                    .await
                    .expect("read");
                assert_eq!(rows.len(), 5, "a tenant sees its own rows only");
                tx.commit().await.expect("commit");
            }
        }));
    }
    let p = pool.clone();
    tasks.push(tokio::spawn(async move {
        for _ in 0..20 {
            let mut tx = p.begin(noisy).await.expect("begin");
            tx.query("SELECT id, label, pg_sleep(0.004) FROM items", &[])
                .await
                .expect("slow read");
            tx.commit().await.expect("commit");
        }
        // One failing statement: counted as an error of that tenant.
        let mut tx = p.begin(noisy).await.expect("begin");
        assert!(tx.query("SELECT 1/0", &[]).await.is_err());
        tx.rollback().await.expect("rollback");
    }));
    for t in tasks {
        t.await.expect("load task");
    }

    let snapshot = recorder.take();
    snapshot.check().expect("valid snapshot");
    assert_eq!(snapshot.totals.statements, 8 * 20 + 21);
    assert_eq!(snapshot.totals.errors, 1);
    assert_eq!(snapshot.totals.transactions, 8 * 20 + 21);

    let window = Window::new(WindowOptions::default());
    let now = Instant::now();
    window.push(snapshot, now).expect("push");
    let report = window.report(Some("main"), 20, 0.5, now);
    assert_eq!(report.tenants.len(), 9);
    let top = &report.tenants[0];
    assert_eq!(top.tenant, noisy, "the heaviest tenant: {report:#?}");
    assert!(top.noisy, "{report:#?}");
    assert!(top.share >= 0.5, "share {}", top.share);
    // Each slow read sleeps 5 rows x 4 ms.
    assert!(top.p50_ms.expect("p50") >= 20.0, "p50 {:?}", top.p50_ms);
    assert_eq!((top.statements, top.errors, top.rows), (21, 1, 100));
    assert!((top.error_rate - 1.0 / 21.0).abs() < 1e-9);
    for t in &report.tenants[1..] {
        assert!(quiet.contains(&t.tenant));
        assert!(!t.noisy, "quiet tenant flagged: {t:?}");
        assert_eq!((t.statements, t.rows, t.errors), (20, 100, 0));
        assert!(t.p99_ms.expect("p99") < top.p50_ms.expect("p50"));
    }
}
