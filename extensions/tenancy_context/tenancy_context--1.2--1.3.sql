-- tenancy_context 1.2 → 1.3: tenancy.audit_append, one event appended to tenancy-audit's
-- table of events for the entered tenant without the executor (see tenancy_audit_append
-- in tenancy_context.c): what the runtime role's INSERT of an event does, with the same
-- checks and errors, at a fraction of the server's cost. tenancy-audit's record uses it
-- where the database has it. 1.2's functions are unchanged.
\echo Use "ALTER EXTENSION tenancy_context UPDATE TO '1.3'" to load this file. \quit

-- Not SECURITY DEFINER: the caller's INSERT privileges on the columns it gives a value
-- apply, as they do to its INSERT. Not STRICT: an absent optional field is NULL.
CREATE FUNCTION tenancy.audit_append(tenant_id uuid, actor_kind text, action text, outcome text,
                                     actor_subject text, actor_key_id text, target text,
                                     before jsonb, after jsonb, request_id text, trace_id text,
                                     client_addr inet) RETURNS void
    LANGUAGE C VOLATILE AS 'MODULE_PATHNAME', 'tenancy_audit_append';
ALTER FUNCTION tenancy.audit_append(uuid, text, text, text, text, text, text, jsonb, jsonb, text, text, inet)
    OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.audit_append(uuid, text, text, text, text, text, text, jsonb, jsonb, text, text, inet)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_append(uuid, text, text, text, text, text, text, jsonb, jsonb, text, text, inet)
    TO tenancy_app;
