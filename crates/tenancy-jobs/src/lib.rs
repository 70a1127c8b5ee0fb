//! Tenant-scoped background jobs on a PostgreSQL queue (`tenancy.jobs`,
//! `FOR UPDATE SKIP LOCKED`).
//!
//! Main parts:
//! - [`enqueue`]: a job is enqueued inside a tenant transaction, so it commits or rolls
//!   back with the request's writes, and the table's RLS policy refuses a job for any
//!   tenant but the transaction's own. The job keeps the W3C trace context of the work
//!   that enqueued it ([`TraceParent::current`], or one given to [`enqueue_traced`]).
//! - [`JobSigner`]: the envelope carries the tenant, signed with an HMAC over tenant, job
//!   id, kind, issue time and payload. A worker refuses (state `rejected`) a job whose
//!   signature is missing or does not verify, so a row edited in the queue cannot make a
//!   job run as another tenant. The trace context is not signed: it only says which trace
//!   the job's span joins, never whom it runs for.
//! - [`Worker`]: connects as the worker role ([`WORKER_ROLE`], `tenancy_worker`), which
//!   may only claim and finish jobs through the queue's two functions; claims one job at
//!   a time for a bounded lease ([`MAX_LEASE`]), and runs its handler through a
//!   [`JobRuntime`] (tenancy-axum's `Tenancy` is one): the tenant is checked (exists,
//!   active), the handler runs in a `job` span with `tenant_id` and the job's
//!   `trace_id`, in the tenant's scope, with a transaction that is committed when the
//!   handler returns `Ok` and rolled back otherwise. Attempts are bounded
//!   (`max_attempts`, at most 25).
//! - A finished job never runs again: its signed id is recorded once in
//!   `tenancy.job_ledger` when it finishes, and a worker refuses (state `rejected`) an
//!   envelope that has a record, even when the row was put back in the queue. Each claim
//!   gets a fresh claim id that finishing must present, so a worker whose lease expired
//!   cannot finish a job another worker holds.
//! - Delivery is at least once: a crash after the commit and before the job is marked
//!   done runs it again after its lease expires, so handlers must be idempotent.
//! - [`JOBS_SQL`] / [`install`]: the queue's table, ledger, functions and grants
//!   (idempotent; upgrades an existing queue in place).
//!
//! What it does not do: it knows nothing about HTTP (the request layer hands it the trace
//! context through [`TraceParent::scope`]), never resolves tenants from requests, never
//! reaches tenant data except through the transaction its [`JobRuntime`] opens, and
//! never lets the runtime role read, claim, finish or re-queue a job.

mod envelope;
mod pool;
mod trace;
mod worker;

use std::time::Duration;

pub use envelope::{enqueue, enqueue_traced, JobEnvelope, JobSigner};
pub use tenancy_sdk::bootstrap::WORKER_ROLE;
pub use trace::{InvalidTraceParent, TraceParent};
pub use worker::{
    BoxError, ConfigError, JobContext, JobOutcome, JobResult, JobRuntime, TenantUnavailable,
    Worker, WorkerError,
};

/// The SQL that creates the queue table and its functions; run it as the owner role
/// (after the tenancy runtime is installed and the cluster bootstrap created the worker
/// role), e.g. with [`install`].
pub const JOBS_SQL: &str = include_str!("../sql/jobs.sql");

/// The longest lease a worker may take on a job (the queue refuses longer ones): a job
/// whose worker died is claimable again at most this long after it was claimed.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// Installs (or upgrades) the queue. `owner` must be connected as the owner role.
pub async fn install(owner: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    owner.batch_execute(JOBS_SQL).await
}
