//! The workflow engine: queueing, claiming, steps, retries, compensation, workers, the
//! outbox loop and the purge scheduler.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tenancy_catalog::{
    self as catalog, CatalogError, ClusterRecord, Delivery, NewTenant, OutboxMessage, Tenant,
    Workflow, WorkflowKind, WorkflowStatus,
};
use tenancy_core::{ContextKey, Placement, PlanKey, TenantId, TenantState};
use tenancy_sdk::{PoolOptions, TenantPool};
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::conn::{config_for, connect, Manager, Pool, Pools};
use crate::storage::{self, database_name_for, schema_name_for};
use crate::webhook;
use crate::{AppMigrations, ClusterAccess, Error, ProvisionConfig, Receiver};
use tenancy_conn::PgConfig;

/// Forward steps of each workflow kind.
fn forward_steps(kind: WorkflowKind) -> &'static [&'static str] {
    match kind {
        WorkflowKind::Provision => &[
            "placement",
            "storage",
            "seed_config",
            "register",
            "billing_link",
            "activate",
        ],
        WorkflowKind::Suspend => &["suspend"],
        WorkflowKind::Resume => &["resume"],
        WorkflowKind::ChangePlan => &["change_plan"],
        WorkflowKind::Delete => &["soft_delete"],
        WorkflowKind::Purge => &["check_hold", "drop_storage", "purged"],
    }
}

/// Compensation steps of a provision that failed for good (other workflows have nothing
/// to undo: each of their steps is one catalog transaction).
const PROVISION_UNDO: &[&str] = &["drop_storage", "deregister", "mark_failed"];

fn steps_of(kind: WorkflowKind, compensating: bool) -> &'static [&'static str] {
    if compensating {
        PROVISION_UNDO
    } else {
        forward_steps(kind)
    }
}

/// When a fault fires relative to the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPhase {
    /// Before the step does anything.
    BeforeStep,
    /// After the step's effects on the tenant cluster (and webhooks), before its catalog
    /// transaction commits: the hardest place to crash.
    AfterEffects,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker dies: its catalog transaction is abandoned, its connection closed and
    /// the worker task ends (restart workers to continue).
    Crash,
    /// The step fails and is retried like any failure.
    Fail,
}

/// Armed faults by (step, phase), with how many times each still fires.
type FaultTable = HashMap<(String, FaultPhase), (Fault, u32)>;

/// Fault injection for tests: `(step, phase) → (fault, remaining count)`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultTable>>,
}

impl Faults {
    /// Makes step `step` hit `fault` at `phase` the next `times` times it runs.
    pub fn inject(&self, step: &str, phase: FaultPhase, fault: Fault, times: u32) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert((step.to_owned(), phase), (fault, times));
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.clear();
        }
    }

    fn take(&self, step: &str, phase: FaultPhase) -> Option<Fault> {
        let mut m = self.inner.lock().ok()?;
        let key = (step.to_owned(), phase);
        let (fault, left) = m.get_mut(&key)?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            m.remove(&key);
        }
        Some(fault)
    }
}

/// A workflow reached a final status.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Workflow id.
    pub workflow: Uuid,
    /// Tenant.
    pub tenant: TenantId,
    /// Kind.
    pub kind: WorkflowKind,
    /// Final status.
    pub status: WorkflowStatus,
}

/// A new tenant to provision.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// Slug, name, plan, region and placement.
    pub tenant: NewTenant,
    /// Billing customer to link (Stripe `cus_…`).
    pub billing_customer: Option<String>,
    /// Billing subscription to link (Stripe `sub_…`).
    pub billing_subscription: Option<String>,
}

enum Outcome {
    Next,
    Cancel(String),
}

/// What a step did that must be recorded whether it succeeds or not.
#[derive(Default)]
struct StepCtx {
    deliveries: Vec<Delivery>,
    registered: Vec<(String, String)>,
}

#[derive(Debug)]
struct Inner {
    /// The catalog database, as the owner role (workers, outbox, scheduler).
    catalog: PgConfig,
    /// Catalog connections for lookups outside a workflow transaction.
    catalog_pool: Pool,
    /// Logins on tenant clusters.
    access: ClusterAccess,
    /// Context key installed into dedicated databases (the SDK signs with it).
    key: ContextKey,
    /// Migrations, plans, receivers, retry settings.
    cfg: ProvisionConfig,
    /// Decoded signing keys of registration receivers.
    reg_keys: Vec<(Receiver, Vec<u8>)>,
    /// Decoded signing keys of lifecycle-event receivers.
    event_keys: Vec<(Receiver, Vec<u8>)>,
    /// Connections to tenant clusters.
    pools: Pools,
    /// Cluster records (they change rarely; connection info only).
    clusters: RwLock<HashMap<Uuid, ClusterRecord>>,
    /// The app's migrations at the fleet's version as last read from the catalog: the
    /// ones loaded at start (`cfg.app_migrations`) followed by newer ones `tenancy migrate`
    /// recorded since. Re-read (only what is newer) at each provision, so a new tenant
    /// never starts behind the fleet.
    app: RwLock<Arc<AppMigrations>>,
    /// Per cluster: the app version its shared database is known to be at.
    shared_ready: Mutex<HashMap<Uuid, i32>>,
    /// Per cluster: the template database dedicated tenants are cloned from (known to
    /// exist and be complete) and the `STRATEGY` clause its server takes.
    templates: Mutex<HashMap<Uuid, (String, Option<&'static str>)>>,
    /// Runtime-role pools per cluster, to purge pooled tenants through their context.
    runtime_pools: Mutex<HashMap<Uuid, TenantPool>>,
    /// Fault injection (tests).
    faults: Faults,
    /// Wakes idle workers when a workflow is queued.
    wake: Notify,
    /// Wakes the outbox loop.
    outbox_wake: Notify,
    /// Wakes the warm-pool refill loop (after a claim).
    refill_wake: Notify,
    /// Spares claimed by this process: schemas, databases.
    claims: [AtomicU64; 2],
    /// Final statuses, for waiters (API, CLI, benchmark).
    finished: broadcast::Sender<Finished>,
}

/// The provisioning engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Provisioner {
    inner: Arc<Inner>,
}

fn is_retryable(e: &Error) -> bool {
    !matches!(
        e,
        Error::NotPossible(_)
            | Error::Config(_)
            | Error::Catalog(CatalogError::InvalidTransition { .. })
            | Error::Catalog(CatalogError::Invalid(_))
    )
}

