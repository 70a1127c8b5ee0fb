//! A database of the app's single-tenant era (the same tables without `tenant_id`)
//! imported as one tenant of the shared model.
//!
//! - [`inspect`] compares the source with the app's tenant tables and lists every
//!   incompatibility with what to do ([`Report`]): a table or column on one side only, a
//!   type that differs (a key type that does not fit), a unique constraint that becomes
//!   per-tenant, rows that would collide under a unique key of the app, another app
//!   migration version (when the app keeps a migration ledger table).
//! - [`import_database`] copies every table in foreign-key order into one `TenantTx` of
//!   the target tenant (runtime role, signed context, row-level security forced):
//!   `COPY (SELECT …) TO STDOUT` out of one REPEATABLE READ snapshot of the source,
//!   batched `INSERT … SELECT … FROM unnest(…)` into the target (COPY FROM is refused on
//!   tables with row-level security), `tenant_id` from the context, keys kept as they are
//!   (the app's keys are `(tenant_id, id)`), then each table read back and compared by
//!   count and order-independent checksum with what was read, sequences raised past the
//!   imported keys, one commit. A failure anywhere commits nothing.
//! - [`source_identity`], [`recorded`], [`record`], [`finish`]: the catalog's record of
//!   which source went into which tenant, so that running the same import again finishes
//!   it (the tenant is reused) or does nothing (it is done).
//!
//! Memory is bounded by one batch of rows, whatever the size of the source.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use tenancy_sdk::{ClusterAccess, Router};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::format::{copy_unescape, RowChecksum, TableSummary, SESSION_SETTINGS};
use crate::{Error, Progress};

/// Rows sent to the target in one statement.
const BATCH_ROWS: usize = 5_000;
/// Bytes of row text after which a batch is sent even when it holds fewer rows.
const BATCH_BYTES: usize = 4 << 20;

/// What to leave out of the source and how to check its app version.
#[derive(Debug, Clone, Default)]
pub struct LegacyOptions {
    /// The app's migration ledger (`schema.table`), in the source and in the target: the
    /// values of its first column are the migrations applied. When set, a source whose
    /// ledger differs from the target's is refused with the migrations to run; the
    /// ledger's rows are not imported.
    pub ledger: Option<String>,
    /// Source tables (`table` or `schema.table`) that are not the tenant's and are not
    /// imported.
    pub exclude: Vec<String>,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The import is refused until it is fixed.
    Blocker,
    /// Imported as it is; something behaves differently in the shared model.
    Note,
}

/// One incompatibility of the source, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Blocker or note.
    pub severity: Severity,
    /// The table (or table.column), or `database`.
    pub subject: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// Everything found when comparing a source with the app's tenant tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Tables that will be imported, in import order, with their source row counts
    /// (exact when the report was made with row scans, else the planner's estimate).
    pub tables: Vec<(String, i64)>,
    /// Every finding, blockers first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether a finding refuses the import.
    pub fn blocked(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Blocker)
    }

    fn blocker(&mut self, subject: impl Into<String>, problem: String, fix: String) {
        self.findings.push(Finding {
            severity: Severity::Blocker,
            subject: subject.into(),
            problem,
            fix,
        });
    }

    fn note(&mut self, subject: impl Into<String>, problem: String, fix: String) {
        self.findings.push(Finding {
            severity: Severity::Note,
            subject: subject.into(),
            problem,
            fix,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blockers = self
            .findings
            .iter()
            .filter(|x| x.severity == Severity::Blocker)
            .count();
        writeln!(
            f,
            "{} tables, {} blockers, {} notes",
            self.tables.len(),
            blockers,
            self.findings.len() - blockers
        )?;
        for (t, rows) in &self.tables {
            writeln!(f, "  {t:<40} {rows:>12} rows")?;
        }
        for x in &self.findings {
            let tag = match x.severity {
                Severity::Blocker => "BLOCKER",
                Severity::Note => "note   ",
            };
            writeln!(f, "{tag} {}: {}", x.subject, x.problem)?;
            writeln!(f, "        do: {}", x.fix)?;
        }
        Ok(())
    }
}

/// A column of a table, on either side.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    type_name: String,
    type_oid: i64,
    generated: bool,
    not_null: bool,
    has_default: bool,
    sequence: Option<String>,
}

/// A table on either side.
#[derive(Debug, Clone)]
struct Rel {
    /// Schema as the source names it (`public` for the target's current schema).
    schema: String,
    name: String,
    qualified: String,
    tenant: bool,
    estimate: i64,
    columns: Vec<Column>,
    /// Unique constraints (primary key included): (name, is primary key, columns).
    uniques: Vec<(String, bool, Vec<String>)>,
}

