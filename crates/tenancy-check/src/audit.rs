//! The static audit: reads the system catalogues and applies every rule.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::model::{CheckError, Finding, Report, Severity};
use crate::predicate::{self, Shape};
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
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Quotes a string literal.
pub(crate) fn ql(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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
    /// `native` or `plpgsql`: the language of `tenancy.current_tenant_id()`.
    pub context_impl: Option<String>,
    pub role: String,
    pub role_oid: u32,
    pub role_super: bool,
    pub role_bypass: bool,
}

pub(crate) async fn target(client: &Client, opts: &Options) -> Result<Target, CheckError> {
    let rows = query(
        client,
        "SELECT current_database()::text, session_user::text, current_setting('server_version_num')::int, \
         EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                  WHERE n.nspname = 'tenancy' AND p.proname = 'current_tenant_id' AND p.pronargs = 0) \
         AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tenancy_app'), \
         (SELECT CASE l.lanname WHEN 'c' THEN 'native' ELSE l.lanname::text END FROM pg_catalog.pg_proc p \
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
    Ok(Target {
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

/// A table that has the tenant column.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub rls: bool,
    pub force: bool,
    pub owner: String,
    pub col_name: String,
    pub col_attnum: i16,
    pub col_notnull: bool,
    pub col_type: String,
    pub is_child: bool,
    pub role_is_owner: bool,
    pub role_owns: bool,
    pub sel: bool,
    pub ins: bool,
    pub upd: bool,
    pub del: bool,
    pub truncate: bool,
    pub references: bool,
    pub trigger: bool,
    pub col_updatable: bool,
    pub indexed: bool,
}

impl Table {
    pub fn qname(&self) -> String {
        format!("{}.{}", qi(&self.schema), qi(&self.name))
    }
    pub fn object(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    fn any_dml(&self) -> bool {
        self.sel || self.ins || self.upd || self.del
    }
}

pub(crate) async fn tenant_tables(
    client: &Client,
    opts: &Options,
    t: &Target,
) -> Result<Vec<Table>, CheckError> {
    let rows = query(
        client,
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relrowsecurity, c.relforcerowsecurity, \
                pg_get_userbyid(c.relowner)::text, o.rolsuper OR o.rolbypassrls, a.attnum, a.attnotnull, \
                format_type(a.atttypid, a.atttypmod), \
                EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid), \
                c.relowner = $1::oid, pg_has_role($1::oid, c.relowner, 'MEMBER'), \
                has_table_privilege($1::oid, c.oid, 'SELECT'), has_table_privilege($1::oid, c.oid, 'INSERT'), \
                has_table_privilege($1::oid, c.oid, 'UPDATE'), has_table_privilege($1::oid, c.oid, 'DELETE'), \
                has_table_privilege($1::oid, c.oid, 'TRUNCATE'), has_table_privilege($1::oid, c.oid, 'REFERENCES'), \
                has_table_privilege($1::oid, c.oid, 'TRIGGER'), has_column_privilege($1::oid, c.oid, a.attnum, 'UPDATE'), \
                EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = c.oid AND x.indkey[0] = a.attnum) \
           FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $2::text::name AND a.attnum > 0 AND NOT a.attisdropped \
           JOIN pg_catalog.pg_roles o ON o.oid = c.relowner \
          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
          ORDER BY 2, 3",
        &[&t.role_oid, &opts.tenant_column],
        "listing tenant tables",
    )
    .await?;
    let globals: HashSet<String> = opts
        .global_tables
        .iter()
        .map(|g| g.trim().to_owned())
        .collect();
    let mut out = Vec::new();
    for r in rows {
        let tb = Table {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            rls: r.get(3),
            force: r.get(4),
            owner: r.get(5),
            col_name: opts.tenant_column.clone(),
            col_attnum: r.get(7),
            col_notnull: r.get(8),
            col_type: r.get(9),
            is_child: r.get(10),
            role_is_owner: r.get(11),
            role_owns: r.get(12),
            sel: r.get(13),
            ins: r.get(14),
            upd: r.get(15),
            del: r.get(16),
            truncate: r.get(17),
            references: r.get(18),
            trigger: r.get(19),
            col_updatable: r.get(20),
            indexed: r.get(21),
        };
        if globals.contains(&tb.object()) || (tb.schema == "public" && globals.contains(&tb.name)) {
            continue;
        }
        // In a tenancy-managed database the control catalog is global by design; it is
        // reported once by `catalog_rules` instead of as tenant tables.
        if t.managed && tb.schema == CATALOG_SCHEMA {
            continue;
        }
        out.push(tb);
    }
    Ok(out)
}

/// A row-level security policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub table: u32,
    pub name: String,
    /// `r` SELECT, `a` INSERT, `w` UPDATE, `d` DELETE, `*` ALL.
    pub cmd: String,
    pub permissive: bool,
    pub to_public: bool,
    pub applies: bool,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
    pub functions: Vec<u32>,
}

impl Policy {
    fn cmd_sql(&self) -> &'static str {
        match self.cmd.as_str() {
            "r" => "SELECT",
            "a" => "INSERT",
            "w" => "UPDATE",
            "d" => "DELETE",
            _ => "ALL",
        }
    }
    fn covers(&self, cmd: &str) -> bool {
        self.cmd == "*" || self.cmd == cmd
    }
}

pub(crate) async fn policies(client: &Client, t: &Target) -> Result<Vec<Policy>, CheckError> {
    let rows = query(
        client,
        "SELECT p.polrelid, p.polname::text, p.polcmd::text, p.polpermissive, 0::oid = ANY (p.polroles), \
                EXISTS (SELECT 1 FROM unnest(p.polroles) r WHERE r = 0 OR pg_has_role($1::oid, r, 'USAGE')), \
                ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) r), \
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), \
                ARRAY(SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_policy'::regclass \
                       AND d.objid = p.oid AND d.refclassid = 'pg_catalog.pg_proc'::regclass) \
           FROM pg_catalog.pg_policy p ORDER BY p.polname",
        &[&t.role_oid],
        "reading policies",
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Policy {
            table: r.get(0),
            name: r.get(1),
            cmd: r.get(2),
            permissive: r.get(3),
            to_public: r.get(4),
            applies: r.get(5),
            roles: r.get(6),
            using: r.get(7),
            check: r.get(8),
            functions: r.get(9),
        })
        .collect())
}

/// A user-defined function.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub oid: u32,
    pub qname: String,
    pub signature: String,
    pub secdef: bool,
    pub volatile: bool,
    pub leakproof: bool,
    pub language: String,
    pub body: String,
    pub owner: String,
    pub owner_bypass: bool,
    pub executable: bool,
    pub nargs: i16,
    pub name: String,
    /// One of tenancy's own context functions (`tenancy.enter`, the native
    /// `tenancy.enter_read_only`, `tenancy.current_tenant_id`), trusted by design.
    pub trusted: bool,
    /// Declared a narrow lookup by its comment ([`NARROW_LOOKUP_MARK`]) and not owned by
    /// the runtime role (which could otherwise declare its own functions narrow).
    pub narrow_lookup: bool,
    /// Whether it can hand values back: a set, a row, or a scalar other than `void`,
    /// `boolean`, an integer or a trigger.
    pub returns_data: bool,
}

/// A comment on a SECURITY DEFINER function that starts with this declares it a narrow
/// lookup: it finds one row by a key the caller already holds (a tenant id, slug, verified
/// domain, API key id and secret) and returns no more than that row. The catalog's
/// lookups carry it; `security-definer-ignores-context` does not report such functions.
pub(crate) const NARROW_LOOKUP_MARK: &str = "tenancy:narrow-lookup";

