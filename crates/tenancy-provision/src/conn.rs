//! Connections to tenant clusters, pooled per (cluster, database, role).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::ClusterRecord;
use tokio_postgres::{Client, NoTls};

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
}

impl ClusterAccess {
    /// The usual logins on a private cluster: `postgres`, `tenancy_owner`, `tenancy_app`.
    pub fn local(superuser: &str) -> Self {
        ClusterAccess {
            admin: Login::trusted(superuser),
            owner: Login::trusted(tenancy_sdk::bootstrap::OWNER_ROLE),
            runtime: Login::trusted(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        }
    }
}

/// Connection settings for `login` on database `dbname` of `cluster`.
pub fn config_for(cluster: &ClusterRecord, login: &Login, dbname: &str) -> tokio_postgres::Config {
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
    cfg
}

/// Opens one connection and drives it on the current runtime.
pub(crate) async fn connect(cfg: &tokio_postgres::Config) -> Result<Client, Error> {
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| Error::Connect {
        what: format!(
            "database {:?} as {:?}",
            cfg.get_dbname().unwrap_or(""),
            cfg.get_user().unwrap_or("")
        ),
        detail: e.to_string(),
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "provisioning connection closed");
        }
    });
    Ok(client)
}

/// Creates plain `tokio_postgres` connections for a deadpool pool.
#[derive(Debug)]
pub struct Manager {
    cfg: tokio_postgres::Config,
}

impl Manager {
    /// A manager connecting with `cfg`.
    pub fn new(cfg: tokio_postgres::Config) -> Self {
        Manager { cfg }
    }
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = Error;

    async fn create(&self) -> Result<Client, Error> {
        connect(&self.cfg).await
    }

    async fn recycle(&self, c: &mut Client, _: &Metrics) -> RecycleResult<Error> {
        if c.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// A pool of plain connections (catalog, tenant clusters).
pub type Pool = managed::Pool<Manager>;
/// A connection taken from a [`Pool`].
pub type Object = managed::Object<Manager>;

/// Builds a pool of at most `max_size` connections made with `cfg`.
pub fn pg_pool(cfg: tokio_postgres::Config, max_size: usize) -> Result<Pool, Error> {
    Pool::builder(Manager::new(cfg))
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(10)))
        .wait_timeout(Some(Duration::from_secs(30)))
        .build()
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
                    let p = Pool::builder(Manager {
                        cfg: config_for(cluster, login, dbname),
                    })
                    .max_size(8)
                    .runtime(deadpool::Runtime::Tokio1)
                    .create_timeout(Some(Duration::from_secs(10)))
                    .wait_timeout(Some(Duration::from_secs(30)))
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?;
                    m.insert(key, p.clone());
                    p
                }
            }
        };
        pool.get().await.map_err(|e| Error::Connect {
            what: format!("database {dbname:?} as {:?}", login.user),
            detail: e.to_string(),
        })
    }
}
