//! Handlers, request/response types and the OpenAPI document, by resource: [`tenants`],
//! their [`lifecycle`], the [`registry`] of regions and clusters, [`signup`],
//! [`webhooks`] deliveries, a tenant's signed compliance [`report`], a tenant's archive ([`transfer`]), tenants' roles, grants and API keys ([`access`]), Stripe [`billing`], per-tenant performance [`insights`] and
//! the [`meta`] routes. What every
//! handler shares (body parsing, the tenant a path names, known plans, text checks) and
//! the document's assembly ([`ApiDoc`], [`Contract`]) live here.

pub mod access;
pub mod audit;
pub mod billing;
pub mod insights;
pub mod lifecycle;
pub mod meta;
pub mod registry;
pub mod report;
pub mod signup;
pub mod tenants;
pub mod transfer;
pub mod webhooks;

pub use billing::{stripe_webhook, BillingOutcome};
pub use lifecycle::{
    change_plan, delete, legal_hold, move_tenant, resume, set_residency, set_tenant_residency,
    suspend, ChangePlan, LegalHold, MoveTo, Reason, RegionName, Residency, Transition,
};
pub use meta::{healthz, openapi_json};
pub use registry::{
    add_cluster, add_region, list_clusters, list_regions, ClusterInput, ClusterView, RegionInput,
    RegionView,
};
pub use report::ReportDoc;
pub use signup::{availability, signup, Availability, Signup, SlugParam};
pub use tenants::{
    create_tenant, get_tenant, get_workflow, list_tenants, tenant_migrations, tenant_workflows,
    Accepted, CreateTenant, MigrationStatusView, PageParams, TenantPage, TenantView, WorkflowView,
};
pub use webhooks::{deliveries, DeliveryParams, DeliveryView};

use std::future::Future;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tenancy_core::{PlanKey, Slug, TenantId};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::OpenApi;

use crate::auth::Admin;
use crate::error::{ApiError, FieldError, Problem, ProblemCode};
use crate::{idempotency, AppState};

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// What every admin POST that adds something takes, extracted in this order (so a request
/// without an admin token is refused before its body is read): the admin, the headers
/// (for the idempotency key) and the body, parsed, with its raw JSON (what a replay with
/// the same key must match).
#[derive(Debug)]
pub struct AdminPost<T> {
    admin: Admin,
    headers: HeaderMap,
    body: T,
    raw: serde_json::Value,
}

impl<T: DeserializeOwned> FromRequest<AppState> for AdminPost<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (admin, headers, bytes) =
            <(Admin, HeaderMap, Result<Bytes, BytesRejection>)>::from_request(req, state).await?;
        let (body, raw) = parse_body(&headers, bytes).map_err(IntoResponse::into_response)?;
        Ok(AdminPost {
            admin,
            headers,
            body,
            raw,
        })
    }
}

impl<T: Send + 'static> AdminPost<T> {
    /// The admin who sent it.
    fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Runs `add` with the parsed body at most once per Idempotency-Key (scoped to the
    /// admin and `route`), its answer replayed for a retry.
    async fn run<F, Fut>(self, state: &AppState, route: &str, add: F) -> Result<Response, ApiError>
    where
        F: FnOnce(AppState, T) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>> + Send + 'static,
    {
        let scope = format!("admin:{}:POST {route}", self.admin.principal);
        let body = self.body;
        idempotency::run(state, &self.headers, scope, &self.raw, move |state| {
            add(state, body)
        })
        .await
    }
}

