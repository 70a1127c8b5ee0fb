-- Online moves of a tenant between placements, clusters and regions.
--
-- `residency`: the regions the tenant's data may live in (NULL: its current region
-- only); a move to a region outside it is refused before anything is copied.
ALTER TABLE tenancy_catalog.tenants
    ADD COLUMN residency text[] CHECK (residency IS NULL OR cardinality(residency) BETWEEN 1 AND 64);

ALTER TABLE tenancy_catalog.workflows DROP CONSTRAINT workflows_kind_check;
ALTER TABLE tenancy_catalog.workflows ADD CONSTRAINT workflows_kind_check
    CHECK (kind IN ('provision', 'suspend', 'resume', 'change_plan', 'delete', 'purge', 'move'));

-- One row per move workflow: where from and where to (both regions), how far it got,
-- and when the old copy is dropped.
CREATE TABLE tenancy_catalog.tenant_moves (
    workflow_id    uuid PRIMARY KEY REFERENCES tenancy_catalog.workflows (id),
    tenant_id      uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    from_placement text NOT NULL CHECK (from_placement IN ('pooled', 'schema', 'dedicated')),
    from_cluster   uuid NOT NULL REFERENCES tenancy_catalog.clusters (id),
    from_region    text NOT NULL REFERENCES tenancy_catalog.regions (id),
    from_schema    text CHECK (from_schema ~ '^[a-z][a-z0-9_]{0,62}$'),
    from_database  text CHECK (from_database ~ '^[a-z][a-z0-9_]{0,62}$'),
    to_placement   text NOT NULL CHECK (to_placement IN ('pooled', 'schema', 'dedicated')),
    to_cluster     uuid NOT NULL REFERENCES tenancy_catalog.clusters (id),
    to_region      text NOT NULL REFERENCES tenancy_catalog.regions (id),
    to_schema      text CHECK (to_schema ~ '^[a-z][a-z0-9_]{0,62}$'),
    to_database    text CHECK (to_database ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- The source's snapshot the copy was taken at (`pg_snapshot` text): changes of
    -- transactions it shows are in the copy already.
    snapshot       text,
    -- Set while the move's cutover holds the tenant's writes; the router waits (bounded)
    -- for it to pass before opening a transaction. A cutover that dies leaves a time
    -- that passes, so it holds nobody for long.
    cutover_until  timestamptz,
    status         text NOT NULL DEFAULT 'copying'
                   CHECK (status IN ('copying', 'switched', 'source_dropped', 'rolled_back')),
    started_at     timestamptz NOT NULL DEFAULT now(),
    switched_at    timestamptz,
    drop_after     timestamptz,
    finished_at    timestamptz,
    FOREIGN KEY (from_cluster, from_region) REFERENCES tenancy_catalog.clusters (id, region),
    FOREIGN KEY (to_cluster, to_region) REFERENCES tenancy_catalog.clusters (id, region)
);
CREATE INDEX tenant_moves_tenant_idx ON tenancy_catalog.tenant_moves (tenant_id, started_at);
CREATE INDEX tenant_moves_drop_idx ON tenancy_catalog.tenant_moves (drop_after) WHERE status = 'switched';

-- The routes gain `cutover`: whether a move's cutover holds the tenant now.
DROP FUNCTION tenancy_catalog.tenant_route(uuid);
DROP FUNCTION tenancy_catalog.tenant_route_by_slug(text);

CREATE FUNCTION tenancy_catalog.tenant_route(p_id uuid)
RETURNS TABLE (id uuid, slug text, region text, placement text, cluster_id uuid, state text,
               schema_name text, database_name text, cutover boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.slug, t.region, t.placement, t.cluster_id, t.state, t.schema_name, t.database_name,
           EXISTS (SELECT 1 FROM tenancy_catalog.tenant_moves m
                    WHERE m.tenant_id = t.id AND m.status = 'copying' AND m.cutover_until > clock_timestamp())
      FROM tenancy_catalog.tenants t
     WHERE t.id = p_id
$fn$;

CREATE FUNCTION tenancy_catalog.tenant_route_by_slug(p_slug text)
RETURNS TABLE (id uuid, slug text, region text, placement text, cluster_id uuid, state text,
               schema_name text, database_name text, cutover boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.slug, t.region, t.placement, t.cluster_id, t.state, t.schema_name, t.database_name,
           EXISTS (SELECT 1 FROM tenancy_catalog.tenant_moves m
                    WHERE m.tenant_id = t.id AND m.status = 'copying' AND m.cutover_until > clock_timestamp())
      FROM tenancy_catalog.tenants t
     WHERE t.slug = p_slug
     ORDER BY (t.state <> 'deleted' OR t.failure IS NULL) DESC, t.created_at DESC
     LIMIT 1
$fn$;

COMMENT ON FUNCTION tenancy_catalog.tenant_route(uuid) IS 'tenancy:narrow-lookup: the route of one tenant by the id the caller holds';
COMMENT ON FUNCTION tenancy_catalog.tenant_route_by_slug(text) IS 'tenancy:narrow-lookup: the route of one tenant by the slug the caller holds';
REVOKE ALL ON FUNCTION tenancy_catalog.tenant_route(uuid), tenancy_catalog.tenant_route_by_slug(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy_catalog.tenant_route(uuid), tenancy_catalog.tenant_route_by_slug(text) TO tenancy_app;
