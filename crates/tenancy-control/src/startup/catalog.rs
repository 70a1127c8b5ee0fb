//! The catalog a control plane starts on: where it is (a database URL, or the local
//! clusters started for it, bootstrapped here), the context key and cluster logins that go
//! with it, and the catalog itself checked, migrated and given the declared regions and
//! clusters.

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::{ClusterLocation, NewCluster};
use tenancy_conn::PgConfig;
use tenancy_core::{ContextKey, KeyId};
use tenancy_provision::{ClusterAccess, Login};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE};

use super::{write_private, LocalCluster};
use crate::ControlConfig;

/// The catalog database the control plane runs on, and what reaching tenant clusters
/// takes.
pub(super) struct Catalog {
    /// Connection settings of the catalog database, as the owner role.
    pub(super) cfg: PgConfig,
    /// Logins on tenant clusters, and how their connections are secured.
    pub(super) access: ClusterAccess,
    /// The key of the signed tenant context.
    pub(super) key: ContextKey,
}

/// Finds the catalog (the database URL, or the first local cluster once every one is
/// bootstrapped), checks that it is set up and migrates it, and registers the local
/// clusters or the regions and clusters the configuration declares.
pub(super) async fn prepare(config: &ControlConfig, clusters: &[LocalCluster]) -> Result<Catalog> {
    let kid: KeyId = config
        .context_key_id
        .parse()
        .context("parsing context_key_id")?;
    let (cfg, access, key) = match &config.database_url {
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
            let key = match &config.data_dir {
                Some(dir) => kept_context_key(dir, kid)?,
                None => ContextKey::from_bytes(kid, rand::random()),
            };
            let mut catalog = None;
            for cluster in clusters {
                let cfg = bootstrap_local(cluster, &key).await?;
                catalog.get_or_insert(cfg);
            }
            let catalog = catalog.context("no region configured")?;
            let access = ClusterAccess::local(&clusters[0].superuser);
            (catalog, access, key)
        }
    };
    let mut owner = if config.database_url.is_some() {
        connect_catalog(&cfg).await?
    } else {
        tenancy_conn::connect(&cfg)
            .await
            .context("connecting to the catalog")?
    };
    let context = bootstrap::describe_context_impl(&owner).await?;
    tracing::info!(context = %context, "tenant context of the catalog database");
    if tenancy_conn::native_required() && !context.starts_with("native") {
        anyhow::bail!(
            "TENANCY_REQUIRE_NATIVE=1, but the catalog database's tenant context is {context}"
        );
    }
    tenancy_catalog::migrate(&mut owner)
        .await
        .context("migrating the catalog")?;
    for cluster in clusters {
        let region = &cluster.region;
        let id = region.parse().context("parsing a region")?;
        let name = config.region_names.get(region).unwrap_or(region);
        tenancy_catalog::add_region(&owner, &id, name).await?;
        tenancy_catalog::add_cluster(
            &owner,
            &NewCluster {
                name: format!("local-{region}"),
                region: id,
                location: ClusterLocation {
                    host: cluster.socket_dir.display().to_string(),
                    port: cluster.port,
                    dbname: "tenancy".into(),
                },
                capacity: 10_000,
            },
        )
        .await?;
    }
    if config.database_url.is_some() {
        register_declared(&owner, config).await?;
    }
    Ok(Catalog { cfg, access, key })
}

/// File of the data directory holding the context key (hex), readable by its owner only.
const CONTEXT_KEY_FILE: &str = "context-key";

/// The context key kept in `dir` (made and written there at the first start). The
/// clusters' runtime functions hold the same key, so it must survive with them.
fn kept_context_key(dir: &std::path::Path, kid: KeyId) -> Result<ContextKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(CONTEXT_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(hex) => ContextKey::from_hex(kid, hex.trim())
            .with_context(|| format!("reading the context key in {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes: [u8; 32] = rand::random();
            write_private(&path, &hex::encode(bytes))?;
            Ok(ContextKey::from_bytes(kid, bytes))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Bootstraps a local cluster (roles, the `tenancy` database, the signed context with
/// `key`) and returns the catalog's connection settings on it.
async fn bootstrap_local(cluster: &LocalCluster, key: &ContextKey) -> Result<PgConfig> {
    let what = |step: &str| format!("{step} on the local cluster of region {}", cluster.region);
    let su = tenancy_conn::connect(&cluster.config_as(&cluster.superuser, "postgres"))
        .await
        .with_context(|| what("connecting as superuser"))?;
    bootstrap::bootstrap_cluster(&su).await?;
    // Already there on a kept data directory.
    let _ = su.batch_execute("CREATE DATABASE tenancy").await;
    let su = tenancy_conn::connect(&cluster.config_as(&cluster.superuser, "tenancy"))
        .await
        .with_context(|| what("connecting to database tenancy as superuser"))?;
    bootstrap::bootstrap_database(&su, "tenancy").await?;
    let catalog = cluster.config_as(OWNER_ROLE, "tenancy");
    let owner = tenancy_conn::connect(&catalog)
        .await
        .with_context(|| what("connecting as the owner role"))?;
    bootstrap::install_runtime(&owner, key).await?;
    Ok(catalog)
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
                location: ClusterLocation { host, port, dbname },
                capacity: c.capacity,
            },
        )
        .await
        .with_context(|| format!("registering cluster {}", c.name))?;
        let pooler = c.pooler().map_err(anyhow::Error::msg)?;
        tenancy_catalog::set_cluster_pooler(owner, &c.name, pooler)
            .await
            .with_context(|| format!("registering the pooler address of cluster {}", c.name))?;
    }
    Ok(())
}

fn login(user: &str, password: &Option<SecretString>) -> Login {
    Login {
        user: user.to_owned(),
        password: password.clone(),
    }
}