/// Parses a JSON body, mapping every failure to a clear problem.
fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, serde_json::Value), ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemCode::PayloadTooLarge,
                "the request body is larger than 64 KiB",
            )
        } else {
            ApiError::new(
                ProblemCode::BadRequest,
                format!("could not read the body: {e}"),
            )
        }
    })?;
    let bytes: &[u8] = if bytes.is_empty() || bytes.trim_ascii() == b"null" {
        b"{}"
    } else {
        &bytes
    };
    let json_ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| ct.starts_with("application/json"));
    if !json_ct {
        return Err(ApiError::new(
            ProblemCode::UnsupportedMediaType,
            "send the body as application/json",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::BadRequest,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let parsed = serde_json::from_value(integral_numbers(value.clone())).map_err(|e| ApiError {
        code: ProblemCode::ValidationFailed,
        detail: format!("the body does not match the expected shape: {e}"),
        errors: vec![FieldError {
            field: "body".into(),
            message: e.to_string(),
        }],
        retry_after: None,
    })?;
    Ok((parsed, value))
}

/// The same JSON with every number that is a whole number written as one (`126.0` is
/// `126`): JSON Schema's `integer` admits both spellings, and so do the integer fields
/// of this API.
fn integral_numbers(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(integral_numbers).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, integral_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

fn parse_field<T: std::str::FromStr>(field: &str, v: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>()
        .map_err(|e| ApiError::field(field, e.to_string()))
}

/// The tenant a path names, by id (canonical UUID) or by slug; anything else is not found.
async fn tenant_ref(state: &AppState, id_or_slug: &str) -> Result<TenantId, ApiError> {
    if let Ok(id) = id_or_slug.parse::<TenantId>() {
        return Ok(id);
    }
    let not_found = || {
        ApiError::new(
            ProblemCode::NotFound,
            format!("no tenant has the id or slug {id_or_slug:?}"),
        )
    };
    let slug: Slug = id_or_slug.parse().map_err(|_| not_found())?;
    let conn = state.catalog().await?;
    match tenancy_catalog::get_tenant_by_slug(&conn, &slug).await {
        Ok(t) => Ok(t.id),
        Err(tenancy_catalog::CatalogError::TenantNotFound(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

fn to_value<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The plans a tenant may be created with or moved to: the `[plans]` of the
/// configuration, the signup plan, and the plans of the configuration service.
pub fn known_plans(state: &AppState) -> std::collections::BTreeSet<String> {
    let mut plans: std::collections::BTreeSet<String> =
        state.provisioner().config().plans.keys().cloned().collect();
    plans.insert(state.signup().plan.clone());
    if let Some(config) = state.config() {
        plans.extend(
            config
                .client
                .snapshot()
                .plan_keys()
                .into_iter()
                .map(|k| k.to_string()),
        );
    }
    plans
}

/// Parses a plan field and refuses a plan that is not known ([`known_plans`]).
fn known_plan(state: &AppState, field: &str, plan: &str) -> Result<PlanKey, ApiError> {
    let key: PlanKey = parse_field(field, plan)?;
    let known = known_plans(state);
    if !known.contains(key.as_str()) {
        return Err(ApiError::field(
            field,
            format!(
                "plan {plan:?} does not exist; the plans are: {}",
                known.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(key)
}

/// A text field of `max` characters at most, not only spaces, with no control characters.
fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.chars().count() > max {
        return Err(ApiError::field(
            field,
            format!("must be 1 to {max} characters, not only spaces"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A display name is 1 to 200 characters once trimmed, with no control characters.
fn check_display_name(name: &str) -> Result<(), ApiError> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 200 {
        return Err(ApiError::field(
            "display_name",
            "must be 1 to 200 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "display_name",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The OpenAPI schema of a new tenant's `slug` (in [`tenants::CreateTenant`] and
/// [`signup::Signup`]): what [`Slug`] parses, but for the reserved words, which the served
/// document adds.
fn slug_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some(
            "3-40 characters: a-z, 0-9, single '-'; starts with a letter; not a reserved word.",
        ))
        .pattern(Some("^[a-z][a-z0-9]*(-[a-z0-9]+)*$"))
        .min_length(Some(3))
        .max_length(Some(40))
        .build()
}

/// The OpenAPI schema of a new tenant's `display_name` (in [`tenants::CreateTenant`] and
/// [`signup::Signup`]): what [`check_display_name`] accepts.
fn display_name_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some(
            "1 to 200 characters, not only spaces, no control characters.",
        ))
        .pattern(Some(
            "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        ))
        .min_length(Some(1))
        .max_length(Some(200))
        .build()
}

/// The OpenAPI document of the control plane.
#[derive(OpenApi, Debug)]
#[openapi(
    info(title = "tenancy control plane", description = "Regions, clusters, tenants and their lifecycle workflows. Errors are RFC 9457 problem documents; every state-changing POST takes an Idempotency-Key."),
    paths(meta::healthz, crate::health::livez, crate::health::readyz, crate::metrics::metrics_text, meta::openapi_json, registry::list_regions, registry::add_region, registry::list_clusters, registry::add_cluster, tenants::list_tenants, tenants::create_tenant, tenants::get_tenant, tenants::tenant_workflows, tenants::tenant_migrations, tenants::get_workflow, lifecycle::suspend, lifecycle::resume, lifecycle::delete, lifecycle::change_plan, lifecycle::move_tenant, lifecycle::set_residency, lifecycle::legal_hold, audit::tenant_audit, transfer::export_tenant, access::list_roles, access::get_role, access::create_role, access::delete_role, access::list_grants, access::grant, access::revoke, access::list_keys, access::revoke_key, webhooks::deliveries, insights::push_snapshot, insights::tenants, insights::push_anomalies, insights::anomalies, signup::availability, signup::signup, billing::stripe_webhook),
    components(schemas(TenantView, WorkflowView, MigrationStatusView, Accepted, TenantPage, CreateTenant, Signup, Reason, ChangePlan, MoveTo, Residency, RegionName, LegalHold, RegionView, RegionInput, ClusterView, ClusterInput, Availability, DeliveryView, BillingOutcome, transfer::TenantArchive, audit::AuditPage, audit::AuditEventView, audit::CheckpointView, access::RoleView, access::RolePage, access::NewRole, access::GrantView, access::GrantPage, access::GrantInput, access::ApiKeyView, access::ApiKeyPage, insights::SnapshotAccepted, tenancy_insights::Snapshot, tenancy_insights::Counts, tenancy_insights::TenantStats, tenancy_insights::SketchWire, tenancy_insights::Report, tenancy_insights::ClusterReport, tenancy_insights::TenantReport, insights::AnomaliesAccepted, insights::AnomalyList, tenancy_insights::anomaly::DetectionBatch, tenancy_insights::anomaly::Anomaly, tenancy_insights::anomaly::Detection, tenancy_insights::anomaly::Evidence, tenancy_insights::anomaly::AnomalyKind, tenancy_insights::anomaly::Severity, Problem, FieldError)),
    modifiers(&SecurityAddon, &ReportDoc, &Contract),
    tags((name = "tenants"), (name = "registry"), (name = "signup"), (name = "billing"), (name = "webhooks"), (name = "insights"), (name = "meta"))
)]
pub struct ApiDoc;

/// Completes the contract: the `Idempotency-Key` header of every state-changing POST
/// (required, its pattern, the 409 while a request with the key runs and the 422 when it
/// is reused with another body) and every operation's error responses
/// ([`tenancy_problem::openapi::document_errors`]).
#[derive(Debug)]
pub struct Contract;

impl utoipa::Modify for Contract {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use tenancy_problem::openapi::problem_response;
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{HeaderBuilder, ObjectBuilder, Required, Type};
        for item in openapi.paths.paths.values_mut() {
            let Some(op) = item.post.as_mut() else {
                continue;
            };
            let mut idempotent = false;
            for p in op.parameters.iter_mut().flatten() {
                if p.parameter_in == ParameterIn::Header && p.name == "Idempotency-Key" {
                    idempotent = true;
                    p.required = Required::True;
                    p.description = Some(
                        "Client-chosen key of this request (1 to 255 visible ASCII characters, e.g. a UUID), required: the same key with the same body replays the first answer".to_owned(),
                    );
                    p.schema = Some(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(IDEMPOTENCY_KEY_PATTERN))
                            .min_length(Some(1))
                            .max_length(Some(255))
                            .into(),
                    );
                }
            }
            if !idempotent {
                continue;
            }
            let retry = HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before retrying"))
                .build();
            let in_progress = op
                .responses
                .responses
                .entry("409".to_owned())
                .or_insert_with(|| problem_response("Conflict"));
            if let utoipa::openapi::RefOr::T(r) = in_progress {
                r.description = format!(
                    "{}; or a request with this Idempotency-Key is still being processed (`idempotency-in-progress`, see Retry-After)",
                    if r.description.trim().is_empty() { "Conflict" } else { r.description.trim() }
                );
                r.headers.insert("Retry-After".to_owned(), retry);
            }
            op.responses.responses.entry("422".to_owned()).or_insert_with(|| {
                problem_response("Validation failed (`errors` names the fields), or the Idempotency-Key was used with another body (`idempotency-key-reused`)")
            });
        }
        tenancy_problem::openapi::document_errors(openapi);
    }
}

/// What an `Idempotency-Key` may be (see [`idempotency::key_from`]).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// Adds the admin bearer scheme.
#[derive(Debug)]
pub struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Admin token; the server stores only its SHA-256"))
                    .build(),
            ),
        );
    }
}
