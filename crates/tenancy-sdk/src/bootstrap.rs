//! Creating the roles and installing tenancy's schema into a database.
//!
//! Three steps, each idempotent:
//! 1. [`bootstrap_cluster`] (superuser, once per cluster): the owner and runtime roles.
//! 2. [`bootstrap_database`] (superuser, once per database): database and schema
//!    privileges, and the `tenancy` / `tenancy_private` schemas owned by the owner role.
//! 3. [`install_runtime`] (owner role): the signed-context functions, the tenant-table
//!    helper and the context key the application signs with.

use tenancy_core::ContextKey;
use tokio_postgres::Client;

use crate::Error;

/// The role that runs migrations and owns every tenancy object.
pub const OWNER_ROLE: &str = "tenancy_owner";
/// The role the application connects as at runtime.
pub const RUNTIME_ROLE: &str = "tenancy_app";

const BOOTSTRAP_SQL: &str = include_str!("../sql/bootstrap.sql");
const DATABASE_SQL: &str = include_str!("../sql/database.sql");
const RUNTIME_SQL: &str = include_str!("../sql/runtime.sql");

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Creates (or re-asserts) the owner and runtime roles. Needs a superuser or CREATEROLE.
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
        .map_err(Error::db("preparing the database for tenancy"))
}

/// Installs the runtime schema and the context key. `owner` must be connected as the
/// owner role (directly, or after `SET ROLE tenancy_owner`).
pub async fn install_runtime(owner: &Client, key: &ContextKey) -> Result<(), Error> {
    owner
        .batch_execute(RUNTIME_SQL)
        .await
        .map_err(Error::db("installing the tenancy runtime schema"))?;
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
