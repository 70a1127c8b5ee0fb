//! A small pool of plain connections: the runtime role's for catalog reads, the worker
//! role's for the job queue's bookkeeping (never for tenant data: that goes through
//! `TenantTx`).

use std::time::Duration;

use tenancy_sdk::PgConfig;

pub(crate) use tenancy_conn::PlainPool;

pub(crate) fn build(config: PgConfig, max_size: usize) -> Result<PlainPool, crate::ConfigError> {
    tenancy_conn::plain_pool(config, max_size, Duration::from_secs(10))
        .map_err(|e| crate::ConfigError::Invalid(format!("building a connection pool: {e}")))
}
