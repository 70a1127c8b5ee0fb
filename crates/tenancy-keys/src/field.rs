//! What a sealed value is bound to ([`FieldRef`]) and its byte format.
//!
//! A sealed value is `format (1 byte, 0x01) ‖ data-key version (4 bytes, big endian) ‖
//! nonce (12 bytes) ‖ AES-256-GCM ciphertext and tag (plaintext length + 16 bytes)`. The
//! associated data is a domain string, the header (format and version), the tenant id and
//! the length-prefixed table, column and row key, so a value opens only where it was
//! sealed, and a changed header fails like a changed ciphertext.

use aes_gcm::aead::{Aead, AeadInPlace, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use tenancy_core::TenantId;

use crate::provider::random;
use crate::Error;

/// The only format written and read.
pub const FORMAT_V1: u8 = 1;
/// Format byte and data-key version.
pub(crate) const HEADER: usize = 1 + 4;
const NONCE: usize = 12;
const TAG: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = HEADER + NONCE + TAG;
/// The largest plaintext sealed (64 MiB): a bound, not a recommendation.
pub const MAX_PLAINTEXT: usize = 64 << 20;
const MAX_NAME: usize = 127;
const MAX_ROW: usize = 1024;

/// Where a sealed value lives: its table, column and row key (the row's key as text, e.g.
/// `42` or a UUID). The tenant is the transaction's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    table: &'a str,
    column: &'a str,
    row: &'a str,
}

impl<'a> FieldRef<'a> {
    /// A field reference. `table` and `column` are 1–127 bytes, `row` 1–1024 bytes, none
    /// with a NUL character.
    pub fn new(table: &'a str, column: &'a str, row: &'a str) -> Result<Self, Error> {
        for (what, value, max) in [
            ("table", table, MAX_NAME),
            ("column", column, MAX_NAME),
            ("row key", row, MAX_ROW),
        ] {
            if value.is_empty() || value.len() > max || value.contains('\0') {
                return Err(Error::Invalid(format!(
                    "{what} {value:?} must be 1 to {max} bytes without NUL"
                )));
            }
        }
        Ok(FieldRef { table, column, row })
    }

    /// The table.
    pub fn table(&self) -> &'a str {
        self.table
    }

    /// The column.
    pub fn column(&self) -> &'a str {
        self.column
    }

    /// The row key.
    pub fn row(&self) -> &'a str {
        self.row
    }
}

/// The data-key version a sealed value names, after checking its format and length.
pub fn sealed_version(sealed: &[u8]) -> Result<u32, Error> {
    if sealed.len() < OVERHEAD {
        return Err(Error::Malformed(format!(
            "sealed value is {} bytes; at least {OVERHEAD}",
            sealed.len()
        )));
    }
    if sealed[0] != FORMAT_V1 {
        return Err(Error::Malformed(format!(
            "unknown sealed-value format {}",
            sealed[0]
        )));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&sealed[1..HEADER]);
    let version = u32::from_be_bytes(v);
    if version == 0 {
        return Err(Error::Malformed("data-key version 0".into()));
    }
    Ok(version)
}

fn aad(tenant: TenantId, field: &FieldRef<'_>, header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + field.table.len() + field.column.len() + field.row.len());
    out.extend_from_slice(b"tenancy-field/v1");
    out.extend_from_slice(header);
    out.extend_from_slice(tenant.as_uuid().as_bytes());
    for part in [field.table, field.column, field.row] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Seals `plaintext` with `cipher` (data-key `version`) for `field` of `tenant`.
pub(crate) fn seal_with(
    cipher: &Aes256Gcm,
    version: u32,
    tenant: TenantId,
    field: &FieldRef<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::Invalid(format!(
            "plaintext is {} bytes; at most {MAX_PLAINTEXT}",
            plaintext.len()
        )));
    }
    // Header, nonce and plaintext in one buffer, encrypted in place, the tag appended: one
    // allocation and no copy of the ciphertext.
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&version.to_be_bytes());
    let mut nonce = [0u8; NONCE];
    random(&mut nonce)?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let aad = aad(tenant, field, &out[..HEADER]);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[HEADER + NONCE..])
        .map_err(|_| Error::Crypto("sealing failed".into()))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a value sealed by [`seal_with`]; `version` is [`sealed_version`] of it.
pub(crate) fn open_with(
    cipher: &Aes256Gcm,
    tenant: TenantId,
    field: &FieldRef<'_>,
    sealed: &[u8],
) -> Result<Vec<u8>, Error> {
    let version = sealed_version(sealed)?;
    let aad = aad(tenant, field, &sealed[..HEADER]);
    let nonce = &sealed[HEADER..HEADER + NONCE];
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &sealed[HEADER + NONCE..],
                aad: &aad,
            },
        )
        .map_err(|_| Error::Open {
            tenant,
            table: field.table.to_owned(),
            column: field.column.to_owned(),
            row: field.row.to_owned(),
            version,
        })
}
