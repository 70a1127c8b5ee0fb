use tenancy_catalog::CatalogError;

/// Errors from the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A database call failed.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database refused the tenant context (bad signature, expired, wrong connection).
    #[error("the database refused the tenant context: {0}")]
    ContextRefused(#[source] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("no database connection available: {0}")]
    Pool(String),
    /// A catalog lookup failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The tenant exists but is not active.
    #[error("tenant {tenant} is {state}; its data can only be opened while it is active")]
    NotActive {
        /// The tenant.
        tenant: String,
        /// The state it is in.
        state: String,
    },
    /// The tenant's cluster is in a region this router may not open.
    #[error("tenant {tenant} is pinned to region {tenant_region}; refusing to open it on cluster {cluster} in region {cluster_region}")]
    RegionMismatch {
        /// The tenant.
        tenant: String,
        /// The tenant's region.
        tenant_region: String,
        /// The cluster.
        cluster: String,
        /// The cluster's region.
        cluster_region: String,
    },
    /// A move's cutover held the tenant for longer than the router waits
    /// ([`RouterOptions::cutover_wait`](crate::RouterOptions::cutover_wait)); nothing was
    /// opened. Retry: the tenant is served again (from its old or its new placement)
    /// once the cutover ends.
    #[error("tenant {tenant} is being moved and its cutover did not end within {waited:?}; retry")]
    Cutover {
        /// The tenant.
        tenant: String,
        /// How long the router waited.
        waited: std::time::Duration,
    },
    /// A statement failed earlier in this transaction, so it can only be rolled back.
    #[error("the transaction was aborted by an earlier error and has been rolled back")]
    Aborted,
    /// The transaction held its connection longer than the pool's transaction deadline
    /// ([`PoolOptions::transaction_deadline`](crate::PoolOptions::transaction_deadline)):
    /// its statement was cancelled, its backend terminated and its connection closed, so
    /// nothing of it was committed and the locks it held are released.
    #[error(
        "the transaction outlived its {0:?} deadline and was ended (nothing of it was committed)"
    )]
    TransactionDeadline(std::time::Duration),
    /// `TENANCY_REQUIRE_NATIVE=1`, and the database could not get the native tenant
    /// context (the `tenancy_context` extension or its library).
    #[error("TENANCY_REQUIRE_NATIVE=1, but the native tenant context could not be installed: {0}")]
    NativeContextRequired(String),
    /// Invalid input to the SDK.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Db { what, source }
    }

    /// The SQLSTATE of the underlying database error, if any.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Db { source, .. } | Error::ContextRefused(source) => source.code(),
            _ => None,
        }
    }
}
