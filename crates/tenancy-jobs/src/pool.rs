//! A small pool of the worker role's plain connections, for the queue's bookkeeping
//! (claim and finish); never for tenant data, which goes through the runtime's
//! transaction.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tenancy_sdk::PgConfig;
use tokio_postgres::Client;

/// Creates and checks plain connections.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role, and how to secure it.
    config: PgConfig,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = tenancy_conn::ConnError;

    async fn create(&self) -> Result<Client, tenancy_conn::ConnError> {
        let (client, connection) = self.config.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "job queue connection closed");
            }
        });
        Ok(client)
    }

    async fn recycle(&self, c: &mut Client, _: &Metrics) -> RecycleResult<tenancy_conn::ConnError> {
        if c.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

pub(crate) type PlainPool = managed::Pool<Manager>;

pub(crate) fn build(config: PgConfig, max_size: usize) -> Result<PlainPool, crate::ConfigError> {
    PlainPool::builder(Manager { config })
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| crate::ConfigError::Invalid(format!("building a connection pool: {e}")))
}
