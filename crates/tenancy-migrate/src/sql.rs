//! The SQL of one target's migration: a single simple-query message, so it runs as one
//! implicit transaction (all or nothing; on error PostgreSQL rolls it back and the
//! connection is ready for the next target), and several targets can be pipelined on
//! one connection without one's failure touching another.

use tenancy_provision::{storage::MARKER, AppMigrations};
use tenancy_sdk::bootstrap::quote_ident;

/// SQLSTATE raised when the schema's marker is not the version the plan expected
/// (the ledger lagged behind, or provisioning moved it); DETAIL carries the marker's
/// version so the engine can re-plan the target.
pub(crate) const STALE_PLAN: &str = "TM001";
/// SQLSTATE raised when the target's schema does not exist.
pub(crate) const NO_SCHEMA: &str = "TM002";

/// The tables of the schema named by SQL literal `lit`, as a subquery over `pg_class`
/// rows. Found through `pg_depend` (every relation depends on its namespace; that index
/// is keyed by the namespace) rather than `pg_class.relnamespace`, which has no index:
/// with thousands of tenant schemas the catalog holds hundreds of thousands of
/// relations, and a scan of them per target made a run quadratic.
fn tables_of(lit: &str) -> String {
    format!(
        "(SELECT c.* FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
           WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = {lit}::regnamespace
             AND d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND c.relkind IN ('r', 'p'))"
    )
}

