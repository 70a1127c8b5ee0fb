//! Platform administrators' management of one tenant's access control.
//!
//! Roles and grants (`/v1/tenants/{id}/access/…`) live in the tenant's own database
//! (`tenancy.access_roles`, `tenancy.access_grants`, see `tenancy-access`): the control
//! plane opens a transaction of that tenant as the runtime role under its signed context
//! (row-level security bounds every statement to it), calls the same management functions
//! the application's own admin API calls, with every permission of the application's
//! model (`[access]` of the configuration), and records each change in the tenant's audit
//! log in that transaction, with the admin principal as the actor (`admin:<principal>`).
//!
//! API keys (`/v1/tenants/{id}/api-keys…`) live in the catalog: listing shows no secret
//! and no hash; a revocation and its event in the control log (in the tenant's chain)
//! commit in one catalog transaction.
//!
//! Lists are paged: `after` (the `next_after` of the previous page) and `limit` (1 to
//! 200, default 50); a value out of range or a cursor the list did not return is a 422
//! naming the field.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_access::{AccessError, By, PageRequest, Permissions};
use tenancy_audit::Log;
use tenancy_core::TenantId;
use utoipa::{IntoParams, ToSchema};

use super::audit::{open_log, LogReader};
use super::lifecycle::TenantPost;
use super::{tenant_ref, to_value, ts};
use crate::auth::Admin;
use crate::error::{ApiError, Problem, ProblemCode};
use crate::{idempotency, AppState};

/// What the access routes need besides the catalog: tenant transactions and the
/// application's access model. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TenantAccess {
    /// Opens a tenant's transactions where its placement puts it (runtime role, signed
    /// context).
    router: tenancy_sdk::Router,
    /// The permissions the application declares and its built-in roles.
    model: tenancy_access::Access,
    /// The same router for exports (`transfer`): an export is one transaction as long
    /// as the tenant is large, so its pools set no transaction deadline and no statement
    /// timeout; they hold at most [`crate::transfer::MAX_EXPORTS`] connections per
    /// database, which bounds the exports running at once.
    transfer: tenancy_sdk::Router,
}

impl TenantAccess {
    /// Tenant transactions through `router`, checked against `model`.
    pub fn new(router: tenancy_sdk::Router, model: tenancy_access::Access) -> TenantAccess {
        let transfer =
            router.with_pool_options(crate::transfer::export_pool_options(&router.options().pool));
        TenantAccess {
            router,
            model,
            transfer,
        }
    }

    /// The router of tenant transactions (runtime role, signed context).
    pub fn router(&self) -> &tenancy_sdk::Router {
        &self.router
    }

    /// The router of exports: the same tenants and login, without a transaction deadline.
    pub fn transfer_router(&self) -> &tenancy_sdk::Router {
        &self.transfer
    }
}

/// Paging of a list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessPageParams {
    /// The `next_after` of the previous page (opaque); a cursor another list returned is
    /// refused with 422.
    #[param(min_length = 1, max_length = 577)]
    pub after: Option<String>,
    /// 1 to 200 items (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
}

/// A role: built in (defined by the application's model) or one of the tenant's own.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleView {
    /// Its name.
    pub name: String,
    /// Whether it is built in (owner, admin, member, viewer).
    pub builtin: bool,
    /// The permissions it grants, sorted.
    pub permissions: Vec<String>,
}

impl From<tenancy_access::Role> for RoleView {
    fn from(r: tenancy_access::Role) -> Self {
        RoleView {
            name: r.name,
            builtin: r.builtin,
            permissions: r.permissions,
        }
    }
}

/// A custom role to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRole {
    /// A lowercase letter, then up to 63 lowercase letters, digits, `_` and `-`; not a
    /// built-in role's name.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub name: String,
    /// Permissions the application declares (at most 256).
    #[schema(max_items = 256)]
    pub permissions: Vec<String>,
}

/// A role held by a subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantView {
    /// Who holds it (a user's subject, `api_key:<key id>`, …).
    pub subject: String,
    /// The role.
    pub role: String,
}

impl From<GrantInput> for GrantView {
    fn from(g: GrantInput) -> Self {
        GrantView {
            subject: g.subject,
            role: g.role,
        }
    }
}

/// A grant to make or revoke.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantInput {
    /// Who (1 to 256 bytes, no control characters).
    #[schema(min_length = 1, max_length = 256)]
    pub subject: String,
    /// A built-in role or one of the tenant's own.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$")]
    pub role: String,
}

