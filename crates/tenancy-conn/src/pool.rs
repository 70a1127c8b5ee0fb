//! A deadpool pool of plain connections (no tenant context): the catalog, a cluster's
//! admin and owner logins, the job queue's bookkeeping. Tenant data never goes through
//! one: the SDK's `TenantPool` is the only way to it.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::Client;

use crate::{connect, ConnError, PgConfig};

/// Creates connections with one [`PgConfig`] and drops those that closed.
#[derive(Debug)]
pub struct PlainManager {
    config: PgConfig,
}

impl PlainManager {
    /// A manager connecting with `config`.
    pub fn new(config: impl Into<PgConfig>) -> Self {
        PlainManager {
            config: config.into(),
        }
    }

    /// The settings connections are made with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }
}

impl managed::Manager for PlainManager {
    type Type = Client;
    type Error = ConnError;

    async fn create(&self) -> Result<Client, ConnError> {
        connect(&self.config).await
    }

    async fn recycle(&self, c: &mut Client, _: &Metrics) -> RecycleResult<ConnError> {
        if c.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// A pool of plain connections.
pub type PlainPool = managed::Pool<PlainManager>;
/// A connection taken from a [`PlainPool`] (back to the pool when dropped).
pub type PlainConn = managed::Object<PlainManager>;

/// Builds a pool of at most `max_size` connections made with `config`; creating a
/// connection may take 10 s, waiting for a free one `wait`.
pub fn plain_pool(
    config: impl Into<PgConfig>,
    max_size: usize,
    wait: Duration,
) -> Result<PlainPool, managed::BuildError> {
    PlainPool::builder(PlainManager::new(config))
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(10)))
        .wait_timeout(Some(wait))
        .build()
}
