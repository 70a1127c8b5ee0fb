//! The import itself: the source's tables staged in the tenant's database and inserted
//! set-based, in foreign-key order, into one `TenantTx` of the tenant, the rows the
//! inserts return compared by count and checksum with the rows read, sequences raised,
//! one commit.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tenancy_core::{Placement, TenantId};
use tenancy_sdk::{ClusterAccess, Router};
use tokio_postgres::Client;

use super::analyse::analyse;
use super::{bulk, LegacyOptions, Phases, TablePlan};
use crate::format::{RowChecksum, TableSummary, SESSION_SETTINGS};
use crate::{Error, Progress};

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
    /// The tenant's own schema or database was loaded with its keys and indexes dropped
    /// and rebuilt (else: rows inserted through the tenant's transaction).
    pub rebuilt: bool,
    /// How long each step took, in order.
    pub phases: Vec<(String, Duration)>,
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
                "imported {} rows into tenant {}{}; every table verified by count and checksum against the source; {} sequences raised",
                self.rows(),
                self.tenant,
                if self.rebuilt {
                    " (keys and indexes rebuilt, the schema verified unchanged)"
                } else {
                    ""
                },
                self.sequences_raised
            )?;
        }
        write!(f, "{}", crate::Tables(&self.tables))
    }
}

