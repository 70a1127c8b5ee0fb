//! Lifecycle transitions of a tenant: suspend, resume, delete (one handler, parameterised
//! by the transition), plan changes and legal holds.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use tenancy_catalog::WorkflowKind;
use tenancy_core::{PlanKey, RegionId};
use utoipa::ToSchema;

use super::tenants::{Accepted, TenantView};
use super::{known_plan, parse_body, tenant_ref, to_value};
use crate::auth::Admin;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::{idempotency, AppState};

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

/// Where to move a tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTo {
    /// The placement to move to.
    #[schema(pattern = "^(pooled|schema|dedicated)$")]
    pub to: String,
    /// The target cluster's name (default: the tenant's cluster when the region stays,
    /// else an accepting cluster of the new region).
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,62}$", min_length = 1, max_length = 63)]
    pub cluster: Option<String>,
    /// The target region (default: the cluster's, else the tenant's); it must be in the
    /// tenant's residency policy.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: Option<String>,
}

/// A tenant's residency policy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    /// The registered regions the tenant's data may live in, its current region among
    /// them (1 to 64, no duplicates); `null` clears the policy (its current region only).
    /// Required: a body without it (or no body) is refused rather than read as a clear.
    #[schema(min_items = 1, max_items = 64, inline, required = true)]
    #[serde(deserialize_with = "Option::deserialize")]
    pub regions: Option<Vec<RegionName>>,
}

/// A region id.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = "^(?=.{2,32}$)[a-z][a-z0-9]*(-[a-z0-9]+)*$")]
pub struct RegionName(pub String);

/// Legal hold switch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// true sets the legal hold (a purge is then refused); false lifts it.
    pub hold: bool,
}

/// What every lifecycle route and every access change (`access`) takes, extracted in
/// this order (so a request without an admin token is refused before its body is read):
/// the admin, the tenant as the path names it, the headers (for the idempotency key) and
/// the body, parsed, with its raw JSON (what a replay with the same key must match).
#[derive(Debug)]
pub struct TenantPost<T> {
    pub(super) admin: Admin,
    pub(super) id: String,
    pub(super) headers: HeaderMap,
    pub(super) body: T,
    pub(super) raw: serde_json::Value,
}

impl<T: DeserializeOwned> FromRequest<AppState> for TenantPost<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let admin = Admin::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(id) = Path::<String>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state).await;
        TenantPost::new(admin, id, headers, bytes).map_err(IntoResponse::into_response)
    }
}

impl<T: DeserializeOwned> TenantPost<T> {
    /// The request with its body parsed as the API parses it (the console builds one on
    /// an admin's behalf).
    pub(crate) fn new(
        admin: Admin,
        id: String,
        headers: HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Self, ApiError> {
        let (body, raw) = parse_body(&headers, body)?;
        Ok(TenantPost {
            admin,
            id,
            headers,
            body,
            raw,
        })
    }
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
        WorkflowKind::Move => state == Active,
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
    let who = crate::audit::Who::admin(admin);
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
                        WorkflowKind::Move => "move",
                        _ => op,
                    },
                    t.state
                ),
            ));
        }
        let wf =
            crate::audit::enqueue(state.provisioner(), &mut conn, id, kind, &input, &who).await?;
        Ok(Accepted::reply(&t, &wf))
    })
    .await
}

/// A transition of a tenant's state that takes an optional reason: what its route is
/// named and which workflow it queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Active → suspended (the tenant's requests are refused; data kept).
    Suspend,
    /// Suspended → active.
    Resume,
    /// Soft delete: purged after the retention period unless on legal hold.
    Delete,
}

impl Transition {
    /// The last segment of its route, `POST /v1/tenants/{id}/<op>`.
    pub fn op(self) -> &'static str {
        match self {
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Delete => "delete",
        }
    }

    /// The workflow it queues.
    fn kind(self) -> WorkflowKind {
        match self {
            Transition::Suspend => WorkflowKind::Suspend,
            Transition::Resume => WorkflowKind::Resume,
            Transition::Delete => WorkflowKind::Delete,
        }
    }

    /// The workflow's input: the reason where the workflow records one.
    fn input(self, r: Reason) -> serde_json::Value {
        match self {
            Transition::Suspend | Transition::Delete => json!({"reason": r.reason}),
            Transition::Resume => json!({}),
        }
    }
}

