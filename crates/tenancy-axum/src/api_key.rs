//! Tenant API keys: `tnk_<key id>_<secret>`.
//!
//! The prefix makes a leaked key recognisable (secret scanners, logs); the key id (16 hex
//! digits) is the public part the catalog looks the key up by; the secret is 32 random
//! bytes in hex. The catalog stores only the SHA-256 of the whole key, and the runtime
//! role can only check a key through `tenancy_catalog.authenticate_api_key`.

use sha2::{Digest, Sha256};
use tenancy_catalog::{ApiKeyRecord, CatalogError};
use tenancy_core::TenantId;
use tokio_postgres::Client;

/// The prefix of every tenant API key.
pub const API_KEY_PREFIX: &str = "tnk_";

/// A parsed API key (the secret stays inside; `Debug` hides it).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public key id.
    key_id: String,
    /// The whole key text.
    text: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ApiKey {
    /// Parses a key; `None` if it does not have the shape of one.
    pub fn parse(text: &str) -> Option<ApiKey> {
        let rest = text.strip_prefix(API_KEY_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        (is_hex(id, 16) && is_hex(secret, 64)).then(|| ApiKey {
            key_id: id.to_owned(),
            text: text.to_owned(),
        })
    }

    /// A fresh random key.
    pub fn generate() -> ApiKey {
        let id: [u8; 8] = rand::random();
        let secret: [u8; 32] = rand::random();
        let key_id = hex::encode(id);
        let text = format!("{API_KEY_PREFIX}{key_id}_{}", hex::encode(secret));
        ApiKey { key_id, text }
    }

    /// The public key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The full key, to hand to its user once.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the whole key: what the catalog stores.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }
}

/// Creates a key for `tenant` with `scopes`, stores its hash in the catalog (connected
/// as the owner role) and returns the record and the key (shown once).
pub async fn issue_api_key(
    owner: &Client,
    tenant: TenantId,
    name: &str,
    scopes: &[String],
) -> Result<(ApiKeyRecord, ApiKey), CatalogError> {
    let key = ApiKey::generate();
    let rec =
        tenancy_catalog::create_api_key(owner, tenant, key.key_id(), &key.hash(), name, scopes)
            .await?;
    Ok((rec, key))
}
