//! Key-encryption keys (KEKs): the [`KeyProvider`] trait and its default, file-backed
//! implementation [`LocalKeyProvider`].
//!
//! A provider holds, per tenant, a list of KEK versions (1, 2, …) and wraps and unwraps
//! data keys under them; the KEKs themselves never leave it. The trait is shaped so that a
//! cloud KMS or HashiCorp Vault Transit fits it directly:
//!
//! - one KMS key (AWS KMS key, Google Cloud KMS key, Azure Key Vault key) or one Transit
//!   key (`transit/keys/tenant-<id>`) per tenant; [`KeyProvider::create_kek`] creates it;
//! - a KEK version is the KMS key version (Cloud KMS `cryptoKeyVersions/N`, Transit's
//!   `key_version`); [`KeyProvider::rotate_kek`] is the service's rotate call;
//! - [`KeyProvider::wrap`] / [`KeyProvider::unwrap`] are its `Encrypt` / `Decrypt` (Transit
//!   `encrypt` / `decrypt` with `context` or `associated_data` = the `aad` argument);
//! - [`KeyProvider::destroy`] schedules the deletion of the tenant's key (AWS
//!   `ScheduleKeyDeletion`, Cloud KMS `destroy` on every version, Transit
//!   `deletion_allowed` then `DELETE`) and remembers that it did, so that
//!   [`KeyProvider::state`] reports [`KekState::Destroyed`] from then on.
//!
//! Until a provider's scheduled deletion completes, its key can still be restored by the
//! operator of that KMS: crypto-shredding is complete only when the deletion is.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tenancy_core::TenantId;
use zeroize::Zeroizing;

use crate::Error;

/// A 32-byte secret key, wiped from memory when dropped.
pub type SecretKey = Zeroizing<[u8; 32]>;

/// Where a tenant's key-encryption keys stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KekState {
    /// The tenant has no KEK yet.
    Missing,
    /// The tenant's KEKs exist; `current` is the version new wraps use.
    Live {
        /// The newest version.
        current: u32,
    },
    /// The tenant's KEKs were destroyed: nothing wrapped under them opens again.
    Destroyed,
}

/// A data key wrapped under one of a tenant's KEK versions.
#[derive(Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The KEK version it is wrapped under.
    pub kek_version: u32,
    /// The provider's opaque wrapped bytes.
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wrapped")
            .field("kek_version", &self.kek_version)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Keeps each tenant's key-encryption keys and wraps data keys under them.
///
/// `aad` is associated data the wrapped key is bound to (the keyring passes the tenant and
/// the data-key version): unwrapping with other `aad` fails.
pub trait KeyProvider: Send + Sync + 'static {
    /// Creates the tenant's KEK (version 1) if it has none and returns its current version.
    /// Fails with [`Error::Destroyed`] when the tenant's KEKs were destroyed.
    fn create_kek(&self, tenant: TenantId) -> impl Future<Output = Result<u32, Error>> + Send;

    /// Where the tenant's KEKs stand.
    fn state(&self, tenant: TenantId) -> impl Future<Output = Result<KekState, Error>> + Send;

    /// Wraps `key` under the tenant's KEK `kek_version`, or its current one when `None`.
    fn wrap(
        &self,
        tenant: TenantId,
        kek_version: Option<u32>,
        key: &[u8; 32],
        aad: &[u8],
    ) -> impl Future<Output = Result<Wrapped, Error>> + Send;

    /// Unwraps a key wrapped by [`KeyProvider::wrap`] with the same tenant and `aad`.
    fn unwrap(
        &self,
        tenant: TenantId,
        wrapped: &Wrapped,
        aad: &[u8],
    ) -> impl Future<Output = Result<SecretKey, Error>> + Send;

    /// Adds a new KEK version and makes it current; older versions still unwrap.
    fn rotate_kek(&self, tenant: TenantId) -> impl Future<Output = Result<u32, Error>> + Send;

    /// Destroys every KEK of the tenant. Idempotent; afterwards [`KeyProvider::state`] is
    /// [`KekState::Destroyed`] and nothing wrapped under them unwraps.
    fn destroy(&self, tenant: TenantId) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), Error> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| Error::Random(e.to_string()))
}