/// A tenant API key, without its secret (never stored) or its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// The public key id (16 hex digits).
    pub key_id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// Its last successful use (recorded at most once a minute).
    pub last_used_at: Option<String>,
}

impl From<&tenancy_catalog::ApiKeyRecord> for ApiKeyView {
    fn from(k: &tenancy_catalog::ApiKeyRecord) -> Self {
        ApiKeyView {
            key_id: k.key_id.clone(),
            name: k.name.clone(),
            scopes: k.scopes.clone(),
            created_at: ts(k.created_at),
            revoked_at: k.revoked_at.map(ts),
            last_used_at: k.last_used_at.map(ts),
        }
    }
}

/// A page of a list: one struct per item type (the OpenAPI document names each).
macro_rules! page {
    ($name:ident, $item:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Serialize, ToSchema)]
        pub struct $name {
            /// The items, in the list's order.
            pub items: Vec<$item>,
            /// Cursor of the next page (pass it as `after`), absent on the last.
            pub next_after: Option<String>,
        }
    };
}

page!(
    RolePage,
    RoleView,
    "One page of a tenant's roles: the built-in ones first, then its own by name."
);
page!(
    GrantPage,
    GrantView,
    "One page of a tenant's grants, by subject then role."
);
page!(
    ApiKeyPage,
    ApiKeyView,
    "One page of a tenant's API keys, newest first."
);

/// The problem of a refused management call, naming the field.
fn access_error(e: AccessError) -> ApiError {
    match e {
        AccessError::Invalid { field, reason } => ApiError::field(&field, reason),
        AccessError::UnknownPermission { field, permission } => ApiError::field(
            &field,
            format!("{permission:?} is not a permission the application declares"),
        ),
        AccessError::BuiltinRole { role } => ApiError::field(
            "name",
            format!("{role:?} is a built-in role; it cannot be created or deleted"),
        ),
        AccessError::UnknownRole { role } => ApiError::new(
            ProblemCode::NotFound,
            format!("the tenant has no role {role:?}"),
        ),
        AccessError::NoSuchGrant => {
            ApiError::new(ProblemCode::NotFound, "the subject does not hold that role")
        }
        AccessError::Conflict(detail) => ApiError::new(ProblemCode::Conflict, detail),
        AccessError::Db(e) => tx_error(e),
        AccessError::Audit(tenancy_audit::Error::Tx(e)) => tx_error(e),
        e => ApiError::internal("managing a tenant's access", &e),
    }
}

/// The problem of a tenant transaction that failed: 409 for a tenant that is not active
/// (its data cannot be opened), 503 otherwise (logged).
fn tx_error(e: tenancy_sdk::Error) -> ApiError {
    match e {
        tenancy_sdk::Error::NotActive { tenant, state } => ApiError::new(
            ProblemCode::Conflict,
            format!("tenant {tenant} is {state}; its roles and grants can be managed while it is active"),
        ),
        e => ApiError::unavailable("a tenant transaction of the access API", &e),
    }
}

/// An open transaction of one tenant with every permission of the model, and the tenant.
struct Session {
    /// Its transaction (runtime role, signed context).
    tx: tenancy_sdk::TenantTx,
    /// The application's model.
    model: tenancy_access::Access,
    /// Every permission of the model, as an owner.
    all: Permissions,
}

impl Session {
    /// Opens a transaction of the tenant `id_or_slug` names, after making sure its
    /// database has the access tables (and the audit table), which the control plane
    /// installs as the owner role where the application has not yet.
    async fn open(state: &AppState, id_or_slug: &str) -> Result<Session, ApiError> {
        let access = state.tenant_access().ok_or_else(|| {
            ApiError::new(
                ProblemCode::Unavailable,
                "this control plane opens no tenant transactions (no access model)",
            )
        })?;
        let id = tenant_ref(state, id_or_slug).await?;
        Session::open_id(state, access, id).await
    }