fn tenant_json(t: &Tenant) -> serde_json::Value {
    json!({
        "id": t.id.to_string(),
        "slug": t.slug.as_str(),
        "display_name": t.display_name,
        "plan": t.plan.as_str(),
        "region": t.region.as_str(),
        "placement": t.placement.as_str(),
        "state": t.state.as_str(),
    })
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Provisioner {
    /// Builds the engine. `catalog` connects to the catalog database as the owner role.
    pub fn new(
        catalog: impl Into<PgConfig>,
        access: ClusterAccess,
        key: ContextKey,
        cfg: ProvisionConfig,
    ) -> Result<Self, Error> {
        let decode = |rs: &[Receiver]| -> Result<Vec<(Receiver, Vec<u8>)>, Error> {
            rs.iter()
                .map(|r| Ok((r.clone(), webhook::decode_secret(&r.secret)?)))
                .collect()
        };
        let reg_keys = decode(&cfg.registration_receivers)?;
        let event_keys = decode(&cfg.event_receivers)?;
        let catalog: PgConfig = catalog.into();
        let catalog_pool = Pool::builder(Manager::new(catalog.clone()))
            .max_size(4)
            .runtime(deadpool::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let (finished, _) = broadcast::channel(4096);
        let app = Arc::new(cfg.app_migrations.clone());
        Ok(Provisioner {
            inner: Arc::new(Inner {
                catalog,
                catalog_pool,
                access,
                key,
                cfg,
                reg_keys,
                event_keys,
                pools: Pools::default(),
                clusters: RwLock::new(HashMap::new()),
                app: RwLock::new(app),
                shared_ready: Mutex::new(HashMap::new()),
                templates: Mutex::new(HashMap::new()),
                runtime_pools: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                wake: Notify::new(),
                outbox_wake: Notify::new(),
                refill_wake: Notify::new(),
                claims: [AtomicU64::new(0), AtomicU64::new(0)],
                finished,
            }),
        })
    }

    /// Spares of the warm pool claimed by this process so far: (schemas, databases).
    pub fn warm_pool_claims(&self) -> (u64, u64) {
        (
            self.inner.claims[0].load(Ordering::Relaxed),
            self.inner.claims[1].load(Ordering::Relaxed),
        )
    }

    /// Fault injection handle (tests).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The engine's settings.
    pub fn config(&self) -> &ProvisionConfig {
        &self.inner.cfg
    }

    /// Final statuses of workflows finished by this process's workers.
    pub fn subscribe(&self) -> broadcast::Receiver<Finished> {
        self.inner.finished.subscribe()
    }

    /// Wakes idle workers (after queueing a workflow in a transaction of one's own).
    pub fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Opens a catalog connection as the owner role.
    pub async fn catalog_client(&self) -> Result<Client, Error> {
        connect(&self.inner.catalog).await
    }

    /// Creates the tenant (pinned to its region, placed on a cluster there) and queues its
    /// provision workflow, atomically.
    pub async fn provision(
        &self,
        client: &mut Client,
        req: &ProvisionRequest,
        actor: &str,
    ) -> Result<(Tenant, Workflow), Error> {
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting a catalog transaction"))?;
        let out = self.provision_in(&tx, req, actor).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing a new tenant"))?;
        self.wake();
        Ok(out)
    }

    /// [`Provisioner::provision`] inside the caller's catalog transaction, so that a
    /// check the caller makes (a signup quota under its lock) commits with the tenant row
    /// and its workflow or not at all. Call [`Provisioner::wake`] after the commit.
    pub async fn provision_in(
        &self,
        tx: &Transaction<'_>,
        req: &ProvisionRequest,
        actor: &str,
    ) -> Result<(Tenant, Workflow), Error> {
        Ok(catalog::start_provisioning(tx, &req.tenant, &provision_input(req), actor).await?)
    }

    /// Queues a lifecycle workflow (suspend, resume, change plan, delete, purge).
    pub async fn enqueue(
        &self,
        client: &mut Client,
        tenant: TenantId,
        kind: WorkflowKind,
        input: &serde_json::Value,
        actor: &str,
    ) -> Result<Workflow, Error> {
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting a catalog transaction"))?;
        let wf = catalog::enqueue_workflow(&tx, tenant, kind, input, actor).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing a workflow"))?;
        self.wake();
        Ok(wf)
    }

    /// Runs workflow `id` in this task until it is final (or gives up after `timeout`),
    /// sleeping through backoffs. Used by the CLI's `--wait` and by tests.
    pub async fn drive(
        &self,
        client: &mut Client,
        id: Uuid,
        timeout: Duration,
    ) -> Result<Workflow, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.step_once(client, Some(id)).await?.is_none() {
                let wf = catalog::get_workflow(client, id)
                    .await?
                    .ok_or_else(|| Error::NotPossible(format!("workflow {id} does not exist")))?;
                if wf.status.is_final() || Instant::now() >= deadline {
                    return Ok(wf);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Claims one due workflow (or `only` that one) and runs its next step. Returns the
    /// workflow id, or `None` when nothing was due.
    pub async fn step_once(
        &self,
        client: &mut Client,
        only: Option<Uuid>,
    ) -> Result<Option<Uuid>, Error> {
        let (wf, step, compensating, err, ctx) = {
            let tx = client
                .transaction()
                .await
                .map_err(Error::db("starting a catalog transaction"))?;
            let Some(wf) = catalog::claim_workflow(&tx, only).await? else {
                return Ok(None);
            };
            let compensating = wf.status == WorkflowStatus::Compensating;
            let steps = steps_of(wf.kind, compensating);
            let Some(&step) = steps.get(wf.step as usize) else {
                let status = if compensating {
                    WorkflowStatus::Failed
                } else {
                    WorkflowStatus::Succeeded
                };
                catalog::advance_workflow(&tx, wf.id, status, wf.step, None).await?;
                tx.commit()
                    .await
                    .map_err(Error::db("finishing a workflow"))?;
                return Ok(Some(wf.id));
            };
            let span = tracing::info_span!("workflow_step", tenant_id = %wf.tenant_id, workflow = %wf.id, kind = %wf.kind, step);
            if self.inner.faults.take(step, FaultPhase::BeforeStep) == Some(Fault::Crash) {
                return Err(Error::InjectedCrash(step.to_owned()));
            }
            let started = Instant::now();
            let mut ctx = StepCtx::default();
            let result =
                if self.inner.faults.take(step, FaultPhase::BeforeStep) == Some(Fault::Fail) {
                    Err(Error::InjectedFailure(step.to_owned()))
                } else {
                    self.exec(&tx, &wf, step, compensating, &mut ctx)
                        .instrument(span.clone())
                        .await
                };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if result.is_ok() {
                match self.inner.faults.take(step, FaultPhase::AfterEffects) {
                    Some(Fault::Crash) => return Err(Error::InjectedCrash(step.to_owned())),
                    Some(Fault::Fail) => {
                        drop(tx);
                        let e = Error::InjectedFailure(step.to_owned());
                        return self
                            .record_failure(client, &wf, step, compensating, e, ctx, ms)
                            .await;
                    }
                    None => {}
                }
            }
            match result {
                Ok(outcome) => {
                    for d in &ctx.deliveries {
                        catalog::record_delivery(&tx, d).await?;
                    }
                    catalog::record_step(
                        &tx,
                        wf.id,
                        step,
                        compensating,
                        wf.attempts + 1,
                        "ok",
                        None,
                        ms,
                    )
                    .await?;
                    let next = wf.step + 1;
                    let (status, idx, note) = match outcome {
                        Outcome::Next if next as usize >= steps.len() => (
                            if compensating {
                                WorkflowStatus::Failed
                            } else {
                                WorkflowStatus::Succeeded
                            },
                            next,
                            None,
                        ),
                        Outcome::Next => (
                            if compensating {
                                WorkflowStatus::Compensating
                            } else {
                                WorkflowStatus::Running
                            },
                            next,
                            None,
                        ),
                        Outcome::Cancel(msg) => (WorkflowStatus::Cancelled, wf.step, Some(msg)),
                    };
                    catalog::advance_workflow(&tx, wf.id, status, idx, note.as_deref()).await?;
                    tx.commit()
                        .await
                        .map_err(Error::db("committing a workflow step"))?;
                    span.in_scope(|| tracing::debug!(ms, %status, "step done"));
                    step_metrics(wf.kind, "ok", ms);
                    if status.is_final() {
                        self.announce(&wf, status);
                    }
                    if !ctx.deliveries.is_empty() || status.is_final() {
                        self.inner.outbox_wake.notify_waiters();
                    }
                    return Ok(Some(wf.id));
                }
                Err(e) => {
                    drop(tx);
                    (wf, step, compensating, (e, ms), ctx)
                }
            }
        };
        let (e, ms) = err;
        self.record_failure(client, &wf, step, compensating, e, ctx, ms)
            .await
    }

    fn announce(&self, wf: &Workflow, status: WorkflowStatus) {
        metrics::counter!(
            "tenancy_workflows_finished_total",
            "kind" => wf.kind.to_string(),
            "status" => status.to_string()
        )
        .increment(1);
        let _ = self.inner.finished.send(Finished {
            workflow: wf.id,
            tenant: wf.tenant_id,
            kind: wf.kind,
            status,
        });
    }

    /// Records a failed step attempt in a fresh transaction: retry with backoff, start
    /// compensating (provision), or give up (lifecycle workflows, whose single-transaction
    /// steps leave nothing half-done).
    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        client: &mut Client,
        wf: &Workflow,
        step: &str,
        compensating: bool,
        e: Error,
        ctx: StepCtx,
        ms: f64,
    ) -> Result<Option<Uuid>, Error> {
        // The whole cause, with PostgreSQL's message, SQLSTATE, detail and hint: what an
        // operator reads in the workflow's `last_error` and the step log.
        let msg = tenancy_conn::error_text(&e);
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting a catalog transaction"))?;
        let Some(current) = catalog::claim_workflow(&tx, Some(wf.id)).await? else {
            return Ok(None);
        };
        for d in &ctx.deliveries {
            catalog::record_delivery(&tx, d).await?;
        }
        // Registrations that succeeded before another failed are kept, so compensation
        // deregisters them and a retry does not register them twice.
        for (receiver, webhook_id) in &ctx.registered {
            catalog::record_registration(&tx, wf.tenant_id, receiver, webhook_id).await?;
        }
        let attempt = current.attempts + 1;
        let mut final_status = None;
        if compensating || (is_retryable(&e) && attempt < self.inner.cfg.max_attempts) {
            catalog::record_step(
                &tx,
                wf.id,
                step,
                compensating,
                attempt,
                "retry",
                Some(&msg),
                ms,
            )
            .await?;
            catalog::retry_workflow(&tx, wf.id, &msg, self.inner.cfg.backoff(current.attempts))
                .await?;
            tracing::warn!(tenant_id = %wf.tenant_id, workflow = %wf.id, step, attempt, error = %msg, "workflow step failed; will retry");
        } else if wf.kind == WorkflowKind::Provision {
            catalog::record_step(&tx, wf.id, step, false, attempt, "failed", Some(&msg), ms)
                .await?;
            catalog::advance_workflow(&tx, wf.id, WorkflowStatus::Compensating, 0, Some(&msg))
                .await?;
            tracing::error!(tenant_id = %wf.tenant_id, workflow = %wf.id, step, error = %msg, "provisioning failed; compensating");
        } else {
            catalog::record_step(&tx, wf.id, step, false, attempt, "failed", Some(&msg), ms)
                .await?;
            catalog::advance_workflow(&tx, wf.id, WorkflowStatus::Failed, wf.step, Some(&msg))
                .await?;
            final_status = Some(WorkflowStatus::Failed);
            tracing::error!(tenant_id = %wf.tenant_id, workflow = %wf.id, step, error = %msg, "workflow failed");
        }
        tx.commit()
            .await
            .map_err(Error::db("recording a failed step"))?;
        step_metrics(
            wf.kind,
            if final_status.is_some()
                || (wf.kind == WorkflowKind::Provision
                    && !compensating
                    && attempt >= self.inner.cfg.max_attempts)
            {
                "failed"
            } else {
                "retry"
            },
            ms,
        );
        if let Some(status) = final_status {
            self.announce(wf, status);
        }
        Ok(Some(wf.id))
    }

    async fn cluster(&self, id: Uuid) -> Result<ClusterRecord, Error> {
        if let Ok(m) = self.inner.clusters.read() {
            if let Some(c) = m.get(&id) {
                return Ok(c.clone());
            }
        }
        let conn = self.catalog_conn().await?;
        let c = catalog::get_cluster(&conn, id).await?;
        if let Ok(mut m) = self.inner.clusters.write() {
            m.insert(id, c.clone());
        }
        Ok(c)
    }

    async fn exec(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        step: &str,
        compensating: bool,
        ctx: &mut StepCtx,
    ) -> Result<Outcome, Error> {
        let tenant = catalog::lock_tenant(tx, wf.tenant_id).await?;
        let id = tenant.id;
        let actor = wf.actor.as_str();
        match (wf.kind, compensating, step) {
            (_, false, "placement") => {
                let (schema, db) = match tenant.placement {
                    Placement::Pooled => (None, None),
                    Placement::Schema => (Some(schema_name_for(id)), None),
                    Placement::Dedicated => (None, Some(database_name_for(id))),
                };
                catalog::set_storage(tx, id, schema.as_deref(), db.as_deref()).await?;
            }
            (_, false, "storage") => {
                // The fleet's version, read in this step's transaction: migrations that
                // `tenancy migrate` recorded after this process started are applied too.
                let app = self.fleet_app(tx).await?;
                self.create_storage(&tenant, &app).await?;
                // `tenancy migrate`'s ledger: a new tenant starts at the latest version.
                catalog::record_provisioned(tx, &tenant, &app.sources()).await?;
            }
            (_, false, "seed_config") => {
                let settings = self
                    .inner
                    .cfg
                    .plans
                    .get(tenant.plan.as_str())
                    .cloned()
                    .unwrap_or_default();
                catalog::seed_plan_settings(tx, id, &settings).await?;
            }
            (_, false, "register") => self.register(tx, wf, &tenant, ctx).await?,
            (_, false, "billing_link") => {
                let customer = wf.input.get("billing_customer").and_then(|v| v.as_str());
                let sub = wf
                    .input
                    .get("billing_subscription")
                    .and_then(|v| v.as_str());
                if customer.is_some() || sub.is_some() {
                    catalog::set_billing(tx, id, customer, sub).await?;
                }
            }
            (_, false, "activate") => {
                let t = catalog::set_state_in(tx, id, TenantState::Active, actor, "provisioned")
                    .await?;
                self.emit(tx, wf, step, &t, "tenant.activated").await?;
            }
            (_, true, "drop_storage") => self.drop_storage(&tenant, false).await?,
            (WorkflowKind::Purge, false, "drop_storage") => {
                self.drop_storage(&tenant, true).await?
            }
            (_, true, "deregister") => self.deregister(tx, wf, &tenant).await?,
            (_, true, "mark_failed") => {
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
                self.emit(tx, wf, step, &t, "tenant.provisioning_failed")
                    .await?;
            }
            (WorkflowKind::Suspend, _, _) => {
                match tenant.state {
                    TenantState::Active => {
                        let reason = wf
                            .input
                            .get("reason")
                            .and_then(|v| v.as_str())
                            .unwrap_or("suspended");
                        catalog::set_state_in(tx, id, TenantState::Suspended, actor, reason)
                            .await?;
                    }
                    TenantState::Suspended => {}
                    other => {
                        return Ok(Outcome::Cancel(format!(
                            "cannot suspend a tenant that is {other}"
                        )))
                    }
                }
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, step, &t, "tenant.suspended").await?;
            }
            (WorkflowKind::Resume, _, _) => {
                match tenant.state {
                    TenantState::Suspended => {
                        catalog::set_state_in(tx, id, TenantState::Active, actor, "resumed")
                            .await?;
                    }
                    TenantState::Active => {}
                    other => {
                        return Ok(Outcome::Cancel(format!(
                            "cannot resume a tenant that is {other}"
                        )))
                    }
                }
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, step, &t, "tenant.resumed").await?;
            }
            (WorkflowKind::ChangePlan, _, _) => {
                if matches!(tenant.state, TenantState::Deleting | TenantState::Deleted) {
                    return Ok(Outcome::Cancel(format!(
                        "cannot change the plan of a tenant that is {}",
                        tenant.state
                    )));
                }
                let plan: PlanKey = wf
                    .input
                    .get("plan")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e: tenancy_core::IdError| Error::NotPossible(e.to_string()))?;
                catalog::set_plan_in(tx, id, &plan, actor).await?;
                let settings = self
                    .inner
                    .cfg
                    .plans
                    .get(plan.as_str())
                    .cloned()
                    .unwrap_or_default();
                catalog::seed_plan_settings(tx, id, &settings).await?;
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, step, &t, "tenant.plan_changed").await?;
            }
            (WorkflowKind::Delete, _, _) => {
                match tenant.state {
                    TenantState::Active | TenantState::Suspended => {
                        let reason = wf
                            .input
                            .get("reason")
                            .and_then(|v| v.as_str())
                            .unwrap_or("deleted");
                        catalog::set_state_in(tx, id, TenantState::Deleting, actor, reason).await?;
                        let purge_at = OffsetDateTime::now_utc() + self.inner.cfg.retention;
                        catalog::set_purge_after(tx, id, Some(purge_at)).await?;
                    }
                    TenantState::Deleting => {}
                    other => {
                        return Ok(Outcome::Cancel(format!(
                            "cannot delete a tenant that is {other}"
                        )))
                    }
                }
                let t = catalog::lock_tenant(tx, id).await?;
                self.emit(tx, wf, step, &t, "tenant.deleted").await?;
            }
            (WorkflowKind::Purge, false, "check_hold") => {
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
            (WorkflowKind::Purge, false, "purged") => {
                self.deregister(tx, wf, &tenant).await?;
                let t =
                    catalog::set_state_in(tx, id, TenantState::Deleted, actor, "purged").await?;
                self.emit(tx, wf, step, &t, "tenant.purged").await?;
            }
            (kind, comp, step) => {
                return Err(Error::NotPossible(format!(
                    "workflow {kind} has no step {step} (compensating: {comp})"
                )))
            }
        }
        Ok(Outcome::Next)
    }

    /// Creates the tenant's storage at the app's latest version. Idempotent.
    async fn create_storage(&self, tenant: &Tenant, app: &AppMigrations) -> Result<(), Error> {
        let cluster = self.cluster(tenant.cluster_id).await?;
        match tenant.placement {
            Placement::Pooled => self.ensure_shared(&cluster, app).await,
            Placement::Schema => {
                let schema = schema_name_for(tenant.id);
                let mut owner = self
                    .inner
                    .pools
                    .get(
                        &cluster,
                        &self.inner.access.owner,
                        &cluster.dbname,
                        &self.inner.access.tls,
                    )
                    .await?;
                // A spare of the warm pool at the latest version, renamed to the tenant's
                // schema; none (or the schema exists: a re-run step): created here.
                if self.inner.cfg.warm_pool.schemas > 0
                    && app.latest() > 0
                    && storage::claim_spare_schema(&mut owner, &schema, app.latest()).await?
                {
                    self.inner.claims[0].fetch_add(1, Ordering::Relaxed);
                    self.inner.refill_wake.notify_one();
                    return Ok(());
                }
                storage::migrate_schema(&mut owner, &schema, true, app).await?;
                Ok(())
            }
            Placement::Dedicated => {
                // A copy of the cluster's template (bootstrapped, migrated, no secrets),
                // then what a copy does not carry: database privileges and its own keys.
                let db = database_name_for(tenant.id);
                let (template, strategy) = self.ensure_template(&cluster, app).await?;
                if self.inner.cfg.warm_pool.databases > 0 {
                    // A finalised spare (own keys, privileges) cloned from the current
                    // template, renamed to the tenant's database. None, or the database
                    // exists (a re-run step): the path below.
                    let mut admin = self
                        .inner
                        .pools
                        .get(
                            &cluster,
                            &self.inner.access.admin,
                            "postgres",
                            &self.inner.access.tls,
                        )
                        .await?;
                    let tag = storage::spare_database_tag(&template, &self.inner.key);
                    if storage::claim_spare_database(&mut admin, &db, &tag).await? {
                        self.inner.claims[1].fetch_add(1, Ordering::Relaxed);
                        self.inner.refill_wake.notify_one();
                        return Ok(());
                    }
                }
                {
                    let admin = self
                        .inner
                        .pools
                        .get(
                            &cluster,
                            &self.inner.access.admin,
                            "postgres",
                            &self.inner.access.tls,
                        )
                        .await?;
                    self.clone_template(&admin, cluster.id, &db, &template, strategy)
                        .await?;
                }
                let mut owner = connect(&config_for(
                    &cluster,
                    &self.inner.access.owner,
                    &db,
                    &self.inner.access.tls,
                ))
                .await?;
                let version = storage::finalize_clone(&owner, &self.inner.key).await?;
                if version.unwrap_or(0) < app.latest() {
                    // Not a clone of the current template (a database left by an earlier
                    // attempt or version): bring it up the long way, idempotently.
                    drop(owner);
                    let admin = connect(&config_for(
                        &cluster,
                        &self.inner.access.admin,
                        &db,
                        &self.inner.access.tls,
                    ))
                    .await?;
                    tenancy_sdk::bootstrap::bootstrap_database(&admin, &db).await?;
                    drop(admin);
                    owner = connect(&config_for(
                        &cluster,
                        &self.inner.access.owner,
                        &db,
                        &self.inner.access.tls,
                    ))
                    .await?;
                    tenancy_sdk::bootstrap::install_runtime(&owner, &self.inner.key).await?;
                    storage::migrate_schema(&mut owner, "public", false, app).await?;
                }
                Ok(())
            }
        }
    }

    /// The app's migrations at the fleet's version: those this process knows, followed by
    /// the newer ones the catalog's ledger recorded (`tenancy migrate` run since this
    /// process started), remembered for the next call. One indexed catalog query that
    /// finds nothing newer in the usual case.
    pub async fn fleet_app<C: tokio_postgres::GenericClient>(
        &self,
        client: &C,
    ) -> Result<Arc<AppMigrations>, Error> {
        let known = self
            .inner
            .app
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| Arc::new(self.inner.cfg.app_migrations.clone()));
        let newer = catalog::app_migration_sources_after(client, known.latest()).await?;
        if newer.is_empty() {
            return Ok(known);
        }
        let app = Arc::new(known.with_fleet(&newer)?);
        tracing::info!(
            from = known.latest(),
            to = app.latest(),
            "new app migrations recorded by tenancy migrate: new tenants start at the fleet's version"
        );
        if let Ok(mut a) = self.inner.app.write() {
            if a.latest() < app.latest() {
                *a = app.clone();
            }
        }
        Ok(app)
    }

    /// A pooled connection to the catalog.
    async fn catalog_conn(&self) -> Result<crate::conn::Object, Error> {
        self.inner
            .catalog_pool
            .get()
            .await
            .map_err(|e| Error::Connect {
                what: "the catalog".into(),
                detail: tenancy_conn::error_text(&e),
            })
    }

    /// Creates database `name` as a copy of `template` with the database-level grants a
    /// copy does not carry. A template dropped behind our back is forgotten, so the retry
    /// rebuilds it.
    async fn clone_template(
        &self,
        admin: &tokio_postgres::Client,
        cluster: Uuid,
        name: &str,
        template: &str,
        strategy: Option<&'static str>,
    ) -> Result<(), Error> {
        if let Err(e) = storage::create_database_from(admin, name, template, strategy).await {
            if storage::is_missing_database(&e) {
                if let Ok(mut m) = self.inner.templates.lock() {
                    m.remove(&cluster);
                }
            }
            return Err(e);
        }
        storage::grant_database(admin, name).await
    }

    /// The cluster's template database for dedicated tenants, built when missing (once
    /// per app version and runtime, by one process at a time: a session advisory lock on
    /// a connection of its own, released with it even if this process dies). The build
    /// happens under another name and is renamed when complete, so a crash mid-build
    /// leaves nothing that looks like a template.
    async fn ensure_template(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<(String, Option<&'static str>), Error> {
        let template = storage::template_name_for(app);
        if let Some(t) = self
            .inner
            .templates
            .lock()
            .ok()
            .and_then(|m| m.get(&cluster.id).cloned())
            .filter(|t| t.0 == template)
        {
            return Ok(t);
        }
        let access = &self.inner.access;
        let admin = self
            .inner
            .pools
            .get(cluster, &access.admin, "postgres", &access.tls)
            .await?;
        let version: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(Error::db("reading the server version"))?
            .get(0);
        let strategy = storage::clone_strategy(version);
        if !storage::database_exists(&admin, &template).await? {
            let lock =
                connect(&config_for(cluster, &access.admin, "postgres", &access.tls)).await?;
            lock.execute("SELECT pg_advisory_lock(hashtext($1))", &[&template])
                .await
                .map_err(Error::db("locking the template build"))?;
            if !storage::database_exists(&admin, &template).await? {
                let build = storage::template_build_name(&template);
                storage::drop_database(&admin, &build).await?;
                storage::create_database(&admin, &build).await?;
                {
                    let su =
                        connect(&config_for(cluster, &access.admin, &build, &access.tls)).await?;
                    tenancy_sdk::bootstrap::bootstrap_database(&su, &build).await?;
                }
                {
                    let mut owner =
                        connect(&config_for(cluster, &access.owner, &build, &access.tls)).await?;
                    tenancy_sdk::bootstrap::install_runtime(&owner, &self.inner.key).await?;
                    storage::migrate_schema(&mut owner, "public", false, app).await?;
                    storage::strip_template_secrets(&owner).await?;
                }
                storage::seal_template(&admin, &build, &template).await?;
                tracing::info!(cluster = %cluster.name, template, "built the template database for dedicated tenants");
            }
            drop(lock);
        }
        let out = (template, strategy);
        if let Ok(mut m) = self.inner.templates.lock() {
            m.insert(cluster.id, out.clone());
        }
        Ok(out)
    }

    /// Refills the warm pool of every cluster (see [`crate::WarmPool`]): drops spares of an
    /// older app version or template (and spare databases a crash left unfinished), then
    /// creates spares until each cluster has the configured number. One refiller per
    /// cluster at a time (a session advisory lock in its maintenance database; a cluster
    /// another process is refilling is skipped). Returns the number of spares created.
    pub async fn refill_warm_pool(&self) -> Result<usize, Error> {
        let wp = self.inner.cfg.warm_pool;
        if !wp.enabled() {
            return Ok(0);
        }
        let (clusters, app) = {
            let conn = self.catalog_conn().await?;
            (
                catalog::list_clusters(&conn).await?,
                self.fleet_app(&*conn).await?,
            )
        };
        let mut made = 0;
        let mut first_error = None;
        for cluster in clusters {
            if let Ok(mut m) = self.inner.clusters.write() {
                m.entry(cluster.id).or_insert_with(|| cluster.clone());
            }
            // One cluster failing (unreachable, not bootstrapped) does not starve the others.
            match self.refill_cluster(&cluster, &app).await {
                Ok(n) => made += n,
                Err(e) => {
                    tracing::warn!(cluster = %cluster.name, error = %tenancy_conn::ErrorText(&e), "warm pool refill failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(made),
        }
    }

    async fn refill_cluster(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<usize, Error> {
        let wp = self.inner.cfg.warm_pool;
        let access = &self.inner.access;
        let lock = connect(&config_for(cluster, &access.admin, "postgres", &access.tls)).await?;
        let locked: bool = lock
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('tenancy-warm-pool-refill:' || $1))",
                &[&cluster.dbname],
            )
            .await
            .map_err(Error::db("locking the warm pool refill"))?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let mut made = 0;
        let latest = app.latest();
        if wp.schemas > 0 && latest > 0 {
            let mut owner = self
                .inner
                .pools
                .get(cluster, &access.owner, &cluster.dbname, &access.tls)
                .await?;
            let mut ready = 0;
            for (name, version) in storage::spare_schemas(&owner).await? {
                if version == latest {
                    ready += 1;
                } else if version < latest {
                    storage::drop_spare_schema(&mut owner, &name).await?;
                }
            }
            while ready < wp.schemas {
                storage::create_spare_schema(&mut owner, app).await?;
                ready += 1;
                made += 1;
            }
        }
        // Spare databases are cluster-wide: one refiller per cluster for them, even when
        // several catalogs (shared databases) share the cluster.
        let databases_locked = wp.databases > 0
            && lock
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext('tenancy-warm-pool-refill-databases'))",
                    &[],
                )
                .await
                .map_err(Error::db("locking the warm pool refill"))?
                .get::<_, bool>(0);
        if databases_locked {
            let (template, strategy) = self.ensure_template(cluster, app).await?;
            let tag = storage::spare_database_tag(&template, &self.inner.key);
            let ours = storage::spare_database_key_part(&tag);
            let admin = self
                .inner
                .pools
                .get(cluster, &access.admin, "postgres", &access.tls)
                .await?;
            let mut ready = 0;
            for (name, of) in storage::spare_databases(&admin).await? {
                match of {
                    Some(of) if of == tag => ready += 1,
                    // Another key's (another control plane's): not ours to drop.
                    Some(of) if storage::spare_database_key_part(&of) != ours => {}
                    // Another template (app version, runtime), or unfinished: nobody
                    // else refills this cluster's databases now, so nobody finishes it.
                    _ => storage::drop_spare_database(&admin, &name).await?,
                }
            }
            while ready < wp.databases {
                let name = storage::spare_database_name();
                self.clone_template(&admin, cluster.id, &name, &template, strategy)
                    .await?;
                let version = {
                    // A connection of its own, closed before the spare is marked: a spare
                    // must have no sessions when it is claimed (renamed).
                    let owner =
                        connect(&config_for(cluster, &access.owner, &name, &access.tls)).await?;
                    storage::finalize_clone(&owner, &self.inner.key).await?
                };
                if version.unwrap_or(0) < latest {
                    storage::drop_database(&admin, &name).await?;
                    return Err(Error::NotPossible(format!(
                        "template {template} is not at the app's latest version"
                    )));
                }
                storage::mark_spare_database(&admin, &name, &tag).await?;
                ready += 1;
                made += 1;
            }
        }
        drop(lock);
        if made > 0 {
            tracing::debug!(cluster = %cluster.name, made, "refilled the warm pool");
        }
        Ok(made)
    }

    /// Brings the cluster's shared database to the app's latest version (once per process
    /// and version).
    async fn ensure_shared(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<(), Error> {
        if self
            .inner
            .shared_ready
            .lock()
            .map(|s| s.get(&cluster.id).is_some_and(|v| *v >= app.latest()))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut owner = self
            .inner
            .pools
            .get(
                cluster,
                &self.inner.access.owner,
                &cluster.dbname,
                &self.inner.access.tls,
            )
            .await?;
        storage::migrate_schema(&mut owner, "public", false, app).await?;
        if let Ok(mut s) = self.inner.shared_ready.lock() {
            s.insert(cluster.id, app.latest());
        }
        Ok(())
    }

    /// Removes the tenant's storage: its schema or database; for pooled tenants (only when
    /// purging) its rows. Idempotent.
    async fn drop_storage(&self, tenant: &Tenant, purge_rows: bool) -> Result<(), Error> {
        let cluster = self.cluster(tenant.cluster_id).await?;
        match tenant.placement {
            Placement::Pooled => {
                if purge_rows {
                    let pool = self.runtime_pool(&cluster)?;
                    storage::purge_pooled_rows(&pool, tenant.id).await?;
                }
            }
            Placement::Schema => {
                let schema = tenant
                    .schema_name
                    .clone()
                    .unwrap_or_else(|| schema_name_for(tenant.id));
                let owner = self
                    .inner
                    .pools
                    .get(
                        &cluster,
                        &self.inner.access.owner,
                        &cluster.dbname,
                        &self.inner.access.tls,
                    )
                    .await?;
                storage::drop_schema(&owner, &schema).await?;
            }
            Placement::Dedicated => {
                let db = tenant
                    .database_name
                    .clone()
                    .unwrap_or_else(|| database_name_for(tenant.id));
                let admin = self
                    .inner
                    .pools
                    .get(
                        &cluster,
                        &self.inner.access.admin,
                        "postgres",
                        &self.inner.access.tls,
                    )
                    .await?;
                storage::drop_database(&admin, &db).await?;
            }
        }
        Ok(())
    }

    fn runtime_pool(&self, cluster: &ClusterRecord) -> Result<TenantPool, Error> {
        let mut m = self
            .inner
            .runtime_pools
            .lock()
            .map_err(|_| Error::Config("runtime pool map poisoned".into()))?;
        if let Some(p) = m.get(&cluster.id) {
            return Ok(p.clone());
        }
        let pool = TenantPool::new(
            config_for(
                cluster,
                &self.inner.access.runtime,
                &cluster.dbname,
                &self.inner.access.tls,
            ),
            self.inner.key.clone(),
            PoolOptions {
                max_size: 2,
                ..Default::default()
            },
        )?;
        m.insert(cluster.id, pool.clone());
        Ok(pool)
    }

    /// Registers the tenant with every registration receiver it is not yet registered
    /// with. The webhook id is derived from tenant and receiver, so a retried registration
    /// carries the same id and the receiver deduplicates it.
    async fn register(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
        ctx: &mut StepCtx,
    ) -> Result<(), Error> {
        let done: HashSet<String> = catalog::registrations_in(tx, tenant.id)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        for (receiver, key) in &self.inner.reg_keys {
            if done.contains(&receiver.name) {
                continue;
            }
            let webhook_id = format!("msg_reg_{}_{}", tenant.id.as_uuid().simple(), receiver.name);
            let body = serde_json::to_vec(&json!({
                "type": "tenant.registration",
                "timestamp": now_rfc3339(),
                "data": tenant_json(tenant),
            }))
            .unwrap_or_default();
            let attempt = webhook::deliver(
                &receiver.url,
                key,
                &webhook_id,
                &body,
                self.inner.cfg.webhook_timeout,
            )
            .await;
            ctx.deliveries.push(Delivery {
                webhook_id: webhook_id.clone(),
                receiver: receiver.name.clone(),
                tenant_id: Some(tenant.id),
                event_type: "tenant.registration".into(),
                attempt: wf.attempts + 1,
                http_status: attempt.status.map(i32::from),
                error: attempt.error.clone(),
                ms: attempt.ms,
            });
            match attempt.error {
                None => {
                    catalog::record_registration(tx, tenant.id, &receiver.name, &webhook_id)
                        .await?;
                    ctx.registered.push((receiver.name.clone(), webhook_id));
                }
                Some(detail) => {
                    return Err(Error::Registration {
                        receiver: receiver.name.clone(),
                        detail,
                    })
                }
            }
        }
        Ok(())
    }

    /// Queues a deregistration for every receiver the tenant is registered with and
    /// forgets the registrations, in the step's transaction.
    async fn deregister(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
    ) -> Result<(), Error> {
        for (receiver, _) in catalog::registrations_in(tx, tenant.id).await? {
            if let Some((r, _)) = self.inner.reg_keys.iter().find(|(r, _)| r.name == receiver) {
                catalog::enqueue_outbox(
                    tx,
                    &OutboxMessage {
                        webhook_id: format!(
                            "msg_dereg_{}_{}",
                            tenant.id.as_uuid().simple(),
                            receiver
                        ),
                        receiver: receiver.clone(),
                        url: r.url.clone(),
                        tenant_id: Some(tenant.id),
                        event_type: "tenant.deregistration".into(),
                        payload: json!({
                            "type": "tenant.deregistration",
                            "timestamp": now_rfc3339(),
                            "data": tenant_json(tenant),
                            "workflow": wf.id.to_string(),
                        }),
                        attempts: 0,
                    },
                )
                .await?;
            }
            catalog::remove_registration(tx, tenant.id, &receiver).await?;
        }
        Ok(())
    }

    /// Queues a lifecycle event for every event receiver (transactional outbox).
    async fn emit(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        step: &str,
        tenant: &Tenant,
        event_type: &str,
    ) -> Result<(), Error> {
        for (r, _) in &self.inner.event_keys {
            catalog::enqueue_outbox(
                tx,
                &OutboxMessage {
                    webhook_id: format!("msg_{}_{}_{}", wf.id.simple(), step, r.name),
                    receiver: r.name.clone(),
                    url: r.url.clone(),
                    tenant_id: Some(tenant.id),
                    event_type: event_type.into(),
                    payload: json!({
                        "type": event_type,
                        "timestamp": now_rfc3339(),
                        "data": tenant_json(tenant),
                    }),
                    attempts: 0,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Delivers the next due outbox message. Returns whether there was one.
    pub async fn deliver_outbox_once(&self, client: &mut Client) -> Result<bool, Error> {
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting a catalog transaction"))?;
        let Some(m) = catalog::claim_outbox(&tx).await? else {
            return Ok(false);
        };
        let key = self
            .inner
            .event_keys
            .iter()
            .chain(self.inner.reg_keys.iter())
            .find(|(r, _)| r.name == m.receiver)
            .map(|(_, k)| k.clone());
        let attempt_no = m.attempts + 1;
        let (delivered, retry_in, delivery) = match key {
            None => (
                false,
                None,
                Delivery {
                    webhook_id: m.webhook_id.clone(),
                    receiver: m.receiver.clone(),
                    tenant_id: m.tenant_id,
                    event_type: m.event_type.clone(),
                    attempt: attempt_no,
                    http_status: None,
                    error: Some("receiver is no longer configured".into()),
                    ms: 0.0,
                },
            ),
            Some(key) => {
                let body = serde_json::to_vec(&m.payload).unwrap_or_default();
                let a = webhook::deliver(
                    &m.url,
                    &key,
                    &m.webhook_id,
                    &body,
                    self.inner.cfg.webhook_timeout,
                )
                .await;
                let retry = (!a.ok() && attempt_no < self.inner.cfg.outbox_max_attempts)
                    .then(|| self.inner.cfg.backoff(m.attempts));
                (
                    a.ok(),
                    retry,
                    Delivery {
                        webhook_id: m.webhook_id.clone(),
                        receiver: m.receiver.clone(),
                        tenant_id: m.tenant_id,
                        event_type: m.event_type.clone(),
                        attempt: attempt_no,
                        http_status: a.status.map(i32::from),
                        error: a.error,
                        ms: a.ms,
                    },
                )
            }
        };
        catalog::record_delivery(&tx, &delivery).await?;
        catalog::finish_outbox(&tx, &m.webhook_id, delivered, retry_in).await?;
        tx.commit()
            .await
            .map_err(Error::db("recording a webhook delivery"))?;
        let outcome = match (delivered, retry_in) {
            (true, _) => "delivered",
            (false, Some(_)) => "retry",
            (false, None) => "gave_up",
        };
        metrics::counter!("tenancy_webhook_deliveries_total", "outcome" => outcome).increment(1);
        Ok(true)
    }

    /// Queues a purge workflow for every soft-deleted tenant whose retention is over and
    /// that has no legal hold. Returns how many were queued.
    pub async fn schedule_purges(&self, client: &mut Client) -> Result<usize, Error> {
        let due = catalog::purge_due(client, 100).await?;
        for t in &due {
            self.enqueue(
                client,
                *t,
                WorkflowKind::Purge,
                &json!({}),
                "tenancy-purge-scheduler",
            )
            .await?;
        }
        Ok(due.len())
    }

    /// Starts `n` workers, the outbox loop and the purge scheduler.
    pub fn spawn_workers(&self, n: usize) -> Workers {
        let (stop, stop_rx) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..n {
            let me = self.clone();
            let rx = stop_rx.clone();
            handles.push(tokio::spawn(async move { me.worker_loop(i, rx).await }));
        }
        let me = self.clone();
        let rx = stop_rx.clone();
        handles.push(tokio::spawn(async move { me.outbox_loop(rx).await }));
        if self.inner.cfg.warm_pool.enabled() {
            let me = self.clone();
            let rx = stop_rx.clone();
            handles.push(tokio::spawn(async move { me.refill_loop(rx).await }));
        }
        let me = self.clone();
        handles.push(tokio::spawn(async move { me.purge_loop(stop_rx).await }));
        Workers {
            stop,
            handles,
            workers: n,
        }
    }

    async fn worker_loop(&self, i: usize, mut stop: watch::Receiver<bool>) {
        let mut client: Option<Client> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let c = match client.as_mut() {
                Some(c) if !c.is_closed() => c,
                _ => match self.catalog_client().await {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        tracing::warn!(worker = i, error = %tenancy_conn::ErrorText(&e), "worker cannot reach the catalog");
                        tokio::time::sleep(self.inner.cfg.poll_interval).await;
                        continue;
                    }
                },
            };
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step_once(c, None).await {
                Ok(Some(_)) => continue,
                Ok(None) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(self.inner.cfg.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(Error::InjectedCrash(step)) => {
                    tracing::warn!(worker = i, step, "worker killed by an injected crash");
                    // Close the connection without committing, like a dying process.
                    drop(client.take());
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = i, error = %tenancy_conn::ErrorText(&e), "worker step failed");
                    client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn outbox_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut client: Option<Client> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let c = match client.as_mut() {
                Some(c) if !c.is_closed() => c,
                _ => match self.catalog_client().await {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        tokio::time::sleep(self.inner.cfg.poll_interval).await;
                        continue;
                    }
                },
            };
            let notified = self.inner.outbox_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.deliver_outbox_once(c).await {
                Ok(true) => continue,
                Ok(false) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(self.inner.cfg.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %tenancy_conn::ErrorText(&e), "webhook delivery failed");
                    client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Keeps the warm pool full: a pass at start, after every claim and periodically.
    async fn refill_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            // Failures are logged per cluster; the next pass retries.
            let _ = self.refill_warm_pool().await;
            tokio::select! {
                _ = self.inner.refill_wake.notified() => {}
                _ = tokio::time::sleep(self.inner.cfg.poll_interval * 10) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn purge_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.catalog_client().await {
                Ok(mut c) => {
                    if let Err(e) = self.schedule_purges(&mut c).await {
                        tracing::warn!(error = %tenancy_conn::ErrorText(&e), "purge scheduling failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %tenancy_conn::ErrorText(&e), "purge scheduler cannot reach the catalog")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.inner.cfg.poll_interval * 10) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Running workers; stop them with [`Workers::stop`].
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    workers: usize,
}

impl Workers {
    /// Workflow workers still running (a worker ends after an injected crash).
    pub fn alive(&self) -> usize {
        self.handles[..self.workers]
            .iter()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Stops every loop and waits for them (a step under way finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}

/// Counts a workflow step attempt (`outcome`: ok, retry, failed) and its duration.
fn step_metrics(kind: WorkflowKind, outcome: &'static str, ms: f64) {
    metrics::counter!(
        "tenancy_workflow_steps_total",
        "kind" => kind.to_string(),
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!("tenancy_workflow_step_duration_seconds", "kind" => kind.to_string())
        .record(ms / 1000.0);
}

fn provision_input(req: &ProvisionRequest) -> serde_json::Value {
    json!({
        "billing_customer": req.billing_customer,
        "billing_subscription": req.billing_subscription,
    })
}
