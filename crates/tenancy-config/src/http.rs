//! HTTP: the control-plane routes of the configuration service and the evaluation
//! endpoint for services in other languages, as one composable [`routes`] router, plus
//! the problem codes they (and the entitlement guard) answer with, as documents of the one
//! problem type of tenancy ([`tenancy_problem::Problem`]).
//!
//! Writes need an `x-tenancy-actor` header (who) and take an optional
//! `x-tenancy-reason` header (why); both are recorded in the change log. Authentication
//! and authorisation of the control plane are the embedding server's job.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenancy_core::{RegionId, TenantId};
use time::OffsetDateTime;
use utoipa::{OpenApi, ToSchema};

use crate::client::ConfigClient;
use crate::dns::TxtResolver;
use crate::engine::ExplainError;
use crate::error::ConfigError;
use crate::model::{
    Branding, EntitlementDef, EntitlementKey, Flag, FlagKey, ModelError, Override, OverrideTarget,
    Plan, RegionLayer, SettingDef, SettingKey,
};
use crate::store::{ChangeMeta, Store};

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
}

/// 403: the tenant's plan does not include the feature.
pub const FEATURE_NOT_ENTITLED: ProblemType = ProblemType::new(
    "feature-not-entitled",
    403,
    "The tenant's plan does not include this feature",
);
/// 403: the tenant reached a limit of its plan.
pub const LIMIT_EXCEEDED: ProblemType = ProblemType::new(
    "limit-exceeded",
    403,
    "The tenant reached a limit of its plan",
);
/// 401: no tenant could be determined for the request.
pub const TENANT_REQUIRED: ProblemType = ProblemType::new(
    "tenant-required",
    401,
    "No tenant could be determined for this request",
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

impl From<ConfigError> for Problem {
    fn from(e: ConfigError) -> Problem {
        // Log where the error is turned into a response.
        match &e {
            ConfigError::Invalid(m) => Problem::new(ProblemCode::Validation, m.to_string()),
            ConfigError::NotFound { .. } => Problem::new(ProblemCode::NotFound, e.to_string()),
            ConfigError::Conflict(m) => Problem::new(ProblemCode::Conflict, m.clone()),
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
        }
    }
}

impl From<ModelError> for Problem {
    fn from(e: ModelError) -> Problem {
        Problem::new(ProblemCode::Validation, e.to_string())
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

type ApiResult<T> = Result<T, Problem>;

fn bad(msg: impl Into<String>) -> Problem {
    Problem::new(ProblemCode::BadRequest, msg.into())
}

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

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e| bad(format!("{what}: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v).map_err(|e| Problem::new(ProblemCode::Validation, e.to_string()))
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

/// Creates or replaces an entitlement definition (body: `{"kind": "feature"|"limit", "default": …, "description": …}`).
#[utoipa::path(put, path = "/v1/config/entitlements/{key}", tag = "config",
    params(("key" = String, Path, description = "entitlement key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "EntitlementDef without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_entitlement(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: EntitlementKey = parse("entitlement key", &key)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("key".into(), json!(key));
    }
    let def: EntitlementDef = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_entitlement(&def, &m).await?,
    }))
}

/// Creates or replaces a plan (body: `{"display_name", "entitlements", "settings", "flags"}`).
#[utoipa::path(put, path = "/v1/config/plans/{plan}", tag = "config",
    params(("plan" = String, Path, description = "plan key", pattern = "^[a-z][a-z0-9_-]*$", max_length = 40)),
    request_body(content = Object, description = "Plan without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_plan(
    State(s): State<ConfigState>,
    Path(plan): Path<String>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: tenancy_core::PlanKey = parse("plan", &plan)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("key".into(), json!(key));
    }
    let plan: Plan = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_plan(&plan, &m).await?,
    }))
}

/// Creates or replaces a region's layer (body: `{"entitlements", "settings", "flags"}`).
#[utoipa::path(put, path = "/v1/config/regions/{region}", tag = "config",
    params(("region" = String, Path, description = "region id", pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$", min_length = 2, max_length = 32)),
    request_body(content = Object, description = "LayerValues"),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn put_region(
    State(s): State<ConfigState>,
    Path(region): Path<String>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let region: RegionId = parse("region", &region)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("region".into(), json!(region));
    }
    let layer: RegionLayer = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_region_layer(&layer, &m).await?,
    }))
}

