    -- The chain the event belongs to: its tenant (in the control log, the tenant the
    -- change concerns, or the nil UUID for platform-wide changes).
    tenant_id     uuid NOT NULL,
    -- Insertion order; the sealer chains a tenant's events in this order.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    -- The inserting transaction: the sealer takes only events whose transaction ended.
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id(),
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Who.
    actor_kind    text NOT NULL CHECK (actor_kind IN ('user', 'api_key', 'admin', 'worker', 'system')),
    actor_subject text CHECK (octet_length(actor_subject) <= 1024),
    actor_key_id  text CHECK (octet_length(actor_key_id) <= 256),
    -- What, on what, and the state before and after (values or digests).
    action        text NOT NULL CHECK (action ~ '^[A-Za-z][A-Za-z0-9_.:/-]{0,127}$'),
    target        text CHECK (octet_length(target) <= 1024),
    before        jsonb,
    after         jsonb,
    -- Where: the request, its trace and the client's address.
    request_id    text CHECK (octet_length(request_id) <= 256),
    trace_id      text CHECK (octet_length(trace_id) <= 256),
    client_addr   inet,
    outcome       text NOT NULL CHECK (outcome IN ('success', 'failure', 'denied')),
    -- Filled in by the sealer: position in the chain (1, 2, …), the hash of the event
    -- before it (32 zero bytes for the first), and this event's hash.
    chain_pos     bigint CHECK (chain_pos >= 1),
    prev_hash     bytea CHECK (octet_length(prev_hash) = 32),
    hash          bytea CHECK (octet_length(hash) = 32),
    sealed_at     timestamptz,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, chain_pos),
    CHECK ((chain_pos IS NULL) = (hash IS NULL) AND (hash IS NULL) = (prev_hash IS NULL))
