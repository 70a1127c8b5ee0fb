//! The [`Keyring`]: data keys per tenant, sealing and opening, rotation and shredding.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Key};
use tenancy_audit::{Actor, Event};
use tenancy_core::TenantId;
use tenancy_sdk::{TenantPool, TenantTx};
use uuid::Uuid;

use crate::field::{open_with, seal_with, sealed_version, FieldRef};
use crate::provider::{random_key, KekState, KeyProvider, Wrapped};
use crate::Error;

/// An unwrapped data key, ready to use. Its AES key schedule is wiped when dropped.
struct DataKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Cache bounds of a [`Keyring`].
#[derive(Debug, Clone, Copy)]
pub struct KeyringOptions {
    /// Most unwrapped data keys kept in memory.
    pub max_keys: u64,
    /// How long an unwrapped data key stays cached. After a shred in another process, this
    /// process can still open the tenant's values for at most this long.
    pub key_ttl: Duration,
    /// How long a tenant's current data-key version is remembered. After a data-key
    /// rotation in another process, this process seals with the previous version (which
    /// still opens) for at most this long.
    pub current_ttl: Duration,
}

impl Default for KeyringOptions {
    fn default() -> Self {
        KeyringOptions {
            max_keys: 10_000,
            key_ttl: Duration::from_secs(300),
            current_ttl: Duration::from_secs(60),
        }
    }
}

/// One data key of a tenant, as [`Keyring::status`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyInfo {
    /// Its version.
    pub version: u32,
    /// The KEK version it is wrapped under.
    pub kek_version: u32,
    /// When it was made.
    pub created_at: time::OffsetDateTime,
}

/// A tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// Its KEKs, in the provider.
    pub kek: KekState,
    /// Its data keys, oldest first; the last one seals new values.
    pub data_keys: Vec<DataKeyInfo>,
}

/// What [`Keyring::shred`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShredReport {
    /// Wrapped data keys deleted from the tenant database.
    pub data_keys_deleted: u64,
}

/// Seals and opens tenant fields with per-tenant data keys wrapped by a [`KeyProvider`].
///
/// Reads and writes of `tenancy.data_keys` go through the tenant's own transaction
/// (runtime role, row-level security): a tenant's transaction sees no other tenant's keys.
/// Operations that create or change keys ([`Keyring::create_keys`],
/// [`Keyring::rotate_data_key`], [`Keyring::rotate_kek`], [`Keyring::shred`]) open and
/// commit their own transaction, so the cache never holds a key whose row did not commit.
pub struct Keyring<P> {
    provider: Arc<P>,
    keys: moka::sync::Cache<(Uuid, u32), Arc<DataKey>>,
    /// Per tenant: its current data-key version and that key (one lookup per seal).
    current: moka::sync::Cache<Uuid, (u32, Arc<DataKey>)>,
}

impl<P> fmt::Debug for Keyring<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("cached_keys", &self.keys.entry_count())
            .finish()
    }
}

const SELECT_KEY: &str =
    "SELECT wrapped, kek_version FROM tenancy.data_keys WHERE tenant_id = $1 AND version = $2";
const SELECT_CURRENT: &str = "SELECT version FROM tenancy.data_keys WHERE tenant_id = $1 \
     ORDER BY version DESC LIMIT 1";
const INSERT_KEY: &str =
    "INSERT INTO tenancy.data_keys (tenant_id, version, wrapped, kek_version) \
     VALUES ($1, $2, $3, $4)";

/// The associated data a data key is wrapped with: its tenant and version.
fn dek_aad(tenant: TenantId, version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(b"tenancy-dek/v1");
    out.extend_from_slice(tenant.as_uuid().as_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out
}

fn to_u32(v: i32, what: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| Error::Malformed(format!("{what} {v} out of range")))
}

impl<P: KeyProvider> Keyring<P> {
    /// A keyring over `provider` with default cache bounds.
    pub fn new(provider: Arc<P>) -> Self {
        Self::with_options(provider, KeyringOptions::default())
    }

    /// A keyring over `provider` with the given cache bounds.
    pub fn with_options(provider: Arc<P>, opts: KeyringOptions) -> Self {
        Keyring {
            provider,
            keys: moka::sync::Cache::builder()
                .max_capacity(opts.max_keys)
                .time_to_live(opts.key_ttl)
                .build(),
            current: moka::sync::Cache::builder()
                .max_capacity(opts.max_keys)
                .time_to_live(opts.current_ttl)
                .build(),
        }
    }

    /// The key provider.
    pub fn provider(&self) -> &Arc<P> {
        &self.provider
    }

    /// Makes a new data key, wraps it under the tenant's current KEK and inserts it as
    /// `version` in `tx`.
    async fn insert_new_key(&self, tx: &mut TenantTx, version: u32) -> Result<(), Error> {
        let tenant = tx.tenant();
        let key = random_key()?;
        let wrapped = self
            .provider
            .wrap(tenant, None, &key, &dek_aad(tenant, version))
            .await?;
        tx.execute(
            INSERT_KEY,
            &[
                &tenant.as_uuid(),
                &(version as i32),
                &wrapped.bytes,
                &(wrapped.kek_version as i32),
            ],
        )
        .await?;
        Ok(())
    }

