//! The import into a tenant of its own schema or database, whose tables are empty and not
//! yet serving: loaded the way `pg_restore` loads, in one transaction of the owner login.
//!
//! The tables are locked and found empty; the exact definitions of their primary keys,
//! unique and exclusion constraints, indexes and of every foreign key from or to them
//! (`pg_get_constraintdef`, `pg_get_indexdef`) are recorded with the rest of their schema
//! (row-level security flags, index options, comments); the keys, foreign keys and indexes
//! are dropped and row-level security is no longer forced for the owner; each table is
//! filled with one COPY of the source's rows, the tenant's id added to every row (binary
//! COPY when both sides have the same built-in types, else text; check constraints and
//! NOT NULL are checked row by row as usual); the keys and indexes are built again from
//! their definitions and the foreign keys added again, each validated by one set-based
//! scan (a dangling reference fails the import); the rows are read back and compared by
//! count and checksum with the rows read from the source, and no row may name another
//! tenant; row-level security is forced again and the schema must be exactly what was
//! recorded; sequences are raised; one commit. A failure anywhere rolls everything back,
//! the dropped definitions included.

use std::io::Cursor;

use futures_util::{SinkExt, StreamExt};
use tenancy_core::TenantId;
use tokio_postgres::Client;

use super::{Phases, TablePlan};
use crate::format::{RowChecksum, TableSummary, SESSION_SETTINGS};
use crate::{Error, Progress};

/// What the bulk load did.
pub(super) struct Bulk {
    pub(super) tables: Vec<TableSummary>,
    pub(super) sequences_raised: u64,
}

/// Whether the owner login may rebuild every table of `plans` and every table with a
/// foreign key to one of them (it owns them, or is a member of their owner).
pub(super) async fn eligible(owner: &Client, plans: &[TablePlan]) -> Result<bool, Error> {
    let targets: Vec<&str> = plans.iter().map(|p| p.target.as_str()).collect();
    let row = owner
        .query_one(
            "WITH t AS (SELECT unnest($1::text[])::regclass AS r)
             SELECT coalesce(bool_and(pg_has_role(c.relowner, 'MEMBER')), true)
               FROM pg_class c
              WHERE c.oid IN (SELECT r FROM t)
                 OR c.oid IN (SELECT conrelid FROM pg_constraint
                               WHERE contype = 'f' AND confrelid IN (SELECT r FROM t))",
            &[&targets],
        )
        .await
        .map_err(Error::db("reading the owners of the tenant's tables"))?;
    Ok(row.get(0))
}

