//! Placements on a tenant cluster: schemas, dedicated databases and the app's migrations.
//!
//! Every function is idempotent: it checks what exists and does only what is missing, and
//! each unit of DDL commits atomically together with its version marker (a comment on the
//! schema), so a crash leaves either nothing or a complete, marked result.

use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};
use tenancy_conn::DbError;
use tenancy_core::{ContextKey, TenantId};
use tenancy_sdk::bootstrap::{
    quote_ident, CONFIG_READER_ROLE, OWNER_ROLE, RUNTIME_ROLE, WORKER_ROLE,
};
use tenancy_sdk::TenantPool;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::{AppMigrations, Error};

pub use tenancy_catalog::naming::{database_name_for, schema_name_for, MARKER};

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
    if create && app.latest() > 0 {
        // A new schema: one round trip of generated DDL (see `create_schema_fast`). When
        // the schema already exists (a re-run step) or anything differs from the app's
        // reference, the general path below does only what is missing, or reports the
        // real error.
        match create_schema_fast(owner, schema, app).await {
            Ok(()) => return Ok(true),
            Err(Error::Db(DbError::Query { source, .. }))
                if source.code() == Some(&SqlState::DUPLICATE_SCHEMA) => {}
            Err(e) => {
                tracing::debug!(schema, error = %e, "fast schema creation refused; using the general path")
            }
        }
    }
    migrate_schema_general(owner, schema, create, app).await
}

/// [`migrate_schema`] without the fast path: checks the version, runs the newer
/// migrations and `tenancy.make_tenant_table` on every table of the schema.
async fn migrate_schema_general(
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
        lit = tenancy_conn::quote_literal(schema)
    ));
    tx.batch_execute(&sql).await.map_err(Error::db(format!(
        "applying the app's migrations to schema {schema}"
    )))?;
    tx.commit()
        .await
        .map_err(Error::db("committing the app's migrations"))?;
    Ok(true)
}

/// What `tenancy.make_tenant_table` does to one table of the app, found once per app
/// version on a reference schema (see [`tenant_table_plan`]).
#[derive(Debug, Clone)]
struct TenantTablePlan {
    /// Table name (in the tenant's schema).
    table: String,
    /// The migrations create the table without `tenant_id`: the helper adds it.
    add_column: bool,
    /// A policy of that name exists before the helper runs: it is replaced.
    replace_policy: bool,
    /// No index leads with `tenant_id`: the helper creates one.
    create_index: bool,
}

/// Per app version (SHA-256 of the migrations): the tenant tables the migrations create
/// and what making them tenant tables takes.
type PlanCache = std::sync::Mutex<std::collections::HashMap<String, Arc<Vec<TenantTablePlan>>>>;

fn plan_cache() -> &'static PlanCache {
    static CACHE: OnceLock<PlanCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// SHA-256 (hex) over every migration's version, name and SQL.
pub fn app_checksum(app: &AppMigrations) -> String {
    let mut h = Sha256::new();
    for m in app.after(0) {
        h.update(m.version.to_be_bytes());
        h.update((m.name.len() as u64).to_be_bytes());
        h.update(m.name.as_bytes());
        h.update((m.sql.len() as u64).to_be_bytes());
        h.update(m.sql.as_bytes());
    }
    format!("{:x}", h.finalize())
}