impl Rel {
    fn display(&self) -> String {
        if self.schema == "public" {
            self.name.clone()
        } else {
            format!("{}.{}", self.schema, self.name)
        }
    }
}

/// How one source table goes into its target table.
#[derive(Debug, Clone)]
struct TablePlan {
    display: String,
    source: String,
    target: String,
    /// Columns compared (the source's, in the source's order), quoted.
    compared: Vec<String>,
    /// Columns inserted: (quoted name, target type).
    inserted: Vec<(String, String)>,
    /// Positions in `compared` of the inserted columns.
    inserted_at: Vec<usize>,
    /// Sequences of the target fed by a column: (quoted column, sequence).
    sequences: Vec<(String, String)>,
}

/// The tables of one side in the schemas `schemas` (source names; `public` stands for the
/// connection's current schema).
async fn relations(c: &Client, schemas: Option<&[String]>) -> Result<Vec<Rel>, Error> {
    let rows = c
        .query(
            "SELECT c.oid::bigint,
                    CASE WHEN n.nspname = current_schema() THEN 'public' ELSE n.nspname::text END,
                    c.relname::text,
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                    c.relrowsecurity AND c.relforcerowsecurity AND EXISTS (
                        SELECT 1 FROM pg_attribute a
                         WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped),
                    greatest(c.reltuples, 0)::bigint
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname !~ '^pg_'
                AND ($1::text[] IS NULL
                     OR (CASE WHEN n.nspname = current_schema() THEN 'public' ELSE n.nspname::text END) = ANY($1))
              ORDER BY 2, 3",
            &[&schemas],
        )
        .await
        .map_err(Error::db("listing tables"))?;
    let mut rels: BTreeMap<i64, Rel> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                Rel {
                    schema: r.get(1),
                    name: r.get(2),
                    qualified: r.get(3),
                    tenant: r.get(4),
                    estimate: r.get(5),
                    columns: Vec::new(),
                    uniques: Vec::new(),
                },
            )
        })
        .collect();
    let oids: Vec<i64> = rels.keys().copied().collect();
    let cols = c
        .query(
            "SELECT a.attrelid::bigint, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.atttypid::bigint, a.attgenerated <> '', a.attnotnull,
                    a.atthasdef OR a.attidentity <> '',
                    pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
               FROM pg_attribute a
              WHERE a.attrelid::bigint = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing columns"))?;
    for r in &cols {
        if let Some(t) = rels.get_mut(&r.get::<_, i64>(0)) {
            t.columns.push(Column {
                name: r.get(1),
                type_name: r.get(2),
                type_oid: r.get(3),
                generated: r.get(4),
                not_null: r.get(5),
                has_default: r.get(6),
                sequence: r.get(7),
            });
        }
    }
    let uniques = c
        .query(
            "SELECT k.conrelid::bigint, k.conname::text, k.contype = 'p',
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n
                           ORDER BY u.i)
               FROM pg_constraint k
              WHERE k.contype IN ('p', 'u') AND k.conrelid::bigint = ANY($1)
              ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing unique constraints"))?;
    for r in &uniques {
        if let Some(t) = rels.get_mut(&r.get::<_, i64>(0)) {
            t.uniques.push((r.get(1), r.get(2), r.get(3)));
        }
    }
    // Referenced tables first.
    let fks = c
        .query(
            "SELECT DISTINCT conrelid::bigint, confrelid::bigint FROM pg_constraint
              WHERE contype = 'f' AND conrelid::bigint = ANY($1) AND confrelid::bigint = ANY($1)
                AND conrelid <> confrelid",
            &[&oids],
        )
        .await
        .map_err(Error::db("listing foreign keys"))?;
    let edges: Vec<(i64, i64)> = fks.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(crate::tables::referenced_first(&oids, &edges)
        .into_iter()
        .filter_map(|o| rels.remove(&o))
        .collect())
}

fn int_rank(oid: i64) -> Option<u8> {
    match oid {
        21 => Some(2),
        23 => Some(4),
        20 => Some(8),
        _ => None,
    }
}

fn key_columns(rel: &Rel) -> BTreeSet<String> {
    rel.uniques
        .iter()
        .flat_map(|(_, _, cols)| cols.iter().cloned())
        .collect()
}

