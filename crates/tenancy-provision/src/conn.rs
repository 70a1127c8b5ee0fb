//! Connections to tenant clusters, pooled per (cluster, database, role).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::ClusterRecord;
use tenancy_conn::{PgConfig, Tls};
use tokio_postgres::Client;

use crate::Error;

/// A login on tenant clusters (the catalog stores where clusters are, never how to log in).
#[derive(Debug, Clone)]
pub struct Login {
    /// Role name.
    pub user: String,
    /// Password, when the cluster asks for one.
    pub password: Option<SecretString>,
}

impl Login {
    /// A login without password (Unix socket peer/trust authentication).
    pub fn trusted(user: &str) -> Self {
        Login {
            user: user.to_owned(),
            password: None,
        }
    }
}

/// The logins provisioning uses on every cluster.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// A superuser (or CREATEDB + CREATEROLE role): creates and drops dedicated databases
    /// and sets database privileges.
    pub admin: Login,
    /// The owner role: creates tenant schemas and runs the app's migrations.
    pub owner: Login,
    /// The runtime role: only to purge a deleted pooled tenant's rows, through its context.
    pub runtime: Login,
    /// How connections to every cluster are secured (`sslmode`, `sslrootcert`, client
    /// certificate): the catalog says where a cluster is, this says how to trust it.
    pub tls: Tls,
}

impl ClusterAccess {
    /// The usual logins on a private cluster: `postgres`, `tenancy_owner`, `tenancy_app`.
    pub fn local(superuser: &str) -> Self {
        ClusterAccess {
            admin: Login::trusted(superuser),
            owner: Login::trusted(tenancy_sdk::bootstrap::OWNER_ROLE),
            runtime: Login::trusted(tenancy_sdk::bootstrap::RUNTIME_ROLE),
            tls: Tls::default(),
        }
    }
}

/// Connection settings for `login` on database `dbname` of `cluster`, secured with `tls`.
pub fn config_for(cluster: &ClusterRecord, login: &Login, dbname: &str, tls: &Tls) -> PgConfig {
    let mut cfg = tokio_postgres::Config::new();
    if cluster.host.starts_with('/') {
        cfg.host_path(&cluster.host);
    } else {
        cfg.host(&cluster.host);
    }
    cfg.port(cluster.port)
        .dbname(dbname)
        .user(&login.user)
        .application_name("tenancy-provision")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = &login.password {
        cfg.password(p.expose_secret());
    }
    PgConfig::with_tls(cfg, tls)
}

/// Opens one connection and drives it on the current runtime.
pub(crate) async fn connect(cfg: &PgConfig) -> Result<Client, Error> {
    let (client, conn) = cfg.connect_raw().await.map_err(|e| Error::Connect {
        what: format!(
            "database {:?} as {:?}",
            cfg.pg().get_dbname().unwrap_or(""),
            cfg.pg().get_user().unwrap_or("")
        ),
        detail: tenancy_conn::error_text(&e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "provisioning connection closed");
        }
    });
    Ok(client)
}

/// Creates plain connections for a pool (tenancy-conn's, shared by every component).
pub type Manager = tenancy_conn::PlainManager;
/// A pool of plain connections (catalog, tenant clusters).
pub type Pool = tenancy_conn::PlainPool;
/// A connection taken from a [`Pool`].
pub type Object = tenancy_conn::PlainConn;

/// Builds a pool of at most `max_size` connections made with `cfg`.
pub fn pg_pool(cfg: impl Into<PgConfig>, max_size: usize) -> Result<Pool, Error> {
    tenancy_conn::plain_pool(cfg, max_size, Duration::from_secs(30))
        .map_err(|e| Error::Config(e.to_string()))
}

/// Pools by (host, port, database, user).
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<(String, u16, String, String), Pool>>,
}

impl Pools {
    pub(crate) async fn get(
        &self,
        cluster: &ClusterRecord,
        login: &Login,
        dbname: &str,
        tls: &Tls,
    ) -> Result<Object, Error> {
        let key = (
            cluster.host.clone(),
            cluster.port,
            dbname.to_owned(),
            login.user.clone(),
        );
        let pool = {
            let mut m = self
                .pools
                .lock()
                .map_err(|_| Error::Config("connection pool map poisoned".into()))?;
            match m.get(&key) {
                Some(p) => p.clone(),
                None => {
                    let p = pg_pool(config_for(cluster, login, dbname, tls), 8)?;
                    m.insert(key, p.clone());
                    p
                }
            }
        };
        pool.get().await.map_err(|e| Error::Connect {
            what: format!("database {dbname:?} as {:?}", login.user),
            detail: tenancy_conn::error_text(&e),
        })
    }
}
