//! The crate's error type.

use crate::model::ModelError;

/// Errors from the configuration store, client and DNS checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A database call failed.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be had from the pool.
    #[error("no catalog connection: {0}")]
    Pool(String),
    /// A connection could not be opened.
    #[error("{what}: {source}")]
    Connect {
        /// What was being connected.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: tenancy_conn::ConnError,
    },
    /// The input was refused before touching the database.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// The thing does not exist.
    #[error("{kind} {key:?} does not exist")]
    NotFound {
        /// What kind of thing.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// The change conflicts with the current state (the message says how).
    #[error("{0}")]
    Conflict(String),
    /// A configuration rule refuses the change: it would bring what the rule forbids
    /// (a security feature turned off, a region reached that a flag excludes, …).
    #[error("{message}")]
    Rule {
        /// The rule's name (`security_override`, `compliance_missing`, …).
        rule: &'static str,
        /// What the change would bring, naming the rule.
        message: String,
    },
    /// A stored value failed to parse (the catalog was edited by hand).
    #[error("configuration store holds an invalid value: {0}")]
    Corrupt(String),
}

impl ConfigError {
    /// Maps a driver error of `what` (a verb phrase: "reading a flag").
    pub fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ConfigError {
        move |source| ConfigError::Db { what, source }
    }

    /// A stored value that does not parse.
    pub fn corrupt<E: std::fmt::Display>(e: E) -> ConfigError {
        ConfigError::Corrupt(e.to_string())
    }

    /// Whether the catalog could not be reached (as opposed to refusing the request).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ConfigError::Pool(_) | ConfigError::Connect { .. } => true,
            ConfigError::Db { source, .. } => source.is_closed() || source.code().is_none(),
            _ => false,
        }
    }
}
