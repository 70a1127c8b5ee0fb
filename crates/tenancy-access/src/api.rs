//! The management API for a tenant's own administrators, served by the application
//! behind the tenancy layer: the caller is authenticated as that tenant and needs
//! [`MANAGE_ACCESS`](crate::MANAGE_ACCESS) for everything but `GET /access/me`.
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `GET /access/me` | | the caller's subject, roles and permissions |
//! | `GET /access/roles?after=&limit=` | | a page of roles, built in first |
//! | `POST /access/roles` | `{"name", "permissions"}` | 201 the role |
//! | `PUT /access/roles/{name}` | `{"permissions"}` | 200 the role |
//! | `DELETE /access/roles/{name}` | | 204 (its grants revoked) |
//! | `GET /access/grants?after=&limit=` | | a page of grants, by subject and role |
//! | `POST /access/grants` | `{"subject", "role"}` | 201 new, 200 already held |
//! | `POST /access/revocations` | `{"subject", "role"}` | 204 |
//!
//! A list answers `{"items": [...], "next_after": cursor|null}`; pass `next_after` as
//! `after` for the next page (`limit` 1 to [`MAX_PAGE`](crate::MAX_PAGE), default
//! [`DEFAULT_PAGE`](crate::DEFAULT_PAGE)).
//!
//! Errors are problem documents: 400 for a body or query string that is not what is
//! asked for (unknown fields included), 422 naming the field (a limit out of range, a
//! cursor this list did not return, an unknown permission, a malformed name, NUL
//! bytes, sizes, a built-in role), 403 `permission-denied` naming the permission the
//! caller lacks, 404 for an unknown role or grant, 409 for a role that exists or the last
//! owner.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use http::request::Parts;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_axum::{Body, HttpError, Tenant};

use crate::{store, Access, Grant, Manager, Page, PageRequest, Permissions, Role};

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

/// Paging of a list: `after` (the `next_after` of the previous page) and `limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<i64>,
}

impl PageQuery {
    fn request(&self) -> Result<PageRequest, HttpError> {
        Ok(PageRequest::parse(self.after.as_deref(), self.limit)?)
    }
}

/// A query string whose rejection is a 400 problem naming what is wrong.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| HttpError::BadRequest(e.body_text()))
    }
}

async fn me(tenant: Tenant, perms: Permissions) -> Json<Value> {
    Json(json!({
        "subject": tenant.subject(),
        "roles": perms.roles(),
        "permissions": perms.granted().collect::<Vec<_>>(),
    }))
}

async fn list_roles(mut m: Manager, Params(q): Params<PageQuery>) -> ApiResult<Json<Page<Role>>> {
    m.require(crate::MANAGE_ACCESS)?;
    let page = q.request()?;
    Ok(Json(store::list_roles(&mut m.tx, &m.access, &page).await?))
}

async fn create_role(
    mut m: Manager,
    Body(b): Body<NewRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let role = store::create_role(m.change(), &b.name, &b.permissions).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

async fn update_role(
    mut m: Manager,
    Path(name): Path<String>,
    Body(b): Body<RolePermissions>,
) -> ApiResult<Json<Role>> {
    let role = store::update_role(m.change(), &name, &b.permissions).await?;
    Ok(Json(role))
}

async fn delete_role(mut m: Manager, Path(name): Path<String>) -> ApiResult<StatusCode> {
    store::delete_role(m.change(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(mut m: Manager, Params(q): Params<PageQuery>) -> ApiResult<Json<Page<Grant>>> {
    m.require(crate::MANAGE_ACCESS)?;
    let page = q.request()?;
    Ok(Json(store::list_grants(&mut m.tx, &page).await?))
}

async fn grant(mut m: Manager, Body(b): Body<GrantBody>) -> ApiResult<(StatusCode, Json<Grant>)> {
    let new = store::grant(m.change(), &b.subject, &b.role).await?;
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

async fn revoke(mut m: Manager, Body(b): Body<GrantBody>) -> ApiResult<StatusCode> {
    store::revoke(m.change(), &b.subject, &b.role).await?;
    Ok(StatusCode::NO_CONTENT)
}
