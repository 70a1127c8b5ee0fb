-- Tenant configuration (crate tenancy-config): entitlements, plans, region layers, flags,
-- setting definitions, and per-tenant attributes, overrides, settings, branding and
-- custom domains. Every write goes through tenancy-config's store, which records a row in
-- config_changes (who, when, why, before, after) and stamps the changed row with that
-- version, then sends NOTIFY tenancy_config '<kind>:<id>' in the same transaction.
-- Runs as the owner role. The runtime role may read (the SDK snapshot), never write.

CREATE TABLE tenancy_catalog.config_changes (
    version    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL CHECK (length(actor) BETWEEN 1 AND 200),
    reason     text NOT NULL DEFAULT '' CHECK (length(reason) <= 2000),
    entity     text NOT NULL,
    entity_key text NOT NULL,
    tenant_id  uuid,
    action     text NOT NULL,
    before     jsonb,
    after      jsonb
);
CREATE INDEX config_changes_entity_idx ON tenancy_catalog.config_changes (entity, entity_key, version);
CREATE INDEX config_changes_tenant_idx ON tenancy_catalog.config_changes (tenant_id, version) WHERE tenant_id IS NOT NULL;
CREATE TRIGGER config_changes_append_only BEFORE UPDATE OR DELETE ON tenancy_catalog.config_changes
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.refuse_change();
CREATE TRIGGER config_changes_no_truncate BEFORE TRUNCATE ON tenancy_catalog.config_changes
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_catalog.refuse_change();

CREATE TABLE tenancy_catalog.config_entitlements (
    key           text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    kind          text NOT NULL CHECK (kind IN ('feature', 'limit')),
    default_value jsonb NOT NULL,
    description   text NOT NULL DEFAULT '',
    version       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_plans (
    key          text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_-]{0,39}$'),
    display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    layer        jsonb NOT NULL DEFAULT '{}',
    version      bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_regions (
    region     text PRIMARY KEY REFERENCES tenancy_catalog.regions (id),
    layer      jsonb NOT NULL DEFAULT '{}',
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_flags (
    key        text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    definition jsonb NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_setting_defs (
    key           text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    schema        jsonb NOT NULL,
    default_value jsonb NOT NULL,
    description   text NOT NULL DEFAULT '',
    version       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_tenant_attributes (
    tenant_id  uuid PRIMARY KEY REFERENCES tenancy_catalog.tenants (id),
    tags       text[] NOT NULL DEFAULT '{}',
    custom     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(custom) = 'object'),
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy_catalog.config_tenant_settings (
    tenant_id  uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    key        text NOT NULL REFERENCES tenancy_catalog.config_setting_defs (key),
    value      jsonb NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE tenancy_catalog.config_overrides (
    tenant_id  uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    kind       text NOT NULL CHECK (kind IN ('flag', 'entitlement')),
    key        text NOT NULL,
    value      jsonb NOT NULL,
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    expires_at timestamptz,
    created_by text NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, kind, key)
);

CREATE TABLE tenancy_catalog.config_branding (
    tenant_id          uuid PRIMARY KEY REFERENCES tenancy_catalog.tenants (id),
    display_name       text NOT NULL,
    primary_color      text NOT NULL CHECK (primary_color ~ '^#[0-9a-fA-F]{6}$'),
    accent_color       text NOT NULL CHECK (accent_color ~ '^#[0-9a-fA-F]{6}$'),
    logo_url           text CHECK (logo_url LIKE 'https://%'),
    email_from_name    text NOT NULL,
    email_from_address text NOT NULL,
    version            bigint NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The custom domains of tenants, the one table of them: the configuration service's
-- lifecycle (claim → pending, DNS TXT check → verified, disabled, removed) is the source of
-- truth, and the request layer (tenancy-axum, through tenancy-catalog's
-- `tenant_for_domain`) resolves a Host to a tenant only from a `verified` row.
-- A tenant may claim any hostname (pending); only one tenant can hold it verified.
CREATE TABLE tenancy_catalog.config_domains (
    tenant_id       uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    hostname        text NOT NULL CHECK (hostname = lower(hostname) AND length(hostname) BETWEEN 3 AND 253),
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'verified', 'disabled')),
    token           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    verified_at     timestamptz,
    last_checked_at timestamptz,
    last_error      text,
    version         bigint NOT NULL,
    PRIMARY KEY (tenant_id, hostname)
);
CREATE UNIQUE INDEX config_domains_verified_hostname ON tenancy_catalog.config_domains (hostname)
    WHERE state = 'verified';

-- The request layer's domain cache drops `domain:<hostname>` on the catalog change channel
-- (the same one as tenants and API keys), in the transaction of the change, so a domain
-- that is verified, disabled or removed takes effect at once.
CREATE FUNCTION tenancy_catalog.config_domains_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'domain:' || OLD.hostname);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('tenancy_catalog_changes', 'domain:' || NEW.hostname);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER config_domains_notify AFTER INSERT OR UPDATE OR DELETE ON tenancy_catalog.config_domains
    FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.config_domains_notify();

-- Tenant rows change rarely (creation, plan, state): tell SDK snapshots, which use the
-- plan, region, placement and creation time for targeting.
CREATE FUNCTION tenancy_catalog.config_notify_tenant() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    PERFORM pg_notify('tenancy_config', 'tenant:' || NEW.id::text);
    RETURN NULL;
END
$fn$;
CREATE TRIGGER tenants_config_notify AFTER INSERT OR UPDATE OF plan, region, placement, state
    ON tenancy_catalog.tenants FOR EACH ROW EXECUTE FUNCTION tenancy_catalog.config_notify_tenant();

GRANT SELECT ON tenancy_catalog.config_changes, tenancy_catalog.config_entitlements,
    tenancy_catalog.config_plans, tenancy_catalog.config_regions, tenancy_catalog.config_flags,
    tenancy_catalog.config_setting_defs, tenancy_catalog.config_tenant_attributes,
    tenancy_catalog.config_tenant_settings, tenancy_catalog.config_overrides,
    tenancy_catalog.config_branding, tenancy_catalog.config_domains
    TO tenancy_app;
