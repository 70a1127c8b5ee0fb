//! The tenancy provisioning engine: takes a tenant from signup (or a billing event, or
//! the CLI) to active, and through its lifecycle, with durable, resumable workflows.
//!
//! Main parts:
//! - [`Provisioner`]: queues workflows (in the same catalog transaction as the change that
//!   asks for them), runs their steps on workers that claim them with
//!   `FOR UPDATE SKIP LOCKED`, retries failed steps with exponential backoff, and
//!   compensates a provision that fails for good (drops the schema or database,
//!   deregisters, marks the tenant deleted). A worker that dies mid-step leaves the row
//!   lock to PostgreSQL, which releases it with the connection; the next worker re-runs
//!   the step, and every step is idempotent.
//! - [`storage`]: the placements: pooled (rows in the region's shared database), schema
//!   (its own schema there, every table a tenant table), dedicated (its own database,
//!   bootstrapped like any tenancy database), and the app's migrations at the latest
//!   version, each applied atomically with a version marker.
//! - [`webhook`]: Standard Webhooks signing, verification and delivery; the outbox loop
//!   delivers lifecycle events with retries and logs every attempt.
//! - Moves: a tenant's rows moved online to another placement, cluster or region (a
//!   `move` workflow: residency check, target storage, change capture, snapshot copy,
//!   catch-up, a verified cutover, the old copy dropped later); see the engine's
//!   `moves` module for the capture and the fence.
//! - [`config`]: plans, receivers, retry settings, and the app's migrations (defined in
//!   `tenancy-catalog`, beside their ledger).
//!
//! What it does not do: it never reads or writes tenant rows except to purge a deleted
//! pooled tenant, and then only through a `TenantTx` of that tenant (RLS still applies);
//! it knows nothing about HTTP servers (the control plane owns the API).

pub mod config;
mod conn;
mod engine;
pub mod storage;
pub mod webhook;

pub use config::{AppMigration, AppMigrations, MoveSettings, ProvisionConfig, Receiver, WarmPool};
pub use conn::{
    config_for, pg_pool, ClusterAccess, Login, Manager as PgManager, Object as PgConn,
    Pool as PgPool,
};
#[cfg(feature = "fault-injection")]
pub use engine::{Fault, FaultPhase, Faults};
pub use engine::{Finished, MoveRequest, MoveRequestError, ProvisionRequest, Provisioner, Workers};

/// Errors of the provisioning engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A catalog call failed (or refused the change).
    #[error(transparent)]
    Catalog(#[from] tenancy_catalog::CatalogError),
    /// An SDK call failed (bootstrap, tenant transaction).
    #[error(transparent)]
    Sdk(#[from] tenancy_sdk::Error),
    /// A database call on a tenant cluster or the catalog failed, or no connection could
    /// be opened.
    #[error(transparent)]
    Db(#[from] tenancy_conn::DbError),
    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
    /// A registration receiver refused or could not be reached.
    #[error("registration with {receiver} failed: {detail}")]
    Registration {
        /// The receiver's name.
        receiver: String,
        /// What failed, in words.
        detail: String,
    },
    /// The worker was "killed" on purpose at a step (fault injection in tests): its
    /// catalog transaction is abandoned and the worker stops.
    #[error("injected crash at step {0}")]
    InjectedCrash(String),
    /// A step failed on purpose (fault injection in tests); it is retried like any failure.
    #[error("injected failure at step {0}")]
    InjectedFailure(String),
    /// The requested change is not possible in the tenant's state.
    #[error("{0}")]
    NotPossible(String),
}

impl From<tenancy_catalog::AppMigrationsError> for Error {
    fn from(e: tenancy_catalog::AppMigrationsError) -> Self {
        Error::Config(e.0)
    }
}

impl Error {
    pub(crate) fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let query = tenancy_conn::DbError::query(what);
        move |source| Error::Db(query(source))
    }
}