async fn functions(client: &Client, t: &Target) -> Result<Vec<Function>, CheckError> {
    let rows = query(
        client,
        "SELECT p.oid, quote_ident(n.nspname) || '.' || quote_ident(p.proname), pg_get_function_identity_arguments(p.oid), \
                p.prosecdef, p.provolatile = 'v', p.proleakproof, l.lanname::text, coalesce(p.prosrc, ''), \
                pg_get_userbyid(p.proowner)::text, o.rolsuper OR o.rolbypassrls, has_function_privilege($1::oid, p.oid, 'EXECUTE'), \
                p.pronargs, p.proname::text, coalesce(obj_description(p.oid, 'pg_proc'), ''), pg_has_role($1::oid, p.proowner, 'MEMBER'), \
                n.nspname::text, \
                p.proretset OR p.prorettype NOT IN ('void'::regtype, 'bool'::regtype, 'int2'::regtype, 'int4'::regtype, \
                                                   'int8'::regtype, 'trigger'::regtype, 'event_trigger'::regtype) \
           FROM pg_catalog.pg_proc p \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
           JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
           JOIN pg_catalog.pg_roles o ON o.oid = p.proowner \
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p') \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass \
                             AND d.objid = p.oid AND d.deptype = 'e')",
        &[&t.role_oid],
        "reading functions",
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let comment: String = r.get(13);
            let role_member_of_owner: bool = r.get(14);
            let schema: String = r.get(15);
            let name: String = r.get(12);
            let trusted = schema == "tenancy"
                && !role_member_of_owner
                && (((name == "enter" || name == "enter_read_only")
                    && comment == "tenancy:context-enter")
                    || (name == "current_tenant_id" && comment == "tenancy:context-read"));
            Function {
                oid: r.get(0),
                qname: r.get(1),
                signature: r.get(2),
                secdef: r.get(3),
                volatile: r.get(4),
                leakproof: r.get(5),
                language: r.get(6),
                body: r.get(7),
                owner: r.get(8),
                owner_bypass: r.get(9),
                executable: r.get(10),
                nargs: r.get(11),
                name,
                trusted,
                narrow_lookup: comment.starts_with(NARROW_LOOKUP_MARK) && !role_member_of_owner,
                returns_data: r.get(16),
            }
        })
        .collect())
}

/// Schema of tenancy's control catalog.
const CATALOG_SCHEMA: &str = "tenancy_catalog";

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
                    OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2::text::name \
                                AND a.attnum > 0 AND NOT a.attisdropped) \
                    OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' \
                                AND k.confrelid = to_regclass('tenancy_catalog.tenants')))) \
                OR (n.nspname NOT IN ('tenancy_catalog', 'pg_catalog', 'information_schema') AND NOT c.relrowsecurity \
                    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attname = $2::text::name \
                                     AND a.attnum > 0 AND NOT a.attisdropped) \
                    AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' \
                                 AND k.confrelid = to_regclass('tenancy_catalog.tenants'))) \
            ) ORDER BY 1",
        &[&t.role_oid, &opts.tenant_column],
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
                opts.tenant_column
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
    let tables = tenant_tables(client, opts, &t).await?;
    let pols = policies(client, &t).await?;
    let funcs = functions(client, &t).await?;
    let mut f: Vec<Finding> = Vec::new();

    role_rules(&t, &mut f);
    let by_oid: HashMap<u32, &Table> = tables.iter().map(|tb| (tb.oid, tb)).collect();
    let fn_by_oid: HashMap<u32, &Function> = funcs.iter().map(|x| (x.oid, x)).collect();
    for tb in &tables {
        table_rules(&t, opts, tb, &mut f);
        let tpols: Vec<&Policy> = pols.iter().filter(|p| p.table == tb.oid).collect();
        policy_rules(&t, opts, tb, &tpols, &fn_by_oid, &mut f);
    }
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

    view_rules(client, &t, &by_oid, &mut f).await?;
    let ignoring =
        definer_context_rules(client, opts, &t, &tables, &pols, &funcs, &gucs, &mut f).await?;
    function_rules(&t, &tables, &funcs, &ignoring, &mut f);
    trigger_rules(client, &by_oid, &mut f).await?;
    key_rules(client, opts, &by_oid, &mut f).await?;
    privilege_rules(client, &t, &mut f).await?;
    settings_rules(client, &t, &gucs, &mut f).await?;
    runtime_role_setting_rules(client, &t, &gucs, &mut f).await?;
    runtime_role_login_rules(client, &t, &mut f).await?;
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

fn role_rules(t: &Target, f: &mut Vec<Finding>) {
    if t.role_super {
        f.push(Finding::new(
            "runtime-role-superuser",
            Severity::Error,
            &t.role,
            format!("The runtime role {} is a superuser. Superusers bypass row-level security, FORCE included, so every query sees every tenant's rows.", t.role),
            format!("ALTER ROLE {} NOSUPERUSER;", qi(&t.role)),
        ));
    }
    if t.role_bypass {
        f.push(Finding::new(
            "runtime-role-bypassrls",
            Severity::Error,
            &t.role,
            format!("The runtime role {} has BYPASSRLS: row-level security never applies to it, FORCE included.", t.role),
            format!("ALTER ROLE {} NOBYPASSRLS;", qi(&t.role)),
        ));
    }
}

fn table_rules(t: &Target, opts: &Options, tb: &Table, f: &mut Vec<Finding>) {
    let obj = tb.object();
    let q = tb.qname();
    let col = &opts.tenant_column;
    if tb.is_child {
        if tb.any_dml() && (!tb.rls || (tb.role_owns && !tb.force)) {
            f.push(Finding::new(
                "partition-unprotected",
                Severity::Error,
                &obj,
                format!("{obj} is a partition or inheritance child of a tenant table and the runtime role can query it directly. Policies apply to the table named in the query, so direct access to the child skips the parent's policies{}.", if tb.rls { " (and the child is owned by the runtime role without FORCE)" } else { " and the child has no row-level security of its own" }),
                format!("REVOKE ALL ON {q} FROM {role}, PUBLIC;  -- or: ALTER TABLE {q} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; plus a tenant policy", role = qi(&t.role)),
            ));
        }
    } else if !tb.rls {
        let sev = if tb.any_dml() || tb.role_owns {
            Severity::Error
        } else {
            Severity::Warning
        };
        f.push(Finding::new(
            "rls-disabled",
            sev,
            &obj,
            format!("{obj} has a {col} column but row-level security is disabled: {}.", if sev == Severity::Error { "the runtime role reads and writes every tenant's rows" } else { "any role granted access later sees every tenant's rows" }),
            format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;\nCREATE POLICY tenant_isolation ON {q} USING ({c} = (SELECT <context function>())) WITH CHECK ({c} = (SELECT <context function>()));", c = qi(col)),
        ));
    } else if !tb.force {
        let sev = if tb.role_owns && !t.role_super {
            Severity::Error
        } else {
            Severity::Warning
        };
        f.push(Finding::new(
            "rls-not-forced",
            sev,
            &obj,
            if sev == Severity::Error {
                format!("Row-level security on {obj} is not forced and the runtime role {} owns it (or is a member of its owner {}): table owners bypass non-forced RLS and see every tenant's rows.", t.role, tb.owner)
            } else {
                format!("Row-level security on {obj} is not forced, so its owner {} bypasses it (migrations, admin tools, views and SECURITY DEFINER functions owned by {} see all tenants).", tb.owner, tb.owner)
            },
            format!("ALTER TABLE {q} FORCE ROW LEVEL SECURITY;"),
        ));
    }
    if tb.role_owns && !t.role_super {
        let (rule, msg) = if tb.role_is_owner {
            ("runtime-role-owner", format!("The runtime role {} owns {obj}. An owner can disable row-level security, drop policies and (without FORCE) bypass them.", t.role))
        } else {
            ("runtime-role-member-of-owner", format!("The runtime role {} is a member (directly or through other roles) of {}, the owner of {obj}. It can SET ROLE to the owner and disable row-level security or drop policies.", t.role, tb.owner))
        };
        f.push(Finding::new(
            rule,
            Severity::Error,
            &obj,
            msg,
            if tb.role_is_owner {
                format!("ALTER TABLE {q} OWNER TO <migration owner role, NOLOGIN>;")
            } else {
                format!("REVOKE {} FROM {};", qi(&tb.owner), qi(&t.role))
            },
        ));
    }
    if !tb.col_notnull {
        f.push(Finding::new(
            "tenant-column-nullable",
            Severity::Warning,
            &obj,
            format!("{obj}.{col} is nullable. Rows without a tenant belong to nobody; with a fail-open policy (IS NULL OR …) or a NULL context they become everybody's."),
            format!("ALTER TABLE {q} ALTER COLUMN {c} SET NOT NULL;", c = qi(col)),
        ));
    }
    if !tb.indexed {
        f.push(Finding::new(
            "tenant-column-not-indexed",
            Severity::Warning,
            &obj,
            format!("No index on {obj} leads with {col}: every tenant-scoped query filters by it, so queries scan all tenants' rows (a performance trap that also makes timing reveal other tenants' volume)."),
            format!("CREATE INDEX ON {q} ({c});", c = qi(col)),
        ));
    }
    if tb.truncate {
        f.push(Finding::new(
            "privilege-truncate",
            Severity::Error,
            &obj,
            format!("The runtime role may TRUNCATE {obj}. TRUNCATE ignores row-level security and removes every tenant's rows."),
            format!("REVOKE TRUNCATE ON {q} FROM {}, PUBLIC;", qi(&t.role)),
        ));
    }
    if tb.references {
        f.push(Finding::new(
            "privilege-references",
            Severity::Warning,
            &obj,
            format!("The runtime role has REFERENCES on {obj}. Foreign-key checks ignore row-level security, so a referencing table can probe which keys exist in other tenants."),
            format!("REVOKE REFERENCES ON {q} FROM {}, PUBLIC;", qi(&t.role)),
        ));
    }
    if tb.trigger {
        f.push(Finding::new(
            "privilege-trigger",
            Severity::Warning,
            &obj,
            format!("The runtime role has TRIGGER on {obj}: it can attach triggers that run on other tenants' writes."),
            format!("REVOKE TRIGGER ON {q} FROM {}, PUBLIC;", qi(&t.role)),
        ));
    }
}

