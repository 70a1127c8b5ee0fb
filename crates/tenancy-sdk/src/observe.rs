//! Per-tenant recording hook: what the SDK tells an [`Observer`] about each tenant's
//! transactions and statements, timed by the SDK itself.
//!
//! A pool has an observer when [`crate::PoolOptions::observer`] is set; without one the
//! hot path pays one branch on an `Option` per call and reads no clock. With one, each
//! statement reads the clock twice and makes one call; what the observer does with it
//! (aggregate, sample, drop) is its own business and must be cheap and must not block
//! (it runs on the task that runs the statement).

use std::fmt::Debug;
use std::time::Duration;

use tenancy_core::TenantId;

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It ran; `rows` rows were returned (or, for `execute`, affected).
    Ok {
        /// Rows returned or affected.
        rows: u64,
    },
    /// The server refused the tenant context that travelled with it (a forged, replayed
    /// or expired token, or a connection whose SDK statements were taken away).
    ContextRefused,
    /// Any other failure (an SQL error, a lost connection, a deadline).
    Error,
}

/// Receives per-tenant timings from every [`crate::TenantPool`] it is set on.
pub trait Observer: Send + Sync + Debug + 'static {
    /// A statement of `tenant`'s transaction ran for `elapsed` (from the call until its
    /// result, including the opening it carried) and ended with `outcome`.
    fn statement(&self, tenant: TenantId, elapsed: Duration, outcome: Outcome);

    /// `tenant`'s transaction ended after `elapsed` since `begin` returned it;
    /// `committed` is false for a rollback (asked for, after a failure, or on drop).
    /// `end` is the time the COMMIT or ROLLBACK itself took (zero when it needed no
    /// round trip).
    fn transaction(&self, tenant: TenantId, elapsed: Duration, end: Duration, committed: bool);

    /// `begin` for `tenant` waited `waited` for a connection; `got` is false when it got
    /// none (pool exhausted until its wait timeout, or no connection could be made).
    fn pool_wait(&self, tenant: TenantId, waited: Duration, got: bool);
}