fn quoted_list(cols: &[String]) -> String {
    cols.iter()
        .map(|c| tenancy_conn::quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compares the source with the target's tables and plans each table. `scan` also reads
/// the source's rows where a finding depends on them (duplicates under a key the app
/// makes unique, values of a narrower key type) and counts each table exactly.
async fn analyse(
    source: &Client,
    target: &Client,
    opts: &LegacyOptions,
    scan: bool,
) -> Result<(Report, Vec<TablePlan>), Error> {
    let mut report = Report::default();
    let excluded: BTreeSet<String> = opts
        .exclude
        .iter()
        .chain(opts.ledger.iter())
        .map(|t| {
            if t.contains('.') {
                t.clone()
            } else {
                format!("public.{t}")
            }
        })
        .collect();
    let src: Vec<Rel> = relations(source, None)
        .await?
        .into_iter()
        .filter(|r| !excluded.contains(&format!("{}.{}", r.schema, r.name)))
        .collect();
    let schemas: Vec<String> = src
        .iter()
        .map(|r| r.schema.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tgt = relations(target, Some(&schemas)).await?;
    if !tgt.iter().any(|t| t.tenant) {
        return Err(Error::Refused(format!(
            "the target database holds no tenant table in schema(s) {}: the app's migrations have not run there yet (run `tenancy migrate`, or provision a first tenant), or the source is not a database of this app",
            schemas.join(", ")
        )));
    }
    let by_name = |rels: &[Rel], schema: &str, name: &str| -> Option<usize> {
        rels.iter()
            .position(|r| r.schema == schema && r.name == name)
    };
    for s in &src {
        match by_name(&tgt, &s.schema, &s.name) {
            None => report.blocker(
                s.display(),
                "the app has no such table".into(),
                format!(
                    "drop or rename it in a copy of the source if it is a leftover, or pass --exclude {} if its rows are not the tenant's",
                    s.display()
                ),
            ),
            Some(i) if !tgt[i].tenant => report.blocker(
                s.display(),
                "the app's table of this name is shared, not a tenant table (no tenant_id with forced row-level security)".into(),
                format!(
                    "pass --exclude {} and load its rows into the shared table separately, if they belong there",
                    s.display()
                ),
            ),
            Some(_) => {}
        }
    }
    let mut plans = Vec::new();
    for t in tgt.iter().filter(|t| t.tenant) {
        let Some(si) = by_name(&src, &t.schema, &t.name) else {
            report.note(
                t.display(),
                "the source has no such table: the tenant's starts empty".into(),
                "nothing, if the app created it after the single-tenant era; otherwise import from a source that has it".into(),
            );
            continue;
        };
        let s = &src[si];
        let display = s.display();
        let mut compared = Vec::new();
        let mut inserted = Vec::new();
        let mut inserted_at = Vec::new();
        let keys = key_columns(t);
        for sc in &s.columns {
            if sc.name == "tenant_id" {
                report.blocker(
                    format!("{display}.tenant_id"),
                    "the source already has a tenant_id column: it is not a single-tenant database".into(),
                    "import it with `tenancy tenants import` from an export, or drop the column in a copy of the source".into(),
                );
                continue;
            }
            let Some(tc) = t.columns.iter().find(|c| c.name == sc.name) else {
                report.blocker(
                    format!("{display}.{}", sc.name),
                    "the app has no such column".into(),
                    "drop or rename it in a copy of the source (or add it to the app with a migration), then import again".into(),
                );
                continue;
            };
            let subject = format!("{display}.{}", sc.name);
            let what = if keys.contains(&sc.name) {
                "key column"
            } else {
                "column"
            };
            if tc.type_name != sc.type_name {
                match (int_rank(sc.type_oid), int_rank(tc.type_oid)) {
                    (Some(a), Some(b)) if a < b => report.note(
                        subject.clone(),
                        format!("{what} is {} in the source and {} in the app: widened", sc.type_name, tc.type_name),
                        "nothing".into(),
                    ),
                    (Some(_), Some(_)) => {
                        let fits = if scan {
                            let sql = format!(
                                "SELECT coalesce(min({c})::bigint, 0), coalesce(max({c})::bigint, 0) FROM {}",
                                s.qualified,
                                c = tenancy_conn::quote_ident(&sc.name)
                            );
                            let r = source.query_one(sql.as_str(), &[]).await.map_err(Error::db(format!("reading the range of {subject}")))?;
                            let (lo, hi): (i64, i64) = (r.get(0), r.get(1));
                            let max = if tc.type_oid == 21 { i64::from(i16::MAX) } else { i64::from(i32::MAX) };
                            Some(lo >= -max - 1 && hi <= max)
                        } else {
                            None
                        };
                        match fits {
                            Some(false) => report.blocker(
                                subject.clone(),
                                format!("{what} is {} in the source but {} in the app, and the source holds values outside its range", sc.type_name, tc.type_name),
                                "widen the column in the app with a migration, or renumber the rows in a copy of the source".into(),
                            ),
                            _ => report.note(
                                subject.clone(),
                                format!("{what} is {} in the source and {} in the app: every value must fit", sc.type_name, tc.type_name),
                                "nothing if the dry run reports no blocker for it".into(),
                            ),
                        }
                    }
                    _ => report.blocker(
                        subject.clone(),
                        format!(
                            "{what} is {} in the source but {} in the app{}",
                            sc.type_name,
                            tc.type_name,
                            if keys.contains(&sc.name) { ": the key type does not fit" } else { "" }
                        ),
                        format!(
                            "convert it in a copy of the source (ALTER TABLE {} ALTER COLUMN {} TYPE {}), or bring the source to the app's migration version first",
                            s.qualified,
                            tenancy_conn::quote_ident(&sc.name),
                            tc.type_name
                        ),
                    ),
                }
            }
            compared.push(tenancy_conn::quote_ident(&sc.name));
            if !tc.generated {
                inserted_at.push(compared.len() - 1);
                inserted.push((tenancy_conn::quote_ident(&sc.name), tc.type_name.clone()));
            }
        }
        for tc in &t.columns {
            if tc.name == "tenant_id" || s.columns.iter().any(|c| c.name == tc.name) {
                continue;
            }
            if tc.not_null && !tc.has_default && !tc.generated {
                report.blocker(
                    format!("{display}.{}", tc.name),
                    "the app requires this column (NOT NULL, no default) and the source has none".into(),
                    "add it to a copy of the source with the values the app expects, or bring the source to the app's migration version".into(),
                );
            } else {
                report.note(
                    format!("{display}.{}", tc.name),
                    "the source has no such column: imported rows take its default".into(),
                    "nothing, if the default is right for old rows".into(),
                );
            }
        }
        // Unique constraints: the app's are per tenant (they include tenant_id).
        for (name, primary, cols) in &t.uniques {
            let per: Vec<String> = cols.iter().filter(|c| *c != "tenant_id").cloned().collect();
            if per.len() == cols.len() {
                report.note(
                    format!("{display} ({})", cols.join(", ")),
                    format!("the app's unique constraint {name} spans all tenants: a row may collide with another tenant's, and the import then fails"),
                    "nothing, unless the import reports such a collision".into(),
                );
                continue;
            }
            let in_source = s
                .uniques
                .iter()
                .any(|(_, _, sc)| sc.iter().collect::<BTreeSet<_>>() == per.iter().collect());
            if in_source {
                report.note(
                    format!("{display} ({})", per.join(", ")),
                    if *primary {
                        format!("the key ({}) becomes ({}): rows keep their ids, unique within the tenant", per.join(", "), cols.join(", "))
                    } else {
                        format!("unique in the whole source database, unique per tenant in the app ({name})")
                    },
                    format!("look rows up by ({}) only inside the tenant's transaction; nothing to change in the data", per.join(", ")),
                );
                continue;
            }
            if per.iter().any(|c| !s.columns.iter().any(|x| &x.name == c)) {
                continue; // Reported as a missing column.
            }
            let dups = if scan {
                let list = quoted_list(&per);
                let not_null = per
                    .iter()
                    .map(|c| format!("{} IS NOT NULL", tenancy_conn::quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                let sql = format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} WHERE {not_null} GROUP BY {list} HAVING count(*) > 1) d",
                    s.qualified
                );
                Some(
                    source
                        .query_one(sql.as_str(), &[])
                        .await
                        .map_err(Error::db(format!("looking for duplicates in {display}")))?
                        .get::<_, i64>(0),
                )
            } else {
                None
            };
            match dups {
                Some(0) => report.note(
                    format!("{display} ({})", per.join(", ")),
                    format!("not unique in the source, unique per tenant in the app ({name}); the source has no duplicates"),
                    "nothing".into(),
                ),
                Some(n) => report.blocker(
                    format!("{display} ({})", per.join(", ")),
                    format!("{n} groups of rows share the same ({}) in the source: they would collide under the app's unique constraint {name}", per.join(", ")),
                    format!(
                        "merge or renumber them in a copy of the source (SELECT {list}, count(*) FROM {} GROUP BY {list} HAVING count(*) > 1 lists them)",
                        s.qualified,
                        list = quoted_list(&per)
                    ),
                ),
                None => report.note(
                    format!("{display} ({})", per.join(", ")),
                    format!("not unique in the source, unique per tenant in the app ({name})"),
                    "run with --dry-run to look for rows that would collide".into(),
                ),
            }
        }
        let rows = if scan {
            let sql = format!("SELECT count(*) FROM {}", s.qualified);
            source
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!("counting {display}")))?
                .get::<_, i64>(0)
        } else {
            s.estimate
        };
        report.tables.push((display.clone(), rows));
        let sequences = t
            .columns
            .iter()
            .filter(|c| s.columns.iter().any(|x| x.name == c.name))
            .filter_map(|c| {
                c.sequence
                    .clone()
                    .map(|q| (tenancy_conn::quote_ident(&c.name), q))
            })
            .collect();
        plans.push(TablePlan {
            display,
            source: s.qualified.clone(),
            target: t.qualified.clone(),
            compared,
            inserted,
            inserted_at,
            sequences,
        });
    }
    report.findings.sort_by_key(|f| f.severity);
    Ok((report, plans))
}

