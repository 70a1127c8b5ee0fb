//! Startup as a library API: `build(config) -> App`, `app.port()`,
//! `app.run_until_stopped()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::NewCluster;
use tenancy_config::dns::{SystemResolver, TxtResolver, UnavailableResolver};
use tenancy_config::{ClientOptions, ConfigClient, ConfigState};
use tenancy_conn::PgConfig;
use tenancy_core::{ContextKey, KeyId};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_provision::{
    AppMigrations, ClusterAccess, Login, ProvisionConfig, Provisioner, Receiver, Workers,
};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE};
use tokio::sync::watch;

use crate::server::ServeOptions;
use crate::{auth, router, AppState, ControlConfig};

/// A built control plane, bound to its port, workers running.
#[derive(Debug)]
pub struct App {
    /// Bound listener.
    listener: tokio::net::TcpListener,
    /// The routes.
    router: axum::Router,
    /// Provisioning workers, stopped after the server.
    workers: Workers,
    /// Private clusters of the embedded default, stopped last.
    clusters: Vec<Cluster>,
    /// Shared state (tests use it to reach the catalog and the engine).
    state: AppState,
    /// Admin token generated at startup when none was configured (shown once).
    generated_admin_token: Option<String>,
    /// Stop signal for `run_until_stopped`.
    stop: (watch::Sender<bool>, watch::Receiver<bool>),
    /// Header and request deadlines of the socket.
    serve_options: ServeOptions,
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
        self.clusters
            .iter()
            .map(|c| c.data_dir().to_path_buf())
            .collect()
    }

    /// The admin token generated at startup, if none was configured.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// A handle that stops `run_until_stopped` when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.0.clone()
    }

    /// Serves until Ctrl-C (or the stopper), then stops the workers and the clusters.
    pub async fn run_until_stopped(self) -> Result<()> {
        let mut rx = self.stop.1.clone();
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = rx.wait_for(|s| *s) => {}
            }
        };
        crate::server::serve(self.listener, self.router, self.serve_options, shutdown)
            .await
            .context("serving the control-plane API")?;
        self.workers.stop().await;
        for c in self.clusters {
            c.stop().await;
        }
        Ok(())
    }
}

/// The command that sets the server up, for messages.
fn bootstrap_hint(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "HOST".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().unwrap_or("DB");
    format!(
        "run `tenancy bootstrap --database-url 'host={host} port={port} dbname={db} user=ADMIN'` \
         as a superuser or a role with CREATEROLE that owns the database, then start again"
    )
}

/// A failed catalog connection, explained when it means the server was not set up.
fn not_bootstrapped_on_connect(e: tenancy_conn::ConnError, cfg: &PgConfig) -> anyhow::Error {
    use tokio_postgres::error::SqlState;
    let code = match &e {
        tenancy_conn::ConnError::Pg { source, .. } => source.code().cloned(),
        _ => None,
    };
    let cfg = cfg.pg();
    let user = cfg.get_user().unwrap_or(OWNER_ROLE);
    match code {
        Some(c) if c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => anyhow::anyhow!(
            "the catalog server is not set up for tenancy: role {user} cannot log in ({e}); {}",
            bootstrap_hint(cfg)
        ),
        Some(c) if c == SqlState::INVALID_CATALOG_NAME => anyhow::anyhow!(
            "the catalog database does not exist ({e}): create it (CREATE DATABASE … OWNER <admin>) and {}",
            bootstrap_hint(cfg)
        ),
        _ if matches!(e, tenancy_conn::ConnError::Pooler { .. }) => anyhow::Error::new(e),
        _ => anyhow::Error::new(e).context("connecting to the catalog database"),
    }
}

/// Connects to the catalog database of a server tenancy did not start (`tenancy serve`
/// and `tenancy migrate` with a database URL). Refuses a server `tenancy bootstrap` has
/// not set up, naming what is missing and the command to run, and a URL that does not
/// log in as the owner role.
///
/// A connection pooler in front of the catalog (PgBouncer in transaction mode hands each
/// transaction another backend, and keeps neither LISTEN nor prepared statements) is
/// refused with the fix: a URL that reaches PostgreSQL directly.
pub async fn connect_catalog(cfg: &PgConfig) -> Result<tokio_postgres::Client> {
    let client =
        tenancy_conn::connect_session(cfg, "the control plane (tenancy serve, tenancy migrate)")
            .await
            .map_err(|e| not_bootstrapped_on_connect(e, cfg))?;
    check_bootstrapped(&client, cfg.pg()).await?;
    Ok(client)
}

