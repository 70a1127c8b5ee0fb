//! Provisioning state in the catalog: workflows and their step log, tenant storage and
//! billing columns, plan settings, third-party registrations, the webhook outbox and
//! delivery log, API idempotency keys and processed billing events.
//!
//! The engine that runs workflows lives in `tenancy-provision`; this module only holds
//! the SQL. Functions that take a [`Transaction`] let a step change the catalog and
//! advance its workflow in one commit.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tenancy_core::{PlanKey, TenantId, TenantState};
use time::OffsetDateTime;
use tokio_postgres::{Client, Row, Transaction};
use uuid::Uuid;

use crate::{create_tenant_in, tenant_from_row, CatalogError, NewTenant, Tenant, TENANT_COLUMNS};

fn corrupt<E: fmt::Display>(e: E) -> CatalogError {
    CatalogError::Corrupt(e.to_string())
}

/// What a workflow does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowKind {
    /// Signup to active: placement, storage, migrations, seeding, registrations, billing.
    Provision,
    /// Active → suspended.
    Suspend,
    /// Suspended → active.
    Resume,
    /// Change the plan and re-seed its settings.
    ChangePlan,
    /// Soft delete: → deleting, with a purge date.
    Delete,
    /// Drop the storage of a soft-deleted tenant after its retention period.
    Purge,
}

impl WorkflowKind {
    /// The name stored in the catalog.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkflowKind::Provision => "provision",
            WorkflowKind::Suspend => "suspend",
            WorkflowKind::Resume => "resume",
            WorkflowKind::ChangePlan => "change_plan",
            WorkflowKind::Delete => "delete",
            WorkflowKind::Purge => "purge",
        }
    }
}

impl FromStr for WorkflowKind {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "provision" => WorkflowKind::Provision,
            "suspend" => WorkflowKind::Suspend,
            "resume" => WorkflowKind::Resume,
            "change_plan" => WorkflowKind::ChangePlan,
            "delete" => WorkflowKind::Delete,
            "purge" => WorkflowKind::Purge,
            other => return Err(corrupt(format!("unknown workflow kind {other:?}"))),
        })
    }
}

impl fmt::Display for WorkflowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowStatus {
    /// Not started yet.
    Pending,
    /// Forward steps under way.
    Running,
    /// A step failed for good; undoing what was done.
    Compensating,
    /// Every step done.
    Succeeded,
    /// Failed and compensated: nothing is left behind.
    Failed,
    /// Nothing to do (e.g. a purge blocked by a legal hold).
    Cancelled,
}

impl WorkflowStatus {
    /// The name stored in the catalog.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkflowStatus::Pending => "pending",
            WorkflowStatus::Running => "running",
            WorkflowStatus::Compensating => "compensating",
            WorkflowStatus::Succeeded => "succeeded",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the workflow is over.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            WorkflowStatus::Succeeded | WorkflowStatus::Failed | WorkflowStatus::Cancelled
        )
    }
}

impl FromStr for WorkflowStatus {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => WorkflowStatus::Pending,
            "running" => WorkflowStatus::Running,
            "compensating" => WorkflowStatus::Compensating,
            "succeeded" => WorkflowStatus::Succeeded,
            "failed" => WorkflowStatus::Failed,
            "cancelled" => WorkflowStatus::Cancelled,
            other => return Err(corrupt(format!("unknown workflow status {other:?}"))),
        })
    }
}

impl fmt::Display for WorkflowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workflow as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    /// Workflow id.
    pub id: Uuid,
    /// Creation order; a tenant's workflows run in this order, one at a time.
    pub seq: i64,
    /// The tenant it works on.
    pub tenant_id: TenantId,
    /// What it does.
    pub kind: WorkflowKind,
    /// Parameters (plan, billing ids, …).
    pub input: serde_json::Value,
    /// Where it is.
    pub status: WorkflowStatus,
    /// Index of the next forward (or compensation) step.
    pub step: i32,
    /// Failed attempts of the current step.
    pub attempts: i32,
    /// Not before this time (backoff).
    pub run_after: OffsetDateTime,
    /// The last step error.
    pub last_error: Option<String>,
    /// Who asked for it.
    pub actor: String,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it ended.
    pub finished_at: Option<OffsetDateTime>,
}

const WF_COLUMNS: &str = "id, seq, tenant_id, kind, input, status, step, attempts, run_after, last_error, actor, created_at, finished_at";

