//! `tenant_tx`: a tenant-scoped primary-key read through `TenantPool`/`TenantTx` (RLS on,
//! signed context) against the same query on the same kind of pool with no tenancy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;
use tenancy_core::TenantId;
use tenancy_sdk::{PoolOptions, TenantPool};

use crate::bare;
use crate::harness::{self, Sample, Settings, Variants, CONCURRENCY};
use crate::report::Report;
use crate::setup::{expected_payload, Env, ROWS_PER_TENANT, TENANTS};

/// Our query: RLS adds the tenant predicate.
pub const OURS_SQL: &str = "SELECT payload FROM items WHERE id = $1";
/// Baseline query: same row, same index, tenant predicate written out, no RLS.
pub const BARE_SQL: &str = "SELECT payload FROM items_plain WHERE tenant_id = $1 AND id = $2";
/// Naive tenant binding: a GUC set in its own round trip.
const NAIVE_SET_SQL: &str = "SELECT set_config('app.tenant_id', $1, true)";
/// Naive query on the GUC-policy table.
const NAIVE_SQL: &str = "SELECT payload FROM items_tenaxum WHERE id = $1";

const OURS: &str = "ours";
const OURS_RW: &str = "ours_rw";
const BARE: &str = "bare";
const NAIVE: &str = "naive";

/// One tenancy read: a read-only transaction (begin, context and query in one round
/// trip; the COMMIT of a read-only transaction is queued, not awaited).
pub async fn ours_op(pool: &TenantPool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    ours_read(pool, tenant, id, true).await
}

/// The same read in a read-write transaction: its COMMIT is awaited (two round trips).
pub async fn ours_rw_op(pool: &TenantPool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    ours_read(pool, tenant, id, false).await
}

async fn ours_read(pool: &TenantPool, tenant: uuid::Uuid, id: i64, read_only: bool) -> Result<()> {
    let tid = TenantId::from_uuid(tenant).context("wrapping the tenant id")?;
    let mut tx = if read_only {
        pool.begin_read_only(tid).await
    } else {
        pool.begin(tid).await
    }
    .context("beginning a tenant transaction")?;
    let row = tx
        .query_one(OURS_SQL, &[&id])
        .await
        .context("reading the row")?;
    tx.commit().await.context("committing")?;
    let payload: &str = row.try_get(0).context("reading the payload")?;
    ensure!(
        payload == expected_payload(tenant, id),
        "wrong row: {payload:?}"
    );
    Ok(())
}

/// The baseline read: the same row with the tenant predicate written out, no RLS.
pub(crate) async fn bare_op(pool: &bare::Pool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("getting a connection")?;
    let stmt = conn.statement(BARE_SQL).await?;
    let row = conn
        .client
        .query_one(&stmt, &[&tenant, &id])
        .await
        .context("reading the row")?;
    let payload: &str = row.try_get(0).context("reading the payload")?;
    ensure!(
        payload == expected_payload(tenant, id),
        "wrong row: {payload:?}"
    );
    Ok(())
}

async fn naive_op(pool: &bare::Pool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("getting a connection")?;
    let r: Result<()> = async {
        let set = conn.statement(NAIVE_SET_SQL).await?;
        let query = conn.statement(NAIVE_SQL).await?;
        conn.client
            .batch_execute("BEGIN")
            .await
            .context("beginning")?;
        conn.client
            .query_one(&set, &[&tenant.to_string()])
            .await
            .context("setting the tenant")?;
        let row = conn
            .client
            .query_one(&query, &[&id])
            .await
            .context("reading the row")?;
        conn.client
            .batch_execute("COMMIT")
            .await
            .context("committing")?;
        let payload: &str = row.try_get(0).context("reading the payload")?;
        ensure!(
            payload == expected_payload(tenant, id),
            "wrong row: {payload:?}"
        );
        Ok(())
    }
    .await;
    if r.is_err() {
        // The connection may be inside a transaction: do not give it back.
        drop(deadpool::managed::Object::take(conn));
    }
    r
}

struct Bench<'a> {
    env: &'a Env,
    tenants: Arc<Vec<uuid::Uuid>>,
    ours: Vec<Arc<TenantPool>>,
    ours_rw: Vec<Arc<TenantPool>>,
    bare: Vec<bare::Pool>,
    naive: Vec<bare::Pool>,
}

impl Variants for Bench<'_> {
    fn names(&self) -> &[&'static str] {
        &[OURS, BARE, NAIVE, OURS_RW]
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
            3 => {
                let pool = Arc::clone(&self.ours_rw[ci]);
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = Arc::clone(&pool);
                    async move { ours_rw_op(&pool, t, id).await }
                })
                .await
            }
            _ => {
                let pool = self.naive[ci].clone();
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = pool.clone();
                    async move { naive_op(&pool, t, id).await }
                })
                .await
            }
        }
    }
}

