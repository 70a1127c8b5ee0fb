//! The tenancy request layer for tower/axum: every request and every job runs for one
//! resolved, active tenant, inside a tracing span that carries `tenant_id`, with a
//! tenant transaction that commits only when the work succeeded.
//!
//! Main parts:
//! - [`Tenancy`] (built with [`Tenancy::builder`]): the configured [`Source`]s, in order.
//!   Credentials authenticate the caller for a tenant: JWT ([`jwt`]: HS256/RS256/ES256/
//!   EdDSA, keys or JWKS, per-issuer keys pinned to one algorithm; scopes from `scope` or
//!   `scp`), tenant API key ([`api_key`]), trusted header (only when explicitly added),
//!   the application's own [`SessionSource`]. Selectors only pick a tenant and must
//!   agree with the credential: subdomain of a base domain, verified custom domain,
//!   path prefix. Routes served without a tenant are declared with
//!   [`TenancyBuilder::public`]. Catalog lookups are cached and invalidated by catalog
//!   change notifications.
//! - [`TenancyLayer`] / [`TenancyService`] / [`ResponseFuture`]: the tower middleware.
//!   Rules: a presented credential that does not verify → 401 `invalid-credentials`; no
//!   credential → 401 `unauthenticated` (whatever host or path the request names);
//!   credentials or selectors name different tenants → 403 `tenant-mismatch` (decided
//!   before existence, so it never reveals whether the other tenant exists); unknown
//!   tenant → 404; suspended → 403 `tenant-suspended`; provisioning → 409; deleted →
//!   410. Scopes a credential does not list are not granted
//!   ([`Tenant::require_scope`]).
//! - Extractors: [`Tenant`] (who the request is for) and [`Tx`] (the request's
//!   `TenantTx`: committed when the handler returns a 2xx/3xx response, rolled back on
//!   an error response, an error or a panic).
//! - [`HttpError`]: the one HTTP error type, RFC 9457 `application/problem+json` with a
//!   stable code table ([`ProblemType`]).
//! - Jobs: [`Tenancy`] is a `tenancy_jobs::JobRuntime`, so a `tenancy_jobs::Worker` runs
//!   each job with the same [`Tenant`] and [`Tx`] a request gets; the queue, envelopes and
//!   worker live in `tenancy-jobs`. [`spawn_with_tenant`] for in-process tasks.
//! - Request id and trace context: every response carries `X-Request-Id` (the client's
//!   when it is sane, else a new one; [`RequestId`] in the request extensions) and every
//!   problem body carries it as `request_id`. Each request is a span in W3C trace-context
//!   terms: under the caller's trace when its `traceparent` is valid (keeping its sampled
//!   flag), else in a new trace (an invalid `traceparent` is ignored), with a new span id.
//!   That span is answered in the response's `traceparent` header, put in the request
//!   extensions as a [`TraceParent`] (and as the task's current one), recorded on the
//!   request span (`trace_id`, `span_id`), and stored with the jobs the request enqueues,
//!   whose spans are its children.
//! - Access signals ([`access`]): with an [`access::AccessSink`] set
//!   ([`TenancyBuilder::access_sink`]), one `tenancy_insights` `AccessEvent` per answered
//!   request and per `tenant-mismatch` refusal, for the access anomaly detector.
//! - [`TenantKey`] / [`TenantCache`]: cache keys that cannot be built without a tenant.
//!
//! What it does not do: it never reaches tenant data except through the SDK's
//! `TenantTx`, never sets a session-level tenant, does not verify custom-domain
//! ownership (the configuration service does, in `config_domains`; this crate only reads
//! verified rows), does not issue JWTs, and
//! does not serve the control plane.

pub mod access;
pub mod api_key;
mod body;
mod catalog;
mod error;
mod future;
mod jobs;
pub mod jwt;
mod layer;
mod pool;
mod service;
mod tenancy;
mod tenant;
mod tx;

pub use body::Body;
pub use error::{ConfigError, HttpError, ProblemType, PROBLEM_TYPE_PREFIX};
pub use future::ResponseFuture;
pub use layer::TenancyLayer;
pub use service::TenancyService;
pub use tenancy::{Session, SessionSource, Source, Tenancy, TenancyBuilder};
pub use tenancy_jobs::TraceParent;
/// The one problem document of tenancy (its `normalize` middleware turns axum's plain-text
/// rejections and fallbacks into problems).
pub use tenancy_problem as problem;
pub use tenancy_problem::request_id::RequestId;
pub use tenant::{spawn_with_tenant, SourceKind, Tenant, TenantCache, TenantKey};
pub use tx::Tx;