/// Loads every table of `plans` (in order) into the tenant's empty tables through
/// `owner`, a connection to the tenant's database as the owner login; see the module's
/// documentation. `phases` receives the time each step took.
pub(super) async fn load(
    source: &Client,
    owner: &Client,
    tenant: TenantId,
    plans: &[TablePlan],
    progress: &dyn Progress,
    phases: &mut Phases,
) -> Result<Bulk, Error> {
    owner
        .batch_execute(&format!(
            "BEGIN; {SESSION_SETTINGS}; SET LOCAL lock_timeout = '30s'"
        ))
        .await
        .map_err(Error::db("opening the owner's transaction"))?;
    match in_transaction(phases, source, owner, tenant, plans, progress).await {
        Ok(done) => {
            owner
                .batch_execute("COMMIT")
                .await
                .map_err(Error::db("committing the import"))?;
            phases.lap("commit");
            Ok(done)
        }
        Err(e) => {
            let _ = owner.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// `load` inside the owner's open transaction.
async fn in_transaction(
    phases: &mut Phases,
    source: &Client,
    owner: &Client,
    tenant: TenantId,
    plans: &[TablePlan],
    progress: &dyn Progress,
) -> Result<Bulk, Error> {
    // Binary COPY carries text as the database's bytes: only between equal encodings.
    let encoding =
        "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()";
    let same_encoding = source
        .query_one(encoding, &[])
        .await
        .map_err(Error::db("reading the source's encoding"))?
        .get::<_, String>(0)
        == owner
            .query_one(encoding, &[])
            .await
            .map_err(Error::db("reading the target's encoding"))?
            .get::<_, String>(0);
    let plans: Vec<TablePlan> = plans
        .iter()
        .map(|p| TablePlan {
            binary: p.binary && same_encoding,
            ..p.clone()
        })
        .collect();
    let plans = plans.as_slice();
    let targets: Vec<&str> = plans.iter().map(|p| p.target.as_str()).collect();
    let list = targets.join(", ");
    owner
        .batch_execute(&format!("LOCK TABLE {list} IN ACCESS EXCLUSIVE MODE"))
        .await
        .map_err(Error::db("locking the tenant's tables"))?;
    let before = schema_of(owner, &targets).await?;
    // Foreign keys first (they hang on the keys), then keys, then the other indexes.
    let constraints = owner
        .query(
            "WITH t AS (SELECT unnest($1::text[])::regclass AS r)
             SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname),
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname,
                           pg_get_constraintdef(c.oid)),
                    c.contype = 'f'
               FROM pg_constraint c
              WHERE (c.contype IN ('p', 'u', 'x') AND c.conrelid IN (SELECT r FROM t))
                 OR (c.contype = 'f' AND (c.conrelid IN (SELECT r FROM t) OR c.confrelid IN (SELECT r FROM t)))
              ORDER BY c.contype = 'f' DESC, c.oid",
            &[&targets],
        )
        .await
        .map_err(Error::db("reading the constraints of the tenant's tables"))?;
    let indexes = owner
        .query(
            "SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
               FROM pg_index i
              WHERE i.indrelid = ANY ($1::text[]::regclass[])
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                                 WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
              ORDER BY i.indexrelid",
            &[&targets],
        )
        .await
        .map_err(Error::db("reading the indexes of the tenant's tables"))?;
    let forced: Vec<String> = owner
        .query(
            "SELECT oid::regclass::text FROM pg_class
              WHERE oid = ANY ($1::text[]::regclass[]) AND relforcerowsecurity ORDER BY oid",
            &[&targets],
        )
        .await
        .map_err(Error::db(
            "reading the row-level security of the tenant's tables",
        ))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut drop = String::new();
    for r in constraints.iter() {
        drop.push_str(&format!("{};\n", r.get::<_, String>(0)));
    }
    for r in &indexes {
        drop.push_str(&format!("{};\n", r.get::<_, String>(0)));
    }
    for t in &forced {
        drop.push_str(&format!("ALTER TABLE {t} NO FORCE ROW LEVEL SECURITY;\n"));
    }
    owner.batch_execute(&drop).await.map_err(Error::db(
        "dropping the keys and indexes of the tenant's tables",
    ))?;
    for p in plans {
        if any_row(owner, p, "").await? {
            return Err(Error::Refused(format!(
                "table {} of the tenant's database already has rows: import into a new, empty tenant",
                p.display
            )));
        }
    }
    phases.lap("drop keys and indexes");

    let mut read = Vec::new();
    for p in plans {
        progress.table(&p.display);
        read.push(copy_table(source, owner, tenant, p, progress).await?);
        phases.lap(&format!("copy {}", p.display));
    }

    // Keys, then indexes, then foreign keys (validated against the keys).
    let mut build = Vec::new();
    for r in constraints.iter().filter(|r| !r.get::<_, bool>(2)) {
        build.push(r.get::<_, String>(1));
    }
    for r in &indexes {
        build.push(r.get::<_, String>(1));
    }
    for sql in &build {
        owner.batch_execute(sql).await.map_err(|e| {
            Error::Refused(format!(
                "rebuilding ({sql}): {}; nothing was imported",
                tenancy_conn::error_text(&e)
            ))
        })?;
    }
    phases.lap("build keys and indexes");
    for r in constraints.iter().filter(|r| r.get::<_, bool>(2)) {
        let sql: String = r.get(1);
        owner.batch_execute(&sql).await.map_err(|e| {
            Error::Refused(format!(
                "a row of the source references a row it does not hold ({sql}): {}; nothing was imported",
                tenancy_conn::error_text(&e)
            ))
        })?;
    }
    phases.lap("validate foreign keys");

    progress.verifying();
    let mut tables = Vec::new();
    let mut bumps = Vec::new();
    let tenant_literal = tenancy_conn::quote_literal(&tenant.as_uuid().to_string());
    for (p, read) in plans.iter().zip(read) {
        let back = read_back(owner, p, &tenant_literal).await?;
        if back != read {
            return Err(Error::Refused(format!(
                "after loading, table {} holds {} rows of the tenant with checksum {} but the source has {} rows with checksum {}: the target changed the rows (a trigger, a default, a type that does not round-trip); nothing was imported",
                p.display, back.rows, back.checksum, read.rows, read.checksum
            )));
        }
        let other = format!(" WHERE tenant_id IS DISTINCT FROM {tenant_literal}");
        if any_row(owner, p, &other).await? {
            return Err(Error::Refused(format!(
                "after loading, table {} holds rows of another tenant; nothing was imported",
                p.display
            )));
        }
        super::import::sequence_bumps(owner, p, &mut bumps).await?;
        tables.push(back);
    }
    phases.lap("verify rows");

    let mut force = String::new();
    for t in &forced {
        force.push_str(&format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY;\n"));
    }
    if !force.is_empty() {
        owner
            .batch_execute(&force)
            .await
            .map_err(Error::db("forcing row-level security again"))?;
    }
    let after = schema_of(owner, &targets).await?;
    if after != before {
        let lost: Vec<&String> = before.iter().filter(|x| !after.contains(x)).collect();
        let gained: Vec<&String> = after.iter().filter(|x| !before.contains(x)).collect();
        return Err(Error::Refused(format!(
            "the tenant's tables are not what the migrations made once their keys and indexes were rebuilt (missing: {lost:?}; instead: {gained:?}); nothing was imported"
        )));
    }
    phases.lap("verify schema");
    let sequences_raised = crate::import::raise_sequences_as(owner, &bumps).await?;
    Ok(Bulk {
        tables,
        sequences_raised,
    })
}

/// Everything about `targets` that dropping and rebuilding their keys and indexes could
/// change, one line per object, sorted.
async fn schema_of(owner: &Client, targets: &[&str]) -> Result<Vec<String>, Error> {
    let rows = owner
        .query(
            "WITH t AS (SELECT unnest($1::text[])::regclass AS r)
             SELECT line FROM (
               SELECT format('constraint %s %I %s deferrable=%s deferred=%s valid=%s comment=%s',
                             c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid),
                             c.condeferrable, c.condeferred, c.convalidated,
                             obj_description(c.oid, 'pg_constraint')) AS line
                 FROM pg_constraint c
                WHERE c.conrelid IN (SELECT r FROM t)
                   OR (c.contype = 'f' AND c.confrelid IN (SELECT r FROM t))
               UNION ALL
               SELECT format('index %s %s unique=%s primary=%s clustered=%s replident=%s valid=%s options=%s tablespace=%s comment=%s',
                             i.indexrelid::regclass, pg_get_indexdef(i.indexrelid), i.indisunique,
                             i.indisprimary, i.indisclustered, i.indisreplident, i.indisvalid,
                             x.reloptions, x.reltablespace, obj_description(i.indexrelid, 'pg_class'))
                 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                WHERE i.indrelid IN (SELECT r FROM t)
               UNION ALL
               SELECT format('table %s rls=%s force=%s', c.oid::regclass, c.relrowsecurity,
                             c.relforcerowsecurity)
                 FROM pg_class c WHERE c.oid IN (SELECT r FROM t)
               UNION ALL
               SELECT format('trigger %s %I %s enabled=%s', g.tgrelid::regclass, g.tgname,
                             pg_get_triggerdef(g.oid), g.tgenabled)
                 FROM pg_trigger g WHERE g.tgrelid IN (SELECT r FROM t) AND NOT g.tgisinternal
             ) s ORDER BY line",
            &[&targets],
        )
        .await
        .map_err(Error::db("reading the schema of the tenant's tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The signature, flags and header extension of binary COPY data.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Bytes of COPY data sent to the server at once.
const BATCH: usize = 256 * 1024;

/// Streams the source's rows of `p` into its table, the tenant's id added to each row;
/// returns the count and checksum of the rows read (binary tuples or text lines of the
/// compared columns).
async fn copy_table(
    source: &Client,
    owner: &Client,
    tenant: TenantId,
    p: &TablePlan,
    progress: &dyn Progress,
) -> Result<TableSummary, Error> {
    let format = if p.binary { " (FORMAT binary)" } else { "" };
    let what = format!("reading table {} of the source", p.display);
    let out = copy_out_compared(source, p, &p.source, "", &what).await?;
    let cols: Vec<&str> = p.inserted.iter().map(|(c, _)| c.as_str()).collect();
    let failed = |e: tokio_postgres::Error| {
        Error::Refused(format!(
            "loading rows into table {}: {}; nothing was imported",
            p.display,
            tenancy_conn::error_text(&e)
        ))
    };
    let sink = owner
        .copy_in::<_, Cursor<Vec<u8>>>(
            format!(
                "COPY {} (tenant_id, {}) FROM STDIN{format}",
                p.target,
                cols.join(", ")
            )
            .as_str(),
        )
        .await
        .map_err(failed)?;
    futures_util::pin_mut!(out);
    futures_util::pin_mut!(sink);
    let identity = p.inserted_at.iter().copied().eq(0..p.compared.len());
    let mut rows = Rows::new(p.binary, !identity);
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH + 64 * 1024);
    if p.binary {
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&[0; 8]);
    }
    let uuid = tenant.as_uuid();
    let tenant_text = uuid.to_string();
    let tenant_bin = uuid.as_bytes();
    let width = i16::try_from(p.inserted_at.len() + 1)
        .map_err(|_| Error::Refused(format!("table {} has too many columns", p.display)))?;
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(Error::db(what.clone()))?;
        let before = rows.sum.rows;
        rows.feed(&chunk, &p.display, |row, fields| {
            if p.binary {
                buf.extend_from_slice(&width.to_be_bytes());
                buf.extend_from_slice(&16i32.to_be_bytes());
                buf.extend_from_slice(tenant_bin);
                for &at in &p.inserted_at {
                    let (s, e) = fields[at];
                    buf.extend_from_slice(&row[s..e]);
                }
            } else {
                buf.extend_from_slice(tenant_text.as_bytes());
                if identity {
                    buf.push(b'\t');
                    buf.extend_from_slice(row);
                } else {
                    for &at in &p.inserted_at {
                        let (s, e) = fields[at];
                        buf.push(b'\t');
                        buf.extend_from_slice(&row[s..e]);
                    }
                }
                buf.push(b'\n');
            }
        })?;
        progress.rows(rows.sum.rows - before);
        if buf.len() >= BATCH {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(BATCH + 64 * 1024));
            sink.feed(Cursor::new(full)).await.map_err(failed)?;
        }
    }
    let read = rows.end(&p.display)?;
    if p.binary {
        buf.extend_from_slice(&(-1i16).to_be_bytes());
    }
    if !buf.is_empty() {
        sink.feed(Cursor::new(buf)).await.map_err(failed)?;
    }
    let loaded = sink.finish().await.map_err(failed)?;
    if loaded != read.rows {
        return Err(Error::Refused(format!(
            "table {}: {} rows read from the source, {loaded} loaded; nothing was imported",
            p.display, read.rows
        )));
    }
    Ok(read.summary(&p.display))
}

