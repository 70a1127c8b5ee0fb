//! What provisioning and the lifecycle workflows change on a tenant: its storage, billing
//! link, plan, purge date, failure and legal hold; the plan settings; the tenants due for
//! a purge.

use tenancy_core::{PlanKey, TenantId};
use time::OffsetDateTime;
use tokio_postgres::{Client, Transaction};

use crate::corrupt;
use crate::store::begin;
use crate::{tenant_from_row, CatalogError, Tenant, TENANT_COLUMNS};

/// Reads a tenant inside a transaction, locking its row.
pub async fn lock_tenant(tx: &Transaction<'_>, id: TenantId) -> Result<Tenant, CatalogError> {
    crate::store::tenant_where(tx, "id = $1 FOR NO KEY UPDATE", &id.as_uuid())
        .await?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))
}

/// Records where a tenant's storage is (schema and/or database). Idempotent.
pub async fn set_storage(
    tx: &Transaction<'_>,
    id: TenantId,
    schema_name: Option<&str>,
    database_name: Option<&str>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.tenants SET schema_name = $2, database_name = $3, updated_at = now() WHERE id = $1",
        &[&id.as_uuid(), &schema_name, &database_name],
    )
    .await
    .map_err(CatalogError::db("recording a tenant's storage"))?;
    Ok(())
}

/// Links a tenant to its billing customer and subscription. Idempotent.
pub async fn set_billing(
    tx: &Transaction<'_>,
    id: TenantId,
    customer: Option<&str>,
    subscription: Option<&str>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.tenants SET billing_customer = $2, billing_subscription = $3, updated_at = now() WHERE id = $1",
        &[&id.as_uuid(), &customer, &subscription],
    )
    .await
    .map_err(CatalogError::db("linking a tenant to billing"))?;
    Ok(())
}

/// Changes a tenant's plan and records an event (no-op when unchanged).
pub async fn set_plan_in(
    tx: &Transaction<'_>,
    id: TenantId,
    plan: &PlanKey,
    actor: &str,
) -> Result<(), CatalogError> {
    let n = tx
        .execute(
            "UPDATE tenancy_catalog.tenants SET plan = $2, updated_at = now() WHERE id = $1 AND plan <> $2",
            &[&id.as_uuid(), &plan.as_str()],
        )
        .await
        .map_err(CatalogError::db("changing a tenant's plan"))?;
    if n > 0 {
        tx.execute(
            "INSERT INTO tenancy_catalog.tenant_events (tenant_id, kind, actor, detail) VALUES ($1, 'plan_changed', $2, $3)",
            &[&id.as_uuid(), &actor, &serde_json::json!({ "plan": plan.as_str() })],
        )
        .await
        .map_err(CatalogError::db("recording a tenant event"))?;
    }
    Ok(())
}

/// Sets when a soft-deleted tenant may be purged.
pub async fn set_purge_after(
    tx: &Transaction<'_>,
    id: TenantId,
    at: Option<OffsetDateTime>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.tenants SET purge_after = $2, updated_at = now() WHERE id = $1",
        &[&id.as_uuid(), &at],
    )
    .await
    .map_err(CatalogError::db("setting a purge date"))?;
    Ok(())
}

/// Records why provisioning failed.
pub async fn set_failure(
    tx: &Transaction<'_>,
    id: TenantId,
    failure: &str,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.tenants SET failure = $2, updated_at = now() WHERE id = $1",
        &[&id.as_uuid(), &failure],
    )
    .await
    .map_err(CatalogError::db("recording a provisioning failure"))?;
    Ok(())
}

/// Sets or lifts a legal hold, recording an event.
pub async fn set_legal_hold(
    client: &mut Client,
    id: TenantId,
    hold: bool,
    actor: &str,
) -> Result<Tenant, CatalogError> {
    let tx = begin(client).await?;
    let t = set_legal_hold_in(&tx, id, hold, actor).await?;
    tx.commit()
        .await
        .map_err(CatalogError::db("committing a legal hold"))?;
    Ok(t)
}

