//! Catalog store: custom-domain resolution and tenant API keys.
//!
//! The request layer resolves a tenant from a verified custom domain or from an API key;
//! both are catalog data, so the SQL it runs lives here. Custom domains themselves are
//! owned by the configuration service (`tenancy_catalog.config_domains`, migration 0004):
//! it claims them, verifies them by DNS TXT and records every change in its change log,
//! so this module only *reads* them and never writes one. API key secrets never reach
//! this module: callers pass the SHA-256 of the full key.

use tenancy_core::TenantId;
use time::OffsetDateTime;
use tokio_postgres::{Client, Row};

use crate::corrupt;
use crate::CatalogError;

/// The `LISTEN` channel on which catalog changes are announced, with payloads
/// `tenant:<uuid>`, `domain:<name>` and `api_key:<key id>`.
pub const CHANGES_CHANNEL: &str = "tenancy_catalog_changes";

/// An API key as the catalog stores it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public part of the key, 16 hex digits.
    pub key_id: String,
    /// The tenant the key acts for.
    pub tenant_id: TenantId,
    /// Human-readable name.
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Last successful authentication (recorded at most once a minute).
    pub last_used_at: Option<OffsetDateTime>,
}

/// What a successful API key authentication yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyGrant {
    /// The tenant the key acts for.
    pub tenant_id: TenantId,
    /// The key's scopes.
    pub scopes: Vec<String>,
}

/// Normalises and checks a host name (lowercase, no port, no trailing dot).
pub fn normalize_domain(domain: &str) -> Result<String, CatalogError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = d.split('.').count() >= 2 && d.split('.').all(tenancy_core::is_dns_label);
    if !labels_ok || d.len() > 253 {
        return Err(CatalogError::Invalid(format!(
            "{domain:?} is not a valid domain name: use lowercase labels of a-z, 0-9 and '-', separated by dots"
        )));
    }
    Ok(d)
}

/// The tenant that holds this host name *verified* in the configuration service
/// (`config_domains`), if any. Pending, disabled and unknown domains all yield `None`;
/// a host name is verified for at most one tenant (partial unique index), so the answer
/// is unambiguous. Usable by the runtime role.
pub async fn tenant_for_domain(
    client: &Client,
    domain: &str,
) -> Result<Option<TenantId>, CatalogError> {
    let Ok(d) = normalize_domain(domain) else {
        return Ok(None);
    };
    // Through `tenancy_catalog.tenant_for_domain`: the runtime role cannot read
    // `config_domains` (it would list every tenant's domains).
    let row = client
        .query_one("SELECT tenancy_catalog.tenant_for_domain($1)", &[&d])
        .await
        .map_err(CatalogError::db("looking up a custom domain"))?;
    row.get::<_, Option<uuid::Uuid>>(0)
        .map(|id| TenantId::from_uuid(id).map_err(corrupt))
        .transpose()
}

fn check_key_id(key_id: &str) -> Result<(), CatalogError> {
    if key_id.len() != 16
        || !key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(CatalogError::Invalid(
            "API key id must be 16 lowercase hex digits".into(),
        ));
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<(), CatalogError> {
    let ok = !scope.is_empty()
        && scope.len() <= 64
        && scope
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b":_-.*".contains(&b));
    if !ok {
        return Err(CatalogError::Invalid(format!(
            "API key scope {scope:?} is not allowed: use 1 to 64 characters from a-z, 0-9 and : _ - . *"
        )));
    }
    Ok(())
}

fn key_from_row(row: &Row) -> Result<ApiKeyRecord, CatalogError> {
    Ok(ApiKeyRecord {
        key_id: row.get(0),
        tenant_id: TenantId::from_uuid(row.get(1)).map_err(corrupt)?,
        name: row.get(2),
        scopes: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
        last_used_at: row.get(6),
    })
}

const KEY_COLUMNS: &str = "key_id, tenant_id, name, scopes, created_at, revoked_at, last_used_at";

/// Stores a new API key for `tenant`, given its public id and the SHA-256 of the whole
/// key. The caller generates the key and shows it once; the catalog never sees it.
pub async fn create_api_key(
    client: &Client,
    tenant: TenantId,
    key_id: &str,
    secret_hash: &[u8; 32],
    name: &str,
    scopes: &[String],
) -> Result<ApiKeyRecord, CatalogError> {
    check_key_id(key_id)?;
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(CatalogError::Invalid(
            "API key name must be 1 to 200 characters".into(),
        ));
    }
    for s in scopes {
        check_scope(s)?;
    }
    let row = client
        .query_one(
            &format!(
                "INSERT INTO tenancy_catalog.api_keys (key_id, tenant_id, name, secret_hash, scopes)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}"
            ),
            &[
                &key_id,
                &tenant.as_uuid(),
                &name.trim(),
                &secret_hash.as_slice(),
                &scopes,
            ],
        )
        .await
        .map_err(CatalogError::db("storing an API key"))?;
    key_from_row(&row)
}

