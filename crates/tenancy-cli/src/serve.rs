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
    /// Keep the embedded default's PostgreSQL clusters, context key and admin token
    /// digest in this directory across restarts (overrides data_dir / TENANCY_DATA_DIR).
    /// Without it, everything is deleted on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds given to requests in flight and workflow steps under way to finish on
    /// SIGTERM or SIGINT (overrides shutdown_grace_secs / TENANCY_SHUTDOWN_GRACE_SECS).
    #[arg(long)]
    pub shutdown_grace_secs: Option<u64>,
}

/// Loads the configuration, builds the control plane and serves until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = tenancy_control::ControlConfig::load(args.config.as_deref())
        .map_err(anyhow::Error::msg)
        .context("loading the configuration")?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(absolute(dir)?);
    }
    if let Some(secs) = args.shutdown_grace_secs {
        config.shutdown_grace_secs = secs;
    }
    config
        .validate_runtime()
        .map_err(anyhow::Error::msg)
        .context("checking the configuration")?;
    let embedded = config.database_url.is_none();
    let app = tenancy_control::build(config)
        .await
        .context("starting the control plane")?;
    println!("tenancy control plane on http://127.0.0.1:{}", app.port());
    if embedded {
        match app.data_dir() {
            Some(dir) => println!(
                "embedded default: private PostgreSQL clusters kept in {} (tenants, context key and admin token survive restarts)",
                dir.display()
            ),
            None => println!(
                "embedded default: private PostgreSQL clusters in temporary directories; ALL DATA (tenants, admin token) IS DELETED ON EXIT: use --data-dir DIR to keep it"
            ),
        }
        for dir in app.cluster_data_dirs() {
            println!("PostgreSQL data directory {}", dir.display());
        }
    }
    if let Some(token) = app.generated_admin_token() {
        println!("admin token (shown once): {token}");
    } else if app.admin_token_kept() {
        println!("admin token: the one shown at the first start with this data directory");
    }
    tracing::info!(port = app.port(), "serving");
    app.run_until_stopped().await
}

/// `dir` made absolute (the clusters' socket paths are built from it).
fn absolute(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir);
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(cwd.join(dir))
}
