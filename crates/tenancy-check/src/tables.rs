//! Tenant tables: which tables hold tenant rows and by which key (configured, found in the
//! policies, through foreign keys, or by a well-known owner column name), and the rules on
//! each of them and on their keys.

use std::collections::{HashMap, HashSet};

use tokio_postgres::Client;

use crate::audit::{qi, query, Target, CATALOG_SCHEMA};
use crate::model::{CheckError, Finding, Severity};
use crate::Options;

/// How a table's tenant key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    /// A `--tenant-column` the table has.
    Configured,
    /// Compared with the caller's context by this policy.
    Policy(String),
    /// A foreign key to this table, which other tenant keys reference (a tenant root:
    /// users, organisations, accounts).
    ForeignKey(String),
    /// This table is what other tables' tenant keys reference (a tenant root).
    Root,
    /// A well-known owner column name ([`OWNER_COLUMNS`]).
    Name,
}

impl KeySource {
    /// How the key was found, for messages.
    pub(crate) fn describe(&self, col: &str) -> String {
        match self {
            KeySource::Configured => format!("tenant column {col}"),
            KeySource::Policy(p) => format!("tenant key {col}, which policy {p} compares with the caller's context"),
            KeySource::ForeignKey(t) => format!("tenant key {col}, a foreign key to {t}, which other tables' tenant keys reference"),
            KeySource::Root => format!("tenant key {col}: other tables' tenant keys reference it, so its rows are the tenants"),
            KeySource::Name => format!("tenant key {col} (an owner column by its name)"),
        }
    }
}

/// Column names that key rows by their owner in common application styles; a table with
/// none of the configured tenant columns, no policy binding a column to the context and no
/// foreign key to a tenant root is keyed by the first of these it has.
pub(crate) const OWNER_COLUMNS: &[&str] = &[
    "tenant_id",
    "user_id",
    "owner_id",
    "org_id",
    "organization_id",
    "account_id",
    "workspace_id",
    "team_id",
    "customer_id",
    "company_id",
    "profile_id",
];

/// A table comment that starts with this declares the table shared by every tenant on
/// purpose (reference data: plans, countries, feature flags). Like `--global-table`, it
/// exempts the table from the tenant-table rules and from `shared-table-undeclared`. Not
/// honoured when the runtime role is (a member of) the table's owner, which could
/// otherwise declare any table shared.
pub(crate) const GLOBAL_TABLE_MARK: &str = "tenancy:global";

/// A schema comment that starts with this declares a schema-per-tenant schema (as do the
/// names `tenant_…` and schemas provisioned by tenancy): its tables belong to one tenant by
/// placement, and what matters is which of these schemas a role can use
/// (`schema-cross-tenant`).
pub(crate) const TENANT_SCHEMA_MARK: &str = "tenancy:tenant-schema";

/// Schemas of tenancy itself in a tenancy-managed database.
const TENANCY_SCHEMAS: &[&str] = &["tenancy", "tenancy_private", CATALOG_SCHEMA];

/// An ordinary or partitioned table outside the system schemas, as the runtime role sees it.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub rls: bool,
    pub is_child: bool,
    /// SELECT on the table or on any of its columns.
    pub readable: bool,
    /// INSERT, UPDATE or DELETE on the table, or INSERT/UPDATE on any column.
    pub writable: bool,
    /// Declared shared (`--global-table` or [`GLOBAL_TABLE_MARK`]).
    pub global: bool,
    /// In a schema-per-tenant schema.
    pub tenant_schema: bool,
    /// In one of tenancy's own schemas of a tenancy-managed database.
    pub tenancy_own: bool,
    pub columns: Vec<String>,
}

