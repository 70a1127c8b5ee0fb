-- tenancy bootstrap, part 2b (per database, superuser): the native signed context
-- without the extension. The same C functions as the tenancy_context extension
-- (extensions/tenancy_context, which bootstrap_database prefers when the server offers
-- it), created straight from its library: on a cluster tenancy started, which loads the
-- library from its data directory, or where the functions already exist outside the
-- extension (an extension cannot take over existing functions). Gives them to the owner
-- role. Runs as one implicit transaction: when the library cannot be loaded nothing
-- changes and install_runtime installs the PL/pgSQL implementation instead (an error
-- under TENANCY_REQUIRE_NATIVE=1). Same names, signatures and errors as the PL/pgSQL
-- functions in runtime.sql, so policies, column defaults and the SDK do not care which
-- one a database has.
CREATE OR REPLACE FUNCTION tenancy.enter(token text) RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'tenancy_context', 'tenancy_enter';
CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid
    LANGUAGE C STABLE PARALLEL RESTRICTED AS 'tenancy_context', 'tenancy_current_tenant_id';
-- tenancy.enter that also makes the transaction read-only: the opening of the SDK's
-- implicit read-only transactions. Native only (runtime.sql has no PL/pgSQL version and
-- drops this one when it installs PL/pgSQL), so its grant and its comment (what
-- `tenancy check` recognises it by) are given here, where it is created: a database
-- switched to the native context by this file alone is complete.
CREATE OR REPLACE FUNCTION tenancy.enter_read_only(token text) RETURNS uuid
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'tenancy_context', 'tenancy_enter_read_only';
ALTER FUNCTION tenancy.enter(text) OWNER TO tenancy_owner;
ALTER FUNCTION tenancy.current_tenant_id() OWNER TO tenancy_owner;
ALTER FUNCTION tenancy.enter_read_only(text) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.enter(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.current_tenant_id() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenancy.enter_read_only(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter_read_only(text) TO tenancy_app;
COMMENT ON FUNCTION tenancy.enter_read_only(text) IS 'tenancy:context-enter';
-- The whole opening of a transaction behind a transaction-mode pooler in one call (the
-- extension's version 1.1): native only, dropped by runtime.sql when it installs
-- PL/pgSQL; granted and commented here for the same reason as enter_read_only.
CREATE OR REPLACE FUNCTION tenancy.enter_pooled(token text, read_only bool, statement_timeout int4,
                                                lock_timeout int4, idle_in_transaction_timeout int4,
                                                transaction_timeout int4, search_path text) RETURNS int4
    LANGUAGE C VOLATILE SECURITY DEFINER AS 'tenancy_context', 'tenancy_enter_pooled';
ALTER FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) TO tenancy_app;
COMMENT ON FUNCTION tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text) IS 'tenancy:context-enter';
-- The CHECK of tenancy-audit's events in C (the extension's version 1.2): tenancy-audit's
-- install makes its table's CHECK call it where it exists, else its PL/pgSQL function.
-- Unrelated to the context, so runtime.sql leaves it when it installs PL/pgSQL.
CREATE OR REPLACE FUNCTION tenancy.audit_event_valid_native(e record) RETURNS boolean
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'tenancy_context', 'tenancy_audit_event_valid';
ALTER FUNCTION tenancy.audit_event_valid_native(record) OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.audit_event_valid_native(record) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.audit_event_valid_native(record) TO tenancy_app;
