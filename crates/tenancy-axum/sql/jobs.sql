-- tenancy job queue (tenancy-axum): one table in the `tenancy` schema, run as the owner
-- role after the runtime schema is installed. Idempotent.
--
-- The table is a tenant table: the runtime role sees and inserts only jobs of the tenant
-- of its current TenantTx (so enqueueing in a request's transaction is atomic with the
-- request's writes, and injected SQL cannot enqueue for another tenant). Workers claim
-- and finish jobs of every tenant through the two SECURITY DEFINER functions below, which
-- run as the owner under a policy that only the owner role gets.
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
CREATE INDEX IF NOT EXISTS jobs_ready_idx ON tenancy.jobs (queue, run_at) WHERE state IN ('queued', 'running');
SELECT tenancy.make_tenant_table('tenancy.jobs');
DROP POLICY IF EXISTS tenancy_jobs_worker ON tenancy.jobs;
CREATE POLICY tenancy_jobs_worker ON tenancy.jobs AS PERMISSIVE FOR ALL TO tenancy_owner
    USING (true) WITH CHECK (true);

CREATE OR REPLACE FUNCTION tenancy.claim_job(p_queue text, p_lease_seconds integer)
RETURNS TABLE (tenant_id uuid, id uuid, kind text, payload text, issued_at bigint,
               signature text, attempts integer, max_attempts integer)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    UPDATE tenancy.jobs j
       SET state = 'running', attempts = j.attempts + 1,
           locked_until = now() + make_interval(secs => p_lease_seconds)
     WHERE (j.tenant_id, j.id) = (
           SELECT q.tenant_id, q.id FROM tenancy.jobs q
            WHERE q.queue = p_queue
              AND ((q.state = 'queued' AND q.run_at <= now())
                   OR (q.state = 'running' AND q.locked_until < now()))
            ORDER BY q.run_at, q.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
    RETURNING j.tenant_id, j.id, j.kind, j.payload, j.issued_at, j.signature, j.attempts, j.max_attempts
$fn$;

CREATE OR REPLACE FUNCTION tenancy.finish_job(p_tenant uuid, p_id uuid, p_state text,
                                              p_error text, p_retry_seconds integer)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    UPDATE tenancy.jobs
       SET state = CASE WHEN p_state = 'retry' THEN 'queued' ELSE p_state END,
           run_at = CASE WHEN p_state = 'retry' THEN now() + make_interval(secs => p_retry_seconds) ELSE run_at END,
           locked_until = NULL,
           last_error = p_error,
           finished_at = CASE WHEN p_state = 'retry' THEN NULL ELSE now() END
     WHERE tenant_id = p_tenant AND id = p_id
$fn$;

REVOKE ALL ON FUNCTION tenancy.claim_job(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.finish_job(uuid, uuid, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.claim_job(text, integer) TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.finish_job(uuid, uuid, text, text, integer) TO tenancy_app;
