-- tenancy_context 1.0: tenancy's signed tenant context as C functions (tenancy_context.c).
-- Same names, signatures, errors (28000) and messages as the PL/pgSQL implementation in
-- tenancy-sdk's sql/runtime.sql, so policies, column defaults and the SDK do not care
-- which one a database has. Created by tenancy's bootstrap when the server has this
-- extension installed, or by hand: CREATE EXTENSION tenancy_context (after the bootstrap).
\echo Use "CREATE EXTENSION tenancy_context" to load this file. \quit

-- The functions belong to tenancy_owner, in the schema tenancy that tenancy's bootstrap
-- made for that role. The schema's owner is checked because CREATE EXTENSION creates a
-- missing schema for the role running it: SECURITY DEFINER functions owned by
-- tenancy_owner never go into a schema another role controls.
DO $check$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_owner')
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'tenancy_app') THEN
        RAISE EXCEPTION 'tenancy_context needs the roles tenancy_owner and tenancy_app'
            USING HINT = 'Run tenancy''s bootstrap first (tenancy migrate), then CREATE EXTENSION tenancy_context.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
                    WHERE n.nspname OPERATOR(pg_catalog.=) 'tenancy' AND r.rolname OPERATOR(pg_catalog.=) 'tenancy_owner') THEN
        RAISE EXCEPTION 'tenancy_context goes into the schema tenancy owned by tenancy_owner, and this database has no such schema'
            USING HINT = 'Run tenancy''s bootstrap on this database first (tenancy migrate), or DROP SCHEMA tenancy if CREATE EXTENSION just made it, then CREATE EXTENSION tenancy_context.';
    END IF;
END
$check$;

-- SECURITY DEFINER (owner tenancy_owner) only to read the HMAC pads in
-- tenancy_private.context_keys, which the runtime role cannot read.
CREATE FUNCTION tenancy.enter(token text) RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'MODULE_PATHNAME', 'tenancy_enter';
CREATE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenancy_current_tenant_id';
-- tenancy.enter that also makes the transaction read-only: the opening of the SDK's
-- implicit read-only transactions (native only).
CREATE FUNCTION tenancy.enter_read_only(token text) RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'MODULE_PATHNAME', 'tenancy_enter_read_only';

ALTER FUNCTION tenancy.enter(text) OWNER TO tenancy_owner;
ALTER FUNCTION tenancy.current_tenant_id() OWNER TO tenancy_owner;
ALTER FUNCTION tenancy.enter_read_only(text) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.enter(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.current_tenant_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.enter_read_only(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter(text) TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.current_tenant_id() TO tenancy_app;
GRANT EXECUTE ON FUNCTION tenancy.enter_read_only(text) TO tenancy_app;
-- What `tenancy check` recognises the context functions by.
COMMENT ON FUNCTION tenancy.enter(text) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.enter_read_only(text) IS 'tenancy:context-enter';
COMMENT ON FUNCTION tenancy.current_tenant_id() IS 'tenancy:context-read';
