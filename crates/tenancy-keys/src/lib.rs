//! Per-tenant envelope encryption on PostgreSQL, with crypto-shredding.
//!
//! - A [`KeyProvider`] keeps each tenant's key-encryption keys (KEKs, versioned) and wraps
//!   data keys under them; [`LocalKeyProvider`] (one key file per tenant in a private
//!   directory) is the default, and the trait fits a cloud KMS or Vault Transit (see
//!   [`provider`]).
//! - [`install`] creates `tenancy.data_keys` in a tenant database (as the owner role): each
//!   tenant's data keys (DEKs, versioned), wrapped, under row-level security.
//! - A [`Keyring`] seals and opens application fields inside a [`tenancy_sdk::TenantTx`]:
//!   AES-256-GCM with the tenant's current DEK, the associated data binding tenant, table,
//!   column and row key ([`FieldRef`]), so a value copied to another tenant, table, column
//!   or row does not open. Unwrapped DEKs are cached in memory (bounded, expiring) and
//!   wiped when dropped.
//! - Rotation: [`Keyring::rotate_data_key`] (new writes use a new DEK, old values still
//!   open), [`Keyring::rotate_kek`] (rewraps every DEK, rows untouched) and
//!   [`Keyring::reencrypt`] (re-seals a column's old-version values in batches, with
//!   progress).
//! - Crypto-shredding: [`Keyring::shred`] destroys the tenant's KEKs and deletes its
//!   wrapped DEKs, recording an audit event: every copy of its sealed fields (a backup, a
//!   replica, an earlier `pg_dump`) stops opening.

use tenancy_core::TenantId;

mod field;
mod keyring;
pub mod provider;
mod reencrypt;

pub use field::{sealed_version, FieldRef, FORMAT_V1, MAX_PLAINTEXT, OVERHEAD};
pub use keyring::{DataKeyInfo, KeyStatus, Keyring, KeyringOptions, ShredReport};
pub use provider::{KekState, KeyProvider, LocalKeyProvider, SecretKey, Wrapped};
pub use reencrypt::{Progress, SealedColumn};

/// The SQL that creates the data-key table and its grants; run it as the owner role after
/// the tenancy runtime is installed, e.g. with [`install`].
pub const KEYS_SQL: &str = include_str!("../sql/keys.sql");

/// Installs (or updates) the data-key table. `owner` must be connected as the owner role
/// to the tenant database. Idempotent; the statements run as one implicit transaction (a
/// failure changes nothing).
pub async fn install(owner: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    owner.batch_execute(KEYS_SQL).await
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was refused before reaching a key or the database.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A statement in a tenant transaction failed.
    #[error("database: {0}")]
    Tx(#[from] tenancy_sdk::Error),
    /// A key file or directory could not be read or written.
    #[error("{action} {file}: {source}")]
    Io {
        /// The operation that failed.
        action: &'static str,
        /// The key file or key directory.
        file: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A key file or directory is unusable: corrupt, another tenant's, not a key file, or
    /// readable by others.
    #[error("key file {path} {problem}")]
    KeyFile {
        /// The file or directory.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The tenant has no key-encryption key.
    #[error("tenant {0} has no key-encryption key (create its keys first)")]
    NoKek(TenantId),
    /// The tenant has no such KEK version.
    #[error("tenant {tenant} has no key-encryption key version {version}")]
    NoKekVersion {
        /// The tenant.
        tenant: TenantId,
        /// The version asked for.
        version: u32,
    },
    /// The tenant's keys were destroyed (crypto-shredded).
    #[error(
        "tenant {0}'s keys were destroyed (crypto-shredded): its sealed data cannot be opened"
    )]
    Destroyed(TenantId),
    /// A wrapped data key did not unwrap under the KEK it names (altered, or wrapped for
    /// another tenant or data-key version).
    #[error("a data key of tenant {tenant} does not unwrap under key-encryption key version {kek_version}: it was altered or belongs elsewhere")]
    Unwrap {
        /// The tenant.
        tenant: TenantId,
        /// The KEK version it names.
        kek_version: u32,
    },
    /// The tenant has no data key yet.
    #[error("tenant {0} has no data key (call Keyring::create_keys first)")]
    NoDataKeys(TenantId),
    /// A sealed value names a data-key version the tenant does not have.
    #[error("tenant {tenant} has no data key version {version}: the value was sealed for another tenant, or its keys were deleted")]
    NoDataKey {
        /// The tenant.
        tenant: TenantId,
        /// The version the value names.
        version: u32,
    },
    /// A sealed value is not in a known format.
    #[error("malformed sealed value: {0}")]
    Malformed(String),
    /// A sealed value failed authentication for the field it was opened as.
    #[error("sealed value does not open as {table}.{column} row {row:?} of tenant {tenant} (data key {version}): it was sealed for another tenant, table, column or row, or it was altered")]
    Open {
        /// The tenant.
        tenant: TenantId,
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The row key.
        row: String,
        /// The data-key version it names.
        version: u32,
    },
    /// Encryption itself failed.
    #[error("encryption: {0}")]
    Crypto(String),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// Recording the audit event failed.
    #[error("audit: {0}")]
    Audit(#[from] tenancy_audit::Error),
    /// A key provider's own failure (network, permission, service error).
    #[error("key provider: {0}")]
    Provider(String),
    /// The keys were destroyed but the transaction deleting the wrapped data keys did not
    /// commit: the sealed data is unreadable already; run the shred again to finish.
    #[error("tenant {tenant}'s key-encryption keys were destroyed but deleting its wrapped data keys failed ({source}); run the shred again to finish")]
    ShredIncomplete {
        /// The tenant.
        tenant: TenantId,
        /// Why the commit failed.
        #[source]
        source: tenancy_sdk::Error,
    },
}
