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
//! - [`Worker`] claims one job at a time, checks the tenant (exists, active), and runs the
//!   handler inside a `job` span with `tenant_id`, with [`crate::Tenant::current`] set and
//!   a [`Tx`] that is committed when the handler returns `Ok` and rolled back otherwise.
//!   Delivery is at least once: a crash after the commit and before the job is marked
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
use tenancy_sdk::TenantTx;
use tracing::Instrument;
use uuid::Uuid;

use crate::pool::{self, PlainPool};
use crate::tenant::Via;
use crate::tx::TxSlot;
use crate::{ConfigError, HttpError, SourceKind, Tenancy, Tenant, Tx};

/// The SQL that creates the queue table and its functions; run it as the owner role
/// (after the tenancy runtime is installed), e.g. with [`install`].
pub const JOBS_SQL: &str = include_str!("../sql/jobs.sql");

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

/// Runs tenant jobs from one queue.
pub struct Worker {
    /// Tenant checks and transactions.
    tenancy: Tenancy,
    /// Plain runtime-role connections for claim/finish (not tenant data).
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
    /// A worker on queue `default`; `queue_db` connects as the runtime role to the
    /// database holding `tenancy.jobs`.
    pub fn new(
        tenancy: Tenancy,
        queue_db: tokio_postgres::Config,
        signer: JobSigner,
    ) -> Result<Self, ConfigError> {
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
        env: &JobEnvelope,
        state: &str,
        error: Option<&str>,
        retry_secs: i32,
    ) -> Result<(), WorkerError> {
        let c = self
            .pool
            .get()
            .await
            .map_err(|e| WorkerError::Pool(e.to_string()))?;
        c.execute(
            "SELECT tenancy.finish_job($1, $2, $3, $4, $5)",
            &[&env.tenant.as_uuid(), &env.id, &state, &error, &retry_secs],
        )
        .await?;
        Ok(())
    }

    async fn failed(
        &self,
        env: &JobEnvelope,
        attempt: i32,
        max: i32,
        error: String,
    ) -> Result<JobOutcome, WorkerError> {
        if attempt >= max {
            tracing::error!(job_id = %env.id, kind = %env.kind, %error, "job failed for good");
            self.finish(env, "failed", Some(&error), 0).await?;
            Ok(JobOutcome::Failed { id: env.id, error })
        } else {
            tracing::warn!(job_id = %env.id, kind = %env.kind, %error, attempt, "job failed; will retry");
            self.finish(env, "retry", Some(&error), now_secs_backoff(attempt))
                .await?;
            Ok(JobOutcome::Retry { id: env.id, error })
        }
    }

    /// Claims and runs one job; `None` when the queue has nothing ready.
    pub async fn run_once(&self) -> Result<Option<JobOutcome>, WorkerError> {
        let row =
            {
                let c = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| WorkerError::Pool(e.to_string()))?;
                c.query_opt(
                "SELECT tenant_id, id, kind, payload, issued_at, signature, attempts, max_attempts
                   FROM tenancy.claim_job($1, $2)",
                &[&self.queue, &(self.lease.as_secs().min(i32::MAX as u64) as i32)],
            )
            .await?
            };
        let Some(row) = row else { return Ok(None) };
        let tenant_uuid: Uuid = row.get(0);
        let attempt: i32 = row.get(6);
        let max: i32 = row.get(7);
        let Ok(tenant) = TenantId::from_uuid(tenant_uuid) else {
            return Ok(None);
        };
        let env = JobEnvelope {
            id: row.get(1),
            tenant,
            kind: row.get(2),
            payload: row.get(3),
            issued_at: row.get(4),
            signature: row.get(5),
        };
        if !self.signer.verify(&env) {
            let reason = "the job has no valid signed tenant context".to_owned();
            tracing::warn!(job_id = %env.id, tenant_id = %env.tenant, kind = %env.kind, "refusing a job: {reason}");
            self.finish(&env, "rejected", Some(&reason), 0).await?;
            return Ok(Some(JobOutcome::Rejected { id: env.id, reason }));
        }
        let Some(handler) = self.handlers.get(&env.kind).cloned() else {
            let error = format!("no handler for job kind {:?}", env.kind);
            return self.failed(&env, max, max, error).await.map(Some);
        };
        let payload: serde_json::Value = match serde_json::from_str(&env.payload) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .failed(&env, max, max, format!("payload: {e}"))
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
                    .failed(&env, max, max, "tenant is gone".into())
                    .await
                    .map(Some)
            }
            Err(e) => {
                return self
                    .failed(&env, attempt, max, e.to_string())
                    .await
                    .map(Some)
            }
        };
        let slot = TxSlot::new(self.tenancy.clone(), tenant.clone(), false);
        let tx = match slot.open().await {
            Ok(tx) => tx,
            Err(e) => {
                return self
                    .failed(&env, attempt, max, e.to_string())
                    .await
                    .map(Some)
            }
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
                    self.finish(&env, "done", None, 0).await?;
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
        self.failed(&env, attempt, max, error).await.map(Some)
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
