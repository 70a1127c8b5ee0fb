-- The runtime role reads no catalog table: it looks up exactly one tenant by a key it
-- already holds (id, slug, verified custom domain, API key id and hash) and the cluster
-- that tenant's route names, through the SECURITY DEFINER functions below, and can list
-- nothing. Each function returns at most one row and only the columns the request layer
-- and the SDK router need to resolve and open a tenant (never its name, plan, billing
-- link or anything of another tenant).
--
-- The configuration client builds a snapshot of every tenant's configuration, which the
-- runtime role must not read; it connects as `tenancy_config_reader` (created by the
-- bootstrap with the other roles), which may read the configuration tables and the tenant
-- columns the snapshot targets on, and nothing else.
-- Runs as the owner role.

DO $check$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_config_reader') THEN
        RAISE EXCEPTION 'role tenancy_config_reader does not exist'
            USING HINT = 'run the cluster bootstrap (tenancy bootstrap, or tenancy_sdk::bootstrap::bootstrap_cluster) before migrating the catalog';
    END IF;
END
$check$;

-- Every table of the catalog, whatever an earlier migration or an operator granted
-- (column privileges go with the table's). USAGE on the schema stays: the runtime role
-- calls the functions below.
REVOKE ALL ON ALL TABLES IN SCHEMA tenancy_catalog FROM tenancy_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tenancy_catalog FROM tenancy_app;

-- What the request layer and the router need to resolve and open one tenant.
CREATE FUNCTION tenancy_catalog.tenant_route(p_id uuid)
RETURNS TABLE (id uuid, slug text, region text, placement text, cluster_id uuid, state text,
               schema_name text, database_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.slug, t.region, t.placement, t.cluster_id, t.state, t.schema_name, t.database_name
      FROM tenancy_catalog.tenants t
     WHERE t.id = p_id
$fn$;

-- The same, by slug (a path prefix or subdomain names a tenant by its slug).
CREATE FUNCTION tenancy_catalog.tenant_route_by_slug(p_slug text)
RETURNS TABLE (id uuid, slug text, region text, placement text, cluster_id uuid, state text,
               schema_name text, database_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.slug, t.region, t.placement, t.cluster_id, t.state, t.schema_name, t.database_name
      FROM tenancy_catalog.tenants t
     WHERE t.slug = p_slug
$fn$;

-- The tenant holding this host name verified (pending and disabled domains name nobody).
CREATE FUNCTION tenancy_catalog.tenant_for_domain(p_hostname text)
RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT d.tenant_id
      FROM tenancy_catalog.config_domains d
     WHERE d.hostname = p_hostname AND d.state = 'verified'
$fn$;

-- Where a cluster is, by the id a tenant's route names (the router's connection target).
CREATE FUNCTION tenancy_catalog.cluster_route(p_id uuid)
RETURNS TABLE (id uuid, name text, region text, host text, port integer, dbname text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT c.id, c.name, c.region, c.host, c.port, c.dbname
      FROM tenancy_catalog.clusters c
     WHERE c.id = p_id
$fn$;

COMMENT ON FUNCTION tenancy_catalog.tenant_route(uuid) IS 'tenancy:narrow-lookup: the route of one tenant by the id the caller holds';
COMMENT ON FUNCTION tenancy_catalog.tenant_route_by_slug(text) IS 'tenancy:narrow-lookup: the route of one tenant by the slug the caller holds';
COMMENT ON FUNCTION tenancy_catalog.tenant_for_domain(text) IS 'tenancy:narrow-lookup: the tenant of one verified custom domain';
COMMENT ON FUNCTION tenancy_catalog.cluster_route(uuid) IS 'tenancy:narrow-lookup: the address of one cluster a tenant route names';
COMMENT ON FUNCTION tenancy_catalog.authenticate_api_key(text, bytea) IS 'tenancy:narrow-lookup: the grant of one API key by its id and hash';

REVOKE ALL ON FUNCTION tenancy_catalog.tenant_route(uuid), tenancy_catalog.tenant_route_by_slug(text),
    tenancy_catalog.tenant_for_domain(text), tenancy_catalog.cluster_route(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy_catalog.tenant_route(uuid), tenancy_catalog.tenant_route_by_slug(text),
    tenancy_catalog.tenant_for_domain(text), tenancy_catalog.cluster_route(uuid) TO tenancy_app;

-- The configuration client's snapshot: every configuration table, the change log's
-- version only (not who changed what), and the tenant columns targeting uses.
GRANT USAGE ON SCHEMA tenancy_catalog TO tenancy_config_reader;
GRANT SELECT ON tenancy_catalog.config_entitlements, tenancy_catalog.config_plans,
    tenancy_catalog.config_regions, tenancy_catalog.config_flags, tenancy_catalog.config_setting_defs,
    tenancy_catalog.config_tenant_attributes, tenancy_catalog.config_tenant_settings,
    tenancy_catalog.config_overrides, tenancy_catalog.config_branding, tenancy_catalog.config_domains
    TO tenancy_config_reader;
GRANT SELECT (version) ON tenancy_catalog.config_changes TO tenancy_config_reader;
GRANT SELECT (id, plan, region, placement, state, created_at) ON tenancy_catalog.tenants
    TO tenancy_config_reader;