/// Creates or replaces a flag (body: a Flag without key).
#[utoipa::path(put, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "Flag without key: kind, variants, default_variant, off_variant, killed, rules"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("key".into(), json!(key));
    }
    let flag: Flag = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_flag(&flag, &m).await?,
    }))
}

/// Reads a flag from the store.
#[utoipa::path(get, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_flag(State(s): State<ConfigState>, Path(key): Path<String>) -> ApiResult<Json<Flag>> {
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(s.store.get_flag(&key).await?))
}

/// Deletes a flag and its overrides.
#[utoipa::path(delete, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(Written {
        version: s.store.delete_flag(&key, &m).await?,
    }))
}

/// Turns the kill switch on: the flag serves its off variant to everyone.
#[utoipa::path(post, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn kill_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(Written {
        version: s.store.set_flag_killed(&key, true, &m).await?,
    }))
}

/// Turns the kill switch off.
#[utoipa::path(delete, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn unkill_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(Written {
        version: s.store.set_flag_killed(&key, false, &m).await?,
    }))
}

/// Creates or replaces a typed setting (body: `{"schema": <JSON Schema>, "default": …, "description"}`).
#[utoipa::path(put, path = "/v1/config/settings/{key}", tag = "config",
    params(("key" = String, Path, description = "setting key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "SettingDef without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_setting_def(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(mut body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: SettingKey = parse("setting key", &key)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("key".into(), json!(key));
    }
    let def: SettingDef = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_setting_def(&def, &m).await?,
    }))
}

#[derive(Debug, Deserialize)]
struct AttributesBody {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    custom: serde_json::Map<String, Value>,
}

/// Sets a tenant's tags and custom attributes (body: `{"tags": [...], "custom": {...}}`).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/attributes", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    request_body(content = Object, description = "{tags, custom}"),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn put_attributes(
    State(s): State<ConfigState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let body: AttributesBody = from_json(body)?;
    Ok(Json(Written {
        version: s
            .store
            .put_tenant_attributes(tenant, &body.tags, &body.custom, &m)
            .await?,
    }))
}

#[derive(Debug, Deserialize)]
struct OverrideBody {
    value: Value,
    reason: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

fn target(kind: &str, key: &str) -> ApiResult<OverrideTarget> {
    match kind {
        "flag" => Ok(OverrideTarget::Flag(parse("flag key", key)?)),
        "entitlement" => Ok(OverrideTarget::Entitlement(parse("entitlement key", key)?)),
        _ => Err(bad(format!(
            "override kind {kind:?} is unknown; expected flag or entitlement"
        ))),
    }
}

/// Sets a per-tenant override (body: `{"value", "reason", "expires_at"?}`; a flag
/// override's value is a variant key).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/overrides/{kind}/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("kind" = String, Path, description = "flag or entitlement", pattern = "^(flag|entitlement)$"), ("key" = String, Path, description = "key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "{value, reason, expires_at?}"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_override(
    State(s): State<ConfigState>,
    Path((tenant, kind, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let target = target(&kind, &key)?;
    let body: OverrideBody = from_json(body)?;
    let o = Override {
        tenant_id: tenant,
        target,
        value: body.value,
        reason: body.reason,
        expires_at: body.expires_at,
        created_by: m.actor.clone(),
    };
    Ok(Json(Written {
        version: s.store.put_override(&o, &m).await?,
    }))
}

/// Removes a per-tenant override.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/overrides/{kind}/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("kind" = String, Path, description = "flag or entitlement", pattern = "^(flag|entitlement)$"), ("key" = String, Path, description = "key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_override(
    State(s): State<ConfigState>,
    Path((tenant, kind, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let target = target(&kind, &key)?;
    Ok(Json(Written {
        version: s.store.delete_override(tenant, &target, &m).await?,
    }))
}

/// Sets a tenant's white-label branding (validated).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/branding", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    request_body(content = Object, description = "Branding"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_branding(
    State(s): State<ConfigState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let b: Branding = from_json(body)?;
    Ok(Json(Written {
        version: s.store.put_branding(tenant, &b, &m).await?,
    }))
}

/// A tenant's branding, from the snapshot.
#[utoipa::path(get, path = "/v1/config/tenants/{tenant}/branding", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_branding(
    State(s): State<ConfigState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Branding>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    s.client
        .snapshot()
        .branding(tenant)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::NotFound,
                "this tenant has no branding".to_owned(),
            )
        })
}