/// [`set_legal_hold`] inside the caller's transaction (which records what else the change
/// needs, such as its audit event, and commits).
pub async fn set_legal_hold_in(
    tx: &tokio_postgres::Transaction<'_>,
    id: TenantId,
    hold: bool,
    actor: &str,
) -> Result<Tenant, CatalogError> {
    let row = tx
        .query_opt(
            &format!("UPDATE tenancy_catalog.tenants SET legal_hold = $2, updated_at = now() WHERE id = $1 RETURNING {TENANT_COLUMNS}"),
            &[&id.as_uuid(), &hold],
        )
        .await
        .map_err(CatalogError::db("setting a legal hold"))?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))?;
    tx.execute(
        "INSERT INTO tenancy_catalog.tenant_events (tenant_id, kind, actor, detail) VALUES ($1, 'legal_hold', $2, $3)",
        &[&id.as_uuid(), &actor, &serde_json::json!({ "hold": hold })],
    )
    .await
    .map_err(CatalogError::db("recording a tenant event"))?;
    tenant_from_row(&row)
}

/// Whether a tenant's provisioning failed for good (it is `deleted` with a failure
/// recorded, and never served).
pub async fn provisioning_failed(client: &Client, id: TenantId) -> Result<bool, CatalogError> {
    Ok(client
        .query_opt(
            "SELECT failure IS NOT NULL FROM tenancy_catalog.tenants WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading a tenant's failure"))?
        .is_some_and(|r| r.get(0)))
}

/// Finds the tenant linked to a billing customer.
pub async fn tenant_by_billing_customer(
    client: &Client,
    customer: &str,
) -> Result<Option<Tenant>, CatalogError> {
    crate::store::tenant_where(client, "billing_customer = $1", &customer).await
}

/// Finds the tenant whose provisioning was started for a billing customer but not yet
/// linked (the billing step has not run yet).
pub async fn tenant_by_pending_billing_customer(
    client: &Client,
    customer: &str,
) -> Result<Option<TenantId>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT tenant_id FROM tenancy_catalog.workflows WHERE kind = 'provision' AND input->>'billing_customer' = $1
             ORDER BY seq DESC LIMIT 1",
            &[&customer],
        )
        .await
        .map_err(CatalogError::db("finding a tenant by billing customer"))?;
    row.map(|r| TenantId::from_uuid(r.get(0)).map_err(corrupt))
        .transpose()
}

/// Soft-deleted tenants whose retention has passed, without a legal hold and without a
/// queued workflow: candidates for a purge workflow.
pub async fn purge_due(client: &Client, limit: i64) -> Result<Vec<TenantId>, CatalogError> {
    let rows = client
        .query(
            "SELECT t.id FROM tenancy_catalog.tenants t
             WHERE t.state = 'deleting' AND NOT t.legal_hold AND t.purge_after <= now()
               AND NOT EXISTS (SELECT 1 FROM tenancy_catalog.workflows w WHERE w.tenant_id = t.id
                               AND w.status IN ('pending', 'running', 'compensating'))
             ORDER BY t.purge_after LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(CatalogError::db("finding tenants due for purge"))?;
    rows.iter()
        .map(|r| TenantId::from_uuid(r.get(0)).map_err(corrupt))
        .collect()
}

/// Replaces a tenant's plan settings.
pub async fn seed_plan_settings(
    tx: &Transaction<'_>,
    id: TenantId,
    settings: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), CatalogError> {
    tx.execute(
        "DELETE FROM tenancy_catalog.tenant_plan_settings WHERE tenant_id = $1",
        &[&id.as_uuid()],
    )
    .await
    .map_err(CatalogError::db("clearing plan settings"))?;
    for (k, v) in settings {
        tx.execute(
            "INSERT INTO tenancy_catalog.tenant_plan_settings (tenant_id, key, value) VALUES ($1, $2, $3)",
            &[&id.as_uuid(), k, v],
        )
        .await
        .map_err(CatalogError::db("seeding a plan setting"))?;
    }
    Ok(())
}

/// A tenant's plan settings, by key.
pub async fn plan_settings(
    client: &Client,
    id: TenantId,
) -> Result<serde_json::Map<String, serde_json::Value>, CatalogError> {
    let rows = client
        .query(
            "SELECT key, value FROM tenancy_catalog.tenant_plan_settings WHERE tenant_id = $1 ORDER BY key",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading plan settings"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
