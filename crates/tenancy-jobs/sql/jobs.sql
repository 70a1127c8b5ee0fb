-- tenancy job queue (tenancy-jobs): two tables in the `tenancy` schema, run as the owner
-- role after the runtime schema is installed. Idempotent.
--
-- Three roles touch the queue, each through one door:
-- - tenancy_app (runtime role) may only INSERT jobs, only for the tenant of its current
--   TenantTx (row-level security), and only the columns an envelope has: enqueueing in a
--   request's transaction is atomic with the request's writes, and injected SQL can neither
--   enqueue for another tenant nor read, claim, finish or re-queue any job, its own
--   tenant's included (what a tenant learns of its jobs is what their handlers write to
--   its own tables).
-- - tenancy_worker (worker role, created by tenancy's cluster bootstrap) owns nothing and
--   has no table privilege: it claims and finishes jobs of every tenant only through the
--   two SECURITY DEFINER functions below, which are granted to it alone.
-- - tenancy_owner runs those functions; its policies let it see every job.
--
-- A job that finished (done, failed for good, or rejected) is recorded once in
-- tenancy.job_ledger, keyed by its signed id. claim_job reports that record, and the
-- worker refuses to run an envelope that has one, so a finished job never runs again, even
-- when its row is put back in the queue. Leases are bounded (1 to 3600 seconds), retries
-- are bounded (at most max_attempts claims, at most 25), and only the claim that holds a
-- job may finish it.
--
-- A job may carry the W3C trace context (traceparent, version 00) of the request or job
-- that enqueued it; claim_job returns it so the worker's span continues that trace. It is
-- not part of the signed envelope (it names a trace, never a tenant), and the CHECK below
-- admits only the W3C form with non-zero ids.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_worker') THEN
        RAISE EXCEPTION 'tenancy job queue: the worker role tenancy_worker does not exist'
            USING HINT = 'Run tenancy''s cluster bootstrap (tenancy_sdk::bootstrap::bootstrap_cluster, sql/bootstrap.sql) as a superuser first; it creates the role.';
    END IF;
END
$roles$;

CREATE TABLE IF NOT EXISTS tenancy.jobs (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    queue        text NOT NULL DEFAULT 'default' CHECK (queue ~ '^[a-z][a-z0-9_-]{0,62}$'),
    kind         text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.:-]{0,62}$'),
    -- JSON text exactly as signed (jsonb would reorder it and break the signature).
    payload      text NOT NULL,
    issued_at    bigint NOT NULL,
    -- HMAC over tenant, id, kind, issued_at and payload; NULL means unsigned (refused).
    signature    text,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'done', 'failed', 'rejected')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- The claim that holds a running job: a fresh id per claim, which finish_job must present,
-- so a worker whose lease expired cannot finish the job another worker has since claimed.
ALTER TABLE tenancy.jobs ADD COLUMN IF NOT EXISTS claim uuid;
DO $bounds$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'tenancy.jobs'::regclass AND conname = 'jobs_max_attempts_bounded') THEN
        ALTER TABLE tenancy.jobs ADD CONSTRAINT jobs_max_attempts_bounded CHECK (max_attempts BETWEEN 1 AND 25);
    END IF;
END
$bounds$;
-- The W3C trace context of the work that enqueued the job (NULL: none).
ALTER TABLE tenancy.jobs ADD COLUMN IF NOT EXISTS traceparent text;
DO $traceparent$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint
                    WHERE conrelid = 'tenancy.jobs'::regclass AND conname = 'jobs_traceparent_w3c') THEN
        ALTER TABLE tenancy.jobs ADD CONSTRAINT jobs_traceparent_w3c CHECK (
            traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
            AND substr(traceparent, 4, 32) <> repeat('0', 32)
            AND substr(traceparent, 37, 16) <> repeat('0', 16));
    END IF;
