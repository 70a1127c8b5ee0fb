//! `tenant_tx_pgbouncer`: the `tenant_tx` read through PgBouncer in transaction mode
//! (Debian's `pgbouncer`, started here in front of the benchmark cluster's socket): a
//! TenantTx point read on a pool in `Pooler::Transaction` mode against the same query
//! on a bare pool, both through the same PgBouncer, in the same run.

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_pg::{PgBouncer, PgBouncerOptions};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::Pooler;

use crate::harness::Settings;
use crate::setup::{Env, DB};
use crate::tenant_tx::{run_flavor, Flavor};

/// PgBouncer's server connections for the runtime role: more than the highest
/// concurrency measured, so the pooler never makes a client wait for a backend.
const SERVER_POOL: u32 = 40;

/// Starts PgBouncer in front of `env`'s cluster, measures, writes
/// `target/bench/tenant_tx_pgbouncer.json` and stops PgBouncer.
pub(crate) async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== tenant_tx_pgbouncer: TenantTx point read vs bare pool, both through PgBouncer (transaction mode)");
    let bouncer = PgBouncer::start(
        &env.cluster,
        PgBouncerOptions {
            users: vec![RUNTIME_ROLE.to_owned()],
            default_pool_size: SERVER_POOL,
            ..Default::default()
        },
    )
    .await
    .context("starting pgbouncer")?;
    let version = std::process::Command::new(PgBouncer::locate()?)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    // The replay registry (tenancy_context preloaded) decides how pooled openings go.
    // So does tenancy.enter_pooled (the extension's version 1.1): one call per opening.
    let row = env
        .cluster
        .connect(DB)
        .await
        .context("connecting to the benchmark database")?
        .query_one(
            "SELECT current_setting('tenancy_context.replay_slots', true), \
                    to_regprocedure('tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text)') IS NOT NULL",
            &[],
        )
        .await
        .context("reading tenancy_context.replay_slots")?;
    let (replay_slots, one_call): (Option<String>, bool) = (row.get(0), row.get(1));
    let ours_mode = match &replay_slots {
        Some(_) if one_call => "PoolOptions::pooler = Pooler::Transaction, server with the replay registry (tenancy_context preloaded) and tenancy.enter_pooled (extension 1.1): a single-use v3 token per transaction, no round trip of its own; a read-only point read is one request: unnamed SELECT tenancy.enter_pooled($1, true, limits…) (token check, RESET ALL, the limits, its own statement timer restarted), then the unnamed query, one Sync, an implicit transaction (no BEGIN, no COMMIT)",
        Some(_) => "PoolOptions::pooler = Pooler::Transaction, server with the replay registry (tenancy_context preloaded): a single-use v3 token per transaction, no round trip of its own; a read-only point read is one request: unnamed SET statement_timeout (undone by the RESET ALL that follows), SELECT pg_backend_pid(), tenancy.enter_read_only($1) and the limits (RESET ALL inside), then the unnamed query, one Sync, an implicit transaction (no BEGIN, no COMMIT)",
        None => "PoolOptions::pooler = Pooler::Transaction, server without the replay registry: per transaction one round trip for BEGIN, RESET ALL, SET LOCAL limits, reading the backend pid and transaction start, then tenancy.enter (a v2 token bound to that transaction) spliced in front of the unnamed query; read-only COMMIT deferred into the next opening",
    };
    let flavor = Flavor {
        name: "tenant_tx_pgbouncer",
        config: bouncer.config_as(RUNTIME_ROLE, DB).into(),
        naive: false,
        connection: "; through the same PgBouncer (transaction mode), unnamed statements with their parameter types (query_typed: Parse, Bind, Execute, Sync in one request)",
        params: json!({
            "pooler": format!("{version}, pool_mode = transaction, default_pool_size = {SERVER_POOL}, auth trust, TCP 127.0.0.1 to PgBouncer, Unix socket to PostgreSQL"),
            "ours_mode": ours_mode,
            "replay_slots": replay_slots,
            "enter_pooled": one_call,
        }),
        pooler: Pooler::Transaction,
    };
    let r = run_flavor(env, settings, flavor).await;
    bouncer.stop().await;
    r
}