/// The tenant tables of the app at its latest version, found by running the migrations
/// and `tenancy.make_tenant_table` (with all its checks: owner, column type, keys that
/// include `tenant_id`) in a reference schema inside a transaction that is rolled back.
/// Once per app version and process.
async fn tenant_table_plan(
    owner: &mut Client,
    app: &AppMigrations,
) -> Result<Arc<Vec<TenantTablePlan>>, Error> {
    let sum = app_checksum(app);
    if let Some(p) = plan_cache().lock().ok().and_then(|m| m.get(&sum).cloned()) {
        return Ok(p);
    }
    let reference = format!("tenancy_reference_{}", rand::random::<u64>());
    let q = quote_ident(&reference);
    let tx = owner
        .transaction()
        .await
        .map_err(Error::db("starting the reference migration"))?;
    let mut sql = format!("CREATE SCHEMA {q}; SET LOCAL search_path = {q};\n");
    for m in app.after(0) {
        sql.push_str(&m.sql);
        sql.push_str(";\n");
    }
    tx.batch_execute(&sql).await.map_err(Error::db(
        "running the app's migrations in a reference schema",
    ))?;
    let rows = tx
        .query(
            "SELECT c.relname::text,
                    a.attnum IS NULL,
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenancy_tenant_isolation'),
                    a.attnum IS NULL OR NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum)
               FROM pg_class c
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
              WHERE c.relnamespace = $1::text::regnamespace AND c.relkind IN ('r', 'p')
              ORDER BY c.oid",
            &[&reference],
        )
        .await
        .map_err(Error::db("reading the reference schema"))?;
    // The helper's checks, once for the app version instead of once per tenant.
    tx.execute(
        "SELECT tenancy.make_tenant_table(c.oid::regclass) FROM pg_class c
          WHERE c.relnamespace = $1::text::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.oid",
        &[&reference],
    )
    .await
    .map_err(Error::db("making the app's tables tenant tables"))?;
    tx.rollback()
        .await
        .map_err(Error::db("rolling back the reference migration"))?;
    let plan = Arc::new(
        rows.iter()
            .map(|r| TenantTablePlan {
                table: r.get(0),
                add_column: r.get(1),
                replace_policy: r.get(2),
                create_index: r.get(3),
            })
            .collect::<Vec<_>>(),
    );
    if let Ok(mut m) = plan_cache().lock() {
        m.insert(sum, plan.clone());
    }
    Ok(plan)
}

/// The statements `tenancy.make_tenant_table` would run on every table of `plan` in
/// `schema`, generated (no catalog lookups per table), then a check that the schema ends
/// up exactly as the reference did: the planned number of tables, each with RLS enabled
/// and forced and the tenancy policy, and every key and foreign key on `tenant_id`.
fn tenant_table_sql(schema: &str, plan: &[TenantTablePlan]) -> String {
    const POLICY: &str = "tenancy_tenant_isolation";
    const PREDICATE: &str = "tenant_id = (SELECT tenancy.current_tenant_id())";
    let q = quote_ident(schema);
    let mut sql = String::new();
    let mut all = Vec::with_capacity(plan.len());
    for t in plan {
        let tbl = format!("{q}.{}", quote_ident(&t.table));
        if t.add_column {
            sql.push_str(&format!(
                "ALTER TABLE {tbl} ADD COLUMN tenant_id uuid NOT NULL DEFAULT tenancy.current_tenant_id();\n"
            ));
        }
        sql.push_str(&format!(
            "ALTER TABLE {tbl} ALTER COLUMN tenant_id SET NOT NULL, ALTER COLUMN tenant_id SET DEFAULT tenancy.current_tenant_id(), \
             ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;\n"
        ));
        if t.replace_policy {
            sql.push_str(&format!("DROP POLICY IF EXISTS {POLICY} ON {tbl};\n"));
        }
        sql.push_str(&format!(
            "CREATE POLICY {POLICY} ON {tbl} AS PERMISSIVE FOR ALL TO PUBLIC USING ({PREDICATE}) WITH CHECK ({PREDICATE});\n"
        ));
        if t.create_index {
            sql.push_str(&format!("CREATE INDEX ON {tbl} (tenant_id);\n"));
        }
        all.push(tbl);
    }
    if !all.is_empty() {
        let list = all.join(", ");
        sql.push_str(&format!(
            "REVOKE ALL ON {list} FROM PUBLIC, tenancy_app;\nGRANT SELECT, INSERT, UPDATE, DELETE ON {list} TO tenancy_app;\n"
        ));
    }
    let lit = tenancy_conn::quote_literal(schema);
    let n = plan.len();
    sql.push_str(&format!(
        "DO $tenancy_check$ BEGIN
           IF (SELECT count(*) FROM pg_class c WHERE c.relnamespace = {lit}::regnamespace AND c.relkind IN ('r', 'p')) <> {n}
              OR (SELECT count(*) FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = '{POLICY}'
                   WHERE c.relnamespace = {lit}::regnamespace AND c.relkind IN ('r', 'p')
                     AND c.relrowsecurity AND c.relforcerowsecurity) <> {n}
              OR EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
                           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                          WHERE c.relnamespace = {lit}::regnamespace AND k.contype IN ('p', 'u', 'f')
                            AND NOT (a.attnum = ANY (k.conkey)))
              OR EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid
                           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                          WHERE c.relnamespace = {lit}::regnamespace AND k.contype = 'f'
                            AND NOT (a.attnum = ANY (k.confkey))) THEN
             RAISE EXCEPTION 'tenancy: the tenant tables of schema % differ from the app''s reference', {lit};
           END IF;
         END $tenancy_check$;\n"
    ));
    sql
}