/// The count and checksum of the tenant's rows of `p` as the table holds them, in the
/// form the source's were read.
async fn read_back(owner: &Client, p: &TablePlan, tenant: &str) -> Result<TableSummary, Error> {
    let what = format!("reading back table {}", p.display);
    let filter = format!(" WHERE tenant_id = {tenant}");
    let out = copy_out_compared(owner, p, &p.target, &filter, &what).await?;
    futures_util::pin_mut!(out);
    let mut rows = Rows::new(p.binary, false);
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(Error::db(what.clone()))?;
        rows.feed(&chunk, &p.display, |_, _| {})?;
    }
    Ok(rows.end(&p.display)?.summary(&p.display))
}

/// COPY data split into rows across chunks (text lines, or binary tuples after the
/// header), each row added to a checksum and handed over with the spans of its fields
/// (binary: each field with its length word; text: split only when asked for).
struct Rows {
    binary: bool,
    /// Text: whether the spans of the fields are wanted.
    split: bool,
    sum: RowChecksum,
    pending: Vec<u8>,
    header: bool,
    trailer: bool,
    fields: Vec<(usize, usize)>,
}

impl Rows {
    fn new(binary: bool, split: bool) -> Self {
        Rows {
            binary,
            split,
            sum: RowChecksum::default(),
            pending: Vec::new(),
            header: !binary,
            trailer: false,
            fields: Vec::new(),
        }
    }

