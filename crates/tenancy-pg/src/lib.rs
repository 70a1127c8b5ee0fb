//! Private PostgreSQL clusters, started from the server binaries installed on the machine.
//!
//! Main parts:
//! - [`PgBinaries`] finds `initdb`, `pg_ctl` and `postgres` (`PG_BIN`, then `PATH`, then the
//!   newest `/usr/lib/postgresql/*/bin`) and says exactly what to install when they are
//!   missing.
//! - [`Cluster`] runs `initdb` into a data directory and starts a server listening on a
//!   Unix socket inside that directory (and on a loopback TCP port when asked). As root it
//!   runs the server as an unprivileged user, because `initdb` and `postgres` refuse root.
//!   Several clusters can run at once (one per region). With [`ClusterOptions::tls`] it
//!   serves TLS on TCP with a CA made for it (server certificate for `localhost` and
//!   `127.0.0.1`, client certificates on demand). The server is stopped when the
//!   [`Cluster`] is dropped *or when this process dies*: a small watchdog shell holds the
//!   read end of a pipe whose write end only this process holds.
//! - [`PgBouncer`] runs Debian's `pgbouncer` (as the same unprivileged user as the
//!   server) in front of a [`Cluster`]'s socket, in transaction mode unless told
//!   otherwise, for tests and benchmarks of tenancy behind a transaction pooler.
//! - [`testing`] gives tests one cluster per test process, a migrated template database
//!   built once, and a fresh database per test cloned from it.
//!
//! - [`native_context_library`]: tenancy's native tenant context (the `tenancy_context`
//!   extension in `extensions/tenancy_context/`), its library built for each server found
//!   through `pg_config` at build time; every cluster started here can load it, and on
//!   PostgreSQL 18+ can `CREATE EXTENSION` it without anything installed into the server.
//!   Under `TENANCY_REQUIRE_NATIVE=1` ([`native_required`]) a cluster that cannot load
//!   it fails to start.
//!
//! This crate knows nothing about tenants; it only provides PostgreSQL (and the one
//! extension tenancy loads into it).

mod binaries;
mod cluster;
mod native;
mod pgbouncer;
pub mod testing;

pub use binaries::PgBinaries;
pub use cluster::{connect, Cluster, ClusterOptions, ClusterTls};
pub use native::{
    native_context_library, native_context_majors, native_required, EXTENSION_CONTROL,
    EXTENSION_SCRIPTS, EXTENSION_VERSION, NATIVE_LIBRARY_NAME,
};
pub use pgbouncer::{PgBouncer, PgBouncerOptions};

/// Why a cluster could not be found, created or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No PostgreSQL server binaries were found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found.\n\
         Looked in: {looked_in}.\n\
         Install them, e.g. `apt-get install postgresql` (Debian/Ubuntu, version 14 or newer), \
         `dnf install postgresql-server` (Fedora/RHEL) or `brew install postgresql@16` (macOS), \
         or set PG_BIN to the directory that contains initdb."
    )]
    BinariesNotFound {
        /// Where the binaries were looked for.
        looked_in: String,
    },
    /// The binaries are older than we support.
    #[error("PostgreSQL {found} found in {dir}; tenancy needs PostgreSQL 14 or newer (set PG_BIN to a newer bin directory)")]
    TooOld {
        /// The major version found.
        found: u32,
        /// The directory it was found in.
        dir: String,
    },
    /// Running as root and no unprivileged user exists to run the server as.
    #[error("running as root, but no unprivileged user to run PostgreSQL as was found (tried {tried}); create one, e.g. `useradd --system postgres`, or set TENANCY_PG_USER")]
    NoUnprivilegedUser {
        /// The users tried.
        tried: String,
    },
    /// A helper command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// What failed, in words.
        detail: String,
    },
    /// Filesystem trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not accept connections in time.
    #[error("PostgreSQL did not accept connections within {secs}s; last lines of its log ({log}):\n{tail}")]
    StartTimeout {
        /// How long it waited, in seconds.
        secs: u64,
        /// The server log's path.
        log: String,
        /// The last lines of the server log.
        tail: String,
    },
    /// `TENANCY_REQUIRE_NATIVE=1` and the server cannot have the native tenant context.
    #[error("TENANCY_REQUIRE_NATIVE=1, but PostgreSQL {major} cannot load tenancy's native tenant context: {detail}")]
    NativeMissing {
        /// The server's major version.
        major: u32,
        /// What failed, in words.
        detail: String,
    },
    /// A SQL step of the harness failed.
    #[error("{what}: {source}")]
    Sql {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
