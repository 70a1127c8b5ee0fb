//! The worker: claims jobs, checks their envelopes, and runs each handler through a
//! [`JobRuntime`] in its tenant's scope, inside a `job` span that continues the job's
//! trace.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tenancy_core::TenantId;
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tracing::Instrument;
use uuid::Uuid;

use crate::pool::{self, PlainPool};
use crate::{JobEnvelope, JobSigner, TraceParent, MAX_LEASE, WORKER_ROLE};

/// An error of a handler or a runtime, kept as text in the job's `last_error`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a job's tenant cannot run it.
#[derive(Debug)]
#[non_exhaustive]
pub enum TenantUnavailable {
    /// The tenant does not exist or is being deleted: the job fails for good.
    Gone,
    /// Not now (suspended, provisioning, the catalog unreachable): the job is retried.
    NotNow(BoxError),
}

/// Where jobs run: what checks a job's tenant, opens its transaction and sets the task's
/// tenant scope. tenancy-axum's `Tenancy` is one, so a job handler gets the same
/// `Tenant` and `Tx` a request handler gets.
pub trait JobRuntime: Send + Sync + 'static {
    /// The checked tenant a handler gets.
    type Tenant: Clone + Send + Sync + fmt::Debug + 'static;
    /// The tenant transaction a handler gets.
    type Tx: Send + fmt::Debug + 'static;
    /// What the worker keeps to end the transaction once the handler returned.
    type Ending: Send + 'static;

    /// Checks that `tenant` may run job `job` now (exists, active).
    fn check(
        &self,
        tenant: TenantId,
        job: Uuid,
    ) -> impl Future<Output = Result<Self::Tenant, TenantUnavailable>> + Send;

    /// Opens the job's tenant transaction.
    fn open(
        &self,
        tenant: &Self::Tenant,
    ) -> impl Future<Output = Result<(Self::Tx, Self::Ending), BoxError>> + Send;

    /// Runs `fut` with `tenant` as the task's current tenant.
    fn scope<F: Future + Send>(
        &self,
        tenant: &Self::Tenant,
        fut: F,
    ) -> impl Future<Output = F::Output> + Send;

    /// Commits (`commit == true`) or rolls back the job's transaction.
    fn end(
        &self,
        ending: Self::Ending,
        commit: bool,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// A worker that cannot be built as configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is out of range or names the wrong role.
    #[error("{0}")]
    Invalid(String),
}

/// What a job handler returns.
pub type JobResult = Result<(), BoxError>;

/// What a job handler gets.
#[derive(Debug)]
#[non_exhaustive]
pub struct JobContext<R: JobRuntime> {
    /// The tenant the job runs as (checked: exists, active).
    pub tenant: R::Tenant,
    /// The job's tenant transaction: committed if the handler returns `Ok`.
    pub tx: R::Tx,
    /// Job id.
    pub job_id: Uuid,
    /// Handler name.
    pub kind: String,
    /// Parsed payload.
    pub payload: serde_json::Value,
    /// 1 on the first try.
    pub attempt: i32,
    /// The trace the job continues: the context of the work that enqueued it. Jobs the
    /// handler enqueues keep it too ([`TraceParent::current`]).
    pub traceparent: Option<TraceParent>,
}

type Handler<R> = Arc<dyn Fn(JobContext<R>) -> BoxFuture<'static, JobResult> + Send + Sync>;

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
pub struct Worker<R: JobRuntime> {
    /// Tenant checks, scopes and transactions.
    runtime: R,
    /// Worker-role connections for claim/finish (not tenant data).
    pool: PlainPool,
    /// Verifies envelopes.
    signer: JobSigner,
    /// Queue name.
    queue: String,
    /// Handlers by kind.
    handlers: HashMap<String, Handler<R>>,
    /// How long a claimed job is reserved before another worker may take it.
    lease: Duration,
    /// Sleep between empty polls.
    poll: Duration,
}

impl<R: JobRuntime> fmt::Debug for Worker<R> {
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

impl<R: JobRuntime> Worker<R> {
    /// A worker on queue `default`; `queue_db` connects as the worker role
    /// ([`WORKER_ROLE`]) to the database holding `tenancy.jobs`. Handlers still reach
    /// tenant data only through the transactions `runtime` opens, as the runtime role, in
    /// the job's tenant. The runtime and owner roles are refused here: the runtime role cannot claim
    /// jobs, and the owner must not be a worker's login.
    pub fn new(
        runtime: R,
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
            runtime,
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
        F: Fn(JobContext<R>) -> Fut + Send + Sync + 'static,
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
                "SELECT tenant_id, id, kind, payload, issued_at, signature, attempts, max_attempts, claim, finished,
                        traceparent
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
                // The queue's CHECK admits only valid values; anything else is dropped
                // rather than trusted.
                traceparent: row.get::<_, Option<&str>>(10).and_then(TraceParent::parse),
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
        let span = tracing::info_span!(
            "job",
            otel.kind = "consumer",
            job_id = %env.id,
            kind = %env.kind,
            tenant_id = %env.tenant,
            attempt,
            trace_id = tracing::field::Empty,
            traceparent = tracing::field::Empty,
        );
        if let Some(tp) = &env.traceparent {
            span.record("trace_id", tp.trace_id_hex());
            span.record("traceparent", tracing::field::display(tp));
            #[cfg(feature = "otel")]
            join_trace(&span, tp);
        }
        let t = self
            .runtime
            .check(env.tenant, env.id)
            .instrument(span.clone())
            .await;
        let tenant = match t {
            Ok(t) => t,
            Err(TenantUnavailable::Gone) => {
                return self
                    .failed(&job, max, "tenant is gone".into())
                    .await
                    .map(Some)
            }
            Err(TenantUnavailable::NotNow(e)) => {
                return self.failed(&job, attempt, e.to_string()).await.map(Some)
            }
        };
        let (tx, ending) = match self.runtime.open(&tenant).instrument(span.clone()).await {
            Ok(opened) => opened,
            Err(e) => return self.failed(&job, attempt, e.to_string()).await.map(Some),
        };
        let ctx = JobContext {
            tenant: tenant.clone(),
            tx,
            job_id: env.id,
            kind: env.kind.clone(),
            payload,
            attempt,
            traceparent: env.traceparent,
        };
        let run = TraceParent::scope(
            env.traceparent,
            AssertUnwindSafe(handler(ctx)).catch_unwind(),
        );
        let res = self
            .runtime
            .scope(&tenant, run)
            .instrument(span.clone())
            .await;
        let error = match res {
            Ok(Ok(())) => match self.runtime.end(ending, true).await {
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
                let _ = self.runtime.end(ending, false).await;
                e.to_string()
            }
            Err(_) => {
                let _ = self.runtime.end(ending, false).await;
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

/// With OpenTelemetry on (a `tracing-opentelemetry` layer installed and the span
/// enabled), the job's span continues the enqueuer's trace as a remote child.
#[cfg(feature = "otel")]
fn join_trace(span: &tracing::Span, tp: &TraceParent) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let flags = if tp.sampled() {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(tp.trace_id()),
        SpanId::from_bytes(tp.parent_id()),
        flags,
        true,
        TraceState::default(),
    );
    // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_jobs_span_is_a_child_of_the_enqueuers_span() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("traceparent");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("job");
            join_trace(&span, &tp);
            let cx = span.context();
            let own = cx.span().span_context().clone();
            assert_eq!(own.trace_id().to_bytes(), tp.trace_id());
            assert_ne!(own.span_id().to_bytes(), tp.parent_id());
            assert!(own.is_sampled());
        });
    }
}