/// The handler of every [`Transition`]: an optional [`Reason`], then the workflow queued
/// (idempotently) when the tenant's state allows it.
pub async fn transition(
    to: Transition,
    State(state): State<AppState>,
    post: TenantPost<Reason>,
) -> Result<Response, ApiError> {
    post.body.check()?;
    lifecycle(
        &state,
        &post.admin,
        &post.headers,
        &post.id,
        to.op(),
        to.kind(),
        post.raw,
        to.input(post.body),
    )
    .await
}

/// A route of one [`Transition`]: its OpenAPI operation and a handler that calls
/// [`transition`].
macro_rules! transition_route {
    ($(#[doc = $doc:tt])* $name:ident, $to:ident, $path:tt, $accepted:tt) => {
        $(#[doc = $doc])*
        #[utoipa::path(post, path = $path, tag = "tenants", security(("admin" = [])), request_body = Option<Reason>,
            params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
            responses($accepted, (status = 404, body = Problem, content_type = "application/problem+json")))]
        pub async fn $name(
            state: State<AppState>,
            post: TenantPost<Reason>,
        ) -> Result<Response, ApiError> {
            transition(Transition::$to, state, post).await
        }
    };
}

transition_route!(
    /// Suspends a tenant: queues its suspend workflow (requests for its data then get 403 `tenant-suspended`).
    suspend,
    Suspend,
    "/v1/tenants/{id}/suspend",
    (status = 202, body = Accepted)
);

transition_route!(
    /// Resumes a suspended tenant: queues its resume workflow.
    resume,
    Resume,
    "/v1/tenants/{id}/resume",
    (status = 202, body = Accepted)
);

transition_route!(
    /// Soft-deletes a tenant: queues its delete workflow; the purge follows once the retention period is over and no legal hold is set.
    delete,
    Delete,
    "/v1/tenants/{id}/delete",
    (status = 202, body = Accepted, description = "Soft delete queued; data is purged after the retention period unless a legal hold is set")
);

/// Changes a tenant's plan: queues the workflow that switches it and seeds the plan's settings.
#[utoipa::path(post, path = "/v1/tenants/{id}/plan", tag = "tenants", security(("admin" = [])), request_body = ChangePlan,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn change_plan(
    State(state): State<AppState>,
    post: TenantPost<ChangePlan>,
) -> Result<Response, ApiError> {
    let plan: PlanKey = known_plan(&state, "plan", &post.body.plan)?;
    lifecycle(
        &state,
        &post.admin,
        &post.headers,
        &post.id,
        "plan",
        WorkflowKind::ChangePlan,
        post.raw,
        json!({"plan": plan.as_str()}),
    )
    .await
}

/// Moves a tenant online to another placement, cluster or region: queues its move workflow (copy while it keeps working, catch-up, a short verified cutover); follow it with `GET /v1/workflows/{id}`. A region outside the tenant's residency policy fails the workflow before anything is copied.
#[utoipa::path(post, path = "/v1/tenants/{id}/move", tag = "tenants", security(("admin" = [])), request_body = MoveTo,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn move_tenant(
    State(state): State<AppState>,
    post: TenantPost<MoveTo>,
) -> Result<Response, ApiError> {
    let b = &post.body;
    let req =
        tenancy_provision::MoveRequest::parse(&b.to, b.cluster.as_deref(), b.region.as_deref())
            .map_err(|e| ApiError::field(e.field, e.message))?;
    lifecycle(
        &state,
        &post.admin,
        &post.headers,
        &post.id,
        "move",
        WorkflowKind::Move,
        post.raw,
        req.input(),
    )
    .await
}