/// Sets a tenant's value of a typed setting (body: the JSON value; validated against the schema).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/settings/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("key" = String, Path, description = "setting key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "the value"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn put_tenant_setting(
    State(s): State<ConfigState>,
    Path((tenant, key)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let key: SettingKey = parse("setting key", &key)?;
    Ok(Json(Written {
        version: s.store.put_tenant_setting(tenant, &key, &body, &m).await?,
    }))
}

/// Removes a tenant's value of a setting.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/settings/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("key" = String, Path, description = "setting key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_tenant_setting(
    State(s): State<ConfigState>,
    Path((tenant, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let key: SettingKey = parse("setting key", &key)?;
    Ok(Json(Written {
        version: s.store.delete_tenant_setting(tenant, &key, &m).await?,
    }))
}

/// A tenant's custom domains.
#[utoipa::path(get, path = "/v1/config/tenants/{tenant}/domains", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 200, body = Object)))]
async fn list_domains(
    State(s): State<ConfigState>,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let domains = s.store.list_domains(tenant).await?;
    let items: Vec<Value> = domains.iter().map(domain_json).collect();
    Ok(Json(json!({ "domains": items })))
}

fn domain_json(d: &crate::model::Domain) -> Value {
    json!({
        "hostname": d.hostname,
        "state": d.state,
        "verified_at": d.verified_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "last_error": d.last_error,
        "challenge": { "type": "TXT", "name": d.challenge_name(), "value": d.challenge_value() },
    })
}

/// Claims a custom domain (state `pending`); the answer says which TXT record to publish.
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/domains/{hostname}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("hostname" = String, Path, description = "hostname (at least two labels of a-z, 0-9 and inner '-'; the last has a letter)", pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 253)),
    responses((status = 200, body = Object), (status = 422, body = Problem, content_type = "application/problem+json")))]
