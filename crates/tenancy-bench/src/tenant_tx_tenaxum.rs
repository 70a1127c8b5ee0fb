//! `tenant_tx_tenaxum`: the same tenant-scoped point read through `TenantTx` and through
//! the peer crate tenaxum (`PgPoolExt::begin_tenant` on an sqlx pool, GUC-based policy).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;
use tenancy_sdk::TenantPool;
use tenaxum::PgPoolExt;

use crate::harness::{self, Sample, Settings, Variants, CONCURRENCY};
use crate::report::Report;
use crate::setup::{check_payload, Env, DB, ROWS_PER_TENANT, TENANTS};
use crate::tenant_tx::{ours_op, ours_pool, OURS_SQL};

/// tenaxum's query: its documented policy adds the tenant predicate from `app.tenant_id`.
const TENAXUM_SQL: &str = "SELECT payload FROM items_tenaxum WHERE id = $1";

const OURS: &str = "ours";
const TENAXUM: &str = "tenaxum";
const TENAXUM_NOPING: &str = "tenaxum_noping";

async fn tenaxum_op(pool: &PgPool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    let tid = tenaxum::TenantId::from(tenant);
    let mut tx = pool
        .begin_tenant(&tid)
        .await
        .context("beginning a tenaxum transaction")?;
    let row = sqlx::query(TENAXUM_SQL)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .context("reading the row")?;
    tx.commit().await.context("committing")?;
    check_payload(row.try_get(0).context("reading the payload")?, tenant, id)
}

struct Bench<'a> {
    env: &'a Env,
    tenants: Arc<Vec<uuid::Uuid>>,
    ours: Vec<Arc<TenantPool>>,
    tenaxum: Vec<PgPool>,
    tenaxum_noping: Vec<PgPool>,
}

impl Variants for Bench<'_> {
    fn names(&self) -> &[&'static str] {
        &[OURS, TENAXUM, TENAXUM_NOPING]
    }

    async fn run(&self, v: usize, ci: usize, duration: Duration) -> Result<Sample> {
        let c = CONCURRENCY[ci];
        let pm = self.env.postmaster_pid;
        match v {
            0 => {
                let pool = Arc::clone(&self.ours[ci]);
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = Arc::clone(&pool);
                    async move { ours_op(&pool, t, id).await }
                })
                .await
            }
            _ => {
                let pool = if v == 1 {
                    self.tenaxum[ci].clone()
                } else {
                    self.tenaxum_noping[ci].clone()
                };
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = pool.clone();
                    async move { tenaxum_op(&pool, t, id).await }
                })
                .await
            }
        }
    }
}

async fn sqlx_pool(env: &Env, c: usize, test_before_acquire: bool) -> Result<PgPool> {
    let opts = PgConnectOptions::new()
        .socket(env.cluster.socket_dir())
        .port(env.cluster.port())
        .username(tenancy_sdk::bootstrap::RUNTIME_ROLE)
        .database(DB);
    let mut pool_opts = PgPoolOptions::new().max_connections(c as u32);
    if !test_before_acquire {
        pool_opts = pool_opts.test_before_acquire(false);
    }
    pool_opts
        .connect_with(opts)
        .await
        .context("connecting the sqlx pool as tenancy_app")
}

/// Runs the benchmark and writes `target/bench/tenant_tx_tenaxum.json`.
pub(crate) async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== tenant_tx_tenaxum: TenantTx point read vs tenaxum begin_tenant (sqlx)");
    let mut bench = Bench {
        env,
        tenants: Arc::new(env.tenants.clone()),
        ours: Vec::new(),
        tenaxum: Vec::new(),
        tenaxum_noping: Vec::new(),
    };
    for c in CONCURRENCY {
        bench.ours.push(Arc::new(ours_pool(env, c)?));
        bench.tenaxum.push(sqlx_pool(env, c, true).await?);
        bench.tenaxum_noping.push(sqlx_pool(env, c, false).await?);
    }
    let m = harness::run_matrix(&bench, settings).await?;
    m.print_medians();
    if harness::profiling_only(settings) {
        return Ok(());
    }
    for p in bench.tenaxum.iter().chain(&bench.tenaxum_noping) {
        p.close().await;
    }

    let (o8, t8, n8) = (
        m.median_ops(OURS, 0),
        m.median_ops(TENAXUM, 0),
        m.median_ops(TENAXUM_NOPING, 0),
    );
    let (o32, t32, n32) = (
        m.median_ops(OURS, 1),
        m.median_ops(TENAXUM, 1),
        m.median_ops(TENAXUM_NOPING, 1),
    );
    let report = Report {
        name: "tenant_tx_tenaxum".into(),
        unit: "tx/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(o8),
        baseline: harness::ops(t8),
        baseline_name:
            "tenaxum 0.2 PgPoolExt::begin_tenant on an sqlx 0.8 PgPool (default PgPoolOptions), \
                        RLS policy on current_setting('app.tenant_id')"
                .into(),
        ratio: harness::ratio(o8, t8),
        params: json!({
            "headline": "top-level ours/baseline/ratio are the medians at concurrency 8; see ratio_c8 and ratio_c32",
            "ratio_c8": harness::ratio(o8, t8),
            "ratio_c32": harness::ratio(o32, t32),
            "ratio_vs_tenaxum_noping_c8": harness::ratio(o8, n8),
            "ratio_vs_tenaxum_noping_c32": harness::ratio(o32, n32),
            "tenaxum_noping": "context only: tenaxum on an sqlx pool with test_before_acquire(false) (sqlx's default is true, which pings on every acquire)",
            "concurrency": CONCURRENCY,
            "pool_size": "= concurrency",
            "runs": settings.runs,
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "order": "per run: c8 then c32; within each, ours, tenaxum, tenaxum_noping (alternating, each with its own warm-up)",
            "statistic": "median over runs of tx/s",
            "tenants": TENANTS,
            "rows_per_tenant": ROWS_PER_TENANT,
            "queries": {
                "ours": format!("TenantPool::begin + TenantTx::query_one({OURS_SQL:?}) + commit; RLS via tenancy.make_tenant_table"),
                "tenaxum": format!("pool.begin_tenant(&tid) + sqlx::query({TENAXUM_SQL:?}).bind(id).fetch_one + commit"),
            },
            "variants": m.variants_json(),
            "tokio_worker_threads": "default (one per core)",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    let path = report.write()?;
    println!(
        "tenant_tx_tenaxum: ours {:.0} tx/s vs tenaxum {:.0} tx/s at c=8 → ratio {:.3}; c=32: {:.0} vs {:.0} → {:.3}; \
         vs tenaxum without ping: c8 {:.3}, c32 {:.3}",
        o8,
        t8,
        o8 / t8,
        o32,
        t32,
        o32 / t32,
        o8 / n8,
        o32 / n32
    );
    println!("wrote {}", path.display());
    Ok(())
}