/// Whether a widening finding is neutralised by a restrictive tenant floor for `cmd`.
fn has_floor(pols: &[&Policy], cmd: &str, col: &str) -> bool {
    pols.iter().any(|p| {
        !p.permissive
            && p.applies
            && p.covers(cmd)
            && p.using
                .as_deref()
                .or(p.check.as_deref())
                .is_some_and(|e| predicate::classify(e, col) == Shape::Tenant)
    })
}

fn shape_finding(
    shape: &Shape,
    obj: &str,
    where_: &str,
    col: &str,
) -> Option<(&'static str, Severity, String)> {
    match shape {
        Shape::Tenant => None,
        Shape::AlwaysTrue => Some(("policy-always-true", Severity::Error, format!("{where_} is always true: every tenant's rows pass."))),
        Shape::FailOpen => Some((
            "policy-fail-open",
            Severity::Error,
            format!("{where_} has the fail-open shape `… IS NULL OR …`: when the tenant context is unset (a forgotten SET, a pooled connection, a background job) every tenant's rows pass."),
        )),
        Shape::OrWidened { all_branches_tenant } => Some((
            "policy-or-widened",
            if *all_branches_tenant { Severity::Warning } else { Severity::Error },
            format!("{where_} is widened with OR: rows that match the other branch are visible to every tenant of {obj}."),
        )),
        Shape::NoTenantColumn => Some(("policy-no-tenant-column", Severity::Error, format!("{where_} does not reference {col}, so it does not separate tenants."))),
    }
}