/// Imports the source database into `tenant` (active; no rows in its tenant tables, or
/// exactly the source's rows, in which case nothing is written) in one transaction: the
/// tenant's own for a pooled tenant, the owner login's for a tenant of its own schema or
/// database (keys and indexes rebuilt, when the owner login owns the tables); see the
/// documentation of [`crate::legacy`]. `source` is a connection to
/// the source database that may read every table; `access` holds the owner login that
/// creates the staging tables and raises sequences. Any incompatibility is refused with the [`Report`](super::Report) of
/// it (run [`inspect`](super::inspect) first for the complete one, with row scans). The
/// whole import is one transaction: the router's pool must allow one that long
/// (`PoolOptions::transaction_deadline` and `statement_timeout`, whose defaults end it
/// after 30 s).
pub async fn import_database(
    router: &Router,
    catalog: &Client,
    access: &ClusterAccess,
    source: &Client,
    tenant: TenantId,
    opts: &LegacyOptions,
    progress: &dyn Progress,
) -> Result<LegacySummary, Error> {
    let mut phases = Phases::new();
    let t = tenancy_catalog::get_tenant(catalog, tenant).await?;
    let owner = crate::import::owner_connection(catalog, access, &t).await?;
    let own = t.placement != Placement::Pooled;
    // One snapshot of the source for every table; only read, so ended by a rollback.
    source
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION_SETTINGS}"
        ))
        .await
        .map_err(Error::db("opening the source's snapshot"))?;
    let loaded = match router.begin(tenant).await {
        Ok(mut tx) => match tx.batch_execute(SESSION_SETTINGS).await {
            Ok(()) => load(source, &owner, &mut tx, opts, progress, own, &mut phases)
                .await
                .map(|l| (tx, l)),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    let done = match loaded {
        Ok((tx, Loaded::Rebuild(plans))) => {
            // The tenant's transaction only compared the tables; the owner's loads them.
            let ended = tx.rollback().await;
            match ended {
                Ok(()) => bulk::load(source, &owner, tenant, &plans, progress, &mut phases)
                    .await
                    .map(|b| (b.tables, b.sequences_raised, false, true)),
                Err(e) => Err(e.into()),
            }
        }
        other => finish(other, &owner, progress, &mut phases)
            .await
            .map(|(t, n, a)| (t, n, a, false)),
    };
    let _ = source.batch_execute("ROLLBACK").await;
    // The tenant's transaction is over (committed, rolled back, or dropped and rolling
    // back): its staging tables go.
    drop_staging(&owner, tenant).await;
    let (tables, sequences_raised, already, rebuilt) = done?;
    Ok(LegacySummary {
        tenant,
        tables,
        sequences_raised,
        already,
        rebuilt,
        phases: phases.steps,
    })
}

/// Raises the sequences and commits the tenant's transaction, or rolls it back when the
/// tenant already held the source's rows.
async fn finish(
    loaded: Result<(tenancy_sdk::TenantTx, Loaded), Error>,
    owner: &Client,
    progress: &dyn Progress,
    phases: &mut Phases,
) -> Result<(Vec<TableSummary>, u64, bool), Error> {
    // On an error the tenant's transaction was dropped, which rolls it back.
    let (tx, loaded) = loaded?;
    let (tables, bumps) = match loaded {
        Loaded::Already(tables) => {
            tx.rollback().await?;
            return Ok((tables, 0, true));
        }
        Loaded::Rebuild(_) => {
            return Err(Error::Refused(
                "the tables of the tenant's own schema or database are loaded by the owner".into(),
            ))
        }
        Loaded::Rows(tables, bumps) => (tables, bumps),
    };
    let raised = crate::import::raise_sequences_as(owner, &bumps).await;
    let sequences_raised = match raised {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    progress.verifying();
    tx.commit().await?;
    phases.lap("commit");
    Ok((tables, sequences_raised, false))
}

/// What the tenant's transaction did.
enum Loaded {
    /// The rows are inserted and verified; the sequences to raise.
    Rows(Vec<TableSummary>, Vec<(String, i64)>),
    /// The tenant already held exactly the source's rows.
    Already(Vec<TableSummary>),
    /// The tenant's own empty tables, for the owner to load with their keys and indexes
    /// rebuilt.
    Rebuild(Vec<TablePlan>),
}

async fn load(
    source: &Client,
    owner: &Client,
    tx: &mut tenancy_sdk::TenantTx,
    opts: &LegacyOptions,
    progress: &dyn Progress,
    own: bool,
    phases: &mut Phases,
) -> Result<Loaded, Error> {
    let tenant = tx.tenant();
    let target = tx.client().await?;
    let (report, plans) = analyse(source, target, opts, false).await?;
    phases.lap("compare tables");
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
        return Ok(Loaded::Already(tables));
    }
    if own && bulk::eligible(owner, &plans).await? {
        return Ok(Loaded::Rebuild(plans));
    }
    // Table k's rows go from its staging table into the tenant's table while table k+1's
    // are staged: the source and the owner connection work beside the tenant's.
    let mut tables = Vec::new();
    let mut bumps = Vec::new();
    let Some(first) = plans.first() else {
        return Ok(Loaded::Rows(tables, bumps));
    };
    let mut staged = stage_table(source, owner, tenant, 0, first).await?;
    phases.lap(&format!("stage {}", first.display));
    for (i, p) in plans.iter().enumerate() {
        let next = async {
            match plans.get(i + 1) {
                Some(n) => stage_table(source, owner, tenant, i + 1, n).await.map(Some),
                None => Ok(None),
            }
        };
        let (back, next) = tokio::try_join!(insert_staged(target, tenant, i, p, progress), next)?;
        if back != staged {
            return Err(Error::Refused(format!(
                "after loading, table {} holds {} rows with checksum {} but the source has {} rows with checksum {}: the target changed the rows (a trigger, a default, a type that does not round-trip); nothing was imported",
                p.display, back.rows, back.checksum, staged.rows, staged.checksum
            )));
        }
        sequence_bumps(target, p, &mut bumps).await?;
        tables.push(back);
        phases.lap(&match plans.get(i + 1) {
            Some(n) => format!("insert {} (staging {} beside)", p.display, n.display),
            None => format!("insert {}", p.display),
        });
        if let Some(n) = next {
            staged = n;
        }
    }
    Ok(Loaded::Rows(tables, bumps))
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

/// The schema of the staging tables, in the tenant's database.
const STAGING_SCHEMA: &str = "tenancy_import";

/// Where one table's source rows wait, as text, between the source and the tenant's
/// table: an unlogged table of the tenant's database, owned by the owner login, that only
/// a session in the importing tenant's context may read (a row-level security policy
/// naming the tenant; no other privilege is granted), dropped when the import ends and
/// replaced by a rerun.
fn staging_table(tenant: TenantId, index: usize) -> String {
    format!(
        "{STAGING_SCHEMA}.{}",
        tenancy_conn::quote_ident(&format!("t{}_{index}", tenant.as_uuid().simple()))
    )
}

/// Drops the staging tables of `tenant`, once its transaction is over (best effort: a
/// table left behind by a failure is readable only in the tenant's context, and the next
/// run replaces it).
async fn drop_staging(owner: &Client, tenant: TenantId) {
    let prefix = format!("t{}\\_%", tenant.as_uuid().simple());
    let Ok(rows) = owner
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
              WHERE schemaname = $1 AND tablename LIKE $2",
            &[&STAGING_SCHEMA, &prefix],
        )
        .await
    else {
        return;
    };
    let mut sql = String::from("SET lock_timeout = '5s'; ");
    for r in rows {
        sql.push_str(&format!("DROP TABLE IF EXISTS {}; ", r.get::<_, String>(0)));
    }
    let _ = owner.batch_execute(&sql).await;
}

/// Creates the staging table of plan `index` and streams the source's rows of it into the
/// table as COPY text, as they are; returns the count and checksum of what was read.
async fn stage_table(
    source: &Client,
    owner: &Client,
    tenant: TenantId,
    index: usize,
    p: &TablePlan,
) -> Result<TableSummary, Error> {
    let stage = staging_table(tenant, index);
    let columns: Vec<String> = (0..p.compared.len())
        .map(|i| format!("c{i} text"))
        .collect();
    // One implicit transaction: the table never exists without its policy.
    owner
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {STAGING_SCHEMA};
             GRANT USAGE ON SCHEMA {STAGING_SCHEMA} TO {runtime};
             DROP TABLE IF EXISTS {stage};
             CREATE UNLOGGED TABLE {stage} ({columns});
             REVOKE ALL ON {stage} FROM PUBLIC;
             ALTER TABLE {stage} ENABLE ROW LEVEL SECURITY;
             CREATE POLICY tenancy_import_tenant ON {stage} FOR SELECT TO {runtime}
                 USING ((SELECT tenancy.current_tenant_id()) = {tenant}::uuid);
             GRANT SELECT ON {stage} TO {runtime};",
            runtime = tenancy_sdk::bootstrap::RUNTIME_ROLE,
            columns = columns.join(", "),
            tenant = tenancy_conn::quote_literal(&tenant.as_uuid().to_string()),
        ))
        .await
        .map_err(Error::db(format!(
            "creating the staging table of {}",
            p.display
        )))?;
    let what = format!("reading table {} of the source", p.display);
    let out = source
        .copy_out(
            format!(
                "COPY (SELECT {} FROM {}) TO STDOUT",
                p.compared.join(", "),
                p.source
            )
            .as_str(),
        )
        .await
        .map_err(Error::db(what.clone()))?;
    let staging = format!("staging table {}", p.display);
    let sink = owner
        .copy_in(format!("COPY {stage} FROM STDIN").as_str())
        .await
        .map_err(Error::db(staging.clone()))?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let mut lines = Lines::default();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(Error::db(what.clone()))?;
        lines.feed(&chunk, |_| {});
        // One COPY data message arrives per row: fed, not flushed, the sink packs them
        // into larger messages.
        sink.feed(chunk).await.map_err(Error::db(staging.clone()))?;
    }
    let staged = sink.finish().await.map_err(Error::db(staging))?;
    let read = lines.end(&p.display)?;
    if staged != read.rows {
        return Err(Error::Refused(format!(
            "table {}: {} rows read from the source, {staged} staged; nothing was imported",
            p.display, read.rows
        )));
    }
    Ok(read.summary(&p.display))
}

