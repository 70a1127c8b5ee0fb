//! The HTTP API. Handlers take a `Tenant` and a `Tx`; row-level security limits every
//! statement to the request's tenant, so no query names a tenant. An id of another
//! tenant's row finds nothing: the same 404 as an id that exists nowhere. Every handler
//! checks the scope it needs and every field it stores: bad input is a 4xx problem that
//! names the field, never a database error.

use axum::extract::{Path, Query};
use axum::handler::Handler as _;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tenancy_access::{Access, AccessModel, ClaimRoles, ModelError, Permissions};
use tenancy_axum::{api_key, Body, HttpError, RequestId, Tenant, Tx};
use tenancy_sdk::Row;
use time::format_description::well_known::Rfc3339;
use tower_layer::Layer as _;
use uuid::Uuid;

use crate::{send, AppState, QUEUE};

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

/// The id of the invoice `raw` names: 404 when there is none.
async fn existing_invoice(tx: &mut Tx, raw: &str) -> ApiResult<Uuid> {
    let iid = id(raw, "invoice")?;
    let exists = tx
        .query_opt("SELECT 1 FROM invoicing.invoices WHERE id = $1", &[&iid])
        .await?
        .is_some();
    if !exists {
        return Err(HttpError::not_found("invoice"));
    }
    Ok(iid)
}

/// Liveness, public: it touches no tenant data.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

// ---- input checks ----

/// Highest quantity of one line.
const MAX_QUANTITY: i32 = 1_000_000;
/// Highest unit price of one line, in cents.
const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000_000;
/// Highest total of one invoice, in cents. Every total the API computes (a line, an
/// invoice, the report's sums over any number of invoices) then fits in its type.
const MAX_INVOICE_TOTAL_CENTS: i64 = 1_000_000_000_000_000;

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

fn customer_name<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    text(field, value, 1, 200)
}

fn email<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    let v = text(field, value, 1, 320)?;
    match v.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !v.contains(char::is_whitespace) =>
        {
            Ok(v)
        }
        _ => Err(invalid(field, "must be an email address")),
    }
}

fn invoice_number<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    text(field, value, 1, 40)
}

fn status<'a>(field: &str, value: &'a str) -> ApiResult<&'a str> {
    if ["draft", "sent", "paid", "void"].contains(&value) {
        Ok(value)
    } else {
        Err(invalid(field, "must be draft, sent, paid or void"))
    }
}

/// Checks a line; `at` is the field path of the line (`lines[2]`, or empty).
fn line<'a>(at: &str, l: &'a NewLine) -> ApiResult<&'a str> {
    let field = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    let description = text(&field("description"), &l.description, 1, 500)?;
    if !(1..=MAX_QUANTITY).contains(&l.quantity) {
        return Err(invalid(
            &field("quantity"),
            &format!("must be between 1 and {MAX_QUANTITY}"),
        ));
    }
    if !(0..=MAX_UNIT_PRICE_CENTS).contains(&l.unit_price_cents) {
        return Err(invalid(
            &field("unit_price_cents"),
            &format!("must be between 0 and {MAX_UNIT_PRICE_CENTS}"),
        ));
    }
    Ok(description)
}

async fn me(tenant: Tenant) -> Json<Value> {
    Json(json!({
        "tenant_id": tenant.id(),
        "slug": tenant.slug(),
        "via": tenant.via().iter().map(|v| v.as_str()).collect::<Vec<_>>(),
        "subject": tenant.subject(),
    }))
}

// ---- customers ----

#[derive(Debug, Serialize)]
struct Customer {
    id: Uuid,
    name: String,
    email: String,
}

fn customer(r: &Row) -> Customer {
    Customer {
        id: r.get(0),
        name: r.get(1),
        email: r.get(2),
    }
}