    fn feed(
        &mut self,
        chunk: &[u8],
        display: &str,
        mut each: impl FnMut(&[u8], &[(usize, usize)]),
    ) -> Result<(), Error> {
        self.pending.extend_from_slice(chunk);
        let buf = std::mem::take(&mut self.pending);
        let bad = |what: &str| {
            Error::Refused(format!(
                "the COPY data of table {display} is not what was expected: {what}"
            ))
        };
        let mut pos = 0;
        if self.binary {
            if !self.header {
                if buf.len() < SIGNATURE.len() + 8 {
                    self.pending = buf;
                    return Ok(());
                }
                if &buf[..SIGNATURE.len()] != SIGNATURE {
                    return Err(bad("no binary COPY signature"));
                }
                let at = SIGNATURE.len() + 4;
                let ext = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                let end = at + 4 + ext as usize;
                if buf.len() < end {
                    self.pending = buf;
                    return Ok(());
                }
                self.header = true;
                pos = end;
            }
            loop {
                let rest = &buf[pos..];
                if rest.len() < 2 {
                    break;
                }
                if self.trailer {
                    return Err(bad("data after the end"));
                }
                let n = i16::from_be_bytes([rest[0], rest[1]]);
                if n == -1 {
                    self.trailer = true;
                    pos += 2;
                    continue;
                }
                let n = usize::try_from(n).map_err(|_| bad("a negative field count"))?;
                self.fields.clear();
                let mut q = 2;
                let mut complete = true;
                for _ in 0..n {
                    if rest.len() < q + 4 {
                        complete = false;
                        break;
                    }
                    let len = i32::from_be_bytes([rest[q], rest[q + 1], rest[q + 2], rest[q + 3]]);
                    let start = q;
                    q += 4;
                    if len >= 0 {
                        q += len as usize;
                        if rest.len() < q {
                            complete = false;
                            break;
                        }
                    } else if len != -1 {
                        return Err(bad("a negative field length"));
                    }
                    self.fields.push((start, q));
                }
                if !complete {
                    break;
                }
                let row = &rest[..q];
                self.sum.add(row);
                each(row, &self.fields);
                pos += q;
            }
        } else {
            while let Some(n) = buf[pos..].iter().position(|b| *b == b'\n') {
                let row = &buf[pos..pos + n];
                self.sum.add(row);
                self.fields.clear();
                if self.split {
                    let mut start = 0;
                    for (i, b) in row.iter().enumerate() {
                        if *b == b'\t' {
                            self.fields.push((start, i));
                            start = i + 1;
                        }
                    }
                    self.fields.push((start, row.len()));
                }
                each(row, &self.fields);
                pos += n + 1;
            }
        }
        self.pending = buf;
        self.pending.drain(..pos);
        Ok(())
    }

