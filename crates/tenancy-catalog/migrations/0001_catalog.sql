-- The tenancy catalog: regions, clusters, tenants and the append-only tenant event log.
-- Runs as the owner role. The runtime role may read regions, clusters and tenants
-- (the SDK router resolves tenants from them) and nothing else.
CREATE SCHEMA IF NOT EXISTS tenancy_catalog;

CREATE TABLE tenancy_catalog.regions (
    id           text PRIMARY KEY CHECK (id ~ '^[a-z][a-z0-9]*(-[a-z0-9]+)*$' AND length(id) BETWEEN 2 AND 32),
    display_name text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.clusters (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    region     text NOT NULL REFERENCES tenancy_catalog.regions (id),
    -- Where the cluster's shared tenant database is; credentials come from configuration.
    host       text NOT NULL,
    port       integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    dbname     text NOT NULL,
    -- Placement policy inputs.
    capacity   integer NOT NULL DEFAULT 10000 CHECK (capacity > 0),
    accepting  boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Lets tenants reference (cluster, region) so a tenant can never sit on a cluster of
    -- another region: the database enforces region pinning.
    UNIQUE (id, region)
);

CREATE TABLE tenancy_catalog.tenants (
    id               uuid PRIMARY KEY CHECK (id <> '00000000-0000-0000-0000-000000000000'),
    slug             text NOT NULL UNIQUE
                     CHECK (slug ~ '^[a-z][a-z0-9]*(-[a-z0-9]+)*$' AND length(slug) BETWEEN 3 AND 40),
    display_name     text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    plan             text NOT NULL CHECK (plan ~ '^[a-z][a-z0-9_-]{0,39}$'),
    region           text NOT NULL REFERENCES tenancy_catalog.regions (id),
    placement        text NOT NULL CHECK (placement IN ('pooled', 'schema', 'dedicated')),
    cluster_id       uuid NOT NULL,
    state            text NOT NULL DEFAULT 'provisioning'
                     CHECK (state IN ('provisioning', 'active', 'suspended', 'deleting', 'deleted')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    state_changed_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (cluster_id, region) REFERENCES tenancy_catalog.clusters (id, region)
);
CREATE INDEX tenants_cluster_idx ON tenancy_catalog.tenants (cluster_id);

CREATE TABLE tenancy_catalog.tenant_events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    kind       text NOT NULL,
    from_state text,
    to_state   text,
    actor      text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_events_tenant_idx ON tenancy_catalog.tenant_events (tenant_id, seq);

-- Append-only: rows can be inserted, never changed or removed, not even by the owner.
CREATE FUNCTION tenancy_catalog.refuse_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    RAISE EXCEPTION 'tenancy_catalog.tenant_events is append-only (% refused)', TG_OP;
END
$fn$;
CREATE TRIGGER tenant_events_append_only BEFORE UPDATE OR DELETE ON tenancy_catalog.tenant_events
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.refuse_change();
CREATE TRIGGER tenant_events_no_truncate BEFORE TRUNCATE ON tenancy_catalog.tenant_events
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_catalog.refuse_change();

GRANT USAGE ON SCHEMA tenancy_catalog TO tenancy_app;
GRANT SELECT ON tenancy_catalog.regions, tenancy_catalog.clusters, tenancy_catalog.tenants TO tenancy_app;
