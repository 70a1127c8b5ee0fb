-- tenancy access control (tenancy-access): the custom roles and the grants of each tenant,
-- two tenant tables in the `tenancy` schema of a tenant database. Run as the owner role
-- after the tenancy runtime is installed. Idempotent.
--
-- Built-in roles (owner, admin, member, viewer) are defined by the application's model,
-- not stored: a custom role may never take their names, so a grant names either a
-- built-in role or a row of access_roles. The runtime role reads and changes only its
-- own tenant's rows (row-level security on the signed context, as for every tenant table).
CREATE TABLE IF NOT EXISTS tenancy.access_roles (
    tenant_id   uuid NOT NULL,
    name        text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'
                                     AND name NOT IN ('owner', 'admin', 'member', 'viewer')),
    permissions text[] NOT NULL CHECK (cardinality(permissions) <= 256),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS tenancy.access_grants (
    tenant_id  uuid NOT NULL,
    -- The subject as the request layer names it: a JWT `sub`, `api_key:<key id>`, ….
    subject    text NOT NULL CHECK (octet_length(subject) BETWEEN 1 AND 256
                                    AND subject !~ '[[:cntrl:]]'),
    role       text NOT NULL CHECK (role ~ '^[a-z][a-z0-9_-]{0,63}$'),
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject, role)
);
-- Deleting a custom role removes its grants; counting owners reads by role.
CREATE INDEX IF NOT EXISTS access_grants_role_idx ON tenancy.access_grants (tenant_id, role);
SELECT tenancy.make_tenant_table('tenancy.access_roles');
SELECT tenancy.make_tenant_table('tenancy.access_grants');
