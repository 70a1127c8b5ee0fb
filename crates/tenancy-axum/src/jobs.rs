//! Tenant-scoped background jobs on a PostgreSQL queue (`tenancy.jobs`,
//! `FOR UPDATE SKIP LOCKED`).
//!
//! - A job is enqueued inside a tenant transaction ([`enqueue`]), so it commits or rolls
//!   back with the request's writes, and the table's RLS policy refuses a job for any
//!   tenant but the transaction's own.
//! - The envelope carries the tenant, signed ([`JobSigner`]): an HMAC over tenant, job id,
//!   kind, issue time and payload. A worker refuses (state `rejected`) a job whose
//!   signature is missing or does not verify, so a row edited in the queue cannot make a
//!   job run as another tenant.
//! - The runtime role may only insert jobs (for its own tenant); it cannot read, claim,
//!   finish or re-queue any. [`Worker`]s connect as the worker role
//!   ([`WORKER_ROLE`], `tenancy_worker`), which may only claim and finish jobs through
//!   the queue's two functions.
//! - [`Worker`] claims one job at a time for a bounded lease ([`MAX_LEASE`]), checks the
//!   tenant (exists, active), and runs the handler inside a `job` span with `tenant_id`,
//!   with [`crate::Tenant::current`] set and a [`Tx`] that is committed when the handler
//!   returns `Ok` and rolled back otherwise. Attempts are bounded (`max_attempts`, at most
//!   25).
//! - A finished job never runs again: its signed id is recorded once in
//!   `tenancy.job_ledger` when it finishes, and a worker refuses (state `rejected`) an
//!   envelope that has a record, even when the row was put back in the queue. Each claim
//!   gets a fresh claim id that finishing must present, so a worker whose lease expired
//!   cannot finish a job another worker holds.
//! - Delivery is at least once: a crash after the commit and before the job is marked
//!   done runs it again after its lease expires, so handlers must be idempotent.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenancy_core::TenantId;
pub use tenancy_sdk::bootstrap::WORKER_ROLE;
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::TenantTx;
use tracing::Instrument;
use uuid::Uuid;

use crate::pool::{self, PlainPool};
use crate::tenant::Via;
use crate::tx::TxSlot;
use crate::{ConfigError, HttpError, SourceKind, Tenancy, Tenant, Tx};

/// The SQL that creates the queue table and its functions; run it as the owner role
/// (after the tenancy runtime is installed and the cluster bootstrap created the worker
/// role), e.g. with [`install`].
pub const JOBS_SQL: &str = include_str!("../sql/jobs.sql");

/// The longest lease a worker may take on a job (the queue refuses longer ones): a job
/// whose worker died is claimable again at most this long after it was claimed.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// Installs the queue. `owner` must be connected as the owner role.
pub async fn install(owner: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    owner.batch_execute(JOBS_SQL).await
}

/// Signs and checks job envelopes. Keep the key secret, like the context key.
#[derive(Clone)]
pub struct JobSigner {
    /// HMAC-SHA256 key.
    key: [u8; 32],
}

impl std::fmt::Debug for JobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSigner").finish_non_exhaustive()
    }
}

/// A job as stored in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnvelope {
    /// Job id.
    pub id: Uuid,
    /// The tenant it runs as.
    pub tenant: TenantId,
    /// Handler name.
    pub kind: String,
    /// JSON text (references, not copies of tenant data).
    pub payload: String,
    /// Microseconds since the Unix epoch.
    pub issued_at: i64,
    /// Hex HMAC; `None` if unsigned (refused by workers).
    pub signature: Option<String>,
}

fn message(tenant: TenantId, id: Uuid, kind: &str, issued_at: i64, payload: &str) -> String {
    format!("tenancy-job-v1\n{tenant}\n{id}\n{kind}\n{issued_at}\n{payload}")
}

impl JobSigner {
    /// A signer with this key.
    pub fn new(key: [u8; 32]) -> Self {
        JobSigner { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
        }
    }

