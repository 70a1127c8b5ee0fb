//! HTTP: the control-plane routes of the configuration service and the evaluation
//! endpoint for services in other languages, as one composable [`routes`] router, plus
//! the problem codes they (and the entitlement guard) answer with, as documents of the one
//! problem type of tenancy ([`tenancy_problem::Problem`]).
//!
//! Handlers: [`definitions`] (entitlements, plans, regions, flags, setting definitions),
//! [`tenants`] (attributes, overrides, branding, tenant settings, custom domains) and
//! [`evaluate`] (the change log, freshness, evaluation and explanations).
//!
//! Writes need an `x-tenancy-actor` header (who) and take an optional
//! `x-tenancy-reason` header (why); both are recorded in the change log. Authentication
//! and authorisation of the control plane are the embedding server's job.

use std::str::FromStr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tenancy_config::guard::{FEATURE_NOT_ENTITLED, LIMIT_EXCEEDED, TENANT_REQUIRED};
use tenancy_config::model::ModelError;
use tenancy_config::{ConfigClient, ConfigError};
use tenancy_core::TenantId;
use utoipa::{OpenApi, ToSchema};

use crate::dns::TxtResolver;
use crate::store::{ChangeMeta, Store};

mod bodies;
mod definitions;
mod evaluate;
mod params;
mod tenants;

use definitions::*;
use evaluate::*;
use tenants::*;

pub use tenancy_problem::Problem;
use tenancy_problem::ProblemType;

/// The problem codes this crate answers with (its part of the one code table of tenancy,
/// [`tenancy_problem`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemCode {
    /// Malformed request (bad id, bad JSON shape, missing actor header).
    BadRequest,
    /// Well-formed but invalid content (a flag whose weights do not sum, a bad colour…).
    Validation,
    /// No such flag, plan, tenant, domain…
    NotFound,
    /// Conflicts with the current state.
    Conflict,
    /// The catalog cannot be reached.
    Unavailable,
    /// Something failed on our side; details are in the logs.
    Internal,
    /// The tenant's plan does not include the feature.
    FeatureNotEntitled,
    /// The tenant reached a limit of its plan.
    LimitExceeded,
    /// No tenant in the request (the tenant-resolution layer did not run).
    TenantRequired,
    /// A configuration rule refuses the change (the detail names the rule).
    RuleRefused,
}

/// A change a configuration rule refuses (`tenancy_insights::rules`).
pub const RULE_REFUSED: ProblemType = ProblemType::new(
    "config-rule",
    422,
    "A configuration rule refuses the change",
);

impl ProblemCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ProblemCode] = &[
        ProblemCode::BadRequest,
        ProblemCode::Validation,
        ProblemCode::NotFound,
        ProblemCode::Conflict,
        ProblemCode::Unavailable,
        ProblemCode::Internal,
        ProblemCode::FeatureNotEntitled,
        ProblemCode::LimitExceeded,
        ProblemCode::TenantRequired,
        ProblemCode::RuleRefused,
    ];

    /// The problem type (code, status, title).
    pub fn problem_type(&self) -> ProblemType {
        match self {
            ProblemCode::BadRequest => tenancy_problem::BAD_REQUEST,
            ProblemCode::Validation => tenancy_problem::VALIDATION,
            ProblemCode::NotFound => tenancy_problem::NOT_FOUND,
            ProblemCode::Conflict => tenancy_problem::CONFLICT,
            ProblemCode::Unavailable => tenancy_problem::UNAVAILABLE,
            ProblemCode::Internal => tenancy_problem::INTERNAL,
            ProblemCode::FeatureNotEntitled => FEATURE_NOT_ENTITLED,
            ProblemCode::LimitExceeded => LIMIT_EXCEEDED,
            ProblemCode::TenantRequired => TENANT_REQUIRED,
            ProblemCode::RuleRefused => RULE_REFUSED,
        }
    }

    /// This crate's part of the code table (for [`tenancy_problem::check_table`]).
    pub fn table() -> Vec<ProblemType> {
        Self::ALL.iter().map(|c| c.problem_type()).collect()
    }

    /// The stable code (last part of the `type` URI).
    pub fn code(&self) -> &'static str {
        self.problem_type().code
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        self.problem_type().status_code()
    }

    /// Short, fixed title.
    pub fn title(&self) -> &'static str {
        self.problem_type().title
    }
}

