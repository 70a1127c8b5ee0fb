-- The catalog's side of the audit logs (tenancy-audit). Idempotent and upgrades in
-- place, because tenancy-audit also runs this file (`install_catalog`) on catalogs
-- where an earlier version of the checkpoint table was installed by hand.
--
-- - audit_checkpoints: signed checkpoints of every chain. A checkpoint commits to one
--   chain up to one position: its head hash, signed with Ed25519 by a key kept outside
--   the database, so a chain rewritten by someone who can write the database no longer
--   matches it. `log` names the log: `tenant` (an application's events in a tenant
--   database) or `control` (the control plane's own log below).
-- - audit_anchors: the signed checkpoint at the boundary of each purge (events at or
--   before it were removed after their retention); verification starts the remaining
--   chain from it.
-- - audit_log: the control plane's own log (its changes to the catalog: tenants, their
--   lifecycle, legal holds, configuration, purges of tenant logs). One chain per tenant
--   the change concerns, and one for platform-wide changes (tenant id 00000000-…, the
--   nil UUID), sealed and checkpointed like tenant logs with their own hash domain.
--   Only the owner role reaches it: the runtime role reads and writes no catalog table.
-- Rows of all three are never changed (the chain fields of audit_log are filled once by
-- the sealer) and never removed.
CREATE TABLE IF NOT EXISTS tenancy_catalog.audit_checkpoints (
    tenant_id  uuid NOT NULL,
    chain_pos  bigint NOT NULL CHECK (chain_pos >= 1),
    head_hash  bytea NOT NULL CHECK (octet_length(head_hash) = 32),
    signed_at  timestamptz NOT NULL,
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    signature  bytea NOT NULL CHECK (octet_length(signature) = 64),
    PRIMARY KEY (tenant_id, chain_pos, public_key)
);
ALTER TABLE tenancy_catalog.audit_checkpoints
    ADD COLUMN IF NOT EXISTS log text NOT NULL DEFAULT 'tenant' CHECK (log IN ('tenant', 'control'));
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                    WHERE i.indrelid = 'tenancy_catalog.audit_checkpoints'::regclass AND i.indisprimary AND a.attname = 'log') THEN
        ALTER TABLE tenancy_catalog.audit_checkpoints DROP CONSTRAINT audit_checkpoints_pkey;
        ALTER TABLE tenancy_catalog.audit_checkpoints ADD PRIMARY KEY (log, tenant_id, chain_pos, public_key);
    END IF;
END
$do$;
REVOKE ALL ON tenancy_catalog.audit_checkpoints FROM PUBLIC;

-- An anchor is a signed checkpoint (the same columns), one per purge boundary.
DO $do$
BEGIN
    IF to_regclass('tenancy_catalog.audit_anchors') IS NULL THEN
        CREATE TABLE tenancy_catalog.audit_anchors
            (LIKE tenancy_catalog.audit_checkpoints INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE tenancy_catalog.audit_anchors ADD PRIMARY KEY (log, tenant_id, chain_pos);
    END IF;
END
$do$;
REVOKE ALL ON tenancy_catalog.audit_anchors FROM PUBLIC;

-- The columns, their limits and the chain fields are those of a tenant log (the shared
-- column list `sql/audit_event_columns.sql`, which the build puts in place of the marker
-- below and tenancy-audit uses for the tenant table), so one hash function and one sealer
-- serve both. What the control plane records in them:
-- - tenant_id: the tenant the change concerns; the nil UUID for platform-wide changes
--   (one chain per tenant concerned, and the platform's);
-- - who: `admin` with `admin:<token principal>` (API) or `cli:<user>` (command line),
--   `worker` for the sealer's purges, `system` for signups and billing events;
-- - what: `tenant.<workflow kind>`, `tenant.legal_hold.set`, `config.<entity>.<action>`,
--   `audit.purge`, …, on `tenant:<id>` or `<entity>:<key>`;
-- - before and after: digests (`{"sha256": …}`) of the state, never the values;
-- - where: the request's id, trace and client address (none for workers);
-- - the chain fields, filled by the sealer under the control log's own hash domain.
CREATE TABLE IF NOT EXISTS tenancy_catalog.audit_log (
{{audit_event_columns}}
);
CREATE INDEX IF NOT EXISTS audit_log_unsealed_idx ON tenancy_catalog.audit_log (seq)
    WHERE chain_pos IS NULL;
REVOKE ALL ON tenancy_catalog.audit_log FROM PUBLIC;

CREATE OR REPLACE FUNCTION tenancy_catalog.refuse_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION '%.% is append-only (% refused)', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
REVOKE ALL ON FUNCTION tenancy_catalog.refuse_checkpoint_change() FROM PUBLIC;
-- Checkpoints and anchors: no UPDATE, DELETE or TRUNCATE.
DO $do$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_checkpoints', 'audit_anchors'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON tenancy_catalog.%I', t || '_append_only', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON tenancy_catalog.%I '
                       'FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.refuse_checkpoint_change()', t || '_append_only', t);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON tenancy_catalog.%I', t || '_no_truncate', t);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON tenancy_catalog.%I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION tenancy_catalog.refuse_checkpoint_change()', t || '_no_truncate', t);
    END LOOP;
