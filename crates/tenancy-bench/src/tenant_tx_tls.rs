//! `tenant_tx_tls`: the `tenant_tx` read over TLS (`sslmode=verify-full`, TCP to
//! `localhost`): a TenantTx point read against the same query on a bare pool, both over
//! the same rustls stack to the same cluster, in the same run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_sdk::{PoolOptions, TenantPool};

use crate::bare;
use crate::harness::{self, Sample, Settings, Variants, CONCURRENCY};
use crate::report::Report;
use crate::setup::{Env, ROWS_PER_TENANT, TENANTS};
use crate::tenant_tx::{bare_op, ours_op, ours_rw_op, BARE_SQL, OURS_SQL};

const OURS: &str = "ours";
const BARE: &str = "bare";
const OURS_RW: &str = "ours_rw";

struct Bench<'a> {
    env: &'a Env,
    tenants: Arc<Vec<uuid::Uuid>>,
    ours: Vec<Arc<TenantPool>>,
    ours_rw: Vec<Arc<TenantPool>>,
    bare: Vec<bare::Pool>,
}

impl Variants for Bench<'_> {
    fn names(&self) -> &[&'static str] {
        &[OURS, BARE, OURS_RW]
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
            1 => {
                let pool = self.bare[ci].clone();
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = pool.clone();
                    async move { bare_op(&pool, t, id).await }
                })
                .await
            }
            _ => {
                let pool = Arc::clone(&self.ours_rw[ci]);
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = Arc::clone(&pool);
                    async move { ours_rw_op(&pool, t, id).await }
                })
                .await
            }
        }
    }
}

fn ours_pool(env: &Env, c: usize) -> Result<TenantPool> {
    TenantPool::new(
        env.app_tls_config()?,
        env.key.clone(),
        PoolOptions {
            max_size: c,
            ..Default::default()
        },
    )
    .context("building the TenantPool")
}

/// Runs the benchmark on `env` (a cluster started with TLS) and writes
/// `target/bench/tenant_tx_tls.json`.
pub async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== tenant_tx_tls: TenantTx point read vs bare pool, both over TLS (verify-full)");
    let mut bench = Bench {
        env,
        tenants: Arc::new(env.tenants.clone()),
        ours: Vec::new(),
        ours_rw: Vec::new(),
        bare: Vec::new(),
    };
    for c in CONCURRENCY {
        bench.ours.push(Arc::new(ours_pool(env, c)?));
        bench.ours_rw.push(Arc::new(ours_pool(env, c)?));
        bench.bare.push(bare::build(env.app_tls_config()?, c)?);
    }
    // Every variant's connections really are encrypted.
    let probe = tenancy_conn::connect(&env.app_tls_config()?)
        .await
        .context("connecting over TLS")?;
    let ssl: bool = probe
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .context("reading pg_stat_ssl")?
        .get(0);
    anyhow::ensure!(ssl, "the benchmark connection is not encrypted");
    drop(probe);

    let m = harness::run_matrix(&bench, settings).await?;
    m.print_medians();
    if harness::profiling_only(settings) {
        return Ok(());
    }
    let (o8, b8, rw8) = (
        m.median_ops(OURS, 0),
        m.median_ops(BARE, 0),
        m.median_ops(OURS_RW, 0),
    );
    let (o32, b32, rw32) = (
        m.median_ops(OURS, 1),
        m.median_ops(BARE, 1),
        m.median_ops(OURS_RW, 1),
    );
    let imp = env.context_impl().await?;
    let report = Report {
        name: "tenant_tx_tls".into(),
        unit: "tx/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(o8),
        baseline: harness::ops(b8),
        baseline_name:
            "bare: same query on a table without RLS, same deadpool pool and size with a \
                        per-connection statement cache, no transaction, no tenant context; \
                        same TLS connection code (tokio-postgres over rustls, verify-full)"
                .into(),
        ratio: harness::ratio(o8, b8),
        params: json!({
            "headline": "top-level ours/baseline/ratio are the medians at concurrency 8; see ratio_c8 and ratio_c32",
            "ratio_c8": harness::ratio(o8, b8),
            "ratio_c32": harness::ratio(o32, b32),
            "ours_rw_ratio_c8": harness::ratio(rw8, b8),
            "ours_rw_ratio_c32": harness::ratio(rw32, b32),
            "context_impl": format!("{imp:?}"),
            "tls": "sslmode=verify-full, sslrootcert = the cluster's CA, TCP to localhost (127.0.0.1), rustls (ring), TLS 1.3; password (SCRAM) login",
            "concurrency": CONCURRENCY,
            "pool_size": "= concurrency",
            "runs": settings.runs,
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "order": "per run: c8 then c32; within each, ours, bare, ours_rw (each with its own warm-up)",
            "statistic": "median over runs of ops/s",
            "tenants": TENANTS,
            "rows_per_tenant": ROWS_PER_TENANT,
            "queries": {
                "ours": format!("TenantPool::begin_read_only + TenantTx::query_one({OURS_SQL:?}) + commit (queued); RLS via tenancy.make_tenant_table"),
                "ours_rw": format!("TenantPool::begin + TenantTx::query_one({OURS_SQL:?}) + commit (awaited)"),
                "bare": BARE_SQL,
            },
            "variants": m.variants_json(),
            "tokio_worker_threads": "default (one per core)",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    let path = report.write()?;
    println!(
        "tenant_tx_tls: ours {o8:.0} tx/s vs bare {b8:.0} ops/s at c=8 → ratio {:.3}; c=32: {o32:.0} vs {b32:.0} → {:.3}; \
         read-write ours/bare c8 {:.3}, c32 {:.3} ({imp:?} context)",
        o8 / b8,
        o32 / b32,
        rw8 / b8,
        rw32 / b32,
    );
    println!("wrote {}", path.display());
    Ok(())
}
