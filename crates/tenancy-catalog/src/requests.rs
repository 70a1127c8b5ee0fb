//! API idempotency keys, processed billing events and tenant counts.

use std::time::Duration;

use tenancy_core::{TenantId, TenantState};
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::corrupt;
use crate::CatalogError;

/// What the idempotency ledger says about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum IdempotencyBegin {
    /// First time: the caller executes the request, then completes or abandons the key.
    New,
    /// Same key and same body, already completed: replay this response.
    Replay {
        /// HTTP status.
        status: u16,
        /// JSON body.
        body: serde_json::Value,
    },
    /// Same key, different body.
    Mismatch,
    /// Same key, same body, still executing.
    InProgress,
}

/// Reserves an idempotency key, or reports what happened to it before. A reservation
/// left unfinished for longer than `stale` (its request died) is taken over.
pub async fn idempotency_begin(
    client: &Client,
    scope: &str,
    key: &str,
    request_hash: &str,
    stale: Duration,
) -> Result<IdempotencyBegin, CatalogError> {
    let stale_s = stale.as_secs_f64();
    let row = client
        .query_one(
            "WITH ins AS (
                 INSERT INTO tenancy_catalog.idempotency_keys AS k (scope, key, request_hash) VALUES ($1, $2, $3)
                 ON CONFLICT (scope, key) DO UPDATE SET created_at = now()
                    WHERE k.status IS NULL AND k.request_hash = EXCLUDED.request_hash
                      AND k.created_at < now() - make_interval(secs => $4::float8)
                 RETURNING true AS mine)
             SELECT (SELECT mine FROM ins), k.request_hash, k.status, k.body
             FROM (SELECT 1) one LEFT JOIN tenancy_catalog.idempotency_keys k ON k.scope = $1 AND k.key = $2",
            &[&scope, &key, &request_hash, &stale_s],
        )
        .await
        .map_err(CatalogError::db("reserving an idempotency key"))?;
    if row.get::<_, Option<bool>>(0) == Some(true) {
        return Ok(IdempotencyBegin::New);
    }
    let hash: Option<String> = row.get(1);
    let status: Option<i32> = row.get(2);
    let body: Option<serde_json::Value> = row.get(3);
    Ok(match (hash, status) {
        (Some(h), _) if h != request_hash => IdempotencyBegin::Mismatch,
        (Some(_), Some(status)) => IdempotencyBegin::Replay {
            status: u16::try_from(status).map_err(corrupt)?,
            body: body.unwrap_or(serde_json::Value::Null),
        },
        _ => IdempotencyBegin::InProgress,
    })
}

/// Stores the response of a reserved key.
pub async fn idempotency_complete(
    client: &Client,
    scope: &str,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), CatalogError> {
    client
        .execute(
            "UPDATE tenancy_catalog.idempotency_keys SET status = $3, body = $4, completed_at = now() WHERE scope = $1 AND key = $2",
            &[&scope, &key, &i32::from(status), body],
        )
        .await
        .map_err(CatalogError::db("completing an idempotency key"))?;
    Ok(())
}

/// Releases a reserved key whose request failed before changing anything, so a retry
/// runs again.
pub async fn idempotency_abandon(
    client: &Client,
    scope: &str,
    key: &str,
) -> Result<(), CatalogError> {
    client
        .execute(
            "DELETE FROM tenancy_catalog.idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL",
            &[&scope, &key],
        )
        .await
        .map_err(CatalogError::db("releasing an idempotency key"))?;
    Ok(())
}

/// Records a billing event; `false` when it was already processed.
pub async fn record_billing_event(
    tx: &Transaction<'_>,
    event_id: &str,
    event_type: &str,
) -> Result<bool, CatalogError> {
    let n = tx
        .execute(
            "INSERT INTO tenancy_catalog.billing_events (event_id, event_type) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&event_id, &event_type],
        )
        .await
        .map_err(CatalogError::db("recording a billing event"))?;
    Ok(n == 1)
}

/// Links a recorded billing event to what it caused.
pub async fn link_billing_event(
    tx: &Transaction<'_>,
    event_id: &str,
    tenant: Option<TenantId>,
    workflow: Option<Uuid>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.billing_events SET tenant_id = $2, workflow_id = $3 WHERE event_id = $1",
        &[&event_id, &tenant.map(|t| t.as_uuid()), &workflow],
    )
    .await
    .map_err(CatalogError::db("linking a billing event"))?;
    Ok(())
}

/// Tenants counted by state (for tests and the console).
pub async fn count_tenants_by_state(
    client: &Client,
) -> Result<Vec<(TenantState, i64)>, CatalogError> {
    let rows = client
        .query(
            "SELECT state, count(*) FROM tenancy_catalog.tenants GROUP BY state ORDER BY state",
            &[],
        )
        .await
        .map_err(CatalogError::db("counting tenants"))?;
    rows.iter()
        .map(|r| Ok((r.get::<_, String>(0).parse().map_err(corrupt)?, r.get(1))))
        .collect()
}
