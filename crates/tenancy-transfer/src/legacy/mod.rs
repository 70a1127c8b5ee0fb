//! A database of the app's single-tenant era (the same tables without `tenant_id`)
//! imported as one tenant of the shared model.
//!
//! - [`inspect`] compares the source with the app's tenant tables and lists every
//!   incompatibility with what to do ([`Report`]): a table or column on one side only, a
//!   type that differs (a key type that does not fit), a unique constraint that becomes
//!   per-tenant, rows that would collide under a unique key of the app, another app
//!   migration version (when the app keeps a migration ledger table).
//! - [`import_database`] copies every table in foreign-key order into one `TenantTx` of
//!   the target tenant (runtime role, signed context, row-level security forced). Each
//!   table is streamed as `COPY (SELECT …) TO STDOUT` text out of one REPEATABLE READ
//!   snapshot of the source, its rows checksummed on the way, into a *staging table* of
//!   the tenant's database (COPY FROM is refused on tables with row-level security, and
//!   the runtime role may not create temporary tables); then one set-based
//!   `COPY (INSERT INTO table … SELECT … FROM staging RETURNING …) TO STDOUT` in the
//!   tenant's transaction inserts them (`tenant_id` from the context and checked by the
//!   policy's WITH CHECK, foreign keys checked row by row, keys kept as they are: the
//!   app's keys are `(tenant_id, id)`) and returns the rows as stored, which are compared
//!   by count and order-independent checksum with what was read (a table with triggers or
//!   rules is read back after the insert instead). The next table is staged while one is
//!   inserted. Sequences are raised past the imported keys; one commit. A failure
//!   anywhere commits nothing.
//! - A tenant of its own schema or database (its tables empty and not yet serving, owned
//!   by the owner login) is loaded instead in one transaction of the owner login the way
//!   `pg_restore` loads (`bulk`): the exact definitions of the tables' keys, indexes and
//!   foreign keys recorded and dropped, one COPY per table (binary when both sides have
//!   the same built-in types) with the tenant's id added to every row, keys and indexes
//!   rebuilt and foreign keys validated set-based (a dangling reference fails it), the
//!   rows read back and compared by count and checksum, the schema compared with the
//!   recorded one (anything the rebuild changed fails it), sequences raised, one commit.
//! - Staging tables (`tenancy_import.t<tenant>_<n>`, unlogged, text columns) are created
//!   by the owner login with row-level security enabled and one policy, `FOR SELECT TO`
//!   the runtime role `USING (tenancy.current_tenant_id() = <the importing tenant>)`, and
//!   no privilege but that SELECT: another tenant's transaction sees none of their rows.
//!   They are dropped once the tenant's transaction is over; a table a crash leaves
//!   behind stays readable in that tenant's context only, and the next run replaces it.
//!   They hold one copy of the source's rows while the import runs (disk, not memory).
//! - [`source_identity`], [`recorded`], [`record`], [`finish`]: the catalog's record of
//!   which source went into which tenant, so that running the same import again finishes
//!   it (the tenant is reused) or does nothing (it is done).
//!
//! Memory is bounded by one chunk of COPY data, whatever the size of the source.
//!
//! Parts: this module holds the options, the report, the plan of each table and the
//! catalog's record of imports; `analyse` reads both sides' tables and compares them;
//! `import` copies and verifies through the tenant's transaction; `bulk` loads a tenant's
//! own tables with their keys and indexes rebuilt.

mod analyse;
mod bulk;
mod import;

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use tokio_postgres::Client;

use crate::format::TableSummary;
use crate::Error;

pub use analyse::inspect;
pub use import::{import_database, LegacySummary};

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

/// How long each step of an import took, in order.
#[derive(Debug, Clone)]
pub(crate) struct Phases {
    last: Instant,
    /// Each step and its time.
    steps: Vec<(String, Duration)>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Ends step `name` (begun when the previous one ended).
    fn lap(&mut self, name: &str) {
        let now = Instant::now();
        self.steps.push((name.to_owned(), now - self.last));
        self.last = now;
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
    /// Every compared column has the same built-in type on both sides: the rows may move
    /// as binary COPY.
    binary: bool,
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
