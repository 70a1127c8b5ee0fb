//! `audit_append`: an audited write (a row and its audit event in one `TenantTx`) against
//! the same write without the event, 8 clients over 100 tenants, and 8 clients on one
//! tenant (`params.same_tenant_ratio`: recording must not serialize a tenant's
//! transactions).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_audit::{Actor, ActorKind, Event};
use tenancy_core::TenantId;
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tenancy_sdk::TenantPool;
use uuid::Uuid;

use crate::harness::{self, Settings};
use crate::report::Report;
use crate::setup::{Env, DB, TENANTS};
use crate::tenant_tx::ours_pool;

const CLIENTS: usize = 8;

/// The write table, shared with `scripts/audit-cost.sh`.
const SCHEMA: &str = include_str!("../sql/audit_bench_writes.sql");

const WRITE: &str = "INSERT INTO audit_bench_writes (item, body) VALUES ($1, $2)";

async fn write(pool: &TenantPool, tenant: Uuid, item: i64, audited: bool) -> Result<()> {
    let tenant = TenantId::from_uuid(tenant).context("tenant id")?;
    let mut tx = pool.begin(tenant).await.context("begin")?;
    let body = format!("item {item} updated");
    tx.execute(WRITE, &[&item, &body]).await.context("write")?;
    if !audited {
        tx.commit().await.context("commit")?;
        return Ok(());
    }
    let event = Event::new(Actor::new(ActorKind::User, "bench-user"), "item.update")
        .target(format!("item:{item}"))
        .after(json!({ "item": item, "body": body }))
        .request_id("bench");
    // The event is the transaction's last statement: it goes with the COMMIT.
    tenancy_audit::record_and_commit(tx, &event)
        .await
        .context("record and commit")?;
    Ok(())
}

async fn measure(
    env: &Env,
    pool: &Arc<TenantPool>,
    tenants: &Arc<Vec<Uuid>>,
    audited: bool,
    duration: Duration,
) -> Result<harness::Sample> {
    let pool = Arc::clone(pool);
    harness::measure(
        tenants,
        CLIENTS,
        duration,
        env.postmaster_pid,
        move |t, id| {
            let pool = Arc::clone(&pool);
            async move { write(&pool, t, id, audited).await }
        },
    )
    .await
}