impl Relation {
    pub(crate) fn object(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// A foreign key, by column names.
#[derive(Debug, Clone)]
pub(crate) struct ForeignKey {
    pub table: u32,
    pub columns: Vec<String>,
    pub target: u32,
    pub target_columns: Vec<String>,
}

/// Whether a schema is a schema-per-tenant schema, by name or comment.
pub(crate) fn is_tenant_schema(name: &str, comment: &str) -> bool {
    name.starts_with("tenant_")
        || comment.starts_with(TENANT_SCHEMA_MARK)
        || comment.starts_with("tenancy-app-version:")
}

pub(crate) async fn relations(
    client: &Client,
    opts: &Options,
    t: &Target,
) -> Result<(Vec<Relation>, Vec<ForeignKey>), CheckError> {
    let rows = t.rows(
        client,
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relrowsecurity, \
                EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid), \
                has_table_privilege($1::oid, c.oid, 'SELECT') OR has_any_column_privilege($1::oid, c.oid, 'SELECT'), \
                has_table_privilege($1::oid, c.oid, 'INSERT') OR has_table_privilege($1::oid, c.oid, 'UPDATE') \
                  OR has_table_privilege($1::oid, c.oid, 'DELETE') OR has_any_column_privilege($1::oid, c.oid, 'INSERT') \
                  OR has_any_column_privilege($1::oid, c.oid, 'UPDATE'), \
                coalesce(obj_description(c.oid, 'pg_class'), ''), pg_has_role($1::oid, c.relowner, 'MEMBER'), \
                coalesce(obj_description(n.oid, 'pg_namespace'), ''), \
                ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a \
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) \
           FROM pg_catalog.pg_class c \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
            AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
          ORDER BY 2, 3",
        "listing tables",
    )
    .await?;
    let globals: HashSet<String> = opts
        .global_tables
        .iter()
        .map(|g| g.trim().to_owned())
        .collect();
    let rels = rows
        .into_iter()
        .map(|r| {
            let schema: String = r.get(1);
            let name: String = r.get(2);
            let comment: String = r.get(7);
            let role_member_of_owner: bool = r.get(8);
            let schema_comment: String = r.get(9);
            let global = globals.contains(&format!("{schema}.{name}"))
                || (schema == "public" && globals.contains(&name))
                || (comment.starts_with(GLOBAL_TABLE_MARK) && !role_member_of_owner);
            Relation {
                oid: r.get(0),
                tenant_schema: is_tenant_schema(&schema, &schema_comment),
                tenancy_own: t.managed && TENANCY_SCHEMAS.contains(&schema.as_str()),
                schema,
                name,
                rls: r.get(3),
                is_child: r.get(4),
                readable: r.get(5),
                writable: r.get(6),
                global,
                columns: r.get(10),
            }
        })
        .collect();
    let rows = query(
        client,
        "SELECT k.conrelid, k.confrelid, \
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i) \
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i), \
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY u(n, i) \
                       JOIN pg_catalog.pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i) \
           FROM pg_catalog.pg_constraint k WHERE k.contype = 'f' \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint pc WHERE pc.oid = k.conparentid)",
        &[],
        "reading foreign keys",
    )
    .await?;
    let fks = rows
        .into_iter()
        .map(|r| ForeignKey {
            table: r.get(0),
            target: r.get(1),
            columns: r.get(2),
            target_columns: r.get(3),
        })
        .collect();
    Ok((rels, fks))
}

