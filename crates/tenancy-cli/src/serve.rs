//! `tenancy serve`: the control-plane API and provisioning workers.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `tenancy serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML); TENANCY_… environment variables override it.
    #[arg(long, env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration).
    #[arg(long)]
    pub listen: Option<String>,
}

/// Loads the configuration, builds the control plane and serves until Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = tenancy_control::ControlConfig::load(args.config.as_deref())
        .map_err(anyhow::Error::msg)
        .context("loading the configuration")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let embedded = config.database_url.is_none();
    let app = tenancy_control::build(config)
        .await
        .context("starting the control plane")?;
    println!("tenancy control plane on http://127.0.0.1:{}", app.port());
    if embedded {
        println!("embedded default: private PostgreSQL clusters, stopped on exit");
        for dir in app.cluster_data_dirs() {
            println!("PostgreSQL data directory {}", dir.display());
        }
    }
    if let Some(token) = app.generated_admin_token() {
        println!("admin token (shown once): {token}");
    }
    app.run_until_stopped().await
}
