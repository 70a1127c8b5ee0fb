//! What recording costs on the hot path: read-only point reads through `TenantPool`
//! (open, one statement, commit) with the pool's observer off and on (a [`Recorder`]),
//! alternating runs on one private PostgreSQL cluster, 8 concurrent clients over 1,000
//! tenants; then the recorder's own cost per statement with 100,000 tenants.
//!
//! `cargo run --release -p tenancy-insights --example overhead -- [RUNS] [SECONDS]`
//! prints JSON: throughput per run, medians and `overhead_ratio` (on / off).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenancy_insights::{Recorder, RecorderOptions};
use tenancy_pg::testing::TemplateDb;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ContextKey, Observer, Outcome, PoolOptions, TenantId, TenantPool};

static TEMPLATE: TemplateDb = TemplateDb::new("insights_overhead_tpl");

const KEY_HEX: &str = "6f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f701";
const CLIENTS: usize = 8;
const TENANTS: usize = 1000;

fn key() -> ContextKey {
    ContextKey::from_hex("bench".parse().expect("kid"), KEY_HEX).expect("key")
}

const APP_SQL: &str = "
CREATE TABLE items (tenant_id uuid NOT NULL, id int NOT NULL, payload text NOT NULL,
                    PRIMARY KEY (tenant_id, id));
SELECT tenancy.make_tenant_table('items');
";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(pool: &TenantPool, tenants: &Arc<Vec<TenantId>>, seconds: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (pool, tenants, stop, done) =
            (pool.clone(), tenants.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let t = tenants[i % tenants.len()];
                i += CLIENTS;
                let mut tx = pool.begin_read_only(t).await.expect("begin");
                let row = tx
                    .query_opt("SELECT payload FROM items WHERE id = $1", &[&1i32])
                    .await
                    .expect("read");
                assert!(row.is_some());
                tx.commit().await.expect("commit");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let start = done.load(Ordering::Relaxed);
    let at = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let n = done.load(Ordering::Relaxed) - start;
    let rate = n as f64 / at.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let db = tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), APP_SQL).await;
    let tenants: Arc<Vec<TenantId>> =
        Arc::new((0..TENANTS).map(|_| TenantId::new_random()).collect());
    let recorder = Arc::new(Recorder::new(RecorderOptions::default()));
    let pool_with = |observer: Option<Arc<dyn Observer>>| {
        TenantPool::new(
            db.config_as(RUNTIME_ROLE),
            key(),
            PoolOptions {
                max_size: CLIENTS,
                observer,
                ..Default::default()
            },
        )
        .expect("pool")
    };
    let off = pool_with(None);
    for t in tenants.iter() {
        let mut tx = off.begin(*t).await.expect("begin");
        tx.execute(
            "INSERT INTO items VALUES ($1, 1, repeat('x', 100))",
            &[&t.as_uuid()],
        )
        .await
        .expect("seed");
        tx.commit().await.expect("commit");
    }
    let on = pool_with(Some(recorder.clone()));
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for r in 0..runs {
        // Alternate which goes first.
        if r % 2 == 0 {
            offs.push(run(&off, &tenants, seconds).await);
            ons.push(run(&on, &tenants, seconds).await);
        } else {
            ons.push(run(&on, &tenants, seconds).await);
            offs.push(run(&off, &tenants, seconds).await);
        }
    }
    let snap = recorder.take();
    assert!(snap.totals.statements > 0);

    // The recorder alone: 2,000,000 statements over 100,000 tenants, one thread.
    let rec = Recorder::new(RecorderOptions::default());
    let many: Vec<TenantId> = (0..100_000).map(|_| TenantId::new_random()).collect();
    let at = Instant::now();
    const CALLS: usize = 2_000_000;
    for i in 0..CALLS {
        rec.statement(
            many[(i * 7919) % many.len()],
            Duration::from_micros(100 + (i % 900) as u64),
            Outcome::Ok { rows: 1 },
        );
    }
    let ns = at.elapsed().as_nanos() as f64 / CALLS as f64;
    let (m_off, m_on) = (median(offs.clone()), median(ons.clone()));
    println!(
        "{}",
        serde_json::json!({
            "benchmark": "insights_overhead",
            "clients": CLIENTS,
            "tenants": TENANTS,
            "runs": runs,
            "seconds": seconds,
            "tx_per_s_off": offs,
            "tx_per_s_on": ons,
            "median_off": m_off,
            "median_on": m_on,
            "overhead_ratio": m_on / m_off,
            "recorder_ns_per_statement_100k_tenants": ns,
            "recorder_heap_bytes_100k_tenants": rec.heap_bytes(),
        })
    );
}