/// The tenant key of every table that has one: the first configured tenant column it has;
/// else the column a policy on it compares with the caller's context; else a foreign key to
/// a tenant root (a table other tenant keys reference), or the referenced column of such a
/// root; else the first [`OWNER_COLUMNS`] name it has. Declared-shared tables, tables of
/// schema-per-tenant schemas and tenancy's own schemas have none.
pub(crate) fn infer_keys(
    rels: &[Relation],
    fks: &[ForeignKey],
    pols: &[crate::policies::Policy],
    context_functions: &[String],
    opts: &Options,
) -> HashMap<u32, (String, KeySource)> {
    let mut keys: HashMap<u32, (String, KeySource)> = HashMap::new();
    let eligible = |r: &Relation| !r.global && !r.tenant_schema && !r.tenancy_own;
    for r in rels
        .iter()
        .filter(|r| !(r.global || (r.tenancy_own && r.schema == CATALOG_SCHEMA)))
    {
        if let Some(c) = opts
            .tenant_columns
            .iter()
            .find(|c| r.columns.iter().any(|x| x == *c))
        {
            keys.insert(r.oid, (c.clone(), KeySource::Configured));
            continue;
        }
        if !eligible(r) {
            continue;
        }
        let mut found: Option<(String, String)> = None;
        for strict in [true, false] {
            for p in pols.iter().filter(|p| p.table == r.oid) {
                for e in [p.using.as_deref(), p.check.as_deref()]
                    .into_iter()
                    .flatten()
                {
                    let cols =
                        crate::predicate::bound_columns(e, &r.name, context_functions, strict);
                    if let Some(c) = cols.into_iter().find(|c| r.columns.iter().any(|x| x == c)) {
                        found.get_or_insert((c, p.name.clone()));
                    }
                }
            }
            if found.is_some() {
                break;
            }
        }
        if let Some((c, p)) = found {
            keys.insert(r.oid, (c, KeySource::Policy(p)));
        }
    }
    // Tenant roots: what single-column tenant keys reference.
    let by_oid: HashMap<u32, &Relation> = rels.iter().map(|r| (r.oid, r)).collect();
    let mut roots: HashMap<u32, String> = HashMap::new();
    for fk in fks {
        if let (Some((key, _)), [col], [target_col]) = (
            keys.get(&fk.table),
            fk.columns.as_slice(),
            fk.target_columns.as_slice(),
        ) {
            if key == col && fk.target != fk.table {
                roots.entry(fk.target).or_insert_with(|| target_col.clone());
            }
        }
    }
    // A keyed table referenced by its own key (organisations keyed by id) is a root too.
    for fk in fks {
        if let (Some((key, _)), [target_col]) = (keys.get(&fk.target), fk.target_columns.as_slice())
        {
            if key == target_col && fk.target != fk.table {
                roots.entry(fk.target).or_insert_with(|| target_col.clone());
            }
        }
    }
    let unkeyed: Vec<&Relation> = rels
        .iter()
        .filter(|r| eligible(r) && !keys.contains_key(&r.oid))
        .collect();
    for r in unkeyed {
        let via = fks.iter().find(|fk| {
            fk.table == r.oid
                && fk.columns.len() == 1
                && roots.contains_key(&fk.target)
                && fk.target != r.oid
        });
        if let Some(fk) = via {
            let target = by_oid
                .get(&fk.target)
                .map(|x| x.object())
                .unwrap_or_default();
            keys.insert(
                r.oid,
                (fk.columns[0].clone(), KeySource::ForeignKey(target)),
            );
        } else if let Some(col) = roots.get(&r.oid) {
            keys.insert(r.oid, (col.clone(), KeySource::Root));
        } else if let Some(c) = OWNER_COLUMNS
            .iter()
            .find(|c| r.columns.iter().any(|x| x == *c))
        {
            keys.insert(r.oid, ((*c).to_owned(), KeySource::Name));
        }
    }
    keys
}

/// A table that holds tenant rows, with its tenant key.
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
    pub key_source: KeySource,
}

impl Table {
    pub(crate) fn qname(&self) -> String {
        format!("{}.{}", qi(&self.schema), qi(&self.name))
    }
    pub(crate) fn object(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    pub(crate) fn any_dml(&self) -> bool {
        self.sel || self.ins || self.upd || self.del
    }
    /// Whether the tenant-table rules concern it: a configured key, or a key the checker
    /// found on a table the runtime role can use or owns.
    pub(crate) fn in_scope(&self) -> bool {
        self.key_source == KeySource::Configured
            || self.any_dml()
            || self.role_owns
            || self.truncate
            || self.references
            || self.trigger
    }
}

/// Every tenant table with its key (see [`infer_keys`]).
pub(crate) async fn tenant_tables(
    client: &Client,
    opts: &Options,
    t: &Target,
) -> Result<Vec<Table>, CheckError> {
    let (rels, fks) = relations(client, opts, t).await?;
    let pols = crate::policies::policies(client, t).await?;
    let funcs = crate::functions::functions(client, t).await?;
    let ctx = crate::functions::context_functions(&funcs);
    let keys = infer_keys(&rels, &fks, &pols, &ctx, opts);
    keyed_tables(client, t, &keys).await
}

pub(crate) async fn keyed_tables(
    client: &Client,
    t: &Target,
    keys: &HashMap<u32, (String, KeySource)>,
) -> Result<Vec<Table>, CheckError> {
    let oids: Vec<u32> = keys.keys().copied().collect();
    let cols: Vec<String> = oids.iter().map(|o| keys[o].0.clone()).collect();
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
           FROM unnest($2::oid[], $3::text[]) k(rel, col) \
           JOIN pg_catalog.pg_class c ON c.oid = k.rel \
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = k.col::name AND a.attnum > 0 AND NOT a.attisdropped \
           JOIN pg_catalog.pg_roles o ON o.oid = c.relowner \
          ORDER BY 2, 3",
        &[&t.role_oid, &oids, &cols],
        "listing tenant tables",
    )
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let oid: u32 = r.get(0);
        let Some((col, source)) = keys.get(&oid) else {
            continue;
        };
        out.push(Table {
            oid,
            schema: r.get(1),
            name: r.get(2),
            rls: r.get(3),
            force: r.get(4),
            owner: r.get(5),
            col_name: col.clone(),
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
            key_source: source.clone(),
        });
    }
    Ok(out)
}

