//! Handlers, request/response types and the OpenAPI document.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenancy_catalog::{NewCluster, NewTenant, Tenant, Workflow, WorkflowKind};
use tenancy_core::{Placement, PlanKey, RegionId, Slug, TenantId};
use tenancy_provision::ProvisionRequest;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::{IntoParams, OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::{ApiError, FieldError, Problem, ProblemCode};
use crate::guard::ClientIp;
use crate::{idempotency, stripe, AppState};

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub plan: String,
    pub region: String,
    /// `pooled`, `schema` or `dedicated`.
    pub placement: String,
    pub cluster_id: Uuid,
    /// `provisioning`, `active`, `suspended`, `deleting` or `deleted`.
    pub state: String,
    pub schema_name: Option<String>,
    pub database_name: Option<String>,
    pub billing_customer: Option<String>,
    pub legal_hold: bool,
    pub purge_after: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.as_uuid(),
            slug: t.slug.to_string(),
            display_name: t.display_name.clone(),
            plan: t.plan.to_string(),
            region: t.region.to_string(),
            placement: t.placement.to_string(),
            cluster_id: t.cluster_id,
            state: t.state.to_string(),
            schema_name: t.schema_name.clone(),
            database_name: t.database_name.clone(),
            billing_customer: t.billing_customer.clone(),
            legal_hold: t.legal_hold,
            purge_after: t.purge_after.map(ts),
            created_at: ts(t.created_at),
            updated_at: ts(t.updated_at),
        }
    }
}

/// A workflow (provision or lifecycle operation).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `provision`, `suspend`, `resume`, `change_plan`, `delete` or `purge`.
    pub kind: String,
    /// `pending`, `running`, `compensating`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub step: i32,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<&Workflow> for WorkflowView {
    fn from(w: &Workflow) -> Self {
        WorkflowView {
            id: w.id,
            tenant_id: w.tenant_id.as_uuid(),
            kind: w.kind.to_string(),
            status: w.status.to_string(),
            step: w.step,
            attempts: w.attempts,
            last_error: w.last_error.clone(),
            created_at: ts(w.created_at),
            finished_at: w.finished_at.map(ts),
        }
    }
}

/// A queued operation: the tenant and the workflow that carries it out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub tenant: TenantView,
    pub workflow: WorkflowView,
}

/// One page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub items: Vec<TenantView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Create a tenant (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// 3-40 characters: a-z, 0-9, single '-'; starts with a letter; not a reserved word.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 3,
        max_length = 40
    )]
    pub slug: String,
    /// 1 to 200 characters, not only spaces, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 200
    )]
    pub display_name: String,
    /// A configured plan.
    #[schema(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 40)]
    pub plan: String,
    /// A registered region.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: String,
    /// `pooled`, `schema` or `dedicated`.
    #[schema(pattern = "^(pooled|schema|dedicated)$")]
    pub placement: String,
}

/// Self-service signup.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    /// 3-40 characters: a-z, 0-9, single '-'; starts with a letter; not a reserved word.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 3,
        max_length = 40
    )]
    pub slug: String,
    /// 1 to 200 characters, not only spaces, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 200
    )]
    pub display_name: String,
    /// A registered region; defaults to the configured signup region.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: Option<String>,
}

/// Optional reason of a lifecycle operation.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Free text recorded with the workflow (at most 1000 characters, no NUL).
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    pub reason: Option<String>,
}

impl Reason {
    /// A reason is at most 1000 characters.
    fn check(&self) -> Result<(), ApiError> {
        match &self.reason {
            Some(r) if r.chars().count() > 1000 => {
                Err(ApiError::field("reason", "must be at most 1000 characters"))
            }
            _ => Ok(()),
        }
    }
}

/// New plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlan {
    /// A configured plan.
    #[schema(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 40)]
    pub plan: String,
}

/// Legal hold switch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    pub hold: bool,
}

/// A region.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionView {
    pub id: String,
    pub display_name: String,
}

/// A region to register (or whose display name to change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionInput {
    /// 2-32 characters: a-z, 0-9, single '-'; starts with a letter.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub id: String,
    /// 1 to 50 characters, not only spaces, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 50
    )]
    pub display_name: String,
}

/// A cluster of a region.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    pub id: Uuid,
    pub name: String,
    pub region: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub capacity: i32,
}

