//! Counters of tenant transactions, recorded through the `metrics` facade when the
//! `metrics` feature is on (the application installs the recorder and exports them, e.g.
//! with `metrics-exporter-prometheus`); nothing at all without the feature.
//!
//! `tenancy_tenant_tx_total{event}`, `event` one of:
//! - `opened`: [`crate::TenantPool::begin`] (and its variants) returned a transaction;
//! - `refused`: opening failed (no connection from the pool, an invalid schema name);
//! - `committed`: [`crate::TenantTx::commit`] succeeded;
//! - `rolled_back`: [`crate::TenantTx::rollback`] succeeded, a commit found the
//!   transaction aborted, or a transaction was dropped without being ended.
//!
//! `tenancy_pool_wait_seconds` (histogram): how long [`crate::TenantPool::begin`] (and its
//! variants) waited for a connection, including making a new one; after each wait
//! `tenancy_pool_connections{state="in_use"|"idle"|"max"}` (gauges) of that pool. A process
//! with several pools sees the last one that opened a transaction.
//!
//! No tenant id is a label: with many tenants, per-tenant series would have no bound.

/// Counts one tenant-transaction event.
#[inline]
pub(crate) fn tx_event(event: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tenancy_tenant_tx_total", "event" => event).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}

/// The time of a wait for a connection starts (nothing without the feature).
#[inline]
pub(crate) fn wait_started() -> Option<std::time::Instant> {
    #[cfg(feature = "metrics")]
    return Some(std::time::Instant::now());
    #[cfg(not(feature = "metrics"))]
    None
}

/// Records a wait for a connection that started at `started`, and the pool's sizes
/// (connections open, idle, maximum) after it.
#[inline]
pub(crate) fn wait_ended(started: Option<std::time::Instant>, sizes: (usize, usize, usize)) {
    #[cfg(feature = "metrics")]
    if let Some(at) = started {
        metrics::histogram!("tenancy_pool_wait_seconds").record(at.elapsed().as_secs_f64());
        let (size, idle, max) = sizes;
        metrics::gauge!("tenancy_pool_connections", "state" => "in_use")
            .set(size.saturating_sub(idle) as f64);
        metrics::gauge!("tenancy_pool_connections", "state" => "idle").set(idle as f64);
        metrics::gauge!("tenancy_pool_connections", "state" => "max").set(max as f64);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (started, sizes);
}
