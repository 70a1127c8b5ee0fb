//! Placements on a tenant cluster: schemas, dedicated databases and the app's migrations.
//!
//! Every function is idempotent: it checks what exists and does only what is missing, and
//! each unit of DDL commits atomically together with its version marker (a comment on the
//! schema), so a crash leaves either nothing or a complete, marked result.

use tenancy_core::TenantId;
use tenancy_sdk::bootstrap::quote_ident;
use tenancy_sdk::TenantPool;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{AppMigrations, Error};

/// Marker prefix of the comment on a migrated schema.
const MARKER: &str = "tenancy-app-version:";

/// The schema of a schema-placement tenant: derived from its id, so a re-run step
/// computes the same name.
pub fn schema_name_for(tenant: TenantId) -> String {
    format!("t_{}", tenant.as_uuid().simple())
}

/// The database of a dedicated tenant, derived from its id.
pub fn database_name_for(tenant: TenantId) -> String {
    format!("tenant_{}", tenant.as_uuid().simple())
}

/// The app version recorded on `schema`, or `None` when the schema does not exist.
pub async fn schema_version(client: &Client, schema: &str) -> Result<Option<i32>, Error> {
    let row = client
        .query_opt(
            "SELECT coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(Error::db("reading a schema's version"))?;
    Ok(row.map(|r| {
        r.get::<_, String>(0)
            .strip_prefix(MARKER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }))
}

/// Brings `schema` (created when `create`) to the app's latest version in one transaction:
/// runs the newer migrations with `search_path` set to it, makes every table in it a
/// tenant table (`tenancy.make_tenant_table`: RLS enabled and forced, one policy, grants),
/// grants the runtime role USAGE on it and records the version. `owner` must be connected
/// as the owner role. Returns whether anything was done.
pub async fn migrate_schema(
    owner: &mut Client,
    schema: &str,
    create: bool,
    app: &AppMigrations,
) -> Result<bool, Error> {
    let q = quote_ident(schema);
    let tx = owner
        .transaction()
        .await
        .map_err(Error::db("starting a migration transaction"))?;
    // One migration at a time per schema (several workers may bring the shared schema up).
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
        .await
        .map_err(Error::db("locking a schema for migration"))?;
    if create {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {q}"))
            .await
            .map_err(Error::db(format!("creating schema {schema}")))?;
    }
    let current = {
        let row = tx
            .query_opt(
                "SELECT coalesce(obj_description(oid, 'pg_namespace'), '') FROM pg_namespace WHERE nspname = $1",
                &[&schema],
            )
            .await
            .map_err(Error::db("reading a schema's version"))?;
        row.map(|r| {
            r.get::<_, String>(0)
                .strip_prefix(MARKER)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or(0)
        })
        .unwrap_or(0)
    };
    let latest = app.latest();
    if current >= latest && !create {
        return Ok(false);
    }
    if current >= latest && current > 0 {
        return Ok(false);
    }
    let mut sql = format!("SET LOCAL search_path = {q};\n");
    for m in app.after(current) {
        sql.push_str(&m.sql);
        sql.push_str(";\n");
    }
    sql.push_str(&format!(
        "SELECT tenancy.make_tenant_table(c.oid::regclass) FROM pg_class c
          WHERE c.relnamespace = {lit}::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.oid;
         GRANT USAGE ON SCHEMA {q} TO tenancy_app;
         COMMENT ON SCHEMA {q} IS '{MARKER}{latest}';",
        lit = literal(schema)
    ));
    tx.batch_execute(&sql).await.map_err(Error::db(format!(
        "applying the app's migrations to schema {schema}"
    )))?;
    tx.commit()
        .await
        .map_err(Error::db("committing the app's migrations"))?;
    Ok(true)
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Drops a tenant schema and everything in it. Idempotent.
pub async fn drop_schema(owner: &Client, schema: &str) -> Result<(), Error> {
    owner
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(schema)
        ))
        .await
        .map_err(Error::db(format!("dropping schema {schema}")))
}

/// Creates a database (nothing if it exists). `admin` is connected to a maintenance database.
pub async fn create_database(admin: &Client, name: &str) -> Result<(), Error> {
    match admin
        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(Error::db(format!("creating database {name}"))(e)),
    }
}

/// Drops a database, disconnecting its sessions. Idempotent.
pub async fn drop_database(admin: &Client, name: &str) -> Result<(), Error> {
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await
        .map_err(Error::db(format!("dropping database {name}")))
}

/// Whether a database exists.
pub async fn database_exists(admin: &Client, name: &str) -> Result<bool, Error> {
    Ok(admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(Error::db("looking up a database"))?
        .is_some())
}

/// Deletes every row of a pooled tenant from the tenant tables of `public`, children
/// before parents, through the tenant's own `TenantTx` (so RLS bounds the purge to it).
pub async fn purge_pooled_rows(pool: &TenantPool, tenant: TenantId) -> Result<u64, Error> {
    let mut tx = pool.begin(tenant).await?;
    // Tenant tables (with the tenancy policy) in public, and which of them reference which.
    let tables = tx
        .query(
            "SELECT c.oid::regclass::text,
                    coalesce(array_agg(DISTINCT f.confrelid::regclass::text) FILTER (WHERE f.confrelid IS NOT NULL AND f.confrelid <> c.oid), '{}')
               FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = 'tenancy_tenant_isolation'
               LEFT JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f'
              WHERE c.relnamespace = 'public'::regnamespace GROUP BY c.oid",
            &[],
        )
        .await?;
    let mut remaining: Vec<(String, Vec<String>)> =
        tables.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut deleted = 0;
    while !remaining.is_empty() {
        // A table may be emptied once no remaining table references it.
        let idx = remaining
            .iter()
            .position(|(name, _)| !remaining.iter().any(|(_, refs)| refs.contains(name)))
            .unwrap_or(0);
        let (name, _) = remaining.remove(idx);
        deleted += tx.execute(&format!("DELETE FROM {name}"), &[]).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}