impl From<ProblemCode> for ProblemType {
    fn from(c: ProblemCode) -> ProblemType {
        c.problem_type()
    }
}

/// What a handler fails with: a problem document. Store and model errors become one
/// here (the conversions live on this type because neither side of them is this crate's).
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> ApiError {
        ApiError(p)
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> ApiError {
        // Log where the error is turned into a response.
        ApiError(match &e {
            ConfigError::Invalid(m) => Problem::new(ProblemCode::Validation, m.to_string()),
            ConfigError::NotFound { .. } => Problem::new(ProblemCode::NotFound, e.to_string()),
            ConfigError::Conflict(m) => Problem::new(ProblemCode::Conflict, m.clone()),
            ConfigError::Rule { message, .. } => {
                Problem::new(ProblemCode::RuleRefused, message.clone())
            }
            // A concurrent change won a race the checks could not see (two verifications of
            // one domain, two creations of one key): a conflict, not our failure.
            ConfigError::Db { source, .. }
                if source.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) =>
            {
                Problem::new(
                    ProblemCode::Conflict,
                    "a concurrent change conflicts with this one; retry".to_owned(),
                )
            }
            _ if e.is_unavailable() => {
                tracing::warn!(error = %e, "configuration store unavailable");
                Problem::new(ProblemCode::Unavailable, None)
            }
            _ => {
                tracing::error!(error = %e, "configuration request failed");
                Problem::new(ProblemCode::Internal, None)
            }
        })
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> ApiError {
        ApiError(Problem::new(ProblemCode::Validation, e.to_string()))
    }
}

/// What the routes need.
#[derive(Debug, Clone)]
pub struct ConfigState {
    /// Writes and authoritative reads.
    pub store: Store,
    /// In-process evaluation (the evaluation endpoint answers from the snapshot).
    pub client: ConfigClient,
    /// DNS for custom-domain verification.
    pub resolver: Arc<dyn TxtResolver>,
}

type ApiResult<T> = Result<T, ApiError>;

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(Problem::new(ProblemCode::BadRequest, msg.into()))
}

/// Who makes a change and why, from the `x-tenancy-actor` (required) and
/// `x-tenancy-reason` headers.
fn meta(headers: &HeaderMap) -> ApiResult<ChangeMeta> {
    let text = |name: &str| {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| bad(format!("header {name} must be visible ASCII")))
            })
            .transpose()
    };
    let actor = text("x-tenancy-actor")?
        .filter(|a| !a.trim().is_empty())
        .ok_or_else(|| bad("header x-tenancy-actor (who makes the change) is required"))?;
    Ok(ChangeMeta::new(
        actor,
        text("x-tenancy-reason")?.unwrap_or_default(),
    ))
}

fn parse<T: FromStr>(what: &str, s: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| bad(format!("{what}: {e}")))
}

fn from_json<T: DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v)
        .map_err(|e| ApiError(Problem::new(ProblemCode::Validation, e.to_string())))
}

/// A write of a tenant's configuration: who and why, then the tenant of the path.
fn tenant_write(headers: &HeaderMap, tenant: &str) -> ApiResult<(ChangeMeta, TenantId)> {
    Ok((meta(headers)?, parse("tenant id", tenant)?))
}

/// A body checked against its schema ([`bodies`], a `validation` problem naming the
/// fields that break it), then read as `T`.
fn checked<T: DeserializeOwned>(schema: &str, body: Value) -> ApiResult<T> {
    bodies::check(schema, &body)?;
    from_json(body)
}