    /// Creates the tenant's KEK (if missing) and its first data key (if it has none), and
    /// returns its current data-key version. Idempotent.
    pub async fn create_keys(&self, pool: &TenantPool, tenant: TenantId) -> Result<u32, Error> {
        self.provider.create_kek(tenant).await?;
        let mut tx = pool.begin(tenant).await?;
        let version = match self.current_in(&mut tx).await? {
            Some(v) => v,
            None => {
                self.insert_new_key(&mut tx, 1).await?;
                1
            }
        };
        tx.commit().await?;
        Ok(version)
    }

    async fn current_in(&self, tx: &mut TenantTx) -> Result<Option<u32>, Error> {
        let row = tx
            .query_opt(SELECT_CURRENT, &[&tx.tenant().as_uuid()])
            .await?;
        row.map(|r| to_u32(r.get(0), "data-key version"))
            .transpose()
    }

    /// The tenant's current data-key version and key (cached for `current_ttl`).
    async fn current(&self, tx: &mut TenantTx) -> Result<(u32, Arc<DataKey>), Error> {
        let tenant = tx.tenant();
        if let Some(c) = self.current.get(&tenant.as_uuid()) {
            return Ok(c);
        }
        let v = self
            .current_in(tx)
            .await?
            .ok_or(Error::NoDataKeys(tenant))?;
        let key = self.data_key(tx, v).await?;
        self.current.insert(tenant.as_uuid(), (v, key.clone()));
        Ok((v, key))
    }