async fn check_bootstrapped(
    client: &tokio_postgres::Client,
    cfg: &tokio_postgres::Config,
) -> Result<()> {
    if let Some(what) = bootstrap::server::missing(client)
        .await
        .context("checking the catalog server")?
    {
        anyhow::bail!(
            "the catalog server is not set up for tenancy (missing: {what}); {}",
            bootstrap_hint(cfg)
        );
    }
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .context("reading the catalog login")?
        .get(0);
    if user != OWNER_ROLE {
        anyhow::bail!(
            "the catalog database URL logs in as {user}; tenancy serve must log in as {OWNER_ROLE} \
             (the catalog is the owner role's): set DATABASE_URL to the connection string `tenancy \
             bootstrap` printed (user={OWNER_ROLE}) and TENANCY_OWNER_PASSWORD"
        );
    }
    Ok(())
}

/// Registers the regions and clusters the configuration declares (idempotent: created,
/// or their names, connection info and capacity updated).
async fn register_declared(owner: &tokio_postgres::Client, config: &ControlConfig) -> Result<()> {
    // Refused before anything is written: a declared cluster registered in another region.
    let registered = tenancy_catalog::list_clusters(owner)
        .await
        .context("listing the registered clusters")?;
    for c in &config.clusters {
        if let Some(r) = registered
            .iter()
            .find(|r| r.name == c.name && r.region != c.region)
        {
            anyhow::bail!(
                "cluster {} is registered in region {}, the configuration puts it in {}: a cluster cannot \
                 move to another region (its tenants are pinned there); declare a new cluster instead",
                c.name,
                r.region,
                c.region
            );
        }
    }
    // A cluster's region without a display name in the configuration is created with its
    // id as name, and keeps the name it has when it exists.
    let existing: std::collections::BTreeSet<String> = tenancy_catalog::list_regions(owner)
        .await
        .context("listing the registered regions")?
        .into_iter()
        .map(|r| r.id.as_str().to_owned())
        .collect();
    let mut regions: std::collections::BTreeMap<String, String> = config
        .clusters
        .iter()
        .filter(|c| !existing.contains(c.region.as_str()))
        .map(|c| (c.region.as_str().to_owned(), c.region.as_str().to_owned()))
        .collect();
    for (id, name) in &config.region_names {
        regions.insert(id.clone(), name.clone());
    }
    for (id, name) in &regions {
        let rid: tenancy_core::RegionId = id
            .parse()
            .with_context(|| format!("parsing region {id:?}"))?;
        tenancy_catalog::add_region(owner, &rid, name)
            .await
            .with_context(|| format!("registering region {id}"))?;
    }
    for c in &config.clusters {
        let (host, port, dbname) = c.endpoint().map_err(anyhow::Error::msg)?;
        tenancy_catalog::add_cluster(
            owner,
            &NewCluster {
                name: c.name.clone(),
                region: c.region.clone(),
                host,
                port,
                dbname,
                capacity: c.capacity,
            },
        )
        .await
        .with_context(|| format!("registering cluster {}", c.name))?;
    }
    Ok(())
}

fn login(user: &str, password: &Option<SecretString>) -> Login {
    Login {
        user: user.to_owned(),
        password: password.clone(),
    }
}