/// The values of the first column of `ledger` (`schema.table`), or `None` when it does
/// not exist there.
async fn ledger(c: &Client, ledger: &str) -> Result<Option<BTreeSet<String>>, Error> {
    let col: Option<String> = c
        .query_opt(
            "SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum LIMIT 1",
            &[&ledger],
        )
        .await
        .map_err(Error::db(format!("reading the ledger {ledger}")))?
        .map(|r| r.get(0));
    let Some(col) = col else { return Ok(None) };
    let sql = format!(
        "SELECT {}::text FROM {}",
        tenancy_conn::quote_ident(&col),
        ledger
            .split('.')
            .map(tenancy_conn::quote_ident)
            .collect::<Vec<_>>()
            .join(".")
    );
    let rows = c
        .query(sql.as_str(), &[])
        .await
        .map_err(Error::db(format!("reading the ledger {ledger}")))?;
    Ok(Some(rows.iter().filter_map(|r| r.get(0)).collect()))
}

/// Compares a source with the app's tenant tables in `target` (an owner's connection to
/// a database that holds them, e.g. a pooled cluster's) without writing anything: every
/// incompatibility, with what to do. Reads the source's rows where a finding depends on
/// them.
pub async fn inspect(
    source: &Client,
    target: &Client,
    opts: &LegacyOptions,
) -> Result<Report, Error> {
    let (mut report, _) = analyse(source, target, opts, true).await?;
    if let Some(l) = &opts.ledger {
        match (ledger(source, l).await?, ledger(target, l).await?) {
            (None, _) => report.blocker(
                "database",
                format!("the source has no migration ledger {l}"),
                "pass the app's ledger table with --ledger, or leave --ledger out to compare the tables alone".into(),
            ),
            (_, None) => report.blocker(
                "database",
                format!("the app has no migration ledger {l}"),
                "pass the app's ledger table with --ledger".into(),
            ),
            (Some(s), Some(t)) => {
                let missing: Vec<&String> = t.difference(&s).collect();
                let extra: Vec<&String> = s.difference(&t).collect();
                if !missing.is_empty() {
                    report.blocker(
                        "database",
                        format!("the source is at an older app version: migrations {missing:?} of the app were never applied to it"),
                        format!("apply {missing:?} (their single-tenant form) to a copy of the source, then import it"),
                    );
                }
                if !extra.is_empty() {
                    report.blocker(
                        "database",
                        format!("the source is at a newer app version: it has migrations {extra:?} this deployment lacks"),
                        "bring this deployment up to the source's version first (`tenancy migrate` with the newer release's migrations), then import".into(),
                    );
                }
            }
        }
        report.findings.sort_by_key(|f| f.severity);
    }
    Ok(report)
}