END
$do$;

-- The control log: the same guard as tenant logs (the sealer may fill empty chain fields
-- of an unchanged event; nothing else changes, nothing is deleted or truncated).
CREATE OR REPLACE FUNCTION tenancy_catalog.audit_log_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    -- Compared as jsonb without the chain fields: every other column must be unchanged.
    IF TG_OP = 'UPDATE' AND OLD.chain_pos IS NULL AND NEW.chain_pos IS NOT NULL
       AND to_jsonb(OLD) - ARRAY['chain_pos', 'prev_hash', 'hash', 'sealed_at']
           = to_jsonb(NEW) - ARRAY['chain_pos', 'prev_hash', 'hash', 'sealed_at'] THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'tenancy_catalog.audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
REVOKE ALL ON FUNCTION tenancy_catalog.audit_log_guard() FROM PUBLIC;
DROP TRIGGER IF EXISTS audit_log_append_only ON tenancy_catalog.audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON tenancy_catalog.audit_log
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.audit_log_guard();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON tenancy_catalog.audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON tenancy_catalog.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_catalog.audit_log_guard();

-- Changes that workflow steps apply (a tenant's state and plan, written with a
-- tenant_events row in the step's transaction) enter the control log from that row, in
-- the same transaction, whichever worker or command applied them. The requests that
-- queue them are recorded by the control plane itself, with who and where.
CREATE OR REPLACE FUNCTION tenancy_catalog.audit_tenant_event() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    INSERT INTO tenancy_catalog.audit_log (tenant_id, actor_kind, actor_subject, action, target, before, after, outcome)
    VALUES (NEW.tenant_id,
            CASE split_part(NEW.actor, ':', 1) WHEN 'admin' THEN 'admin' WHEN 'worker' THEN 'worker' ELSE 'system' END,
            left(NEW.actor, 1024),
            CASE NEW.kind WHEN 'state_changed' THEN 'tenant.state.' || NEW.to_state ELSE 'tenant.plan.changed' END,
            'tenant:' || NEW.tenant_id,
            CASE WHEN NEW.from_state IS NOT NULL THEN jsonb_build_object('state', NEW.from_state) END,
            CASE NEW.kind WHEN 'state_changed' THEN jsonb_build_object('state', NEW.to_state, 'detail', NEW.detail)
                          ELSE NEW.detail END,
            'success');
    RETURN NULL;
END
$fn$;
REVOKE ALL ON FUNCTION tenancy_catalog.audit_tenant_event() FROM PUBLIC;
DROP TRIGGER IF EXISTS tenant_events_audit ON tenancy_catalog.tenant_events;
CREATE TRIGGER tenant_events_audit AFTER INSERT ON tenancy_catalog.tenant_events
    FOR EACH ROW WHEN (NEW.kind IN ('state_changed', 'plan_changed'))
    EXECUTE FUNCTION tenancy_catalog.audit_tenant_event();
