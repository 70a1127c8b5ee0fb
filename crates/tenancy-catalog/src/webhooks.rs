//! Third-party registrations, the webhook outbox and the delivery log.

use std::time::Duration;

use tenancy_core::TenantId;
use tokio_postgres::{Client, GenericClient, Transaction};
use uuid::Uuid;

use crate::corrupt;
use crate::CatalogError;

/// Receivers a tenant is registered with, with the webhook id of the registration.
pub async fn registrations(
    client: &Client,
    id: TenantId,
) -> Result<Vec<(String, String)>, CatalogError> {
    registrations_on(client, id).await
}

/// Receivers a tenant is registered with, inside a transaction.
pub async fn registrations_in(
    tx: &Transaction<'_>,
    id: TenantId,
) -> Result<Vec<(String, String)>, CatalogError> {
    registrations_on(tx, id).await
}

async fn registrations_on(
    client: &impl GenericClient,
    id: TenantId,
) -> Result<Vec<(String, String)>, CatalogError> {
    let rows = client
        .query(
            "SELECT receiver, webhook_id FROM tenancy_catalog.tenant_registrations WHERE tenant_id = $1 ORDER BY receiver",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading registrations"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records a successful registration. Idempotent.
pub async fn record_registration(
    tx: &Transaction<'_>,
    id: TenantId,
    receiver: &str,
    webhook_id: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO tenancy_catalog.tenant_registrations (tenant_id, receiver, webhook_id) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, receiver) DO NOTHING",
        &[&id.as_uuid(), &receiver, &webhook_id],
    )
    .await
    .map_err(CatalogError::db("recording a registration"))?;
    Ok(())
}

/// Forgets a registration after the receiver confirmed the deregistration.
pub async fn remove_registration(
    tx: &Transaction<'_>,
    id: TenantId,
    receiver: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "DELETE FROM tenancy_catalog.tenant_registrations WHERE tenant_id = $1 AND receiver = $2",
        &[&id.as_uuid(), &receiver],
    )
    .await
    .map_err(CatalogError::db("removing a registration"))?;
    Ok(())
}

/// An outbound webhook to deliver.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Standard Webhooks `webhook-id` (stable across retries: the receiver's idempotency key).
    pub webhook_id: String,
    /// Receiver name from configuration.
    pub receiver: String,
    /// Receiver URL.
    pub url: String,
    /// Tenant concerned.
    pub tenant_id: Option<TenantId>,
    /// Event type (`tenant.activated`, …).
    pub event_type: String,
    /// JSON body.
    pub payload: serde_json::Value,
    /// Delivery attempts so far.
    pub attempts: i32,
}

/// Queues a message in the outbox (same transaction as the change it announces).
/// Idempotent on `webhook_id`.
pub async fn enqueue_outbox(tx: &Transaction<'_>, m: &OutboxMessage) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO tenancy_catalog.webhook_outbox (webhook_id, receiver, url, tenant_id, event_type, payload)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (webhook_id) DO NOTHING",
        &[&m.webhook_id, &m.receiver, &m.url, &m.tenant_id.map(|t| t.as_uuid()), &m.event_type, &m.payload],
    )
    .await
    .map_err(CatalogError::db("queueing a webhook"))?;
    Ok(())
}

/// Claims the next due outbox message, locking it until `tx` ends.
pub async fn claim_outbox(tx: &Transaction<'_>) -> Result<Option<OutboxMessage>, CatalogError> {
    let row = tx
        .query_opt(
            "SELECT webhook_id, receiver, url, tenant_id, event_type, payload, attempts FROM tenancy_catalog.webhook_outbox
             WHERE status = 'pending' AND next_attempt <= now() ORDER BY next_attempt LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .map_err(CatalogError::db("claiming a webhook"))?;
    row.map(|r| {
        Ok(OutboxMessage {
            webhook_id: r.get(0),
            receiver: r.get(1),
            url: r.get(2),
            tenant_id: r
                .get::<_, Option<Uuid>>(3)
                .map(TenantId::from_uuid)
                .transpose()
                .map_err(corrupt)?,
            event_type: r.get(4),
            payload: r.get(5),
            attempts: r.get(6),
        })
    })
    .transpose()
}

/// Records the outcome of an outbox delivery: delivered, retry after `retry_in`, or dead.
pub async fn finish_outbox(
    tx: &Transaction<'_>,
    webhook_id: &str,
    delivered: bool,
    retry_in: Option<Duration>,
) -> Result<(), CatalogError> {
    let status = match (delivered, retry_in) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "dead",
    };
    let ms = retry_in.map_or(0.0, |d| d.as_millis() as f64);
    tx.execute(
        "UPDATE tenancy_catalog.webhook_outbox SET status = $2, attempts = attempts + 1,
             next_attempt = now() + make_interval(secs => $3::float8 / 1000.0),
             delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
         WHERE webhook_id = $1",
        &[&webhook_id, &status, &ms],
    )
    .await
    .map_err(CatalogError::db("recording a webhook outcome"))?;
    Ok(())
}

/// One delivery attempt, for the delivery log.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Standard Webhooks id.
    pub webhook_id: String,
    /// Receiver name.
    pub receiver: String,
    /// Tenant concerned.
    pub tenant_id: Option<TenantId>,
    /// Event type.
    pub event_type: String,
    /// Attempt number (1-based).
    pub attempt: i32,
    /// HTTP status, when a response came back.
    pub http_status: Option<i32>,
    /// Transport or status error.
    pub error: Option<String>,
    /// Duration in milliseconds.
    pub ms: f64,
}

/// Appends to the delivery log.
pub async fn record_delivery(tx: &Transaction<'_>, d: &Delivery) -> Result<(), CatalogError> {
    tx
        .execute(
            "INSERT INTO tenancy_catalog.webhook_deliveries (webhook_id, receiver, tenant_id, event_type, attempt, http_status, error, ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&d.webhook_id, &d.receiver, &d.tenant_id.map(|t| t.as_uuid()), &d.event_type, &d.attempt, &d.http_status, &d.error, &d.ms],
        )
        .await
        .map_err(CatalogError::db("recording a webhook delivery"))?;
    Ok(())
}

/// The delivery log of a tenant (or of every tenant), newest first.
pub async fn deliveries(
    client: &Client,
    tenant: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Delivery>, CatalogError> {
    let rows = client
        .query(
            "SELECT webhook_id, receiver, tenant_id, event_type, attempt, http_status, error, ms
             FROM tenancy_catalog.webhook_deliveries WHERE ($1::uuid IS NULL OR tenant_id = $1)
             ORDER BY seq DESC LIMIT $2",
            &[&tenant.map(|t| t.as_uuid()), &limit],
        )
        .await
        .map_err(CatalogError::db("reading webhook deliveries"))?;
    rows.iter()
        .map(|r| {
            Ok(Delivery {
                webhook_id: r.get(0),
                receiver: r.get(1),
                tenant_id: r
                    .get::<_, Option<Uuid>>(2)
                    .map(TenantId::from_uuid)
                    .transpose()
                    .map_err(corrupt)?,
                event_type: r.get(3),
                attempt: r.get(4),
                http_status: r.get(5),
                error: r.get(6),
                ms: r.get(7),
            })
        })
        .collect()
}