/// The identity of a source database: its cluster's system identifier (when the login may
/// read it), the database's oid and its name. The same database gives the same identity
/// through any address; a restored copy is another source.
pub async fn source_identity(source: &Client) -> Result<String, Error> {
    let sys = source
        .query_one(
            "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE')
                         THEN (SELECT system_identifier::text FROM pg_control_system())
                         ELSE 'cluster-' || coalesce(inet_server_addr()::text, 'local') || ':' || current_setting('port') END,
                    d.oid::bigint, d.datname::text
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(Error::db("identifying the source database"))?;
    Ok(format!(
        "{}/{}/{}",
        sys.get::<_, String>(0),
        sys.get::<_, i64>(1),
        sys.get::<_, String>(2)
    ))
}

/// The catalog's record of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The tenant the source goes into.
    pub tenant: TenantId,
    /// Whether its import was verified and committed.
    pub done: bool,
}

/// The record of `source` (see [`source_identity`]), if an import of it was started.
pub async fn recorded(catalog: &Client, source: &str) -> Result<Option<Recorded>, Error> {
    let row = catalog
        .query_opt(
            "SELECT tenant_id, state = 'done' FROM tenancy_catalog.legacy_imports WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(Error::db("reading the record of imported databases"))?;
    row.map(|r| {
        let id: uuid::Uuid = r.get(0);
        Ok(Recorded {
            tenant: TenantId::from_uuid(id).map_err(|e| {
                Error::Refused(format!("the record of {source} names tenant {id}: {e}"))
            })?,
            done: r.get(1),
        })
    })
    .transpose()
}

/// Records that `source` is imported into `tenant` (in the caller's transaction, with
/// the tenant's creation). Refused if the source is already recorded.
pub async fn record<C: tokio_postgres::GenericClient>(
    catalog: &C,
    source: &str,
    tenant: TenantId,
) -> Result<(), Error> {
    catalog
        .execute(
            "INSERT INTO tenancy_catalog.legacy_imports (source, tenant_id) VALUES ($1, $2)",
            &[&source, &tenant.as_uuid()],
        )
        .await
        .map_err(Error::db("recording the imported database"))?;
    Ok(())
}

/// Marks the import of `source` done, with its verified tables.
pub async fn finish(catalog: &Client, source: &str, tables: &[TableSummary]) -> Result<(), Error> {
    let summary = serde_json::to_value(tables)
        .map_err(|e| Error::Refused(format!("encoding the import's summary: {e}")))?;
    catalog
        .execute(
            "UPDATE tenancy_catalog.legacy_imports
                SET state = 'done', finished_at = now(), summary = $2
              WHERE source = $1",
            &[&source, &summary],
        )
        .await
        .map_err(Error::db("recording the finished import"))?;
    Ok(())
}

/// What an import of a source database did.
#[derive(Debug, Clone)]
pub struct LegacySummary {
    /// The tenant.
    pub tenant: TenantId,
    /// Each table's count and checksum, equal in the source and the target.
    pub tables: Vec<TableSummary>,
    /// Sequences raised past the imported keys.
    pub sequences_raised: u64,
    /// The tenant already held exactly the source's rows (an import that committed
    /// before its record was marked done): nothing was written.
    pub already: bool,
}

impl LegacySummary {
    /// Rows imported (or found).
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

impl fmt::Display for LegacySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.already {
            writeln!(
                f,
                "tenant {} already holds the source's {} rows (every table equal by count and checksum); nothing written",
                self.tenant,
                self.rows()
            )?;
        } else {
            writeln!(
                f,
                "imported {} rows into tenant {}; every table verified by count and checksum against the source; {} sequences raised",
                self.rows(),
                self.tenant,
                self.sequences_raised
            )?;
        }
        write!(f, "{}", crate::Tables(&self.tables))
    }
}

