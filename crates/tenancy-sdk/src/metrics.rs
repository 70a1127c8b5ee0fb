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
//! No tenant id is a label: with many tenants, per-tenant series would have no bound.

/// Counts one tenant-transaction event.
#[inline]
pub(crate) fn tx_event(event: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tenancy_tenant_tx_total", "event" => event).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = event;
}
