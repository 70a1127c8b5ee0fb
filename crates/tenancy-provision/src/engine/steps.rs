//! The workflow steps: which steps each kind runs, and what each step does.

use serde::Deserialize;
use tenancy_catalog::{self as catalog, Workflow, WorkflowKind};
use tenancy_core::{Placement, PlanKey, TenantId, TenantState};
use time::OffsetDateTime;
use tokio_postgres::Transaction;

use super::{Outcome, Provisioner, StepCtx};
use crate::storage::{database_name_for, schema_name_for};
use crate::Error;

/// The reason a lifecycle step records with the state change.
#[derive(Debug)]
enum Reason {
    /// The workflow input's reason, or this one when the input gives none.
    FromInput(&'static str),
    /// Always this one: the input's reason is not used.
    Fixed(&'static str),
}

/// What a lifecycle step does to the tenant's state.
#[derive(Debug)]
pub(super) struct Transition {
    /// The step's name.
    name: &'static str,
    /// The verb in the message of a cancelled workflow ("cannot suspend a tenant that is …").
    verb: &'static str,
    /// States the change applies to.
    from: &'static [TenantState],
    /// The state it leads to; a tenant already there is left alone (a retried step).
    to: TenantState,
    /// The reason recorded with the change.
    reason: Reason,
    /// Whether the change starts the retention period (soft delete).
    starts_retention: bool,
    /// The lifecycle event queued for the receivers.
    event: &'static str,
}

const SUSPEND: Transition = Transition {
    name: "suspend",
    verb: "suspend",
    from: &[TenantState::Active],
    to: TenantState::Suspended,
    reason: Reason::FromInput("suspended"),
    starts_retention: false,
    event: "tenant.suspended",
};

const RESUME: Transition = Transition {
    name: "resume",
    verb: "resume",
    from: &[TenantState::Suspended],
    to: TenantState::Active,
    reason: Reason::Fixed("resumed"),
    starts_retention: false,
    event: "tenant.resumed",
};

const SOFT_DELETE: Transition = Transition {
    name: "soft_delete",
    verb: "delete",
    from: &[TenantState::Active, TenantState::Suspended],
    to: TenantState::Deleting,
    reason: Reason::FromInput("deleted"),
    starts_retention: true,
    event: "tenant.deleted",
};

/// A step of a workflow. Its name ([`Step::as_str`]) is what the catalog's step log,
/// the step metrics and fault injection call it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    /// Chooses the tenant's schema or database name from its placement.
    Placement,
    /// Creates the storage at the fleet's app version.
    Storage,
    /// Seeds the plan's settings.
    SeedConfig,
    /// Registers the tenant with the registration receivers.
    Register,
    /// Links the billing customer and subscription.
    BillingLink,
    /// Makes the tenant active.
    Activate,
    /// Drops the tenant's storage (`purge_rows`: a pooled tenant's rows too).
    DropStorage { purge_rows: bool },
    /// Deregisters the tenant from the receivers it was registered with.
    Deregister,
    /// Marks a failed provision's tenant deleted, freeing its slug.
    MarkFailed,
    /// Suspend, resume or soft delete.
    Lifecycle(&'static Transition),
    /// Changes the plan and seeds its settings.
    ChangePlan,
    /// Refuses a purge under legal hold, of a tenant not soft-deleted, or within retention.
    CheckHold,
    /// Deregisters and marks a purged tenant deleted.
    Purged,
    /// Refuses a move outside the tenant's residency, chooses the target, records the move.
    MoveResidency,
    /// Creates the move's target storage at the fleet's app version.
    MovePrepare,
    /// Installs the change capture on the source.
    MoveCapture,
    /// Copies a consistent snapshot of the tenant's rows to the target.
    MoveSnapshot,
    /// Applies captured changes to the target.
    MoveCatchUp,
    /// Holds writes, catches up, verifies, switches the catalog.
    MoveCutover,
    /// Undoes a move that failed for good.
    MoveRollBack,
}

impl Step {
    /// The step's name in the catalog's step log, metrics and fault injection.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Step::Placement => "placement",
            Step::Storage => "storage",
            Step::SeedConfig => "seed_config",
            Step::Register => "register",
            Step::BillingLink => "billing_link",
            Step::Activate => "activate",
            Step::DropStorage { .. } => "drop_storage",
            Step::Deregister => "deregister",
            Step::MarkFailed => "mark_failed",
            Step::Lifecycle(t) => t.name,
            Step::ChangePlan => "change_plan",
            Step::CheckHold => "check_hold",
            Step::Purged => "purged",
            Step::MoveResidency => "residency",
            Step::MovePrepare => "prepare",
            Step::MoveCapture => "capture",
            Step::MoveSnapshot => "snapshot",
            Step::MoveCatchUp => "catch_up",
            Step::MoveCutover => "cutover",
            Step::MoveRollBack => "roll_back",
        }
    }
}

