//! `tenant_tx_tls`: the `tenant_tx` read over TLS (`sslmode=verify-full`, TCP to
//! `localhost`): a TenantTx point read against the same query on a bare pool, both over
//! the same rustls stack to the same cluster, in the same run.

use anyhow::{Context, Result};
use serde_json::json;

use crate::harness::Settings;
use crate::setup::Env;
use crate::tenant_tx::{run_flavor, Flavor};
use tenancy_sdk::Pooler;

/// Runs the benchmark on `env` (a cluster started with TLS) and writes
/// `target/bench/tenant_tx_tls.json`.
pub(crate) async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== tenant_tx_tls: TenantTx point read vs bare pool, both over TLS (verify-full)");
    let config = env.app_tls_config()?;
    // Every variant's connections really are encrypted.
    let probe = tenancy_conn::connect(&config)
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
    let flavor = Flavor {
        name: "tenant_tx_tls",
        config,
        naive: false,
        connection: "; same TLS connection code (tokio-postgres over rustls, verify-full)",
        params: json!({
            "tls": "sslmode=verify-full, sslrootcert = the cluster's CA, TCP to localhost (127.0.0.1), rustls (ring), TLS 1.3; password (SCRAM) login",
        }),
        pooler: Pooler::Direct,
    };
    run_flavor(env, settings, flavor).await
}
