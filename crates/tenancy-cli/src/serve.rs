//! `tenancy serve`: the control-plane API and provisioning workers.

use std::path::PathBuf;

use anyhow::Context;

/// Arguments of `tenancy serve`.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
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
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
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
    let app = if embedded {
        build_embedded(config).await?
    } else {
        tenancy_control::build(config)
            .await
            .context("starting the control plane")?
    };
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

/// The embedded default: one private PostgreSQL cluster per configured region (kept in
/// `data_dir/<region>` when a data directory is configured, else in temporary directories
/// removed on exit), handed to the control plane, which stops them last.
#[cfg(feature = "embedded")]
async fn build_embedded(
    config: tenancy_control::ControlConfig,
) -> anyhow::Result<tenancy_control::App> {
    let mut clusters: Vec<tenancy_control::LocalCluster> = Vec::new();
    for region in &config.regions {
        let opts = tenancy_pg::ClusterOptions {
            data_dir: config.data_dir.as_ref().map(|d| d.join(region)),
            ..tenancy_pg::ClusterOptions::default()
        };
        let started = tenancy_pg::Cluster::start(opts)
            .await
            .with_context(|| format!("starting the private cluster of region {region}"));
        let cluster = match started {
            Ok(c) => c,
            Err(e) => {
                for c in clusters {
                    c.stop.stop().await;
                }
                return Err(e);
            }
        };
        clusters.push(tenancy_control::LocalCluster {
            region: region.clone(),
            socket_dir: cluster.socket_dir().to_path_buf(),
            port: cluster.port(),
            superuser: cluster.superuser().to_owned(),
            data_dir: cluster.data_dir().to_path_buf(),
            stop: Box::new(Private(cluster)),
        });
    }
    tenancy_control::build_local(config, clusters)
        .await
        .context("starting the control plane")
}

/// Without the `embedded` feature there is no cluster harness: a database URL is required.
#[cfg(not(feature = "embedded"))]
async fn build_embedded(
    _config: tenancy_control::ControlConfig,
) -> anyhow::Result<tenancy_control::App> {
    anyhow::bail!(
        "no database_url (or DATABASE_URL) is configured, and this tenancy was built without \
         the `embedded` feature that starts private PostgreSQL clusters: set DATABASE_URL to a \
         server `tenancy bootstrap` set up"
    )
}

/// A private cluster of the embedded default, stopped by the control plane.
#[cfg(feature = "embedded")]
#[derive(Debug)]
struct Private(tenancy_pg::Cluster);

#[cfg(feature = "embedded")]
impl tenancy_control::StopCluster for Private {
    fn stop(self: Box<Self>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.0.stop())
    }
}

/// `dir` made absolute (the clusters' socket paths are built from it).
fn absolute(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if dir.is_absolute() {
        return Ok(dir);
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    Ok(cwd.join(dir))
}
