//! Creating the roles and installing tenancy's schema into a database.
//!
//! Three steps, each idempotent:
//! 1. [`bootstrap_cluster`] (superuser, once per cluster): the owner, runtime and job
//!    worker roles.
//! 2. [`bootstrap_database`] (superuser, once per database): database and schema
//!    privileges, the `tenancy` / `tenancy_private` schemas owned by the owner role, and,
//!    when the server can load tenancy's `tenancy_context` library, the native signed
//!    context (`sql/native.sql`).
//! 3. [`install_runtime`] (owner role): the signed-context functions (the PL/pgSQL
//!    implementation, unless step 2 installed the native one), the tenant-table helper and
//!    the context key the application signs with.

use tenancy_core::ContextKey;
use tokio_postgres::Client;

use crate::Error;

/// The role that runs migrations and owns every tenancy object.
pub const OWNER_ROLE: &str = "tenancy_owner";
/// The role the application connects as at runtime.
pub const RUNTIME_ROLE: &str = "tenancy_app";
/// The role job workers connect as: it only claims and finishes jobs of the job queue
/// (tenancy-axum's `jobs`), through functions granted to it alone.
pub const WORKER_ROLE: &str = "tenancy_worker";
/// The role the configuration client reads every tenant's configuration as (the runtime
/// role cannot read it).
pub const CONFIG_READER_ROLE: &str = "tenancy_config_reader";

const BOOTSTRAP_SQL: &str = include_str!("../sql/bootstrap.sql");
const DATABASE_SQL: &str = include_str!("../sql/database.sql");
const RUNTIME_SQL: &str = include_str!("../sql/runtime.sql");
const NATIVE_SQL: &str = include_str!("../sql/native.sql");

/// The SQL a tenancy database is built from (database privileges, native context, runtime
/// schema), for fingerprints of what a database or template holds.
pub const RUNTIME_SOURCES: [&str; 3] = [DATABASE_SQL, NATIVE_SQL, RUNTIME_SQL];

/// Which implementation of `tenancy.enter` / `tenancy.current_tenant_id` a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextImpl {
    /// C functions from the `tenancy_context` library: the verified tenant lives in backend
    /// memory, tokens are single-use per connection, a few microseconds per transaction.
    Native,
    /// PL/pgSQL functions (no server library needed, e.g. on a managed service): the
    /// verified tenant is a keyed binding in a transaction-local setting, rechecked by
    /// every statement.
    PlPgSql,
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates (or re-asserts) the owner, runtime and worker roles. Needs a superuser or
/// CREATEROLE.
pub async fn bootstrap_cluster(superuser: &Client) -> Result<(), Error> {
    superuser
        .batch_execute(BOOTSTRAP_SQL)
        .await
        .map_err(Error::db("creating the tenancy roles"))
}

/// Sets the privileges of database `dbname` and creates the tenancy schemas in it.
/// `superuser` must be connected to that database.
pub async fn bootstrap_database(superuser: &Client, dbname: &str) -> Result<(), Error> {
    let sql = DATABASE_SQL.replace(":dbname", &quote_ident(dbname));
    superuser
        .batch_execute(&sql)
        .await
        .map_err(Error::db("preparing the database for tenancy"))?;
    // Best effort: without the library (a server tenancy did not start, a managed service)
    // the batch fails as a whole, changes nothing, and install_runtime installs PL/pgSQL.
    if let Err(e) = superuser.batch_execute(NATIVE_SQL).await {
        let missing = e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FILE);
        if missing {
            tracing::debug!("the tenancy_context library is not installed on this server; using the PL/pgSQL context");
        } else {
            tracing::warn!(error = %e, "could not install the native tenant context; using the PL/pgSQL context");
        }
    }
    Ok(())
}

/// The implementation of the signed context installed in the database `client` is
/// connected to, or `None` when the runtime is not installed.
pub async fn context_impl(client: &Client) -> Result<Option<ContextImpl>, Error> {
    let row = client
        .query_opt(
            "SELECT l.lanname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
              WHERE p.oid = to_regprocedure('tenancy.current_tenant_id()')",
            &[],
        )
        .await
        .map_err(Error::db("reading the tenant context implementation"))?;
    Ok(row.map(|r| {
        if r.get::<_, &str>(0) == "c" {
            ContextImpl::Native
        } else {
            ContextImpl::PlPgSql
        }
    }))
}

/// Installs the runtime schema and the context key. `owner` must be connected as the
/// owner role (directly, or after `SET ROLE tenancy_owner`).
pub async fn install_runtime(owner: &Client, key: &ContextKey) -> Result<(), Error> {
    install_runtime_with(owner, key, None).await
}

/// [`install_runtime`], optionally forcing the PL/pgSQL context even where the native one
/// is installed (`Some(ContextImpl::PlPgSql)`; used to test the fallback).
/// `Some(ContextImpl::Native)` only keeps what [`bootstrap_database`] installed.
pub async fn install_runtime_with(
    owner: &Client,
    key: &ContextKey,
    force: Option<ContextImpl>,
) -> Result<(), Error> {
    let sql = if force == Some(ContextImpl::PlPgSql) {
        format!(
            "SET tenancy.runtime_impl = 'plpgsql';\n{RUNTIME_SQL}\n;RESET tenancy.runtime_impl;"
        )
    } else {
        RUNTIME_SQL.to_owned()
    };
    owner
        .batch_execute(&sql)
        .await
        .map_err(Error::db("installing the tenancy runtime schema"))?;
    install_context_key(owner, key).await
}

/// Installs (or replaces) the context key the application signs with. The runtime's
/// `tenancy.install_context_key` also generates the database's binding key when it has
/// none (a clone of a template stripped of its secrets gets its own here). Needs the
/// runtime schema; `owner` is connected as the owner role.
pub async fn install_context_key(owner: &Client, key: &ContextKey) -> Result<(), Error> {
    owner
        .execute(
            "SELECT tenancy.install_context_key($1, $2)",
            &[&key.kid().as_str(), &key.material_hex()],
        )
        .await
        .map_err(Error::db("installing the context key"))?;
    Ok(())
}

/// Makes `table` a tenant table (see `tenancy.make_tenant_table` in `sql/runtime.sql`).
/// `owner` must be connected as the owner role; `table` may be schema-qualified.
pub async fn make_tenant_table(owner: &Client, table: &str) -> Result<(), Error> {
    owner
        .execute(
            "SELECT tenancy.make_tenant_table($1::text::regclass)",
            &[&table],
        )
        .await
        .map_err(Error::db("making a tenant table"))?;
    Ok(())
}