/// A cluster to register in a region (or whose connection settings to change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInput {
    /// Ignored (the server assigns cluster ids).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// 1-63 characters: a-z, 0-9, '_' and '-'; starts with a letter. A cluster of the
    /// same name is updated.
    #[schema(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 63)]
    pub name: String,
    /// A registered region.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: String,
    /// Host name, address or socket directory (not only spaces, no control characters).
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 255
    )]
    pub host: String,
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Database name (not only spaces, no control characters).
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 63
    )]
    pub dbname: String,
    /// Tenants the cluster takes (at least 1).
    #[schema(minimum = 1, maximum = 2147483647)]
    pub capacity: i32,
}

/// Slug availability.
#[derive(Debug, Serialize, ToSchema)]
pub struct Availability {
    pub slug: String,
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// One webhook delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub webhook_id: String,
    pub receiver: String,
    pub tenant_id: Option<Uuid>,
    pub event_type: String,
    pub attempt: i32,
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub ms: f64,
}

/// Result of a billing webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingOutcome {
    pub received: bool,
    /// The event id was already processed.
    pub duplicate: bool,
    /// What it caused (`provision`, `suspend`, …, or `ignored: <why>`).
    pub outcome: String,
    pub workflow_id: Option<Uuid>,
}

/// Pagination.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Slug after which to start.
    #[param(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 3,
        max_length = 40
    )]
    pub after: Option<String>,
}

/// Slug to check.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlugParam {
    /// Any text (without NUL): the answer says whether it is an available slug, and why
    /// not.
    #[param(pattern = "^[^\\u0000]*$")]
    pub slug: String,
}

/// Delivery log filter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only this tenant's deliveries.
    pub tenant: Option<Uuid>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
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

#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "Alive"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "This document"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn openapi_json(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut doc = state.openapi();
    // Without the catalog the document is still served, without the list of regions.
    let regions = match state.catalog().await {
        Ok(conn) => tenancy_catalog::list_regions(&conn)
            .await
            .map(|rs| {
                rs.into_iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<String>>()
            })
            .map_err(|e| tracing::warn!(error = %e, "listing regions for the OpenAPI document"))
            .ok(),
        Err(_) => None,
    };
    refine_document(&mut doc, regions.as_deref(), &known_plans(&state));
    Ok(Json(doc))
}

/// What the served document says beyond the static one: the regions and plans a request
/// may name now (as enums of the fields that name them), and the reserved words a slug
/// may not be. Regions and plans are only ever added, so a value listed stays valid.
fn refine_document(
    doc: &mut serde_json::Value,
    regions: Option<&[String]>,
    plans: &std::collections::BTreeSet<String>,
) {
    let reserved: Vec<&str> = tenancy_core::ids::RESERVED_SLUGS.to_vec();
    let schemas = &mut doc["components"]["schemas"];
    let mut fields: Vec<(&str, &str, serde_json::Value)> = vec![
        ("CreateTenant", "slug", json!({"not": {"enum": reserved}})),
        ("Signup", "slug", json!({"not": {"enum": reserved}})),
        ("CreateTenant", "plan", json!({"enum": plans})),
        ("ChangePlan", "plan", json!({"enum": plans})),
    ];
    if let Some(regions) = regions {
        for schema in ["CreateTenant", "Signup", "ClusterInput"] {
            fields.push((schema, "region", json!({ "enum": regions })));
        }
    }
    for (schema, field, extra) in fields {
        let Some(prop) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(|f| f.as_object_mut())
        else {
            continue;
        };
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                prop.insert(k.clone(), v.clone());
            }
        }
    }
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