    /// The unwrapped data key `version` of the transaction's tenant (cached).
    async fn data_key(&self, tx: &mut TenantTx, version: u32) -> Result<Arc<DataKey>, Error> {
        let tenant = tx.tenant();
        if let Some(k) = self.keys.get(&(tenant.as_uuid(), version)) {
            return Ok(k);
        }
        let Ok(v) = i32::try_from(version) else {
            return Err(Error::NoDataKey { tenant, version });
        };
        let row = tx.query_opt(SELECT_KEY, &[&tenant.as_uuid(), &v]).await?;
        let Some(row) = row else {
            if self.provider.state(tenant).await? == KekState::Destroyed {
                return Err(Error::Destroyed(tenant));
            }
            return Err(Error::NoDataKey { tenant, version });
        };
        let wrapped = Wrapped {
            bytes: row.get(0),
            kek_version: to_u32(row.get(1), "KEK version")?,
        };
        let key = self
            .provider
            .unwrap(tenant, &wrapped, &dek_aad(tenant, version))
            .await?;
        let dk = Arc::new(DataKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.as_ref())),
        });
        self.keys.insert((tenant.as_uuid(), version), dk.clone());
        Ok(dk)
    }

    /// Seals `plaintext` for `field` of the transaction's tenant with its current data key.
    pub async fn seal(
        &self,
        tx: &mut TenantTx,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let (version, key) = self.current(tx).await?;
        seal_with(&key.cipher, version, tx.tenant(), field, plaintext)
    }

    /// Opens a value sealed for `field` of the transaction's tenant.
    pub async fn open(
        &self,
        tx: &mut TenantTx,
        field: &FieldRef<'_>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let version = sealed_version(sealed)?;
        let key = self.data_key(tx, version).await?;
        open_with(&key.cipher, tx.tenant(), field, sealed)
    }

    /// Seals with a data key `version` already loaded in `tx` (re-encryption).
    pub(crate) async fn seal_version(
        &self,
        tx: &mut TenantTx,
        version: u32,
        field: &FieldRef<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let key = self.data_key(tx, version).await?;
        seal_with(&key.cipher, version, tx.tenant(), field, plaintext)
    }

    /// The current data-key version as committed (no cache), inside `tx`.
    pub(crate) async fn committed_current(&self, tx: &mut TenantTx) -> Result<u32, Error> {
        let tenant = tx.tenant();
        self.current_in(tx).await?.ok_or(Error::NoDataKeys(tenant))
    }

    /// Adds a new data-key version and makes it the one new values are sealed with in this
    /// process (other processes within `current_ttl`); values sealed with older versions
    /// still open. Returns the new version.
    pub async fn rotate_data_key(&self, pool: &TenantPool, tenant: TenantId) -> Result<u32, Error> {
        let mut tx = pool.begin(tenant).await?;
        // Locks the newest key: a concurrent rotation waits, then fails on the version.
        let row = tx
            .query_opt(
                &format!("{SELECT_CURRENT} FOR UPDATE"),
                &[&tenant.as_uuid()],
            )
            .await?;
        let Some(row) = row else {
            return Err(Error::NoDataKeys(tenant));
        };
        let next = to_u32(row.get(0), "data-key version")?
            .checked_add(1)
            .filter(|v| *v <= i32::MAX as u32)
            .ok_or_else(|| Error::Invalid("no data-key version left".into()))?;
        self.insert_new_key(&mut tx, next).await?;
        tx.commit().await?;
        // The next seal in this process reads the new version.
        self.current.invalidate(&tenant.as_uuid());
        Ok(next)
    }

    /// Adds a KEK version in the provider and rewraps every data key of the tenant under
    /// it, in one transaction; sealed values are not touched. Returns the new KEK version
    /// and the number of data keys rewrapped. If the rewrap fails, nothing in the database
    /// changed and the old KEK versions still unwrap.
    pub async fn rotate_kek(
        &self,
        pool: &TenantPool,
        tenant: TenantId,
    ) -> Result<(u32, u64), Error> {
        let new = self.provider.rotate_kek(tenant).await?;
        let mut tx = pool.begin(tenant).await?;
        let rows = tx
            .query(
                "SELECT version, wrapped, kek_version FROM tenancy.data_keys \
                 WHERE tenant_id = $1 ORDER BY version FOR UPDATE",
                &[&tenant.as_uuid()],
            )
            .await?;
        let mut count = 0;
        for row in rows {
            let version = to_u32(row.get(0), "data-key version")?;
            let old = Wrapped {
                bytes: row.get(1),
                kek_version: to_u32(row.get(2), "KEK version")?,
            };
            let aad = dek_aad(tenant, version);
            let key = self.provider.unwrap(tenant, &old, &aad).await?;
            let rewrapped = self.provider.wrap(tenant, Some(new), &key, &aad).await?;
            tx.execute(
                "UPDATE tenancy.data_keys SET wrapped = $3, kek_version = $4 \
                 WHERE tenant_id = $1 AND version = $2",
                &[
                    &tenant.as_uuid(),
                    &(version as i32),
                    &rewrapped.bytes,
                    &(new as i32),
                ],
            )
            .await?;
            count += 1;
        }
        tx.commit().await?;
        Ok((new, count))
    }

    /// The tenant's KEK state and data keys.
    pub async fn status(&self, pool: &TenantPool, tenant: TenantId) -> Result<KeyStatus, Error> {
        let kek = self.provider.state(tenant).await?;
        let mut tx = pool.begin_read_only(tenant).await?;
        let rows = tx
            .query(
                "SELECT version, kek_version, created_at FROM tenancy.data_keys \
                 WHERE tenant_id = $1 ORDER BY version",
                &[&tenant.as_uuid()],
            )
            .await?;
        tx.commit().await?;
        let data_keys = rows
            .iter()
            .map(|r| {
                Ok(DataKeyInfo {
                    version: to_u32(r.get(0), "data-key version")?,
                    kek_version: to_u32(r.get(1), "KEK version")?,
                    created_at: r.get(2),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(KeyStatus { kek, data_keys })
    }

    /// Crypto-shreds the tenant: deletes its wrapped data keys and records a `keys.shred`
    /// audit event by `actor` in one transaction, destroys its KEKs in the provider, then
    /// commits. Every copy of its sealed values, including backups and dumps taken
    /// earlier, stops opening. Needs the audit table (`tenancy_audit::install`).
    ///
    /// Shred a tenant that no longer runs (suspended or deleted): another process's
    /// keyring keeps the tenant's cached keys for up to `key_ttl` (`current_ttl` for
    /// sealing), and values it seals meanwhile are lost with the keys.
    ///
    /// If the provider fails, the transaction rolls back and nothing changed. If the commit
    /// fails after the KEKs were destroyed, [`Error::ShredIncomplete`] says so; running the
    /// shred again finishes it (destroying is idempotent).
    pub async fn shred(
        &self,
        pool: &TenantPool,
        tenant: TenantId,
        actor: &Actor,
    ) -> Result<ShredReport, Error> {
        let mut tx = pool.begin(tenant).await?;
        let rows = tx
            .query(
                "DELETE FROM tenancy.data_keys WHERE tenant_id = $1 RETURNING version",
                &[&tenant.as_uuid()],
            )
            .await?;
        let versions = rows
            .iter()
            .map(|r| to_u32(r.get(0), "data-key version"))
            .collect::<Result<Vec<_>, _>>()?;
        let event = Event::new(actor.clone(), "keys.shred")
            .target(format!("tenant:{tenant}"))
            .after(serde_json::json!({ "data_keys_deleted": versions.len() }));
        tenancy_audit::record(&mut tx, &event).await?;
        if let Err(e) = self.provider.destroy(tenant).await {
            // The provider's error is the one to report; a failed rollback also leaves
            // nothing behind (the transaction ends with its connection).
            let _ = tx.rollback().await;
            return Err(e);
        }
        self.forget(tenant, &versions);
        tx.commit()
            .await
            .map_err(|source| Error::ShredIncomplete { tenant, source })?;
        Ok(ShredReport {
            data_keys_deleted: versions.len() as u64,
        })
    }

    /// Drops the tenant's cached keys.
    fn forget(&self, tenant: TenantId, versions: &[u32]) {
        self.current.invalidate(&tenant.as_uuid());
        for v in versions {
            self.keys.invalidate(&(tenant.as_uuid(), *v));
        }
    }
}
