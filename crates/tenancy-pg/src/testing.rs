//! Databases for tests: one cluster per test process, migrated templates built once,
//! and a fresh database per test cloned from a template (`CREATE DATABASE … TEMPLATE`),
//! so a suite of many database tests stays fast on two cores.
//!
//! ```no_run
//! use tenancy_pg::testing::{TemplateDb, TestDb};
//!
//! static APP: TemplateDb = TemplateDb::new("app_template");
//!
//! async fn fresh() -> TestDb {
//!     APP.fresh(|cluster, db| async move {
//!         let client = cluster.connect(&db).await?;
//!         client.batch_execute("CREATE TABLE t (id int)").await?;
//!         Ok(())
//!     })
//!     .await
//!     .expect("test database")
//! }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::OnceCell;

use crate::{Cluster, ClusterOptions, HarnessError};

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Boxed error for template setup closures.
pub type SetupError = Box<dyn std::error::Error + Send + Sync>;

/// The test process's cluster, started on first use and stopped when the process exits.
pub async fn cluster() -> Result<&'static Cluster, HarnessError> {
    CLUSTER
        .get_or_try_init(|| Cluster::start(ClusterOptions::for_tests()))
        .await
}

/// A template database built once per test process by a setup function.
#[derive(Debug)]
pub struct TemplateDb {
    /// Database name of the template.
    name: &'static str,
    /// Set once the setup function has succeeded.
    ready: OnceCell<()>,
}

impl TemplateDb {
    /// Declares a template named `name` (a plain lowercase identifier).
    pub const fn new(name: &'static str) -> Self {
        TemplateDb {
            name,
            ready: OnceCell::const_new(),
        }
    }

    /// Returns a fresh database cloned from the template, building the template first with
    /// `setup(cluster, template_db_name)` if this process has not yet done so.
    pub async fn fresh<F, Fut>(&'static self, setup: F) -> Result<TestDb, HarnessError>
    where
        F: FnOnce(&'static Cluster, String) -> Fut,
        Fut: Future<Output = Result<(), SetupError>>,
    {
        let cluster = cluster().await?;
        self.ready
            .get_or_try_init(|| async {
                let admin = cluster.connect("postgres").await?;
                for sql in [format!("DROP DATABASE IF EXISTS {}", self.name), format!("CREATE DATABASE {}", self.name)] {
                    admin
                        .batch_execute(&sql)
                        .await
                        .map_err(|source| HarnessError::Sql { what: format!("creating template {}", self.name), source })?;
                }
                setup(cluster, self.name.to_owned()).await.map_err(|e| HarnessError::Command {
                    what: format!("setting up template database {}", self.name),
                    detail: e.to_string(),
                })?;
                // Nobody may stay connected to a template while it is cloned.
                admin
                    .batch_execute(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}' AND pid <> pg_backend_pid(); \
                         ALTER DATABASE {0} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
                        self.name
                    ))
                    .await
                    .map_err(|source| HarnessError::Sql { what: format!("sealing template {}", self.name), source })?;
                Ok::<(), HarnessError>(())
            })
            .await?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}_t{}_{}", self.name, std::process::id(), n);
        let admin = cluster.connect("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
            .await
            .map_err(|source| HarnessError::Sql {
                what: format!("cloning {} into {name}", self.name),
                source,
            })?;
        Ok(TestDb { cluster, name })
    }
}

/// A database private to one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// The cluster it lives on.
    pub cluster: &'static Cluster,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Connection settings for `user` on this database.
    pub fn config_as(&self, user: &str) -> tokio_postgres::Config {
        self.cluster.config_as(user, &self.name)
    }

    /// Connects as the superuser.
    pub async fn connect_superuser(&self) -> Result<tokio_postgres::Client, HarnessError> {
        self.cluster.connect(&self.name).await
    }
}