fn workflow_from_row(row: &Row) -> Result<Workflow, CatalogError> {
    Ok(Workflow {
        id: row.get(0),
        seq: row.get(1),
        tenant_id: TenantId::from_uuid(row.get(2)).map_err(corrupt)?,
        kind: row.get::<_, String>(3).parse()?,
        input: row.get(4),
        status: row.get::<_, String>(5).parse()?,
        step: row.get(6),
        attempts: row.get(7),
        run_after: row.get(8),
        last_error: row.get(9),
        actor: row.get(10),
        created_at: row.get(11),
        finished_at: row.get(12),
    })
}

/// Creates a tenant (state `provisioning`, pinned and placed) and its provision workflow
/// in the caller's transaction: either both exist or neither does.
pub async fn start_provisioning(
    tx: &Transaction<'_>,
    t: &NewTenant,
    input: &serde_json::Value,
    actor: &str,
) -> Result<(Tenant, Workflow), CatalogError> {
    let tenant = create_tenant_in(tx, t, actor).await?;
    let wf = insert_workflow(tx, tenant.id, WorkflowKind::Provision, input, actor).await?;
    Ok((tenant, wf))
}

async fn insert_workflow(
    tx: &Transaction<'_>,
    tenant: TenantId,
    kind: WorkflowKind,
    input: &serde_json::Value,
    actor: &str,
) -> Result<Workflow, CatalogError> {
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO tenancy_catalog.workflows (id, tenant_id, kind, input, actor)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {WF_COLUMNS}"
            ),
            &[
                &Uuid::new_v4(),
                &tenant.as_uuid(),
                &kind.as_str(),
                input,
                &actor,
            ],
        )
        .await
        .map_err(CatalogError::db("recording a workflow"))?;
    tx.execute(
        "SELECT pg_notify('tenancy_workflows', $1::text)",
        &[&tenant.to_string()],
    )
    .await
    .map_err(CatalogError::db("notifying workers"))?;
    workflow_from_row(&row)
}

/// Queues a lifecycle workflow for an existing tenant (it runs after the tenant's earlier
/// workflows).
pub async fn enqueue_workflow(
    tx: &Transaction<'_>,
    tenant: TenantId,
    kind: WorkflowKind,
    input: &serde_json::Value,
    actor: &str,
) -> Result<Workflow, CatalogError> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM tenancy_catalog.tenants WHERE id = $1 FOR KEY SHARE",
            &[&tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading a tenant"))?
        .is_some();
    if !exists {
        return Err(CatalogError::TenantNotFound(tenant.to_string()));
    }
    insert_workflow(tx, tenant, kind, input, actor).await
}

/// Claims the oldest runnable workflow (or the given one), locking its row until `tx`
/// ends. Oldest by creation, not by `run_after`: advancing a step sets `run_after` to now,
/// and ordering by it sent every workflow to the back of the queue after each step, so
/// under a burst each tenant waited for the whole batch (measured: sustained p50 6.7 s for
/// a batch of 100). Retries with backoff are still held back by `run_after <= now()`. Only the first unfinished workflow of each tenant is runnable, so a tenant's
/// workflows run one at a time, in order. Returns `None` when nothing is due (or every
/// due workflow is held by another worker).
pub async fn claim_workflow(
    tx: &Transaction<'_>,
    only: Option<Uuid>,
) -> Result<Option<Workflow>, CatalogError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {WF_COLUMNS} FROM tenancy_catalog.workflows w
                 WHERE w.status IN ('pending', 'running', 'compensating') AND w.run_after <= now()
                   AND ($1::uuid IS NULL OR w.id = $1)
                   AND NOT EXISTS (SELECT 1 FROM tenancy_catalog.workflows e
                                   WHERE e.tenant_id = w.tenant_id AND e.seq < w.seq
                                     AND e.status IN ('pending', 'running', 'compensating'))
                 ORDER BY w.seq LIMIT 1 FOR UPDATE SKIP LOCKED"
            ),
            &[&only],
        )
        .await
        .map_err(CatalogError::db("claiming a workflow"))?;
    row.as_ref().map(workflow_from_row).transpose()
}

/// Moves a claimed workflow to `status` at step `step`, resetting its attempts; final
/// statuses record the finish time.
pub async fn advance_workflow(
    tx: &Transaction<'_>,
    id: Uuid,
    status: WorkflowStatus,
    step: i32,
    error: Option<&str>,
) -> Result<(), CatalogError> {
    tx.execute(
        "UPDATE tenancy_catalog.workflows SET status = $2, step = $3, attempts = 0, run_after = now(),
             last_error = COALESCE($4, last_error), updated_at = now(),
             finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() END
         WHERE id = $1",
        &[&id, &status.as_str(), &step, &error],
    )
    .await
    .map_err(CatalogError::db("advancing a workflow"))?;
    Ok(())
}

