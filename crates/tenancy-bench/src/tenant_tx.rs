//! `tenant_tx`: a tenant-scoped primary-key read through `TenantPool`/`TenantTx` (RLS on,
//! signed context) against the same query on the same kind of pool with no tenancy.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_core::TenantId;
use tenancy_sdk::{PgConfig, PoolOptions, Pooler, TenantPool};
use tokio_postgres::types::Type;

use crate::bare;
use crate::harness::{self, Sample, Settings, Variants, CONCURRENCY};
use crate::report::Report;
use crate::setup::{check_payload, Env, ROWS_PER_TENANT, TENANTS};

/// Our query: RLS adds the tenant predicate.
pub(crate) const OURS_SQL: &str = "SELECT payload FROM items WHERE id = $1";
/// Baseline query: same row, same index, tenant predicate written out, no RLS.
pub(crate) const BARE_SQL: &str =
    "SELECT payload FROM items_plain WHERE tenant_id = $1 AND id = $2";
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
pub(crate) async fn ours_op(pool: &TenantPool, tenant: uuid::Uuid, id: i64) -> Result<()> {
    ours_read(pool, tenant, id, true).await
}

/// The same read in a read-only or a read-write transaction (a read-write one awaits its
/// COMMIT: two round trips).
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
    check_payload(row.try_get(0).context("reading the payload")?, tenant, id)
}

/// The baseline read: the same row with the tenant predicate written out, no RLS;
/// `unnamed`: as one unnamed statement with its parameter types given
/// (Parse, Bind, Execute, Sync in one request), what works through a transaction-mode
/// pooler, instead of a statement prepared once per connection.
async fn bare_read(pool: &bare::Pool, tenant: uuid::Uuid, id: i64, unnamed: bool) -> Result<()> {
    let mut conn = pool
        .get()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("getting a connection")?;
    let row = if unnamed {
        conn.client
            .query_typed_one(BARE_SQL, &[(&tenant, Type::UUID), (&id, Type::INT8)])
            .await
            .context("reading the row")?
    } else {
        let stmt = conn.statement(BARE_SQL).await?;
        conn.client
            .query_one(&stmt, &[&tenant, &id])
            .await
            .context("reading the row")?
    };
    check_payload(row.try_get(0).context("reading the payload")?, tenant, id)
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
        check_payload(row.try_get(0).context("reading the payload")?, tenant, id)
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
    /// The variants measured, in order (the naive one only where the flavour has it).
    names: &'static [&'static str],
    ours: Vec<Arc<TenantPool>>,
    ours_rw: Vec<Arc<TenantPool>>,
    bare: Vec<bare::Pool>,
    naive: Vec<bare::Pool>,
    /// The baseline runs unnamed statements (behind a transaction-mode pooler).
    unnamed: bool,
}

