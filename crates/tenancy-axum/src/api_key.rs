//! Tenant API keys: `tnk_<key id>_<secret>`.
//!
//! The prefix makes a leaked key recognisable (secret scanners, logs); the key id (16 hex
//! digits) is the public part the catalog looks the key up by; the secret is 32 random
//! bytes in hex. The catalog stores only the SHA-256 of the whole key, and the runtime
//! role can only check a key through `tenancy_catalog.authenticate_api_key`.

use sha2::{Digest, Sha256};
use tenancy_catalog::CatalogError;
pub use tenancy_catalog::{api_key_cursor, parse_api_key_cursor, ApiKeyRecord};
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

/// The columns the catalog's tenant key functions return, as a record of `tenant`.
fn tenant_key(tenant: TenantId, row: &tokio_postgres::Row) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: row.get(0),
        tenant_id: tenant,
        name: row.get(1),
        scopes: row.get(2),
        created_at: row.get(3),
        revoked_at: row.get(4),
        last_used_at: row.get(5),
    }
}

/// Who changes a tenant's API keys, as the control log's event of the change names them:
/// the caller of a request of that tenant (a user, or an API key with its id), and the
/// request's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyActor {
    /// `user` or `api_key`.
    kind: &'static str,
    /// The caller's subject.
    subject: Option<String>,
    /// The API key that authenticated the caller, if one did.
    key_id: Option<String>,
    /// The request that made the change.
    request_id: Option<String>,
}

impl KeyActor {
    /// The caller of a request of `tenant`: an API key when one authenticated it (its
    /// subject is `api_key:<key id>`), else a user.
    pub fn of(tenant: &crate::Tenant, request_id: Option<&crate::RequestId>) -> KeyActor {
        let subject = tenant.subject().map(str::to_owned);
        let key_id = match (&subject, tenant.via().contains(&crate::SourceKind::ApiKey)) {
            (Some(s), true) => s.strip_prefix("api_key:").map(str::to_owned),
            _ => None,
        };
        KeyActor {
            kind: if key_id.is_some() { "api_key" } else { "user" },
            subject,
            key_id,
            request_id: request_id.map(|r| r.as_str().to_owned()),
        }
    }

    /// A user of the tenant, `subject`, outside any request (a script, a test).
    pub fn user(subject: impl Into<String>) -> KeyActor {
        KeyActor {
            kind: "user",
            subject: Some(subject.into()),
            key_id: None,
            request_id: None,
        }
    }
}

/// Issues a key for the tenant of `tx` (a transaction of that tenant on the catalog
/// database, as the runtime role) through `tenancy_catalog.issue_tenant_api_key`, which
/// takes the tenant from the signed context, never from an argument, refuses scopes
/// that are not among `permissions` (the caller's own), and records the issue (`by`, the
/// key's id, name and scopes) in the control log in the same transaction. Returns the
/// record and the key (shown once; the catalog stores only its hash).
pub async fn issue_tenant_api_key(
    tx: &mut tenancy_sdk::TenantTx,
    by: &KeyActor,
    name: &str,
    scopes: &[String],
    permissions: &[String],
) -> Result<(ApiKeyRecord, ApiKey), tenancy_sdk::Error> {
    let key = ApiKey::generate();
    let hash = key.hash();
    let row = tx
        .query_one(
            "SELECT key_id, name, scopes, created_at, NULL::timestamptz, NULL::timestamptz
               FROM tenancy_catalog.issue_tenant_api_key($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &key.key_id(),
                &hash.as_slice(),
                &name,
                &scopes,
                &permissions,
                &by.kind,
                &by.subject,
                &by.key_id,
                &by.request_id,
            ],
        )
        .await?;
    Ok((tenant_key(tx.tenant(), &row), key))
}

/// One page of the keys of the tenant of `tx` (see [`issue_tenant_api_key`]), newest
/// first, without hashes: at most `limit`, after the key `after` names
/// (`tenancy_catalog::parse_api_key_cursor`).
pub async fn tenant_api_keys(
    tx: &mut tenancy_sdk::TenantTx,
    after: Option<&(time::OffsetDateTime, String)>,
    limit: i64,
) -> Result<Vec<ApiKeyRecord>, tenancy_sdk::Error> {
    let (at, id) = match after {
        Some((at, id)) => (Some(*at), id.as_str()),
        None => (None, ""),
    };
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let rows = tx
        .query(
            "SELECT * FROM tenancy_catalog.tenant_api_keys($1, $2, $3)",
            &[&at, &id, &limit],
        )
        .await?;
    let tenant = tx.tenant();
    Ok(rows.iter().map(|r| tenant_key(tenant, r)).collect())
}

/// Revokes the key `key_id` of the tenant of `tx` (see [`issue_tenant_api_key`]) and
/// records the revocation (`by`) in the control log in the same transaction; `None` when
/// that tenant has no such key (another tenant's key is untouched). Revoking a revoked key
/// changes and records nothing. Once it committed, [`crate::Tenancy::forget_api_key`]
/// makes this process refuse the key at once (other processes when the catalog's change
/// notification reaches them).
pub async fn revoke_tenant_api_key(
    tx: &mut tenancy_sdk::TenantTx,
    by: &KeyActor,
    key_id: &str,
) -> Result<Option<ApiKeyRecord>, tenancy_sdk::Error> {
    let row = tx
        .query_opt(
            "SELECT * FROM tenancy_catalog.revoke_tenant_api_key($1, $2, $3, $4, $5)",
            &[&key_id, &by.kind, &by.subject, &by.key_id, &by.request_id],
        )
        .await?;
    Ok(row.map(|r| tenant_key(tx.tenant(), &r)))
}
