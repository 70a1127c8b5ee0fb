//! How tenancy's control plane logs in to tenant clusters: the logins it uses there (the
//! catalog stores where clusters are, never how to log in) and the connection settings for
//! one login on one database of a cluster.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tenancy_catalog::ClusterRecord;
use tenancy_conn::{PgConfig, Tls};

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

/// The logins the control plane uses on every cluster (provisioning, migrations).
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
            owner: Login::trusted(crate::bootstrap::OWNER_ROLE),
            runtime: Login::trusted(crate::bootstrap::RUNTIME_ROLE),
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