/// Builds a `TenantPool` of `c` connections.
pub fn ours_pool(env: &Env, c: usize) -> Result<TenantPool> {
    TenantPool::new(
        env.app_config(),
        env.key.clone(),
        PoolOptions {
            max_size: c,
            ..Default::default()
        },
    )
    .context("building the TenantPool")
}

/// Runs the benchmark and writes `target/bench/tenant_tx.json`.
pub async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== tenant_tx: TenantTx point read vs bare pool (same query, no tenancy, no RLS)");
    let mut bench = Bench {
        env,
        tenants: Arc::new(env.tenants.clone()),
        ours: Vec::new(),
        ours_rw: Vec::new(),
        bare: Vec::new(),
        naive: Vec::new(),
    };
    for c in CONCURRENCY {
        bench.ours.push(Arc::new(ours_pool(env, c)?));
        bench.ours_rw.push(Arc::new(ours_pool(env, c)?));
        bench.bare.push(bare::build(env.app_config(), c)?);
        bench.naive.push(bare::build(env.app_config(), c)?);
    }
    let m = harness::run_matrix(&bench, settings).await?;
    m.print_medians();
    if harness::profiling_only(settings) {
        return Ok(());
    }

    let (o8, b8, n8) = (
        m.median_ops(OURS, 0),
        m.median_ops(BARE, 0),
        m.median_ops(NAIVE, 0),
    );
    let (o32, b32, n32) = (
        m.median_ops(OURS, 1),
        m.median_ops(BARE, 1),
        m.median_ops(NAIVE, 1),
    );
    let (rw8, rw32) = (m.median_ops(OURS_RW, 0), m.median_ops(OURS_RW, 1));
    let imp = env.context_impl().await?;
    let report = Report {
        name: "tenant_tx".into(),
        unit: "tx/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(o8),
        baseline: harness::ops(b8),
        baseline_name:
            "bare: same query on a table without RLS, same deadpool pool and size with a \
                        per-connection statement cache, no transaction, no tenant context"
                .into(),
        ratio: harness::ratio(o8, b8),
        params: json!({
            "headline": "top-level ours/baseline/ratio are the medians at concurrency 8; see ratio_c8 and ratio_c32",
            "ratio_c8": harness::ratio(o8, b8),
            "ratio_c32": harness::ratio(o32, b32),
            "ours_rw_ratio_c8": harness::ratio(rw8, b8),
            "ours_rw_ratio_c32": harness::ratio(rw32, b32),
            "context_impl": format!("{imp:?}"),
            "naive_ratio_c8": harness::ratio(n8, b8),
            "naive_ratio_c32": harness::ratio(n32, b32),
            "ours_vs_naive_c8": harness::ratio(o8, n8),
            "ours_vs_naive_c32": harness::ratio(o32, n32),
            "concurrency": CONCURRENCY,
            "pool_size": "= concurrency",
            "runs": settings.runs,
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "order": "per run: c8 then c32; within each, ours, bare, naive (alternating, each with its own warm-up)",
            "statistic": "median over runs of ops/s",
            "tenants": TENANTS,
            "rows_per_tenant": ROWS_PER_TENANT,
            "queries": {
                "ours": format!("TenantPool::begin_read_only + TenantTx::query_one({OURS_SQL:?}) + commit (queued); RLS via tenancy.make_tenant_table"),
                "ours_rw": format!("TenantPool::begin + TenantTx::query_one({OURS_SQL:?}) + commit (awaited)"),
                "bare": BARE_SQL,
                "naive": format!("BEGIN / {NAIVE_SET_SQL} / {NAIVE_SQL} / COMMIT, four round trips on the bare pool"),
            },
            "variants": m.variants_json(),
            "tokio_worker_threads": "default (one per core)",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    let path = report.write()?;
    println!(
        "tenant_tx: ours {:.0} tx/s vs bare {:.0} ops/s at c=8 → ratio {:.3}; c=32: {:.0} vs {:.0} → {:.3}; \
         naive/bare c8 {:.3}, c32 {:.3}; read-write ours/bare c8 {:.3}, c32 {:.3} ({:?} context)",
        o8,
        b8,
        o8 / b8,
        o32,
        b32,
        o32 / b32,
        n8 / b8,
        n32 / b32,
        rw8 / b8,
        rw32 / b32,
        imp
    );
    println!("wrote {}", path.display());
    Ok(())
}