/// Builds the control plane: catalog (migrated), provisioning engine and workers, routes,
/// listener. Without `database_url`, starts one private cluster per configured region,
/// bootstraps it and registers it.
pub async fn build(config: ControlConfig) -> Result<App> {
    let kid: KeyId = config
        .context_key_id
        .parse()
        .context("parsing context_key_id")?;
    let mut clusters = Vec::new();
    let (catalog_cfg, access, key) = match &config.database_url {
        Some(url) => {
            let mut cfg =
                PgConfig::parse(url.expose_secret()).context("parsing the catalog database URL")?;
            // The catalog is the owner role's: a URL without user logs in as it, and one
            // without password takes owner_password (what `tenancy bootstrap` prints).
            if cfg.pg().get_user().is_none() {
                cfg.pg_mut().user(OWNER_ROLE);
            }
            if cfg.pg().get_password().is_none() && cfg.pg().get_user() == Some(OWNER_ROLE) {
                if let Some(p) = &config.owner_password {
                    cfg.pg_mut().password(p.expose_secret().as_bytes());
                }
            }
            let hex = config.context_key_hex.as_ref().context(
                "context_key_hex (or TENANCY_CONTEXT_KEY_HEX) is required with a database URL",
            )?;
            let key = ContextKey::from_hex(kid, hex.expose_secret())
                .context("parsing the context key")?;
            let access = ClusterAccess {
                admin: login(&config.cluster_admin_user, &config.cluster_admin_password),
                owner: login(OWNER_ROLE, &config.owner_password),
                runtime: login(bootstrap::RUNTIME_ROLE, &config.runtime_password),
                // Tenant clusters are trusted as the catalog's URL says (same sslmode, CA
                // and client certificate); the catalog stores only where they are.
                tls: cfg.tls().clone(),
            };
            (cfg, access, key)
        }
        None => {
            let key = ContextKey::from_bytes(kid, rand::random());
            let mut catalog = None;
            for region in &config.regions {
                let cluster = Cluster::start(ClusterOptions::default())
                    .await
                    .with_context(|| format!("starting the private cluster of region {region}"))?;
                let su = cluster.connect("postgres").await?;
                bootstrap::bootstrap_cluster(&su).await?;
                let _ = su.batch_execute("CREATE DATABASE tenancy").await;
                let su = cluster.connect("tenancy").await?;
                bootstrap::bootstrap_database(&su, "tenancy").await?;
                let owner =
                    tenancy_conn::connect(&cluster.config_as(OWNER_ROLE, "tenancy").into()).await?;
                bootstrap::install_runtime(&owner, &key).await?;
                if catalog.is_none() {
                    catalog = Some(PgConfig::from(cluster.config_as(OWNER_ROLE, "tenancy")));
                }
                clusters.push((region.clone(), cluster));
            }
            let catalog = catalog.context("no region configured")?;
            let access = ClusterAccess::local(clusters[0].1.superuser());
            (catalog, access, key)
        }
    };
    let mut owner = if config.database_url.is_some() {
        connect_catalog(&catalog_cfg).await?
    } else {
        tenancy_conn::connect(&catalog_cfg)
            .await
            .context("connecting to the catalog")?
    };
    let context = bootstrap::describe_context_impl(&owner).await?;
    tracing::info!(context = %context, "tenant context of the catalog database");
    if tenancy_pg::native_required() && !context.starts_with("native") {
        anyhow::bail!(
            "TENANCY_REQUIRE_NATIVE=1, but the catalog database's tenant context is {context}"
        );
    }
    tenancy_catalog::migrate(&mut owner)
        .await
        .context("migrating the catalog")?;
    for (region, cluster) in &clusters {
        let id = region.parse().context("parsing a region")?;
        let name = config.region_names.get(region).unwrap_or(region);
        tenancy_catalog::add_region(&owner, &id, name).await?;
        tenancy_catalog::add_cluster(
            &owner,
            &NewCluster {
                name: format!("local-{region}"),
                region: id,
                host: cluster.socket_dir().display().to_string(),
                port: cluster.port(),
                dbname: "tenancy".into(),
                capacity: 10_000,
            },
        )
        .await?;
    }
    if config.database_url.is_some() {
        register_declared(&owner, &config).await?;
    }
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
    let generated_admin_token = if digests.is_empty() {
        let token = hex::encode(rand::random::<[u8; 24]>());
        digests.push(auth::token_digest(&token));
        Some(token)
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
    let config_state = ConfigState {
        store: tenancy_config::Store::new(catalog_cfg.clone(), 4)
            .context("creating the configuration store")?,
        client: ConfigClient::connect(reader_cfg, ClientOptions::default())
            .await
            .context("starting the configuration client (snapshot and LISTEN) as tenancy_config_reader (config_reader_password)")?,
        resolver,
    };
    let pool = tenancy_provision::pg_pool(catalog_cfg, 8)?;
    let state = AppState::new(
        pool,
        provisioner.clone(),
        digests,
        config.stripe_webhook_secret.clone(),
        config.signup.clone(),
    )
    .with_config(config_state)
    .with_limits(&config.limits)
    .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let workers = provisioner.spawn_workers(config.workers);
    Ok(App {
        listener,
        router: router(state.clone()),
        workers,
        clusters: clusters.into_iter().map(|(_, c)| c).collect(),
        state,
        generated_admin_token,
        stop: watch::channel(false),
        serve_options: ServeOptions::from_limits(&config.limits),
    })
}
