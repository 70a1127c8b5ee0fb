//! The worker role's plain connections, for the queue's bookkeeping (claim and finish);
//! never for tenant data, which goes through the runtime's transaction.

use std::time::Duration;

pub(crate) use tenancy_conn::PlainPool;
use tenancy_sdk::PgConfig;

pub(crate) fn build(config: PgConfig, max_size: usize) -> Result<PlainPool, crate::ConfigError> {
    tenancy_conn::plain_pool(config, max_size, Duration::from_secs(10))
        .map_err(|e| crate::ConfigError::Invalid(format!("building a connection pool: {e}")))
}
