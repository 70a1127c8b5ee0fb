//! Startup as a library API: `build(config) -> App`, `app.port()`,
//! `app.run_until_stopped()`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_config_service::dns::{SystemResolver, TxtResolver, UnavailableResolver};
use tenancy_config_service::ConfigState;
use tenancy_conn::PgConfig;
use tenancy_provision::{AppMigrations, ProvisionConfig, Provisioner, Receiver};
use tenancy_sdk::bootstrap;
use tokio::sync::watch;

use crate::server::ServeOptions;
use crate::{auth, router, AppState, ControlConfig};

mod catalog;

pub use catalog::connect_catalog;

/// Stops a [`LocalCluster`]'s server. The control plane calls it last, once requests and
/// workers have stopped; whoever started the server decides what stopping means (a
/// private cluster is shut down, and its temporary directory removed).
pub trait StopCluster: Send + Sync + std::fmt::Debug {
    /// Stops the server and waits for it to exit.
    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A PostgreSQL cluster started for the control plane when it has no database URL (the
/// embedded default of `tenancy serve`). The control plane reaches it through
/// `tenancy-conn` like any server: it bootstraps it (roles, the `tenancy` database, the
/// signed context), and the first one holds the catalog. Every cluster is registered in
/// its region under the name `local-<region>`.
#[derive(Debug)]
pub struct LocalCluster {
    /// The region the cluster serves.
    pub region: String,
    /// Directory of the server's Unix socket (the host the catalog records).
    pub socket_dir: PathBuf,
    /// Port of the socket.
    pub port: u16,
    /// A superuser that logs in over the socket without a password: bootstraps the
    /// cluster and creates and drops dedicated tenant databases.
    pub superuser: String,
    /// The data directory, shown to operators (they find the server processes by it).
    pub data_dir: PathBuf,
    /// Stops the server when the control plane stops.
    pub stop: Box<dyn StopCluster>,
}

impl LocalCluster {
    /// Connection settings for `user` on `dbname` over the socket.
    fn config_as(&self, user: &str, dbname: &str) -> PgConfig {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.socket_dir)
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .application_name("tenancy");
        PgConfig::from(c)
    }
}

/// A built control plane, bound to its port, workers running.
#[derive(Debug)]
pub struct App {
    /// Bound listener.
    listener: tokio::net::TcpListener,
    /// The routes.
    router: axum::Router,
    /// Clusters of the embedded default, stopped last.
    clusters: Vec<LocalCluster>,
    /// Shared state (tests use it to reach the catalog and the engine).
    state: AppState,
    /// Admin token generated at startup when none was configured (shown once).
    generated_admin_token: Option<String>,
    /// Stop signal for `run_until_stopped`.
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
    /// Header and request deadlines of the socket.
    serve_options: ServeOptions,
    /// Time given to requests and workflow steps to finish once shutdown begins.
    grace: Duration,
    /// The embedded default's data directory, when it keeps its data.
    data_dir: Option<PathBuf>,
    /// The generated admin token of an earlier start is still the valid one (its digest
    /// is in the data directory).
    admin_token_kept: bool,
}

impl App {
    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Data directories of the embedded default's private clusters (empty with a
    /// database URL); operators and tests use them to find the PostgreSQL processes.
    pub fn cluster_data_dirs(&self) -> Vec<PathBuf> {
        self.clusters.iter().map(|c| c.data_dir.clone()).collect()
    }

    /// The admin token generated at startup, if none was configured.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// The embedded default's data directory, when its data is kept across restarts
    /// (`None`: temporary directories, deleted on exit).
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Whether the admin token is the one generated at an earlier start (kept in the data
    /// directory as a digest; it is not shown again).
    pub fn admin_token_kept(&self) -> bool {
        self.admin_token_kept
    }

    /// A handle that stops `run_until_stopped` when sent `true` (as SIGTERM does).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.0.clone()
    }

