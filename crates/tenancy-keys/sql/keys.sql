-- tenancy per-tenant data keys (tenancy-keys): each tenant's data keys (DEKs), wrapped by
-- its key-encryption key (KEK) from a KeyProvider, in the `tenancy` schema. Run as the
-- owner role after the tenancy runtime is installed. Idempotent.
--
-- - tenancy_app (runtime role) sees and changes only its own tenant's keys (row-level
--   security on the signed tenant context): it adds data-key versions, rewraps them
--   (KEK rotation) and deletes them (crypto-shredding). It never changes a key's
--   version or tenant, and cannot truncate the table.
-- - The unwrapped keys never reach the database: `wrapped` opens only with the tenant's
--   KEK, which the KeyProvider keeps.
CREATE TABLE IF NOT EXISTS tenancy.data_keys (
    tenant_id   uuid NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    wrapped     bytea NOT NULL CHECK (octet_length(wrapped) BETWEEN 1 AND 4096),
    kek_version integer NOT NULL CHECK (kek_version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, version)
);
SELECT tenancy.make_tenant_table('tenancy.data_keys');
REVOKE ALL ON tenancy.data_keys FROM tenancy_app;
GRANT SELECT, DELETE ON tenancy.data_keys TO tenancy_app;
GRANT INSERT (tenant_id, version, wrapped, kek_version) ON tenancy.data_keys TO tenancy_app;
GRANT UPDATE (wrapped, kek_version) ON tenancy.data_keys TO tenancy_app;