/// Imports the source database into `tenant` (active; no rows in its tenant tables, or
/// exactly the source's rows, in which case nothing is written) in one transaction of
/// the tenant's own; see the module's documentation. `source` is a connection to the
/// source database that may read every table; `access` holds the owner login that raises
/// sequences. Any incompatibility is refused with the [`Report`] of it (run [`inspect`]
/// first for the complete one, with row scans). The whole import is one transaction: the
/// router's pool must allow one that long (`PoolOptions::transaction_deadline` and
/// `statement_timeout`, whose defaults end it after 30 s).
pub async fn import_database(
    router: &Router,
    catalog: &Client,
    access: &ClusterAccess,
    source: &Client,
    tenant: TenantId,
    opts: &LegacyOptions,
    progress: &dyn Progress,
) -> Result<LegacySummary, Error> {
    let t = tenancy_catalog::get_tenant(catalog, tenant).await?;
    // One snapshot of the source for every table; only read, so ended by a rollback.
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION_SETTINGS}"
        ))
        .await
        .map_err(Error::db("opening the source's snapshot"))?;
    let loaded = match router.begin(tenant).await {
        Ok(mut tx) => match tx.batch_execute(SESSION_SETTINGS).await {
            Ok(()) => load(source, &mut tx, opts, progress).await.map(|l| (tx, l)),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    let _ = source.batch_execute("ROLLBACK").await;
    // On an error the tenant's transaction was dropped, which rolls it back.
    let (tx, (tables, bumps, already)) = loaded?;
    if already {
        tx.rollback().await?;
        return Ok(LegacySummary {
            tenant,
            tables,
            sequences_raised: 0,
            already,
        });
    }
    let raised = if bumps.is_empty() {
        Ok(0)
    } else {
        crate::import::raise_sequences(catalog, access, &t, &bumps).await
    };
    let sequences_raised = match raised {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    progress.verifying();
    tx.commit().await?;
    Ok(LegacySummary {
        tenant,
        tables,
        sequences_raised,
        already: false,
    })
}

type Loaded = (Vec<TableSummary>, Vec<(String, i64)>, bool);

async fn load(
    source: &Client,
    tx: &mut tenancy_sdk::TenantTx,
    opts: &LegacyOptions,
    progress: &dyn Progress,
) -> Result<Loaded, Error> {
    let tenant = tx.tenant();
    let target = tx.client().await?;
    let (report, plans) = analyse(source, target, opts, false).await?;
    if report.blocked() {
        return Err(Error::Incompatible(format!(
            "the source does not fit the app's tables; nothing was imported:\n{report}"
        )));
    }
    let mut holds = false;
    for p in &plans {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", p.target);
        if target
            .query_one(sql.as_str(), &[])
            .await
            .map_err(Error::db(format!("reading table {}", p.display)))?
            .get::<_, bool>(0)
        {
            holds = true;
            break;
        }
    }
    if holds {
        // Either this source's rows from an import that committed but was not marked done,
        // or other rows: only the first is accepted, and nothing is written.
        let mut tables = Vec::new();
        for p in &plans {
            let s = checksum(source, &p.source, p, "the source").await?;
            let t = checksum(target, &p.target, p, "the target").await?;
            if s != t {
                return Err(Error::Refused(format!(
                    "tenant {tenant} already has rows and table {} differs from the source ({} rows, checksum {} here; {} rows, checksum {} in the source): import into a new, empty tenant",
                    p.display, t.rows, t.checksum, s.rows, s.checksum
                )));
            }
            tables.push(s);
        }
        return Ok((tables, Vec::new(), true));
    }
    let mut tables = Vec::new();
    let mut bumps = Vec::new();
    for p in &plans {
        progress.table(&p.display);
        let copied = copy_table(source, target, p, progress).await?;
        let back = checksum(target, &p.target, p, "the target").await?;
        if back != copied {
            return Err(Error::Refused(format!(
                "after loading, table {} holds {} rows with checksum {} but the source has {} rows with checksum {}: the target changed the rows (a trigger, a default, a type that does not round-trip); nothing was imported",
                p.display, back.rows, back.checksum, copied.rows, copied.checksum
            )));
        }
        for (col, seq) in &p.sequences {
            let sql = format!("SELECT max({col})::bigint FROM {}", p.target);
            let max: Option<i64> = target
                .query_one(sql.as_str(), &[])
                .await
                .map_err(Error::db(format!(
                    "reading the largest key of {}",
                    p.display
                )))?
                .get(0);
            if let Some(max) = max {
                bumps.push((seq.clone(), max));
            }
        }
        tables.push(back);
    }
    Ok((tables, bumps, false))
}

/// The count and checksum of a table's rows as COPY text of the compared columns.
async fn checksum(
    c: &Client,
    table: &str,
    p: &TablePlan,
    side: &str,
) -> Result<TableSummary, Error> {
    let sql = format!(
        "COPY (SELECT {} FROM {table}) TO STDOUT",
        p.compared.join(", ")
    );
    let what = format!("reading table {} of {side}", p.display);
    let stream = c
        .copy_out(sql.as_str())
        .await
        .map_err(Error::db(what.clone()))?;
    futures_util::pin_mut!(stream);
    let mut sum = RowChecksum::default();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::db(what.clone()))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            sum.add(&pending[start..start + pos]);
            start += pos + 1;
        }
        pending.drain(..start);
    }
    Ok(sum.summary(&p.display))
}

