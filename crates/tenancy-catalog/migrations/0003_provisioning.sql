-- Provisioning: where a tenant's storage is, durable workflows with their step log,
-- outbound webhooks (outbox and delivery log), third-party registrations, plan settings
-- seeded at provisioning, idempotency keys of the control-plane API and processed
-- billing events. Runs as the owner role. The runtime role reads none of it except the
-- new tenant columns (through its existing SELECT on tenants), which the router needs.

-- Storage of schema and dedicated tenants: the schema in the region's shared database,
-- or the tenant's own database on its cluster. Both are derived from the tenant id, so a
-- step that re-runs after a crash computes the same names.
ALTER TABLE tenancy_catalog.tenants
    ADD COLUMN schema_name text CHECK (schema_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    ADD COLUMN database_name text CHECK (database_name ~ '^[a-z][a-z0-9_]{0,62}$'),
    -- Billing link (Stripe customer and subscription), set by the billing step.
    ADD COLUMN billing_customer text UNIQUE,
    ADD COLUMN billing_subscription text,
    -- A legal hold blocks the purge of a soft-deleted tenant.
    ADD COLUMN legal_hold boolean NOT NULL DEFAULT false,
    -- When a soft-deleted tenant's data may be purged.
    ADD COLUMN purge_after timestamptz,
    -- Why provisioning failed, for tenants that were rolled back.
    ADD COLUMN failure text;

-- One lifecycle operation of one tenant. Workflows of a tenant run one at a time, in
-- creation order (`seq`). A worker claims a workflow with FOR UPDATE SKIP LOCKED and keeps
-- the row lock while it runs one step; the step's catalog effects and the advance of
-- `step` commit together. A worker that dies releases the lock with its connection, so
-- another worker re-runs the step (every step is idempotent).
CREATE TABLE tenancy_catalog.workflows (
    id          uuid PRIMARY KEY,
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    tenant_id   uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    kind        text NOT NULL CHECK (kind IN ('provision', 'suspend', 'resume', 'change_plan', 'delete', 'purge')),
    input       jsonb NOT NULL DEFAULT '{}',
    -- pending/running: forward steps; compensating: undoing a failed provision;
    -- succeeded, failed (compensated), cancelled (nothing to do, e.g. legal hold): final.
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'compensating', 'succeeded', 'failed', 'cancelled')),
    -- Index of the next forward step, or of the next compensation step.
    step        integer NOT NULL DEFAULT 0 CHECK (step >= 0),
    -- Failed attempts of the current step; reset when a step succeeds.
    attempts    integer NOT NULL DEFAULT 0,
    run_after   timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX workflows_runnable_idx ON tenancy_catalog.workflows (run_after, seq)
    WHERE status IN ('pending', 'running', 'compensating');
CREATE INDEX workflows_tenant_idx ON tenancy_catalog.workflows (tenant_id, seq);

-- Every step attempt, for operators and tests.
CREATE TABLE tenancy_catalog.workflow_steps (
    workflow_id uuid NOT NULL REFERENCES tenancy_catalog.workflows (id),
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    step        text NOT NULL,
    compensation boolean NOT NULL DEFAULT false,
    attempt     integer NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'retry', 'failed')),
    error       text,
    ms          double precision NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflow_steps_wf_idx ON tenancy_catalog.workflow_steps (workflow_id, seq);

-- Settings seeded from the tenant's plan (the configuration service reads them).
CREATE TABLE tenancy_catalog.tenant_plan_settings (
    tenant_id  uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    key        text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- Third-party registrations that succeeded: one row per (tenant, receiver). Compensation
-- sends a deregistration to exactly these receivers.
CREATE TABLE tenancy_catalog.tenant_registrations (
    tenant_id     uuid NOT NULL REFERENCES tenancy_catalog.tenants (id),
    receiver      text NOT NULL,
    webhook_id    text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, receiver)
);

-- Outbound lifecycle events (transactional outbox): written in the same transaction as
-- the state change they describe, delivered by the delivery loop with retries.
CREATE TABLE tenancy_catalog.webhook_outbox (
    webhook_id   text PRIMARY KEY,
    receiver     text NOT NULL,
    url          text NOT NULL,
    tenant_id    uuid REFERENCES tenancy_catalog.tenants (id),
    event_type   text NOT NULL,
    payload      jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);
CREATE INDEX webhook_outbox_due_idx ON tenancy_catalog.webhook_outbox (next_attempt) WHERE status = 'pending';

-- Every delivery attempt (registration steps and outbox), successful or not.
CREATE TABLE tenancy_catalog.webhook_deliveries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  text NOT NULL,
    receiver    text NOT NULL,
    tenant_id   uuid,
    event_type  text NOT NULL,
    attempt     integer NOT NULL,
    http_status integer,
    error       text,
    ms          double precision NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_tenant_idx ON tenancy_catalog.webhook_deliveries (tenant_id, seq);

-- Idempotency keys of the control-plane API: the first request with a key is executed and
-- its response stored; the same key and body replays it; another body is refused.
CREATE TABLE tenancy_catalog.idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash text NOT NULL,
    status       integer,
    body         jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (scope, key)
);

-- Billing events already processed (Stripe event ids), so a redelivered event is a no-op.
CREATE TABLE tenancy_catalog.billing_events (
    event_id    text PRIMARY KEY,
    event_type  text NOT NULL,
    tenant_id   uuid REFERENCES tenancy_catalog.tenants (id),
    workflow_id uuid REFERENCES tenancy_catalog.workflows (id),
    received_at timestamptz NOT NULL DEFAULT now()
);
