//! The baseline pool: the same deadpool setup as `tenancy_sdk`'s pool (one tokio_postgres
//! client per connection, a per-connection prepared-statement cache), with no tenancy.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tenancy_sdk::PgConfig;
use tokio_postgres::{Client, Statement};

/// Prepared statements kept per connection before the cache is cleared (as in the SDK).
const STATEMENT_CACHE_LIMIT: usize = 256;

/// One pooled connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The client; its connection task runs on the runtime.
    pub client: Client,
    /// Prepared statements by SQL text.
    stmts: HashMap<String, Statement>,
}

impl Conn {
    /// The prepared statement for `sql`, preparing it on first use.
    pub(crate) async fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare(sql)
            .await
            .context("preparing a statement")?;
        if self.stmts.len() >= STATEMENT_CACHE_LIMIT {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Creates and checks connections.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role, and with which TLS (the SDK's own connection
    /// code: tokio-postgres over rustls, so a TLS comparison compares the same stack).
    config: PgConfig,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = tenancy_conn::ConnError;

    async fn create(&self) -> Result<Conn, tenancy_conn::ConnError> {
        let (client, connection) = self.config.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "baseline connection closed");
            }
        });
        Ok(Conn {
            client,
            stmts: HashMap::new(),
        })
    }

    async fn recycle(
        &self,
        conn: &mut Conn,
        _: &Metrics,
    ) -> RecycleResult<tenancy_conn::ConnError> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// The baseline pool type.
pub(crate) type Pool = managed::Pool<Manager>;

/// Builds a pool of `max_size` connections with the SDK's pool settings.
pub(crate) fn build(config: impl Into<PgConfig>, max_size: usize) -> Result<Pool> {
    Pool::builder(Manager {
        config: config.into(),
    })
    .max_size(max_size)
    .wait_timeout(Some(Duration::from_secs(30)))
    .create_timeout(Some(Duration::from_secs(10)))
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .context("building the baseline pool")
}