#[derive(Debug, Deserialize)]
struct NewCustomer {
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
struct CustomerPatch {
    name: Option<String>,
    email: Option<String>,
}

async fn list_customers(tenant: Tenant, mut tx: Tx) -> ApiResult<Json<Vec<Customer>>> {
    tenant.require_scope("invoices:read")?;
    let rows = tx
        .query(
            "SELECT id, name, email FROM invoicing.customers ORDER BY name, id",
            &[],
        )
        .await?;
    Ok(Json(rows.iter().map(customer).collect()))
}

async fn create_customer(
    tenant: Tenant,
    mut tx: Tx,
    Body(c): Body<NewCustomer>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    tenant.require_scope("invoices:write")?;
    let name = customer_name("name", &c.name)?;
    let email = email("email", &c.email)?;
    let row = tx
        .query_one(
            "INSERT INTO invoicing.customers (name, email) VALUES ($1, $2) RETURNING id, name, email",
            &[&name, &email],
        )
        .await?;
    Ok((StatusCode::CREATED, Json(customer(&row))))
}

async fn get_customer(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<Json<Customer>> {
    tenant.require_scope("invoices:read")?;
    let cid = id(&raw, "customer")?;
    let row = tx
        .query_opt(
            "SELECT id, name, email FROM invoicing.customers WHERE id = $1",
            &[&cid],
        )
        .await?
        .ok_or_else(|| HttpError::not_found("customer"))?;
    Ok(Json(customer(&row)))
}

async fn update_customer(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
    Body(p): Body<CustomerPatch>,
) -> ApiResult<Json<Customer>> {
    tenant.require_scope("invoices:write")?;
    let cid = id(&raw, "customer")?;
    let name = p
        .name
        .as_deref()
        .map(|n| customer_name("name", n))
        .transpose()?;
    let email = p.email.as_deref().map(|e| email("email", e)).transpose()?;
    let row = tx
        .query_opt(
            "UPDATE invoicing.customers SET name = coalesce($2, name), email = coalesce($3, email)
             WHERE id = $1 RETURNING id, name, email",
            &[&cid, &name, &email],
        )
        .await?
        .ok_or_else(|| HttpError::not_found("customer"))?;
    Ok(Json(customer(&row)))
}

async fn delete_customer(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    delete_one(
        "customer",
        "DELETE FROM invoicing.customers WHERE id = $1",
        tenant,
        &mut tx,
        &raw,
    )
    .await
}

// ---- invoices ----

#[derive(Debug, Deserialize)]
struct NewLine {
    description: String,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(Debug, Deserialize)]
struct NewInvoice {
    customer_id: Uuid,
    number: String,
    #[serde(default)]
    lines: Vec<NewLine>,
}

#[derive(Debug, Deserialize)]
struct InvoicePatch {
    status: Option<String>,
    number: Option<String>,
}

#[derive(Debug, Deserialize)]
struct InvoiceFilter {
    status: Option<String>,
}

const INVOICE_SQL: &str = "SELECT i.id, i.number, i.status, i.customer_id, i.currency, i.sent_at IS NOT NULL,
        coalesce((SELECT sum(l.quantity * l.unit_price_cents) FROM invoicing.line_items l WHERE l.invoice_id = i.id), 0)::bigint
   FROM invoicing.invoices i";

fn invoice_json(r: &Row) -> Value {
    json!({
        "id": r.get::<_, Uuid>(0),
        "number": r.get::<_, String>(1),
        "status": r.get::<_, String>(2),
        "customer_id": r.get::<_, Uuid>(3),
        "currency": r.get::<_, String>(4),
        "sent": r.get::<_, bool>(5),
        "total_cents": r.get::<_, i64>(6),
    })
}

async fn load_invoice(tx: &mut Tx, iid: Uuid) -> ApiResult<Value> {
    let row = tx
        .query_opt(&format!("{INVOICE_SQL} WHERE i.id = $1"), &[&iid])
        .await?
        .ok_or_else(|| HttpError::not_found("invoice"))?;
    let mut v = invoice_json(&row);
    let lines = tx
        .query(
            "SELECT id, description, quantity, unit_price_cents FROM invoicing.line_items
             WHERE invoice_id = $1 ORDER BY description, id",
            &[&iid],
        )
        .await?;
    v["lines"] = lines
        .iter()
        .map(|l| {
            json!({"id": l.get::<_, Uuid>(0), "description": l.get::<_, String>(1),
                   "quantity": l.get::<_, i32>(2), "unit_price_cents": l.get::<_, i64>(3)})
        })
        .collect();
    Ok(v)
}

async fn list_invoices(
    tenant: Tenant,
    mut tx: Tx,
    Query(f): Query<InvoiceFilter>,
) -> ApiResult<Json<Vec<Value>>> {
    tenant.require_scope("invoices:read")?;
    let wanted = f
        .status
        .as_deref()
        .map(|s| status("status", s))
        .transpose()?;
    let rows = tx
        .query(
            &format!("{INVOICE_SQL} WHERE $1::text IS NULL OR i.status = $1 ORDER BY i.number"),
            &[&wanted],
        )
        .await?;
    Ok(Json(rows.iter().map(invoice_json).collect()))
}

/// Inserts a checked line (`at`: its field path for errors).
async fn insert_line(tx: &mut Tx, iid: Uuid, at: &str, l: &NewLine) -> ApiResult<()> {
    let description = line(at, l)?;
    tx.execute(
        "INSERT INTO invoicing.line_items (invoice_id, description, quantity, unit_price_cents)
         VALUES ($1, $2, $3, $4)",
        &[&iid, &description, &l.quantity, &l.unit_price_cents],
    )
    .await?;
    Ok(())
}

/// Refuses (422 naming `field`) when the invoice's lines add up to more than
/// [`MAX_INVOICE_TOTAL_CENTS`]; the request's transaction then rolls back, so nothing of
/// it is stored. Summed as `numeric`, which cannot overflow.
async fn check_total(tx: &mut Tx, iid: Uuid, field: &str) -> ApiResult<()> {
    let too_big: bool = tx
        .query_one(
            "SELECT coalesce(sum(quantity::numeric * unit_price_cents), 0) > $2::bigint
               FROM invoicing.line_items WHERE invoice_id = $1",
            &[&iid, &MAX_INVOICE_TOTAL_CENTS],
        )
        .await?
        .get(0);
    if too_big {
        return Err(invalid(
            field,
            &format!("the invoice total must be at most {MAX_INVOICE_TOTAL_CENTS} cents"),
        ));
    }
    Ok(())
}

async fn create_invoice(
    tenant: Tenant,
    mut tx: Tx,
    Body(n): Body<NewInvoice>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    tenant.require_scope("invoices:write")?;
    let number = invoice_number("number", &n.number)?;
    for (i, l) in n.lines.iter().enumerate() {
        line(&format!("lines[{i}]"), l)?;
    }
    // The composite foreign key would refuse another tenant's customer too; checking
    // first gives the same 404 as for a customer that does not exist.
    let exists = tx
        .query_opt(
            "SELECT 1 FROM invoicing.customers WHERE id = $1",
            &[&n.customer_id],
        )
        .await?
        .is_some();
    if !exists {
        return Err(HttpError::not_found("customer"));
    }
    let row = tx
        .query_one(
            "INSERT INTO invoicing.invoices (customer_id, number) VALUES ($1, $2) RETURNING id",
            &[&n.customer_id, &number],
        )
        .await?;
    let iid: Uuid = row.get(0);
    for (i, l) in n.lines.iter().enumerate() {
        insert_line(&mut tx, iid, &format!("lines[{i}]"), l).await?;
    }
    check_total(&mut tx, iid, "lines").await?;
    Ok((StatusCode::CREATED, Json(load_invoice(&mut tx, iid).await?)))
}

async fn get_invoice(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    tenant.require_scope("invoices:read")?;
    let iid = id(&raw, "invoice")?;
    Ok(Json(load_invoice(&mut tx, iid).await?))
}

async fn update_invoice(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
    Body(p): Body<InvoicePatch>,
) -> ApiResult<Json<Value>> {
    tenant.require_scope("invoices:write")?;
    let iid = id(&raw, "invoice")?;
    let new_status = p
        .status
        .as_deref()
        .map(|s| status("status", s))
        .transpose()?;
    let number = p
        .number
        .as_deref()
        .map(|n| invoice_number("number", n))
        .transpose()?;
    let n = tx
        .execute(
            "UPDATE invoicing.invoices SET status = coalesce($2, status), number = coalesce($3, number)
             WHERE id = $1",
            &[&iid, &new_status, &number],
        )
        .await?;
    if n == 0 {
        return Err(HttpError::not_found("invoice"));
    }
    Ok(Json(load_invoice(&mut tx, iid).await?))
}

async fn delete_invoice(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    delete_one(
        "invoice",
        "DELETE FROM invoicing.invoices WHERE id = $1",
        tenant,
        &mut tx,
        &raw,
    )
    .await
}

async fn add_line(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
    Body(l): Body<NewLine>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    tenant.require_scope("invoices:write")?;
    let iid = id(&raw, "invoice")?;
    line("", &l)?;
    let exists = tx
        .query_opt(
            "SELECT 1 FROM invoicing.invoices WHERE id = $1 FOR UPDATE",
            &[&iid],
        )
        .await?
        .is_some();
    if !exists {
        return Err(HttpError::not_found("invoice"));
    }
    insert_line(&mut tx, iid, "", &l).await?;
    check_total(&mut tx, iid, "unit_price_cents").await?;
    Ok((StatusCode::CREATED, Json(load_invoice(&mut tx, iid).await?)))
}

async fn send_invoice(
    tenant: Tenant,
    mut tx: Tx,
    axum::extract::State(state): axum::extract::State<AppState>,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    tenant.require_scope("invoices:write")?;
    let iid = existing_invoice(&mut tx, &raw).await?;
    // Enqueued in the request's transaction: no job if the request fails.
    let job = tenancy_jobs::enqueue(
        &mut tx,
        &state.jobs,
        QUEUE,
        send::KIND,
        &json!({ "invoice_id": iid }),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job_id": job }))).into_response())
}

async fn list_deliveries(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<Json<Vec<Value>>> {
    tenant.require_scope("invoices:read")?;
    let iid = existing_invoice(&mut tx, &raw).await?;
    let rows = tx
        .query(
            "SELECT job_id, recipient, tenant_id FROM invoicing.deliveries WHERE invoice_id = $1 ORDER BY sent_at",
            &[&iid],
        )
        .await?;
    Ok(Json(
        rows.iter()
            .map(|r| json!({"job_id": r.get::<_, Uuid>(0), "recipient": r.get::<_, String>(1), "tenant_id": r.get::<_, Uuid>(2)}))
            .collect(),
    ))
}

async fn report(tenant: Tenant, mut tx: Tx) -> ApiResult<Json<Value>> {
    tenant.require_scope("invoices:read")?;
    // Sums as numeric (text here): over any number of invoices they may exceed bigint.
    let rows = tx
        .query(
            "SELECT i.status, count(DISTINCT i.id)::bigint,
                    coalesce(sum(l.quantity::numeric * l.unit_price_cents), 0)::text
               FROM invoicing.invoices i LEFT JOIN invoicing.line_items l ON l.invoice_id = i.id
              GROUP BY i.status ORDER BY i.status",
            &[],
        )
        .await?;
    let customers: i64 = tx
        .query_one("SELECT count(*) FROM invoicing.customers", &[])
        .await?
        .get(0);
    let mut by_status = serde_json::Map::new();
    let (mut count, mut total) = (0i64, 0i128);
    for r in &rows {
        let c: i64 = r.get(1);
        let t: i128 = r
            .get::<_, String>(2)
            .parse()
            .map_err(|e| HttpError::internal(format!("report total: {e}")))?;
        count = count.saturating_add(c);
        total = total.saturating_add(t);
        by_status.insert(r.get(0), json!({"invoices": c, "total_cents": cents(t)}));
    }
    Ok(Json(json!({
        "tenant": tenant.slug(),
        "customers": customers,
        "invoices": count,
        "total_cents": cents(total),
        "by_status": by_status,
    })))
}

/// A sum of cents as a JSON number: exact while it fits in 64 bits, else the nearest
/// floating-point value (beyond 92 quadrillion euros; JSON readers in JavaScript lose
/// exactness far earlier anyway).
fn cents(v: i128) -> Value {
    match i64::try_from(v) {
        Ok(v) => json!(v),
        Err(_) => json!(v as f64),
    }
}

// ---- API keys ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Issues an API key of the caller's tenant (behind `RequirePermission` for
/// `api_keys:manage`). Its scopes must be permissions the caller holds: one more is
/// refused (403 naming it), an undeclared one too (422 naming it). The key is shown once.
/// It is stored in a transaction of the tenant on the catalog database, through the
/// catalog's function that takes the tenant from that transaction's signed context and
/// records the issue (`api_key.issue`, by the caller) in the control log in that
/// transaction.
async fn create_api_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    perms: Permissions,
    request_id: Option<Extension<RequestId>>,
    Body(k): Body<NewApiKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = text("name", &k.name, 1, 100)?;
    let scopes = tenancy_access::check_key_scopes(&state.access, &perms, &k.scopes)?;
    let held: Vec<String> = perms.granted().map(str::to_owned).collect();
    let by = api_key::KeyActor::of(&tenant, request_id.as_deref());
    let mut tx = state.keys.begin(tenant.id()).await?;
    let (rec, key) = api_key::issue_tenant_api_key(&mut tx, &by, name, &scopes, &held).await?;
    tx.commit().await?;
    let mut view = key_view(&rec);
    view["key"] = json!(key.expose());
    Ok((StatusCode::CREATED, Json(view)))
}

/// A key as the API shows it: never its secret or its hash.
fn key_view(k: &api_key::ApiKeyRecord) -> Value {
    let ts = |t: time::OffsetDateTime| t.format(&Rfc3339).ok();
    json!({
        "key_id": k.key_id,
        "name": k.name,
        "scopes": k.scopes,
        "created_at": ts(k.created_at),
        "revoked_at": k.revoked_at.and_then(ts),
        "last_used_at": k.last_used_at.and_then(ts),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyPage {
    after: Option<String>,
    limit: Option<i64>,
}

/// One page of the caller's tenant's API keys, newest first, revoked ones included
/// (behind `RequirePermission` for `api_keys:manage`): `{"items", "next_after"}`; pass
/// `next_after` as `after` for the next page (`limit` 1 to 200, default 50).
async fn list_api_keys(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    Query(q): Query<KeyPage>,
) -> ApiResult<Json<Value>> {
    let page = tenancy_access::PageRequest::parse(q.after.as_deref(), q.limit)?;
    let after = q
        .after
        .as_deref()
        .map(|c| {
            api_key::parse_api_key_cursor(c)
                .ok_or_else(|| invalid("after", "is not a cursor this list returned"))
        })
        .transpose()?;
    let mut tx = state.keys.begin(tenant.id()).await?;
    let mut keys = api_key::tenant_api_keys(&mut tx, after.as_ref(), page.limit() + 1).await?;
    tx.commit().await?;
    let more = keys.len() as i64 > page.limit();
    keys.truncate(page.limit() as usize);
    let next_after = if more {
        keys.last().map(api_key::api_key_cursor)
    } else {
        None
    };
    Ok(Json(json!({
        "items": keys.iter().map(key_view).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

/// Revokes an API key of the caller's tenant (behind `RequirePermission` for
/// `api_keys:manage`): 200 with the key, 404 for a key the tenant does not have (another
/// tenant's key included, which stays as it is). Revoking a revoked key changes nothing.
/// The revocation and its `api_key.revoke` event in the control log commit together.
async fn revoke_api_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    request_id: Option<Extension<RequestId>>,
    Path(key_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let well_formed = key_id.len() == 16
        && key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(HttpError::not_found("API key"));
    }
    let mut tx = state.keys.begin(tenant.id()).await?;
    let by = api_key::KeyActor::of(&tenant, request_id.as_deref());
    let revoked = api_key::revoke_tenant_api_key(&mut tx, &by, &key_id).await?;
    tx.commit().await?;
    revoked
        .map(|k| Json(key_view(&k)))
        .ok_or_else(|| HttpError::not_found("API key"))
}
