//! The audit logs from the control plane's side: its own log of the changes it makes
//! (one helper, [`record`], called in the catalog transaction of each change), the
//! sealer task of `tenancy serve` ([`sealer`]: seals and checkpoints every log, publishes
//! checkpoints, purges logs past their retention), its configuration ([`AuditConfig`])
//! and the signing key kept with the other control-plane secrets.
//!
//! Where events go: an application's events are in its tenant database
//! (`tenancy.audit_events`, written by the application through `tenancy_audit::record`);
//! the control plane's changes are all catalog changes, so they go to the control log in
//! the catalog (`tenancy_catalog.audit_log`), in the chain of the tenant they concern (or
//! the platform chain), in the same catalog transaction as the change.

pub mod sealer;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use axum::http::request::Parts;
use serde::Deserialize;
use tenancy_audit::{Actor, ActorKind, Event, Outcome};
use tenancy_catalog::{Tenant, Workflow, WorkflowKind};
use tenancy_core::{RegionId, TenantId};
use tenancy_provision::{ProvisionRequest, Provisioner};
use tokio_postgres::{Client, Transaction};

use crate::error::ApiError;

/// The `[audit]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Seconds between two passes of the sealer (seal, checkpoint, publish, purge);
    /// 0 turns the task off.
    pub seal_interval_secs: u64,
    /// The Ed25519 checkpoint signing key (hex seed), created (mode 0600) at the first
    /// start when missing. Default: `audit-signing-key` in the data directory; without
    /// one (a temporary embedded default, or a database URL without this setting), a key
    /// generated for this process only, whose public half is logged.
    pub signing_key_file: Option<PathBuf>,
    /// Also append every new checkpoint to this JSON-lines file.
    pub publish_file: Option<PathBuf>,
    /// Publish every new checkpoint as an `audit.checkpoint` Standard Webhooks event to the
    /// event receivers (`event_receivers`).
    pub webhook: bool,
    /// Days a tenant's audit events are kept, per plan; events older than that are
    /// purged behind a signed anchor unless the tenant is on legal hold.
    pub retention_days: BTreeMap<String, u64>,
    /// Days for a plan `retention_days` does not name (0: keep forever).
    pub default_retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            seal_interval_secs: 10,
            signing_key_file: None,
            publish_file: None,
            webhook: true,
            retention_days: BTreeMap::new(),
            default_retention_days: 365,
        }
    }
}

impl AuditConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (plan, days) in &self.retention_days {
            plan.parse::<tenancy_core::PlanKey>()
                .map_err(|e| format!("audit.retention_days: {plan:?}: {e}"))?;
            if *days == 0 || *days > 36_500 {
                return Err(format!(
                    "audit.retention_days.{plan}: must be 1 to 36500 days"
                ));
            }
        }
        if self.default_retention_days > 36_500 {
            return Err("audit.default_retention_days must be at most 36500 (0: forever)".into());
        }
        if self.seal_interval_secs > 86_400 {
            return Err("audit.seal_interval_secs must be at most 86400".into());
        }
        Ok(())
    }

    /// The retention of a plan's tenants in days (`None`: kept forever).
    pub fn retention(&self, plan: &str) -> Option<u64> {
        let days = self
            .retention_days
            .get(plan)
            .copied()
            .unwrap_or(self.default_retention_days);
        (days > 0).then_some(days)
    }
}

/// The checkpoint signing key: `audit.signing_key_file`, else `audit-signing-key` in the
/// data directory (made there, mode 0600, at the first start), else a key for this
/// process only. The key itself is never printed; its public half is logged.
pub fn signing_key(config: &crate::ControlConfig) -> anyhow::Result<tenancy_audit::Signer> {
    use anyhow::Context;
    let path = config
        .audit
        .signing_key_file
        .clone()
        .or_else(|| config.data_dir.as_ref().map(|d| d.join(SIGNING_KEY_FILE)));
    let signer = match &path {
        Some(p) => tenancy_audit::Signer::load_or_generate(p)
            .with_context(|| format!("loading the audit signing key {}", p.display()))?,
        None => {
            if config.database_url.is_some() {
                tracing::warn!(
                    "no audit.signing_key_file: audit checkpoints are signed with a key of this \
                     process only; set it to keep one key across restarts"
                );
            }
            tenancy_audit::Signer::generate()
        }
    };
    tracing::info!(public_key = %signer.public_key_hex(), file = path.as_ref().map(|p| p.display().to_string()), "audit checkpoint signing key");
    Ok(signer)
}

