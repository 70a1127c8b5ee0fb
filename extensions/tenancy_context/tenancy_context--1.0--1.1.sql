-- tenancy_context 1.0 → 1.1: tenancy.enter_pooled, the whole opening of a transaction
-- behind a transaction-mode pooler in one C call (see tenancy_enter_pooled in
-- tenancy_context.c). 1.0's functions are unchanged. CREATE EXTENSION tenancy_context
-- runs tenancy_context--1.0.sql and then this file; ALTER EXTENSION tenancy_context
-- UPDATE (tenancy's bootstrap runs it when the server offers a newer version) runs this
-- file alone.
\echo Use "ALTER EXTENSION tenancy_context UPDATE TO '1.1'" to load this file. \quit

-- SECURITY DEFINER (owner tenancy_owner) for the same reason as tenancy.enter: it reads
-- the HMAC pads. Not STRICT: a NULL limit is one the call leaves alone.
CREATE FUNCTION tenancy.enter_pooled(token text, read_only bool, statement_timeout int4,
                                     lock_timeout int4, idle_in_transaction_timeout int4,
                                     transaction_timeout int4, search_path text) RETURNS int4
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'MODULE_PATHNAME', 'tenancy_enter_pooled';
ALTER FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) TO tenancy_app;
COMMENT ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) IS 'tenancy:context-enter';
