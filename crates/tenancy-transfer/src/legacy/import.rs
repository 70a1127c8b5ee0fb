//! The import itself: the source's tables copied in foreign-key order into one
//! `TenantTx` of the tenant, in bounded batches, each table read back and compared by
//! count and checksum, sequences raised, one commit.

use std::fmt;

use futures_util::StreamExt;
use tenancy_core::TenantId;
use tenancy_sdk::{ClusterAccess, Router};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::analyse::analyse;
use super::{LegacyOptions, TablePlan};
use crate::format::{copy_unescape, RowChecksum, TableSummary, SESSION_SETTINGS};
use crate::{Error, Progress};

/// Rows sent to the target in one statement.
const BATCH_ROWS: usize = 5_000;
/// Bytes of row text after which a batch is sent even when it holds fewer rows.
const BATCH_BYTES: usize = 4 << 20;

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
/// exactly the source's rows, in which case nothing is written) in one transaction of the
/// tenant's own; see the documentation of [`crate::legacy`]. `source` is a connection to
/// the source database that may read every table; `access` holds the owner login that
/// raises sequences. Any incompatibility is refused with the [`Report`](super::Report) of
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
