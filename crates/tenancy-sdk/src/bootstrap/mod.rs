//! Creating the roles and installing tenancy's schema into a database.
//!
//! Three steps, each idempotent:
//! 1. [`bootstrap_cluster`] (superuser, once per cluster): the owner, runtime and job
//!    worker roles.
//! 2. [`bootstrap_database`] (superuser, once per database): database and schema
//!    privileges, the `tenancy` / `tenancy_private` schemas owned by the owner role, and
//!    the native signed context: `CREATE EXTENSION tenancy_context` where the server
//!    offers it, else the same C functions from its library ([`NATIVE_SQL`], derived at
//!    build time from the extension's scripts) where the server can load it; an error instead of no native context under
//!    `TENANCY_REQUIRE_NATIVE=1`.
//! 3. [`install_runtime`] (owner role): the signed-context functions (the PL/pgSQL
//!    implementation, unless step 2 installed the native one), the tenant-table helper and
//!    the context key the application signs with.
//!
//! [`server`] does the same on a server tenancy did not start, without superuser where
//! PostgreSQL allows it (`tenancy bootstrap`): it inspects what the connecting role may
//! do, refuses with what to fix, and plans the SQL of the three steps for that role.

use tenancy_core::ContextKey;
use tokio_postgres::Client;

use crate::Error;

/// The role that runs migrations and owns every tenancy object.
pub const OWNER_ROLE: &str = "tenancy_owner";
/// The role the application connects as at runtime.
pub const RUNTIME_ROLE: &str = "tenancy_app";
/// The role job workers connect as: it only claims and finishes jobs of the job queue
/// (tenancy-jobs), through functions granted to it alone.
pub const WORKER_ROLE: &str = "tenancy_worker";
/// The role the configuration client reads every tenant's configuration as (the runtime
/// role cannot read it).
pub const CONFIG_READER_ROLE: &str = "tenancy_config_reader";

const BOOTSTRAP_SQL: &str = include_str!("../../sql/bootstrap.sql");
const DATABASE_SQL: &str = include_str!("../../sql/database.sql");
const RUNTIME_SQL: &str = include_str!("../../sql/runtime.sql");
/// The native context's C functions created straight from the `tenancy_context` library,
/// outside the extension (superuser, per database, after [`bootstrap_database`]'s
/// schemas exist): the extension's own version scripts in order, with `CREATE OR REPLACE`
/// and the library's name for `MODULE_PATHNAME` (derived by this crate's `build.rs`, so
/// it cannot drift from the extension). Fails as a whole when the server cannot load the
/// library.
pub const NATIVE_SQL: &str = include_str!(concat!(env!("OUT_DIR"), "/native.sql"));

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