/// Appends a random 96-bit nonce and the AES-256-GCM encryption of `msg` under it (with
/// associated data `aad`) to `out`.
fn encrypt_into(
    cipher: &Aes256Gcm,
    out: &mut Vec<u8>,
    msg: &[u8],
    aad: &[u8],
) -> Result<(), Error> {
    let mut nonce = [0u8; NONCE];
    random(&mut nonce)?;
    out.extend_from_slice(&nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| Error::Crypto("AES-256-GCM encryption failed".into()))?;
    out.extend_from_slice(&ct);
    Ok(())
}

/// A fresh random 32-byte key.
pub(crate) fn random_key() -> Result<SecretKey, Error> {
    let mut key = Zeroizing::new([0u8; 32]);
    random(key.as_mut())?;
    Ok(key)
}

const MAGIC: &[u8; 6] = b"TNKEK\x01";
const LIVE: u8 = 0;
const DESTROYED: u8 = 1;
/// Magic, tenant, state, count.
const HEADER: usize = 6 + 16 + 1 + 4;
const ENTRY: usize = 4 + 32;
const NONCE: usize = 12;
const TAG: usize = 16;
/// More versions than anyone rotates to; bounds what a corrupt count makes us read.
const MAX_VERSIONS: usize = 100_000;

/// One tenant's key file, decoded.
struct KeyFile {
    destroyed: bool,
    /// Version `i + 1` at index `i`.
    keys: Vec<SecretKey>,
}

/// The default [`KeyProvider`]: a directory (mode 0700) with one file per tenant,
/// `<tenant id>.kek` (mode 0600), holding its KEK versions (random 32-byte AES-256 keys).
///
/// The file starts with a magic and the tenant id and ends with a SHA-256 of its content,
/// so a truncated, altered or other tenant's file is refused by name. Every change writes a
/// new file next to it and renames it over the old one, so a crash leaves the old or the
/// new file, never a mix. Destroying writes a tombstone naming the tenant, without keys,
/// in its place: nothing unwraps any more and the tenant's keys are not silently created
/// again. Changes are serialized inside one process; run rotations and destructions of a
/// directory from one process at a time.
///
/// Data keys are wrapped with AES-256-GCM (random 96-bit nonce), the associated data
/// binding the tenant, the KEK version and the caller's `aad`.
///
/// Removing a file from a disk does not guarantee its blocks are unreadable (journaling,
/// copy-on-write file systems, SSD remapping, backups of the directory): keep the key
/// directory on storage that is not backed up with the databases, or use a KMS.
#[derive(Debug)]
pub struct LocalKeyProvider {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl LocalKeyProvider {
    /// Opens the key directory, creating it (mode 0700) if missing. Refuses a directory
    /// that group or others may access.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let io = |what| {
            let path = dir.display().to_string();
            move |source| Error::Io {
                action: what,
                file: path,
                source,
            }
        };
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io("creating the key directory"))?;
        }
        let meta = fs::metadata(&dir).map_err(io("reading the key directory"))?;
        if !meta.is_dir() {
            return Err(Error::KeyFile {
                path: dir.display().to_string(),
                problem: "is not a directory".into(),
            });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFile {
                path: dir.display().to_string(),
                problem: format!(
                    "key directory has mode {mode:o}; group and others must have no access (chmod 700)"
                ),
            });
        }
        Ok(LocalKeyProvider {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, tenant: TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.kek"))
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock leaves no partial file (writes are renames).
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the tenant's file; `None` when there is none.
    fn read(&self, tenant: TenantId) -> Result<Option<KeyFile>, Error> {
        let path = self.path(tenant);
        let shown = path.display().to_string();
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    action: "opening key file",
                    file: shown,
                    source,
                })
            }
        };
        let io = |what| {
            let path = shown.clone();
            move |source| Error::Io {
                action: what,
                file: path,
                source,
            }
        };
        let meta = file.metadata().map_err(io("reading key file"))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(corrupt(
                &path,
                format!("has mode {mode:o}; group and others must have no access (chmod 600)"),
            ));
        }
        let max = (HEADER + MAX_VERSIONS * ENTRY + 32) as u64;
        if meta.len() > max {
            return Err(corrupt(
                &path,
                format!("is {} bytes, too large for a key file", meta.len()),
            ));
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
        file.read_to_end(&mut buf).map_err(io("reading key file"))?;
        decode(&path, tenant, &buf).map(Some)
    }

    /// Writes the tenant's file atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    fn write(&self, tenant: TenantId, kf: &KeyFile) -> Result<(), Error> {
        let path = self.path(tenant);
        let mut suffix = [0u8; 8];
        random(&mut suffix)?;
        let tmp = self.dir.join(format!(
            ".{tenant}.kek.{:016x}.tmp",
            u64::from_le_bytes(suffix)
        ));
        let buf = encode(tenant, kf);
        let tmp_shown = tmp.display().to_string();
        let io = |what, path: &str| {
            let path = path.to_owned();
            move |source| Error::Io {
                action: what,
                file: path,
                source,
            }
        };
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating key file", &tmp_shown))?;
            f.write_all(&buf)
                .map_err(io("writing key file", &tmp_shown))?;
            f.sync_all().map_err(io("syncing key file", &tmp_shown))?;
            fs::rename(&tmp, &path).map_err(io("replacing key file", &tmp_shown))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        let dir_shown = self.dir.display().to_string();
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing key directory", &dir_shown))
    }

    fn live_keys(&self, tenant: TenantId) -> Result<KeyFile, Error> {
        match self.read(tenant)? {
            None => Err(Error::NoKek(tenant)),
            Some(kf) if kf.destroyed => Err(Error::Destroyed(tenant)),
            Some(kf) => Ok(kf),
        }
    }
}