    /// Serves until SIGTERM, SIGINT (Ctrl-C) or the stopper. Then: `/readyz` answers 503,
    /// the listener closes, requests in flight and workflow steps under way finish (up to
    /// the grace period; a second signal cuts it short), the workers stop and the
    /// embedded clusters stop (fast shutdown: consistent on disk; a temporary one is
    /// removed).
    pub async fn run_until_stopped(self) -> Result<()> {
        let App {
            listener,
            router,
            clusters,
            state,
            stop,
            serve_options,
            grace,
            ..
        } = self;
        let mut signals = Signals::new();
        let (fired_tx, fired_rx) = watch::channel(false);
        let mut stop_rx = stop.1.clone();
        let draining = state.clone();
        let shutdown = async move {
            let why = tokio::select! {
                s = signals.next() => s,
                _ = stop_rx.wait_for(|s| *s) => "stop requested",
            };
            tracing::info!(
                signal = why,
                grace_secs = grace.as_secs(),
                "shutting down: finishing requests in flight and workflow steps under way"
            );
            draining.health().set_draining();
            let _ = fired_tx.send(true);
        };
        let server = crate::server::serve(listener, router, serve_options, shutdown);
        let mut workers_rx = fired_rx.clone();
        let workers_state = state.clone();
        let workers = async move {
            let _ = workers_rx.wait_for(|f| *f).await;
            if let Some(w) = workers_state.health().take_workers() {
                w.stop().await;
            }
            if let Some(t) = workers_state.take_audit_task() {
                t.stop().await;
            }
            workers_state.stop_rules_task();
        };
        let drained = async move {
            let (served, ()) = tokio::join!(server, workers);
            served
        };
        let mut deadline_rx = fired_rx;
        let deadline = async move {
            let _ = deadline_rx.wait_for(|f| *f).await;
            let mut again = Signals::new();
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                s = again.next() => tracing::warn!(signal = s, "second signal: not waiting any longer"),
            }
        };
        let outcome = tokio::select! {
            r = drained => Some(r),
            _ = deadline => None,
        };
        let result = match outcome {
            Some(r) => r.context("serving the control-plane API"),
            None => {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "shutdown cut short: requests and workflow steps still running were cut \
                     (an interrupted step is retried by the next start)"
                );
                Ok(())
            }
        };
        for c in clusters {
            c.stop.stop().await;
        }
        tracing::info!("stopped");
        result
    }
}

/// SIGTERM (what Kubernetes and systemd send) and SIGINT (Ctrl-C).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Self {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| tracing::warn!(error = %e, "cannot handle SIGTERM"))
            .ok();
        Signals { term }
    }

    /// The next SIGTERM or SIGINT, by name.
    async fn next(&mut self) -> &'static str {
        let term = async {
            match &mut self.term {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => "SIGTERM",
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => "SIGINT",
                // No SIGINT handler could be installed: only SIGTERM and the stopper.
                Err(_) => std::future::pending().await,
            },
        }
    }
}

/// Builds the control plane on the catalog database of `config.database_url`: catalog
/// (migrated), provisioning engine and workers, routes, listener. Refuses a
/// configuration without a database URL (the embedded default is [`build_local`]).
pub async fn build(config: ControlConfig) -> Result<App> {
    if config.database_url.is_none() {
        anyhow::bail!(
            "no database_url (or DATABASE_URL) is configured: the control plane needs a catalog \
             database (`tenancy serve` built with the `embedded` feature starts private clusters \
             instead)"
        );
    }
    build_on(config, Vec::new()).await
}

/// Builds the control plane on clusters started for it, one per region in
/// `config.regions` (the embedded default): bootstraps each, keeps the catalog in the
/// first, registers them all. The clusters are stopped when the app stops (or when this
/// fails). `config.database_url` must be unset.
pub async fn build_local(config: ControlConfig, clusters: Vec<LocalCluster>) -> Result<App> {
    if config.database_url.is_some() {
        stop_all(clusters).await;
        anyhow::bail!("database_url is set: the control plane does not use local clusters with it");
    }
    build_on(config, clusters).await
}

