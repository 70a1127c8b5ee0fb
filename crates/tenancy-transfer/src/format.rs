//! The archive format, its writer and its verifying reader.
//!
//! An archive is one file: the 8 bytes `TENANCYX`, the format version (u16, big-endian),
//! then frames. A frame is a tag byte, a payload length (u32, big-endian) and the payload:
//!
//! | tag | payload |
//! |-----|---------|
//! | `H` | the header (JSON, [`Header`]): format version, source tenant, app version and its migrations, every table with its columns and types, the row format |
//! | `T` | a table begins (JSON `{"table": name}`), in header order |
//! | `R` | rows of the current table: one JSON object a line, each line ended by `\n` |
//! | `E` | the table ends (JSON, [`TableSummary`]): its row count and checksum |
//! | `S` | the summary (JSON, [`Summary`]): every table's count and checksum, and the SHA-256 of every byte of the file before this frame |
//!
//! and nothing after `S`. Counts and checksums come last because the archive is written
//! as the rows stream out of the database; the header says what is inside, the summary
//! proves it. A row is the text of `to_jsonb(row) - 'tenant_id'` with the session's time
//! zone, date and interval styles fixed (see [`SESSION_SETTINGS`]); it never names a
//! tenant, so an archive cannot carry rows into anyone but the tenant it is imported into.
//!
//! A table's checksum is order-independent: the sum, modulo 2^128, of the first 16 bytes
//! (big-endian) of the SHA-256 of each row's text. A changed, missing or added row changes
//! it (a sum, not an exclusive or, so two equal rows do not cancel out).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// The first bytes of every archive.
pub const MAGIC: &[u8; 8] = b"TENANCYX";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// What a row of the archive is (the header's `row_format`).
pub const ROW_FORMAT: &str = "jsonb-text-lines: (to_jsonb(row) - 'tenant_id')::text, one a line";
/// Session settings in force when rows are turned into text (export) and back into text
/// for verification (import), so that the same row has the same text on both sides.
pub const SESSION_SETTINGS: &str = "SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, YMD'; \
     SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1";
/// The largest frame a reader accepts (a row batch is at most [`ROWS_FRAME_TARGET`] unless
/// one row alone is bigger): an archive cannot make the reader allocate more than this.
pub const MAX_FRAME: u32 = 256 << 20;
/// The writer closes a rows frame once it holds this many bytes.
pub const ROWS_FRAME_TARGET: usize = 256 << 10;

/// The archive's header: everything about its content except the counts and checksums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The format version (also in the file's first bytes).
    pub format_version: u16,
    /// The tenant the rows were exported from.
    pub source: Source,
    /// When the export began (RFC 3339, UTC).
    pub exported_at: String,
    /// The app's migration version of the source storage and the migrations up to it.
    pub app: AppVersion,
    /// What each row line is ([`ROW_FORMAT`]).
    pub row_format: String,
    /// The tables, in the order their rows follow (referenced tables first).
    pub tables: Vec<TableDef>,
}

/// The exported tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Tenant id.
    pub tenant: String,
    /// Its slug.
    pub slug: String,
    /// Its placement (`pooled`, `schema`, `dedicated`).
    pub placement: String,
    /// Its region.
    pub region: String,
}

/// The app's migration version of the storage the rows came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersion {
    /// The version of the last app migration applied to the source storage.
    pub version: i32,
    /// Every app migration up to `version`, as the catalog's ledger records them: an
    /// importing deployment must have applied the same ones (same checksums).
    pub migrations: Vec<MigrationRef>,
}

/// One app migration, as the catalog's ledger records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRef {
    /// Version.
    pub version: i32,
    /// File name without extension.
    pub name: String,
    /// SHA-256 (hex) of its text.
    pub checksum: String,
}

/// A tenant table and its columns (`tenant_id` left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Table name (unqualified: the placement decides the schema).
    pub name: String,
    /// Columns in table order.
    pub columns: Vec<ColumnDef>,
}

/// A column and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Its type as `format_type` prints it (`numeric(12,2)`, `timestamp with time zone`).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// One table's row count and checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSummary {
    /// Table name.
    pub table: String,
    /// Rows.
    pub rows: u64,
    /// The order-independent checksum of its rows (32 hex digits).
    pub checksum: String,
}

/// The archive's last frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Every table's count and checksum, in header order.
    pub tables: Vec<TableSummary>,
    /// SHA-256 (hex) of every byte of the file before the summary frame.
    pub digest: String,
}