async fn add_domain(
    State(s): State<ConfigState>,
    Path((tenant, hostname)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let d = s.store.add_domain(tenant, &hostname, &m).await?;
    Ok(Json(domain_json(&d)))
}

/// Checks the domain's TXT record; verified on success, the failure recorded otherwise.
#[utoipa::path(post, path = "/v1/config/tenants/{tenant}/domains/{hostname}/verify", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("hostname" = String, Path, description = "hostname (at least two labels of a-z, 0-9 and inner '-'; the last has a letter)", pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 253)),
    responses((status = 200, body = Object), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn verify_domain(
    State(s): State<ConfigState>,
    Path((tenant, hostname)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let d = s
        .store
        .verify_domain(tenant, &hostname, s.resolver.as_ref(), &m)
        .await?;
    Ok(Json(domain_json(&d)))
}

/// Switches a domain off.
#[utoipa::path(post, path = "/v1/config/tenants/{tenant}/domains/{hostname}/disable", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("hostname" = String, Path, description = "hostname (at least two labels of a-z, 0-9 and inner '-'; the last has a letter)", pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 253)),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn disable_domain(
    State(s): State<ConfigState>,
    Path((tenant, hostname)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let d = s.store.disable_domain(tenant, &hostname, &m).await?;
    Ok(Json(domain_json(&d)))
}

/// Removes a domain claim.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/domains/{hostname}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("hostname" = String, Path, description = "hostname (at least two labels of a-z, 0-9 and inner '-'; the last has a letter)", pattern = "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 253)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn remove_domain(
    State(s): State<ConfigState>,
    Path((tenant, hostname)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let tenant: TenantId = parse("tenant id", &tenant)?;
    Ok(Json(Written {
        version: s.store.remove_domain(tenant, &hostname, &m).await?,
    }))
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
    tenant: Option<String>,
}

/// The change log: who changed what, when and why, with before and after.
#[utoipa::path(get, path = "/v1/config/changes", tag = "config",
    params(("after" = Option<i64>, Query, description = "versions after this"), ("limit" = Option<i64>, Query, description = "1 to 1000, default 100", minimum = 1, maximum = 1000), ("tenant" = Option<String>, Query, description = "only this tenant's (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 200, body = Object)))]
async fn changes(
    State(s): State<ConfigState>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = q
        .tenant
        .as_deref()
        .map(|t| parse::<TenantId>("tenant id", t))
        .transpose()?;
    let items = s
        .store
        .changes(q.after, q.limit.unwrap_or(100), tenant)
        .await?;
    Ok(Json(json!({ "changes": items })))
}

/// The evaluating process's snapshot freshness.
#[utoipa::path(get, path = "/v1/config/status", tag = "config", responses((status = 200, body = Object)))]
async fn status(State(s): State<ConfigState>) -> Json<Value> {
    let st = s.client.status();
    Json(json!({
        "version": st.version,
        "connected": st.connected,
        "stale": st.stale,
        "since_refresh_ms": u64::try_from(st.since_refresh.as_millis()).unwrap_or(u64::MAX),
        "last_error": st.last_error,
    }))
}

#[derive(Debug, Deserialize)]
struct EvaluateQuery {
    /// Comma-separated flag keys; all flags when absent.
    flags: Option<String>,
}

/// Evaluates a tenant's flags, entitlements and settings in this process (for services
/// in other languages). `stale` says whether the snapshot may be out of date.
#[utoipa::path(get, path = "/v1/evaluate/{tenant}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("flags" = Option<String>, Query, description = "comma-separated flag keys (an unknown key is answered as not found)", pattern = "^[^\\u0000]*$")),
    responses((status = 200, body = Object)))]
async fn evaluate(
    State(s): State<ConfigState>,
    Path(tenant): Path<String>,
    Query(q): Query<EvaluateQuery>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let snap = s.client.snapshot();
    let now = OffsetDateTime::now_utc();
    let keys: Vec<String> = match &q.flags {
        Some(list) => list
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect(),
        None => snap.flag_keys().iter().map(|k| k.to_string()).collect(),
    };
    let mut flags = serde_json::Map::new();
    for k in keys {
        let v = match snap.flag(tenant, &k, now) {
            Some(e) => json!({ "variant": e.variant, "value": e.value, "reason": e.reason }),
            None => json!({ "error": "flag_not_found" }),
        };
        flags.insert(k, v);
    }
    let mut entitlements = serde_json::Map::new();
    for k in snap.entitlement_keys() {
        if let Some(r) = snap.entitlement(tenant, k.as_str(), now) {
            entitlements.insert(k.to_string(), json!({ "value": r.value, "layer": r.layer }));
        }
    }
    let mut settings = serde_json::Map::new();
    for k in snap.setting_keys() {
        if let Some(r) = snap.setting(tenant, k.as_str()) {
            settings.insert(k.to_string(), json!({ "value": r.value, "layer": r.layer }));
        }
    }
    let st = s.client.status();
    Ok(Json(json!({
        "tenant_id": tenant,
        "version": snap.version(),
        "stale": st.stale,
        "flags": flags,
        "entitlements": entitlements,
        "settings": settings,
        "branding": snap.branding(tenant),
    })))
}

/// Explains which layer decided a flag, entitlement or setting for a tenant.
#[utoipa::path(get, path = "/v1/evaluate/{tenant}/explain/{kind}/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("kind" = String, Path, description = "flag, entitlement or setting", pattern = "^(flag|entitlement|setting)$"), ("key" = String, Path, description = "key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn explain(
    State(s): State<ConfigState>,
    Path((tenant, kind, key)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    if !matches!(kind.as_str(), "flag" | "entitlement" | "setting") {
        return Err(bad(format!(
            "kind {kind:?} is unknown; expected flag, entitlement or setting"
        )));
    }
    match s.client.explain(&kind, tenant, &key) {
        Ok(e) => Ok(Json(serde_json::to_value(e).unwrap_or(Value::Null))),
        Err(e @ ExplainError::UnknownKey { .. }) => {
            Err(Problem::new(ProblemCode::NotFound, e.to_string()))
        }
    }
}
