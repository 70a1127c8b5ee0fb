//! Core types of tenancy.
//!
//! This crate holds the vocabulary every other tenancy crate speaks:
//!
//! - [`ids`]: parsed newtypes for tenant ids, slugs, regions and plans, and the
//!   closed enums for placements and lifecycle states. Raw strings and UUIDs do not
//!   cross module boundaries; they are parsed here once, with errors that say what is
//!   allowed.
//! - [`context`]: the signed tenant-context token the SDK hands to PostgreSQL when it
//!   opens a tenant transaction, and the key material that signs it.
//!
//! It deliberately does no IO: no database, no network, no filesystem, no clock.
//! Callers pass the current time in, which keeps every function here deterministic and
//! testable.

pub mod context;
pub mod ids;

pub use context::{ContextKey, ContextToken, KeyId, TokenError};
pub use ids::{IdError, Placement, PlanKey, RegionId, Slug, TenantId, TenantState};