/// The order-independent checksum of a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowChecksum {
    /// Rows added.
    pub rows: u64,
    sum: u128,
}

impl RowChecksum {
    /// Adds one row's text.
    pub fn add(&mut self, row: &[u8]) {
        let h = Sha256::digest(row);
        let mut first = [0u8; 16];
        first.copy_from_slice(&h[..16]);
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(first));
        self.rows += 1;
    }

    /// The checksum as 32 hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.sum.to_be_bytes())
    }

    /// This checksum as a table's summary.
    pub fn summary(&self, table: &str) -> TableSummary {
        TableSummary {
            table: table.to_owned(),
            rows: self.rows,
            checksum: self.hex(),
        }
    }
}

/// The size and digests of a finished archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Bytes written, the summary frame included.
    pub bytes: u64,
    /// The digest the summary carries: SHA-256 (hex) of every byte before the summary
    /// frame.
    pub digest: String,
    /// SHA-256 (hex) of the whole file, the summary frame included (what `sha256sum`
    /// prints for it).
    pub sha256: String,
}

/// Writes an archive: frames, with a running digest of every byte written.
#[derive(Debug)]
pub struct ArchiveWriter<W> {
    out: W,
    digest: Sha256,
    written: u64,
}

impl<W: AsyncWrite + Unpin> ArchiveWriter<W> {
    /// Writes the magic bytes, the format version and the header.
    pub async fn start(out: W, header: &Header) -> Result<Self, Error> {
        let mut w = ArchiveWriter {
            out,
            digest: Sha256::new(),
            written: 0,
        };
        let mut lead = MAGIC.to_vec();
        lead.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        w.raw(&lead).await?;
        w.json(b'H', header).await?;
        Ok(w)
    }

    async fn raw(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.digest.update(bytes);
        self.written += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| Error::io("writing the archive", e))
    }

    /// Writes one frame.
    pub async fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<(), Error> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| {
                Error::Refused(format!(
                    "a row of {} bytes is larger than an archive frame may be ({MAX_FRAME} bytes)",
                    payload.len()
                ))
            })?;
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&len.to_be_bytes());
        self.raw(&head).await?;
        self.raw(payload).await
    }

    /// Writes a frame holding `value` as JSON.
    pub async fn json<T: Serialize>(&mut self, tag: u8, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Refused(format!("encoding an archive frame: {e}")))?;
        self.frame(tag, &bytes).await
    }

    /// Writes the summary (with the digest of everything before it), flushes and returns
    /// the writer and the number of bytes written.
    pub async fn finish(self, tables: Vec<TableSummary>) -> Result<(W, u64), Error> {
        let (out, written) = self.finish_written(tables).await?;
        Ok((out, written.bytes))
    }

    /// [`finish`](ArchiveWriter::finish), returning the size and both digests of what
    /// was written.
    pub async fn finish_written(
        mut self,
        tables: Vec<TableSummary>,
    ) -> Result<(W, Written), Error> {
        let digest = hex::encode(self.digest.clone().finalize());
        self.json(
            b'S',
            &Summary {
                tables,
                digest: digest.clone(),
            },
        )
        .await?;
        self.out
            .flush()
            .await
            .map_err(|e| Error::io("writing the archive", e))?;
        let sha256 = hex::encode(self.digest.finalize());
        Ok((
            self.out,
            Written {
                bytes: self.written,
                digest,
                sha256,
            },
        ))
    }
}

/// What the reader hands out, in file order, each only after it was checked as far as it
/// can be at that point.
#[derive(Debug)]
pub enum Item {
    /// The rows of a table begin (a table of the header, in header order).
    Table(String),
    /// Some rows of the current table: complete lines, each ended by `\n`, valid UTF-8.
    Rows(String),
    /// The current table ended; its rows matched the count and checksum it declares.
    TableDone(TableSummary),
    /// The end: the summary matched every table and the digest of the whole file, and
    /// nothing follows it.
    End(Summary),
}