pub use tenancy_conn::quote_ident;

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
    // The native context, in this order of preference:
    // 1. the tenancy_context extension, already created: updated to the server's default
    //    version when that is newer;
    // 2. the extension, when the server offers it (installed with `make install`, or a
    //    PostgreSQL 18+ cluster tenancy started) and the database has none of its
    //    functions yet: created as the owner role (the extension is trusted), so the owner
    //    can later swap it for the PL/pgSQL context (runtime.sql);
    // 3. the same C functions straight from the library (NATIVE_SQL), where the
    //    server can load it (a cluster tenancy started) or the functions exist already
    //    outside an extension (an extension cannot take over existing functions);
    // 4. nothing: install_runtime installs the PL/pgSQL context. Under
    //    TENANCY_REQUIRE_NATIVE=1 that is an error instead.
    // Each step runs as one implicit transaction: a failed one changes nothing.
    let require = std::env::var("TENANCY_REQUIRE_NATIVE").is_ok_and(|v| v == "1");
    let state = superuser
        .query_one(
            "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tenancy_context'), \
                    (SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = 'tenancy_context'), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE oid IN (to_regprocedure('tenancy.enter(text)'), \
                            to_regprocedure('tenancy.current_tenant_id()'), to_regprocedure('tenancy.enter_read_only(text)')))",
            &[],
        )
        .await
        .map_err(Error::db("looking for the tenancy_context extension"))?;
    let (installed, available, functions_exist): (Option<String>, Option<String>, bool) =
        (state.get(0), state.get(1), state.get(2));
    let db_message = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    };
    let mut problems: Vec<String> = Vec::new();
    let mut done = false;
    if let Some(installed) = &installed {
        done = true;
        if available.as_ref().is_some_and(|a| a != installed) {
            if let Err(e) = superuser
                .batch_execute("ALTER EXTENSION tenancy_context UPDATE")
                .await
            {
                tracing::warn!(error = %e, from = %installed, "could not update the tenancy_context extension; keeping the installed version");
            }
        }
    } else if available.is_some() && !functions_exist {
        for sql in [
            "SET LOCAL ROLE tenancy_owner; CREATE EXTENSION tenancy_context",
            "CREATE EXTENSION tenancy_context",
        ] {
            match superuser.batch_execute(sql).await {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => problems.push(format!("{sql}: {}", db_message(&e))),
            }
        }
    } else if available.is_some() {
        tracing::info!("tenancy's context functions exist outside the tenancy_context extension; re-creating them from the library instead of creating the extension");
    }
    if !done {
        match superuser.batch_execute(NATIVE_SQL).await {
            Ok(()) => done = true,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FILE) => problems.push(
                "the server has neither the tenancy_context extension nor its library (install it: make -C extensions/tenancy_context install)".into(),
            ),
            Err(e) => problems.push(format!("creating the C functions from the library: {}", db_message(&e))),
        }
    }
    if !done {
        if require {
            return Err(Error::NativeContextRequired(problems.join("; ")));
        }
        tracing::warn!(problems = %problems.join("; "), "the native tenant context is not available on this server; using the slower PL/pgSQL context");
    } else if !problems.is_empty() {
        tracing::info!(problems = %problems.join("; "), "native tenant context installed from the library, not as the extension");
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

/// One line for operators: which implementation of the signed context the database
/// `client` is connected to runs, and where it comes from (what `tenancy serve`,
/// `tenancy migrate` and `tenancy-demo` print).
pub async fn describe_context_impl(client: &Client) -> Result<String, Error> {
    let version: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'tenancy_context'",
            &[],
        )
        .await
        .map_err(Error::db("reading the tenancy_context extension"))?
        .map(|r| r.get(0));
    Ok(match (context_impl(client).await?, version) {
        (Some(ContextImpl::Native), Some(v)) => format!("native (tenancy_context extension {v})"),
        (Some(ContextImpl::Native), None) => {
            "native (C functions from the tenancy_context library)".to_owned()
        }
        (Some(ContextImpl::PlPgSql), _) => {
            "PL/pgSQL (slower; install the tenancy_context extension for the native one)".to_owned()
        }
        (None, _) => "not installed".to_owned(),
    })
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

/// Setting up a server tenancy did not start (`tenancy bootstrap`): what the connecting
/// role may do, what exists, and the SQL that completes the rest.
///
/// Works without superuser where PostgreSQL allows it. The minimum is a role with
/// CREATEROLE that owns the database (what a managed service grants its admin user):
/// it creates the tenancy roles (on PostgreSQL 16 it then administers them), makes itself
/// a member of the owner role (to create the owner's schemas and set its default
/// privileges), and sets up the database it owns. Without superuser the PL/pgSQL context
/// is installed (C functions need a superuser or the `tenancy_context` extension).
///
/// The work runs in phases, each idempotent and the first two each in one transaction, so
/// a run that stopped anywhere leaves a state the next run completes:
/// 1. roles, passwords, the owner-role membership, objects an earlier run (as another
///    role) left in tenancy's schemas handed to the owner role, database privileges and
///    schemas (`sql/bootstrap.sql`, `sql/database.sql`);
/// 2. as the owner role: the runtime schema and the context key (`sql/runtime.sql`).
///
/// The native context ([`bootstrap_database`]) is tried between the two when the server
/// can have it. The catalog's migrations are the caller's (they are the catalog's).
pub mod server;