fn corrupt(path: &Path, problem: String) -> Error {
    Error::KeyFile {
        path: path.display().to_string(),
        problem,
    }
}

fn encode(tenant: TenantId, kf: &KeyFile) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(HEADER + kf.keys.len() * ENTRY + 32));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(tenant.as_uuid().as_bytes());
    buf.push(if kf.destroyed { DESTROYED } else { LIVE });
    buf.extend_from_slice(&(kf.keys.len() as u32).to_be_bytes());
    for (i, key) in kf.keys.iter().enumerate() {
        buf.extend_from_slice(&(i as u32 + 1).to_be_bytes());
        buf.extend_from_slice(key.as_ref());
    }
    let sum = Sha256::digest(&buf[..]);
    buf.extend_from_slice(&sum);
    buf
}

fn decode(path: &Path, tenant: TenantId, buf: &[u8]) -> Result<KeyFile, Error> {
    if buf.len() < HEADER + 32 || &buf[..6] != MAGIC {
        return Err(corrupt(
            path,
            "is not a tenancy key file (bad magic or too short)".into(),
        ));
    }
    let (body, sum) = buf.split_at(buf.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(corrupt(path, "is corrupt (checksum mismatch)".into()));
    }
    let owner = uuid::Uuid::from_slice(&body[6..22]).map_err(|e| corrupt(path, e.to_string()))?;
    if owner != tenant.as_uuid() {
        return Err(corrupt(
            path,
            format!("belongs to tenant {owner}, not {tenant} (a foreign key file)"),
        ));
    }
    let destroyed = match body[22] {
        LIVE => false,
        DESTROYED => true,
        other => return Err(corrupt(path, format!("has unknown state {other}"))),
    };
    let mut count = [0u8; 4];
    count.copy_from_slice(&body[23..27]);
    let count = u32::from_be_bytes(count) as usize;
    if count > MAX_VERSIONS || body.len() != HEADER + count * ENTRY {
        return Err(corrupt(
            path,
            format!("is corrupt ({count} versions do not match its length)"),
        ));
    }
    if destroyed != (count == 0) {
        return Err(corrupt(
            path,
            "is corrupt (state and key count disagree)".into(),
        ));
    }
    let mut keys = Vec::with_capacity(count);
    for (i, entry) in body[HEADER..].chunks_exact(ENTRY).enumerate() {
        let mut version = [0u8; 4];
        version.copy_from_slice(&entry[..4]);
        if u32::from_be_bytes(version) as usize != i + 1 {
            return Err(corrupt(
                path,
                format!("is corrupt (version {} out of order)", i + 1),
            ));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&entry[4..]);
        keys.push(key);
    }
    Ok(KeyFile { destroyed, keys })
}