/// Creates `schema` at the app's latest version in one round trip: one implicit
/// transaction (a multi-statement simple query) with the schema, the migrations, the
/// tenant-table statements generated from the app's reference, the USAGE grant and the
/// version marker. Fails with `duplicate_schema` when the schema exists; [`migrate_schema`]
/// tries this first for a new schema.
pub async fn create_schema_fast(
    owner: &mut Client,
    schema: &str,
    app: &AppMigrations,
) -> Result<(), Error> {
    let plan = tenant_table_plan(owner, app).await?;
    let q = quote_ident(schema);
    let latest = app.latest();
    let mut sql = format!(
        "SELECT pg_advisory_xact_lock(hashtext({lit}));\nCREATE SCHEMA {q};\nSET LOCAL search_path = {q};\n",
        lit = tenancy_conn::quote_literal(schema)
    );
    for m in app.after(0) {
        sql.push_str(&m.sql);
        sql.push_str(";\n");
    }
    sql.push_str("SET LOCAL search_path = pg_catalog, pg_temp;\n");
    sql.push_str(&tenant_table_sql(schema, &plan));
    sql.push_str(&format!(
        "GRANT USAGE ON SCHEMA {q} TO tenancy_app;\nCOMMENT ON SCHEMA {q} IS '{MARKER}{latest}';\n"
    ));
    owner
        .batch_execute(&sql)
        .await
        .map_err(Error::db(format!("creating schema {schema}")))
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

/// Layout of template databases; bump when what a template holds changes.
const TEMPLATE_FORMAT: &str = "tenancy-template-v1";

/// The template database dedicated tenants are cloned from: bootstrapped like any tenancy
/// database (`tenancy_sdk::bootstrap`), its `public` schema at the app's latest version,
/// and no secrets (no binding key, no context key; each clone gets its own). Named after
/// everything it is built from (the app's migrations and the SQL of tenancy's runtime), so
/// a new app version or a new runtime builds a new template.
pub fn template_name_for(app: &AppMigrations) -> String {
    let mut h = Sha256::new();
    for part in [
        TEMPLATE_FORMAT,
        &app_checksum(app),
        tenancy_sdk::bootstrap::RUNTIME_SOURCES[0],
        tenancy_sdk::bootstrap::RUNTIME_SOURCES[1],
        tenancy_sdk::bootstrap::RUNTIME_SOURCES[2],
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = format!("{:x}", h.finalize());
    format!("tenancy_template_{}", &digest[..16])
}

/// The database a template is built in before it is renamed to its final name: a
/// template exists under its final name only once complete.
pub fn template_build_name(template: &str) -> String {
    format!("{template}_build")
}

/// Removes the secrets `install_runtime` put into a database that becomes a template
/// (the binding key and the context keys). A clone without them refuses every tenant
/// context (fail closed) until [`finalize_clone`] gives it its own.
pub async fn strip_template_secrets(owner: &Client) -> Result<(), Error> {
    owner
        .batch_execute(
            "DELETE FROM tenancy_private.context_keys; DELETE FROM tenancy_private.binding_key;",
        )
        .await
        .map_err(Error::db("removing the secrets from a template database"))
}

/// Makes the built database `build` the template `template`: no connections allowed from
/// now on (CREATE DATABASE … TEMPLATE needs a template nobody is connected to; the
/// runtime role has CONNECT on it from the bootstrap), then the rename that publishes it.
pub async fn seal_template(admin: &Client, build: &str, template: &str) -> Result<(), Error> {
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {b} ALLOW_CONNECTIONS false",
            b = quote_ident(build)
        ))
        .await
        .map_err(Error::db(format!("closing template database {build}")))?;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(build),
            quote_ident(template)
        ))
        .await
        .map_err(Error::db(format!(
            "publishing template database {template}"
        )))
}

