-- A provisioning that fails for good ends its tenant `deleted` with `failure` set: that
-- tenant never served, so its slug is free for the customer's next attempt. Every other
-- tenant keeps its slug, deleted ones included (links, subdomains and tokens that named a
-- tenant that once served must not reach a newcomer).
ALTER TABLE tenancy_catalog.tenants DROP CONSTRAINT tenants_slug_key;
CREATE UNIQUE INDEX tenants_slug_key ON tenancy_catalog.tenants (slug)
    WHERE state <> 'deleted' OR failure IS NULL;
-- Lookups and paging by slug name no state: they need an index of every row (the unique
-- one above is partial, so a plain `slug = $1` could not use it).
CREATE INDEX tenants_slug_idx ON tenancy_catalog.tenants (slug);

-- By slug, the tenant holding it (a tenant whose provisioning failed only when no other
-- has the slug).
CREATE OR REPLACE FUNCTION tenancy_catalog.tenant_route_by_slug(p_slug text)
RETURNS TABLE (id uuid, slug text, region text, placement text, cluster_id uuid, state text,
               schema_name text, database_name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.slug, t.region, t.placement, t.cluster_id, t.state, t.schema_name, t.database_name
      FROM tenancy_catalog.tenants t
     WHERE t.slug = p_slug
     ORDER BY (t.state <> 'deleted' OR t.failure IS NULL) DESC, t.created_at DESC
     LIMIT 1
$fn$;