/// COPY text split into rows across chunks, each row added to a checksum.
#[derive(Default)]
struct Lines {
    sum: RowChecksum,
    pending: Vec<u8>,
}

impl Lines {
    /// Adds the complete rows of `chunk` (with what was left of the previous one) and
    /// calls `rows` with how many there were.
    fn feed(&mut self, chunk: &[u8], rows: impl FnOnce(u64)) {
        let before = self.sum.rows;
        let mut rest = chunk;
        if !self.pending.is_empty() {
            let Some(pos) = rest.iter().position(|b| *b == b'\n') else {
                self.pending.extend_from_slice(rest);
                return;
            };
            self.pending.extend_from_slice(&rest[..pos]);
            self.sum.add(&self.pending);
            self.pending.clear();
            rest = &rest[pos + 1..];
        }
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            self.sum.add(&rest[..pos]);
            rest = &rest[pos + 1..];
        }
        self.pending.extend_from_slice(rest);
        rows(self.sum.rows - before);
    }

    /// The checksum, once the stream ended (refused if it ended inside a row).
    fn end(self, display: &str) -> Result<RowChecksum, Error> {
        if !self.pending.is_empty() {
            return Err(Error::Refused(format!(
                "the COPY output of table {display} ended inside a row"
            )));
        }
        Ok(self.sum)
    }
}