const PROVISION: &[Step] = &[
    Step::Placement,
    Step::Storage,
    Step::SeedConfig,
    Step::Register,
    Step::BillingLink,
    Step::Activate,
];

/// Compensation steps of a provision that failed for good (a move has its own; other
/// workflows have nothing to undo: each of their steps is one catalog transaction).
const PROVISION_UNDO: &[Step] = &[
    Step::DropStorage { purge_rows: false },
    Step::Deregister,
    Step::MarkFailed,
];

const PURGE: &[Step] = &[
    Step::CheckHold,
    Step::DropStorage { purge_rows: true },
    Step::Purged,
];

const MOVE: &[Step] = &[
    Step::MoveResidency,
    Step::MovePrepare,
    Step::MoveCapture,
    Step::MoveSnapshot,
    Step::MoveCatchUp,
    Step::MoveCutover,
];

/// The steps a workflow of `kind` runs forward, or when compensating.
pub(super) fn steps_of(kind: WorkflowKind, compensating: bool) -> &'static [Step] {
    match (compensating, kind) {
        (true, WorkflowKind::Move) => &[Step::MoveRollBack],
        (true, _) => PROVISION_UNDO,
        (false, WorkflowKind::Move) => MOVE,
        (false, WorkflowKind::Provision) => PROVISION,
        (false, WorkflowKind::Suspend) => &[Step::Lifecycle(&SUSPEND)],
        (false, WorkflowKind::Resume) => &[Step::Lifecycle(&RESUME)],
        (false, WorkflowKind::ChangePlan) => &[Step::ChangePlan],
        (false, WorkflowKind::Delete) => &[Step::Lifecycle(&SOFT_DELETE)],
        (false, WorkflowKind::Purge) => PURGE,
    }
}

/// A workflow's input (`workflows.input`), as the API, the CLI and billing queue it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    /// Why (suspend, delete).
    reason: Option<String>,
    /// The new plan (change plan).
    plan: Option<String>,
    /// Billing customer to link (provision).
    billing_customer: Option<String>,
    /// Billing subscription to link (provision).
    billing_subscription: Option<String>,
}

impl Input {
    fn of(wf: &Workflow) -> Result<Input, Error> {
        if wf.input.is_null() {
            return Ok(Input::default());
        }
        serde_json::from_value(wf.input.clone()).map_err(|e| {
            Error::NotPossible(format!("workflow {} has an unreadable input: {e}", wf.id))
        })
    }
}

