//! Tenant configuration for applications: the model, the pure evaluator and the client
//! that keeps an in-process snapshot fresh, so that `is_enabled`, entitlements and
//! settings are answered without a database or network call.
//!
//! Main parts:
//! - [`model`]: parsed, validated types — entitlements (features and limits), plans and
//!   region layers, feature flags (boolean and multivariate, targeting rules over tenant
//!   attributes, percentage rollouts, kill switch), per-tenant overrides (reason, optional
//!   expiry), white-label branding, custom domains, typed settings.
//! - [`engine`]: the pure evaluation engine. A [`Snapshot`] compiles all configuration
//!   and resolves flags, entitlements and settings through global → plan → region →
//!   tenant override, with [`Explanation`]s of which layer decided. No IO.
//! - [`load`]: the statements that read the configuration (as the configuration reader
//!   role): everything, one flag, or one tenant.
//! - [`client`]: the SDK — [`ConfigClient`] holds the snapshot in an `ArcSwap`, listens
//!   for notifications (coalesced, targeted reloads), refreshes fully every half of the
//!   maximum staleness, and keeps serving the last snapshot (reporting itself stale) when
//!   the catalog is unreachable.
//! - `guard` (cargo feature `axum`): the axum entitlement guard (`RequireFeatureLayer`)
//!   and the `TenantConfig` extractor for numeric limits, answering RFC 9457 problems.
//! - `openfeature` (cargo feature `openfeature`): an OpenFeature provider over the client.
//!
//! What it does not do: it never writes configuration (the control plane's
//! `tenancy-config-service` does: store, HTTP routes, DNS verification, JSON Schema
//! validation of settings), does not resolve the tenant of a request (`tenancy-axum` does;
//! the guard reads the `TenantId` request extension), and never queries the database on
//! the evaluation path. Without features it depends on no HTTP framework.

pub mod client;
pub mod engine;
mod error;
#[cfg(feature = "axum")]
pub mod guard;
pub mod load;
pub mod model;
#[cfg(feature = "openfeature")]
pub mod openfeature;

pub use client::{ClientOptions, ConfigClient, Status};
pub use engine::{Explanation, FlagEvaluation, FlagReason, Layer, Snapshot};
pub use error::ConfigError;
#[cfg(feature = "axum")]
pub use guard::{Problem, RequireFeatureLayer, TenantConfig};
