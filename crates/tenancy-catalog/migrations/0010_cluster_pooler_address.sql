-- Where applications reach a cluster through a transaction-mode connection pooler
-- (PgBouncer), beside its direct address. The control plane (provisioning, the warm pool,
-- migrations) always uses host and port: it needs sessions of its own (advisory locks,
-- prepared statements). Tenant pools in pooler mode use the pooler address when there is
-- one, and host and port otherwise.
ALTER TABLE tenancy_catalog.clusters
    ADD COLUMN pooler_host text,
    ADD COLUMN pooler_port integer CHECK (pooler_port BETWEEN 1 AND 65535),
    ADD CONSTRAINT clusters_pooler_address_whole CHECK ((pooler_host IS NULL) = (pooler_port IS NULL));

-- The runtime role's lookup of one cluster's addresses (its result columns change, so it
-- is dropped and created again, with its comment and grants).
DROP FUNCTION tenancy_catalog.cluster_route(uuid);
CREATE FUNCTION tenancy_catalog.cluster_route(p_id uuid)
RETURNS TABLE (id uuid, name text, region text, host text, port integer, dbname text,
               pooler_host text, pooler_port integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT c.id, c.name, c.region, c.host, c.port, c.dbname, c.pooler_host, c.pooler_port
      FROM tenancy_catalog.clusters c
     WHERE c.id = p_id
$fn$;
COMMENT ON FUNCTION tenancy_catalog.cluster_route(uuid) IS 'tenancy:narrow-lookup: the address of one cluster a tenant route names';
REVOKE ALL ON FUNCTION tenancy_catalog.cluster_route(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy_catalog.cluster_route(uuid) TO tenancy_app;