/// Reads an archive and verifies it while it streams: framing, the order of frames, each
/// table's count and checksum against the rows actually read, the summary against the
/// tables and the digest of the file. Anything wrong is [`Error::Corrupt`] naming what.
#[derive(Debug)]
pub struct ArchiveReader<R> {
    input: R,
    digest: Sha256,
    read: u64,
    tables: Vec<String>,
    /// Index in `tables` of the next table to begin.
    next_table: usize,
    /// The table whose rows are being read, and their checksum so far.
    current: Option<(String, RowChecksum)>,
    done: Vec<TableSummary>,
    finished: bool,
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

impl<R: AsyncRead + Unpin> ArchiveReader<R> {
    /// Reads the lead bytes and the header.
    pub async fn open(input: R) -> Result<(Self, Header), Error> {
        let mut r = ArchiveReader {
            input,
            digest: Sha256::new(),
            read: 0,
            tables: Vec::new(),
            next_table: 0,
            current: None,
            done: Vec::new(),
            finished: false,
        };
        let mut lead = [0u8; 10];
        r.exact(&mut lead, "the first 10 bytes").await?;
        r.digest.update(lead);
        if &lead[..8] != MAGIC {
            return Err(corrupt(
                "this is not a tenancy export (it does not begin with TENANCYX)",
            ));
        }
        let version = u16::from_be_bytes([lead[8], lead[9]]);
        if version != FORMAT_VERSION {
            return Err(Error::Incompatible(format!(
                "archive format version {version}; this tenancy reads version {FORMAT_VERSION}: import it with the tenancy release that wrote it, or export it again with this one"
            )));
        }
        let (tag, payload) = r.frame().await?.ok_or_else(|| corrupt("no header"))?;
        if tag != b'H' {
            return Err(corrupt(format!(
                "the first frame is {:?}, not the header",
                tag as char
            )));
        }
        let header: Header = serde_json::from_slice(&payload)
            .map_err(|e| corrupt(format!("the header is not valid: {e}")))?;
        if header.format_version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "the header says format version {} but the file says {version}",
                header.format_version
            )));
        }
        for t in &header.tables {
            if header.tables.iter().filter(|o| o.name == t.name).count() > 1 {
                return Err(corrupt(format!("table {:?} is listed twice", t.name)));
            }
            if t.columns.iter().any(|c| c.name == "tenant_id") {
                return Err(corrupt(format!(
                    "table {:?} lists a tenant_id column: an archive never carries tenant ids",
                    t.name
                )));
            }
        }
        r.tables = header.tables.iter().map(|t| t.name.clone()).collect();
        Ok((r, header))
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    async fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        match self.input.read_exact(buf).await {
            Ok(_) => {
                self.read += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(corrupt(format!(
                "the file ends after {} bytes, in {what}: it is truncated",
                self.read
            ))),
            Err(e) => Err(Error::io("reading the archive", e)),
        }
    }

    /// The next frame, or `None` at a clean end of file. Frames before the summary are
    /// added to the digest; the caller adds nothing.
    async fn frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, Error> {
        let mut head = [0u8; 5];
        // A clean end of file is only possible at a frame boundary.
        let n = self
            .input
            .read(&mut head[..1])
            .await
            .map_err(|e| Error::io("reading the archive", e))?;
        if n == 0 {
            return Ok(None);
        }
        self.read += 1;
        self.exact(&mut head[1..], "a frame header").await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_FRAME {
            return Err(corrupt(format!(
                "a frame of {len} bytes at offset {} (at most {MAX_FRAME})",
                self.read - 5
            )));
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload, "a frame").await?;
        if head[0] != b'S' {
            self.digest.update(head);
            self.digest.update(&payload);
        }
        Ok(Some((head[0], payload)))
    }

    /// The next item; after [`Item::End`], an error.
    pub async fn next(&mut self) -> Result<Item, Error> {
        if self.finished {
            return Err(corrupt("read past the end"));
        }
        let (tag, payload) = self.frame().await?.ok_or_else(|| {
            corrupt(format!(
                "the file ends after {} bytes without its summary: it is truncated",
                self.read
            ))
        })?;
        match tag {
            b'T' => {
                if let Some((t, _)) = &self.current {
                    return Err(corrupt(format!("table {t:?} does not end")));
                }
                #[derive(Deserialize)]
                struct Begin {
                    table: String,
                }
                let b: Begin = serde_json::from_slice(&payload)
                    .map_err(|e| corrupt(format!("a table frame is not valid: {e}")))?;
                let expected = self.tables.get(self.next_table).ok_or_else(|| {
                    corrupt(format!(
                        "table {:?} begins after every table of the header",
                        b.table
                    ))
                })?;
                if &b.table != expected {
                    return Err(corrupt(format!(
                        "table {:?} begins where the header has {expected:?}",
                        b.table
                    )));
                }
                self.next_table += 1;
                self.current = Some((b.table.clone(), RowChecksum::default()));
                Ok(Item::Table(b.table))
            }
            b'R' => {
                let Some((table, sum)) = &mut self.current else {
                    return Err(corrupt("rows outside a table"));
                };
                let text = String::from_utf8(payload)
                    .map_err(|_| corrupt(format!("rows of table {table:?} are not UTF-8")))?;
                if !text.ends_with('\n') {
                    return Err(corrupt(format!(
                        "rows of table {table:?} do not end with a line end"
                    )));
                }
                for line in text[..text.len() - 1].split('\n') {
                    sum.add(line.as_bytes());
                }
                Ok(Item::Rows(text))
            }
            b'E' => {
                let Some((table, sum)) = self.current.take() else {
                    return Err(corrupt("a table end outside a table"));
                };
                let declared: TableSummary = serde_json::from_slice(&payload).map_err(|e| {
                    corrupt(format!("the end of table {table:?} is not valid: {e}"))
                })?;
                let actual = sum.summary(&table);
                if declared != actual {
                    return Err(corrupt(format!(
                        "table {table:?}: the archive declares {} rows with checksum {} but holds {} rows with checksum {} (a row was changed, added or removed)",
                        declared.rows, declared.checksum, actual.rows, actual.checksum
                    )));
                }
                self.done.push(actual.clone());
                Ok(Item::TableDone(actual))
            }
            b'S' => {
                if let Some((t, _)) = &self.current {
                    return Err(corrupt(format!("table {t:?} does not end")));
                }
                if self.next_table != self.tables.len() {
                    return Err(corrupt(format!(
                        "the summary comes before table {:?}",
                        self.tables[self.next_table]
                    )));
                }
                let s: Summary = serde_json::from_slice(&payload)
                    .map_err(|e| corrupt(format!("the summary is not valid: {e}")))?;
                if s.tables != self.done {
                    return Err(corrupt(
                        "the summary's counts and checksums differ from the tables' own",
                    ));
                }
                let digest = hex::encode(self.digest.clone().finalize());
                if s.digest != digest {
                    return Err(corrupt(format!(
                        "the file's digest is {digest} but its summary says {} (a byte before the summary was changed)",
                        s.digest
                    )));
                }
                let mut more = [0u8; 1];
                let n = self
                    .input
                    .read(&mut more)
                    .await
                    .map_err(|e| Error::io("reading the archive", e))?;
                if n != 0 {
                    return Err(corrupt("bytes follow the summary"));
                }
                self.finished = true;
                Ok(Item::End(s))
            }
            other => Err(corrupt(format!(
                "unknown frame {:?} at offset {}",
                other as char,
                self.read - 5 - payload.len() as u64
            ))),
        }
    }
}