/// Records a failed attempt of a claimed workflow's current step and schedules the next
/// one after `delay`.
pub async fn retry_workflow(
    tx: &Transaction<'_>,
    id: Uuid,
    error: &str,
    delay: Duration,
) -> Result<(), CatalogError> {
    let delay_ms = delay.as_millis() as f64;
    tx.execute(
        "UPDATE tenancy_catalog.workflows SET attempts = attempts + 1, last_error = $2, updated_at = now(),
             status = CASE WHEN status = 'pending' THEN 'running' ELSE status END,
             run_after = now() + make_interval(secs => $3::float8 / 1000.0)
         WHERE id = $1",
        &[&id, &error, &delay_ms],
    )
    .await
    .map_err(CatalogError::db("scheduling a workflow retry"))?;
    Ok(())
}

/// Appends one step attempt to the workflow's step log.
#[allow(clippy::too_many_arguments)]
pub async fn record_step(
    tx: &Transaction<'_>,
    workflow: Uuid,
    step: &str,
    compensation: bool,
    attempt: i32,
    outcome: &str,
    error: Option<&str>,
    ms: f64,
) -> Result<(), CatalogError> {
    tx.execute(
        "INSERT INTO tenancy_catalog.workflow_steps (workflow_id, step, compensation, attempt, outcome, error, ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&workflow, &step, &compensation, &attempt, &outcome, &error, &ms],
    )
    .await
    .map_err(CatalogError::db("recording a workflow step"))?;
    Ok(())
}

/// One entry of a workflow's step log.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// Step name.
    pub step: String,
    /// Whether it was a compensation step.
    pub compensation: bool,
    /// Attempt number (1-based).
    pub attempt: i32,
    /// `ok`, `retry` or `failed`.
    pub outcome: String,
    /// Error, for failed attempts.
    pub error: Option<String>,
    /// Duration in milliseconds.
    pub ms: f64,
}

/// A workflow's step log, oldest first.
pub async fn workflow_steps(
    client: &Client,
    workflow: Uuid,
) -> Result<Vec<StepRecord>, CatalogError> {
    let rows = client
        .query(
            "SELECT step, compensation, attempt, outcome, error, ms FROM tenancy_catalog.workflow_steps
             WHERE workflow_id = $1 ORDER BY seq",
            &[&workflow],
        )
        .await
        .map_err(CatalogError::db("reading workflow steps"))?;
    Ok(rows
        .iter()
        .map(|r| StepRecord {
            step: r.get(0),
            compensation: r.get(1),
            attempt: r.get(2),
            outcome: r.get(3),
            error: r.get(4),
            ms: r.get(5),
        })
        .collect())
}

/// Reads a workflow.
pub async fn get_workflow(client: &Client, id: Uuid) -> Result<Option<Workflow>, CatalogError> {
    let row = client
        .query_opt(
            &format!("SELECT {WF_COLUMNS} FROM tenancy_catalog.workflows WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(CatalogError::db("reading a workflow"))?;
    row.as_ref().map(workflow_from_row).transpose()
}

/// A tenant's workflows, oldest first.
pub async fn tenant_workflows(
    client: &Client,
    tenant: TenantId,
) -> Result<Vec<Workflow>, CatalogError> {
    let rows = client
        .query(
            &format!(
                "SELECT {WF_COLUMNS} FROM tenancy_catalog.workflows WHERE tenant_id = $1 ORDER BY seq"
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading workflows"))?;
    rows.iter().map(workflow_from_row).collect()
}

/// Number of workflows that are not finished.
pub async fn unfinished_workflows(client: &Client) -> Result<i64, CatalogError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.workflows WHERE status IN ('pending', 'running', 'compensating')",
            &[],
        )
        .await
        .map_err(CatalogError::db("counting workflows"))?;
    Ok(row.get(0))
}

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
    let tx = client
        .transaction()
        .await
        .map_err(CatalogError::db("starting a transaction"))?;
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
    tx.commit()
        .await
        .map_err(CatalogError::db("committing a legal hold"))?;
    tenant_from_row(&row)
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

/// Receivers a tenant is registered with, with the webhook id of the registration.
pub async fn registrations(
    client: &Client,
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

/// Receivers a tenant is registered with, inside a transaction.
pub async fn registrations_in(
    tx: &Transaction<'_>,
    id: TenantId,
) -> Result<Vec<(String, String)>, CatalogError> {
    let rows = tx
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
