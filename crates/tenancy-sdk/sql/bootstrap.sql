-- tenancy bootstrap, part 1 (cluster-wide): the roles.
-- Run by a superuser or a role with CREATEROLE. Idempotent. An existing role is altered
-- only where its attributes are wrong: a role with CREATEROLE may not even name the
-- SUPERUSER, BYPASSRLS or REPLICATION attributes (PostgreSQL 15), and on PostgreSQL 16 may
-- alter only roles it administers, so a second run by such a role must not touch them.
--
-- tenancy_owner: runs migrations and owns every tenancy object. It is not a superuser
--   and does not bypass RLS, so FORCE ROW LEVEL SECURITY binds it too.
-- The login roles that own nothing, are members of no role and cannot bypass RLS, each
--   with only the privileges granted to it by name:
-- tenancy_app: the runtime role the application connects as; it receives only
--   SELECT/INSERT/UPDATE/DELETE.
-- tenancy_worker: the role background workers connect as to claim and finish jobs of
--   tenancy-axum's job queue; it gets no table privilege, only EXECUTE on the queue's
--   claim and finish functions (granted where the queue is installed).
-- tenancy_config_reader: the role the configuration client (tenancy-config's
--   ConfigClient) reads its snapshot of every tenant's configuration as. That snapshot is
--   exactly what the runtime role must not read, so it gets a login of its own: SELECT on
--   the configuration tables and a few tenant columns, nothing else.
-- Each role's attributes are re-asserted in case someone changed them.
DO $bootstrap$
DECLARE
  r text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner') THEN
    CREATE ROLE tenancy_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner'
              AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolreplication)) THEN
    ALTER ROLE tenancy_owner NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION;
  END IF;
  FOREACH r IN ARRAY ARRAY['tenancy_app', 'tenancy_worker', 'tenancy_config_reader'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT', r);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r
                AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole OR rolreplication OR rolinherit)) THEN
      EXECUTE pg_catalog.format('ALTER ROLE %I NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT', r);
    END IF;
  END LOOP;
END
$bootstrap$;

-- Bound parameters stay out of the server log for the roles that carry signed tokens:
-- with log_statement or log_min_duration_statement on, PostgreSQL logs each statement's
-- parameters, and tenancy.enter's parameter is a live context token. Only a superuser may
-- set log_parameter_max_length (and only a superuser may remove the default again, so the
-- runtime role's own SQL cannot undo it). A role with CREATEROLE only cannot: `tenancy
-- bootstrap` then prints the statement for a superuser to run.
DO $log_parameters$
BEGIN
  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
    ALTER ROLE tenancy_app SET log_parameter_max_length = 0;
    ALTER ROLE tenancy_worker SET log_parameter_max_length = 0;
  END IF;
END
$log_parameters$;
