//! `provision`: time from a signup request to an active tenant, through the real
//! provisioning engine, for each placement; the sustained rate; and django-tenants
//! creating the same 20-table schema tenant as the baseline.
//!
//! Setup: one private cluster (ephemeral, listening on TCP as well for Django), with
//! tenancy's roles, a catalog database that is also region `eu-west`'s shared tenant
//! database (like the engine's own tests), and a `Provisioner` with `--workers` workers
//! (the control plane's default is 2) and an app of 20 generated tenant tables.
//!
//! Time to active: one signup at a time, as the control plane's signup handler does it
//! (`Provisioner::provision`: the tenant row and its workflow in one catalog transaction,
//! workers woken), until `Provisioner::subscribe` reports the workflow succeeded (its
//! last step, `activate`, commits the tenant's `active` state and the workflow's success
//! together). A few unmeasured warm-up tenants per placement come first (the first pooled
//! tenant brings the shared database to the app's version; pools fill).
//!
//! Warm pool: the headline runs with the engine's default warm pool (spare schemas and
//! databases claimed by the storage step, refilled by the workers' refill task). Before
//! every measured signup the benchmark waits until the pool is full again, so each measured
//! tenant claims a spare (checked: the engine counts claims); the refill its own claim
//! triggers runs concurrently with the rest of its workflow. `params.warm_pool.claim_ms` is
//! the storage step with a claim. The same placements are then measured with the pool
//! disabled (`params.cold`: storage created at signup).
//!
//! Sustained rate: a batch of schema tenants queued back to back while the workers run;
//! tenants per second from the first request to the last activation. Reported drained
//! (`sustained_schema_per_s`: the run without a pool, every schema created at signup) and
//! with the warm pool on (`sustained_schema_pool_on_per_s`: its spares drain, its refill
//! competes with the workers and some tenants still claim a fresh spare).
//!
//! Where the time goes: each workflow's step log (`tenancy_catalog.workflow_steps`, the
//! engine records every step's duration) is read back after each phase; whatever is not in
//! a step is the signup transaction, claiming, recording and committing each step.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tenancy_catalog::{NewTenant, WorkflowStatus};
use tenancy_core::{ContextKey, Placement};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_provision::{
    storage, AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner, WarmPool,
};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tokio::sync::broadcast::error::RecvError;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::django;
use crate::report::Report;
use crate::setup::{catalog_on, on_private_cluster, CATALOG_DB};
use crate::stats::percentile;

/// Tables of the generated app (both sides).
const TABLES: usize = 20;
/// Unmeasured tenants per placement before measuring.
const WARMUP: usize = 3;
/// The catalog database, also the region's shared tenant database.
/// Longest wait for one workflow.
const WORKFLOW_TIMEOUT: Duration = Duration::from_secs(120);

/// Steps of a provision workflow, in order.
const STEPS: [&str; 6] = [
    "placement",
    "storage",
    "seed_config",
    "register",
    "billing_link",
    "activate",
];

/// Settings of the benchmark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Measured tenants per placement (and in the sustained batch).
    pub tenants: usize,
    /// Tenants django-tenants creates.
    pub django_tenants: usize,
    /// Provisioning workers.
    pub workers: usize,
}

/// One measured provisioning.
#[derive(Debug, Clone, Copy)]
struct Sample {
    workflow: Uuid,
    /// The signup call (tenant row + workflow, committed).
    signup_ms: f64,
    /// Request to active.
    total_ms: f64,
}

fn sorted(xs: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = xs.into_iter().collect();
    v.sort_by(f64::total_cmp);
    v
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn key() -> Result<ContextKey> {
    Ok(ContextKey::from_bytes(
        "bench".parse().context("parsing the key id")?,
        rand::random(),
    ))
}

/// The workspace root: this crate lives in `<root>/crates/tenancy-bench`.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

fn request(slug: &str, placement: Placement) -> Result<ProvisionRequest> {
    Ok(ProvisionRequest {
        tenant: NewTenant {
            id: None,
            slug: slug.parse().context("slug")?,
            display_name: format!("Bench {slug}"),
            plan: "free".parse().context("plan")?,
            region: "eu-west".parse().context("region")?,
            placement,
        },
        billing_customer: Some(format!("cus_{}", slug.replace('-', "_"))),
        billing_subscription: None,
    })
}

fn placement_name(p: Placement) -> &'static str {
    match p {
        Placement::Pooled => "pooled",
        Placement::Schema => "schema",
        Placement::Dedicated => "dedicated",
    }
}

