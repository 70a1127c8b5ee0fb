//! The tenancy catalog: the control database that knows every region, cluster and tenant.
//!
//! Main parts:
//! - [`migrate`]: applies the versioned SQL migrations in `migrations/` (embedded at build
//!   time) in order, each in its own transaction, recording version and checksum in
//!   `tenancy_catalog.schema_migrations`; an applied migration whose text changed is refused.
//! - The store functions ([`add_region`], [`add_cluster`], [`create_tenant`],
//!   [`set_state`], [`get_tenant`], …): all catalog SQL lives here. They take parsed
//!   types from `tenancy-core` and return records built from them.
//! - Runtime lookups ([`tenant_route`], [`tenant_route_by_slug`], [`cluster_route`]): the
//!   runtime role reads no catalog table, it looks up one tenant by a key it holds
//!   through `SECURITY DEFINER` functions that return only what resolving and routing
//!   need ([`TenantRoute`], [`ClusterRoute`]).
//! - Request-path lookups: the tenant of a verified custom domain ([`tenant_for_domain`],
//!   read from the configuration service's `config_domains`, which owns the domain
//!   lifecycle) and tenant API keys ([`create_api_key`], [`authenticate_api_key`], …),
//!   with change notifications on the [`CHANGES_CHANNEL`] channel for caches.
//!
//! - The app-migration ledger ([`targets_below`], [`write_ledger`], …): which app
//!   migrations were applied and the version of every target, for `tenancy migrate`.
//!
//! What it does not do: it never touches tenant data, and it does not create schemas or
//! databases for tenants (provisioning does that, using this store for its state).

mod app_migrations;
mod domains;
mod lookups;
mod migrate;
mod requests;
mod store;
mod tenant_lifecycle;
mod webhooks;
mod workflows;

pub use app_migrations::*;
pub use domains::*;
pub use lookups::*;
pub use migrate::{migrate, migrate_for_tests, Migration, MIGRATIONS};
pub use requests::*;
pub use store::*;
pub use tenant_lifecycle::*;
pub use webhooks::*;
pub use workflows::*;

/// Errors from the catalog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A database call failed.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// An applied migration's text no longer matches what was applied.
    #[error("catalog migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {current} now); restore the original file and add a new migration instead")]
    ChecksumMismatch {
        /// The migration's version.
        version: i32,
        /// The migration's name.
        name: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the file now.
        current: String,
    },
    /// The slug is already used by another tenant.
    #[error("slug {0:?} is already taken; choose another")]
    SlugTaken(String),
    /// The region is not registered.
    #[error("region {0:?} is not registered; register it first (POST /v1/regions, or `regions` in the configuration of `tenancy serve`) or pick one of the registered regions")]
    UnknownRegion(String),
    /// No cluster in the region accepts tenants.
    #[error("no cluster in region {0:?} accepts new tenants; register a cluster there or raise a cluster's capacity")]
    NoCapacity(String),
    /// The tenant does not exist.
    #[error("tenant {0} does not exist")]
    TenantNotFound(String),
    /// The cluster does not exist.
    #[error("cluster {0} does not exist")]
    ClusterNotFound(String),
    /// A state change that the lifecycle does not allow.
    #[error("tenant {tenant} cannot go from {from} to {to}")]
    InvalidTransition {
        /// The tenant.
        tenant: String,
        /// The state it is in.
        from: String,
        /// The state asked for.
        to: String,
    },
    /// A stored value failed to parse (the catalog was edited by hand).
    #[error("catalog holds an invalid value: {0}")]
    Corrupt(String),
    /// Input rejected before touching the database.
    #[error("{0}")]
    Invalid(String),
}

impl CatalogError {
    pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
        move |source| CatalogError::Db { what, source }
    }
}