    /// Builds a signed envelope.
    pub fn seal(&self, tenant: TenantId, kind: &str, payload: &serde_json::Value) -> JobEnvelope {
        let id = Uuid::new_v4();
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let payload = payload.to_string();
        let mut mac = self.mac();
        mac.update(message(tenant, id, kind, issued_at, &payload).as_bytes());
        JobEnvelope {
            id,
            tenant,
            kind: kind.to_owned(),
            payload,
            issued_at,
            signature: Some(hex::encode(mac.finalize().into_bytes())),
        }
    }

    /// Whether the envelope's signature is present and verifies.
    pub fn verify(&self, env: &JobEnvelope) -> bool {
        let Some(sig) = env.signature.as_deref().and_then(|s| hex::decode(s).ok()) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message(env.tenant, env.id, &env.kind, env.issued_at, &env.payload).as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// Enqueues a job for the transaction's tenant on `queue`, inside the transaction.
pub async fn enqueue(
    tx: &mut TenantTx,
    signer: &JobSigner,
    queue: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, tenancy_sdk::Error> {
    let env = signer.seal(tx.tenant(), kind, payload);
    tx.execute(
        "INSERT INTO tenancy.jobs (tenant_id, id, queue, kind, payload, issued_at, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &env.tenant.as_uuid(),
            &env.id,
            &queue,
            &env.kind,
            &env.payload,
            &env.issued_at,
            &env.signature,
        ],
    )
    .await?;
    Ok(env.id)
}

/// What a job handler returns.
pub type JobResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What a job handler gets.
#[derive(Debug)]
pub struct JobContext {
    /// The tenant the job runs as (checked: exists, active).
    pub tenant: Tenant,
    /// The job's tenant transaction: committed if the handler returns `Ok`.
    pub tx: Tx,
    /// Job id.
    pub job_id: Uuid,
    /// Handler name.
    pub kind: String,
    /// Parsed payload.
    pub payload: serde_json::Value,
    /// 1 on the first try.
    pub attempt: i32,
}

type Handler = Arc<dyn Fn(JobContext) -> BoxFuture<'static, JobResult> + Send + Sync>;

/// What happened to a claimed job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// Ran and committed.
    Done {
        /// Job id.
        id: Uuid,
        /// Its tenant.
        tenant: TenantId,
    },
    /// Failed; will be retried.
    Retry {
        /// Job id.
        id: Uuid,
        /// Why.
        error: String,
    },
    /// Failed for good.
    Failed {
        /// Job id.
        id: Uuid,
        /// Why.
        error: String,
    },
    /// Refused: no valid signed tenant context. Never run.
    Rejected {
        /// Job id.
        id: Uuid,
        /// Why.
        reason: String,
    },
}

/// Worker errors (the queue itself failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A queue statement failed.
    #[error("job queue: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No queue connection.
    #[error("job queue connection: {0}")]
    Pool(String),
}

/// A claimed job: the envelope, and what the queue said about this claim.
struct Claimed {
    /// The envelope as stored.
    env: JobEnvelope,
    /// The claim id that finishing must present.
    claim: Uuid,
    /// 1 on the first claim.
    attempt: i32,
    /// Claims allowed in all.
    max: i32,
    /// The outcome recorded when the job already finished once.
    finished: Option<String>,
}