/// Runs the benchmark and writes `target/bench/provision.json`.
pub(crate) async fn run(opts: Options) -> Result<()> {
    anyhow::ensure!(
        opts.tenants >= 1 && opts.django_tenants >= 1 && opts.workers >= 1,
        "--tenants, --django-tenants and --workers must be at least 1"
    );
    on_private_cluster(
        ClusterOptions {
            ephemeral: true,
            tcp_port: Some(0),
            settings: vec![("max_connections".into(), "200".into())],
            ..Default::default()
        },
        async |cluster| measure(cluster, opts).await,
    )
    .await
}

async fn measure(cluster: &Cluster, opts: Options) -> Result<()> {
    let root = workspace_root();

    // Baseline first: django-tenants on its own database of the same cluster, over TCP.
    let dj = django::run(&root, cluster, TABLES, opts.django_tenants)
        .await
        .context("running the django-tenants baseline")?;
    let dj_sorted = sorted(dj.seconds.iter().copied());
    let django_median_s = percentile(&dj_sorted, 0.5);
    println!(
        "django-tenants {} (Django {}, Python {}): {} tenants, median {:.3} s, p99 {:.3} s, min {:.3} s",
        dj.django_tenants,
        dj.django,
        dj.python,
        dj.seconds.len(),
        django_median_s,
        percentile(&dj_sorted, 0.99),
        dj_sorted.first().copied().unwrap_or(f64::NAN),
    );

    // Ours.
    let key = key()?;
    let su = cluster.connect("postgres").await?;
    su.batch_execute(&format!("CREATE DATABASE {CATALOG_DB}"))
        .await
        .context("creating the catalog database")?;
    // Held open for the run, as an application's owner connection would be.
    let _owner = catalog_on(cluster, &su, &key).await?;

    let mut plans = std::collections::BTreeMap::new();
    let mut free = serde_json::Map::new();
    free.insert("max_users".into(), json!(5));
    free.insert("api_calls_per_day".into(), json!(10_000));
    plans.insert("free".to_owned(), free);
    let warm_pool = WarmPool::default();
    let engine = |warm_pool: WarmPool| {
        Provisioner::new(
            cluster.config_as(OWNER_ROLE, CATALOG_DB),
            ClusterAccess::local(cluster.superuser()),
            key.clone(),
            ProvisionConfig {
                app_migrations: AppMigrations::generated(TABLES),
                plans: plans.clone(),
                warm_pool,
                ..Default::default()
            },
        )
    };
    let p = engine(warm_pool)?;
    println!("PostgreSQL floors on this cluster (outside the engine)…");
    let floor = floors(cluster, 15).await?;
    let mut catalog = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, CATALOG_DB)).await?;
    let pool_wait = PoolWait {
        shared: cluster.connect(CATALOG_DB).await?,
        maintenance: cluster.connect("postgres").await?,
        tag: storage::spare_database_tag(
            &storage::template_name_for(&AppMigrations::generated(TABLES)),
            &key,
        ),
        size: warm_pool,
    };

    // 1. With the warm pool (the headline): the workers' refill task keeps it full; before
    //    every measured signup the benchmark waits until it is full again, so each
    //    measured tenant finds a spare (the refill of the previous one's spare is not
    //    overlapping the measurement; the refill triggered by *this* claim does overlap
    //    the rest of this tenant's workflow, as in production).
    let workers = p.spawn_workers(opts.workers);
    println!(
        "ours, warm pool ({} schemas, {} databases): waiting for the first refill…",
        warm_pool.schemas, warm_pool.databases
    );
    let t_fill = Instant::now();
    pool_wait.full().await?;
    let first_fill_s = t_fill.elapsed().as_secs_f64();
    let mut per_placement = Vec::new();
    let mut warmups = serde_json::Map::new();
    for placement in [Placement::Pooled, Placement::Schema, Placement::Dedicated] {
        let name = placement_name(placement);
        println!(
            "ours: {name}: {WARMUP} warm-up + {} tenants, one signup at a time, pool full before each…",
            opts.tenants
        );
        let warm = sequential(
            &p,
            &mut catalog,
            placement,
            &format!("w{name}"),
            WARMUP,
            Some(&pool_wait),
        )
        .await?;
        warmups.insert(
            name.into(),
            json!(warm.iter().map(|s| round2(s.total_ms)).collect::<Vec<_>>()),
        );
        let before = p.warm_pool_claims();
        let samples = sequential(
            &p,
            &mut catalog,
            placement,
            name,
            opts.tenants,
            Some(&pool_wait),
        )
        .await?;
        let after = p.warm_pool_claims();
        let claimed = (after.0 - before.0) + (after.1 - before.1);
        if placement != Placement::Pooled {
            anyhow::ensure!(
                claimed == opts.tenants as u64,
                "{name}: only {claimed} of {} measured tenants claimed a spare",
                opts.tenants
            );
        }
        verify_active(&catalog, &samples).await?;
        let steps = step_log(&catalog, &samples).await?;
        per_placement.push((placement, samples, steps));
    }
    verify_storage(cluster, &catalog).await?;

    // 2. Sustained with the warm pool on: the pool drains after its first spares and
    //    the refill task competes with the workers for the rest of the batch.
    pool_wait.full().await?;
    println!(
        "ours: sustained, warm pool on (drains): {} schema tenants queued back to back, {} workers…",
        opts.tenants, opts.workers
    );
    let before = p.warm_pool_claims();
    let sustained =
        sustained_batch(&p, &mut catalog, Placement::Schema, opts.tenants, "load").await?;
    let sustained_claims = p.warm_pool_claims().0 - before.0;
    verify_active(&catalog, &sustained.samples).await?;
    let sustained_steps = step_log(&catalog, &sustained.samples).await?;
    workers.stop().await;

    // 3. Cold: the same engine without a warm pool (storage created at signup), as before
    //    the pool existed: time to active per placement and the sustained rate.
    let cold = engine(WarmPool::DISABLED)?;
    let workers = cold.spawn_workers(opts.workers);
    let mut cold_placement = Vec::new();
    for placement in [Placement::Schema, Placement::Dedicated] {
        let name = placement_name(placement);
        println!(
            "ours, no pool: {name}: {WARMUP} warm-up + {} tenants, one signup at a time…",
            opts.tenants
        );
        sequential(
            &cold,
            &mut catalog,
            placement,
            &format!("wc{name}"),
            WARMUP,
            None,
        )
        .await?;
        let samples = sequential(
            &cold,
            &mut catalog,
            placement,
            &format!("c{name}"),
            opts.tenants,
            None,
        )
        .await?;
        verify_active(&catalog, &samples).await?;
        let steps = step_log(&catalog, &samples).await?;
        cold_placement.push((placement, samples, steps));
    }
    println!(
        "ours, no pool: sustained: {} schema tenants queued back to back…",
        opts.tenants
    );
    let cold_sustained = sustained_batch(
        &cold,
        &mut catalog,
        Placement::Schema,
        opts.tenants,
        "cload",
    )
    .await?;
    verify_active(&catalog, &cold_sustained.samples).await?;
    workers.stop().await;
    verify_storage(cluster, &catalog).await?;

    // Summary.
    println!();
    println!(
        "time to active (request → active), {} tenants each, {} workers, {TABLES}-table app:",
        opts.tenants, opts.workers
    );
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "placement", "p50 ms", "p99 ms", "max ms", "mean ms", "signup p50"
    );
    let mut params = serde_json::Map::new();
    let mut steps_json = serde_json::Map::new();
    let mut p99s = HashMap::new();
    let mut p50s = HashMap::new();
    for (placement, samples, steps) in &per_placement {
        let name = placement_name(*placement);
        let t = sorted(samples.iter().map(|s| s.total_ms));
        let signup = sorted(samples.iter().map(|s| s.signup_ms));
        println!(
            "  {:<10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>11.2}",
            name,
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            t.last().copied().unwrap_or(f64::NAN),
            mean(&t),
            percentile(&signup, 0.5)
        );
        params.insert(format!("{name}_p50_ms"), json!(round2(percentile(&t, 0.5))));
        params.insert(
            format!("{name}_p99_ms"),
            json!(round2(percentile(&t, 0.99))),
        );
        params.insert(
            format!("{name}_max_ms"),
            json!(round2(t.last().copied().unwrap_or(f64::NAN))),
        );
        p50s.insert(name, percentile(&t, 0.5));
        p99s.insert(name, percentile(&t, 0.99));
        steps_json.insert(name.into(), steps.to_json(samples));
    }
    let sus_t = sorted(sustained.samples.iter().map(|s| s.total_ms));
    println!(
        "sustained with the warm pool on (schema, {} queued back to back): {:.1} tenants/s over {:.2} s; time to active under that load p50 {:.0} ms, p99 {:.0} ms",
        sustained.samples.len(),
        sustained.per_s,
        sustained.wall_s,
        percentile(&sus_t, 0.5),
        percentile(&sus_t, 0.99)
    );
    steps_json.insert(
        "sustained_schema_pool_on".into(),
        sustained_steps.to_json(&sustained.samples),
    );
    println!("  ({sustained_claims} of them claimed a spare; the rest found the pool drained)");
    let cold_sus_t = sorted(cold_sustained.samples.iter().map(|s| s.total_ms));
    println!(
        "sustained, drained (no pool: every schema created at signup; {} queued back to back): {:.1} tenants/s over {:.2} s; p50 {:.0} ms, p99 {:.0} ms",
        cold_sustained.samples.len(),
        cold_sustained.per_s,
        cold_sustained.wall_s,
        percentile(&cold_sus_t, 0.5),
        percentile(&cold_sus_t, 0.99)
    );
    println!("claim (storage step with the warm pool: the spare's rename + the ledger), median / p99 ms:");
    let mut claim_json = serde_json::Map::new();
    for (placement, samples, steps) in &per_placement {
        if *placement == Placement::Pooled {
            continue;
        }
        let name = placement_name(*placement);
        let v = steps.step(samples, "storage");
        println!(
            "  {:<10} {:>9.1} {:>9.1}",
            name,
            percentile(&v, 0.5),
            percentile(&v, 0.99)
        );
        claim_json.insert(
            name.into(),
            json!({"p50": round2(percentile(&v, 0.5)), "p99": round2(percentile(&v, 0.99))}),
        );
    }
    println!("without a pool (storage created at signup), time to active:");
    let mut cold_json = serde_json::Map::new();
    let mut cold_steps_json = serde_json::Map::new();
    for (placement, samples, steps) in &cold_placement {
        let name = placement_name(*placement);
        let t = sorted(samples.iter().map(|s| s.total_ms));
        let st = steps.step(samples, "storage");
        println!(
            "  {:<10} p50 {:>7.1} p99 {:>7.1} max {:>7.1} ms; storage step p50 {:.1} ms",
            name,
            percentile(&t, 0.5),
            percentile(&t, 0.99),
            t.last().copied().unwrap_or(f64::NAN),
            percentile(&st, 0.5)
        );
        cold_json.insert(format!("{name}_p50_ms"), json!(round2(percentile(&t, 0.5))));
        cold_json.insert(
            format!("{name}_p99_ms"),
            json!(round2(percentile(&t, 0.99))),
        );
        cold_steps_json.insert(name.into(), steps.to_json(samples));
    }
    cold_json.insert(
        "sustained_schema_per_s".into(),
        json!(round2(cold_sustained.per_s)),
    );
    cold_json.insert(
        "sustained_schema_p50_ms".into(),
        json!(round2(percentile(&cold_sus_t, 0.5))),
    );
    cold_json.insert(
        "sustained_schema_p99_ms".into(),
        json!(round2(percentile(&cold_sus_t, 0.99))),
    );
    cold_json.insert(
        "steps_ms".into(),
        serde_json::Value::Object(cold_steps_json),
    );

    println!();
    println!("where the time goes (step log; median / p99 ms per step; 'outside' = request → active minus the steps):");
    for (placement, samples, steps) in &per_placement {
        steps.print(placement_name(*placement), samples);
    }
    sustained_steps.print("sustained", &sustained.samples);
    println!(
        "  PostgreSQL alone (medians): 20 tables + indexes in one transaction {:.1} ms; with make_tenant_table on each + grant + marker {:.1} ms; the same from generated DDL (the engine's path) {:.1} ms; CREATE DATABASE {:.1} ms",
        floor.ddl_ms, floor.ddl_tenant_tables_ms, floor.ddl_generated_ms, floor.create_database_ms
    );

    let ours_s = p50s.get("schema").copied().unwrap_or(f64::NAN) / 1000.0;
    let ratio = django_median_s / ours_s;
    let pooled_ok = p99s.get("pooled").is_some_and(|v| *v < 50.0);
    let every_ok = p99s.values().all(|v| *v < 250.0);
    let ratio_ok = ratio >= 5.0;
    println!();
    println!(
        "schema median: ours {:.1} ms vs django-tenants {:.1} ms → {:.2}x faster",
        ours_s * 1000.0,
        django_median_s * 1000.0,
        ratio
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: pooled p99 < 50 ms: {} ({:.1} ms); every placement p99 < 250 ms: {} (pooled {:.1}, schema {:.1}, dedicated {:.1} ms); ratio >= 5: {} ({:.2})",
        verdict(pooled_ok),
        p99s.get("pooled").copied().unwrap_or(f64::NAN),
        verdict(every_ok),
        p99s.get("pooled").copied().unwrap_or(f64::NAN),
        p99s.get("schema").copied().unwrap_or(f64::NAN),
        p99s.get("dedicated").copied().unwrap_or(f64::NAN),
        verdict(ratio_ok),
        ratio
    );

    // The contract's sustained rate is the drained one: no spare to claim, every
    // tenant's storage created at signup (the run without a pool). The run with the pool
    // on, which claims the spares its refill task manages to make, is reported beside it.
    params.insert(
        "sustained_schema_per_s".into(),
        json!(round2(cold_sustained.per_s)),
    );
    params.insert(
        "sustained_schema_wall_s".into(),
        json!(round2(cold_sustained.wall_s)),
    );
    params.insert(
        "sustained_schema_p50_ms".into(),
        json!(round2(percentile(&cold_sus_t, 0.5))),
    );
    params.insert(
        "sustained_schema_p99_ms".into(),
        json!(round2(percentile(&cold_sus_t, 0.99))),
    );
    params.insert(
        "sustained_schema_pool_on_per_s".into(),
        json!(round2(sustained.per_s)),
    );
    params.insert(
        "sustained_schema_pool_on_p50_ms".into(),
        json!(round2(percentile(&sus_t, 0.5))),
    );
    params.insert(
        "sustained_schema_pool_on_p99_ms".into(),
        json!(round2(percentile(&sus_t, 0.99))),
    );
    params.insert(
        "sustained_schema_pool_on_claims".into(),
        json!(sustained_claims),
    );
    params.insert(
        "warm_pool".into(),
        json!({
            "schemas": warm_pool.schemas,
            "databases": warm_pool.databases,
            "headline": "the pool is full before every measured signup (the benchmark waits for the workers' refill task between signups); the refill started by a claim overlaps the rest of that tenant's workflow",
            "first_fill_s": round2(first_fill_s),
            "claim_ms": serde_json::Value::Object(claim_json),
        }),
    );
    params.insert("cold".into(), serde_json::Value::Object(cold_json));
    params.insert("django_median_s".into(), json!(django_median_s));
    params.insert("django_p99_s".into(), json!(percentile(&dj_sorted, 0.99)));
    params.insert(
        "django_min_s".into(),
        json!(dj_sorted.first().copied().unwrap_or(f64::NAN)),
    );
    params.insert("django_tenants".into(), json!(dj.seconds.len()));
    params.insert("django_version".into(), json!(dj.django));
    params.insert("django_tenants_version".into(), json!(dj.django_tenants));
    params.insert("django_seconds".into(), json!(dj.seconds));
    params.insert("tenants_per_placement".into(), json!(opts.tenants));
    params.insert(
        "pg_floor_ms".into(),
        json!({
            "ddl_20_tables": round2(floor.ddl_ms),
            "ddl_20_tenant_tables": round2(floor.ddl_tenant_tables_ms),
            "ddl_20_tenant_tables_generated": round2(floor.ddl_generated_ms),
            "create_database": round2(floor.create_database_ms),
        }),
    );
    params.insert("workers".into(), json!(opts.workers));
    params.insert("tables".into(), json!(TABLES));
    params.insert("warmup_ms".into(), serde_json::Value::Object(warmups));
    params.insert("steps_ms".into(), serde_json::Value::Object(steps_json));
    params.insert(
        "targets".into(),
        json!({"pooled_p99_lt_50ms": pooled_ok, "every_p99_lt_250ms": every_ok, "ratio_ge_5": ratio_ok}),
    );
    params.insert(
        "setup".into(),
        json!(format!(
            "one private PostgreSQL {} cluster, ephemeral (fsync off) for both sides; ours over the Unix socket, Django over 127.0.0.1 TCP with scram; no webhook receivers configured; headline with a warm pool (default size, full before each measured signup), 'cold' without one; schema tenants from generated DDL in one round trip; dedicated tenants cloned from a per-app-version template database (built by the warm pool's first refill)",
            cluster.major_version()
        )),
    );
    let report = Report {
        name: "provision".into(),
        unit: "seconds from signup request to active schema tenant (20 tables), median, with a warm pool of pre-created schemas (full before each signup; cold figures in params.cold); lower is better; ratio = baseline / ours, > 1 means faster than django-tenants".into(),
        ours: ours_s,
        baseline: django_median_s,
        baseline_name: format!(
            "django-tenants {} migrate/auto_create_schema, {TABLES} models",
            dj.django_tenants
        ),
        ratio,
        params: serde_json::Value::Object(params),
    };
    let path = report.write()?;
    println!("wrote {}", path.display());
    Ok(())
}

mod phases;
use phases::*;
