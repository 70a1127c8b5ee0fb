//! `tenancy migrate`: the application's migrations applied to every target — the pooled
//! tables of each cluster (once), every schema tenant and every dedicated database — in
//! one format (`NNNN_name.sql` files), in parallel, resumably, with a ledger in the
//! catalog.
//!
//! Main parts:
//! - [`files`]: reads and validates a migrations directory (names, versions, checksums).
//! - [`Migrator::plan`]: refuses a changed or missing migration that was already applied
//!   (checksums in the catalog), then asks the catalog, in one query, which targets are
//!   behind. A run with nothing to do ends here without connecting to any target.
//! - [`Migrator::execute`]: waves (a canary set first, then the rest), bounded
//!   concurrency per cluster, several targets pipelined per round trip on connections
//!   that are reused and recycled after a number of targets, session `lock_timeout` and
//!   `statement_timeout`, a stop after too many failures. Each target migrates in one
//!   transaction that takes the per-schema advisory lock provisioning also takes, checks
//!   the schema's version marker, applies the migrations and moves the marker; the
//!   ledger row is written after the commit.
//! - [`drift`]: a fingerprint of each target's schema (tables, columns, indexes,
//!   constraints, policies, RLS flags) compared with a reference schema migrated to the
//!   same version in a rolled-back transaction.
//!
//! The version marker on the schema (a comment, committed with the DDL) is the truth; the
//! ledger may lag behind it after a crash, never run ahead of it, and the next run
//! reconciles it. What it does not do: it never reads or writes tenant rows, never
//! downgrades (there are no down migrations: fix forward with a new migration), and never
//! creates tenant storage (provisioning does).

pub mod drift;
mod engine;
pub mod files;
mod report;
mod sql;

use std::time::Duration;

pub use engine::{
    Event, Migrator, Options, Outcome, Plan, StopReason, Summary, TargetReport, Wave,
};
pub use files::MigrationSet;

/// Errors of `tenancy migrate`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The migrations directory or a file in it is not usable.
    #[error("{0}")]
    Files(String),
    /// An applied migration's file was changed.
    #[error("migration {version} ({file}) was changed after it was applied: the catalog recorded checksum {expected}, the file now has {found}. Applied migrations must not change; restore the file as it was and put the change in a new migration (version {next} or later)")]
    ChecksumMismatch {
        /// Version.
        version: i32,
        /// File (path as given).
        file: String,
        /// Recorded checksum.
        expected: String,
        /// The file's checksum now.
        found: String,
        /// The first free version.
        next: i32,
    },
    /// An applied migration's file is missing.
    #[error("migration {version} ({name}) was applied but there is no file for it in {dir}; restore {name}.sql (applied migrations cannot be removed)")]
    MissingFile {
        /// Version.
        version: i32,
        /// Its recorded name.
        name: String,
        /// The directory.
        dir: String,
    },
    /// Invalid options.
    #[error("{0}")]
    Options(String),
    /// A catalog call failed.
    #[error(transparent)]
    Catalog(#[from] tenancy_catalog::CatalogError),
    /// A database call outside a target's migration failed, or a connection could not be
    /// opened.
    #[error(transparent)]
    Db(#[from] tenancy_conn::DbError),
    /// A cluster in the plan is not in the catalog any more.
    #[error("cluster {0} is not in the catalog")]
    UnknownCluster(uuid::Uuid),
}

impl Error {
    pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let query = tenancy_conn::DbError::query(what);
        move |source| Error::Db(query(source))
    }
}

/// Formats a duration as seconds with milliseconds, for people.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}
