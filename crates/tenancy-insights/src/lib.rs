//! Per-tenant performance profiles: which tenants use a cluster's database time, their
//! latency quantiles and error rates, and which one crowds out its neighbours.
//!
//! Main parts:
//! - [`Recorder`]: a [`tenancy_sdk::Observer`] an application sets on its
//!   [`tenancy_sdk::TenantPool`] (`PoolOptions::observer`). It aggregates in-process, per
//!   tenant, the SDK's own timings: database time (statements plus COMMIT/ROLLBACK),
//!   statements, transactions, rows, errors, context refusals, connection waits and a
//!   latency [`Sketch`]. Memory is bounded whatever the number of tenants: a space-saving
//!   top-N ([`RecorderOptions::capacity`] tenants, weighted by database time) keeps the
//!   heavy tenants exactly, and cluster totals count every tenant.
//! - [`Snapshot`]: what [`Recorder::take`] drains every interval and the application
//!   pushes to `tenancy serve` (`POST /v1/insights/snapshots`); checked field by field
//!   by [`Snapshot::check`] before a server merges it.
//! - [`Window`]: the server side: the snapshots of the last window per cluster, bounded,
//!   merged into a [`Report`] (top tenants by database time, p50/p99, error rate, share of
//!   the cluster's time, noisy-neighbour flag past a threshold share).
//!
//! - [`anomaly`]: cross-tenant access anomaly detection over the request layer's and
//!   the SDK's signals (per-tenant baselines, robust scores, detections with evidence),
//!   and its evaluation harness.
//!
//! - [`rules`]: configuration and provisioning anomalies: rules declared in configuration
//!   (compliance flags per region, residency, dedicated plans, security overrides, flags
//!   reaching excluded regions) and learned detectors over provisioning steps and the
//!   configuration change log, as pure functions over facts the caller gathers.
//!
//! What it does not do: it never sees SQL text or parameters, never puts a tenant id in
//! a metric label, and keeps no series per tenant; it does not read `pg_stat_statements`.

pub mod anomaly;
mod recorder;
mod report;
pub mod rules;
pub mod sketch;
mod snapshot;

pub use recorder::{Recorder, RecorderOptions};
pub use report::{ClusterReport, PushError, Pushed, Report, TenantReport, Window, WindowOptions};
pub use sketch::{Sketch, SketchWire};
pub use snapshot::{
    is_cluster_name, Counts, Snapshot, SnapshotError, TenantStats, MAX_INTERVAL_MS,
    MAX_SNAPSHOT_TENANTS,
};