/// File of the data directory holding the audit signing key (hex seed), mode 0600.
pub const SIGNING_KEY_FILE: &str = "audit-signing-key";

/// Where a request came from: what the control plane's audit events record as "where".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The request id (`X-Request-Id`, given or made).
    pub request_id: Option<String>,
    /// The W3C trace id (hex).
    pub trace_id: Option<String>,
    /// The client address as the guard sees it (the peer, or the trusted proxy's header;
    /// an IPv6 address cut to its /64).
    pub client: Option<IpAddr>,
}

impl Origin {
    /// The origin of a request, from what the telemetry middleware and the guard put in
    /// its extensions.
    pub fn of(parts: &Parts) -> Origin {
        Origin {
            request_id: parts
                .extensions
                .get::<crate::telemetry::RequestId>()
                .map(|r| r.as_str().to_owned()),
            trace_id: parts
                .extensions
                .get::<crate::telemetry::TraceContext>()
                .map(|t| hex::encode(t.trace_id)),
            client: parts
                .extensions
                .get::<crate::guard::ClientIp>()
                .and_then(|c| c.0),
        }
    }
}

/// Who makes a change and from where.
#[derive(Debug, Clone)]
pub struct Who {
    /// The actor (admin principal, worker, system).
    pub actor: Actor,
    /// Where the request came from (empty for workers and the command line).
    pub origin: Origin,
}

impl Who {
    /// An actor named the way workflows and the configuration log name them
    /// (`admin:<principal>`, `worker:<name>`, `signup:<address>`, …).
    pub fn named(actor: &str, origin: Origin) -> Who {
        let kind = match actor.split(':').next() {
            Some("admin") => ActorKind::Admin,
            Some("worker") => ActorKind::Worker,
            Some("api_key") => ActorKind::ApiKey,
            Some("user") => ActorKind::User,
            _ => ActorKind::System,
        };
        // The log keeps at most 1024 bytes of a subject (a Stripe event id comes from
        // outside); the workflow keeps the whole name.
        let mut end = actor.len().min(1024);
        while !actor.is_char_boundary(end) {
            end -= 1;
        }
        Who {
            actor: Actor::new(kind, &actor[..end]),
            origin,
        }
    }

    /// An admin making a request.
    pub fn admin(admin: &crate::auth::Admin) -> Who {
        Who::named(&format!("admin:{}", admin.principal), admin.origin.clone())
    }

    /// The actor string of workflows (as given to [`Who::named`], at most 1024 bytes).
    pub fn actor_name(&self) -> &str {
        self.actor.subject.as_deref().unwrap_or("system")
    }
}

/// Records a control-plane change in the control log, in `tx` (the catalog transaction of
/// the change): `action` on `target` of `tenant` (`None`: platform-wide) by `who`, with
/// digests of the state before and after. The one call every control-plane change makes.
pub async fn record(
    tx: &Transaction<'_>,
    tenant: Option<TenantId>,
    who: &Who,
    action: &str,
    target: String,
    before: Option<&serde_json::Value>,
    after: Option<&serde_json::Value>,
) -> Result<(), tenancy_audit::Error> {
    let mut e = Event::new(who.actor.clone(), action).target(target);
    e.before = before.map(tenancy_audit::digest);
    e.after = after.map(tenancy_audit::digest);
    e.request_id = who.origin.request_id.clone();
    e.trace_id = who.origin.trace_id.clone();
    e.client_addr = who.origin.client;
    e.outcome = Outcome::Success;
    tenancy_audit::record_control(tx, tenant.map(|t| t.as_uuid()), &e).await
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    serde_json::json!({
        "id": t.id.to_string(),
        "slug": t.slug.as_str(),
        "plan": t.plan.as_str(),
        "state": t.state.to_string(),
        "legal_hold": t.legal_hold,
        "residency": t.residency.as_ref().map(|rs| rs.iter().map(|r| r.as_str()).collect::<Vec<_>>()),
    })
}