/// Runs the benchmark and writes `target/bench/audit_append.json`.
pub(crate) async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== audit_append: audited write (row + audit event, one TenantTx) vs the same write without audit");
    let mut owner = tenancy_pg::connect(&env.cluster.config_as(OWNER_ROLE, DB))
        .await
        .context("connecting as tenancy_owner")?;
    tenancy_audit::install(&owner)
        .await
        .context("installing the audit table")?;
    owner
        .batch_execute(SCHEMA)
        .await
        .context("creating the benchmark's write table")?;
    // Which function the events' CHECK calls: the C one where the database has the
    // tenancy_context extension 1.2 (or its library's functions), else the PL/pgSQL one.
    let check: String = owner
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint \
              WHERE conrelid = 'tenancy.audit_events'::regclass AND conname = 'audit_events_valid'",
            &[],
        )
        .await
        .context("reading the audit events' CHECK")?
        .get(0);
    println!("  audit events' {check}");
    // Whether events go through tenancy.audit_append (the tenancy_context extension from
    // version 1.3) rather than an INSERT: tenancy_audit::record uses it where it exists.
    let append: bool = owner
        .query_one(
            "SELECT to_regprocedure('tenancy.audit_append(uuid,text,text,text,text,text,text,jsonb,jsonb,text,text,inet)') IS NOT NULL",
            &[],
        )
        .await
        .context("looking for tenancy.audit_append")?
        .get(0);
    println!(
        "  events recorded with {}",
        if append {
            "tenancy.audit_append"
        } else {
            "INSERT INTO tenancy.audit_events"
        }
    );
    let pool = Arc::new(ours_pool(env, CLIENTS)?);
    let spread = Arc::new(env.tenants.clone());
    let one = Arc::new(vec![env.tenants[0]]);
    let warm = Duration::from_secs(settings.warmup_seconds);
    let dur = Duration::from_secs(settings.seconds);
    // [spread baseline, spread audited, one baseline, one audited] × runs.
    let names = [
        "plain_100_tenants",
        "audited_100_tenants",
        "plain_1_tenant",
        "audited_1_tenant",
    ];
    let mut samples: Vec<Vec<harness::Sample>> = vec![Vec::new(); names.len()];
    let mut sealed_per_sec = Vec::new();
    for run in 0..settings.runs {
        for (v, name) in names.iter().enumerate() {
            let tenants = if v < 2 { &spread } else { &one };
            let audited = v % 2 == 1;
            if !warm.is_zero() {
                measure(env, &pool, tenants, audited, warm)
                    .await
                    .with_context(|| format!("warming up {name}"))?;
            }
            let s = measure(env, &pool, tenants, audited, dur)
                .await
                .with_context(|| format!("measuring {name}"))?;
            println!(
                "  run {}/{} {name:<20} {:>9.0} tx/s  server {:>6} µs/op",
                run + 1,
                settings.runs,
                s.ops_per_sec,
                s.server_cpu_us_per_op
                    .map_or("n/a".into(), |x| format!("{x:.1}"))
            );
            samples[v].push(s);
            if audited {
                // The sealer runs between measurements (as a background task would), so
                // the unsealed backlog does not grow across runs; its rate is reported.
                let t0 = Instant::now();
                let r = tenancy_audit::seal(&mut owner, 5000)
                    .await
                    .context("sealing")?;
                let secs = t0.elapsed().as_secs_f64();
                if r.sealed > 0 && secs > 0.0 {
                    sealed_per_sec.push(r.sealed as f64 / secs);
                }
            }
        }
    }
    let med =
        |v: usize| harness::median(&samples[v].iter().map(|s| s.ops_per_sec).collect::<Vec<_>>());
    let cpu = |v: usize| {
        harness::median(
            &samples[v]
                .iter()
                .filter_map(|s| s.server_cpu_us_per_op)
                .collect::<Vec<_>>(),
        )
    };
    let (plain, audited, plain1, audited1) = (med(0), med(1), med(2), med(3));
    let report = Report {
        name: "audit_append".into(),
        unit: "tx/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(audited),
        baseline: harness::ops(plain),
        baseline_name: "the same TenantTx write (one INSERT + commit) without the audit event"
            .into(),
        ratio: harness::ratio(audited, plain),
        params: json!({
            "headline": "8 clients over 100 tenants: audited write (INSERT + tenancy_audit::record_and_commit) vs the same write without the event (INSERT + commit)",
            "same_tenant_ratio": harness::ratio(audited1, plain1),
            "same_tenant": { "ours": harness::ops(audited1), "baseline": harness::ops(plain1) },
            "audit_check": check,
            "audit_append": append,
            "clients": CLIENTS,
            "pool_size": CLIENTS,
            "tenants": TENANTS,
            "runs": settings.runs,
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "order": "per run: plain_100_tenants, audited_100_tenants, plain_1_tenant, audited_1_tenant, each with its own warm-up",
            "statistic": "median over runs of tx/s",
            "server_cpu_us_per_op": {
                "plain_100_tenants": harness::ops(cpu(0)),
                "audited_100_tenants": harness::ops(cpu(1)),
                "plain_1_tenant": harness::ops(cpu(2)),
                "audited_1_tenant": harness::ops(cpu(3)),
            },
            "sealer": {
                "note": "the sealer runs between measurements (not during them), as the owner role",
                "median_events_sealed_per_sec": harness::ops(harness::median(&sealed_per_sec)),
            },
            "queries": {
                "baseline": format!("TenantPool::begin + execute({WRITE:?}) + commit"),
                "ours": if append {
                    "the same, with the commit made by tenancy_audit::record_and_commit: SELECT tenancy.audit_append(…) sent together with the COMMIT (one more statement, no more round trips)"
                } else {
                    "the same, with the commit made by tenancy_audit::record_and_commit: INSERT INTO tenancy.audit_events sent together with the COMMIT (one more statement, no more round trips)"
                },
            },
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    let path = report.write()?;
    println!(
        "audit_append: audited {audited:.0} tx/s vs plain {plain:.0} tx/s over 100 tenants → ratio {:.3}; one tenant: {audited1:.0} vs {plain1:.0} → {:.3}",
        audited / plain,
        audited1 / plain1
    );
    println!("wrote {}", path.display());
    Ok(())
}
