-- tenancy audit log (tenancy-audit): one append-only table of events in the `tenancy`
-- schema, run as the owner role after the tenancy runtime is installed. Idempotent.
--
-- - tenancy_app (runtime role) may INSERT events, only for the tenant of its current
--   TenantTx (row-level security) and only the columns an event has (never the
--   transaction id, the sequence or the chain fields), and SELECT its own tenant's events.
--   It has no UPDATE, DELETE or TRUNCATE.
-- - tenancy_owner runs the sealer: it sees every tenant's events and fills in the chain
--   fields of events not sealed yet. The trigger below refuses any other change, deletion
--   and truncation; the owner could drop it (it owns the table), which the hash chain and
--   the signed checkpoints make detectable.
--
-- Where the database has the tenancy_context extension from version 1.3, the runtime role
-- records an event with tenancy.audit_append (tenancy_audit::record does), which inserts
-- the row this INSERT would insert, with the same checks (its column privileges, the
-- isolation policy's tenant, NOT NULL, the rules of the CHECK below) and the same errors,
-- without the planner and the executor. It inserts only into a table of the shape this
-- file makes and refuses any other: a trigger on INSERT, another CHECK, a column or an
-- index it does not know (so a change here that it should follow makes it refuse, never
-- skip something); the INSERT stays valid for every role.
--
-- Inserting takes no lock shared by a tenant's transactions (the sequence is not
-- transactional, `pg_current_xact_id()` reads the transaction's own id), so concurrent
-- audited transactions of one tenant do not wait for each other; the chain is made later,
-- in insertion order, by the sealer.
--
-- The columns are those of the control plane's log (tenancy-catalog's
-- `sql/audit_event_columns.sql`, put in place of the marker when this file is installed).
CREATE TABLE IF NOT EXISTS tenancy.audit_events (
{{audit_event_columns}}
);
-- What an event may hold, in one CHECK: the rules of the catalog fragment's column checks
-- (an actor kind and an outcome of the fixed sets; an action of a letter, then letters,
-- digits and `_ . : / -`, at most 128 bytes; subject and target at most 1024 bytes, key
-- id, request id and trace id at most 256; chain fields all set or all empty, a position
-- from 1, 32-byte hashes), as one function of the row: this PL/pgSQL one, or its C twin
-- where the database has it (see the CHECK below). PostgreSQL reads every
-- CHECK constraint's expression back from its stored text and plans it at each execution
-- of an INSERT, so the fragment's twelve checks cost more than the rest of the insert
-- together; a call on the whole row is a short expression, and the function's own
-- expressions are planned once per session and set up once per transaction. The chain
-- rules are set up only for a row that has a chain field (the sealer's UPDATE), never
-- for the runtime role's inserts (it cannot set them). Not STRICT; NULL-safe (`IS NOT
-- FALSE`: an empty optional field passes, as it passes a column check). Every name is
-- schema-qualified, so the caller's search path changes nothing.
CREATE OR REPLACE FUNCTION tenancy.audit_event_valid(e tenancy.audit_events)
RETURNS boolean LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    IF e.chain_pos IS NOT NULL OR e.prev_hash IS NOT NULL OR e.hash IS NOT NULL THEN
        IF NOT (e.chain_pos IS NOT NULL AND e.prev_hash IS NOT NULL AND e.hash IS NOT NULL
                AND e.chain_pos OPERATOR(pg_catalog.>=) 1
                AND pg_catalog.octet_length(e.prev_hash) OPERATOR(pg_catalog.=) 32
                AND pg_catalog.octet_length(e.hash) OPERATOR(pg_catalog.=) 32) THEN
            RETURN false;
        END IF;
    END IF;
    RETURN (e.actor_kind OPERATOR(pg_catalog.=) ANY ('{user,api_key,admin,worker,system}'::pg_catalog.text[])
       AND e.outcome OPERATOR(pg_catalog.=) ANY ('{success,failure,denied}'::pg_catalog.text[])
       AND e.action OPERATOR(pg_catalog.~) '^[A-Za-z][A-Za-z0-9_.:/-]*$'
       AND pg_catalog.octet_length(e.action) OPERATOR(pg_catalog.<=) 128
       AND GREATEST(pg_catalog.octet_length(e.actor_subject), pg_catalog.octet_length(e.target))
           OPERATOR(pg_catalog.<=) 1024
       AND GREATEST(pg_catalog.octet_length(e.actor_key_id), pg_catalog.octet_length(e.request_id),
                    pg_catalog.octet_length(e.trace_id)) OPERATOR(pg_catalog.<=) 256) IS NOT FALSE;
END
$fn$;
REVOKE ALL ON FUNCTION tenancy.audit_event_valid(tenancy.audit_events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_event_valid(tenancy.audit_events) TO tenancy_app;
-- The fragment's checks give way to that one, and its unique (tenant_id, chain_pos) to the
-- same uniqueness over sealed events only: an unsealed event has no position, and a row
-- in that index would be one more index insertion per event recorded.
CREATE UNIQUE INDEX IF NOT EXISTS audit_events_chain_pos_key ON tenancy.audit_events (tenant_id, chain_pos)
    WHERE chain_pos IS NOT NULL;
-- Which function the CHECK calls: tenancy.audit_event_valid_native, the same rules in C,
-- where the database has it (the tenancy_context extension from version 1.2, or the
-- bootstrap's native.sql), else the PL/pgSQL function above. The C function costs a few
-- byte comparisons per row; the PL/pgSQL one sets up its interpreter and expression
-- plans again in every transaction, the largest part of what recording an event cost
-- the server. Both stay: the PL/pgSQL one is the reference the C one is tested against,
-- and a database without the library keeps it.
--
-- Once per change, in one statement: the fragment's checks on a table created before the
-- table had its own CHECK, or the other function's CHECK on a table installed before the
-- database had (or after it lost) the C function. The new CHECK is checked against the
-- existing events once, then; an install that finds the right CHECK changes nothing.
DO $swap$
DECLARE
    native regprocedure := (SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
                             WHERE p.oid = to_regprocedure('tenancy.audit_event_valid_native(record)')
                               AND l.lanname = 'c');
    wanted regprocedure := coalesce(native, 'tenancy.audit_event_valid(tenancy.audit_events)'::regprocedure);
    valid oid := (SELECT oid FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'tenancy.audit_events'::regclass AND conname = 'audit_events_valid');
BEGIN
    IF valid IS NULL THEN
        ALTER TABLE tenancy.audit_events
            DROP CONSTRAINT IF EXISTS audit_events_actor_kind_check,
            DROP CONSTRAINT IF EXISTS audit_events_actor_subject_check,
            DROP CONSTRAINT IF EXISTS audit_events_actor_key_id_check,
            DROP CONSTRAINT IF EXISTS audit_events_action_check,
            DROP CONSTRAINT IF EXISTS audit_events_target_check,
            DROP CONSTRAINT IF EXISTS audit_events_request_id_check,
            DROP CONSTRAINT IF EXISTS audit_events_trace_id_check,
            DROP CONSTRAINT IF EXISTS audit_events_outcome_check,
            DROP CONSTRAINT IF EXISTS audit_events_chain_pos_check,
            DROP CONSTRAINT IF EXISTS audit_events_prev_hash_check,
            DROP CONSTRAINT IF EXISTS audit_events_hash_check,
            DROP CONSTRAINT IF EXISTS audit_events_check,
            DROP CONSTRAINT IF EXISTS audit_events_tenant_id_chain_pos_key;
    ELSIF EXISTS (SELECT 1 FROM pg_catalog.pg_depend
                   WHERE classid = 'pg_catalog.pg_constraint'::regclass AND objid = valid
                     AND refclassid = 'pg_catalog.pg_proc'::regclass AND refobjid = wanted) THEN
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE tenancy.audit_events %s ADD CONSTRAINT audit_events_valid CHECK (%s(audit_events))',
                   CASE WHEN valid IS NULL THEN '' ELSE 'DROP CONSTRAINT audit_events_valid,' END,
                   CASE WHEN native IS NULL THEN 'tenancy.audit_event_valid'
                        ELSE 'tenancy.audit_event_valid_native' END);
END
$swap$;
-- What the sealer reads: events not sealed yet, in insertion order.
CREATE INDEX IF NOT EXISTS audit_events_unsealed_idx ON tenancy.audit_events (seq)
    WHERE chain_pos IS NULL;
-- No primary key: the fragment's (tenant_id, seq) goes, once. That pair is unique by
-- construction: seq comes from the identity sequence, which the runtime role cannot
-- override (it has no INSERT on seq); what verification relies on, one event per chain
-- position, is the unique index above. The sealer updates an unsealed event by
-- (tenant_id, seq) through the unsealed index, and refuses a batch whose updates do not
-- match its events one for one; a tenant's events are read through the two partial
-- indexes (sealed by position, unsealed by seq). The key's index was one more index
-- insertion per event recorded, about 12k of the 152k backend instructions an event cost
-- (scripts/audit-cost.sh). Without a key, logical replication identifies a row the sealer
-- updates or a purge deletes by all its columns (REPLICA IDENTITY FULL; nothing changes
-- for inserts).
DO $key$
DECLARE
    pkey name := (SELECT conname FROM pg_catalog.pg_constraint
                   WHERE conrelid = 'tenancy.audit_events'::regclass AND contype = 'p');
BEGIN
    IF pkey IS NOT NULL THEN
        EXECUTE format('ALTER TABLE tenancy.audit_events DROP CONSTRAINT %I, REPLICA IDENTITY FULL', pkey);
    END IF;
END
$key$;
SELECT tenancy.make_tenant_table('tenancy.audit_events');
-- make_tenant_table grants SELECT, INSERT, UPDATE and DELETE; an audit log only grows.
REVOKE ALL ON tenancy.audit_events FROM tenancy_app;
GRANT SELECT ON tenancy.audit_events TO tenancy_app;
GRANT INSERT (tenant_id, occurred_at, actor_kind, actor_subject, actor_key_id, action, target,
              before, after, request_id, trace_id, client_addr, outcome)
    ON tenancy.audit_events TO tenancy_app;
DROP POLICY IF EXISTS tenancy_audit_owner ON tenancy.audit_events;
CREATE POLICY tenancy_audit_owner ON tenancy.audit_events AS PERMISSIVE FOR ALL TO tenancy_owner
    USING (true) WITH CHECK (true);

-- Append-only: an event's fields never change; the chain fields are set once, by the
-- sealer, on an event that has none; nothing is truncated, and only a purge past a
-- signed anchor deletes.
CREATE OR REPLACE FUNCTION tenancy.audit_events_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- OLD and NEW exist only in the row-level UPDATE case (TRUNCATE is statement-level).
    IF TG_OP = 'UPDATE' THEN
        IF OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL
           AND (OLD.tenant_id, OLD.seq, OLD.xid, OLD.occurred_at, OLD.actor_kind, OLD.actor_subject,
                OLD.actor_key_id, OLD.action, OLD.target, OLD.before, OLD.after, OLD.request_id,
                OLD.trace_id, OLD.client_addr, OLD.outcome)
               IS NOT DISTINCT FROM
               (NEW.tenant_id, NEW.seq, NEW.xid, NEW.occurred_at, NEW.actor_kind, NEW.actor_subject,
                NEW.actor_key_id, NEW.action, NEW.target, NEW.before, NEW.after, NEW.request_id,
                NEW.trace_id, NEW.client_addr, NEW.outcome) THEN
            RETURN NEW;
        END IF;
    END IF;
    -- A purge (tenancy-audit's `purge`) removes sealed events up to a position whose
    -- signed anchor it stored first, naming tenant and position in a transaction-local
    -- setting; nothing else is ever deleted.
    IF TG_OP = 'DELETE' AND OLD.chain_pos IS NOT NULL
       AND split_part(current_setting('tenancy.audit_purge', true), ':', 1) = OLD.tenant_id::text
       AND OLD.chain_pos <= NULLIF(split_part(current_setting('tenancy.audit_purge', true), ':', 2), '')::bigint THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'tenancy.audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
REVOKE ALL ON FUNCTION tenancy.audit_events_guard() FROM PUBLIC;
DROP TRIGGER IF EXISTS audit_events_append_only ON tenancy.audit_events;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON tenancy.audit_events
    FOR EACH ROW EXECUTE FUNCTION tenancy.audit_events_guard();
DROP TRIGGER IF EXISTS audit_events_no_truncate ON tenancy.audit_events;
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON tenancy.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.audit_events_guard();
