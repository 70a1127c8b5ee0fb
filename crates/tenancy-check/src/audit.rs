//! The static audit: reads the system catalogues and applies every rule.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::database::{misc_rules, privilege_rules};
use crate::functions::{
    context_functions, definer_context_rules, function_rules, functions, trigger_rules, Function,
};
use crate::model::{CheckError, Finding, Report, Severity};
use crate::policies::{policies, policy_rules, unsigned_context_rule, Policy};
use crate::predicate;
use crate::reach::view_rules;
use crate::roles::{
    login_bypass_rules, role_rules, runtime_role_login_rules, runtime_role_setting_rules,
    settings_rules,
};
use crate::tables::{
    infer_keys, key_rules, keyed_tables, relations, shared_table_rules, table_rules,
    undeclared_shared, Table,
};
use crate::Options;

/// Quotes an identifier when needed.
pub(crate) fn qi(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        name.to_owned()
    } else {
        tenancy_conn::quote_ident(name)
    }
}

/// Quotes a string literal.
pub(crate) fn ql(s: &str) -> String {
    tenancy_conn::quote_literal(s)
}

pub(crate) async fn query(
    client: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> Result<Vec<Row>, CheckError> {
    client
        .query(sql, params)
        .await
        .map_err(|source| CheckError::Sql {
            what: what.to_owned(),
            source,
        })
}

/// Facts about the database and the runtime role.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub database: String,
    pub version: i32,
    pub managed: bool,
    /// `native` or `plpgsql`: from the language of `tenancy.current_tenant_id()` (C for
    /// native; SQL, reading the PL/pgSQL session context, or PL/pgSQL for the other).
    pub context_impl: Option<String>,
    pub role: String,
    pub role_oid: u32,
    pub role_super: bool,
    pub role_bypass: bool,
    /// Every other role the runtime role can `SET ROLE` to, directly or through a chain.
    pub assumable: Vec<crate::roles::Assumable>,
}

impl Target {
    /// Runs `sql` with the runtime role's oid as `$1`; `what` names it in an error.
    pub(crate) async fn rows(
        &self,
        client: &Client,
        sql: &str,
        what: &str,
    ) -> Result<Vec<Row>, CheckError> {
        query(client, sql, &[&self.role_oid], what).await
    }
}

pub(crate) async fn target(client: &Client, opts: &Options) -> Result<Target, CheckError> {
    let rows = query(
        client,
        "SELECT current_database()::text, session_user::text, current_setting('server_version_num')::int, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                  WHERE n.nspname = 'tenancy' AND p.proname = 'current_tenant_id' AND p.pronargs = 0) \
         AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app'), \
         (SELECT CASE WHEN l.lanname = 'c' THEN 'native' WHEN l.lanname IN ('sql', 'plpgsql') THEN 'plpgsql' ELSE l.lanname::text END FROM pg_catalog.pg_proc p \
            JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE p.oid = to_regprocedure('tenancy.current_tenant_id()'))",
        &[],
        "reading the database name and version",
    )
    .await?;
    let row = rows
        .first()
        .ok_or_else(|| CheckError::Connect("no answer to the first query".into()))?;
    let database: String = row.get(0);
    let session_user: String = row.get(1);
    let version: i32 = row.get(2);
    let managed: bool = row.get(3);
    let context_impl: Option<String> = row.get(4);
    let role = match &opts.runtime_role {
        Some(r) => r.clone(),
        None if managed => "tenancy_app".to_owned(),
        None => session_user.clone(),
    };
    let rows = query(
        client,
        "SELECT oid, rolsuper, rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = $1::text",
        &[&role],
        "reading the runtime role",
    )
    .await?;
    let r = rows
        .first()
        .ok_or_else(|| CheckError::NoSuchRole(role.clone()))?;
    let role_oid: u32 = r.get(0);
    let assumable = crate::roles::assumable(client, role_oid, version).await?;
    Ok(Target {
        assumable,
        database,
        version,
        managed,
        context_impl,
        role_oid: r.get(0),
        role_super: r.get(1),
        role_bypass: r.get(2),
        role,
    })
}

/// Schema of tenancy's control catalog.
pub(crate) const CATALOG_SCHEMA: &str = "tenancy_catalog";

/// A table that holds tenant rows without being a tenant table, readable by the runtime
/// role, is an error: SQL injected as the runtime role lists every tenant's rows in it
/// with no context at all. In a tenancy-managed database that holds the control catalog
/// (the embedded default), that is the tenants table itself, every catalog table with the
/// tenant column or a foreign key to the tenants table, and, outside the catalog, every
/// table without the tenant column and without row-level security that references the
/// tenants table. The runtime role
/// needs none of them: it looks one tenant up at a time through the catalog's lookup
/// functions. Column privileges count as readable too.
async fn catalog_rules(
    client: &Client,
    opts: &Options,
    t: &Target,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    if !t.managed {
        return Ok(());
    }
    let rows = query(
        client,
        "SELECT n.nspname::text || '.' || c.relname::text, n.nspname = 'tenancy_catalog' AND c.relname = 'tenants' \
           FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
            AND (has_table_privilege($1::oid, c.oid, 'SELECT') OR has_any_column_privilege($1::oid, c.oid, 'SELECT')) \
            AND ( \
                (n.nspname = 'tenancy_catalog' AND ( \
                    c.relname = 'tenants' \
                    OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = ANY ($2::text[]) \
                                AND a.attnum > 0 AND NOT a.attisdropped) \
                    OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' \
                                AND k.confrelid = to_regclass('tenancy_catalog.tenants')))) \
                OR (n.nspname NOT IN ('tenancy_catalog', 'pg_catalog', 'information_schema') AND NOT c.relrowsecurity \
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = ANY ($2::text[]) \
                                     AND a.attnum > 0 AND NOT a.attisdropped) \
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' \
                                 AND k.confrelid = to_regclass('tenancy_catalog.tenants'))) \
            ) ORDER BY 1",
        &[&t.role_oid, &opts.tenant_columns],
        "listing readable tables that hold tenant rows",
    )
    .await?;
    for r in rows {
        let object: String = r.get(0);
        let is_tenants: bool = r.get(1);
        let what = if is_tenants {
            "lists every tenant (id, slug, name, plan, state, billing link)".to_owned()
        } else {
            format!(
                "holds rows of every tenant (a {} column or a reference to the tenants table) outside row-level security",
                opts.tenant_columns.join(" or ")
            )
        };
        f.push(Finding::new(
            "catalog-readable",
            Severity::Error,
            object.clone(),
            format!(
                "{object} {what} and the runtime role can read it: SQL injected as the runtime role reads all of it without any tenant context. \
                 The runtime role needs no catalog table; it looks one tenant up by a key it holds through tenancy_catalog's lookup functions"
            ),
            format!("REVOKE ALL ON {object} FROM {};", qi(&t.role)),
        ));
    }
    Ok(())
}

