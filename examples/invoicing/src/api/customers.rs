//! Customers: list, create, read, change and delete, each name and email checked.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_axum::{Body, HttpError, Tenant, Tx};
use tenancy_sdk::Row;
use uuid::Uuid;

use super::{delete_one, id, invalid, text, ApiResult};

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

#[derive(Debug, Serialize)]
pub(super) struct Customer {
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
pub(super) struct NewCustomer {
    name: String,
    email: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct CustomerPatch {
    name: Option<String>,
    email: Option<String>,
}

pub(super) async fn list_customers(tenant: Tenant, mut tx: Tx) -> ApiResult<Json<Vec<Customer>>> {
    tenant.require_scope("invoices:read")?;
    let rows = tx
        .query(
            "SELECT id, name, email FROM invoicing.customers ORDER BY name, id",
            &[],
        )
        .await?;
    Ok(Json(rows.iter().map(customer).collect()))
}

pub(super) async fn create_customer(
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

pub(super) async fn get_customer(
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

pub(super) async fn update_customer(
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

pub(super) async fn delete_customer(
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