/// Runs tenant jobs from one queue.
pub struct Worker {
    /// Tenant checks and transactions.
    tenancy: Tenancy,
    /// Worker-role connections for claim/finish (not tenant data).
    pool: PlainPool,
    /// Verifies envelopes.
    signer: JobSigner,
    /// Queue name.
    queue: String,
    /// Handlers by kind.
    handlers: HashMap<String, Handler>,
    /// How long a claimed job is reserved before another worker may take it.
    lease: Duration,
    /// Sleep between empty polls.
    poll: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn now_secs_backoff(attempt: i32) -> i32 {
    2_i32.saturating_pow(attempt.clamp(0, 8) as u32).min(300)
}

impl Worker {
    /// A worker on queue `default`; `queue_db` connects as the worker role
    /// ([`WORKER_ROLE`]) to the database holding `tenancy.jobs`. Handlers still reach
    /// tenant data only through `tenancy`'s router, as the runtime role, in the job's
    /// tenant. The runtime and owner roles are refused here: the runtime role cannot claim
    /// jobs, and the owner must not be a worker's login.
    pub fn new(
        tenancy: Tenancy,
        queue_db: impl Into<tenancy_sdk::PgConfig>,
        signer: JobSigner,
    ) -> Result<Self, ConfigError> {
        let queue_db = queue_db.into();
        if let Some(user) = queue_db
            .pg()
            .get_user()
            .filter(|u| *u == RUNTIME_ROLE || *u == OWNER_ROLE)
        {
            return Err(ConfigError::Invalid(format!(
                "job worker: queue_db connects as {user}; workers connect as the worker role {WORKER_ROLE}"
            )));
        }
        Ok(Worker {
            tenancy,
            pool: pool::build(queue_db, 2)?,
            signer,
            queue: "default".into(),
            handlers: HashMap::new(),
            lease: Duration::from_secs(300),
            poll: Duration::from_millis(200),
        })
    }

    /// Uses queue `name`.
    pub fn queue(mut self, name: &str) -> Self {
        self.queue = name.to_owned();
        self
    }

    /// Sleep between polls of an empty queue.
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// How long a claimed job is reserved for this worker before another may claim it
    /// (default 5 minutes): at least one second, at most [`MAX_LEASE`].
    pub fn lease(mut self, d: Duration) -> Result<Self, ConfigError> {
        if d < Duration::from_secs(1) || d > MAX_LEASE {
            return Err(ConfigError::Invalid(format!(
                "job worker: lease must be between 1 s and {} s, not {:?}",
                MAX_LEASE.as_secs(),
                d
            )));
        }
        self.lease = d;
        Ok(self)
    }

    /// Registers the handler of `kind`.
    pub fn register<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        self.handlers
            .insert(kind.to_owned(), Arc::new(move |ctx| Box::pin(f(ctx))));
        self
    }

    async fn finish(
        &self,
        job: &Claimed,
        state: &str,
        error: Option<&str>,
        retry_secs: i32,
    ) -> Result<(), WorkerError> {
        let c = self
            .pool
            .get()
            .await
            .map_err(|e| WorkerError::Pool(e.to_string()))?;
        let env = &job.env;
        let held: bool = c
            .query_one(
                "SELECT tenancy.finish_job($1, $2, $3, $4, $5, $6)",
                &[
                    &env.tenant.as_uuid(),
                    &env.id,
                    &job.claim,
                    &state,
                    &error,
                    &retry_secs,
                ],
            )
            .await?
            .get(0);
        if !held {
            // The lease ran out and another worker claimed the job: its outcome is the
            // one that counts.
            tracing::warn!(job_id = %env.id, tenant_id = %env.tenant, state, "the job's lease expired before it finished; another claim holds it");
        }
        Ok(())
    }

    async fn failed(
        &self,
        job: &Claimed,
        attempt: i32,
        error: String,
    ) -> Result<JobOutcome, WorkerError> {
        let env = &job.env;
        if attempt >= job.max {
            tracing::error!(job_id = %env.id, kind = %env.kind, %error, "job failed for good");
            self.finish(job, "failed", Some(&error), 0).await?;
            Ok(JobOutcome::Failed { id: env.id, error })
        } else {
            tracing::warn!(job_id = %env.id, kind = %env.kind, %error, attempt, "job failed; will retry");
            self.finish(job, "retry", Some(&error), now_secs_backoff(attempt))
                .await?;
            Ok(JobOutcome::Retry { id: env.id, error })
        }
    }