/// One batch of rows for the target: a column of text values (None: NULL) per inserted
/// column.
type Batch = Vec<Vec<Option<String>>>;

/// Streams one table out of the source and into the target in batches; returns the count
/// and checksum of what was read. Reading and parsing the source (a task of its own) runs
/// ahead of the inserts by at most two batches.
async fn copy_table(
    source: &Client,
    target: &Client,
    p: &TablePlan,
    progress: &dyn Progress,
) -> Result<TableSummary, Error> {
    let n = p.inserted.len();
    if n == 0 {
        return Err(Error::Refused(format!(
            "table {} has no column to insert besides tenant_id",
            p.display
        )));
    }
    let cols: Vec<&str> = p.inserted.iter().map(|(c, _)| c.as_str()).collect();
    let params: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
    let aliases: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let casts: Vec<String> = p
        .inserted
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("u.c{i}::{ty}"))
        .collect();
    let insert = format!(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM unnest({}) AS u({})",
        p.target,
        cols.join(", "),
        casts.join(", "),
        params.join(", "),
        aliases.join(", ")
    );
    let stmt = target
        .prepare(insert.as_str())
        .await
        .map_err(Error::db(format!(
            "preparing the insert into {}",
            p.display
        )))?;
    let sql = format!(
        "COPY (SELECT {} FROM {}) TO STDOUT",
        p.compared.join(", "),
        p.source
    );
    let what = format!("reading table {} of the source", p.display);
    let stream = source
        .copy_out(sql.as_str())
        .await
        .map_err(Error::db(what.clone()))?;
    let (send, mut batches) = tokio::sync::mpsc::channel::<Batch>(2);
    let reader = tokio::spawn(read_rows(
        stream,
        send,
        p.display.clone(),
        p.compared.len(),
        p.inserted_at.clone(),
        what,
    ));
    let mut loaded = Ok(());
    while let Some(mut batch) = batches.recv().await {
        if let Err(e) = insert_batch(target, &stmt, &mut batch, p, progress).await {
            loaded = Err(e);
            break;
        }
    }
    // Closing the channel stops the reader if it is still going.
    drop(batches);
    let read = reader
        .await
        .map_err(|e| Error::Refused(format!("reading table {}: {e}", p.display)))?;
    loaded?;
    read
}

