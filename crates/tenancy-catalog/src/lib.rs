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
//!   migrations were applied and the version of every target, for `tenancy migrate`;
//!   the migrations themselves as files ([`AppMigrations`]), checked against it.
//! - [`naming`]: the schema or database of a tenant's storage, derived from its id, and
//!   the version marker of a migrated schema.
//!
//! What it does not do: it never touches tenant data, and it does not create schemas or
//! databases for tenants (provisioning does that, using this store for its state).

mod app_migration_files;
mod app_migrations;
mod domains;
mod lookups;
mod migrate;
mod moves;
pub mod naming;
mod requests;
mod store;
mod tenant_lifecycle;
mod webhooks;
mod workflows;

pub use app_migration_files::{AppMigration, AppMigrations, AppMigrationsError};
pub use app_migrations::{
    all_targets, app_migration_sources_after, pooled_migration_status,
    record_app_migration_sources, record_provisioned, recorded_app_migrations, targets_below,
    tenant_migration_status, write_ledger, AppMigrationSource, LedgerOutcome, LedgerUpdate,
    MigrationStatus, MigrationTarget, RecordedAppMigration,
};
pub use domains::{
    api_key_cursor, authenticate_api_key, create_api_key, list_api_keys, list_api_keys_page,
    normalize_domain, parse_api_key_cursor, revoke_api_key, revoke_api_key_returning,
    tenant_for_domain, ApiKeyGrant, ApiKeyRecord, CHANGES_CHANNEL,
};
pub use lookups::{cluster_route, tenant_route, tenant_route_by_slug, ClusterRoute, TenantRoute};
pub use migrate::{
    migrate, migrate_for_tests, Migration, AUDIT_EVENT_COLUMNS, AUDIT_EVENT_COLUMNS_MARKER,
    AUDIT_MIGRATION_SQL, MIGRATIONS,
};
pub use moves::{
    announce_move_target, finish_move, get_move, moves_to_drop, record_move, residency,
    set_cutover, set_move_snapshot, set_residency, switch_placement, tenant_moves, Move, MoveEnd,
    MoveRecord, MoveStatus,
};
pub use requests::{
    count_tenants_by_state, idempotency_abandon, idempotency_begin, idempotency_complete,
    link_billing_event, record_billing_event, IdempotencyBegin,
};
pub use store::{
    add_cluster, add_region, create_tenant, create_tenant_in, get_cluster, get_tenant,
    get_tenant_by_slug, list_clusters, list_regions, list_tenants, set_cluster_pooler, set_state,
    set_state_in, slug_taken, tenant_events, tenant_from_row, transition_allowed, ClusterLocation,
    ClusterRecord, NewCluster, NewTenant, Region, Tenant, TenantEvent, TENANT_COLUMNS,
};
pub use tenant_lifecycle::{
    lock_tenant, plan_settings, provisioning_failed, purge_due, seed_plan_settings, set_billing,
    set_failure, set_legal_hold, set_legal_hold_in, set_plan_in, set_purge_after, set_storage,
    tenant_by_billing_customer, tenant_by_pending_billing_customer,
};
pub use webhooks::{
    claim_outbox, deliveries, enqueue_outbox, finish_outbox, record_delivery, record_registration,
    registrations, registrations_in, remove_registration, Delivery, OutboxMessage,
};
pub use workflows::{
    advance_workflow, claim_workflow, enqueue_workflow, get_workflow, record_step, retry_workflow,
    start_provisioning, tenant_workflows, unfinished_workflows, workflow_steps, StepRecord,
    Workflow, WorkflowKind, WorkflowStatus,
};

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

/// A value the catalog returned that does not parse as its type (a row written outside
/// this crate, or by a newer version of it).
pub(crate) fn corrupt<E: std::fmt::Display>(e: E) -> CatalogError {
    CatalogError::Corrupt(e.to_string())
}

impl CatalogError {
    pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
        move |source| CatalogError::Db { what, source }
    }
}
