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
-- What the sealer reads: events not sealed yet, in insertion order.
CREATE INDEX IF NOT EXISTS audit_events_unsealed_idx ON tenancy.audit_events (seq)
    WHERE chain_pos IS NULL;
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
