//! The tenancy SDK: the only way an application reaches tenant data.
//!
//! Main parts:
//! - [`bootstrap`]: creates the owner and runtime roles, prepares a database, installs
//!   the runtime schema (signed tenant context, `tenancy.make_tenant_table`).
//! - [`TenantPool`]: a connection pool on one database, connected as the runtime role,
//!   whose only way to hand out a connection is [`TenantPool::begin`] → [`TenantTx`].
//! - [`TenantTx`]: a transaction bound to one tenant by a signed, transaction-local
//!   context. The opening travels in front of the first statement, so a read-write
//!   transaction costs one round trip more than a bare read (the COMMIT), and a
//!   read-only point read on the native context costs what a bare read does: one round
//!   trip, one Sync (the private `wire` module; ARCHITECTURE.md, "Openings").
//! - [`Router`]: resolves a tenant through the catalog (cached), refuses tenants that are
//!   not active or whose cluster is in another region, and opens the [`TenantTx`] on the
//!   right cluster's pool.
//!
//! - [`Observer`]: an optional per-tenant recording hook a pool calls with the SDK's own
//!   timings of each statement, transaction end and connection wait.
//!
//! Connections are made by `tenancy_conn` ([`PgConfig`]): libpq-style settings with
//! `sslmode` up to `verify-full`, TLS with rustls; tenant pools put their protocol splice
//! above the TLS stream.
//!
//! What it does not do: it never sets a session-level tenant (only `set_config(…, true)`
//! inside `tenancy.enter`), never connects as a superuser or owner for tenant data, and
//! knows nothing about HTTP.

mod access;
pub mod bootstrap;
mod error;
mod metrics;
mod observe;
mod pool;
mod router;
mod tx;
mod wire;

pub use access::{config_for, ClusterAccess, Login};
pub use error::Error;
pub use observe::{Observer, Outcome};
pub use pool::{PoolOptions, Pooler, TenantPool};
pub use router::{ClusterCredentials, Router, RouterOptions};
pub use tenancy_conn::{PgConfig, RootCerts, SslMode, Tls, TlsSettings};
pub use tenancy_core::{ContextKey, KeyId, TenantId};
pub use tokio_postgres::{types::ToSql, Row};
pub use tx::TenantTx;

/// The request path's in-process maps (tenant routes, pools, prepared statements): foldhash's
/// fast hasher, seeded at random per map, instead of SipHash, which cost about as much as
/// the lookup around it.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