/// The `STRATEGY` clause of `CREATE DATABASE … TEMPLATE` for a server (`server_version_num`),
/// or `None` before PostgreSQL 15, which has no choice.
pub fn clone_strategy(server_version_num: i32) -> Option<&'static str> {
    (server_version_num >= 150000).then_some(CLONE_STRATEGY)
}

/// How clones are copied on PostgreSQL 15+ (see the benchmark's notes in the report).
const CLONE_STRATEGY: &str = "WAL_LOG";

/// Creates database `name` as a copy of `template` (nothing if it exists). `admin` is
/// connected to a maintenance database.
pub async fn create_database_from(
    admin: &Client,
    name: &str,
    template: &str,
    strategy: Option<&str>,
) -> Result<(), Error> {
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote_ident(name),
        quote_ident(template)
    );
    if let Some(s) = strategy {
        sql.push_str(" STRATEGY ");
        sql.push_str(s);
    }
    match admin.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(Error::db(format!(
            "creating database {name} from {template}"
        ))(e)),
    }
}

/// Whether a database-level error says the template database is missing.
pub fn is_missing_database(e: &Error) -> bool {
    matches!(e, Error::Db(DbError::Query { source, .. }) if source.code() == Some(&SqlState::UNDEFINED_DATABASE))
}

/// The database-level privileges `tenancy_sdk::bootstrap::bootstrap_database` sets
/// (`sql/database.sql`), which `CREATE DATABASE … TEMPLATE` does not copy (they live in
/// `pg_database`; everything inside the database is copied). Idempotent; `admin` may be
/// connected to any database of the cluster.
pub async fn grant_database(admin: &Client, name: &str) -> Result<(), Error> {
    let q = quote_ident(name);
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON DATABASE {q} FROM PUBLIC;
             GRANT CONNECT ON DATABASE {q} TO {RUNTIME_ROLE}, {CONFIG_READER_ROLE}, {WORKER_ROLE};
             GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {q} TO {OWNER_ROLE};"
        ))
        .await
        .map_err(Error::db(format!("granting privileges on database {name}")))
}

/// Gives a database cloned from a template its own secrets: a binding key of 64 random
/// bytes generated inside it (as `sql/runtime.sql` does; never sent anywhere) and the
/// context key the SDK signs with. Idempotent: an existing binding key is kept. Returns
/// the app version of its `public` schema. `owner` is connected to the clone as the owner
/// role.
pub async fn finalize_clone(owner: &Client, key: &ContextKey) -> Result<Option<i32>, Error> {
    tenancy_sdk::bootstrap::install_context_key(owner, key).await?;
    schema_version(owner, "public").await
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

/// Deletes every row of a pooled tenant from the tenant tables of the shared layout (every
/// schema but the system's, tenancy's own and schema tenants', as moves copy them),
/// children before parents, through the tenant's own `TenantTx` (so RLS bounds the purge
/// to it).
pub async fn purge_pooled_rows(pool: &TenantPool, tenant: TenantId) -> Result<u64, Error> {
    let mut tx = pool.begin(tenant).await?;
    // Tenant tables (with the tenancy policy) of the shared layout, and which of them
    // reference which.
    let tables = tx
        .query(
            "SELECT c.oid::regclass::text,
                    coalesce(array_agg(DISTINCT f.confrelid::regclass::text) FILTER (WHERE f.confrelid IS NOT NULL AND f.confrelid <> c.oid), '{}')
               FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = 'tenancy_tenant_isolation'
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f'
              WHERE n.nspname !~ '^(pg_|information_schema$|tenancy)' AND n.nspname !~ '^t_[0-9a-f]{32}(_b)?$'
                AND c.relkind IN ('r', 'p') AND NOT c.relispartition
              GROUP BY c.oid",
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

mod spares;
pub use spares::{
    claim_spare_database, claim_spare_schema, create_spare_schema, drop_spare_database,
    drop_spare_schema, mark_spare_database, spare_database_key_part, spare_database_name,
    spare_database_tag, spare_databases, spare_schema_name, spare_schemas, SPARE_DATABASE_MARKER,
    SPARE_DATABASE_PREFIX, SPARE_SCHEMA_PREFIX,
};
