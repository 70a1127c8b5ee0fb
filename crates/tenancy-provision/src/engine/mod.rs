//! The workflow engine: queueing, claiming, steps, retries, compensation, workers, the
//! outbox loop and the purge scheduler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::json;
use tenancy_catalog::{
    self as catalog, CatalogError, ClusterRecord, Delivery, NewTenant, Tenant, Workflow,
    WorkflowKind, WorkflowStatus,
};
use tenancy_core::{ContextKey, TenantId};
use tenancy_sdk::TenantPool;
use time::OffsetDateTime;
use tokio::sync::{broadcast, Notify};
use tokio_postgres::{Client, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::conn::{connect, pg_pool, Pool, Pools};
use crate::webhook;
use crate::{AppMigrations, ClusterAccess, Error, ProvisionConfig, Receiver};
use tenancy_conn::PgConfig;

mod faults;
mod moves;
mod placement;
mod steps;
mod webhooks;
mod workers;

#[cfg(feature = "fault-injection")]
pub use faults::{Fault, FaultPhase, Faults};
#[cfg(not(feature = "fault-injection"))]
use faults::{Fault, FaultPhase, Faults};
pub use moves::{MoveRequest, MoveRequestError};
use steps::steps_of;
pub use workers::Workers;

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
        let catalog_pool = pg_pool(catalog.clone(), 4)?;
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

    /// Fault injection handle (the crash-recovery tests; feature `fault-injection`).
    #[cfg(feature = "fault-injection")]
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
            let Some(&next_step) = steps.get(wf.step as usize) else {
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
            let step = next_step.as_str();
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
                    self.exec(&tx, &wf, next_step, &mut ctx)
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
        } else if matches!(wf.kind, WorkflowKind::Provision | WorkflowKind::Move) {
            catalog::record_step(&tx, wf.id, step, false, attempt, "failed", Some(&msg), ms)
                .await?;
            catalog::advance_workflow(&tx, wf.id, WorkflowStatus::Compensating, 0, Some(&msg))
                .await?;
            tracing::error!(tenant_id = %wf.tenant_id, workflow = %wf.id, kind = %wf.kind, step, error = %msg, "workflow failed; compensating");
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
                || (matches!(wf.kind, WorkflowKind::Provision | WorkflowKind::Move)
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

    /// A pooled connection to the catalog.
    pub(super) async fn catalog_conn(&self) -> Result<crate::conn::Object, Error> {
        self.inner.catalog_pool.get().await.map_err(|e| {
            Error::Db(tenancy_conn::DbError::Connect {
                what: "the catalog".into(),
                detail: tenancy_conn::error_text(&e),
            })
        })
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