END
$traceparent$;
CREATE INDEX IF NOT EXISTS jobs_ready_idx ON tenancy.jobs (queue, run_at) WHERE state IN ('queued', 'running');
SELECT tenancy.make_tenant_table('tenancy.jobs');
-- make_tenant_table grants the runtime role SELECT, INSERT, UPDATE and DELETE; on the
-- queue it only enqueues, and only the columns of an envelope (state, attempts, leases
-- and run times keep their defaults).
REVOKE ALL ON tenancy.jobs FROM tenancy_app;
GRANT INSERT (tenant_id, id, queue, kind, payload, issued_at, signature, traceparent) ON tenancy.jobs TO tenancy_app;
REVOKE ALL ON tenancy.jobs FROM tenancy_worker;
DROP POLICY IF EXISTS tenancy_jobs_worker ON tenancy.jobs;
CREATE POLICY tenancy_jobs_worker ON tenancy.jobs AS PERMISSIVE FOR ALL TO tenancy_owner
    USING (true) WITH CHECK (true);

-- One row per finished job, written by finish_job (and by claim_job for a job whose last
-- lease expired). The owner's policies allow reading and adding rows, never changing or
-- removing them; no other role has any privilege on it.
CREATE TABLE IF NOT EXISTS tenancy.job_ledger (
    tenant_id   uuid NOT NULL,
    job_id      uuid NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('done', 'failed', 'rejected')),
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, job_id)
);
ALTER TABLE tenancy.job_ledger ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
REVOKE ALL ON tenancy.job_ledger FROM PUBLIC, tenancy_app, tenancy_worker;
DROP POLICY IF EXISTS tenancy_job_ledger_read ON tenancy.job_ledger;
CREATE POLICY tenancy_job_ledger_read ON tenancy.job_ledger AS PERMISSIVE FOR SELECT TO tenancy_owner
    USING (true);
DROP POLICY IF EXISTS tenancy_job_ledger_add ON tenancy.job_ledger;
CREATE POLICY tenancy_job_ledger_add ON tenancy.job_ledger AS PERMISSIVE FOR INSERT TO tenancy_owner
    WITH CHECK (true);

-- Earlier versions: claim_job without a claim id or without the trace context (its
-- return type changes, so it is dropped and created again, then granted to the worker
-- role alone below), finish_job without a claim id.
DO $upgrade$
BEGIN
    IF to_regprocedure('tenancy.claim_job(text, integer)') IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc
                        WHERE oid = to_regprocedure('tenancy.claim_job(text, integer)')
                          AND 'claim' = ANY (proargnames)
                          AND 'traceparent' = ANY (proargnames)) THEN
        DROP FUNCTION tenancy.claim_job(text, integer);
    END IF;
END
$upgrade$;
DROP FUNCTION IF EXISTS tenancy.finish_job(uuid, uuid, text, text, integer);