fn audit_error(e: tenancy_audit::Error) -> ApiError {
    ApiError::internal("recording a control-plane audit event", &e)
}

fn db_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ApiError {
    move |e| ApiError::unavailable(what, &e)
}

/// Queues a lifecycle workflow of `tenant` and records it (`tenant.<kind>`), in one
/// catalog transaction; wakes the workers after the commit.
pub async fn enqueue(
    provisioner: &Provisioner,
    client: &mut Client,
    tenant: TenantId,
    kind: WorkflowKind,
    input: &serde_json::Value,
    who: &Who,
) -> Result<Workflow, ApiError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("starting a catalog transaction"))?;
    let wf = tenancy_catalog::enqueue_workflow(&tx, tenant, kind, input, who.actor_name()).await?;
    record(
        &tx,
        Some(tenant),
        who,
        &format!("tenant.{}", kind.as_str()),
        format!("tenant:{tenant}"),
        None,
        Some(input),
    )
    .await
    .map_err(audit_error)?;
    tx.commit()
        .await
        .map_err(db_error("committing a workflow"))?;
    provisioner.wake();
    Ok(wf)
}

/// Creates a tenant with its provision workflow and records it (`tenant.create`), in one
/// catalog transaction; wakes the workers after the commit.
pub async fn provision(
    provisioner: &Provisioner,
    client: &mut Client,
    req: &ProvisionRequest,
    who: &Who,
) -> Result<(Tenant, Workflow), ApiError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("starting a catalog transaction"))?;
    let (t, wf) = provisioner.provision_in(&tx, req, who.actor_name()).await?;
    record(
        &tx,
        Some(t.id),
        who,
        "tenant.create",
        format!("tenant:{}", t.id),
        None,
        Some(&tenant_json(&t)),
    )
    .await
    .map_err(audit_error)?;
    tx.commit()
        .await
        .map_err(db_error("committing a new tenant"))?;
    provisioner.wake();
    Ok((t, wf))
}

/// Sets or lifts a tenant's legal hold and records it (`tenant.legal_hold.set` /
/// `.clear`), in one catalog transaction. While it is set, neither the tenant nor its
/// audit log is purged.
pub async fn set_legal_hold(
    client: &mut Client,
    tenant: TenantId,
    hold: bool,
    who: &Who,
) -> Result<Tenant, ApiError> {
    change_tenant(client, tenant, TenantChange::LegalHold(hold), who).await
}

/// A change of one of a tenant's own settings.
#[derive(Debug, Clone, Copy)]
pub enum TenantChange<'a> {
    /// Set (`true`) or lift the legal hold.
    LegalHold(bool),
    /// Set (`Some`) or clear the residency policy.
    Residency(Option<&'a [RegionId]>),
}

/// Makes `change` and records it (`tenant.legal_hold.set|clear`,
/// `tenant.residency.set|clear`, with the tenant before and after), in one catalog
/// transaction.
pub async fn change_tenant(
    client: &mut Client,
    tenant: TenantId,
    change: TenantChange<'_>,
    who: &Who,
) -> Result<Tenant, ApiError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("starting a catalog transaction"))?;
    let before = tenancy_catalog::get_tenant(tx.client(), tenant).await?;
    let (t, action) = match change {
        TenantChange::LegalHold(hold) => (
            tenancy_catalog::set_legal_hold_in(&tx, tenant, hold, who.actor_name()).await?,
            if hold {
                "tenant.legal_hold.set"
            } else {
                "tenant.legal_hold.clear"
            },
        ),
        TenantChange::Residency(regions) => {
            tenancy_catalog::set_residency(&tx, tenant, regions).await?;
            (
                tenancy_catalog::get_tenant(tx.client(), tenant).await?,
                if regions.is_some() {
                    "tenant.residency.set"
                } else {
                    "tenant.residency.clear"
                },
            )
        }
    };
    record(
        &tx,
        Some(tenant),
        who,
        action,
        format!("tenant:{tenant}"),
        Some(&tenant_json(&before)),
        Some(&tenant_json(&t)),
    )
    .await
    .map_err(audit_error)?;
    tx.commit()
        .await
        .map_err(db_error("committing a tenant change"))?;
    Ok(t)
}
