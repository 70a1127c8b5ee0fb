//! The configuration service of the control plane: everything that changes tenant
//! configuration, which applications never link (they use `tenancy-config`, which reads).
//!
//! Main parts:
//! - [`store`]: every statement that writes configuration, one module per entity, all
//!   through one write helper: a transaction that appends to
//!   `tenancy_catalog.config_changes` (who, when, why, before, after), stamps the row with
//!   that version and sends `NOTIFY tenancy_config` carrying ids only.
//! - [`http`]: the control-plane and evaluation routes as one composable
//!   [`routes`](http::routes) router (axum, utoipa, RFC 9457 problems), and the problem
//!   codes of this service ([`ProblemCode`]).
//! - [`dns`]: TXT lookups for domain verification (hickory by default, in-memory in tests).
//! - [`schema`]: typed settings' JSON Schemas, compiled and enforced on every write.
//! - [`rules`]: the declared configuration rules (`tenancy_insights::rules`) checked on
//!   every write that can change what they find, refusing or warning by severity.
//!
//! What it does not do: it does not authenticate control-plane callers (the embedding
//! server does, and sets the actor header), does not resolve the tenant of a request, and
//! does not evaluate: the evaluation routes answer from a `tenancy_config::ConfigClient`
//! snapshot.

pub mod dns;
pub mod http;
pub mod rules;
pub mod schema;
pub mod store;

pub use http::{routes, ApiError, ConfigState, Problem, ProblemCode};
pub use store::{Change, ChangeMeta, Store};
