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

/// Whether `label` is one label of a host name as tenancy accepts them: 1 to 63 bytes of
/// a-z, 0-9 and '-', neither starting nor ending with '-'.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