/// A `PUT` of something named by the path: who and why, then the key of the path
/// (parsed as `what`), then the body, checked against `schema` and read with that key set
/// as its `field`. Checked in that order.
fn keyed_body<K, T>(
    headers: &HeaderMap,
    what: &str,
    key: &str,
    field: &str,
    schema: &str,
    mut body: Value,
) -> ApiResult<(ChangeMeta, T)>
where
    K: FromStr + Serialize,
    K::Err: std::fmt::Display,
    T: DeserializeOwned,
{
    let m = meta(headers)?;
    let key: K = parse(what, key)?;
    bodies::check(schema, &body)?;
    if let Some(o) = body.as_object_mut() {
        o.insert(field.into(), json!(key));
    }
    Ok((m, from_json(body)?))
}

/// The answer to a write: the version it produced.
fn written(version: i64) -> axum::Json<Written> {
    axum::Json(Written { version })
}

/// The version a change produced.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    /// The change-log version of the write.
    pub version: i64,
}

/// The configuration routes (mount them at the root of the control-plane router). Every
/// error they answer, axum's own rejections included, is a problem document.
pub fn routes(state: ConfigState) -> Router {
    Router::new()
        .route("/v1/config/entitlements/{key}", put(put_entitlement))
        .route("/v1/config/plans/{plan}", put(put_plan))
        .route("/v1/config/regions/{region}", put(put_region))
        .route(
            "/v1/config/flags/{key}",
            put(put_flag).get(get_flag).delete(delete_flag),
        )
        .route(
            "/v1/config/flags/{key}/kill",
            post(kill_flag).delete(unkill_flag),
        )
        .route("/v1/config/settings/{key}", put(put_setting_def))
        .route(
            "/v1/config/tenants/{tenant}/attributes",
            put(put_attributes),
        )
        .route(
            "/v1/config/tenants/{tenant}/overrides/{kind}/{key}",
            put(put_override).delete(delete_override),
        )
        .route(
            "/v1/config/tenants/{tenant}/branding",
            put(put_branding).get(get_branding),
        )
        .route(
            "/v1/config/tenants/{tenant}/settings/{key}",
            put(put_tenant_setting).delete(delete_tenant_setting),
        )
        .route("/v1/config/tenants/{tenant}/domains", get(list_domains))
        .route(
            "/v1/config/tenants/{tenant}/domains/{hostname}",
            put(add_domain).delete(remove_domain),
        )
        .route(
            "/v1/config/tenants/{tenant}/domains/{hostname}/verify",
            post(verify_domain),
        )
        .route(
            "/v1/config/tenants/{tenant}/domains/{hostname}/disable",
            post(disable_domain),
        )
        .route("/v1/config/changes", get(changes))
        .route("/v1/config/status", get(status))
        .route("/v1/evaluate/{tenant}", get(evaluate))
        .route("/v1/evaluate/{tenant}/explain/{kind}/{key}", get(explain))
        .with_state(state)
        .layer(axum::middleware::from_fn(tenancy_problem::normalize))
}

/// The OpenAPI description of [`routes`].
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        put_entitlement, put_plan, put_region, put_flag, get_flag, delete_flag, kill_flag,
        unkill_flag, put_setting_def, put_attributes, put_override, delete_override,
        put_branding, get_branding, put_tenant_setting, delete_tenant_setting, list_domains,
        add_domain, remove_domain, verify_domain, disable_domain, changes, status, evaluate,
        explain
    ),
    components(schemas(Problem, Written)),
    modifiers(&DocumentErrors),
    tags((name = "config", description = "Tenant configuration: plans, entitlements, flags, overrides, branding, domains, settings"))
)]
pub struct ConfigApiDoc;

/// Completes every operation's error responses ([`tenancy_problem::openapi::document_errors`]).
#[derive(Debug)]
struct DocumentErrors;

impl utoipa::Modify for DocumentErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        tenancy_problem::openapi::document_errors(openapi);
    }
}