    /// Claims the next ready job, if any.
    async fn claim(&self) -> Result<Option<Claimed>, WorkerError> {
        let c = self
            .pool
            .get()
            .await
            .map_err(|e| WorkerError::Pool(e.to_string()))?;
        // `lease` is validated against MAX_LEASE, so it fits.
        let lease = self.lease.as_secs().min(MAX_LEASE.as_secs()) as i32;
        let row = c
            .query_opt(
                "SELECT tenant_id, id, kind, payload, issued_at, signature, attempts, max_attempts, claim, finished
                   FROM tenancy.claim_job($1, $2)",
                &[&self.queue, &lease],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let tenant_uuid: Uuid = row.get(0);
        let Ok(tenant) = TenantId::from_uuid(tenant_uuid) else {
            return Ok(None);
        };
        Ok(Some(Claimed {
            env: JobEnvelope {
                id: row.get(1),
                tenant,
                kind: row.get(2),
                payload: row.get(3),
                issued_at: row.get(4),
                signature: row.get(5),
            },
            attempt: row.get(6),
            max: row.get(7),
            claim: row.get(8),
            finished: row.get(9),
        }))
    }

    /// Claims and runs one job; `None` when the queue has nothing ready.
    pub async fn run_once(&self) -> Result<Option<JobOutcome>, WorkerError> {
        let Some(job) = self.claim().await? else {
            return Ok(None);
        };
        let (env, attempt, max) = (&job.env, job.attempt, job.max);
        let refusal = if !self.signer.verify(env) {
            Some("the job has no valid signed tenant context".to_owned())
        } else {
            job.finished.as_ref().map(|outcome| {
                format!("the job already finished ({outcome}); a finished job never runs again")
            })
        };
        if let Some(reason) = refusal {
            tracing::warn!(job_id = %env.id, tenant_id = %env.tenant, kind = %env.kind, "refusing a job: {reason}");
            self.finish(&job, "rejected", Some(&reason), 0).await?;
            return Ok(Some(JobOutcome::Rejected { id: env.id, reason }));
        }
        let Some(handler) = self.handlers.get(&env.kind).cloned() else {
            let error = format!("no handler for job kind {:?}", env.kind);
            return self.failed(&job, max, error).await.map(Some);
        };
        let payload: serde_json::Value = match serde_json::from_str(&env.payload) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .failed(&job, max, format!("payload: {e}"))
                    .await
                    .map(Some)
            }
        };
        let span = tracing::info_span!("job", job_id = %env.id, kind = %env.kind, tenant_id = %env.tenant, attempt);
        let t = self
            .tenancy
            .checked(
                env.tenant,
                Via::one(SourceKind::Job),
                Some(Arc::from(format!("job:{}", env.id))),
                None,
            )
            .instrument(span.clone())
            .await;
        let tenant = match t {
            Ok(t) => t,
            Err(HttpError::TenantNotFound) | Err(HttpError::TenantDeleted) => {
                return self
                    .failed(&job, max, "tenant is gone".into())
                    .await
                    .map(Some)
            }
            Err(e) => return self.failed(&job, attempt, e.to_string()).await.map(Some),
        };
        let slot = TxSlot::new(self.tenancy.clone(), tenant.clone(), false);
        let tx = match slot.open().await {
            Ok(tx) => tx,
            Err(e) => return self.failed(&job, attempt, e.to_string()).await.map(Some),
        };
        let ctx = JobContext {
            tenant: tenant.clone(),
            tx,
            job_id: env.id,
            kind: env.kind.clone(),
            payload,
            attempt,
        };
        let res = tenant
            .scope(AssertUnwindSafe(handler(ctx)).catch_unwind())
            .instrument(span.clone())
            .await;
        let error = match res {
            Ok(Ok(())) => match slot.finish(true).await {
                Ok(()) => {
                    self.finish(&job, "done", None, 0).await?;
                    let _e = span.enter();
                    tracing::info!("job done");
                    return Ok(Some(JobOutcome::Done {
                        id: env.id,
                        tenant: env.tenant,
                    }));
                }
                Err(e) => format!("commit failed: {e}"),
            },
            Ok(Err(e)) => {
                let _ = slot.finish(false).await;
                e.to_string()
            }
            Err(_) => {
                let _ = slot.finish(false).await;
                "the job handler panicked".into()
            }
        };
        self.failed(&job, attempt, error).await.map(Some)
    }

    /// Runs jobs until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let idle = match self.run_once().await {
                Ok(Some(_)) => false,
                Ok(None) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(self.poll) => {}
                }
            } else if (&mut shutdown).now_or_never().is_some() {
                return;
            }
        }
    }
}
