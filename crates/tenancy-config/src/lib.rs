//! Tenant configuration: everything a tenant's experience depends on, changed at runtime
//! and evaluated in-process.
//!
//! Main parts:
//! - [`model`]: parsed, validated types — entitlements (features and limits), plans and
//!   region layers, feature flags (boolean and multivariate, targeting rules over tenant
//!   attributes, percentage rollouts, kill switch), per-tenant overrides (reason, optional
//!   expiry), white-label branding, custom domains, typed settings (JSON Schema).
//! - [`engine`]: the pure evaluation engine. A [`Snapshot`] compiles all configuration
//!   and resolves flags, entitlements and settings through global → plan → region →
//!   tenant override, with [`Explanation`]s of which layer decided. No IO.
//! - [`store`]: all SQL. Every write is versioned in `tenancy_catalog.config_changes`
//!   (who, when, why, before, after) and announced with `NOTIFY tenancy_config` carrying
//!   ids only.
//! - [`client`]: the SDK — [`ConfigClient`] holds the snapshot in an `ArcSwap`, listens
//!   for notifications (coalesced, targeted reloads), refreshes fully every half of the
//!   maximum staleness, and keeps serving the last snapshot (reporting itself stale) when
//!   the catalog is unreachable.
//! - [`http`]: the control-plane and evaluation routes as one composable
//!   [`routes`](http::routes) router (axum, utoipa, RFC 9457 problems).
//! - [`guard`]: the axum entitlement guard ([`RequireFeatureLayer`]) and the
//!   [`TenantConfig`] extractor for numeric limits.
//! - [`openfeature`]: an OpenFeature provider over the client.
//! - [`dns`]: TXT lookups for domain verification (hickory by default, in-memory in tests).
//!
//! What it does not do: it does not resolve the tenant of a request (`tenancy-axum` does;
//! this crate reads the `TenantId` request extension), does not authenticate control-plane
//! callers, and never queries the database on the evaluation path.

pub mod client;
pub mod dns;
pub mod engine;
mod error;
pub mod guard;
pub mod http;
pub mod model;
pub mod openfeature;
pub mod store;

pub use client::{ClientOptions, ConfigClient, Status};
pub use engine::{Explanation, FlagEvaluation, FlagReason, Layer, Snapshot};
pub use error::ConfigError;
pub use guard::{RequireFeatureLayer, TenantConfig};
pub use http::{routes, ConfigState, Problem, ProblemCode};
pub use store::{ChangeMeta, Store};