/// Revokes a key of `tenant` (idempotent). Returns false when the tenant has no such key.
pub async fn revoke_api_key(
    client: &Client,
    tenant: TenantId,
    key_id: &str,
) -> Result<bool, CatalogError> {
    check_key_id(key_id)?;
    let n = client
        .execute(
            "UPDATE tenancy_catalog.api_keys SET revoked_at = coalesce(revoked_at, now())
              WHERE key_id = $1 AND tenant_id = $2",
            &[&key_id, &tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("revoking an API key"))?;
    Ok(n == 1)
}

/// A tenant's keys (without secrets), newest first.
pub async fn list_api_keys(
    client: &Client,
    tenant: TenantId,
) -> Result<Vec<ApiKeyRecord>, CatalogError> {
    let rows = client
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM tenancy_catalog.api_keys WHERE tenant_id = $1
                 ORDER BY created_at DESC, key_id"
            ),
            &[&tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("listing API keys"))?;
    rows.iter().map(key_from_row).collect()
}

/// The cursor after `key` in a list of keys newest first: its creation time (µs since
/// the Unix epoch), `.`, its id.
pub fn api_key_cursor(key: &ApiKeyRecord) -> String {
    let us = key.created_at.unix_timestamp_nanos() / 1000;
    format!("{us}.{}", key.key_id)
}

/// The creation time and key id an [`api_key_cursor`] names; `None` for anything else.
pub fn parse_api_key_cursor(cursor: &str) -> Option<(OffsetDateTime, String)> {
    let (us, id) = cursor.split_once('.')?;
    let us: i128 = us.parse().ok()?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(us.checked_mul(1000)?).ok()?;
    check_key_id(id).ok()?;
    Some((at, id.to_owned()))
}

/// One page of a tenant's keys (without secrets or hashes), newest first: at most
/// `limit`, after the key created at `after.0` with id `after.1` when given.
pub async fn list_api_keys_page(
    client: &Client,
    tenant: TenantId,
    after: Option<(OffsetDateTime, &str)>,
    limit: i64,
) -> Result<Vec<ApiKeyRecord>, CatalogError> {
    let (at, id) = match after {
        Some((at, id)) => (Some(at), id),
        None => (None, ""),
    };
    let rows = client
        .query(
            &format!(
                "SELECT {KEY_COLUMNS} FROM tenancy_catalog.api_keys
                  WHERE tenant_id = $1
                    AND ($2::timestamptz IS NULL
                         OR created_at < $2 OR (created_at = $2 AND key_id > $3))
                  ORDER BY created_at DESC, key_id LIMIT $4"
            ),
            &[&tenant.as_uuid(), &at, &id, &limit],
        )
        .await
        .map_err(CatalogError::db("listing API keys"))?;
    rows.iter().map(key_from_row).collect()
}

/// Revokes a key of `tenant` in `client`'s transaction (locking it), returning the key
/// before and after, or `None` when the tenant has no such key. A revoked key stays as
/// it was (its first revocation time).
pub async fn revoke_api_key_returning<C: tokio_postgres::GenericClient>(
    client: &C,
    tenant: TenantId,
    key_id: &str,
) -> Result<Option<(ApiKeyRecord, ApiKeyRecord)>, CatalogError> {
    check_key_id(key_id)?;
    let Some(row) = client
        .query_opt(
            &format!(
                "SELECT {KEY_COLUMNS} FROM tenancy_catalog.api_keys
                  WHERE key_id = $1 AND tenant_id = $2 FOR UPDATE"
            ),
            &[&key_id, &tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading an API key"))?
    else {
        return Ok(None);
    };
    let before = key_from_row(&row)?;
    let row = client
        .query_one(
            &format!(
                "UPDATE tenancy_catalog.api_keys SET revoked_at = coalesce(revoked_at, now())
                  WHERE key_id = $1 AND tenant_id = $2 RETURNING {KEY_COLUMNS}"
            ),
            &[&key_id, &tenant.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("revoking an API key"))?;
    Ok(Some((before, key_from_row(&row)?)))
}

/// Authenticates a key by its public id and the SHA-256 of the whole key, through
/// `tenancy_catalog.authenticate_api_key` (usable by the runtime role, which cannot read
/// the stored hashes). Unknown, revoked and wrong keys all yield `None`.
pub async fn authenticate_api_key(
    client: &Client,
    key_id: &str,
    secret_hash: &[u8; 32],
) -> Result<Option<ApiKeyGrant>, CatalogError> {
    if check_key_id(key_id).is_err() {
        return Ok(None);
    }
    let row = client
        .query_opt(
            "SELECT tenant_id, scopes FROM tenancy_catalog.authenticate_api_key($1, $2)",
            &[&key_id, &secret_hash.as_slice()],
        )
        .await
        .map_err(CatalogError::db("authenticating an API key"))?;
    row.map(|r| {
        Ok(ApiKeyGrant {
            tenant_id: TenantId::from_uuid(r.get(0)).map_err(corrupt)?,
            scopes: r.get(1),
        })
    })
    .transpose()
}
