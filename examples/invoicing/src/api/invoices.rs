//! Invoices and their lines: list, create (with lines), read, change, delete, add a line,
//! send (a job on the queue) and its deliveries, and the summary report. Every total is
//! checked to fit before it is stored.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_axum::{Body, HttpError, Tenant, Tx};
use tenancy_sdk::Row;
use uuid::Uuid;

use super::{delete_one, id, invalid, text, ApiResult};
use crate::{send, AppState, QUEUE};

/// Highest quantity of one line.
const MAX_QUANTITY: i32 = 1_000_000;
/// Highest unit price of one line, in cents.
const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000_000;
/// Highest total of one invoice, in cents. Every total the API computes (a line, an
/// invoice, the report's sums over any number of invoices) then fits in its type.
const MAX_INVOICE_TOTAL_CENTS: i64 = 1_000_000_000_000_000;

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

#[derive(Debug, Deserialize)]
pub(super) struct NewLine {
    description: String,
    quantity: i32,
    unit_price_cents: i64,
}

#[derive(Debug, Deserialize)]
pub(super) struct NewInvoice {
    customer_id: Uuid,
    number: String,
    #[serde(default)]
    lines: Vec<NewLine>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InvoicePatch {
    status: Option<String>,
    number: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InvoiceFilter {
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

pub(super) async fn list_invoices(
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

pub(super) async fn create_invoice(
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

pub(super) async fn get_invoice(
    tenant: Tenant,
    mut tx: Tx,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    tenant.require_scope("invoices:read")?;
    let iid = id(&raw, "invoice")?;
    Ok(Json(load_invoice(&mut tx, iid).await?))
}

pub(super) async fn update_invoice(
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

pub(super) async fn delete_invoice(
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

pub(super) async fn add_line(
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

pub(super) async fn send_invoice(
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

pub(super) async fn list_deliveries(
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

pub(super) async fn report(tenant: Tenant, mut tx: Tx) -> ApiResult<Json<Value>> {
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
