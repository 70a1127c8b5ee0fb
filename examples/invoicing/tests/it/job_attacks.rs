//! Attacks on the job queue by injected SQL as the runtime role (`tenancy_app`), with no
//! tenant context and with tenant A's context, on both implementations of the signed
//! context; and by an owner who puts a finished job back in the queue. Workers connect as
//! the worker role and run jobs with the public SDK, as the example app does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tenancy_axum::{Source, Tenancy};
use tenancy_core::{TenantId, TenantState};
use tenancy_jobs::{
    self as jobs, JobContext, JobOutcome, JobSigner, TraceParent, Worker, WORKER_ROLE,
};
use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{self, ContextImpl, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions, TenantPool};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::support::{catalog_with_tenants, connect, fresh_db, key};

const QUEUE: &str = "attacks";
const KIND: &str = "count";

/// A tenant database with the job queue, two active tenants, the runtime role's pool and
/// a worker factory whose handler counts its runs.
struct Queue {
    imp: ContextImpl,
    db: TestDb,
    a: TenantId,
    b: TenantId,
    pool: TenantPool,
    signer: JobSigner,
    tenancy: Tenancy,
    runs: Arc<AtomicUsize>,
}

/// One queue per implementation of the signed context this build has (PL/pgSQL always;
/// native when the library was built, which `fresh_db` installs when it can).
async fn queues() -> Vec<Queue> {
    let native = fresh_db().await;
    let su = native.connect_superuser().await.expect("superuser");
    let imp = bootstrap::context_impl(&su)
        .await
        .expect("impl")
        .expect("installed");
    assert!(
        imp == ContextImpl::Native
            || tenancy_pg::native_context_library(native.cluster.major_version()).is_none(),
        "the native library was built but the database did not get the native context"
    );
    let mut out = vec![queue(imp, native).await];
    if imp == ContextImpl::Native {
        let db = fresh_db().await;
        let owner = connect(db.config_as(OWNER_ROLE)).await;
        bootstrap::install_runtime_with(&owner, &key(), Some(ContextImpl::PlPgSql))
            .await
            .expect("install the PL/pgSQL context");
        out.push(queue(ContextImpl::PlPgSql, db).await);
    }
    out
}

async fn queue(imp: ContextImpl, db: TestDb) -> Queue {
    let (owner, ids) = catalog_with_tenants(
        &db,
        &[
            ("acme", Some(TenantState::Active)),
            ("globex", Some(TenantState::Active)),
        ],
    )
    .await;
    assert_eq!(
        bootstrap::context_impl(&owner).await.expect("impl"),
        Some(imp)
    );
    let router = Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )
    .expect("router");
    let tenancy = Tenancy::builder(router, db.config_as(RUNTIME_ROLE))
        .source(Source::api_key())
        .build()
        .expect("tenancy");
    let pool =
        TenantPool::new(db.config_as(RUNTIME_ROLE), key(), Default::default()).expect("pool");
    Queue {
        imp,
        db,
        a: ids[0],
        b: ids[1],
        pool,
        signer: JobSigner::new([7; 32]),
        tenancy,
        runs: Arc::new(AtomicUsize::new(0)),
    }
}

/// A job row as the superuser sees it.
#[derive(Debug, PartialEq)]
struct JobRow {
    state: String,
    attempts: i32,
    locked_until_far: bool,
}