/// Reads a table's COPY text, checksums every row and sends its values in batches.
async fn read_rows(
    stream: tokio_postgres::CopyOutStream,
    send: tokio::sync::mpsc::Sender<Batch>,
    display: String,
    width: usize,
    inserted_at: Vec<usize>,
    what: String,
) -> Result<TableSummary, Error> {
    futures_util::pin_mut!(stream);
    let n = inserted_at.len();
    let mut sum = RowChecksum::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut batch: Batch = vec![Vec::with_capacity(BATCH_ROWS); n];
    let mut batch_bytes = 0usize;
    // Where each field of the current line starts and ends.
    let mut fields: Vec<(usize, usize)> = Vec::with_capacity(width);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::db(what.clone()))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + pos];
            start += pos + 1;
            sum.add(line);
            fields.clear();
            let mut from = 0;
            for (i, b) in line.iter().enumerate() {
                if *b == b'\t' {
                    fields.push((from, i));
                    from = i + 1;
                }
            }
            fields.push((from, line.len()));
            if fields.len() != width {
                return Err(Error::Refused(format!(
                    "a row of table {display} has {} fields, {width} expected",
                    fields.len(),
                )));
            }
            for (k, at) in inserted_at.iter().enumerate() {
                let (a, b) = fields[*at];
                let f = &line[a..b];
                batch[k].push(if f == b"\\N" {
                    None
                } else {
                    Some(String::from_utf8(copy_unescape(f)).map_err(|_| {
                        Error::Refused(format!("a value of table {display} is not valid UTF-8"))
                    })?)
                });
            }
            batch_bytes += line.len();
            if batch[0].len() >= BATCH_ROWS || batch_bytes >= BATCH_BYTES {
                let full = std::mem::replace(&mut batch, vec![Vec::with_capacity(BATCH_ROWS); n]);
                if send.send(full).await.is_err() {
                    // The loader stopped (an insert failed): it reports why.
                    return Ok(sum.summary(&display));
                }
                batch_bytes = 0;
            }
        }
        pending.drain(..start);
    }
    if !pending.is_empty() {
        return Err(Error::Refused(format!(
            "the COPY output of table {display} ended inside a row"
        )));
    }
    if !batch[0].is_empty() {
        let _ = send.send(batch).await;
    }
    Ok(sum.summary(&display))
}

async fn insert_batch(
    target: &Client,
    stmt: &tokio_postgres::Statement,
    batch: &mut [Vec<Option<String>>],
    p: &TablePlan,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let rows = batch[0].len() as u64;
    let params: Vec<&(dyn ToSql + Sync)> = batch.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
    let inserted = target.execute(stmt, &params).await.map_err(|e| {
        Error::Refused(format!(
            "inserting rows into table {}: {}; nothing was imported",
            p.display,
            tenancy_conn::error_text(&e)
        ))
    })?;
    if inserted != rows {
        return Err(Error::Refused(format!(
            "table {}: {rows} rows sent, {inserted} inserted; nothing was imported",
            p.display
        )));
    }
    progress.rows(rows);
    Ok(())
}
