//! The management API for a tenant's own administrators, served by the application
//! behind the tenancy layer: the caller is authenticated as that tenant and needs
//! [`MANAGE_ACCESS`](crate::MANAGE_ACCESS) for everything but `GET /access/me`.
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `GET /access/me` | | the caller's subject, roles and permissions |
//! | `GET /access/roles` | | every role, built in first |
//! | `POST /access/roles` | `{"name", "permissions"}` | 201 the role |
//! | `PUT /access/roles/{name}` | `{"permissions"}` | 200 the role |
//! | `DELETE /access/roles/{name}` | | 204 (its grants revoked) |
//! | `GET /access/grants` | | every grant |
//! | `POST /access/grants` | `{"subject", "role"}` | 201 new, 200 already held |
//! | `POST /access/revocations` | `{"subject", "role"}` | 204 |
//!
//! Errors are problem documents: 400 for a body that is not the JSON asked for (unknown
//! fields included), 422 naming the field (unknown permission, malformed name, NUL
//! bytes, sizes, a built-in role), 403 `permission-denied` naming the permission the
//! caller lacks, 404 for an unknown role or grant, 409 for a role that exists or the last
//! owner.

use axum::extract::{FromRequest, Path, Request};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_axum::{HttpError, RequestId, Tenant, Tx};

use crate::{store, Access, By, Grant, Permissions, Role};

type ApiResult<T> = Result<T, HttpError>;

/// The routes (`/access/…`); mount them behind the tenancy layer. The router carries the
/// [`Access`] in its request extensions.
pub fn router(access: Access) -> axum::Router {
    axum::Router::new()
        .route("/access/me", get(me))
        .route("/access/roles", get(list_roles).post(create_role))
        .route("/access/roles/{name}", put(update_role).delete(delete_role))
        .route("/access/grants", get(list_grants).post(grant))
        .route("/access/revocations", post(revoke))
        .layer(Extension(access))
}

/// A JSON body whose rejection is a 400 problem; unknown fields are refused by the types.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, HttpError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| HttpError::BadRequest(e.body_text()))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRole {
    name: String,
    permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolePermissions {
    permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    subject: String,
    role: String,
}

fn by(tenant: &Tenant, rid: &Option<Extension<RequestId>>) -> By {
    By::tenant(tenant, rid.as_ref().map(|Extension(r)| r))
}

async fn me(tenant: Tenant, perms: Permissions) -> Json<Value> {
    Json(json!({
        "subject": tenant.subject(),
        "roles": perms.roles(),
        "permissions": perms.granted().collect::<Vec<_>>(),
    }))
}

async fn list_roles(
    Extension(access): Extension<Access>,
    perms: Permissions,
    mut tx: Tx,
) -> ApiResult<Json<Vec<Role>>> {
    perms.require(crate::MANAGE_ACCESS)?;
    Ok(Json(store::list_roles(&mut tx, &access).await?))
}

async fn create_role(
    Extension(access): Extension<Access>,
    tenant: Tenant,
    rid: Option<Extension<RequestId>>,
    perms: Permissions,
    mut tx: Tx,
    Body(b): Body<NewRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role = store::create_role(
        &mut tx,
        &access,
        &perms,
        &by(&tenant, &rid),
        &b.name,
        &b.permissions,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(role)))
}

async fn update_role(
    Extension(access): Extension<Access>,
    tenant: Tenant,
    rid: Option<Extension<RequestId>>,
    perms: Permissions,
    mut tx: Tx,
    Path(name): Path<String>,
    Body(b): Body<RolePermissions>,
) -> ApiResult<Json<Role>> {
    let role = store::update_role(
        &mut tx,
        &access,
        &perms,
        &by(&tenant, &rid),
        &name,
        &b.permissions,
    )
    .await?;
    Ok(Json(role))
}

async fn delete_role(
    Extension(access): Extension<Access>,
    tenant: Tenant,
    rid: Option<Extension<RequestId>>,
    perms: Permissions,
    mut tx: Tx,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    store::delete_role(&mut tx, &access, &perms, &by(&tenant, &rid), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(perms: Permissions, mut tx: Tx) -> ApiResult<Json<Vec<Grant>>> {
    perms.require(crate::MANAGE_ACCESS)?;
    Ok(Json(store::list_grants(&mut tx).await?))
}

async fn grant(
    Extension(access): Extension<Access>,
    tenant: Tenant,
    rid: Option<Extension<RequestId>>,
    perms: Permissions,
    mut tx: Tx,
    Body(b): Body<GrantBody>,
) -> ApiResult<(StatusCode, Json<Grant>)> {
    let new = store::grant(
        &mut tx,
        &access,
        &perms,
        &by(&tenant, &rid),
        &b.subject,
        &b.role,
    )
    .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Grant {
            subject: b.subject,
            role: b.role,
        }),
    ))
}

async fn revoke(
    Extension(access): Extension<Access>,
    tenant: Tenant,
    rid: Option<Extension<RequestId>>,
    perms: Permissions,
    mut tx: Tx,
    Body(b): Body<GrantBody>,
) -> ApiResult<StatusCode> {
    store::revoke(
        &mut tx,
        &access,
        &perms,
        &by(&tenant, &rid),
        &b.subject,
        &b.role,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
