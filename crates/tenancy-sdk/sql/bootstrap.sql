-- tenancy bootstrap, part 1 (cluster-wide): the roles.
-- Run by a superuser or a role with CREATEROLE. Idempotent. An existing role is altered
-- only where its attributes are wrong: a role with CREATEROLE may not even name the
-- SUPERUSER, BYPASSRLS or REPLICATION attributes (PostgreSQL 15), and on PostgreSQL 16 may
-- alter only roles it administers, so a second run by such a role must not touch them.
--
-- tenancy_owner: runs migrations and owns every tenancy object. It is not a superuser
--   and does not bypass RLS, so FORCE ROW LEVEL SECURITY binds it too.
-- tenancy_app: the runtime role the application connects as. It owns nothing, is not a
--   member of any role, cannot bypass RLS and receives only SELECT/INSERT/UPDATE/DELETE.
DO $bootstrap$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner') THEN
    CREATE ROLE tenancy_owner LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app') THEN
    CREATE ROLE tenancy_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
  -- Re-assert the attributes in case someone changed them.
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_owner'
              AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolreplication)) THEN
    ALTER ROLE tenancy_owner NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOREPLICATION;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app'
              AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole OR rolreplication OR rolinherit)) THEN
    ALTER ROLE tenancy_app NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
END
$bootstrap$;

-- tenancy_worker: the role background workers connect as to claim and finish jobs of
--   tenancy-axum's job queue. Like the runtime role it owns nothing, is not a member of
--   any role and cannot bypass RLS; it gets no table privilege, only EXECUTE on the
--   queue's claim and finish functions (granted where the queue is installed).
DO $worker$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_worker') THEN
    CREATE ROLE tenancy_worker LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_worker'
              AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole OR rolreplication OR rolinherit)) THEN
    ALTER ROLE tenancy_worker NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
END
$worker$;

-- tenancy_config_reader: the role the configuration client (tenancy-config's
--   ConfigClient) reads its snapshot of every tenant's configuration as. That snapshot is
--   exactly what the runtime role must not read, so it gets a login of its own: SELECT on
--   the configuration tables and a few tenant columns, nothing else, member of no role.
DO $bootstrap_config_reader$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_config_reader') THEN
    CREATE ROLE tenancy_config_reader LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_config_reader'
              AND (rolsuper OR rolbypassrls OR rolcreatedb OR rolcreaterole OR rolreplication OR rolinherit)) THEN
    ALTER ROLE tenancy_config_reader NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT;
  END IF;
END
$bootstrap_config_reader$;

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
