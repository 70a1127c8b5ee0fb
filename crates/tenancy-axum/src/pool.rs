//! A small pool of plain connections: the runtime role's for catalog reads, the worker
//! role's for the job queue's bookkeeping (never for tenant data: that goes through
//! `TenantTx`).

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tokio_postgres::{Client, NoTls};

/// Creates and checks plain connections.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role.
    config: tokio_postgres::Config,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "plain connection closed");
            }
        });
        Ok(client)
    }

    async fn recycle(&self, c: &mut Client, _: &Metrics) -> RecycleResult<tokio_postgres::Error> {
        if c.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

pub(crate) type PlainPool = managed::Pool<Manager>;

pub(crate) fn build(
    config: tokio_postgres::Config,
    max_size: usize,
) -> Result<PlainPool, crate::ConfigError> {
    PlainPool::builder(Manager { config })
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| crate::ConfigError::Invalid(format!("building a connection pool: {e}")))
}
