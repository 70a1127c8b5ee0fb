//! Side-by-side benchmarks: `cargo run --release -p tenancy-bench -- NAME`.
//!
//! Each benchmark starts (or shares) a private PostgreSQL cluster, measures tenancy and its
//! baseline in the same process, prints a summary and writes
//! `<workspace root>/target/bench/<name>.json`.

mod anomaly_eval;
mod audit_append;
mod bare;
mod config_propagation;
mod cpu;
mod django;
mod flag_eval;
mod harness;
mod http_get;
mod http_get_count;
mod migrate;
mod provision;
mod report;
mod seal_open;
mod setup;
mod stats;
mod tenant_import;
mod tenant_move;
mod tenant_tx;
mod tenant_tx_pgbouncer;
mod tenant_tx_tenaxum;
mod tenant_tx_tls;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use tenancy_sdk::bootstrap::ContextImpl;

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Name {
    /// TenantTx point read vs the same query on a bare pool without RLS.
    #[value(name = "tenant_tx")]
    TenantTx,
    /// The tenant_tx read over TLS (verify-full): TenantTx vs the bare pool, both on TLS.
    #[value(name = "tenant_tx_tls")]
    TenantTxTls,
    /// The tenant_tx read through PgBouncer in transaction mode: TenantTx (pooler mode) vs
    /// the bare pool, both through the same PgBouncer.
    #[value(name = "tenant_tx_pgbouncer")]
    TenantTxPgbouncer,
    /// TenantTx point read vs tenaxum's begin_tenant.
    #[value(name = "tenant_tx_tenaxum")]
    TenantTxTenaxum,
    /// HTTP GET of one tenant row through the tenancy layer vs the same handler without tenancy.
    #[value(name = "http_get")]
    HttpGet,
    /// The http_get requests of one variant (`--only ours|bare`), `--requests` of them one
    /// at a time on one thread, for counting instructions under valgrind.
    #[value(name = "http_get_count")]
    HttpGetCount,
    /// In-process flag evaluation vs unleash-yggdrasil on equivalent rules.
    #[value(name = "flag_eval")]
    FlagEval,
    /// A flag changed through the API until a second process sees it (p99 ms).
    #[value(name = "config_propagation")]
    ConfigPropagation,
    /// Signup to active tenant per placement (p50/p99) and the sustained rate vs
    /// django-tenants creating the same 20-table schema tenant.
    #[value(name = "provision")]
    Provision,
    /// `tenancy migrate` over thousands of schema tenants (no-op and one ADD COLUMN)
    /// vs django-tenants migrate_schemas --executor=multiprocessing.
    #[value(name = "migrate")]
    Migrate,
    /// An audited write (row + audit event in one TenantTx) vs the same write without
    /// audit, 8 clients over 100 tenants and on one tenant.
    #[value(name = "audit_append")]
    AuditAppend,
    /// Sealing and opening a 1 KB field through the keyring vs AES-256-GCM alone.
    #[value(name = "seal_open")]
    SealOpen,
    /// Rows/s importing a 1,000,000-row single-tenant database as a pooled tenant
    /// (`tenancy import --from-database`'s work) vs pg_dump | psql into a scratch database.
    #[value(name = "tenant_import")]
    TenantImport,
    /// A 100,000-row pooled tenant moved to a dedicated database under 4 writers: the
    /// longest write held (ms) vs the write downtime of an offline COPY move.
    #[value(name = "tenant_move")]
    TenantMove,
    /// Access anomaly detectors vs static thresholds on 30 simulated days of 200 tenants
    /// with labelled attacks, replayed over HTTP through the tenancy layer and the SDK
    /// (F1, precision, recall, false alarms per tenant-week).
    #[value(name = "anomaly_eval")]
    AnomalyEval,
    /// Every benchmark above, on one cluster.
    #[value(name = "all")]
    All,
}

