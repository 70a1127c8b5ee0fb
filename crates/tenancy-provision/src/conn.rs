//! Connections to tenant clusters, pooled per (cluster, database, role).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tenancy_catalog::ClusterRecord;
use tenancy_conn::{PgConfig, Tls};
use tokio_postgres::Client;

pub use tenancy_sdk::{config_for, ClusterAccess, Login};

use crate::Error;

/// Opens one connection and drives it on the current runtime.
pub(crate) async fn connect(cfg: &PgConfig) -> Result<Client, Error> {
    let (client, conn) = cfg.connect_raw().await.map_err(|e| {
        Error::Db(tenancy_conn::DbError::Connect {
            what: format!(
                "database {:?} as {:?}",
                cfg.pg().get_dbname().unwrap_or(""),
                cfg.pg().get_user().unwrap_or("")
            ),
            detail: tenancy_conn::error_text(&e),
        })
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
        pool.get().await.map_err(|e| {
            Error::Db(tenancy_conn::DbError::Connect {
                what: format!("database {dbname:?} as {:?}", login.user),
                detail: tenancy_conn::error_text(&e),
            })
        })
    }
}