/// The regions of a residency request, checked: each a registered region id, 1 to 64
/// of them, no duplicates, `current` among them.
fn residency_regions(
    wanted: &[String],
    registered: &[tenancy_catalog::Region],
    current: &RegionId,
) -> Result<Vec<RegionId>, ApiError> {
    if wanted.is_empty() || wanted.len() > 64 {
        return Err(ApiError::field(
            "regions",
            "must list 1 to 64 regions (or be null to clear the policy)",
        ));
    }
    let mut out: Vec<RegionId> = Vec::with_capacity(wanted.len());
    for r in wanted {
        let id: RegionId = r
            .parse()
            .map_err(|e| ApiError::field("regions", format!("{r:?} is not a region id: {e}")))?;
        if out.contains(&id) {
            return Err(ApiError::field("regions", format!("{id} is listed twice")));
        }
        if !registered.iter().any(|g| g.id == id) {
            return Err(ApiError::field(
                "regions",
                format!("{id} is not a registered region (GET /v1/regions lists them)"),
            ));
        }
        out.push(id);
    }
    if !out.contains(current) {
        return Err(ApiError::field(
            "regions",
            format!(
                "must include the tenant's current region {current}: move the tenant into one of the listed regions first (POST /v1/tenants/{{id}}/move), or add {current} to the list"
            ),
        ));
    }
    Ok(out)
}

/// Sets (`Some`: checked as the API checks it, nothing stored when it does not pass) or
/// clears (`None`) tenant `id`'s residency policy, audited as `who`'s change.
pub async fn set_tenant_residency(
    conn: &mut tokio_postgres::Client,
    id: tenancy_core::TenantId,
    regions: Option<&[String]>,
    who: &crate::audit::Who,
) -> Result<tenancy_catalog::Tenant, ApiError> {
    let regions = match regions {
        None => None,
        Some(wanted) => {
            let t = tenancy_catalog::get_tenant(conn, id).await?;
            let registered = tenancy_catalog::list_regions(conn).await?;
            Some(residency_regions(wanted, &registered, &t.region)?)
        }
    };
    crate::audit::change_tenant(
        conn,
        id,
        crate::audit::TenantChange::Residency(regions.as_deref()),
        who,
    )
    .await
}

/// Sets (`regions`) or clears (`null`) a tenant's residency policy: the regions its data may live in. A move to a region outside it is refused before anything is copied.
#[utoipa::path(put, path = "/v1/tenants/{id}/residency", tag = "tenants", security(("admin" = [])), request_body = Residency,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40)),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn set_residency(
    State(state): State<AppState>,
    put: TenantPost<Residency>,
) -> Result<Response, ApiError> {
    let id = tenant_ref(&state, &put.id).await?;
    let who = crate::audit::Who::admin(&put.admin);
    let mut conn = state.catalog().await?;
    let wanted: Option<Vec<String>> = put
        .body
        .regions
        .as_ref()
        .map(|rs| rs.iter().map(|r| r.0.clone()).collect());
    let t = set_tenant_residency(&mut conn, id, wanted.as_deref(), &who).await?;
    Ok((StatusCode::OK, axum::Json(TenantView::from(&t))).into_response())
}

/// Sets or lifts a tenant's legal hold.
#[utoipa::path(post, path = "/v1/tenants/{id}/legal-hold", tag = "tenants", security(("admin" = [])), request_body = LegalHold,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn legal_hold(
    State(state): State<AppState>,
    post: TenantPost<LegalHold>,
) -> Result<Response, ApiError> {
    let id = tenant_ref(&state, &post.id).await?;
    let scope = format!(
        "admin:{}:POST /v1/tenants/{id}/legal-hold",
        post.admin.principal
    );
    let who = crate::audit::Who::admin(&post.admin);
    let hold = post.body.hold;
    idempotency::run(
        &state,
        &post.headers,
        scope,
        &post.raw,
        move |state| async move {
            let mut conn = state.catalog().await?;
            let t = crate::audit::set_legal_hold(&mut conn, id, hold, &who).await?;
            Ok((StatusCode::OK, to_value(&TenantView::from(&t))))
        },
    )
    .await
}
