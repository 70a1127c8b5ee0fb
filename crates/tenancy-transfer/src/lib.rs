//! Export and import of one tenant's rows.
//!
//! - [`format`]: the archive (one file of frames: a header describing the app version and
//!   every table with its columns, the rows as JSON lines, per-table counts and
//!   order-independent checksums, a summary with the digest of the whole file), its
//!   writer and its reader, which verifies everything while it streams.
//! - [`export()`]: every tenant table's rows, read inside the tenant's own `TenantTx` (runtime
//!   role, row-level security on: the database, not a filter of ours, decides which rows
//!   are the tenant's), streamed out of `COPY … TO STDOUT` into the archive.
//! - [`import()`]: an archive into an existing, active and empty tenant of any placement,
//!   in one `TenantTx`: rows inserted in batches under the tenant's context (the archive
//!   carries no tenant id; `tenant_id` takes the context's default and the policies'
//!   `WITH CHECK` refuses anything else), each table read back and checksummed against
//!   the archive, identity sequences raised past the imported keys, then one commit.
//!   Anything wrong rolls back everything: no partial import.
//! - [`verify_archive`]: the reader's checks alone, before anything is created.
//! - [`legacy`]: a database of the app's single-tenant era (the same tables without
//!   `tenant_id`) checked against the app's tenant tables and imported as one tenant,
//!   streamed out of the source with `COPY` into the tenant's `TenantTx`, verified by
//!   count and checksum per table, idempotent per source through a catalog record.
//!
//! Memory is bounded by one archive frame (row batches of about 256 KiB), whatever the
//! tenant's size. It never creates or deletes tenants (the CLI does, through the
//! catalog) and never reads or writes tenant rows outside the tenant's `TenantTx`; its
//! only owner connection raises identity sequences.

pub mod format;
pub mod legacy;

mod export;
mod import;
mod tables;

use std::fmt;

pub use export::{export, export_planned, ExportPlan, ExportSummary};
pub use format::{Header, Summary, TableSummary, Written};
pub use import::{import, owner_connection, verify_archive, ImportSummary, Verified};
pub use tables::{foreign_key_order, referenced_first, FOREIGN_KEYS_SQL};

/// What went wrong; each message names what and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The archive is damaged (truncated, changed, or not an archive).
    #[error("the archive is corrupt: {0}")]
    Corrupt(String),
    /// The archive cannot go into this deployment as it is (another app, a newer version,
    /// a table or column the target lacks).
    #[error("the archive cannot be imported here: {0}")]
    Incompatible(String),
    /// The request is refused (a target tenant that holds rows, a row too large).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a file.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// A statement failed.
    #[error("{context}: {}", tenancy_conn::error_text(source))]
    Db {
        /// What was being done.
        context: String,
        /// The error.
        source: tokio_postgres::Error,
    },
    /// The tenant's transaction could not be opened or used.
    #[error("the tenant's transaction: {0}")]
    Tenant(#[from] tenancy_sdk::Error),
    /// The catalog.
    #[error("the catalog: {0}")]
    Catalog(#[from] tenancy_catalog::CatalogError),
    /// Connecting as the owner to the tenant's database (to raise identity sequences).
    #[error("connecting to the tenant's database as its owner: {0}")]
    Connect(#[from] tenancy_conn::ConnError),
}

impl Error {
    pub(crate) fn io(context: &'static str, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }

    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| Error::Db { context, source }
    }
}

/// Progress of an export or import, for a progress bar. Every method has a default that
/// does nothing.
pub trait Progress: Send + Sync {
    /// A table's rows begin.
    fn table(&self, _name: &str) {}
    /// `n` more rows were written (export) or loaded (import).
    fn rows(&self, _n: u64) {}
    /// The archive has been read or written up to `offset` bytes.
    fn bytes(&self, _offset: u64) {}
    /// Loading is over; the rows are being verified and committed.
    fn verifying(&self) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Counts and checksums of the tables of one transfer, for people.
pub(crate) struct Tables<'a>(pub &'a [TableSummary]);

impl fmt::Display for Tables<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in self.0 {
            writeln!(f, "  {:<32} {:>12} rows  {}", t.table, t.rows, t.checksum)?;
        }
        Ok(())
    }
}
