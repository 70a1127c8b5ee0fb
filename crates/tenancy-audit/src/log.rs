//! The two kinds of log: a tenant's (an application's events, in its tenant database) and
//! the control plane's own (its changes to the catalog, in the catalog database).

use serde::{Deserialize, Serialize};

/// Which log a chain, checkpoint or anchor belongs to. Each has its own table and its own
/// hash and signature domains, so an event or checkpoint of one never verifies as one of
/// the other.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Log {
    /// `tenancy.audit_events` in a tenant database: what applications record.
    #[default]
    Tenant,
    /// `tenancy_catalog.audit_log` in the catalog: what the control plane and the
    /// configuration service change, one chain per tenant concerned plus the platform
    /// chain ([`PLATFORM`]).
    Control,
}

/// The chain of the control log for changes that concern no single tenant (regions,
/// global configuration, purges of tenant logs): the nil UUID.
pub const PLATFORM: uuid::Uuid = uuid::Uuid::nil();

impl Log {
    /// The stored name (`tenant`, `control`).
    pub fn as_str(self) -> &'static str {
        match self {
            Log::Tenant => "tenant",
            Log::Control => "control",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Log> {
        match s {
            "tenant" => Some(Log::Tenant),
            "control" => Some(Log::Control),
            _ => None,
        }
    }

    /// The table holding its events.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Log::Tenant => "tenancy.audit_events",
            Log::Control => "tenancy_catalog.audit_log",
        }
    }

    /// The advisory lock its sealers take (one sealer of a table at a time).
    pub(crate) fn seal_lock(self) -> &'static str {
        match self {
            Log::Tenant => "tenancy.audit_events.seal",
            Log::Control => "tenancy_catalog.audit_log.seal",
        }
    }

    /// The first field of every event hash.
    pub(crate) fn event_domain(self) -> &'static str {
        match self {
            Log::Tenant => "tenancy-audit-event-v1",
            Log::Control => "tenancy-audit-control-event-v1",
        }
    }

    /// The prefix of every signed checkpoint message.
    pub(crate) fn checkpoint_domain(self) -> &'static [u8] {
        match self {
            Log::Tenant => b"tenancy-audit-checkpoint-v1\0",
            Log::Control => b"tenancy-audit-control-checkpoint-v1\0",
        }
    }
}
