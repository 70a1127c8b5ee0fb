-- Signed checkpoints of the tenant audit chains, in the catalog (tenancy-audit's sealer
-- writes them as the owner role, which owns the catalog). Idempotent.
--
-- A checkpoint commits to a tenant's chain up to one position: its head hash, signed with
-- Ed25519 by a key the operator holds outside the database, so a chain rewritten by
-- someone who can write the tenant database no longer matches it. The runtime role reads
-- none of it. Rows are never changed or removed.
CREATE TABLE IF NOT EXISTS tenancy_catalog.audit_checkpoints (
    tenant_id  uuid NOT NULL,
    chain_pos  bigint NOT NULL CHECK (chain_pos >= 1),
    head_hash  bytea NOT NULL CHECK (octet_length(head_hash) = 32),
    signed_at  timestamptz NOT NULL,
    public_key bytea NOT NULL CHECK (octet_length(public_key) = 32),
    signature  bytea NOT NULL CHECK (octet_length(signature) = 64),
    PRIMARY KEY (tenant_id, chain_pos, public_key)
);
REVOKE ALL ON tenancy_catalog.audit_checkpoints FROM PUBLIC;
CREATE OR REPLACE FUNCTION tenancy_catalog.refuse_checkpoint_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'tenancy_catalog.audit_checkpoints is append-only (% refused)', TG_OP;
END
$fn$;
REVOKE ALL ON FUNCTION tenancy_catalog.refuse_checkpoint_change() FROM PUBLIC;
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON tenancy_catalog.audit_checkpoints;
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON tenancy_catalog.audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.refuse_checkpoint_change();
DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON tenancy_catalog.audit_checkpoints;
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON tenancy_catalog.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_catalog.refuse_checkpoint_change();