    async fn open_id(
        state: &AppState,
        access: &TenantAccess,
        id: TenantId,
    ) -> Result<Session, ApiError> {
        let catalog = state.catalog().await?;
        // The owner's connection to the tenant's database (with the audit table there).
        let LogReader::Tenant(owner) = open_log(state, &catalog, id, Log::Tenant).await? else {
            return Err(ApiError::new(
                ProblemCode::Conflict,
                format!("tenant {id} has no database in service (it is being provisioned, or it was deleted)"),
            ));
        };
        let has: bool = owner
            .query_one(
                "SELECT to_regclass('tenancy.access_grants') IS NOT NULL
                    AND to_regclass('tenancy.access_roles') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| ApiError::unavailable("looking for the access tables", &e))?
            .get(0);
        if !has {
            tenancy_access::install(&owner)
                .await
                .map_err(|e| ApiError::unavailable("installing the access tables", &e))?;
        }
        drop(owner);
        let tx = access.router.begin(id).await.map_err(tx_error)?;
        Ok(Session {
            tx,
            all: Permissions::all(&access.model),
            model: access.model.clone(),
        })
    }

    /// A change of the tenant's access in this session's transaction, with every
    /// permission of the model, recorded as made by `by`.
    fn change<'a>(&'a mut self, by: &'a By) -> tenancy_access::Change<'a> {
        tenancy_access::Change::new(&mut self.tx, &self.model, &self.all, by)
    }

    async fn commit(self) -> Result<(), ApiError> {
        self.tx.commit().await.map_err(tx_error)
    }
}

/// The actor of a platform administrator's changes, as the control log names it.
fn by(admin: &Admin) -> By {
    By::platform_admin(
        &format!("admin:{}", admin.principal),
        admin.origin.request_id.as_deref(),
    )
}

fn page(p: &AccessPageParams) -> Result<PageRequest, ApiError> {
    PageRequest::parse(p.after.as_deref(), p.limit).map_err(access_error)
}

/// The page a list of the tenant `id_or_slug` asks for (checked first, so a bad one is a
/// 422 before any connection), and a session of that tenant.
async fn open_page(
    state: &AppState,
    id_or_slug: &str,
    p: &AccessPageParams,
) -> Result<(PageRequest, Session), ApiError> {
    let req = page(p)?;
    Ok((req, Session::open(state, id_or_slug).await?))
}

/// Runs an admin's change of the access of the tenant `post` names: its body (parsed as
/// `B`), then `change` (given the body, an open [`Session`] it commits, and the
/// actor) at most once per Idempotency-Key, its answer replayed for a retry.
async fn change<B, F, Fut>(
    state: &AppState,
    post: TenantPost<B>,
    what: &str,
    change: F,
) -> Result<Response, ApiError>
where
    B: Send + 'static,
    F: FnOnce(B, Session, By) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>
        + Send
        + 'static,
{
    let tenant = tenant_ref(state, &post.id).await?;
    let scope = format!(
        "admin:{}:POST /v1/tenants/{tenant}/access/{what}",
        post.admin.principal
    );
    let by = by(&post.admin);
    let body = post.body;
    idempotency::run(
        state,
        &post.headers,
        scope,
        &post.raw,
        move |state| async move {
            let s = Session::open(&state, &tenant.to_string()).await?;
            change(body, s, by).await
        },
    )
    .await
}