/// The associated data of a wrap: who and which KEK version, then the caller's binding.
fn wrap_aad(tenant: TenantId, kek_version: u32, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + aad.len());
    out.extend_from_slice(b"tenancy-kek/v1");
    out.extend_from_slice(tenant.as_uuid().as_bytes());
    out.extend_from_slice(&kek_version.to_be_bytes());
    out.extend_from_slice(aad);
    out
}

fn kek_at(kf: &KeyFile, tenant: TenantId, version: u32) -> Result<&SecretKey, Error> {
    version
        .checked_sub(1)
        .and_then(|i| kf.keys.get(i as usize))
        .ok_or(Error::NoKekVersion { tenant, version })
}

impl KeyProvider for LocalKeyProvider {
    async fn create_kek(&self, tenant: TenantId) -> Result<u32, Error> {
        let _g = self.guard();
        match self.read(tenant)? {
            Some(kf) if kf.destroyed => Err(Error::Destroyed(tenant)),
            Some(kf) => Ok(kf.keys.len() as u32),
            None => {
                let kf = KeyFile {
                    destroyed: false,
                    keys: vec![random_key()?],
                };
                self.write(tenant, &kf)?;
                Ok(1)
            }
        }
    }

    async fn state(&self, tenant: TenantId) -> Result<KekState, Error> {
        Ok(match self.read(tenant)? {
            None => KekState::Missing,
            Some(kf) if kf.destroyed => KekState::Destroyed,
            Some(kf) => KekState::Live {
                current: kf.keys.len() as u32,
            },
        })
    }

    async fn wrap(
        &self,
        tenant: TenantId,
        kek_version: Option<u32>,
        key: &[u8; 32],
        aad: &[u8],
    ) -> Result<Wrapped, Error> {
        let kf = self.live_keys(tenant)?;
        let version = kek_version.unwrap_or(kf.keys.len() as u32);
        let kek = kek_at(&kf, tenant, version)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.as_ref()));
        let mut bytes = Vec::with_capacity(NONCE + 32 + TAG);
        let aad = wrap_aad(tenant, version, aad);
        encrypt_into(&cipher, &mut bytes, key, &aad)?;
        Ok(Wrapped {
            kek_version: version,
            bytes,
        })
    }

    async fn unwrap(
        &self,
        tenant: TenantId,
        wrapped: &Wrapped,
        aad: &[u8],
    ) -> Result<SecretKey, Error> {
        let kf = self.live_keys(tenant)?;
        let version = wrapped.kek_version;
        let kek = kek_at(&kf, tenant, version)?;
        let failed = || Error::Unwrap {
            tenant,
            kek_version: version,
        };
        if wrapped.bytes.len() != NONCE + 32 + TAG {
            return Err(failed());
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(kek.as_ref()));
        let (nonce, ct) = wrapped.bytes.split_at(NONCE);
        let aad = wrap_aad(tenant, version, aad);
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
                .map_err(|_| failed())?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        Ok(key)
    }

    async fn rotate_kek(&self, tenant: TenantId) -> Result<u32, Error> {
        let _g = self.guard();
        let mut kf = self.live_keys(tenant)?;
        kf.keys.push(random_key()?);
        self.write(tenant, &kf)?;
        Ok(kf.keys.len() as u32)
    }

    async fn destroy(&self, tenant: TenantId) -> Result<(), Error> {
        let _g = self.guard();
        let tombstone = KeyFile {
            destroyed: true,
            keys: Vec::new(),
        };
        self.write(tenant, &tombstone)
    }
}