/// Inserts the staged rows of plan `index` into the tenant's table in one statement,
/// through the tenant's transaction; returns the count and checksum of the rows as the
/// table stored them. Without triggers or rules on the table, they are the rows the
/// insert returns (what was written, defaults and casts applied), read as they are
/// written; otherwise the table is read back after the insert.
async fn insert_staged(
    target: &Client,
    tenant: TenantId,
    index: usize,
    p: &TablePlan,
    progress: &dyn Progress,
) -> Result<TableSummary, Error> {
    if p.inserted.is_empty() {
        return Err(Error::Refused(format!(
            "table {} has no column to insert besides tenant_id",
            p.display
        )));
    }
    progress.table(&p.display);
    let cols: Vec<&str> = p.inserted.iter().map(|(c, _)| c.as_str()).collect();
    let casts: Vec<String> = p
        .inserted
        .iter()
        .zip(&p.inserted_at)
        .map(|((_, ty), at)| format!("s.c{at}::{ty}"))
        .collect();
    // tenant_id is the context's tenant, read once for the statement (an init plan), not
    // through the column's default for every row; the policy's WITH CHECK still compares
    // every row with the context.
    let insert = format!(
        "INSERT INTO {} (tenant_id, {}) OVERRIDING SYSTEM VALUE
         SELECT (SELECT tenancy.current_tenant_id()), {} FROM {} AS s",
        p.target,
        cols.join(", "),
        casts.join(", "),
        staging_table(tenant, index),
    );
    let failed = |e: tokio_postgres::Error| {
        Error::Refused(format!(
            "inserting rows into table {}: {}; nothing was imported",
            p.display,
            tenancy_conn::error_text(&e)
        ))
    };
    let plain: bool = target
        .query_one(
            "SELECT NOT c.relhasrules AND NOT EXISTS (
                    SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal)
               FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&p.target],
        )
        .await
        .map_err(Error::db(format!("reading the triggers of {}", p.display)))?
        .get(0);
    if !plain {
        let n = target.execute(insert.as_str(), &[]).await.map_err(failed)?;
        progress.rows(n);
        return checksum(target, &p.target, p, "the target").await;
    }
    let sql = format!(
        "COPY ({insert} RETURNING {}) TO STDOUT",
        p.compared.join(", ")
    );
    let stream = target.copy_out(sql.as_str()).await.map_err(failed)?;
    futures_util::pin_mut!(stream);
    let mut lines = Lines::default();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        lines.feed(&chunk, |n| progress.rows(n));
    }
    Ok(lines.end(&p.display)?.summary(&p.display))
}

/// Adds to `bumps` each of `p`'s sequences with the largest key its column holds in the
/// target (none when the table is empty).
pub(super) async fn sequence_bumps(
    client: &Client,
    p: &TablePlan,
    bumps: &mut Vec<(String, i64)>,
) -> Result<(), Error> {
    for (col, seq) in &p.sequences {
        let sql = format!("SELECT max({col})::bigint FROM {}", p.target);
        let max: Option<i64> = client
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
    Ok(())
}