async fn stop_all(clusters: Vec<LocalCluster>) {
    for c in clusters {
        c.stop.stop().await;
    }
}

async fn build_on(config: ControlConfig, clusters: Vec<LocalCluster>) -> Result<App> {
    // Built in a helper that borrows the clusters, so a failure stops them too.
    match build_with(&config, &clusters).await {
        Ok(parts) => Ok(parts.into_app(config, clusters)),
        Err(e) => {
            stop_all(clusters).await;
            Err(e)
        }
    }
}

/// What [`build_with`] makes before the clusters join it.
struct Parts {
    listener: tokio::net::TcpListener,
    state: AppState,
    generated_admin_token: Option<String>,
    admin_token_kept: bool,
}

impl Parts {
    fn into_app(self, config: ControlConfig, clusters: Vec<LocalCluster>) -> App {
        App {
            listener: self.listener,
            router: router(self.state.clone()),
            clusters,
            state: self.state,
            generated_admin_token: self.generated_admin_token,
            stop: watch::channel(false),
            serve_options: ServeOptions::from_limits(&config.limits),
            grace: Duration::from_secs(config.shutdown_grace_secs),
            data_dir: config.data_dir.clone(),
            admin_token_kept: self.admin_token_kept,
        }
    }
}

async fn build_with(config: &ControlConfig, clusters: &[LocalCluster]) -> Result<Parts> {
    let catalog::Catalog {
        cfg: catalog_cfg,
        access,
        key,
    } = catalog::prepare(config, clusters).await?;
    let app_migrations = match &config.app_migrations_dir {
        Some(dir) => AppMigrations::from_dir(dir)?,
        None => AppMigrations::generated(config.generated_app_tables),
    };
    let receivers = |rs: &[crate::config::ReceiverConfig]| -> Vec<Receiver> {
        rs.iter()
            .map(|r| Receiver {
                name: r.name.clone(),
                url: r.url.clone(),
                secret: r.secret.clone(),
            })
            .collect()
    };
    let audit_access = access.clone();
    // Platform administrators manage a tenant's roles and grants in that tenant's own
    // transactions, as the runtime role under its signed context (row-level security
    // bounds every statement to it), like the application does.
    let tenant_router = tenancy_sdk::Router::new(
        catalog_cfg.clone(),
        key.clone(),
        tenancy_sdk::ClusterCredentials {
            user: access.runtime.user.clone(),
            password: access
                .runtime
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
        },
        tenancy_sdk::RouterOptions {
            cluster_tls: access.tls.clone(),
            ..Default::default()
        },
    )
    .context("building the tenant router of the access API")?;
    let tenant_access = crate::api::access::TenantAccess::new(
        tenant_router,
        config.access.build().map_err(anyhow::Error::msg)?,
    );
    let report_sources = crate::report::Sources {
        context_key: Some(key.clone()),
        key_dir: config.report.key_dir.clone(),
    };
    let provisioner = Provisioner::new(
        catalog_cfg.clone(),
        access,
        key,
        ProvisionConfig {
            app_migrations,
            plans: config.plans.clone(),
            registration_receivers: receivers(&config.registration_receivers),
            event_receivers: receivers(&config.event_receivers),
            retention: Duration::from_secs(config.retention_days * 24 * 3600),
            ..Default::default()
        },
    )?;
    let mut digests = config
        .admin_token_sha256
        .iter()
        .map(|d| auth::parse_digest(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let mut admin_token_kept = false;
    let generated_admin_token = if digests.is_empty() {
        let kept = match &config.data_dir {
            Some(dir) => kept_admin_digest(dir)?,
            None => None,
        };
        match kept {
            Some(d) => {
                digests.push(d);
                admin_token_kept = true;
                None
            }
            None => {
                let token = hex::encode(rand::random::<[u8; 24]>());
                let digest = auth::token_digest(&token);
                if let Some(dir) = &config.data_dir {
                    write_private(&dir.join(ADMIN_DIGEST_FILE), &hex::encode(digest))?;
                }
                digests.push(digest);
                Some(token)
            }
        }
    } else {
        None
    };
    // The configuration service: writes through its store (the catalog's owner login,
    // like the rest of the control plane), reads from a snapshot that LISTEN/NOTIFY keeps
    // fresh (the evaluation endpoint answers from it) as the configuration reader, which
    // may read the configuration and nothing else. The owner's password is never sent
    // for it.
    let resolver: Arc<dyn TxtResolver> = match SystemResolver::from_system() {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::warn!(error = %e, "no system DNS: custom-domain verification will fail");
            Arc::new(UnavailableResolver::new(e.to_string()))
        }
    };
    let mut reader_cfg = catalog_cfg.clone();
    reader_cfg
        .pg_mut()
        .user(bootstrap::CONFIG_READER_ROLE)
        .password(
            config
                .config_reader_password
                .as_ref()
                .map(|p| p.expose_secret().as_bytes().to_vec())
                .unwrap_or_default(),
        );
    // Configuration writes are checked against the rules; their warnings go to the
    // rules' task (started below) as they come.
    let (warn_tx, warn_rx) = crate::rules::warnings_channel();
    let sink: tenancy_config_service::rules::FindingSink = Arc::new(move |f: &[_]| {
        let _ = warn_tx.send(f.to_vec());
    });
    let config_state = ConfigState {
        store: tenancy_config_service::Store::new(catalog_cfg.clone(), 4)
            .context("creating the configuration store")?
            .with_rules(Some(tenancy_config_service::rules::RuleCheck {
                config: Arc::new(config.insights.rules.clone()),
                sink: Some(sink),
            })),
        client: ConfigClient::connect(reader_cfg, ClientOptions::default())
            .await
            .context("starting the configuration client (snapshot and LISTEN) as tenancy_config_reader (config_reader_password)")?,
        resolver,
    };
    let sealer = crate::audit::sealer::Sealer::new(
        catalog_cfg.clone(),
        audit_access,
        crate::audit::signing_key(config)?,
        config.audit.clone(),
        config
            .event_receivers
            .iter()
            .map(|r| crate::audit::sealer::CheckpointReceiver {
                name: r.name.clone(),
                url: r.url.clone(),
            })
            .collect(),
    );
    let pool = tenancy_provision::pg_pool(catalog_cfg, 8)?;
    let state = AppState::new(
        pool,
        provisioner.clone(),
        digests,
        config.stripe_webhook_secret.clone(),
        config.signup.clone(),
    )
    .with_config(config_state)
    .with_audit(sealer.clone())
    .with_tenant_access(tenant_access)
    .with_report_sources(report_sources)
    .with_limits(&config.limits)
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let workers = provisioner.spawn_workers(config.workers);
    state.health().set_workers(workers, config.workers);
    state.set_audit_task(sealer.spawn());
    state.set_rules_task(Some(crate::rules::spawn(
        state.clone(),
        config.insights.rules.clone(),
        warn_rx,
    )));
    tracing::info!(
        workers = config.workers,
        listen = %config.listen,
        data_dir = config.data_dir.as_ref().map(|d| d.display().to_string()),
        "control plane built; provisioning workers started"
    );
    Ok(Parts {
        listener,
        state,
        generated_admin_token,
        admin_token_kept,
    })
}

/// File of the data directory holding the SHA-256 digest (hex) of the generated admin
/// token; the token itself is shown once and never stored.
const ADMIN_DIGEST_FILE: &str = "admin-token.sha256";

/// The admin token digest kept in `dir` by an earlier start, if any.
fn kept_admin_digest(dir: &std::path::Path) -> Result<Option<[u8; 32]>> {
    let path = dir.join(ADMIN_DIGEST_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => auth::parse_digest(&format!("sha256:{}", text.trim()))
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `text` to a new file readable and writable by its owner only.
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
