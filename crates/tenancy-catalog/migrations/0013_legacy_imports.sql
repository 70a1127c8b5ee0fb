-- Single-tenant databases imported as tenants (`tenancy import --from-database`): one row
-- per source database, so that running the import of the same source again reuses its
-- tenant (a started import is finished, a done one is a no-op) instead of making another.
CREATE TABLE tenancy_catalog.legacy_imports (
    -- The source's identity: its cluster's system identifier, the database's oid and name.
    source      text PRIMARY KEY CHECK (length(source) BETWEEN 1 AND 200),
    tenant_id   uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    state       text NOT NULL DEFAULT 'started' CHECK (state IN ('started', 'done')),
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- Per table: rows and checksum, as verified when the import finished.
    summary     jsonb
);
CREATE INDEX legacy_imports_tenant_idx ON tenancy_catalog.legacy_imports (tenant_id);