impl Queue {
    /// A worker on the test queue, connected as the worker role.
    fn worker(&self) -> Worker<tenancy_axum::Tenancy> {
        let runs = self.runs.clone();
        Worker::new(
            self.tenancy.clone(),
            self.db.config_as(WORKER_ROLE),
            self.signer.clone(),
        )
        .expect("worker")
        .queue(QUEUE)
        .register(KIND, move |_ctx| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }

    /// Enqueues a job for `tenant` in one of its transactions, as the app does.
    async fn enqueue(&self, tenant: TenantId, payload: serde_json::Value) -> Uuid {
        let mut tx = self.pool.begin(tenant).await.expect("begin");
        let id = jobs::enqueue(&mut tx, &self.signer, QUEUE, KIND, &payload)
            .await
            .expect("enqueue");
        tx.commit().await.expect("commit");
        id
    }

    async fn row(&self, id: Uuid) -> JobRow {
        let su = self.db.connect_superuser().await.expect("superuser");
        let r = su
            .query_one(
                "SELECT state, attempts, coalesce(locked_until > now() + interval '2 hours', false)
                   FROM tenancy.jobs WHERE id = $1",
                &[&id],
            )
            .await
            .expect("job row");
        JobRow {
            state: r.get(0),
            attempts: r.get(1),
            locked_until_far: r.get(2),
        }
    }

    /// A runtime-role connection with no tenant context (injected SQL outside any
    /// transaction the SDK opened).
    async fn no_context(&self) -> Client {
        connect(self.db.config_as(RUNTIME_ROLE)).await
    }

    /// Runs `sql` as the runtime role inside a transaction of tenant A (injected SQL in
    /// one of A's requests); the transaction is rolled back.
    async fn as_a(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tenancy_sdk::Error> {
        let mut tx = self.pool.begin(self.a).await.expect("begin as A");
        let r = tx.query(sql, params).await;
        let _ = tx.rollback().await;
        r
    }
}

/// The statements injected SQL would use against the queue: claim with a short and with a
/// decades-long lease, finish (fail, re-queue) with the current and the earlier signature.
const CLAIMS: &[&str] = &[
    "SELECT * FROM tenancy.claim_job('attacks', 60)",
    "SELECT * FROM tenancy.claim_job('attacks', 2147483647)",
];

fn finishes(tenant: TenantId, job: Uuid) -> Vec<String> {
    let (t, j) = (tenant.as_uuid(), job);
    vec![
        format!("SELECT tenancy.finish_job('{t}', '{j}', 'failed', 'injected', 0)"),
        format!("SELECT tenancy.finish_job('{t}', '{j}', 'retry', NULL, 0)"),
        format!(
            "SELECT tenancy.finish_job('{t}', '{j}', gen_random_uuid(), 'failed', 'injected', 0)"
        ),
        format!("SELECT tenancy.finish_job('{t}', '{j}', gen_random_uuid(), 'retry', NULL, 0)"),
    ]
}

/// Refused for lack of privilege, or because the earlier signature no longer exists.
fn refused(code: Option<&SqlState>) -> bool {
    denied(code) || code == Some(&SqlState::UNDEFINED_FUNCTION)
}

/// Refused for lack of privilege.
fn denied(code: Option<&SqlState>) -> bool {
    code == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}

impl Queue {
    /// Runs `sql` as injected SQL twice, with no context (on `anon`) and in tenant A's
    /// transaction, and asserts both are refused with a SQLSTATE that `ok` accepts.
    async fn assert_refused(
        &self,
        anon: &Client,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        ok: fn(Option<&SqlState>) -> bool,
    ) {
        let imp = self.imp;
        let err = anon
            .query(sql, params)
            .await
            .expect_err("refused without context");
        assert!(ok(err.code()), "{imp:?} {sql} without context: {err:?}");
        let err = self.as_a(sql, params).await.expect_err("refused as A");
        assert!(ok(err.sqlstate()), "{imp:?} {sql} as A: {err:?}");
    }
}

#[tokio::test]
async fn runtime_role_cannot_claim_or_read_another_tenants_job() {
    for q in queues().await {
        let imp = q.imp;
        let secret = "b-payload-secret";
        let job_b = q.enqueue(q.b, json!({ "secret": secret })).await;
        let anon = q.no_context().await;
        for sql in CLAIMS {
            q.assert_refused(&anon, sql, &[], denied).await;
        }
        for sql in [
            "SELECT tenant_id, payload FROM tenancy.jobs",
            "SELECT payload FROM tenancy.jobs WHERE id = $1",
        ] {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if sql.contains("$1") {
                vec![&job_b]
            } else {
                vec![]
            };
            q.assert_refused(&anon, sql, &params, denied).await;
        }
        // B's job is untouched and runs normally, once.
        assert_eq!(
            q.row(job_b).await,
            JobRow {
                state: "queued".into(),
                attempts: 0,
                locked_until_far: false
            },
            "{imp:?}"
        );
        let out = q.worker().run_once().await.expect("worker");
        assert!(
            matches!(out, Some(JobOutcome::Done { id, .. }) if id == job_b),
            "{imp:?} {out:?}"
        );
        assert_eq!(q.runs.load(Ordering::SeqCst), 1, "{imp:?}");
    }
}

#[tokio::test]
async fn runtime_role_cannot_fail_or_park_another_tenants_job() {
    for q in queues().await {
        let imp = q.imp;
        let job_b = q.enqueue(q.b, json!({ "n": 1 })).await;
        let anon = q.no_context().await;
        for sql in finishes(q.b, job_b) {
            q.assert_refused(&anon, &sql, &[], refused).await;
        }
        for sql in [
            "UPDATE tenancy.jobs SET state = 'failed'",
            "UPDATE tenancy.jobs SET locked_until = now() + interval '50 years', state = 'running'",
            "DELETE FROM tenancy.jobs",
        ] {
            q.assert_refused(&anon, sql, &[], denied).await;
        }
        assert_eq!(
            q.row(job_b).await,
            JobRow {
                state: "queued".into(),
                attempts: 0,
                locked_until_far: false
            },
            "{imp:?}: B's job was not failed, parked or claimed"
        );
    }
}

#[tokio::test]
async fn runtime_role_cannot_requeue_a_finished_job() {
    for q in queues().await {
        let imp = q.imp;
        let job_a = q.enqueue(q.a, json!({ "n": 1 })).await;
        let worker = q.worker();
        let out = worker.run_once().await.expect("worker");
        assert!(
            matches!(out, Some(JobOutcome::Done { .. })),
            "{imp:?} {out:?}"
        );
        // A's own injected SQL puts its finished job back in the queue...
        let requeue = "UPDATE tenancy.jobs SET state = 'queued', run_at = now(), finished_at = NULL WHERE id = $1";
        let err = q
            .as_a(requeue, &[&job_a])
            .await
            .expect_err("re-queue as A refused");
        assert_eq!(
            err.sqlstate(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{imp:?}: {err:?}"
        );
        // ...or, with no context, through the finish function.
        let anon = q.no_context().await;
        for sql in finishes(q.a, job_a) {
            let err = anon.query(&sql, &[]).await.expect_err("re-queue refused");
            assert!(refused(err.code()), "{imp:?} {sql}: {err:?}");
        }
        assert_eq!(q.row(job_a).await.state, "done", "{imp:?}");
        assert!(
            worker.run_once().await.expect("worker").is_none(),
            "{imp:?}: nothing to run"
        );
        assert_eq!(q.runs.load(Ordering::SeqCst), 1, "{imp:?}: ran once");
    }
}

#[tokio::test]
async fn requeued_finished_job_is_not_run_a_second_time() {
    for q in queues().await {
        let imp = q.imp;
        let job_a = q.enqueue(q.a, json!({ "n": 1 })).await;
        let worker = q.worker();
        let out = worker.run_once().await.expect("worker");
        assert!(
            matches!(out, Some(JobOutcome::Done { .. })),
            "{imp:?} {out:?}"
        );
        assert_eq!(q.runs.load(Ordering::SeqCst), 1, "{imp:?}");
        // A compromised operator (the owner role) puts the finished row back in the queue,
        // its signed envelope unchanged.
        let owner = connect(q.db.config_as(OWNER_ROLE)).await;
        let n = owner
            .execute(
                "UPDATE tenancy.jobs SET state = 'queued', run_at = now(), finished_at = NULL,
                        attempts = 0, locked_until = NULL WHERE id = $1",
                &[&job_a],
            )
            .await
            .expect("owner re-queues");
        assert_eq!(n, 1);
        let out = worker.run_once().await.expect("worker");
        assert!(
            matches!(&out, Some(JobOutcome::Rejected { id, reason }) if *id == job_a && reason.contains("already finished")),
            "{imp:?} {out:?}"
        );
        assert_eq!(
            q.runs.load(Ordering::SeqCst),
            1,
            "{imp:?}: the handler ran again"
        );
        assert_eq!(q.row(job_a).await.state, "rejected", "{imp:?}");
    }
}

#[tokio::test]
async fn over_long_lease_is_refused() {
    for q in queues().await {
        let imp = q.imp;
        let job_b = q.enqueue(q.b, json!({ "n": 1 })).await;
        // Injected SQL as the runtime role cannot claim at all (see above); the worker role
        // itself is refused a lease longer than an hour, with an error that names it.
        let anon = q.no_context().await;
        let err = anon
            .query(
                "SELECT * FROM tenancy.claim_job('attacks', 2000000000)",
                &[],
            )
            .await
            .expect_err("runtime role refused");
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{imp:?} {err:?}"
        );
        let worker_conn = connect(q.db.config_as(WORKER_ROLE)).await;
        for lease in [2_000_000_000_i32, 3601, 0, -5] {
            let err = worker_conn
                .query("SELECT * FROM tenancy.claim_job('attacks', $1)", &[&lease])
                .await
                .expect_err("over-long lease refused");
            assert_eq!(
                err.code(),
                Some(&SqlState::INVALID_PARAMETER_VALUE),
                "{imp:?} {lease}: {err:?}"
            );
            let msg = err.as_db_error().map(|e| e.message()).unwrap_or_default();
            assert!(msg.contains("lease_seconds"), "{imp:?}: {msg}");
        }
        assert_eq!(
            q.row(job_b).await,
            JobRow {
                state: "queued".into(),
                attempts: 0,
                locked_until_far: false
            },
            "{imp:?}"
        );
        // The SDK refuses such a lease when the worker is built.
        let err = q
            .worker()
            .lease(Duration::from_secs(50 * 365 * 86_400))
            .expect_err("over-long lease refused");
        assert!(err.to_string().contains("lease"), "{err}");
        assert!(q.worker().lease(Duration::from_secs(30)).is_ok());
        // And a worker does not log in as the runtime role.
        let err = Worker::new(
            q.tenancy.clone(),
            q.db.config_as(RUNTIME_ROLE),
            q.signer.clone(),
        )
        .expect_err("runtime role refused as a worker login");
        assert!(err.to_string().contains(WORKER_ROLE), "{err}");
    }
}

#[tokio::test]
async fn stale_claim_cannot_finish_a_reclaimed_job_and_attempts_are_bounded() {
    for q in queues().await {
        let imp = q.imp;
        let job = q.enqueue(q.a, json!({ "n": 1 })).await;
        let owner = connect(q.db.config_as(OWNER_ROLE)).await;
        owner
            .execute(
                "UPDATE tenancy.jobs SET max_attempts = 2 WHERE id = $1",
                &[&job],
            )
            .await
            .expect("two attempts");
        let w = connect(q.db.config_as(WORKER_ROLE)).await;
        let claim = |lease: i32| {
            let w = &w;
            async move {
                w.query_opt(
                    "SELECT claim FROM tenancy.claim_job('attacks', $1)",
                    &[&lease],
                )
                .await
                .expect("claim")
                .map(|r| r.get::<_, Uuid>(0))
            }
        };
        let first = claim(1).await.expect("first claim");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = claim(1).await.expect("re-claimed after the lease expired");
        assert_ne!(first, second);
        let tenant = q.a.as_uuid();
        let finish = |c: Uuid| {
            let w = &w;
            async move {
                w.query_one(
                    "SELECT tenancy.finish_job($1, $2, $3, 'done', NULL, 0)",
                    &[&tenant, &job, &c],
                )
                .await
                .expect("finish")
                .get::<_, bool>(0)
            }
        };
        assert!(
            !finish(first).await,
            "{imp:?}: the stale claim finished the job"
        );
        assert_eq!(q.row(job).await.state, "running", "{imp:?}");
        // The second claim was the last allowed: when its lease runs out too, the job
        // fails for good instead of being claimed a third time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(claim(1).await.is_none(), "{imp:?}: claimed a third time");
        let r = q.row(job).await;
        assert_eq!((r.state.as_str(), r.attempts), ("failed", 2), "{imp:?}");
        assert!(!finish(second).await, "{imp:?}");
    }
}

/// What a handler saw of its job's trace: the context's, and the task's current one.
type Seen = (Option<TraceParent>, Option<TraceParent>);

const TRACE_A: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_B: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

#[tokio::test]
async fn a_job_is_claimed_with_the_trace_context_it_was_enqueued_with() {
    for q in queues().await {
        let imp = q.imp;
        let a = TraceParent::parse(TRACE_A).expect("trace a");
        let b = TraceParent::parse(TRACE_B).expect("trace b");
        // In a task with a trace context (a request's), enqueue keeps it.
        let in_request = TraceParent::scope(Some(a), q.enqueue(q.a, json!({ "n": 1 }))).await;
        // Outside one, it is given explicitly, or there is none.
        let explicit = {
            let mut tx = q.pool.begin(q.b).await.expect("begin");
            let id =
                jobs::enqueue_traced(&mut tx, &q.signer, QUEUE, KIND, &json!({ "n": 2 }), Some(b))
                    .await
                    .expect("enqueue");
            tx.commit().await.expect("commit");
            id
        };
        let untraced = q.enqueue(q.a, json!({ "n": 3 })).await;
        let seen: Arc<Mutex<HashMap<Uuid, Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        let worker = Worker::new(
            q.tenancy.clone(),
            q.db.config_as(WORKER_ROLE),
            q.signer.clone(),
        )
        .expect("worker")
        .queue(QUEUE)
        .register(KIND, move |ctx: JobContext<Tenancy>| {
            let record = Arc::clone(&record);
            async move {
                // The handler sees the job's trace as its own (jobs it enqueues keep it).
                let current = TraceParent::current();
                record
                    .lock()
                    .expect("lock")
                    .insert(ctx.job_id, (ctx.traceparent, current));
                Ok(())
            }
        });
        for _ in 0..3 {
            let out = worker.run_once().await.expect("worker");
            assert!(
                matches!(out, Some(JobOutcome::Done { .. })),
                "{imp:?} {out:?}"
            );
        }
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen[&in_request], (Some(a), Some(a)), "{imp:?}");
        assert_eq!(seen[&explicit], (Some(b), Some(b)), "{imp:?}");
        assert_eq!(seen[&untraced], (None, None), "{imp:?}");
        assert_eq!(
            seen[&in_request].0.map(|t| t.trace_id_hex()).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}

/// A job row of `tenant` inserted as injected SQL would: the columns an envelope has and
/// `traceparent` (`$1`).
fn forged_insert(tenant: TenantId) -> String {
    format!(
        "INSERT INTO tenancy.jobs (tenant_id, id, queue, kind, payload, issued_at, traceparent)
         VALUES ('{}', gen_random_uuid(), 'attacks', 'count', '{{}}', 0, $1)",
        tenant.as_uuid()
    )
}

#[tokio::test]
async fn runtime_role_cannot_set_another_tenants_trace_context_nor_a_forged_one() {
    for q in queues().await {
        let imp = q.imp;
        let job_b = q.enqueue(q.b, json!({ "n": 1 })).await;
        let anon = q.no_context().await;
        let trace = TRACE_A.to_owned();
        // No role but the owner's functions changes a job, its trace context included.
        let update = "UPDATE tenancy.jobs SET traceparent = $1 WHERE id = $2";
        q.assert_refused(&anon, update, &[&trace, &job_b], denied)
            .await;
        // A job for another tenant, with a trace context, is refused by RLS.
        let err = q
            .as_a(&forged_insert(q.b), &[&trace])
            .await
            .expect_err("a job for B inserted as A");
        assert!(denied(err.sqlstate()), "{imp:?}: {err:?}");
        // In its own tenant, only the W3C form is stored.
        for forged in [
            "garbage",
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
        ] {
            let forged = forged.to_owned();
            let err = q
                .as_a(&forged_insert(q.a), &[&forged])
                .await
                .expect_err("a forged traceparent stored");
            assert_eq!(
                err.sqlstate(),
                Some(&SqlState::CHECK_VIOLATION),
                "{imp:?} {forged:?}: {err:?}"
            );
        }
        q.as_a(&forged_insert(q.a), &[&trace])
            .await
            .expect("a valid traceparent in its own tenant");
        let su = q.db.connect_superuser().await.expect("superuser");
        let stored: Option<String> = su
            .query_one(
                "SELECT traceparent FROM tenancy.jobs WHERE id = $1",
                &[&job_b],
            )
            .await
            .expect("row")
            .get(0);
        assert_eq!(stored, None, "{imp:?}: B's job has no trace context");
    }
}

#[tokio::test]
async fn installing_the_queue_upgrades_one_without_trace_context_in_place() {
    let q = queue_on_fresh_db().await;
    let owner = connect(q.db.config_as(OWNER_ROLE)).await;
    let old = q.enqueue(q.a, json!({ "n": 1 })).await;
    // The queue as it was before it carried trace context: no column, and a claim
    // function without it (created as the owner, so PUBLIC may execute it).
    owner
        .batch_execute(
            "ALTER TABLE tenancy.jobs DROP COLUMN traceparent;
             DROP FUNCTION tenancy.claim_job(text, integer);
             CREATE FUNCTION tenancy.claim_job(p_queue text, p_lease_seconds integer)
             RETURNS TABLE (tenant_id uuid, id uuid, kind text, payload text, issued_at bigint,
                            signature text, attempts integer, max_attempts integer, claim uuid,
                            finished text)
             LANGUAGE sql AS $$ SELECT NULL::uuid, NULL::uuid, NULL, NULL, NULL::bigint, NULL,
                                       NULL::integer, NULL::integer, NULL::uuid, NULL WHERE false $$;",
        )
        .await
        .expect("the earlier queue");
    jobs::install(&owner).await.expect("upgrade");
    jobs::install(&owner)
        .await
        .expect("a second install changes nothing");
    let grants = owner
        .query_one(
            "SELECT has_function_privilege('tenancy_worker', 'tenancy.claim_job(text, integer)', 'EXECUTE'),
                    has_function_privilege('tenancy_app', 'tenancy.claim_job(text, integer)', 'EXECUTE'),
                    EXISTS (SELECT 1 FROM pg_proc p, aclexplode(p.proacl) a
                             WHERE p.oid = 'tenancy.claim_job(text, integer)'::regprocedure
                               AND a.grantee = 0)",
            &[],
        )
        .await
        .expect("grants");
    let (worker, app, public): (bool, bool, bool) = (grants.get(0), grants.get(1), grants.get(2));
    assert_eq!((worker, app, public), (true, false, false));
    // The old job runs, without trace context; a new one keeps its own.
    let a = TraceParent::parse(TRACE_A).expect("trace");
    let new = TraceParent::scope(Some(a), q.enqueue(q.a, json!({ "n": 2 }))).await;
    let worker = q.worker();
    for _ in 0..2 {
        let out = worker.run_once().await.expect("worker");
        assert!(matches!(out, Some(JobOutcome::Done { .. })), "{out:?}");
    }
    let su = q.db.connect_superuser().await.expect("superuser");
    for (id, want) in [(old, None), (new, Some(TRACE_A.to_owned()))] {
        let got: Option<String> = su
            .query_one("SELECT traceparent FROM tenancy.jobs WHERE id = $1", &[&id])
            .await
            .expect("row")
            .get(0);
        assert_eq!(got, want);
    }
}

/// One queue on a fresh database with whichever context it got.
async fn queue_on_fresh_db() -> Queue {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    let imp = bootstrap::context_impl(&su)
        .await
        .expect("impl")
        .expect("installed");
    queue(imp, db).await
}