/// `shared-table-undeclared`: a table the runtime role can read or write that has no tenant
/// key, is not declared shared and holds rows (a warning; info while it is empty). Either it holds tenant rows by a key the
/// checker cannot see (then it leaks them all) or it is reference data that should be
/// declared. `rows`: whether each such table has rows (`None`: could not be read).
pub(crate) fn shared_table_rules(
    t: &Target,
    rels: &[Relation],
    keys: &HashMap<u32, (String, KeySource)>,
    rows: &HashMap<u32, Option<bool>>,
    opts: &Options,
    f: &mut Vec<Finding>,
) {
    for r in undeclared_shared(rels, keys) {
        let has_rows = rows.get(&r.oid).copied().flatten();
        // Empty today: reported as info, so a schema checked before it has data still
        // shows the tables to declare.
        let sev = if has_rows == Some(false) {
            Severity::Info
        } else {
            Severity::Warning
        };
        let obj = r.object();
        let q = format!("{}.{}", qi(&r.schema), qi(&r.name));
        let access = match (r.readable, r.writable) {
            (true, true) => "read and write",
            (true, false) => "read",
            _ => "write",
        };
        f.push(Finding::new(
            "shared-table-undeclared",
            sev,
            &obj,
            format!(
                "The runtime role {} can {access} {obj}, which {} but has no tenant key the checker can find (none of the tenant columns {}, no policy comparing a column with the caller's context, no foreign key to a tenant root, no owner column such as user_id or org_id){}. If its rows belong to tenants, every tenant sees all of them; if it is shared reference data, declare it so.",
                t.role,
                match has_rows {
                    None => "may hold rows (they could not be counted)",
                    Some(true) => "holds rows",
                    Some(false) => "is empty for now",
                },
                opts.tenant_columns.join(", "),
                if r.rls { "; row-level security is enabled on it, but no policy binds a column to the caller" } else { "" },
            ),
            format!("COMMENT ON TABLE {q} IS '{GLOBAL_TABLE_MARK}: <why every tenant may see it>';  -- or pass --global-table {obj}, or --tenant-column <its tenant key>"),
        ));
    }
}

/// The tables `shared_table_rules` considers: reachable by the runtime role, without a
/// tenant key, not declared shared, not partitions of another table.
pub(crate) fn undeclared_shared<'a>(
    rels: &'a [Relation],
    keys: &'a HashMap<u32, (String, KeySource)>,
) -> impl Iterator<Item = &'a Relation> {
    rels.iter().filter(move |r| {
        (r.readable || r.writable)
            && !r.global
            && !r.tenant_schema
            && !r.tenancy_own
            && !r.is_child
            && !keys.contains_key(&r.oid)
    })
}

