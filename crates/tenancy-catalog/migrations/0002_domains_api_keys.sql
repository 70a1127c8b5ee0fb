-- Tenant API keys, and change notifications for the caches of the request layer
-- (tenancy-axum). Runs as the owner role.
--
-- Custom domains are not here: the configuration service owns them
-- (`tenancy_catalog.config_domains`, migration 0004: claim, DNS TXT verification,
-- disable, removal, all versioned). The request layer resolves only domains that table
-- holds `verified`, and 0004 announces their changes on the channel below.

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

-- Caches of tenants, domains and keys listen on this channel and drop the named entry
-- (domains: `domain:<hostname>`, sent by the trigger on config_domains in 0004).
CREATE FUNCTION tenancy_catalog.notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'tenant:' || r.id::text);
    ELSIF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'api_key:' || r.key_id);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER tenants_notify AFTER UPDATE OR DELETE ON tenancy_catalog.tenants
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.notify_change();
-- last_used_at changes are not interesting to caches.
CREATE TRIGGER api_keys_notify AFTER UPDATE OF revoked_at, scopes OR DELETE ON tenancy_catalog.api_keys
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.notify_change();