#[utoipa::path(get, path = "/v1/regions", tag = "registry", security(("admin" = [])),
    responses((status = 200, body = [RegionView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_regions(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<RegionView>>, ApiError> {
    let conn = state.catalog().await?;
    let rs = tenancy_catalog::list_regions(&conn).await?;
    Ok(Json(
        rs.into_iter()
            .map(|r| RegionView {
                id: r.id.to_string(),
                display_name: r.display_name,
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/regions", tag = "registry", security(("admin" = [])), request_body = RegionInput,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key; same key and body replay the first response")),
    responses((status = 201, body = RegionView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn add_region(
    admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, raw): (RegionInput, _) = parse_body(&headers, body)?;
    let scope = format!("admin:{}:POST /v1/regions", admin.principal);
    idempotency::run(&state, &headers, scope, &raw, move |state| async move {
        let id: RegionId = parse_field("id", &req.id)?;
        check_text("display_name", &req.display_name, 50)?;
        let conn = state.catalog().await?;
        let r = tenancy_catalog::add_region(&conn, &id, &req.display_name).await?;
        Ok((
            StatusCode::CREATED,
            to_value(&RegionView {
                id: r.id.to_string(),
                display_name: r.display_name,
            }),
        ))
    })
    .await
}

fn cluster_view(c: tenancy_catalog::ClusterRecord) -> ClusterView {
    ClusterView {
        id: c.id,
        name: c.name,
        region: c.region.to_string(),
        host: c.host,
        port: c.port,
        dbname: c.dbname,
        capacity: c.capacity,
    }
}

#[utoipa::path(get, path = "/v1/clusters", tag = "registry", security(("admin" = [])),
    responses((status = 200, body = [ClusterView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_clusters(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<ClusterView>>, ApiError> {
    let conn = state.catalog().await?;
    Ok(Json(
        tenancy_catalog::list_clusters(&conn)
            .await?
            .into_iter()
            .map(cluster_view)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/clusters", tag = "registry", security(("admin" = [])), request_body = ClusterInput,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 201, body = ClusterView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn add_cluster(
    admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, raw): (ClusterInput, _) = parse_body(&headers, body)?;
    let scope = format!("admin:{}:POST /v1/clusters", admin.principal);
    idempotency::run(&state, &headers, scope, &raw, move |state| async move {
        let region: RegionId = parse_field("region", &req.region)?;
        check_text("host", &req.host, 255)?;
        check_text("dbname", &req.dbname, 63)?;
        if req.port == 0 {
            return Err(ApiError::field("port", "must be 1 to 65535"));
        }
        let conn = state.catalog().await?;
        let c = tenancy_catalog::add_cluster(
            &conn,
            &NewCluster {
                name: req.name.clone(),
                region,
                host: req.host.clone(),
                port: req.port,
                dbname: req.dbname.clone(),
                capacity: req.capacity,
            },
        )
        .await?;
        Ok((StatusCode::CREATED, to_value(&cluster_view(c))))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("admin" = [])), params(PageParams),
    responses((status = 200, body = TenantPage), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_tenants(
    _: Admin,
    State(state): State<AppState>,
    Query(p): Query<PageParams>,
) -> Result<Json<TenantPage>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 200"));
    }
    let after: Option<Slug> = p
        .after
        .as_deref()
        .map(|a| parse_field("after", a))
        .transpose()?;
    let conn = state.catalog().await?;
    let ts = tenancy_catalog::list_tenants(&conn, after.as_ref(), limit + 1).await?;
    let more = ts.len() as i64 > limit;
    let items: Vec<TenantView> = ts
        .iter()
        .take(limit as usize)
        .map(TenantView::from)
        .collect();
    let next_after = if more {
        items.last().map(|t| t.slug.clone())
    } else {
        None
    };
    Ok(Json(TenantPage { items, next_after }))
}

#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", security(("admin" = [])), request_body = CreateTenant,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant(
    admin: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, raw): (CreateTenant, _) = parse_body(&headers, body)?;
    let scope = format!("admin:{}:POST /v1/tenants", admin.principal);
    let actor = format!("admin:{}", admin.principal);
    idempotency::run(&state, &headers, scope, &raw, move |state| async move {
        let new = NewTenant {
            id: None,
            slug: parse_field("slug", &req.slug)?,
            display_name: req.display_name.clone(),
            plan: known_plan(&state, "plan", &req.plan)?,
            region: parse_field("region", &req.region)?,
            placement: parse_field("placement", &req.placement)?,
        };
        provision(&state, new, None, None, &actor).await
    })
    .await
}

async fn provision(
    state: &AppState,
    new: NewTenant,
    customer: Option<String>,
    sub: Option<String>,
    actor: &str,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    check_display_name(&new.display_name)?;
    let mut conn = state.catalog().await?;
    let (t, wf) = state
        .provisioner()
        .provision(
            &mut conn,
            &ProvisionRequest {
                tenant: new,
                billing_customer: customer,
                billing_subscription: sub,
            },
            actor,
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        to_value(&Accepted {
            tenant: (&t).into(),
            workflow: (&wf).into(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", security(("admin" = [])), params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40)),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_tenant(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    let id = tenant_ref(&state, &id).await?;
    let conn = state.catalog().await?;
    Ok(Json(
        (&tenancy_catalog::get_tenant(&conn, id).await?).into(),
    ))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/workflows", tag = "tenants", security(("admin" = [])), params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40)),
    responses((status = 200, body = [WorkflowView]), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn tenant_workflows(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<WorkflowView>>, ApiError> {
    let id = tenant_ref(&state, &id).await?;
    let conn = state.catalog().await?;
    tenancy_catalog::get_tenant(&conn, id).await?;
    Ok(Json(
        tenancy_catalog::tenant_workflows(&conn, id)
            .await?
            .iter()
            .map(WorkflowView::from)
            .collect(),
    ))
}

/// A tenant's place in the app-migration ledger (`tenancy migrate`).
#[derive(Debug, Serialize, ToSchema)]
pub struct MigrationStatusView {
    pub tenant_id: Uuid,
    /// `pooled`, `schema` or `dedicated`. A pooled tenant's tables are shared: the
    /// status is its cluster's pooled tables.
    pub placement: String,
    /// The app version the tenant's storage is known to be at (0: never migrated).
    pub version: i32,
    /// SHA-256 of that migration's SQL.
    pub checksum: Option<String>,
    pub applied_at: Option<String>,
    /// Duration of the last migration transaction, in milliseconds.
    pub duration_ms: Option<f64>,
    /// The last failure since the last success.
    pub error: Option<String>,
    /// The version whose migration failed.
    pub error_version: Option<i32>,
    pub failed_at: Option<String>,
    pub updated_at: Option<String>,
}

#[utoipa::path(get, path = "/v1/tenants/{id}/migrations", tag = "tenants", security(("admin" = [])), params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40)),
    responses((status = 200, body = MigrationStatusView, description = "The tenant's migration status (version 0 and no timestamps when the ledger has no row yet)"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn tenant_migrations(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<MigrationStatusView>, ApiError> {
    let id = tenant_ref(&state, &id).await?;
    let conn = state.catalog().await?;
    let tenant = tenancy_catalog::get_tenant(&conn, id).await?;
    // Pooled tenants share their cluster's tables: that target's row is theirs.
    let target = match tenant.placement {
        Placement::Pooled => {
            tenancy_catalog::pooled_migration_status(&*conn, tenant.cluster_id).await?
        }
        _ => tenancy_catalog::tenant_migration_status(&*conn, id).await?,
    };
    Ok(Json(match target {
        Some(s) => MigrationStatusView {
            tenant_id: id.as_uuid(),
            placement: tenant.placement.to_string(),
            version: s.version,
            checksum: s.checksum,
            applied_at: s.applied_at.map(ts),
            duration_ms: s.duration_ms,
            error: s.error,
            error_version: s.error_version,
            failed_at: s.failed_at.map(ts),
            updated_at: Some(ts(s.updated_at)),
        },
        None => MigrationStatusView {
            tenant_id: id.as_uuid(),
            placement: tenant.placement.to_string(),
            version: 0,
            checksum: None,
            applied_at: None,
            duration_ms: None,
            error: None,
            error_version: None,
            failed_at: None,
            updated_at: None,
        },
    }))
}

#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "tenants", security(("admin" = [])), params(("id" = String, Path, description = "Workflow id", pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 200, body = WorkflowView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_workflow(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::new(ProblemCode::NotFound, "workflow ids are UUIDs"))?;
    let conn = state.catalog().await?;
    let wf = tenancy_catalog::get_workflow(&conn, id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ProblemCode::NotFound,
                format!("workflow {id} does not exist"),
            )
        })?;
    Ok(Json((&wf).into()))
}

/// Whether a lifecycle workflow of `kind` can do anything for a tenant in `state` (the
/// same rules its workflow applies; refusing here answers 409 instead of queueing a
/// workflow that is then cancelled).
fn lifecycle_allowed(kind: WorkflowKind, state: tenancy_core::TenantState) -> bool {
    use tenancy_core::TenantState::*;
    match kind {
        WorkflowKind::Suspend | WorkflowKind::Resume => matches!(state, Active | Suspended),
        WorkflowKind::ChangePlan => !matches!(state, Deleting | Deleted),
        WorkflowKind::Delete => matches!(state, Active | Suspended | Deleting),
        _ => state != Deleted,
    }
}

#[allow(clippy::too_many_arguments)]
async fn lifecycle(
    state: &AppState,
    admin: &Admin,
    headers: &HeaderMap,
    id: &str,
    op: &'static str,
    kind: WorkflowKind,
    raw: serde_json::Value,
    input: serde_json::Value,
) -> Result<Response, ApiError> {
    let id = tenant_ref(state, id).await?;
    let scope = format!("admin:{}:POST /v1/tenants/{id}/{op}", admin.principal);
    let actor = format!("admin:{}", admin.principal);
    idempotency::run(state, headers, scope, &raw, move |state| async move {
        let mut conn = state.catalog().await?;
        let t = tenancy_catalog::get_tenant(&conn, id).await?;
        if !lifecycle_allowed(kind, t.state) {
            return Err(ApiError::new(
                ProblemCode::Conflict,
                format!(
                    "cannot {} tenant {id}: it is {}",
                    match kind {
                        WorkflowKind::ChangePlan => "change the plan of",
                        _ => op,
                    },
                    t.state
                ),
            ));
        }
        let wf = state
            .provisioner()
            .enqueue(&mut conn, id, kind, &input, &actor)
            .await?;
        Ok((
            StatusCode::ACCEPTED,
            to_value(&Accepted {
                tenant: (&t).into(),
                workflow: (&wf).into(),
            }),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = "tenants", security(("admin" = [])), request_body = Option<Reason>,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn suspend(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (r, raw): (Reason, _) = parse_body(&headers, body)?;
    r.check()?;
    lifecycle(
        &state,
        &admin,
        &headers,
        &id,
        "suspend",
        WorkflowKind::Suspend,
        raw,
        json!({"reason": r.reason}),
    )
    .await
}

#[utoipa::path(post, path = "/v1/tenants/{id}/resume", tag = "tenants", security(("admin" = [])), request_body = Option<Reason>,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn resume(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (r, raw): (Reason, _) = parse_body(&headers, body)?;
    r.check()?;
    lifecycle(
        &state,
        &admin,
        &headers,
        &id,
        "resume",
        WorkflowKind::Resume,
        raw,
        json!({}),
    )
    .await
}

#[utoipa::path(post, path = "/v1/tenants/{id}/delete", tag = "tenants", security(("admin" = [])), request_body = Option<Reason>,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted, description = "Soft delete queued; data is purged after the retention period unless a legal hold is set"), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (r, raw): (Reason, _) = parse_body(&headers, body)?;
    r.check()?;
    lifecycle(
        &state,
        &admin,
        &headers,
        &id,
        "delete",
        WorkflowKind::Delete,
        raw,
        json!({"reason": r.reason}),
    )
    .await
}

#[utoipa::path(post, path = "/v1/tenants/{id}/plan", tag = "tenants", security(("admin" = [])), request_body = ChangePlan,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn change_plan(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (r, raw): (ChangePlan, _) = parse_body(&headers, body)?;
    let plan: PlanKey = known_plan(&state, "plan", &r.plan)?;
    lifecycle(
        &state,
        &admin,
        &headers,
        &id,
        "plan",
        WorkflowKind::ChangePlan,
        raw,
        json!({"plan": plan.as_str()}),
    )
    .await
}

#[utoipa::path(post, path = "/v1/tenants/{id}/legal-hold", tag = "tenants", security(("admin" = [])), request_body = LegalHold,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn legal_hold(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (r, raw): (LegalHold, _) = parse_body(&headers, body)?;
    let id = tenant_ref(&state, &id).await?;
    let scope = format!("admin:{}:POST /v1/tenants/{id}/legal-hold", admin.principal);
    let actor = format!("admin:{}", admin.principal);
    idempotency::run(&state, &headers, scope, &raw, move |state| async move {
        let mut conn = state.catalog().await?;
        let t = tenancy_catalog::set_legal_hold(&mut conn, id, r.hold, &actor).await?;
        Ok((StatusCode::OK, to_value(&TenantView::from(&t))))
    })
    .await
}

#[utoipa::path(get, path = "/v1/webhook-deliveries", tag = "webhooks", security(("admin" = [])), params(DeliveryParams),
    responses((status = 200, body = [DeliveryView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let tenant = p
        .tenant
        .map(TenantId::from_uuid)
        .transpose()
        .map_err(|e| ApiError::field("tenant", e.to_string()))?;
    let conn = state.catalog().await?;
    let log = tenancy_catalog::deliveries(&conn, tenant, limit).await?;
    Ok(Json(
        log.into_iter()
            .map(|d| DeliveryView {
                webhook_id: d.webhook_id,
                receiver: d.receiver,
                tenant_id: d.tenant_id.map(|t| t.as_uuid()),
                event_type: d.event_type,
                attempt: d.attempt,
                http_status: d.http_status,
                error: d.error,
                ms: d.ms,
            })
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/signup/availability", tag = "signup", params(SlugParam),
    responses((status = 200, body = Availability),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit of this client or of everyone (limits.availability)",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn availability(
    State(state): State<AppState>,
    Query(p): Query<SlugParam>,
) -> Result<Json<Availability>, ApiError> {
    let slug = match p.slug.parse::<Slug>() {
        Ok(s) => s,
        Err(e) => {
            return Ok(Json(Availability {
                slug: p.slug,
                available: false,
                reason: Some(e.to_string()),
            }))
        }
    };
    let conn = state.catalog().await?;
    let taken = tenancy_catalog::slug_taken(&conn, &slug).await?;
    Ok(Json(Availability {
        slug: p.slug,
        available: !taken,
        reason: taken.then(|| "already taken".to_owned()),
    }))
}

#[utoipa::path(post, path = "/v1/signup", tag = "signup", request_body = Signup,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key (required)")),
    responses((status = 202, body = Accepted), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.signup) or this client's signup quota (signup.max_signups_per_ip) reached",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying"))),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "Signup quota of everyone together (signup.max_signups) reached",
               headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn signup(
    State(state): State<AppState>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (req, raw): (Signup, _) = parse_body(&headers, body)?;
    idempotency::run(
        &state,
        &headers,
        "signup:POST /v1/signup".into(),
        &raw,
        move |state| async move {
            let s = state.signup();
            let region = req.region.clone().unwrap_or_else(|| s.region.clone());
            let new = NewTenant {
                id: None,
                slug: parse_field("slug", &req.slug)?,
                display_name: req.display_name.clone(),
                plan: parse_field("plan", &s.plan)?,
                region: parse_field("region", &region)?,
                placement: parse_field::<Placement>("placement", &s.placement)?,
            };
            check_display_name(&new.display_name)?;
            // The actor records the client address, which the quota counts by.
            let actor = match client.label() {
                Some(ip) => format!("signup:{ip}"),
                None => "signup".to_owned(),
            };
            let mut conn = state.catalog().await?;
            let tx = conn
                .transaction()
                .await
                .map_err(|e| ApiError::internal("starting a transaction", &e))?;
            signup_quota(&tx, s, client.label().is_some().then_some(actor.as_str())).await?;
            let (t, wf) = state
                .provisioner()
                .provision_in(
                    &tx,
                    &ProvisionRequest {
                        tenant: new,
                        billing_customer: None,
                        billing_subscription: None,
                    },
                    &actor,
                )
                .await?;
            tx.commit()
                .await
                .map_err(|e| ApiError::internal("committing a signup", &e))?;
            state.provisioner().wake();
            Ok((
                StatusCode::ACCEPTED,
                to_value(&Accepted {
                    tenant: (&t).into(),
                    workflow: (&wf).into(),
                }),
            ))
        },
    )
    .await
}

/// Refuses the signup when the quota of everyone (503) or of this client (`actor`, 429)
/// is reached within the window; both count the signups recorded in the catalog (their
/// provision workflows), so restarts and several control-plane processes share them. The
/// check holds a transaction-scoped advisory lock until the caller commits the new
/// tenant, so concurrent signups cannot both take the last place.
async fn signup_quota(
    tx: &tokio_postgres::Transaction<'_>,
    cfg: &crate::SignupConfig,
    actor: Option<&str>,
) -> Result<(), ApiError> {
    if cfg.max_signups == 0 && cfg.max_signups_per_ip == 0 {
        return Ok(());
    }
    let db = |e: tokio_postgres::Error| ApiError::internal("counting signups", &e);
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('tenancy_control.signup_quota', 0))",
        &[],
    )
    .await
    .map_err(db)?;
    let window = cfg.quota_window_secs as f64;
    // Seconds until the oldest counted signup (of everyone, of this client) leaves the
    // window: when a refused client may try again.
    let row = tx
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE actor = $2::text),
                    extract(epoch FROM min(created_at) - (now() - $1::float8 * interval '1 second'))::float8,
                    extract(epoch FROM min(created_at) FILTER (WHERE actor = $2)
                                       - (now() - $1::float8 * interval '1 second'))::float8
               FROM tenancy_catalog.workflows
              WHERE kind = 'provision' AND actor LIKE 'signup%'
                AND created_at > now() - $1::float8 * interval '1 second'",
            &[&window, &actor.unwrap_or("")],
        )
        .await
        .map_err(db)?;
    let (all, mine): (i64, i64) = (row.get(0), row.get(1));
    let wait = |secs: Option<f64>| {
        std::time::Duration::from_secs_f64(secs.unwrap_or(window).clamp(1.0, window.max(1.0)))
    };
    if actor.is_some() && cfg.max_signups_per_ip > 0 && mine >= i64::from(cfg.max_signups_per_ip) {
        return Err(ApiError::new(
            ProblemCode::SignupQuotaExceeded,
            format!(
                "this address has signed up {mine} times within {} hours, the most allowed; retry after the number of seconds in Retry-After",
                cfg.quota_window_secs / 3600
            ),
        )
        .retry_after(wait(row.get(3))));
    }
    if cfg.max_signups > 0 && all >= i64::from(cfg.max_signups) {
        return Err(ApiError::new(
            ProblemCode::SignupsPaused,
            "signups are paused: the number of signups allowed in this period is reached; retry after the number of seconds in Retry-After",
        )
        .retry_after(wait(row.get(2))));
    }
    Ok(())
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

#[utoipa::path(post, path = "/v1/billing/stripe", tag = "billing",
    request_body(content = Object, description = "The Stripe event, as Stripe sends it (its signature covers the exact bytes)"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.payload\">", min_length = 1)),
    responses((status = 200, body = BillingOutcome), (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature is missing, malformed, wrong or too old (`invalid-signature`), or the event is not JSON"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "Billing webhooks are not configured (no Stripe signing secret)"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|_| {
        ApiError::new(
            ProblemCode::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        )
    })?;
    let Some(header) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return Err(ApiError::new(
            ProblemCode::InvalidSignature,
            "the Stripe-Signature header is missing",
        ));
    };
    let Some(secret) = state.stripe_secret() else {
        return Err(ApiError::new(
            ProblemCode::NotFound,
            "billing webhooks are not configured",
        ));
    };
    stripe::verify(
        &secret,
        header,
        &bytes,
        tenancy_provision::webhook::unix_now(),
        state.stripe_tolerance(),
    )
    .map_err(|e| ApiError::new(ProblemCode::InvalidSignature, e.to_string()))?;
    let event: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::BadRequest,
            format!("the event is not JSON: {e}"),
        )
    })?;
    let outcome = crate::billing::handle(&state, &event).await?;
    Ok((StatusCode::OK, Json(outcome)).into_response())
}

/// The OpenAPI document of the control plane.
#[derive(OpenApi, Debug)]
#[openapi(
    info(title = "tenancy control plane", description = "Regions, clusters, tenants and their lifecycle workflows. Errors are RFC 9457 problem documents; every state-changing POST takes an Idempotency-Key."),
    paths(healthz, crate::health::livez, crate::health::readyz, crate::metrics::metrics_text, openapi_json, list_regions, add_region, list_clusters, add_cluster, list_tenants, create_tenant, get_tenant, tenant_workflows, tenant_migrations, get_workflow, suspend, resume, delete, change_plan, legal_hold, deliveries, availability, signup, stripe_webhook),
    components(schemas(TenantView, WorkflowView, MigrationStatusView, Accepted, TenantPage, CreateTenant, Signup, Reason, ChangePlan, LegalHold, RegionView, RegionInput, ClusterView, ClusterInput, Availability, DeliveryView, BillingOutcome, Problem, FieldError)),
    modifiers(&SecurityAddon, &Contract),
    tags((name = "tenants"), (name = "registry"), (name = "signup"), (name = "billing"), (name = "webhooks"), (name = "meta"))
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