/// Brings `schema` from version `from` (which its marker must say) to `app.latest()`:
/// takes the per-schema advisory lock that provisioning's `migrate_schema` also takes,
/// checks the marker, runs the newer migrations with `search_path` set to the schema,
/// makes new tables tenant tables, refuses keys without `tenant_id`, grants USAGE to the
/// runtime role and moves the marker — all in one transaction.
pub(crate) fn upgrade(schema: &str, from: i32, app: &AppMigrations) -> String {
    let q = quote_ident(schema);
    let lit = tenancy_conn::quote_literal(schema);
    let latest = app.latest();
    let mut sql = format!(
        "SELECT pg_advisory_xact_lock(hashtext({lit}));
DO $tenancy_guard$ DECLARE v text; n int; BEGIN
  SELECT coalesce(obj_description(oid, 'pg_namespace'), '') INTO v FROM pg_namespace WHERE nspname = {lit};
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = '{NO_SCHEMA}', MESSAGE = format('schema %s does not exist', {lit}),
      HINT = 'the tenant''s storage is missing; check its provisioning';
  END IF;
  n := coalesce(substring(v from '^{MARKER}([0-9]+)$')::int, 0);
  IF n <> {from} THEN
    RAISE EXCEPTION USING ERRCODE = '{STALE_PLAN}', MESSAGE = format('schema %s is at version %s, not {from}', {lit}, n), DETAIL = n::text;
  END IF;
END $tenancy_guard$;
SET LOCAL search_path = {q};
"
    );
    for m in app.after(from) {
        sql.push_str(&m.sql);
        sql.push_str("\n;\n");
    }
    let tables_of = tables_of(&lit);
    sql.push_str(&format!(
        "SELECT tenancy.make_tenant_table(c.oid::regclass) FROM {tables_of} c
  WHERE NOT (c.relrowsecurity AND c.relforcerowsecurity
             AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenancy_tenant_isolation'))
  ORDER BY c.oid;
DO $tenancy_keys$ DECLARE r record; BEGIN
  SELECT con.conname, con.conrelid::regclass AS tbl INTO r
    FROM {tables_of} c JOIN pg_constraint con ON con.conrelid = c.oid
    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attname = 'tenant_id'
   WHERE con.contype IN ('p', 'u', 'f') AND NOT (a.attnum = ANY (con.conkey))
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'constraint % on % does not include tenant_id', r.conname, r.tbl
      USING HINT = 'Make keys composite, e.g. UNIQUE (tenant_id, email): unique and foreign-key checks ignore row-level security.';
  END IF;
END $tenancy_keys$;
GRANT USAGE ON SCHEMA {q} TO tenancy_app;
COMMENT ON SCHEMA {q} IS '{MARKER}{latest}';"
    ));
    sql
}

/// Builds a reference schema from nothing inside the caller's transaction (drift checks):
/// every migration, every table a tenant table, no lock and no marker check.
pub(crate) fn reference(schema: &str, app: &AppMigrations) -> String {
    let q = quote_ident(schema);
    let lit = tenancy_conn::quote_literal(schema);
    let mut sql = format!("CREATE SCHEMA {q};\nSET LOCAL search_path = {q};\n");
    for m in app.all() {
        sql.push_str(&m.sql);
        sql.push_str("\n;\n");
    }
    sql.push_str(&format!(
        "SELECT tenancy.make_tenant_table(c.oid::regclass) FROM pg_class c
  WHERE c.relnamespace = {lit}::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.oid;
SET LOCAL search_path = DEFAULT;"
    ));
    sql
}

/// One row per object of each schema in `$1` (text[]): `(schema, key, value)`, with the
/// schema's own name removed from definitions so schemas can be compared.
const FINGERPRINT_ROWS: &str = "
WITH s AS (SELECT n.oid AS nsp, n.nspname, quote_ident(n.nspname) || '.' AS pfx FROM pg_namespace n WHERE n.nspname = ANY ($1::text[])),
t AS (SELECT s.nspname, s.pfx, c.oid, c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity
        FROM s JOIN pg_depend d ON d.refclassid = 'pg_namespace'::regclass AND d.refobjid = s.nsp
                               AND d.classid = 'pg_class'::regclass AND d.objsubid = 0
        JOIN pg_class c ON c.oid = d.objid
       WHERE c.relkind IN ('r', 'p'))
SELECT nspname, key, val FROM (
  SELECT t.nspname, 'table ' || t.relname AS key,
         format('kind=%s rls=%s force_rls=%s', t.relkind, t.relrowsecurity, t.relforcerowsecurity) AS val
    FROM t
  UNION ALL
  SELECT t.nspname, 'column ' || t.relname || '.' || a.attname,
         format('type=%s not_null=%s default=%s identity=%s', format_type(a.atttypid, a.atttypmod), a.attnotnull,
                replace(coalesce(pg_get_expr(d.adbin, d.adrelid), ''), t.pfx, ''), a.attidentity)
    FROM t JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = t.oid AND d.adnum = a.attnum
  UNION ALL
  SELECT t.nspname, 'index ' || i.relname, replace(pg_get_indexdef(i.oid), ' ON ' || t.pfx, ' ON ')
    FROM t JOIN pg_index ix ON ix.indrelid = t.oid JOIN pg_class i ON i.oid = ix.indexrelid
  UNION ALL
  SELECT t.nspname, 'constraint ' || t.relname || '.' || con.conname, replace(pg_get_constraintdef(con.oid), t.pfx, '')
    FROM t JOIN pg_constraint con ON con.conrelid = t.oid
  UNION ALL
  SELECT t.nspname, 'policy ' || t.relname || '.' || p.polname,
         format('cmd=%s permissive=%s roles=%s using=%s check=%s', p.polcmd, p.polpermissive, p.polroles::regrole[]::text,
                replace(coalesce(pg_get_expr(p.polqual, p.polrelid), ''), t.pfx, ''),
                replace(coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''), t.pfx, ''))
    FROM t JOIN pg_policy p ON p.polrelid = t.oid
) f";

/// Every object row of the schemas in `$1`.
pub(crate) fn fingerprint_rows() -> String {
    format!("{FINGERPRINT_ROWS} ORDER BY 1, 2")
}

/// One digest per schema in `$1`: `(schema, md5 of its sorted object rows)`.
pub(crate) fn fingerprint_digests() -> String {
    format!(
        "SELECT nspname, md5(string_agg(key || '=' || val, E'\\n' ORDER BY key)) FROM ({FINGERPRINT_ROWS}) f GROUP BY nspname"
    )
}