impl Provisioner {
    /// Runs one step in the workflow's catalog transaction `tx` (effects on tenant
    /// clusters and webhooks happen during it; every step is idempotent).
    pub(super) async fn exec(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        step: Step,
        ctx: &mut StepCtx,
    ) -> Result<Outcome, Error> {
        let tenant = catalog::lock_tenant(tx, wf.tenant_id).await?;
        let id = tenant.id;
        let actor = wf.actor.as_str();
        let input = Input::of(wf)?;
        let name = step.as_str();
        match step {
            Step::Placement => {
                let (schema, db) = match tenant.placement {
                    Placement::Pooled => (None, None),
                    Placement::Schema => (Some(schema_name_for(id)), None),
                    Placement::Dedicated => (None, Some(database_name_for(id))),
                };
                catalog::set_storage(tx, id, schema.as_deref(), db.as_deref()).await?;
            }
            Step::Storage => {
                // The fleet's version, read in this step's transaction: migrations that
                // `tenancy migrate` recorded after this process started are applied too.
                let app = self.fleet_app(tx).await?;
                self.create_storage(&tenant, &app).await?;
                // `tenancy migrate`'s ledger: a new tenant starts at the latest version.
                catalog::record_provisioned(tx, &tenant, &app.sources()).await?;
            }
            Step::SeedConfig => self.seed_plan(tx, id, &tenant.plan).await?,
            Step::Register => self.register(tx, wf, &tenant, ctx).await?,
            Step::BillingLink => {
                let (customer, sub) = (input.billing_customer, input.billing_subscription);
                if customer.is_some() || sub.is_some() {
                    catalog::set_billing(tx, id, customer.as_deref(), sub.as_deref()).await?;
                }
            }
            Step::Activate => {
                let t = catalog::set_state_in(tx, id, TenantState::Active, actor, "provisioned")
                    .await?;
                self.emit(tx, wf, name, &t, "tenant.activated").await?;
            }
            Step::DropStorage { purge_rows } => self.drop_storage(&tenant, purge_rows).await?,
            Step::Deregister => self.deregister(tx, wf, &tenant).await?,
            Step::MarkFailed => {
                let why = wf
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "provisioning failed".into());
                catalog::set_failure(tx, id, &why).await?;
                if tenant.state != TenantState::Deleted {
                    if tenant.state != TenantState::Deleting {
                        catalog::set_state_in(tx, id, TenantState::Deleting, actor, &why).await?;
                    }
                    catalog::set_state_in(tx, id, TenantState::Deleted, actor, &why).await?;
                }
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, name, &t, "tenant.provisioning_failed")
                    .await?;
            }
            Step::Lifecycle(change) => {
                if tenant.state != change.to {
                    if !change.from.contains(&tenant.state) {
                        return Ok(Outcome::Cancel(format!(
                            "cannot {} a tenant that is {}",
                            change.verb, tenant.state
                        )));
                    }
                    let reason = match change.reason {
                        Reason::FromInput(default) => input.reason.as_deref().unwrap_or(default),
                        Reason::Fixed(reason) => reason,
                    };
                    catalog::set_state_in(tx, id, change.to, actor, reason).await?;
                    if change.starts_retention {
                        let purge_at = OffsetDateTime::now_utc() + self.inner.cfg.retention;
                        catalog::set_purge_after(tx, id, Some(purge_at)).await?;
                    }
                }
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, name, &t, change.event).await?;
            }
            Step::ChangePlan => {
                if matches!(tenant.state, TenantState::Deleting | TenantState::Deleted) {
                    return Ok(Outcome::Cancel(format!(
                        "cannot change the plan of a tenant that is {}",
                        tenant.state
                    )));
                }
                let plan: PlanKey = input
                    .plan
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: tenancy_core::IdError| Error::NotPossible(e.to_string()))?;
                catalog::set_plan_in(tx, id, &plan, actor).await?;
                self.seed_plan(tx, id, &plan).await?;
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, name, &t, "tenant.plan_changed").await?;
            }
            Step::CheckHold => {
                if tenant.legal_hold {
                    return Ok(Outcome::Cancel("a legal hold blocks the purge".into()));
                }
                if tenant.state != TenantState::Deleting {
                    return Ok(Outcome::Cancel(format!(
                        "only a soft-deleted tenant can be purged; this one is {}",
                        tenant.state
                    )));
                }
                if tenant
                    .purge_after
                    .is_some_and(|at| at > OffsetDateTime::now_utc())
                {
                    return Ok(Outcome::Cancel("the retention period is not over".into()));
                }
            }
            Step::MoveResidency => return self.move_plan(tx, wf, &tenant).await,
            Step::MovePrepare => {
                let mv = self.the_move(tx, wf).await?;
                self.move_prepare(tx, &mv, &tenant).await?;
            }
            Step::MoveCapture => self.move_capture(&self.the_move(tx, wf).await?).await?,
            Step::MoveSnapshot => {
                let mv = self.the_move(tx, wf).await?;
                self.move_snapshot(tx, &mv).await?;
            }
            Step::MoveCatchUp => self.move_catch_up(&self.the_move(tx, wf).await?).await?,
            Step::MoveCutover => self.move_cutover(tx, wf, &tenant).await?,
            Step::MoveRollBack => self.move_roll_back(tx, wf).await?,
            Step::Purged => {
                self.deregister(tx, wf, &tenant).await?;
                let t =
                    catalog::set_state_in(tx, id, TenantState::Deleted, actor, "purged").await?;
                self.emit(tx, wf, name, &t, "tenant.purged").await?;
            }
        }
        Ok(Outcome::Next)
    }

    /// Seeds the settings of `plan` for tenant `id`.
    async fn seed_plan(
        &self,
        tx: &Transaction<'_>,
        id: TenantId,
        plan: &PlanKey,
    ) -> Result<(), Error> {
        let settings = self
            .inner
            .cfg
            .plans
            .get(plan.as_str())
            .cloned()
            .unwrap_or_default();
        catalog::seed_plan_settings(tx, id, &settings).await?;
        Ok(())
    }
}
