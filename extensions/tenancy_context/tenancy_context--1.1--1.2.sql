-- tenancy_context 1.1 → 1.2: tenancy.audit_event_valid_native(record), the CHECK of
-- tenancy-audit's table of events in C (see tenancy_audit_event_valid in
-- tenancy_context.c): the rules of that crate's PL/pgSQL tenancy.audit_event_valid, for a
-- row of tenancy.audit_events. tenancy-audit's install makes the table's CHECK call it
-- where it exists. 1.1's functions are unchanged.
\echo Use "ALTER EXTENSION tenancy_context UPDATE TO '1.2'" to load this file. \quit

-- Not SECURITY DEFINER: it reads only its argument. Not STRICT, as the PL/pgSQL function
-- (a NULL row passes). The runtime role inserts events, so it executes it.
CREATE FUNCTION tenancy.audit_event_valid_native(e record) RETURNS boolean
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenancy_audit_event_valid';
ALTER FUNCTION tenancy.audit_event_valid_native(record) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.audit_event_valid_native(record) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_event_valid_native(record) TO tenancy_app;
