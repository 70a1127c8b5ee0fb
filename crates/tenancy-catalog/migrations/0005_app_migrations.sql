-- The application's migrations across every tenant (`tenancy migrate`, issue #5).
--
-- app_migrations: every app migration that has been applied to at least one target, with
-- the checksum of the text that was applied. A file whose text no longer matches is
-- refused (add a new migration instead); a migration that never succeeded anywhere is
-- not recorded, so a broken file can still be fixed in place.
CREATE TABLE tenancy_catalog.app_migrations (
    version     integer PRIMARY KEY CHECK (version > 0),
    name        text NOT NULL,
    checksum    text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- The ledger: one row per migration target. A target is a tenant with storage of its own
-- (schema or dedicated placement; target_id = tenant id) or a cluster's pooled tables
-- (target_id = cluster id). The row is written after the target's own transaction
-- commits, so it may lag behind the target's version marker (a crash in between), never
-- run ahead of it; the next run reconciles it from the marker.
CREATE TABLE tenancy_catalog.app_migration_targets (
    target_id     uuid PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('pooled', 'schema', 'dedicated')),
    tenant_id     uuid REFERENCES tenancy_catalog.tenants (id) ON DELETE CASCADE,
    cluster_id    uuid NOT NULL REFERENCES tenancy_catalog.clusters (id) ON DELETE CASCADE,
    -- Version the target is known to be at, and the checksum of that migration.
    version       integer NOT NULL DEFAULT 0 CHECK (version >= 0),
    checksum      text,
    applied_at    timestamptz,
    duration_ms   double precision,
    -- The last failure (cleared by the next success): which version failed, and why.
    error         text,
    error_version integer,
    failed_at     timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'pooled') = (tenant_id IS NULL)),
    CHECK (kind = 'pooled' OR target_id = tenant_id),
    CHECK (kind <> 'pooled' OR target_id = cluster_id)
);
CREATE INDEX app_migration_targets_version_idx ON tenancy_catalog.app_migration_targets (version);