impl Variants for Bench<'_> {
    fn names(&self) -> &[&'static str] {
        self.names
    }

    async fn run(&self, v: usize, ci: usize, duration: Duration) -> Result<Sample> {
        let c = CONCURRENCY[ci];
        let pm = self.env.postmaster_pid;
        match self.names[v] {
            OURS | OURS_RW => {
                let read_only = self.names[v] == OURS;
                let pools = if read_only { &self.ours } else { &self.ours_rw };
                let pool = Arc::clone(&pools[ci]);
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = Arc::clone(&pool);
                    async move { ours_read(&pool, t, id, read_only).await }
                })
                .await
            }
            BARE => {
                let pool = self.bare[ci].clone();
                let unnamed = self.unnamed;
                harness::measure(&self.tenants, c, duration, pm, move |t, id| {
                    let pool = pool.clone();
                    async move { bare_read(&pool, t, id, unnamed).await }
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
pub(crate) fn ours_pool(env: &Env, c: usize) -> Result<TenantPool> {
    ours_pool_with(env, env.app_config().into(), c, Pooler::Direct)
}

fn ours_pool_with(env: &Env, config: PgConfig, c: usize, pooler: Pooler) -> Result<TenantPool> {
    TenantPool::new(
        config,
        env.key.clone(),
        PoolOptions {
            max_size: c,
            pooler,
            ..Default::default()
        },
    )
    .context("building the TenantPool")
}

/// What one report of the `tenant_tx` read measures: its name, the connection settings of
/// every variant, and whether the naive variant runs too.
pub(crate) struct Flavor {
    /// The report's name (`target/bench/<name>.json`).
    pub name: &'static str,
    /// Every variant connects with these settings (plain, or TLS).
    pub config: PgConfig,
    /// Whether the naive four-round-trip variant is measured.
    pub naive: bool,
    /// Added to the baseline's description.
    pub connection: &'static str,
    /// Extra fields of `params`.
    pub params: serde_json::Value,
    /// How the tenant pools reach PostgreSQL; behind a transaction-mode pooler the
    /// baseline runs unnamed statements too (named ones do not survive there).
    pub pooler: Pooler,
}

/// Runs the benchmark on `env` and, when given, again on `plpgsql` (a database with the
/// PL/pgSQL context), and writes `target/bench/tenant_tx.json`: the top-level figures are
/// `env`'s, `params.by_context` has each implementation's ratios.
pub(crate) async fn run(env: &Env, plpgsql: Option<&Env>, settings: Settings) -> Result<()> {
    println!("== tenant_tx: TenantTx point read vs bare pool (same query, no tenancy, no RLS)");
    let flavor = |env: &Env| Flavor {
        name: "tenant_tx",
        config: env.app_config().into(),
        naive: true,
        connection: "",
        params: json!({}),
        pooler: Pooler::Direct,
    };
    let Some(mut report) = measure(env, settings, flavor(env)).await? else {
        return Ok(());
    };
    let mut by_context = serde_json::Map::new();
    by_context.insert(context_key(&report.params), context_summary(&report.params));
    if let Some(pl) = plpgsql {
        println!("== tenant_tx on the PL/pgSQL context");
        if let Some(other) = measure(pl, settings, flavor(pl)).await? {
            by_context.insert(context_key(&other.params), context_summary(&other.params));
        }
    }
    report.params["by_context"] = serde_json::Value::Object(by_context);
    let path = report.write()?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `native` or `plpgsql`, from a report's `params.context_impl`.
fn context_key(params: &serde_json::Value) -> String {
    params["context_impl"]
        .as_str()
        .unwrap_or("unknown")
        .to_lowercase()
}

/// One context implementation's figures for `params.by_context`.
fn context_summary(params: &serde_json::Value) -> serde_json::Value {
    json!({
        "ratio_c8": params["ratio_c8"],
        "ratio_c32": params["ratio_c32"],
        "ours_rw_ratio_c8": params["ours_rw_ratio_c8"],
        "ours_rw_ratio_c32": params["ours_rw_ratio_c32"],
        "vs_naive_c8": params["ours_vs_naive_c8"],
        "vs_naive_c32": params["ours_vs_naive_c32"],
        "naive_ratio_c8": params["naive_ratio_c8"],
        "variants": params["variants"],
    })
}

/// Measures `flavor` and writes its report.
pub(crate) async fn run_flavor(env: &Env, settings: Settings, flavor: Flavor) -> Result<()> {
    if let Some(report) = measure(env, settings, flavor).await? {
        let path = report.write()?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Measures `flavor` on `env` and returns its report (`None` when only profiling).
async fn measure(env: &Env, settings: Settings, flavor: Flavor) -> Result<Option<Report>> {
    let mut bench = Bench {
        env,
        tenants: Arc::new(env.tenants.clone()),
        names: if flavor.naive {
            &[OURS, BARE, NAIVE, OURS_RW]
        } else {
            &[OURS, BARE, OURS_RW]
        },
        ours: Vec::new(),
        ours_rw: Vec::new(),
        bare: Vec::new(),
        naive: Vec::new(),
        unnamed: flavor.pooler == Pooler::Transaction,
    };
    for c in CONCURRENCY {
        bench.ours.push(Arc::new(ours_pool_with(
            env,
            flavor.config.clone(),
            c,
            flavor.pooler,
        )?));
        bench.ours_rw.push(Arc::new(ours_pool_with(
            env,
            flavor.config.clone(),
            c,
            flavor.pooler,
        )?));
        bench.bare.push(bare::build(flavor.config.clone(), c)?);
        if flavor.naive {
            bench.naive.push(bare::build(flavor.config.clone(), c)?);
        }
    }
    let m = harness::run_matrix(&bench, settings).await?;
    m.print_medians();
    if harness::profiling_only(settings) {
        return Ok(None);
    }

    let (o8, b8) = (m.median_ops(OURS, 0), m.median_ops(BARE, 0));
    let (o32, b32) = (m.median_ops(OURS, 1), m.median_ops(BARE, 1));
    let (rw8, rw32) = (m.median_ops(OURS_RW, 0), m.median_ops(OURS_RW, 1));
    let imp = env.context_impl().await?;
    let variants = m.variants_json();
    // Failed operations of every variant and concurrency (each also in `variants`).
    let failures: u64 = variants
        .as_object()
        .into_iter()
        .flat_map(|v| v.values())
        .filter_map(|v| v.as_object())
        .flat_map(|c| c.values())
        .filter_map(|c| c["failures"].as_u64())
        .sum();
    let mut params = json!({
        "failures": failures,
        "headline": "top-level ours/baseline/ratio are the medians at concurrency 8; see ratio_c8 and ratio_c32",
        "ratio_c8": harness::ratio(o8, b8),
        "ratio_c32": harness::ratio(o32, b32),
        "ours_rw_ratio_c8": harness::ratio(rw8, b8),
        "ours_rw_ratio_c32": harness::ratio(rw32, b32),
        "context_impl": format!("{imp:?}"),
        "concurrency": CONCURRENCY,
        "pool_size": "= concurrency",
        "runs": settings.runs,
        "seconds": settings.seconds,
        "warmup_seconds": settings.warmup_seconds,
        "order": format!("per run: c8 then c32; within each, {} (alternating, each with its own warm-up)", bench.names.join(", ")),
        "statistic": "median over runs of ops/s",
        "tenants": TENANTS,
        "rows_per_tenant": ROWS_PER_TENANT,
        "queries": {
            "ours": format!("TenantPool::begin_read_only + TenantTx::query_one({OURS_SQL:?}) + commit (queued); RLS via tenancy.make_tenant_table"),
            "ours_rw": format!("TenantPool::begin + TenantTx::query_one({OURS_SQL:?}) + commit (awaited)"),
            "bare": BARE_SQL,
            "naive": format!("BEGIN / {NAIVE_SET_SQL} / {NAIVE_SQL} / COMMIT, four round trips on the bare pool"),
        },
        "variants": variants,
        "tokio_worker_threads": "default (one per core)",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    let mut naive_line = String::new();
    if flavor.naive {
        let (n8, n32) = (m.median_ops(NAIVE, 0), m.median_ops(NAIVE, 1));
        params["naive_ratio_c8"] = harness::ratio(n8, b8).into();
        params["naive_ratio_c32"] = harness::ratio(n32, b32).into();
        params["ours_vs_naive_c8"] = harness::ratio(o8, n8).into();
        params["ours_vs_naive_c32"] = harness::ratio(o32, n32).into();
        naive_line = format!("naive/bare c8 {:.3}, c32 {:.3}; ", n8 / b8, n32 / b32);
    }
    if let (Some(p), serde_json::Value::Object(extra)) = (params.as_object_mut(), flavor.params) {
        p.extend(extra);
    }
    let report = Report {
        name: flavor.name.into(),
        unit: "tx/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(o8),
        baseline: harness::ops(b8),
        baseline_name: format!(
            "bare: same query on a table without RLS, same deadpool pool and size with a \
             per-connection statement cache, no transaction, no tenant context{}",
            flavor.connection
        ),
        ratio: harness::ratio(o8, b8),
        params,
    };
    println!(
        "{}: ours {o8:.0} tx/s vs bare {b8:.0} ops/s at c=8 → ratio {:.3}; c=32: {o32:.0} vs {b32:.0} → {:.3}; \
         {naive_line}read-write ours/bare c8 {:.3}, c32 {:.3} ({imp:?} context)",
        flavor.name,
        o8 / b8,
        o32 / b32,
        rw8 / b8,
        rw32 / b32,
    );
    Ok(Some(report))
}