fn policy_rules(
    t: &Target,
    opts: &Options,
    tb: &Table,
    pols: &[&Policy],
    fns: &HashMap<u32, &Function>,
    f: &mut Vec<Finding>,
) {
    let obj = tb.object();
    let q = tb.qname();
    let col = opts.tenant_column.as_str();
    let good = format!("{c} = (SELECT <context function>())", c = qi(col));
    if tb.rls
        && !tb.is_child
        && !t.role_super
        && !t.role_bypass
        && !pols.iter().any(|p| p.permissive && p.applies)
    {
        f.push(Finding::new(
            "no-policy",
            Severity::Info,
            &obj,
            format!("{obj} has row-level security enabled but no permissive policy applies to {}: it sees no rows and cannot write (deny-all). Not a leak, but probably not intended.", t.role),
            format!("CREATE POLICY tenant_isolation ON {q} USING ({good}) WITH CHECK ({good});"),
        ));
    }
    let mut unwrapped = false;
    for p in pols {
        let pname = qi(&p.name);
        let fix_pol = format!("DROP POLICY {pname} ON {q};\nCREATE POLICY {pname} ON {q} AS PERMISSIVE FOR {} TO {} USING ({good}) WITH CHECK ({good});", p.cmd_sql(), qi(&t.role));
        let called: Vec<&Function> = p
            .functions
            .iter()
            .filter_map(|o| fns.get(o).copied())
            .collect();
        // Widening shapes, in the predicate and in functions it calls.
        if p.permissive {
            let mut shapes: Vec<(Shape, String, bool)> = Vec::new();
            if p.cmd != "a" {
                if let Some(u) = &p.using {
                    shapes.push((
                        predicate::classify(u, col),
                        format!("The USING expression of policy {} on {obj} ({u})", p.name),
                        false,
                    ));
                }
            }
            if let Some(c) = &p.check {
                let s = predicate::classify(c, col);
                shapes.push((
                    s,
                    format!(
                        "The WITH CHECK expression of policy {} on {obj} ({c})",
                        p.name
                    ),
                    true,
                ));
            }
            for func in &called {
                if func.trusted || !(func.language == "sql" || func.language == "plpgsql") {
                    continue;
                }
                if let Some(s) = predicate::body_shape(&func.body) {
                    shapes.push((
                        s,
                        format!(
                            "Function {}({}), called by policy {} on {obj},",
                            func.qname, func.signature, p.name
                        ),
                        false,
                    ));
                }
            }
            // A predicate that calls a function may check the tenant inside it.
            let calls_user_fn = !called.is_empty();
            for (shape, where_, is_check) in shapes {
                let shape = if shape == Shape::NoTenantColumn && calls_user_fn {
                    Shape::Tenant
                } else {
                    shape
                };
                let Some((mut rule, mut sev, mut msg)) = shape_finding(&shape, &obj, &where_, col)
                else {
                    continue;
                };
                if is_check && shape == Shape::AlwaysTrue {
                    rule = "with-check-true";
                    msg = format!("{where_} is WITH CHECK (true): the runtime role can write rows for any tenant ({} through this policy).", if p.cmd == "a" { "INSERT" } else { "INSERT/UPDATE" });
                }
                if !p.applies {
                    // A policy only for the table's owner grants nothing the owner lacks (it
                    // can disable row-level security on its own table); what matters is
                    // which definer functions run as the owner, which
                    // `security-definer-ignores-context` checks.
                    let owner_only = p.roles.iter().all(|r| *r == tb.owner);
                    let (sev, why) = if owner_only {
                        (Severity::Info, format!("The policy is only for the table's owner {}, which can read every row of its own table anyway; definer functions the runtime role may call are checked by security-definer-ignores-context.", tb.owner))
                    } else {
                        (Severity::Warning, format!("The policy is for {} (not the runtime role {}), so those roles read or write across tenants.", p.roles.join(", "), t.role))
                    };
                    f.push(Finding::new(
                        "policy-other-role-widened",
                        sev,
                        &obj,
                        format!("{msg} {why}"),
                        fix_pol.replace(
                            &format!("TO {}", qi(&t.role)),
                            &format!(
                                "TO {}",
                                p.roles
                                    .iter()
                                    .map(|r| if r == "PUBLIC" { r.clone() } else { qi(r) })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    ));
                    continue;
                }
                let cmd_key = if p.cmd == "*" { "r" } else { p.cmd.as_str() };
                if sev == Severity::Error && has_floor(pols, cmd_key, col) {
                    sev = Severity::Warning;
                    msg.push_str(" A RESTRICTIVE tenant policy still limits the rows, so this is not exploitable on its own.");
                }
                if p.to_public {
                    msg.push_str(" The policy applies TO PUBLIC, i.e. to every role.");
                }
                f.push(Finding::new(rule, sev, &obj, msg, fix_pol.clone()));
            }
            // Tenant column writable through UPDATE without tenant protection.
            if p.applies && p.covers("w") && tb.col_updatable && tb.rls {
                let eff = p.check.as_deref().or(p.using.as_deref());
                let protected = eff.is_some_and(|e| {
                    predicate::classify(e, col) == Shape::Tenant || !called.is_empty()
                });
                if !protected {
                    f.push(Finding::new(
                        "tenant-column-updatable",
                        Severity::Error,
                        &obj,
                        format!("The runtime role may UPDATE {obj}.{col} and policy {} does not check the new row's tenant: an UPDATE can move a row to another tenant.", p.name),
                        format!("{fix_pol}\nREVOKE UPDATE ({c}) ON {q} FROM {r};", c = qi(col), r = qi(&t.role)),
                    ));
                }
            }
        }
        if !p.applies {
            continue;
        }
        // Unsigned context, initplan and volatility.
        let exprs: Vec<&str> = [p.using.as_deref(), p.check.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let mut unsigned = exprs.iter().any(|e| predicate::reads_setting(e));
        for func in &called {
            if !func.trusted && predicate::reads_setting(&func.body) {
                unsigned = true;
            }
            if func.volatile && !func.trusted {
                f.push(Finding::new(
                    "policy-volatile-function",
                    Severity::Warning,
                    &obj,
                    format!("Policy {} on {obj} calls VOLATILE function {}: it runs for every row and blocks index use.", p.name, func.qname),
                    format!("ALTER FUNCTION {}({}) STABLE;", func.qname, func.signature),
                ));
            }
            if func.nargs == 0
                && exprs
                    .iter()
                    .any(|e| predicate::unwrapped_calls(e, &func.name) > 0)
            {
                unwrapped = true;
            }
        }
        if exprs
            .iter()
            .any(|e| predicate::unwrapped_calls(e, "current_setting") > 0)
        {
            unwrapped = true;
        }
        if unsigned {
            f.push(Finding::new(
                "policy-unsigned-context",
                Severity::Warning,
                &obj,
                format!("Policy {} on {obj} takes the tenant from a setting read with current_setting(). Placeholder settings can be changed by any role, so SQL injected into one statement can call set_config(…) and switch tenant for the rest of the transaction.", p.name),
                format!("-- verify a signed context inside the database, e.g. tenancy's\nCREATE POLICY {pname} ON {q} USING ({c} = (SELECT tenancy.current_tenant_id())) WITH CHECK ({c} = (SELECT tenancy.current_tenant_id()));", c = qi(col)),
            ));
        }
    }
    if unwrapped {
        f.push(Finding::new(
            "policy-initplan",
            Severity::Warning,
            &obj,
            format!("A policy on {obj} calls its context function directly instead of as (SELECT …), so PostgreSQL evaluates it once per row instead of once per statement."),
            format!("-- wrap the call: USING ({c} = (SELECT <context function>()))", c = qi(col)),
        ));
    }
}

async fn view_rules(
    client: &Client,
    t: &Target,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT DISTINCT v.oid, n.nspname::text, v.relname::text, v.relkind::text, pg_get_userbyid(v.relowner)::text, \
                vo.rolsuper OR vo.rolbypassrls, \
                EXISTS (SELECT 1 FROM unnest(coalesce(v.reloptions, '{}'::text[])) o \
                         WHERE lower(o) IN ('security_invoker=true', 'security_invoker=on', 'security_invoker=1', 'security_invoker=yes')), \
                has_table_privilege($1::oid, v.oid, 'SELECT'), b.oid, pg_has_role(v.relowner, b.relowner, 'USAGE') \
           FROM pg_catalog.pg_class v \
           JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
           JOIN pg_catalog.pg_roles vo ON vo.oid = v.relowner \
           JOIN pg_catalog.pg_rewrite rw ON rw.ev_class = v.oid \
           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = rw.oid \
                AND d.refclassid = 'pg_catalog.pg_class'::regclass \
           JOIN pg_catalog.pg_class b ON b.oid = d.refobjid AND b.oid <> v.oid \
          WHERE v.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        &[&t.role_oid],
        "reading views",
    )
    .await?;
    for r in rows {
        let base: u32 = r.get(8);
        let Some(tb) = tables.get(&base) else {
            continue;
        };
        let schema: String = r.get(1);
        let name: String = r.get(2);
        let kind: String = r.get(3);
        let owner: String = r.get(4);
        let owner_bypass: bool = r.get(5);
        let invoker: bool = r.get(6);
        let readable: bool = r.get(7);
        let owner_owns_base: bool = r.get(9);
        let obj = format!("{schema}.{name}");
        let qv = format!("{}.{}", qi(&schema), qi(&name));
        if !readable {
            continue;
        }
        if kind == "m" {
            f.push(Finding::new(
                "matview-tenant-data",
                Severity::Error,
                &obj,
                format!("Materialized view {obj} holds rows of tenant table {} and the runtime role can read it. Materialized views cannot have row-level security; REFRESH runs as the owner {owner}.", tb.object()),
                format!("REVOKE ALL ON {qv} FROM {}, PUBLIC;", qi(&t.role)),
            ));
            continue;
        }
        let bypass = owner_bypass || !tb.rls || (owner_owns_base && !tb.force);
        if !invoker && bypass {
            f.push(Finding::new(
                "view-bypasses-rls",
                Severity::Error,
                &obj,
                format!("View {obj} reads tenant table {} with the privileges of its owner {owner}, who bypasses row-level security on it ({}); the runtime role can SELECT from the view and see every tenant's rows.", tb.object(), if owner_bypass { "superuser or BYPASSRLS" } else if !tb.rls { "RLS is disabled" } else { "owner of a table without FORCE" }),
                if t.version >= 150000 { format!("ALTER VIEW {qv} SET (security_invoker = true);") } else { format!("ALTER VIEW {qv} OWNER TO <a NOSUPERUSER NOBYPASSRLS role that is not the table owner>;") },
            ));
        }
    }
    // Foreign tables.
    let rows = query(
        client,
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind = 'f' AND has_table_privilege($1::oid, c.oid, 'SELECT')",
        &[&t.role_oid],
        "reading foreign tables",
    )
    .await?;
    for r in rows {
        let s: String = r.get(0);
        let n: String = r.get(1);
        f.push(Finding::new(
            "foreign-table-readable",
            Severity::Warning,
            format!("{s}.{n}"),
            format!("The runtime role can read foreign table {s}.{n}. Foreign tables do not enforce row-level security; the remote side decides what is returned."),
            format!("REVOKE ALL ON {}.{} FROM {}, PUBLIC;", qi(&s), qi(&n), qi(&t.role)),
        ));
    }
    Ok(())
}

fn function_rules(
    t: &Target,
    tables: &[Table],
    funcs: &[Function],
    reported: &HashSet<u32>,
    f: &mut Vec<Finding>,
) {
    for func in funcs {
        let obj = format!("{}({})", func.qname.replace('"', ""), func.signature);
        let qf = format!("{}({})", func.qname, func.signature);
        if func.leakproof {
            f.push(Finding::new(
                "leakproof-function",
                Severity::Warning,
                &obj,
                format!("{obj} is marked LEAKPROOF, so PostgreSQL may run it on rows before the policy filters them; if it can raise errors or notices that depend on its input, it leaks other tenants' values."),
                format!("ALTER FUNCTION {qf} NOT LEAKPROOF;"),
            ));
        }
        // `security-definer-ignores-context` already reported it, more precisely; a
        // declared narrow lookup is reviewed by whoever wrote its comment.
        if !func.secdef
            || !func.executable
            || func.trusted
            || func.narrow_lookup
            || reported.contains(&func.oid)
        {
            continue;
        }
        let body = func.body.to_lowercase();
        let reads: Vec<&Table> = tables
            .iter()
            .filter(|tb| predicate::references(&body, &tb.name.to_lowercase()))
            .collect();
        let bypassing: Vec<&&Table> = reads
            .iter()
            .filter(|tb| func.owner_bypass || !tb.rls || (tb.owner == func.owner && !tb.force))
            .collect();
        let (sev, msg) = if let Some(tb) = bypassing.first() {
            (
                Severity::Error,
                format!("SECURITY DEFINER function {obj} is executable by {} and reads tenant table {} as its owner {}, who bypasses row-level security on it: callers get other tenants' rows.", t.role, tb.object(), func.owner),
            )
        } else {
            (
                Severity::Warning,
                format!("SECURITY DEFINER function {obj} (owner {}) is executable by {}; it runs with its owner's privileges, so any tenant table it touches is read as the owner.", func.owner, t.role),
            )
        };
        f.push(Finding::new(
            "security-definer-function",
            sev,
            &obj,
            msg,
            format!("ALTER FUNCTION {qf} SECURITY INVOKER;  -- or REVOKE EXECUTE ON FUNCTION {qf} FROM {}, PUBLIC;", qi(&t.role)),
        ));
    }
}

/// A table a definer function touches, as its owner sees it.
struct Touched {
    /// `schema.table`.
    object: String,
    /// Whether the function's owner sees rows beyond the caller's tenant context there:
    /// it bypasses RLS, the table has none (or not forced for its owner), or a permissive
    /// policy for the owner (or PUBLIC) is not a tenant predicate.
    unbounded: bool,
    /// A table of tenancy's control catalog (not tenant data; see `catalog_rules`).
    catalog: bool,
}

/// `security-definer-ignores-context`: a SECURITY DEFINER function the runtime role may
/// execute (directly or through PUBLIC) whose body reads or writes a tenant table (or, in
/// a tenancy-managed database, a catalog table with a tenant column) and never mentions the
/// tenant context: the context function (`current_tenant_id`, or a function the tenant
/// policies call) or a context setting. Such a function acts for any caller, injected SQL
/// with no context included.
///
/// Severity: `error` when it can hand back values (rows, records, text…) from a tenant
/// table whose rows its owner sees beyond the context: any caller reads other tenants'
/// data with one ordinary call (the severity contract's error). `warning` otherwise: it
/// only writes, returns nothing but a flag or a count, touches only catalog tables, or
/// row-level security still binds its owner, so what leaks depends on the arguments or on
/// a policy staying as it is. Not reported: tenancy's own context functions, functions
/// declared narrow lookups ([`NARROW_LOOKUP_MARK`]), and C functions (no body to read).
///
/// Returns the functions it reported, which `function_rules` then skips.
#[allow(clippy::too_many_arguments)]
async fn definer_context_rules(
    client: &Client,
    opts: &Options,
    t: &Target,
    tables: &[Table],
    pols: &[Policy],
    funcs: &[Function],
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<HashSet<u32>, CheckError> {
    let mut reported = HashSet::new();
    let candidates: Vec<&Function> = funcs
        .iter()
        .filter(|x| {
            x.secdef
                && x.executable
                && !x.trusted
                && !x.narrow_lookup
                && (x.language == "sql" || x.language == "plpgsql")
        })
        .collect();
    if candidates.is_empty() {
        return Ok(reported);
    }
    let col = opts.tenant_column.as_str();
    // What counts as referring to the tenant context: the context function, the settings
    // policies read, and any function a tenant policy calls.
    let fn_names: HashMap<u32, &str> = funcs.iter().map(|x| (x.oid, x.name.as_str())).collect();
    let mut context_words: Vec<String> = vec!["current_tenant_id".into()];
    context_words.extend(gucs.iter().cloned());
    for p in pols {
        for oid in &p.functions {
            if let Some(n) = fn_names.get(oid) {
                context_words.push(n.to_lowercase());
            }
        }
    }
    context_words.sort();
    context_words.dedup();
    let catalog: Vec<(String, String)> = if t.managed {
        query(
            client,
            "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = $1::text::name AND NOT a.attisdropped \
              WHERE n.nspname = 'tenancy_catalog' AND c.relkind IN ('r', 'p') ORDER BY 2",
            &[&opts.tenant_column],
            "listing catalog tables with a tenant column",
        )
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    } else {
        Vec::new()
    };
    for func in candidates {
        let body = func.body.to_lowercase();
        if context_words.iter().any(|w| body.contains(w.as_str())) {
            continue;
        }
        let mut touched: Vec<Touched> = tables
            .iter()
            .filter(|tb| predicate::references(&body, &tb.name.to_lowercase()))
            .map(|tb| {
                let owner_policy_open = pols.iter().any(|p| {
                    p.table == tb.oid
                        && p.permissive
                        && p.cmd != "a"
                        && (p.roles.iter().any(|r| r == "PUBLIC" || *r == func.owner))
                        && p.functions.is_empty()
                        && p.using
                            .as_deref()
                            .is_some_and(|u| predicate::classify(u, col) != Shape::Tenant)
                });
                Touched {
                    object: tb.object(),
                    unbounded: func.owner_bypass
                        || !tb.rls
                        || (tb.owner == func.owner && !tb.force)
                        || owner_policy_open,
                    catalog: false,
                }
            })
            .collect();
        touched.extend(
            catalog
                .iter()
                .filter(|(_, name)| predicate::references(&body, &name.to_lowercase()))
                .map(|(schema, name)| Touched {
                    object: format!("{schema}.{name}"),
                    unbounded: true,
                    catalog: true,
                }),
        );
        if touched.is_empty() {
            continue;
        }
        let obj = format!("{}({})", func.qname.replace('"', ""), func.signature);
        let qf = format!("{}({})", func.qname, func.signature);
        let list = touched
            .iter()
            .map(|x| x.object.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let leaking = touched
            .iter()
            .find(|x| x.unbounded && !x.catalog && func.returns_data);
        let (sev, msg) = match leaking {
            Some(x) => (
                Severity::Error,
                format!(
                    "SECURITY DEFINER function {obj} is executable by {role} and hands back data from tenant table {table} without referring to the tenant context: it runs as {owner}, who sees every tenant's rows there, so any caller (injected SQL with no context included) gets other tenants' rows.",
                    role = t.role,
                    table = x.object,
                    owner = func.owner
                ),
            ),
            None => (
                Severity::Warning,
                format!(
                    "SECURITY DEFINER function {obj} is executable by {role} and reads or writes {list} without referring to the tenant context: it acts on whatever rows its arguments name, for any caller, injected SQL with no context included{how}.",
                    role = t.role,
                    how = if touched.iter().any(|x| x.unbounded) {
                        format!(", as {}, who sees every tenant's rows there", func.owner)
                    } else {
                        " (row-level security still binds its owner, so this holds only as long as the policies do)".to_owned()
                    }
                ),
            ),
        };
        f.push(Finding::new(
            "security-definer-ignores-context",
            sev,
            &obj,
            format!("{msg} Check the tenant inside it (… WHERE {c} = (SELECT tenancy.current_tenant_id())), grant it only to a role of its own (as tenancy's job queue does with tenancy_worker), or, for a lookup of one row by a key the caller already holds, declare it with COMMENT ON FUNCTION {qf} IS '{NARROW_LOOKUP_MARK}: …'.", c = qi(col)),
            format!("REVOKE EXECUTE ON FUNCTION {qf} FROM {}, PUBLIC;  -- and GRANT EXECUTE to a role of its own", qi(&t.role)),
        ));
        reported.insert(func.oid);
    }
    Ok(reported)
}

async fn trigger_rules(
    client: &Client,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT t.tgrelid, t.tgname::text, quote_ident(n.nspname) || '.' || quote_ident(p.proname), pg_get_userbyid(p.proowner)::text \
           FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid \
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
          WHERE NOT t.tgisinternal AND p.prosecdef",
        &[],
        "reading triggers",
    )
    .await?;
    for r in rows {
        let rel: u32 = r.get(0);
        let Some(tb) = tables.get(&rel) else { continue };
        let tg: String = r.get(1);
        let func: String = r.get(2);
        let owner: String = r.get(3);
        f.push(Finding::new(
            "trigger-security-definer",
            Severity::Warning,
            tb.object(),
            format!("Trigger {tg} on {} runs SECURITY DEFINER function {func} as {owner}: whatever it reads or writes is not limited to the writing tenant unless it checks the tenant itself.", tb.object()),
            format!("ALTER FUNCTION {func}() SECURITY INVOKER;"),
        ));
    }
    Ok(())
}

async fn key_rules(
    client: &Client,
    opts: &Options,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let col = qi(&opts.tenant_column);
    let rows = query(
        client,
        "SELECT c.conname::text, c.contype::text, c.conrelid, c.confrelid, c.conkey, c.confkey, pg_get_constraintdef(c.oid), \
                (SELECT n.nspname || '.' || r.relname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = c.conrelid) \
           FROM pg_catalog.pg_constraint c WHERE c.contype IN ('p', 'u', 'f') AND c.conrelid <> 0 \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint pc WHERE pc.oid = c.conparentid) \
         UNION ALL \
         SELECT ic.relname::text, 'i', i.indrelid, 0::oid, i.indkey::int2[], NULL::int2[], pg_get_indexdef(i.indexrelid), \
                (SELECT n.nspname || '.' || r.relname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = i.indrelid) \
           FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
          WHERE i.indisunique AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid) \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)",
        &[],
        "reading keys",
    )
    .await?;
    for r in rows {
        let name: String = r.get(0);
        let kind: String = r.get(1);
        let rel: u32 = r.get(2);
        let frel: u32 = r.get(3);
        let key: Option<Vec<i16>> = r.get(4);
        let fkey: Option<Vec<i16>> = r.get(5);
        let def: String = r.get(6);
        let relname: Option<String> = r.get(7);
        let key = key.unwrap_or_default();
        let relname = relname.unwrap_or_default();
        match kind.as_str() {
            "p" | "u" | "i" => {
                let Some(tb) = tables.get(&rel) else { continue };
                if key.contains(&tb.col_attnum) {
                    continue;
                }
                let what = if kind == "p" {
                    "Primary key"
                } else {
                    "Unique constraint"
                };
                f.push(Finding::new(
                    "unique-without-tenant",
                    Severity::Warning,
                    tb.object(),
                    format!("{what} {name} on {} ({def}) does not include {}. Uniqueness is checked across all tenants and ignores row-level security, so a failing INSERT or ON CONFLICT reveals that another tenant has that value (existence oracle).", tb.object(), opts.tenant_column),
                    if kind == "i" {
                        format!("DROP INDEX {};  -- recreate as UNIQUE ({col}, …)", qi(&name))
                    } else {
                        format!("ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {} ({col}, …);", tb.qname(), qi(&name), qi(&name), if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" })
                    },
                ));
            }
            "f" => {
                let Some(parent) = tables.get(&frel) else {
                    continue;
                };
                let fkey = fkey.unwrap_or_default();
                if fkey.contains(&parent.col_attnum) {
                    if let Some(child) = tables.get(&rel) {
                        let pos = fkey.iter().position(|a| *a == parent.col_attnum);
                        if pos.is_some_and(|p| key.get(p) == Some(&child.col_attnum)) {
                            continue;
                        }
                    } else {
                        continue;
                    }
                }
                let child = tables.get(&rel);
                let sev = if child.is_some() {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                f.push(Finding::new(
                    "fk-cross-tenant",
                    sev,
                    relname.clone(),
                    format!("Foreign key {name} on {relname} ({def}) references tenant table {} without matching {} on both sides. Foreign-key checks ignore row-level security, so a row can reference another tenant's row (and ON DELETE actions of that tenant write these rows).", parent.object(), opts.tenant_column),
                    format!("ALTER TABLE {} DROP CONSTRAINT {}, ADD FOREIGN KEY ({col}, …) REFERENCES {} ({col}, …);", child.map(|c| c.qname()).unwrap_or(relname.clone()), qi(&name), parent.qname()),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

async fn privilege_rules(
    client: &Client,
    t: &Target,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT n.nspname::text, has_schema_privilege($1::oid, n.oid, 'CREATE'), has_schema_privilege($1::oid, n.oid, 'USAGE'), \
                EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE a.grantee = 0 AND a.privilege_type = 'USAGE') \
           FROM pg_catalog.pg_namespace n \
          WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
        &[&t.role_oid],
        "reading schema privileges",
    )
    .await?;
    let mut tenant_schemas = Vec::new();
    for r in &rows {
        let s: String = r.get(0);
        let create: bool = r.get(1);
        let usage: bool = r.get(2);
        let public_usage: bool = r.get(3);
        if create && !t.role_super {
            f.push(Finding::new(
                "schema-create",
                Severity::Warning,
                &s,
                format!("The runtime role may CREATE objects in schema {s}: injected SQL can create functions (e.g. LEAKPROOF-looking helpers, operators that shadow built-ins through search_path) or tables that capture other tenants' data through triggers and views."),
                format!("REVOKE CREATE ON SCHEMA {} FROM {}, PUBLIC;", qi(&s), qi(&t.role)),
            ));
        }
        if s.starts_with("tenant_") && (usage || public_usage) {
            tenant_schemas.push((s, public_usage));
        }
    }
    if tenant_schemas.len() > 1 {
        for (s, public) in &tenant_schemas {
            f.push(Finding::new(
                "schema-cross-tenant",
                Severity::Warning,
                s,
                format!("{} has USAGE on {} tenant schemas ({s} among them): with schema-per-tenant placement, isolation then rests on search_path alone, and `SET search_path = another_tenant` crosses tenants.", if *public { "PUBLIC" } else { t.role.as_str() }, tenant_schemas.len()),
                format!("REVOKE ALL ON SCHEMA {} FROM PUBLIC{};  -- grant USAGE only to that tenant's own role", qi(s), if *public { String::new() } else { format!(", {}", qi(&t.role)) }),
            ));
        }
    }
    let rows = query(
        client,
        "SELECT d.datname::text, d.datname = current_database(), has_database_privilege($1::oid, d.oid, 'TEMP') AND d.datname = current_database(), \
                EXISTS (SELECT 1 FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE a.grantee = 0 AND a.privilege_type = 'CONNECT') \
           FROM pg_catalog.pg_database d WHERE d.datallowconn AND NOT d.datistemplate ORDER BY 1",
        &[&t.role_oid],
        "reading database privileges",
    )
    .await?;
    for r in rows {
        let name: String = r.get(0);
        let current: bool = r.get(1);
        let temp: bool = r.get(2);
        let public_connect: bool = r.get(3);
        if temp && !t.role_super {
            f.push(Finding::new(
                "database-temp",
                Severity::Info,
                &name,
                format!("The runtime role may create temporary tables in {name}. Temporary objects shadow others through pg_temp in search_path and survive across pooled transactions."),
                format!("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC, {};", qi(&name), qi(&t.role)),
            ));
        }
        if public_connect && (current || name != "postgres") {
            f.push(Finding::new(
                "database-public-connect",
                if current { Severity::Info } else { Severity::Warning },
                &name,
                if current {
                    format!("PUBLIC may connect to {name} (the default for new databases): every role in the cluster can log in to it.")
                } else {
                    format!("PUBLIC may connect to database {name}: with database-per-tenant placement any tenant's credentials open every other tenant's database.")
                },
                format!("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC;", qi(&name)),
            ));
        }
    }
    Ok(())
}

async fn settings_rules(
    client: &Client,
    t: &Target,
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT coalesce(r.rolname::text, ''), coalesce(d.datname::text, ''), c \
           FROM pg_catalog.pg_db_role_setting s \
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
           LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
          WHERE (s.setdatabase = 0 OR d.datname = current_database()) \
            AND (s.setrole = 0 OR pg_has_role($1::oid, s.setrole, 'MEMBER'))",
        &[&t.role_oid],
        "reading role and database settings",
    )
    .await?;
    for r in rows {
        let role: String = r.get(0);
        let db: String = r.get(1);
        let setting: String = r.get(2);
        let name = setting_name(&setting);
        let hit = is_context_setting(&name, gucs);
        if !hit {
            continue;
        }
        let (obj, fix) = match (role.is_empty(), db.is_empty()) {
            (false, false) => (
                role.clone(),
                format!(
                    "ALTER ROLE {} IN DATABASE {} RESET {name};",
                    qi(&role),
                    qi(&db)
                ),
            ),
            (false, true) => (
                role.clone(),
                format!("ALTER ROLE {} RESET {name};", qi(&role)),
            ),
            _ => (
                db.clone(),
                format!("ALTER DATABASE {} RESET {name};", qi(&db)),
            ),
        };
        f.push(Finding::new(
            "tenant-setting-default",
            Severity::Error,
            obj,
            format!("`{setting}` is stored as a default for {}{}: every session of the runtime role starts with it, so a transaction that forgets to set its tenant silently runs as that tenant (or with row_security changed) instead of seeing nothing.", if role.is_empty() { "all roles" } else { role.as_str() }, if db.is_empty() { String::new() } else { format!(" in database {db}") }),
            fix,
        ));
    }
    Ok(())
}

/// Settings the SDK's tenant pools send in every connection's startup packet, which take
/// precedence over role and database defaults (other clients of the role get the stored
/// default).
const POOL_PINNED_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "row_security",
    "client_min_messages",
    "search_path",
];

/// Settings whose stored default breaks or slows every session that starts with it, or
/// changes what its statements mean.
const AVAILABILITY_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "search_path",
    "client_min_messages",
    "work_mem",
    "hash_mem_multiplier",
    "maintenance_work_mem",
    "temp_buffers",
    "plan_cache_mode",
    "jit",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "effective_cache_size",
    "from_collapse_limit",
    "join_collapse_limit",
    "geqo",
    "geqo_threshold",
    "max_parallel_workers_per_gather",
    "synchronous_commit",
    "commit_delay",
    "vacuum_cost_delay",
    "local_preload_libraries",
    "check_function_bodies",
    "default_toast_compression",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
    "bytea_output",
    "standard_conforming_strings",
    "xmloption",
];

/// Defaults stored for the runtime role itself (`ALTER ROLE <runtime> [IN DATABASE …] SET`).
/// PostgreSQL lets a role change its own defaults, so these are what injected SQL would
/// leave behind to break every later session of the role: a 1 ms `statement_timeout`, a
/// read-only default, a `search_path` that hides the application's tables, planner
/// settings that turn point reads into scans. Settings the tenant context depends on are
/// `tenant-setting-default`'s (an error there); everything else stored for the runtime
/// role is reported here.
async fn runtime_role_setting_rules(
    client: &Client,
    t: &Target,
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT coalesce(d.datname::text, ''), c \
           FROM pg_catalog.pg_db_role_setting s \
           LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
          WHERE s.setrole = $1::oid AND (s.setdatabase = 0 OR d.datname = current_database()) \
          ORDER BY 1, 2",
        &[&t.role_oid],
        "reading the runtime role's stored settings",
    )
    .await?;
    for r in rows {
        let db: String = r.get(0);
        let setting: String = r.get(1);
        let name = setting_name(&setting);
        // Reported as errors by tenant-setting-default.
        if is_context_setting(&name, gucs) {
            continue;
        }
        let scope = if db.is_empty() {
            String::new()
        } else {
            format!(" in database {db}")
        };
        let effect = if POOL_PINNED_SETTINGS.contains(&name.as_str()) {
            "tenancy's tenant pools override it in their startup packet, but every other session of the role (workers, scripts, other pools) starts with it"
        } else if AVAILABILITY_SETTINGS.contains(&name.as_str()) || name.starts_with("enable_") {
            "every session of the role starts with it, tenancy's tenant pools included: it can fail, stall or slow every tenant's statements"
        } else {
            "every session of the role starts with it, tenancy's tenant pools included"
        };
        let fix = if db.is_empty() {
            format!("ALTER ROLE {} RESET {name};", qi(&t.role))
        } else {
            format!(
                "ALTER ROLE {} IN DATABASE {} RESET {name};",
                qi(&t.role),
                qi(&db)
            )
        };
        f.push(Finding::new(
            "runtime-role-setting",
            Severity::Warning,
            format!("{}{}: {name}", t.role, if db.is_empty() { String::new() } else { format!(" in {db}") }),
            format!(
                "`{setting}` is stored as a default for the runtime role {}{scope}; {effect}. PostgreSQL lets a role change its own defaults (`ALTER ROLE CURRENT_USER SET …`), so SQL injected into any tenant's request can store one that breaks every later session: keep the runtime role without stored settings, set what the application needs in its connection options, and alert on new rows in pg_db_role_setting.",
                t.role
            ),
            fix,
        ));
    }
    Ok(())
}

/// Password methods of pg_hba.conf: they check the role's own password, which the role can
/// change itself.
const PASSWORD_METHODS: &[&str] = &["password", "md5", "scram-sha-256"];

/// How the runtime role logs in, and its connection limit. PostgreSQL lets every role
/// change its own password (`ALTER ROLE CURRENT_USER PASSWORD …`, no privilege needed), so
/// where pg_hba.conf accepts a password for the runtime role, SQL injected into any
/// tenant's request can lock the application out (every new connection fails) or set a
/// password the attacker knows and log in directly. Whether the role has a password is in
/// `pg_authid.rolpassword`, readable by superusers only; the rules in
/// `pg_hba_file_rules`, by superusers only too (PostgreSQL 15: by default). What cannot be
/// read is said, not guessed.
async fn runtime_role_login_rules(
    client: &Client,
    t: &Target,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT r.rolcanlogin, r.rolconnlimit, \
                has_table_privilege('pg_catalog.pg_authid', 'SELECT'), \
                has_function_privilege('pg_catalog.pg_hba_file_rules()', 'EXECUTE') \
           FROM pg_catalog.pg_roles r WHERE r.oid = $1::oid",
        &[&t.role_oid],
        "reading the runtime role's login attributes",
    )
    .await?;
    let Some(r) = rows.first() else {
        return Ok(());
    };
    let (can_login, conn_limit, authid, hba): (bool, i32, bool, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    if !can_login {
        return Ok(());
    }
    if conn_limit < 0 {
        f.push(Finding::new(
            "runtime-role-no-connection-limit",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} has no CONNECTION LIMIT: a leaked credential or a misconfigured pool can take every connection slot of the cluster, and the owner role then cannot connect to migrate or repair.",
                t.role
            ),
            format!(
                "ALTER ROLE {} CONNECTION LIMIT <sum of the application's pool sizes plus headroom>;",
                qi(&t.role)
            ),
        ));
    }
    let has_password: Option<bool> = if authid {
        let rows = query(
            client,
            "SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE oid = $1::oid",
            &[&t.role_oid],
            "reading whether the runtime role has a password",
        )
        .await?;
        rows.first().map(|r| r.get(0))
    } else {
        None
    };
    // Rules that accept a password and can apply to the runtime role in this database
    // (ignoring which earlier rule a given client would match first: these are the ones
    // that may be used).
    let password_rules: Option<Vec<String>> = if hba {
        let rows = query(
            client,
            "SELECT h.line_number, h.type, coalesce(h.address, ''), h.auth_method \
               FROM pg_catalog.pg_hba_file_rules h \
              WHERE h.error IS NULL AND h.auth_method = ANY ($3::text[]) \
                AND (h.database && ARRAY['all', current_database()]::text[] \
                     OR ('sameuser' = ANY (h.database) AND current_database() = $2::text) \
                     OR ('samerole' = ANY (h.database) AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g \
                                 WHERE g.rolname = current_database() AND pg_has_role($1::oid, g.oid, 'MEMBER')))) \
                AND (h.user_name && ARRAY['all', $2::text]::text[] \
                     OR EXISTS (SELECT 1 FROM unnest(h.user_name) u \
                                 WHERE u LIKE '+%' AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g \
                                     WHERE g.rolname = substr(u, 2) AND pg_has_role($1::oid, g.oid, 'MEMBER')))) \
              ORDER BY 1",
            &[&t.role_oid, &t.role, &PASSWORD_METHODS],
            "reading pg_hba.conf rules",
        )
        .await?;
        Some(
            rows.iter()
                .map(|r| {
                    let line: i32 = r.get(0);
                    let kind: String = r.get(1);
                    let addr: String = r.get(2);
                    let method: String = r.get(3);
                    format!(
                        "line {line} ({kind}{}{method})",
                        if addr.is_empty() {
                            " ".to_owned()
                        } else {
                            format!(" from {addr}, ")
                        }
                    )
                })
                .collect(),
        )
    } else {
        None
    };
    let why = "PostgreSQL lets every role change its own password (`ALTER ROLE CURRENT_USER PASSWORD …` needs no privilege), so SQL injected into any tenant's request can lock the application out of every new connection or set a password the attacker knows and log in directly";
    let alternatives = "Prefer authentication the role cannot change from SQL: client certificates (`hostssl … cert`), peer authentication on a Unix socket, or the platform's IAM authentication (RDS IAM, Cloud SQL IAM, Microsoft Entra). If a password must stay, accept it only from the application's hosts, log `ALTER ROLE` (log_statement = 'ddl') and alert on it, and rotate it from outside the database";
    let fix = format!(
        "-- pg_hba.conf: hostssl {} {} <application network> cert  (or: local {} {} peer)",
        qi(&t.database),
        qi(&t.role),
        qi(&t.database),
        qi(&t.role)
    );
    match (has_password, &password_rules) {
        (_, Some(rules)) if rules.is_empty() => {}
        (Some(true), Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Warning,
            &t.role,
            format!(
                "The runtime role {} has a password, and pg_hba.conf accepts it ({}). {why}. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (Some(false), Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} has no password, but pg_hba.conf would accept one for it ({}). {why}: injected SQL can give it one. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (None, Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} can log in, and pg_hba.conf accepts a password for it ({}); whether it has one could not be read (pg_authid needs a superuser). {why}. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (Some(true), None) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Warning,
            &t.role,
            format!(
                "The runtime role {} has a password; whether pg_hba.conf accepts it could not be read (pg_hba_file_rules needs a superuser). {why}. {alternatives}.",
                t.role
            ),
            fix,
        )),
        (has, None) => {
            if has == Some(false) {
                return Ok(());
            }
            f.push(Finding::new(
                "runtime-role-password",
                Severity::Info,
                &t.role,
                format!(
                    "The runtime role {} can log in; whether it logs in with a password could not be decided (pg_authid and pg_hba_file_rules need a superuser: run the check as one to know). {why}. {alternatives}.",
                    t.role
                ),
                fix,
            ));
        }
    }
    Ok(())
}

async fn misc_rules(
    client: &Client,
    t: &Target,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    // Publications.
    let sql = if t.version >= 150000 {
        "SELECT p.pubname::text, p.puballtables, pr.prrelid, pr.prqual IS NOT NULL, \
                ARRAY(SELECT c.oid FROM pg_catalog.pg_publication_namespace pn JOIN pg_catalog.pg_class c ON c.relnamespace = pn.pnnspid WHERE pn.pnpubid = p.oid) \
           FROM pg_catalog.pg_publication p LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid"
    } else {
        "SELECT p.pubname::text, p.puballtables, pr.prrelid, false, '{}'::oid[] \
           FROM pg_catalog.pg_publication p LEFT JOIN pg_catalog.pg_publication_rel pr ON pr.prpubid = p.oid"
    };
    let rows = query(client, sql, &[], "reading publications").await?;
    for r in rows {
        let pubname: String = r.get(0);
        let all: bool = r.get(1);
        let rel: Option<u32> = r.get(2);
        let filtered: bool = r.get(3);
        let in_schemas: Vec<u32> = r.get(4);
        let mut hit: Vec<String> = Vec::new();
        if all {
            hit.extend(tables.values().map(|tb| tb.object()));
        }
        if let Some(tb) = rel.and_then(|o| tables.get(&o)) {
            if !filtered {
                hit.push(tb.object());
            }
        }
        hit.extend(
            in_schemas
                .iter()
                .filter_map(|o| tables.get(o))
                .map(|tb| tb.object()),
        );
        hit.sort();
        hit.dedup();
        for obj in hit {
            f.push(Finding::new(
                "publication-no-row-filter",
                Severity::Warning,
                &obj,
                format!("Publication {pubname} replicates tenant table {obj} without a row filter: logical decoding ignores row-level security, so every subscriber receives every tenant's rows."),
                format!("ALTER PUBLICATION {} SET TABLE {} WHERE (<tenant or region filter>);", qi(&pubname), obj),
            ));
        }
    }
    // Large objects.
    let rows = query(client, "SELECT (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata), current_setting('lo_compat_privileges')", &[], "reading large objects").await?;
    if let Some(r) = rows.first() {
        let n: i64 = r.get(0);
        let compat: String = r.get(1);
        if n > 0 || compat == "on" {
            f.push(Finding::new(
                "large-objects",
                Severity::Warning,
                &t.database,
                format!("{}{}Large objects are outside row-level security: their OIDs are guessable and access depends only on per-object grants.", if n > 0 { format!("{n} large object(s) exist in {}. ", t.database) } else { String::new() }, if compat == "on" { "lo_compat_privileges is on, which disables large-object privilege checks entirely. " } else { "" }),
                "ALTER SYSTEM SET lo_compat_privileges = off;  -- and move the data to bytea columns of tenant tables".to_owned(),
            ));
        }
    }
    Ok(())
}

/// The name of a stored `name=value` setting (`pg_db_role_setting.setconfig`), lowercase.
fn setting_name(setting: &str) -> String {
    setting
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase()
}

/// Whether a stored setting can switch or widen the tenant context (`row_security`, a
/// context setting the policies read, or a name that says tenant): those are
/// `tenant-setting-default` findings.
fn is_context_setting(name: &str, gucs: &[String]) -> bool {
    name == "row_security" || gucs.iter().any(|g| g == name) || name.contains("tenant")
}