    /// The checksum, once the stream ended (refused if it ended inside a row, or binary
    /// data without its end marker).
    fn end(self, display: &str) -> Result<RowChecksum, Error> {
        if !self.pending.is_empty() || (self.binary && !self.trailer) {
            return Err(Error::Refused(format!(
                "the COPY data of table {display} ended inside a row"
            )));
        }
        Ok(self.sum)
    }
}

/// Starts `COPY (SELECT <p's compared columns> FROM <table><filter>) TO STDOUT`, binary
/// when `p` is copied in binary.
async fn copy_out_compared(
    client: &Client,
    p: &TablePlan,
    table: &str,
    filter: &str,
    what: &str,
) -> Result<tokio_postgres::CopyOutStream, Error> {
    let format = if p.binary { " (FORMAT binary)" } else { "" };
    let sql = format!(
        "COPY (SELECT {} FROM {table}{filter}) TO STDOUT{format}",
        p.compared.join(", ")
    );
    client
        .copy_out(sql.as_str())
        .await
        .map_err(Error::db(what.to_owned()))
}

/// Whether `p`'s target table holds a row (matching `filter`, a WHERE clause or empty).
async fn any_row(owner: &Client, p: &TablePlan, filter: &str) -> Result<bool, Error> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {}{filter})", p.target);
    Ok(owner
        .query_one(sql.as_str(), &[])
        .await
        .map_err(Error::db(format!("reading table {}", p.display)))?
        .get::<_, bool>(0))
}
