//! A tenant's compliance evidence report: one model ([`model`]), gathered from the real
//! sources ([`collect`]: catalog placement and moves, residency, `tenancy check` and its
//! probe, keys, audit chain verification and checkpoints, the anomaly feed, retention and
//! legal hold, exports and moves), signed with the control plane's audit checkpoint key
//! ([`sign`], over the RFC 8785 canonical form of [`canonical`]) and rendered for people
//! as one self-contained HTML page ([`html`]) that embeds the signed JSON.
//!
//! `GET /v1/tenants/{id}/report` ([`crate::api::report`]) serves it; `tenancy report`
//! fetches the signed JSON from there, checks it, and writes it or renders the page with
//! the same [`html::render`]; `tenancy report verify` runs [`sign::verify_bytes`].
//!
//! It lives in the control plane rather than a crate of its own because gathering needs
//! the control plane's state (the sealer's logins and key, the in-memory anomaly feed,
//! the tenant router), and the CLI already depends on this crate; the model, signature
//! and page are plain functions any other user of the crate can call.
//!
//! What it does not do: it changes nothing (the probe's writes are rolled back), it
//! keeps no copy of a report, and it does not judge a finding beyond what its source
//! says (the page marks errors, tampering, open anomalies and residency violations).

pub mod canonical;
pub mod collect;
pub mod html;
pub mod model;
pub mod sign;

use std::path::PathBuf;

use serde::Deserialize;

pub use collect::collect;
pub use model::{Report, SignedReport};
pub use sign::{sign, verify_bytes, PageCheck, Verified};

/// The `[report]` section of the configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    /// The applications' directory of key-encryption key files (tenancy-keys'
    /// `LocalKeyProvider`), read to show each tenant's KEK state; absent: reports say the
    /// KEK is `not_visible`.
    pub key_dir: Option<PathBuf>,
}

/// What the report gathers besides the catalog and the sealer.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The context key, for `tenancy check`'s probe (signed contexts as the runtime
    /// role); without it the probe does not run.
    pub context_key: Option<tenancy_core::ContextKey>,
    /// The key directory of [`ReportConfig::key_dir`].
    pub key_dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests;