#[derive(Debug, Parser)]
#[command(about = "tenancy benchmarks: ours vs a baseline, same process, same run")]
struct Cli {
    /// Benchmark to run.
    name: Name,
    /// Repetitions of the whole matrix; medians are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Measured seconds per (variant, concurrency, run).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Unmeasured warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// tenant_tx, tenant_tx_tenaxum, http_get, http_get_count: measure only this variant (e.g. `ours`), to
    /// profile one side; prints its figures and writes no report.
    #[arg(long)]
    only: Option<String>,
    /// http_get_count: requests counted after the warm-up.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// provision: measured tenants per placement (and in the sustained batch).
    #[arg(long, default_value_t = 100)]
    tenants: usize,
    /// provision: tenants the django-tenants baseline creates.
    #[arg(long, default_value_t = 30)]
    django_tenants: usize,
    /// provision: provisioning workers (the control plane's default is 2).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// migrate: numbers of schema tenants to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    schemas: Vec<usize>,
    /// migrate: schemas the django-tenants baseline migrates.
    #[arg(long, default_value_t = 1000)]
    django_schemas: usize,
    /// anomaly_eval: seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// anomaly_eval: feed the generated traffic straight into the detectors (no HTTP, no
    /// database), unbatched and batched as the replay sends it; prints, writes no report.
    #[arg(long)]
    in_process: bool,
    /// migrate: connections per cluster.
    #[arg(long, default_value_t = 4)]
    migrate_concurrency: usize,
    /// migrate: targets pipelined per connection.
    #[arg(long, default_value_t = 16)]
    migrate_pipeline: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    // config_propagation re-runs this executable as its watcher process.
    if let Some(result) = config_propagation::child_mode().await {
        return result;
    }
    let cli = Cli::parse();
    anyhow::ensure!(
        cli.runs >= 1 && cli.seconds >= 1,
        "--runs and --seconds must be at least 1"
    );
    let settings = harness::Settings {
        runs: cli.runs,
        seconds: cli.seconds,
        warmup_seconds: cli.warmup_seconds,
        only: cli.only.clone().map(|s| &*Box::leak(s.into_boxed_str())),
    };
    if matches!(cli.name, Name::FlagEval | Name::All) {
        flag_eval::run(cli.runs).context("running flag_eval")?;
    }
    if matches!(cli.name, Name::AnomalyEval | Name::All) {
        if cli.in_process {
            anomaly_eval::in_process(cli.seed).context("running anomaly_eval in process")?;
        } else {
            anomaly_eval::run(cli.seed)
                .await
                .context("running anomaly_eval")?;
        }
    }
    if matches!(cli.name, Name::ConfigPropagation | Name::All) {
        config_propagation::run(cli.runs)
            .await
            .context("running config_propagation")?;
    }
    if matches!(cli.name, Name::Provision | Name::All) {
        provision::run(provision::Options {
            tenants: cli.tenants,
            django_tenants: cli.django_tenants,
            workers: cli.workers,
        })
        .await
        .context("running provision")?;
    }
    if matches!(cli.name, Name::Migrate | Name::All) {
        migrate::run(migrate::Options {
            schemas: cli.schemas.clone(),
            django_schemas: cli.django_schemas,
            runs: cli.runs.min(3),
            concurrency: cli.migrate_concurrency,
            pipeline: cli.migrate_pipeline,
        })
        .await
        .context("running migrate")?;
    }
    if matches!(cli.name, Name::TenantImport | Name::All) {
        tenant_import::run(cli.runs.min(3))
            .await
            .context("running tenant_import")?;
    }
    if matches!(cli.name, Name::TenantMove | Name::All) {
        tenant_move::run(cli.runs)
            .await
            .context("running tenant_move")?;
    }
    if matches!(cli.name, Name::TenantTxTls | Name::All) {
        println!("setting up a private cluster serving TLS (100 tenants × 1,000 rows)…");
        let env = setup::Env::start_with(Some(tenancy_pg::ClusterTls::default()))
            .await
            .context("setting up the TLS benchmark database")?;
        tenant_tx_tls::run(&env, settings)
            .await
            .context("running tenant_tx_tls")?;
        env.cluster.stop().await;
    }
    let needs_items = matches!(
        cli.name,
        Name::TenantTx
            | Name::TenantTxPgbouncer
            | Name::TenantTxTenaxum
            | Name::HttpGet
            | Name::HttpGetCount
            | Name::AuditAppend
            | Name::SealOpen
            | Name::All
    );
    if !needs_items {
        return Ok(());
    }
    println!("setting up a private cluster (100 tenants × 1,000 rows)…");
    let env = setup::Env::start()
        .await
        .context("setting up the benchmark database")?;
    if matches!(cli.name, Name::TenantTx | Name::All) {
        // Both context implementations in one run: the PL/pgSQL one (what a managed
        // server without the extension runs) on a cluster of its own, unless the main
        // one already runs it.
        let plpgsql = if env.context_impl().await? == ContextImpl::PlPgSql {
            None
        } else {
            println!("setting up a second private cluster with the PL/pgSQL context…");
            Some(
                setup::Env::start_context(None, Some(ContextImpl::PlPgSql))
                    .await
                    .context("setting up the PL/pgSQL benchmark database")?,
            )
        };
        let r = tenant_tx::run(&env, plpgsql.as_ref(), settings).await;
        if let Some(pl) = plpgsql {
            pl.cluster.stop().await;
        }
        r.context("running tenant_tx")?;
    }
    if matches!(cli.name, Name::TenantTxPgbouncer | Name::All) {
        tenant_tx_pgbouncer::run(&env, settings)
            .await
            .context("running tenant_tx_pgbouncer")?;
    }
    if matches!(cli.name, Name::TenantTxTenaxum | Name::All) {
        tenant_tx_tenaxum::run(&env, settings)
            .await
            .context("running tenant_tx_tenaxum")?;
    }
    if matches!(cli.name, Name::HttpGet | Name::All) {
        http_get::run(&env, settings)
            .await
            .context("running http_get")?;
    }
    if cli.name == Name::HttpGetCount {
        http_get_count::run(&env, cli.only.as_deref().unwrap_or("ours"), cli.requests)
            .await
            .context("running http_get_count")?;
    }
    if matches!(cli.name, Name::AuditAppend | Name::All) {
        audit_append::run(&env, settings)
            .await
            .context("running audit_append")?;
    }
    if matches!(cli.name, Name::SealOpen | Name::All) {
        seal_open::run(&env, cli.runs)
            .await
            .context("running seal_open")?;
    }
    env.cluster.stop().await;
    Ok(())
}
