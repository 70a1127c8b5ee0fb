-- tenancy bootstrap, part 2 (per database): privileges and the two tenancy schemas.
-- Run by a superuser connected to the database. Idempotent. :dbname is substituted.
REVOKE ALL ON DATABASE :dbname FROM PUBLIC;
GRANT CONNECT ON DATABASE :dbname TO tenancy_app;
-- The configuration client's login (bootstrap.sql); it reads only the catalog's
-- configuration tables, granted by the catalog's migrations.
GRANT CONNECT ON DATABASE :dbname TO tenancy_config_reader;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :dbname TO tenancy_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO tenancy_owner;
GRANT USAGE ON SCHEMA public TO tenancy_app;
CREATE SCHEMA IF NOT EXISTS tenancy AUTHORIZATION tenancy_owner;
CREATE SCHEMA IF NOT EXISTS tenancy_private AUTHORIZATION tenancy_owner;
REVOKE ALL ON SCHEMA tenancy_private FROM PUBLIC;
-- Functions are executable by PUBLIC by default; not the ones the owner creates here.
ALTER DEFAULT PRIVILEGES FOR ROLE tenancy_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
-- The worker role (sql/bootstrap.sql) connects to claim and finish jobs; where the
-- cluster was bootstrapped without it, nothing to grant.
DO $worker$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_worker') THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO tenancy_worker', current_database());
  END IF;
END
$worker$;
-- What the PL/pgSQL context's openings run before tenancy.enter (the native tenancy.enter
-- does the same in C): RESET ALL, so session-level settings an earlier transaction on the
-- connection made (SET, set_config(…, false)) do not reach the next one, except the
-- session-level tenancy.last_issued, the PL/pgSQL context's single-use mark (keyed, so
-- carrying it over as it was cannot forge one). SECURITY INVOKER and without SET clauses:
-- a SET clause would put back, when the function returns, the value RESET ALL undid.
CREATE OR REPLACE FUNCTION tenancy.reset_session() RETURNS void
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    mark text := pg_catalog.current_setting('tenancy.last_issued', true);
BEGIN
    RESET ALL;
    IF mark IS NOT NULL AND mark <> '' THEN
        PERFORM pg_catalog.set_config('tenancy.last_issued', mark, false);
    END IF;
END
$fn$;
ALTER FUNCTION tenancy.reset_session() OWNER TO tenancy_owner;
REVOKE ALL ON FUNCTION tenancy.reset_session() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenancy.reset_session() TO tenancy_app;
