-- API keys managed by the runtime role, for the tenant of its current context only, so an
-- application issues, lists and revokes its tenants' keys without any owner connection to
-- the catalog. The application opens a transaction of the tenant on the catalog database
-- (the signed tenant context is installed there as in every tenancy database) and calls
-- the functions below. Each one acts on the context's tenant
-- (`tenancy.current_tenant_id()`; no context, no key), never on a tenant an argument
-- names; none returns a hash; the runtime role still reads no catalog table.
-- Runs as the owner role.

-- Issues a key of the context's tenant: the caller generates the key and passes its id and
-- the SHA-256 of the whole key (the key itself never reaches the database), its name, its
-- scopes, and the permissions the caller holds: scopes beyond them are refused, so a key
-- never allows more than its creator may do.
CREATE FUNCTION tenancy_catalog.issue_tenant_api_key(p_key_id text, p_secret_hash bytea, p_name text,
                                                     p_scopes text[], p_permissions text[])
RETURNS TABLE (key_id text, name text, scopes text[], created_at timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
#variable_conflict use_column
DECLARE
    v_tenant uuid := tenancy.current_tenant_id();
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'tenancy_catalog.issue_tenant_api_key: no tenant context'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_scopes IS NULL OR p_permissions IS NULL OR array_position(p_scopes, NULL) IS NOT NULL
       OR NOT (p_scopes <@ p_permissions) THEN
        RAISE EXCEPTION 'tenancy_catalog.issue_tenant_api_key: every scope must be a permission of the caller'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    INSERT INTO tenancy_catalog.api_keys AS k (key_id, tenant_id, name, secret_hash, scopes)
    VALUES (p_key_id, v_tenant, p_name, p_secret_hash, p_scopes)
    RETURNING k.key_id, k.name, k.scopes, k.created_at;
END
$fn$;

-- A key as the runtime role sees it: no hash.
CREATE TYPE tenancy_catalog.tenant_api_key AS (key_id text, name text, scopes text[],
    created_at timestamptz, revoked_at timestamptz, last_used_at timestamptz);

-- One page of the context tenant's keys, newest first (revoked ones too), after the key
-- created at p_after_created with id p_after_key when given; at most p_limit (1 to 1000).
CREATE FUNCTION tenancy_catalog.tenant_api_keys(p_after_created timestamptz, p_after_key text,
                                                p_limit integer)
RETURNS SETOF tenancy_catalog.tenant_api_key
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN QUERY
    SELECT k.key_id, k.name, k.scopes, k.created_at, k.revoked_at, k.last_used_at
      FROM tenancy_catalog.api_keys k
     WHERE k.tenant_id = (SELECT tenancy.current_tenant_id())
       AND (p_after_created IS NULL OR k.created_at < p_after_created
            OR (k.created_at = p_after_created AND k.key_id > p_after_key))
     ORDER BY k.created_at DESC, k.key_id
     LIMIT LEAST(GREATEST(p_limit, 0), 1000);
END
$fn$;

-- Revokes a key of the context's tenant (a revoked key keeps its first revocation time);
-- no row for a key of another tenant or none.
CREATE FUNCTION tenancy_catalog.revoke_tenant_api_key(p_key_id text)
RETURNS SETOF tenancy_catalog.tenant_api_key
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RETURN QUERY
    UPDATE tenancy_catalog.api_keys k SET revoked_at = coalesce(k.revoked_at, now())
     WHERE k.key_id = p_key_id AND k.tenant_id = (SELECT tenancy.current_tenant_id())
    RETURNING k.key_id, k.name, k.scopes, k.created_at, k.revoked_at, k.last_used_at;
END
$fn$;

REVOKE ALL ON FUNCTION tenancy_catalog.issue_tenant_api_key(text, bytea, text, text[], text[]),
    tenancy_catalog.tenant_api_keys(timestamptz, text, integer),
    tenancy_catalog.revoke_tenant_api_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy_catalog.issue_tenant_api_key(text, bytea, text, text[], text[]),
    tenancy_catalog.tenant_api_keys(timestamptz, text, integer),
    tenancy_catalog.revoke_tenant_api_key(text) TO tenancy_app;