/// Lists a tenant's roles (built in first, then its own by name), one page at a time.
#[utoipa::path(get, path = "/v1/tenants/{id}/access/roles", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("after" = Option<String>, Query, description = "The `next_after` of the previous page: the last role's name", pattern = "^[a-z][a-z0-9_-]{0,63}$", min_length = 1, max_length = 64), ("limit" = Option<i64>, Query, description = "1 to 200 items (default 50)", minimum = 1, maximum = 200)),
    responses((status = 200, body = RolePage), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn list_roles(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<AccessPageParams>,
) -> Result<Json<RolePage>, ApiError> {
    let (req, mut s) = open_page(&state, &id, &p).await?;
    let got = tenancy_access::list_roles(&mut s.tx, &s.model, &req)
        .await
        .map_err(access_error)?;
    s.commit().await?;
    Ok(Json(RolePage {
        items: got.items.into_iter().map(RoleView::from).collect(),
        next_after: got.next_after,
    }))
}

/// One role of a tenant, built in or its own.
#[utoipa::path(get, path = "/v1/tenants/{id}/access/roles/{name}", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("name" = String, Path, description = "Role name", pattern = "^[a-z][a-z0-9_-]{0,63}$")),
    responses((status = 200, body = RoleView), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn get_role(
    _: Admin,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<RoleView>, ApiError> {
    let mut s = Session::open(&state, &id).await?;
    let role = tenancy_access::get_role(&mut s.tx, &s.model, &name)
        .await
        .map_err(access_error)?;
    s.commit().await?;
    Ok(Json(role.into()))
}

/// Creates a custom role of a tenant (audited in the tenant's log as
/// `access.role.create` by the admin).
#[utoipa::path(post, path = "/v1/tenants/{id}/access/roles", tag = "tenants", security(("admin" = [])), request_body = NewRole,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 201, body = RoleView), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant has a role of that name, or is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn create_role(
    State(state): State<AppState>,
    post: TenantPost<NewRole>,
) -> Result<Response, ApiError> {
    change(&state, post, "roles", |r, mut s, by| async move {
        let role = tenancy_access::create_role(s.change(&by), &r.name, &r.permissions)
            .await
            .map_err(access_error)?;
        s.commit().await?;
        Ok((StatusCode::CREATED, to_value(&RoleView::from(role))))
    })
    .await
}

/// Deletes a custom role of a tenant and every grant of it (audited in the tenant's log:
/// `access.revoke` per grant, then `access.role.delete`).
#[utoipa::path(delete, path = "/v1/tenants/{id}/access/roles/{name}", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("name" = String, Path, description = "Role name", pattern = "^[a-z][a-z0-9_-]{0,63}$")),
    responses((status = 204, description = "Deleted, with its grants"), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn delete_role(
    admin: Admin,
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let mut s = Session::open(&state, &id).await?;
    tenancy_access::delete_role(s.change(&by(&admin)), &name)
        .await
        .map_err(access_error)?;
    s.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists a tenant's grants (by subject, then role), one page at a time.
#[utoipa::path(get, path = "/v1/tenants/{id}/access/grants", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("after" = Option<String>, Query, description = "The `next_after` of the previous page: the last grant's subject in lowercase hex, `.`, its role", pattern = "^([0-9a-f]{2})+[.][a-z][a-z0-9_-]{0,63}$", min_length = 1, max_length = 577), ("limit" = Option<i64>, Query, description = "1 to 200 items (default 50)", minimum = 1, maximum = 200)),
    responses((status = 200, body = GrantPage), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn list_grants(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<AccessPageParams>,
) -> Result<Json<GrantPage>, ApiError> {
    let (req, mut s) = open_page(&state, &id, &p).await?;
    let got = tenancy_access::list_grants(&mut s.tx, &req)
        .await
        .map_err(access_error)?;
    s.commit().await?;
    Ok(Json(GrantPage {
        items: got
            .items
            .into_iter()
            .map(|g| GrantView {
                subject: g.subject,
                role: g.role,
            })
            .collect(),
        next_after: got.next_after,
    }))
}

/// Grants a role to a subject of a tenant (audited in the tenant's log as `access.grant`
/// by the admin): 201 when new, 200 when the subject held it already.
#[utoipa::path(post, path = "/v1/tenants/{id}/access/grants", tag = "tenants", security(("admin" = [])), request_body = GrantInput,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 201, body = GrantView, description = "Granted"), (status = 200, body = GrantView, description = "Already held"), (status = 409, body = Problem, content_type = "application/problem+json", description = "The tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn grant(
    State(state): State<AppState>,
    post: TenantPost<GrantInput>,
) -> Result<Response, ApiError> {
    change(&state, post, "grants", |g, mut s, by| async move {
        let new = tenancy_access::grant(s.change(&by), &g.subject, &g.role)
            .await
            .map_err(access_error)?;
        s.commit().await?;
        let view = to_value(&GrantView::from(g));
        Ok((
            if new {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            view,
        ))
    })
    .await
}

/// Revokes a role from a subject of a tenant (audited in the tenant's log as
/// `access.revoke` by the admin); the tenant's last owner is never revoked.
#[utoipa::path(post, path = "/v1/tenants/{id}/access/revocations", tag = "tenants", security(("admin" = [])), request_body = GrantInput,
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 200, body = GrantView, description = "Revoked"), (status = 409, body = Problem, content_type = "application/problem+json", description = "The subject is the tenant's last owner, or the tenant is not active"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog or the tenant's database cannot be reached")))]
pub async fn revoke(
    State(state): State<AppState>,
    post: TenantPost<GrantInput>,
) -> Result<Response, ApiError> {
    change(&state, post, "revocations", |g, mut s, by| async move {
        tenancy_access::revoke(s.change(&by), &g.subject, &g.role)
            .await
            .map_err(access_error)?;
        s.commit().await?;
        Ok((StatusCode::OK, to_value(&GrantView::from(g))))
    })
    .await
}

/// Lists a tenant's API keys (newest first; revoked ones too), without secrets or
/// hashes, one page at a time.
#[utoipa::path(get, path = "/v1/tenants/{id}/api-keys", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("after" = Option<String>, Query, description = "The `next_after` of the previous page: the last key's creation time (µs since the Unix epoch), `.`, its key id", pattern = "^-?[0-9]{1,17}[.][0-9a-f]{16}$", min_length = 1, max_length = 35), ("limit" = Option<i64>, Query, description = "1 to 200 items (default 50)", minimum = 1, maximum = 200)),
    responses((status = 200, body = ApiKeyPage), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog cannot be reached")))]
pub async fn list_keys(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<AccessPageParams>,
) -> Result<Json<ApiKeyPage>, ApiError> {
    let req = page(&p)?;
    let after = p
        .after
        .as_deref()
        .map(|c| {
            tenancy_catalog::parse_api_key_cursor(c)
                .ok_or_else(|| ApiError::field("after", "is not a cursor this list returned"))
        })
        .transpose()?;
    let id = tenant_ref(&state, &id).await?;
    let catalog = state.catalog().await?;
    // Known tenant (404 otherwise), even one without keys.
    tenancy_catalog::get_tenant(&catalog, id).await?;
    let keys = tenancy_catalog::list_api_keys_page(
        &catalog,
        id,
        after.as_ref().map(|(at, k)| (*at, k.as_str())),
        req.limit() + 1,
    )
    .await?;
    let more = keys.len() as i64 > req.limit();
    let shown = &keys[..keys.len().min(req.limit() as usize)];
    Ok(Json(ApiKeyPage {
        items: shown.iter().map(ApiKeyView::from).collect(),
        next_after: if more {
            shown.last().map(tenancy_catalog::api_key_cursor)
        } else {
            None
        },
    }))
}

/// Revokes a tenant's API key (it never authenticates again; revoking a revoked key
/// changes nothing). The revocation and its `api_key.revoke` event in the control log
/// commit together.
#[utoipa::path(post, path = "/v1/tenants/{id}/api-keys/{key_id}/revoke", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ("key_id" = String, Path, description = "The key's public id", pattern = "^[0-9a-f]{16}$"), ("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 200, body = ApiKeyView, description = "Revoked"), (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog cannot be reached")))]
pub async fn revoke_key(
    admin: Admin,
    State(state): State<AppState>,
    Path((id, key_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant_ref(&state, &id).await?;
    let missing = key_id.clone();
    let not_found = move || {
        ApiError::new(
            ProblemCode::NotFound,
            format!("tenant {tenant} has no API key {missing:?}"),
        )
    };
    let key_ok = key_id.len() == 16
        && key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !key_ok {
        return Err(not_found());
    }
    let scope = format!(
        "admin:{}:POST /v1/tenants/{tenant}/api-keys/{key_id}/revoke",
        admin.principal
    );
    let who = crate::audit::Who::admin(&admin);
    let raw = serde_json::Value::Object(Default::default());
    idempotency::run(&state, &headers, scope, &raw, move |state| async move {
        let mut conn = state.catalog().await?;
        let tx = conn
            .transaction()
            .await
            .map_err(|e| ApiError::unavailable("starting a catalog transaction", &e))?;
        let Some((before, after)) =
            tenancy_catalog::revoke_api_key_returning(&tx, tenant, &key_id).await?
        else {
            return Err(not_found());
        };
        if before.revoked_at.is_none() {
            crate::audit::record(
                &tx,
                Some(tenant),
                &who,
                "api_key.revoke",
                format!("api_key:{key_id}"),
                Some(&to_value(&ApiKeyView::from(&before))),
                Some(&to_value(&ApiKeyView::from(&after))),
            )
            .await
            .map_err(|e| ApiError::internal("recording a control-plane audit event", &e))?;
        }
        tx.commit()
            .await
            .map_err(|e| ApiError::unavailable("committing a key revocation", &e))?;
        Ok((StatusCode::OK, to_value(&ApiKeyView::from(&after))))
    })
    .await
}
