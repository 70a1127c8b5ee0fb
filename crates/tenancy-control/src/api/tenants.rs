//! Tenants: create, list, show, their workflows and migrations.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_catalog::{NewTenant, Tenant, Workflow};
use tenancy_core::{Placement, Slug};
use tenancy_provision::ProvisionRequest;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{check_display_name, known_plan, parse_field, tenant_ref, to_value, ts, AdminPost};
use crate::auth::Admin;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::AppState;

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Tenant id.
    pub id: Uuid,
    /// Unique, URL-safe name.
    pub slug: String,
    /// Name shown to people.
    pub display_name: String,
    /// Plan key.
    pub plan: String,
    /// The region the tenant is pinned to.
    pub region: String,
    /// `pooled`, `schema` or `dedicated`.
    pub placement: String,
    /// The cluster holding its data.
    pub cluster_id: Uuid,
    /// `provisioning`, `active`, `suspended`, `deleting` or `deleted`.
    pub state: String,
    /// Its schema (schema placement), once chosen.
    pub schema_name: Option<String>,
    /// Its database (dedicated placement), once chosen.
    pub database_name: Option<String>,
    /// Billing customer (Stripe `cus_…`), when linked.
    pub billing_customer: Option<String>,
    /// A legal hold blocks the purge of a deleted tenant.
    pub legal_hold: bool,
    /// When a soft-deleted tenant may be purged (RFC 3339).
    pub purge_after: Option<String>,
    /// The regions its data may live in (`null`: its current region only); a move to a
    /// region outside them is refused.
    pub residency: Option<Vec<String>>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
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
            residency: t
                .residency
                .as_ref()
                .map(|rs| rs.iter().map(ToString::to_string).collect()),
            created_at: ts(t.created_at),
            updated_at: ts(t.updated_at),
        }
    }
}

/// A workflow (provision or lifecycle operation).
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    /// Workflow id.
    pub id: Uuid,
    /// The tenant.
    pub tenant_id: Uuid,
    /// `provision`, `suspend`, `resume`, `change_plan`, `delete` or `purge`.
    pub kind: String,
    /// `pending`, `running`, `compensating`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Index of the next step to run.
    pub step: i32,
    /// Failed attempts of the current step.
    pub attempts: i32,
    /// The last failure, with PostgreSQL's message when it came from the database.
    pub last_error: Option<String>,
    /// When it was queued (RFC 3339).
    pub created_at: String,
    /// When it reached a final status (RFC 3339).
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
    /// The tenant, as it is now.
    pub tenant: TenantView,
    /// The workflow that carries the operation out.
    pub workflow: WorkflowView,
}

impl Accepted {
    /// The `202 Accepted` reply of an operation that queued `wf` for `t`.
    pub(crate) fn reply(t: &Tenant, wf: &Workflow) -> (StatusCode, serde_json::Value) {
        (
            StatusCode::ACCEPTED,
            to_value(&Accepted {
                tenant: t.into(),
                workflow: wf.into(),
            }),
        )
    }
}

/// One page of tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    /// Tenants ordered by slug.
    pub items: Vec<TenantView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Create a tenant (admin).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The new tenant's slug.
    #[schema(schema_with = super::slug_schema)]
    pub slug: String,
    /// The new tenant's display name.
    #[schema(schema_with = super::display_name_schema)]
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

/// Lists tenants, one page at a time, ordered by slug.
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

/// Creates a tenant and queues its provision workflow.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", security(("admin" = [])), request_body = CreateTenant,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 202, body = Accepted), (status = 409, body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn create_tenant(
    State(state): State<AppState>,
    post: AdminPost<CreateTenant>,
) -> Result<Response, ApiError> {
    let who = crate::audit::Who::admin(post.admin());
    post.run(&state, "/v1/tenants", move |state, req| async move {
        let new = NewTenant {
            id: None,
            slug: parse_field("slug", &req.slug)?,
            display_name: req.display_name.clone(),
            plan: known_plan(&state, "plan", &req.plan)?,
            region: parse_field("region", &req.region)?,
            placement: parse_field("placement", &req.placement)?,
        };
        provision(&state, new, None, None, &who).await
    })
    .await
}

async fn provision(
    state: &AppState,
    new: NewTenant,
    customer: Option<String>,
    sub: Option<String>,
    who: &crate::audit::Who,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    check_display_name(&new.display_name)?;
    let mut conn = state.catalog().await?;
    let req = ProvisionRequest {
        tenant: new,
        billing_customer: customer,
        billing_subscription: sub,
    };
    let (t, wf) = crate::audit::provision(state.provisioner(), &mut conn, &req, who).await?;
    Ok(Accepted::reply(&t, &wf))
}

/// Reads a tenant by id or slug.
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

/// Lists a tenant's workflows, oldest first.
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
    /// The tenant.
    pub tenant_id: Uuid,
    /// `pooled`, `schema` or `dedicated`. A pooled tenant's tables are shared: the
    /// status is its cluster's pooled tables.
    pub placement: String,
    /// The app version the tenant's storage is known to be at (0: never migrated).
    pub version: i32,
    /// SHA-256 of that migration's SQL.
    pub checksum: Option<String>,
    /// When that version was applied (RFC 3339).
    pub applied_at: Option<String>,
    /// Duration of the last migration transaction, in milliseconds.
    pub duration_ms: Option<f64>,
    /// The last failure since the last success.
    pub error: Option<String>,
    /// The version whose migration failed.
    pub error_version: Option<i32>,
    /// When the last failure happened (RFC 3339).
    pub failed_at: Option<String>,
    /// Last change of this ledger entry (RFC 3339).
    pub updated_at: Option<String>,
}

/// A tenant's place in the app-migration ledger.
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

/// Reads a workflow.
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