/// Runs the static audit of the database `client` is connected to.
pub async fn audit(client: &Client, opts: &Options) -> Result<Report, CheckError> {
    let t = target(client, opts).await?;
    let (rels, fks) = relations(client, opts, &t).await?;
    let pols = policies(client, &t).await?;
    let funcs = functions(client, &t).await?;
    let ctx_fns = context_functions(&funcs);
    let keys = infer_keys(&rels, &fks, &pols, &ctx_fns, opts);
    let all_tables = keyed_tables(client, &t, &keys).await?;
    // Tables keyed by inference that the runtime role cannot touch are not its concern
    // (they still count for what views and functions reach).
    let tables: Vec<Table> = all_tables
        .iter()
        .filter(|tb| tb.in_scope())
        .cloned()
        .collect();
    let mut f: Vec<Finding> = Vec::new();

    role_rules(&t, &mut f);
    let all_by_oid: HashMap<u32, &Table> = all_tables.iter().map(|tb| (tb.oid, tb)).collect();
    let by_oid: HashMap<u32, &Table> = tables.iter().map(|tb| (tb.oid, tb)).collect();
    let fn_by_oid: HashMap<u32, &Function> = funcs.iter().map(|x| (x.oid, x)).collect();
    let mut unsigned_tables = Vec::new();
    for tb in &tables {
        table_rules(&t, tb, &mut f);
        let tpols: Vec<&Policy> = pols.iter().filter(|p| p.table == tb.oid).collect();
        policy_rules(&t, tb, &tpols, &fn_by_oid, &mut unsigned_tables, &mut f);
    }
    unsigned_context_rule(&t, &unsigned_tables, &mut f);
    let mut rows: HashMap<u32, Option<bool>> = HashMap::new();
    for r in undeclared_shared(&rels, &keys) {
        // Read-only and rolled back; with row_security off, a table whose policies would
        // hide rows from the connecting role fails to read (unknown) instead of looking empty.
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{})",
            qi(&r.schema),
            qi(&r.name)
        );
        let has = match client
            .batch_execute("BEGIN READ ONLY; SET LOCAL row_security = off")
            .await
        {
            Ok(()) => client
                .query_one(&sql, &[])
                .await
                .ok()
                .map(|row| row.get::<_, bool>(0)),
            Err(_) => None,
        };
        let _ = client.batch_execute("ROLLBACK").await;
        rows.insert(r.oid, has);
    }
    shared_table_rules(&t, &rels, &keys, &rows, opts, &mut f);
    let mut gucs: Vec<String> = pols
        .iter()
        .flat_map(|p| [p.using.as_deref(), p.check.as_deref()])
        .flatten()
        .flat_map(predicate::settings_read)
        .collect();
    for p in &pols {
        for oid in &p.functions {
            if let Some(func) = fn_by_oid.get(oid) {
                if !func.trusted {
                    gucs.extend(predicate::settings_read(&func.body));
                }
            }
        }
    }
    if let Some(g) = &opts.context_guc {
        gucs.push(g.to_lowercase());
    }
    gucs.push("tenancy.ctx".into());
    gucs.sort();
    gucs.dedup();

    view_rules(client, &t, &all_by_oid, &funcs, &pols, &ctx_fns, &mut f).await?;
    let ignoring =
        definer_context_rules(client, opts, &t, &tables, &pols, &funcs, &gucs, &mut f).await?;
    function_rules(&t, &tables, &funcs, &ignoring, &mut f);
    trigger_rules(client, &by_oid, &mut f).await?;
    key_rules(client, &by_oid, &mut f).await?;
    privilege_rules(client, &t, &mut f).await?;
    settings_rules(client, &t, &gucs, &mut f).await?;
    runtime_role_setting_rules(client, &t, &gucs, &mut f).await?;
    runtime_role_login_rules(client, &t, &mut f).await?;
    let oids: Vec<u32> = all_tables.iter().map(|tb| tb.oid).collect();
    login_bypass_rules(client, &t, &oids, &mut f).await?;
    misc_rules(client, &t, &by_oid, &mut f).await?;
    catalog_rules(client, opts, &t, &mut f).await?;

    let mut report = Report {
        findings: f,
        database: t.database.clone(),
        runtime_role: t.role.clone(),
        tenancy_managed: t.managed,
        server_version: t.version,
        context_impl: t.context_impl.clone(),
        tenant_tables: tables.iter().map(Table::object).collect(),
    };
    report.normalize();
    Ok(report)
}