/// Undoes the escapes of PostgreSQL's COPY text format in one field (`\\`, `\n`, `\t`,
/// `\r`, `\b`, `\f`, `\v`, octal `\NNN`, hex `\xHH`).
pub fn copy_unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            out.push(b);
            i += 1;
            continue;
        }
        let c = field[i + 1];
        i += 2;
        match c {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut k = 0;
                while k < 2 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    v = v * 8 + u32::from(field[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' if i < field.len() && field[i].is_ascii_hexdigit() => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    v = v * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_ignores_order_and_counts_duplicates() {
        let mut a = RowChecksum::default();
        let mut b = RowChecksum::default();
        for r in ["x", "y", "z"] {
            a.add(r.as_bytes());
        }
        for r in ["z", "x", "y"] {
            b.add(r.as_bytes());
        }
        assert_eq!(a, b);
        let mut c = RowChecksum::default();
        for r in ["x", "x", "y", "y", "z"] {
            c.add(r.as_bytes());
        }
        let mut d = RowChecksum::default();
        d.add(b"z");
        assert_ne!(c.hex(), d.hex(), "equal rows do not cancel out");
    }

    #[test]
    fn copy_text_escapes_are_undone() {
        assert_eq!(
            copy_unescape(br#"{"a": "b\\\\c\\"d"}"#),
            br#"{"a": "b\\c\"d"}"#.to_vec()
        );
        assert_eq!(copy_unescape(br"a\tb\nc\101\x41"), b"a\tb\ncAA".to_vec());
    }
}
