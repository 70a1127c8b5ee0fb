-- Custom domains and tenant API keys, and change notifications for the caches of the
-- request layer (tenancy-axum). Runs as the owner role.

-- A tenant's own host name (`billing.acme.com`). Only verified domains resolve to a
-- tenant; ownership verification (DNS challenge) is a separate workflow that sets
-- `verified`. A domain belongs to at most one tenant.
CREATE TABLE tenancy_catalog.custom_domains (
    domain      text PRIMARY KEY
                CHECK (domain = lower(domain)
                       AND domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$'
                       AND length(domain) <= 253),
    tenant_id   uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    verified    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    verified_at timestamptz
);
CREATE INDEX custom_domains_tenant_idx ON tenancy_catalog.custom_domains (tenant_id);

-- Tenant API keys: `tnk_<key_id>_<secret>`. Only a SHA-256 of the whole key is stored;
-- `key_id` is the public part used to find the row. Scopes limit what a key may do;
-- a revoked key never authenticates again.
CREATE TABLE tenancy_catalog.api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    tenant_id    uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes       text[] NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON tenancy_catalog.api_keys (tenant_id);

-- The runtime role authenticates a key through this function only: it cannot read the
-- hashes or list other tenants' keys. Returns the tenant and scopes of a live key whose
-- hash matches, and records the use (at most once a minute per key, to keep hot keys
-- from turning every request into a write).
CREATE FUNCTION tenancy_catalog.authenticate_api_key(p_key_id text, p_secret_hash bytea)
RETURNS TABLE (tenant_id uuid, scopes text[])
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    k record;
BEGIN
    SELECT a.tenant_id, a.scopes, a.secret_hash, a.last_used_at INTO k
      FROM tenancy_catalog.api_keys a
     WHERE a.key_id = p_key_id AND a.revoked_at IS NULL;
    -- Compare digests so the comparison time says nothing about the stored hash.
    IF NOT FOUND OR sha256(k.secret_hash) <> sha256(p_secret_hash) THEN
        RETURN;
    END IF;
    IF k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' THEN
        UPDATE tenancy_catalog.api_keys SET last_used_at = now() WHERE key_id = p_key_id;
    END IF;
    tenant_id := k.tenant_id;
    scopes := k.scopes;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION tenancy_catalog.authenticate_api_key(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy_catalog.authenticate_api_key(text, bytea) TO tenancy_app;

-- Caches of tenants, domains and keys listen on this channel and drop the named entry.
CREATE FUNCTION tenancy_catalog.notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'tenant:' || r.id::text);
    ELSIF TG_TABLE_NAME = 'custom_domains' THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'domain:' || r.domain);
        IF TG_OP = 'UPDATE' AND OLD.domain <> NEW.domain THEN
            PERFORM pg_notify('tenancy_catalog_changes', 'domain:' || OLD.domain);
        END IF;
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'api_key:' || r.key_id);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER tenants_notify AFTER UPDATE OR DELETE ON tenancy_catalog.tenants
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.notify_change();
CREATE TRIGGER custom_domains_notify AFTER INSERT OR UPDATE OR DELETE ON tenancy_catalog.custom_domains
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.notify_change();
-- last_used_at changes are not interesting to caches.
CREATE TRIGGER api_keys_notify AFTER UPDATE OF revoked_at, scopes OR DELETE ON tenancy_catalog.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.notify_change();

GRANT SELECT ON tenancy_catalog.custom_domains TO tenancy_app;