pub(crate) fn table_rules(t: &Target, tb: &Table, f: &mut Vec<Finding>) {
    let obj = tb.object();
    let q = tb.qname();
    let col = &tb.col_name;
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
            format!("{obj} holds tenant rows ({}) but row-level security is disabled{}: {}.", tb.key_source.describe(col), if matches!(tb.key_source, KeySource::Policy(_)) { " (its policies are never applied)" } else { "" }, if sev == Severity::Error { "the runtime role reads and writes every tenant's rows" } else { "any role granted access later sees every tenant's rows" }),
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
            // Hygiene: a NULL tenant leaks only through a fail-open policy, which is its own
            // error (`policy-fail-open`).
            Severity::Info,
            &obj,
            format!("{obj}.{col} is nullable. Rows without a tenant belong to nobody; with a fail-open policy (IS NULL OR …) or a NULL context they become everybody's."),
            format!("ALTER TABLE {q} ALTER COLUMN {c} SET NOT NULL;", c = qi(col)),
        ));
    }
    if !tb.indexed {
        f.push(Finding::new(
            "tenant-column-not-indexed",
            // Performance: no isolation follows from it.
            Severity::Info,
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

pub(crate) async fn key_rules(
    client: &Client,
    tables: &HashMap<u32, &Table>,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT c.conname::text, c.contype::text, c.conrelid, c.confrelid, c.conkey, c.confkey, pg_get_constraintdef(c.oid), \
                (SELECT n.nspname || '.' || r.relname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = c.conrelid), \
                (SELECT bool_and(a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) ~ '(nextval|gen_random_uuid|uuid_generate_v[0-9a-z]*|uuidv[47])\\(') \
                   FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                  WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)) \
           FROM pg_catalog.pg_constraint c WHERE c.contype IN ('p', 'u', 'f') AND c.conrelid <> 0 \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint pc WHERE pc.oid = c.conparentid) \
         UNION ALL \
         SELECT ic.relname::text, 'i', i.indrelid, 0::oid, i.indkey::int2[], NULL::int2[], pg_get_indexdef(i.indexrelid), \
                (SELECT n.nspname || '.' || r.relname FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = i.indrelid), \
                (SELECT bool_and(a.attidentity <> '' OR pg_get_expr(d.adbin, d.adrelid) ~ '(nextval|gen_random_uuid|uuid_generate_v[0-9a-z]*|uuidv[47])\\(') \
                   FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])) \
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
        let surrogate: Option<bool> = r.get(8);
        let key = key.unwrap_or_default();
        let relname = relname.unwrap_or_default();
        match kind.as_str() {
            "p" | "u" | "i" => {
                let Some(tb) = tables.get(&rel) else { continue };
                if key.contains(&tb.col_attnum) {
                    continue;
                }
                let col = qi(&tb.col_name);
                // A key the database generates (identity, sequence, random UUID) reveals
                // only that a generated value is taken; a value the caller chooses (an
                // email, a slug, an external id) reveals another tenant's data.
                let sev = if surrogate == Some(true) {
                    Severity::Info
                } else {
                    Severity::Warning
                };
                let what = if kind == "p" {
                    "Primary key"
                } else {
                    "Unique constraint"
                };
                f.push(Finding::new(
                    "unique-without-tenant",
                    sev,
                    tb.object(),
                    format!("{what} {name} on {} ({def}) does not include {}. Uniqueness is checked across all tenants and ignores row-level security, so a failing INSERT or ON CONFLICT reveals that another tenant has that value (existence oracle){}.", tb.object(), tb.col_name, if sev == Severity::Info { "; its values are generated by the database, so it reveals little more than that a generated value is taken" } else { "" }),
                    if kind == "i" {
                        format!("DROP INDEX {};  -- recreate as UNIQUE ({col}, …)", qi(&name))
                    } else {
                        format!("ALTER TABLE {} DROP CONSTRAINT {}, ADD CONSTRAINT {} {} ({col}, …);", tb.qname(), qi(&name), qi(&name), if kind == "p" { "PRIMARY KEY" } else { "UNIQUE" })
                    },
                ));
            }
            "f" => {
                // Only keys given as tenant columns: a key the checker found (user_id,
                // org_id) need not appear in every foreign key of the application.
                let Some(parent) = tables
                    .get(&frel)
                    .filter(|p| p.key_source == KeySource::Configured)
                else {
                    continue;
                };
                let col = qi(&parent.col_name);
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
                    format!("Foreign key {name} on {relname} ({def}) references tenant table {} without matching {} on both sides. Foreign-key checks ignore row-level security, so a row can reference another tenant's row (and ON DELETE actions of that tenant write these rows).", parent.object(), parent.col_name),
                    format!("ALTER TABLE {} DROP CONSTRAINT {}, ADD FOREIGN KEY ({col}, …) REFERENCES {} ({col}, …);", child.map(|c| c.qname()).unwrap_or(relname.clone()), qi(&name), parent.qname()),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}
