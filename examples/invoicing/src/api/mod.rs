//! The HTTP API. Handlers take a `Tenant` and a `Tx`; row-level security limits every
//! statement to the request's tenant, so no query names a tenant. An id of another
//! tenant's row finds nothing: the same 404 as an id that exists nowhere. Every handler
//! checks the scope it needs and every field it stores: bad input is a 4xx problem that
//! names the field, never a database error.
//!
//! By resource: `customers`, `invoices` (with their lines, deliveries and the report) and
//! the tenant's API `keys`; the routes, the access model and what every handler shares
//! (ids, database errors, text checks) live here.

mod customers;
mod invoices;
mod keys;

use axum::handler::Handler as _;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use serde_json::{json, Value};
use tenancy_access::{Access, AccessModel, ClaimRoles, ModelError};
use tenancy_axum::{HttpError, Tenant, Tx};
use tower_layer::Layer as _;
use uuid::Uuid;

use crate::AppState;
use customers::{create_customer, delete_customer, get_customer, list_customers, update_customer};
use invoices::{
    add_line, create_invoice, delete_invoice, get_invoice, list_deliveries, list_invoices, report,
    send_invoice, update_invoice,
};
use keys::{create_api_key, list_api_keys, revoke_api_key};

type ApiResult<T> = Result<T, HttpError>;

/// The app's routes behind the tenancy layer. The layer wraps the whole router (not each
/// route) so that it runs before routing: the path-prefix source strips `/t/<tenant>`
/// before the routes see the path, and unknown routes are resolved like any other.
/// [`PUBLIC_ROUTES`] must be declared public on the layer ([`crate::build`] does). Every
/// error response, axum's own rejections (a query string, a path, a 405) included, is a
/// problem document. Refused when a route requires a permission the model does not
/// declare.
pub fn router(state: AppState) -> Result<axum::Router, ModelError> {
    let tenancy = state.tenancy.clone();
    // `normalize` runs inside the tenancy layer, so the layer sees axum's rejections as
    // problems already and adds the request id to them too.
    let routes = routes(state)?.layer(axum::middleware::from_fn(tenancy_axum::problem::normalize));
    Ok(axum::Router::new().fallback_service(tenancy.layer().layer(routes)))
}

/// The permissions the app declares (besides `access:manage`, which every model has):
/// `invoices:read` and `invoices:write` are also the scopes its handlers check,
/// `invoices:create` is needed to create an invoice, `api_keys:manage` to issue API keys.
/// An API key's scopes are permissions too, so a key can only be issued with permissions
/// its creator holds.
pub const PERMISSIONS: &[&str] = &[
    "invoices:read",
    "invoices:write",
    "invoices:create",
    "api_keys:manage",
];

/// The app's access model: owners and admins hold every permission, members
/// `invoices:read`, `invoices:write` and `invoices:create`, viewers `invoices:read`; each
/// of `role_claims` maps one issuer's claim to roles.
pub fn access_model(role_claims: Vec<ClaimRoles>) -> Result<Access, ModelError> {
    role_claims
        .into_iter()
        .fold(
            AccessModel::new()
                .permissions(PERMISSIONS.iter().copied())
                .member(["invoices:read", "invoices:write", "invoices:create"])
                .viewer(["invoices:read"]),
            AccessModel::issuer,
        )
        .build()
}

/// The routes served without a credential (and without any tenant data).
pub const PUBLIC_ROUTES: &[&str] = &["/health"];

/// The scopes the API checks: reads need `invoices:read`, writes `invoices:write`.
pub const SCOPES: &[&str] = &["invoices:read", "invoices:write"];

fn routes(state: AppState) -> Result<axum::Router, ModelError> {
    let create_invoices = state.access.require("invoices:create")?;
    let manage_keys = state.access.require("api_keys:manage")?;
    let access = tenancy_access::api::router(state.access.clone());
    Ok(axum::Router::new()
        .route("/health", get(health))
        .route("/me", get(me))
        .route("/customers", get(list_customers).post(create_customer))
        .route(
            "/customers/{id}",
            get(get_customer)
                .patch(update_customer)
                .delete(delete_customer),
        )
        .route(
            "/invoices",
            get(list_invoices).post(create_invoice.layer(create_invoices)),
        )
        .route(
            "/api-keys",
            get(list_api_keys.layer(manage_keys.clone()))
                .post(create_api_key.layer(manage_keys.clone())),
        )
        .route(
            "/api-keys/{key_id}/revoke",
            post(revoke_api_key.layer(manage_keys)),
        )
        .route(
            "/invoices/{id}",
            get(get_invoice)
                .patch(update_invoice)
                .delete(delete_invoice),
        )
        .route("/invoices/{id}/lines", post(add_line))
        .route("/invoices/{id}/send", post(send_invoice))
        .route("/invoices/{id}/deliveries", get(list_deliveries))
        .route("/reports/summary", get(report))
        .fallback(|| async { HttpError::not_found("route") })
        .with_state(state)
        .merge(access))
}

/// Parses an id from the path; anything that is not a UUID is simply not found.
fn id(raw: &str, what: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| HttpError::not_found(what))
}

/// Maps database errors: references to rows this tenant cannot see are "not found";
/// rows still referenced are a conflict.
fn db(what: &'static str) -> impl Fn(tenancy_sdk::Error) -> HttpError {
    move |e| match e.sqlstate() {
        Some(s) if *s == tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION => {
            HttpError::Conflict(format!(
                "{what} is still referenced or references a missing record"
            ))
        }
        _ => HttpError::from(e),
    }
}

/// Deletes the row of `what` whose id (`$1` of `sql`) is `raw`, for a caller with the
/// `invoices:write` scope: 204, or 404 when there is none.
async fn delete_one(
    what: &'static str,
    sql: &str,
    tenant: Tenant,
    tx: &mut Tx,
    raw: &str,
) -> ApiResult<StatusCode> {
    tenant.require_scope("invoices:write")?;
    let row_id = id(raw, what)?;
    let n = tx.execute(sql, &[&row_id]).await.map_err(db(what))?;
    if n == 0 {
        return Err(HttpError::not_found(what));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Liveness, public: it touches no tenant data.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn invalid(field: &str, what: &str) -> HttpError {
    HttpError::Validation(format!("{field}: {what}"))
}

/// A text field as stored: trimmed, between `min` and `max` characters, without NUL
/// bytes (PostgreSQL text cannot hold them) or other control characters.
fn text<'a>(field: &str, value: &'a str, min: usize, max: usize) -> ApiResult<&'a str> {
    let v = value.trim();
    if v.contains('\0') {
        return Err(invalid(field, "must not contain a NUL byte"));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "must not contain control characters"));
    }
    let n = v.chars().count();
    if n < min {
        return Err(invalid(field, "must not be empty"));
    }
    if n > max {
        return Err(invalid(field, &format!("must be at most {max} characters")));
    }
    Ok(v)
}

async fn me(tenant: Tenant) -> Json<Value> {
    Json(json!({
        "tenant_id": tenant.id(),
        "slug": tenant.slug(),
        "via": tenant.via().iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        "subject": tenant.subject(),
    }))
}