-- Claims the next ready job of p_queue for p_lease_seconds (1 to 3600). Returns the
-- envelope, the attempt number, the claim id finish_job needs, `finished`: the outcome
-- recorded in the ledger when the job already finished once (the worker then refuses it),
-- and the job's trace context.
CREATE OR REPLACE FUNCTION tenancy.claim_job(p_queue text, p_lease_seconds integer)
RETURNS TABLE (tenant_id uuid, id uuid, kind text, payload text, issued_at bigint,
               signature text, attempts integer, max_attempts integer, claim uuid,
               finished text, traceparent text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
BEGIN
    IF p_lease_seconds IS NULL OR p_lease_seconds < 1 OR p_lease_seconds > 3600 THEN
        RAISE EXCEPTION 'tenancy.claim_job: lease_seconds must be between 1 and 3600, not %', p_lease_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A job whose lease expired on its last allowed attempt (its worker died or hung each
    -- time) fails for good instead of being claimed again.
    WITH gone AS (
        UPDATE tenancy.jobs j
           SET state = 'failed', locked_until = NULL, claim = NULL, finished_at = now(),
               last_error = 'the lease expired on the last allowed attempt'
         WHERE j.queue = p_queue AND j.state = 'running' AND j.locked_until < now()
           AND j.attempts >= j.max_attempts
        RETURNING j.tenant_id, j.id)
    INSERT INTO tenancy.job_ledger (tenant_id, job_id, outcome)
    SELECT g.tenant_id, g.id, 'failed' FROM gone g
    ON CONFLICT DO NOTHING;
    RETURN QUERY
    UPDATE tenancy.jobs j
       SET state = 'running', attempts = j.attempts + 1, claim = gen_random_uuid(),
           locked_until = now() + make_interval(secs => p_lease_seconds)
     WHERE (j.tenant_id, j.id) = (
           SELECT q.tenant_id, q.id FROM tenancy.jobs q
            WHERE q.queue = p_queue AND q.attempts < q.max_attempts
              AND ((q.state = 'queued' AND q.run_at <= now())
                   OR (q.state = 'running' AND q.locked_until < now()))
            ORDER BY q.run_at, q.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
    RETURNING j.tenant_id, j.id, j.kind, j.payload, j.issued_at, j.signature, j.attempts,
              j.max_attempts, j.claim,
              (SELECT l.outcome FROM tenancy.job_ledger l
                WHERE l.tenant_id = j.tenant_id AND l.job_id = j.id),
              j.traceparent;
END
$fn$;

-- Finishes the job p_tenant/p_id held by claim p_claim: 'done', 'failed' or 'rejected'
-- (recorded in the ledger), or 'retry' in p_retry_seconds (0 to 86400; a job out of
-- attempts fails instead). Returns false when that claim no longer holds the job.
CREATE OR REPLACE FUNCTION tenancy.finish_job(p_tenant uuid, p_id uuid, p_claim uuid, p_state text,
                                              p_error text, p_retry_seconds integer)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_state text;
BEGIN
    IF p_state IS NULL OR p_state NOT IN ('done', 'failed', 'rejected', 'retry') THEN
        RAISE EXCEPTION 'tenancy.finish_job: state must be done, failed, rejected or retry, not %', p_state
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_state = 'retry' AND (p_retry_seconds IS NULL OR p_retry_seconds < 0 OR p_retry_seconds > 86400) THEN
        RAISE EXCEPTION 'tenancy.finish_job: retry_seconds must be between 0 and 86400, not %', p_retry_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE tenancy.jobs j
       SET state = CASE WHEN p_state <> 'retry' THEN p_state
                        WHEN j.attempts < j.max_attempts THEN 'queued'
                        ELSE 'failed' END,
           run_at = CASE WHEN p_state = 'retry' THEN now() + make_interval(secs => p_retry_seconds) ELSE j.run_at END,
           locked_until = NULL,
           claim = NULL,
           last_error = left(p_error, 2000),
           finished_at = CASE WHEN p_state = 'retry' AND j.attempts < j.max_attempts THEN NULL ELSE now() END
     WHERE j.tenant_id = p_tenant AND j.id = p_id AND j.state = 'running' AND j.claim = p_claim
    RETURNING j.state INTO v_state;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_state <> 'queued' THEN
        INSERT INTO tenancy.job_ledger (tenant_id, job_id, outcome) VALUES (p_tenant, p_id, v_state)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN true;
END
$fn$;

REVOKE ALL ON FUNCTION tenancy.claim_job(text, integer) FROM PUBLIC, tenancy_app;
REVOKE ALL ON FUNCTION tenancy.finish_job(uuid, uuid, uuid, text, text, integer) FROM PUBLIC, tenancy_app;
GRANT USAGE ON SCHEMA tenancy TO tenancy_worker;
GRANT EXECUTE ON FUNCTION tenancy.claim_job(text, integer) TO tenancy_worker;
GRANT EXECUTE ON FUNCTION tenancy.finish_job(uuid, uuid, uuid, text, text, integer) TO tenancy_worker;
