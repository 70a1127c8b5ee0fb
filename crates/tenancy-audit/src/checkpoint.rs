//! Signed checkpoints: Ed25519 over (tenant, chain position, head hash, time), stored in
//! the catalog and published outside the database.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use uuid::Uuid;

use crate::log::Log;
use crate::{db, Error};

/// A signed statement that a tenant's chain had `head_hash` at `chain_pos`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log whose chain it covers (absent in files written before there were two:
    /// a tenant log).
    #[serde(default)]
    pub log: Log,
    /// The tenant.
    pub tenant: Uuid,
    /// The chain position it covers (1-based; every event up to it).
    pub chain_pos: i64,
    /// The hash of the event at `chain_pos` (hex).
    pub head_hash: String,
    /// When it was signed (µs since the Unix epoch).
    pub signed_at_us: i64,
    /// The Ed25519 public key that signed it (hex).
    pub public_key: String,
    /// The signature (hex).
    pub signature: String,
}

fn message(log: Log, tenant: Uuid, pos: i64, head: &[u8; 32], signed_at_us: i64) -> Vec<u8> {
    let mut m = Vec::with_capacity(104);
    m.extend_from_slice(log.checkpoint_domain());
    m.extend_from_slice(tenant.as_bytes());
    m.extend_from_slice(&pos.to_be_bytes());
    m.extend_from_slice(head);
    m.extend_from_slice(&signed_at_us.to_be_bytes());
    m
}

pub(crate) fn hash32(hex_str: &str, what: &str) -> Result<[u8; 32], String> {
    hex::decode(hex_str)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("{what} is not 32 bytes of hex"))
}

impl Checkpoint {
    /// Checks the signature against the key the checkpoint names.
    pub fn verify_signature(&self) -> Result<(), String> {
        let key = hash32(&self.public_key, "the checkpoint's public key")?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| "the checkpoint's public key is not an Ed25519 key".to_owned())?;
        let sig = hex::decode(&self.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or("the checkpoint's signature is not 64 bytes of hex")?;
        let head = hash32(&self.head_hash, "the checkpoint's head hash")?;
        key.verify_strict(
            &message(
                self.log,
                self.tenant,
                self.chain_pos,
                &head,
                self.signed_at_us,
            ),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "the checkpoint's signature does not verify".to_owned())
    }
}

/// The checkpoint signing key. The file holds the 32-byte Ed25519 seed in hex; keep it
/// outside the database (whoever holds it can sign checkpoints for a rewritten chain).
pub struct Signer {
    /// The key.
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Signer {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_seed(rand::random())
    }

    /// Reads the key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "reading the audit signing key",
            path: path.display().to_string(),
            source,
        })?;
        let seed = hash32(text.trim(), "the audit signing key")
            .map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
        Ok(Self::from_seed(seed))
    }

    /// Reads the key file, creating it (mode 0600) with a fresh key when it does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, Error> {
        if path.exists() {
            return Self::load(path);
        }
        let signer = Self::generate();
        let io = |source| Error::Io {
            what: "writing the audit signing key",
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(io)?;
        writeln!(f, "{}", hex::encode(signer.key.to_bytes())).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(signer)
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The public key in hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// A short name of the key: the first 16 hex digits of its public key (what the
    /// outbox's checkpoint webhook ids and signed reports carry).
    pub fn key_id(&self) -> String {
        key_id(&self.public_key_hex())
    }

    /// Signs a document: Ed25519 over [`DOCUMENT_DOMAIN`] followed by `bytes` (the
    /// caller's canonical serialization). The domain keeps a document's signature from
    /// ever being taken for a checkpoint's, whose messages start with another prefix.
    /// Returns the 64-byte signature in hex.
    pub fn sign_document(&self, bytes: &[u8]) -> String {
        let mut m = Vec::with_capacity(DOCUMENT_DOMAIN.len() + bytes.len());
        m.extend_from_slice(DOCUMENT_DOMAIN);
        m.extend_from_slice(bytes);
        hex::encode(self.key.sign(&m).to_bytes())
    }

    /// Signs a checkpoint of a tenant log.
    pub fn sign(
        &self,
        tenant: Uuid,
        chain_pos: i64,
        head: &[u8; 32],
        signed_at_us: i64,
    ) -> Checkpoint {
        self.sign_in(Log::Tenant, tenant, chain_pos, head, signed_at_us)
    }

    /// Signs a checkpoint of a chain of `log`.
    pub fn sign_in(
        &self,
        log: Log,
        tenant: Uuid,
        chain_pos: i64,
        head: &[u8; 32],
        signed_at_us: i64,
    ) -> Checkpoint {
        let sig = self
            .key
            .sign(&message(log, tenant, chain_pos, head, signed_at_us));
        Checkpoint {
            log,
            tenant,
            chain_pos,
            head_hash: hex::encode(head),
            signed_at_us,
            public_key: self.public_key_hex(),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

/// The prefix of every signed document message (see [`Signer::sign_document`]).
pub const DOCUMENT_DOMAIN: &[u8] = b"tenancy-signed-document-v1\0";

/// The key id of a public key given in hex: its first 16 hex digits.
pub fn key_id(public_key_hex: &str) -> String {
    public_key_hex.chars().take(16).collect()
}

/// Checks a signature made by [`Signer::sign_document`] over `bytes` with the Ed25519
/// public key `public_key` (hex), strictly (no malleable or small-order forms).
pub fn verify_document(public_key: &str, bytes: &[u8], signature: &str) -> Result<(), String> {
    let key = hash32(public_key, "the public key")?;
    let key = VerifyingKey::from_bytes(&key)
        .map_err(|_| "the public key is not an Ed25519 key".to_owned())?;
    let sig = hex::decode(signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or("the signature is not 64 bytes of hex")?;
    let mut m = Vec::with_capacity(DOCUMENT_DOMAIN.len() + bytes.len());
    m.extend_from_slice(DOCUMENT_DOMAIN);
    m.extend_from_slice(bytes);
    key.verify_strict(&m, &Signature::from_bytes(&sig))
        .map_err(|_| "the signature does not verify".to_owned())
}

pub(crate) fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

pub(crate) fn ts(us: i64) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map_err(|_| Error::Format(format!("checkpoint time {us} µs is out of range")))
}

/// Stores a checkpoint in the catalog (`tenancy_catalog.audit_checkpoints`, owner role).
/// Storing the same checkpoint twice is a no-op.
pub async fn store_checkpoint(catalog: &Client, c: &Checkpoint) -> Result<(), Error> {
    store_in(catalog, "tenancy_catalog.audit_checkpoints", c).await
}

/// Stores a signed checkpoint in `table` (checkpoints or anchors); a repeat is a no-op.
pub(crate) async fn store_in(
    catalog: &impl tokio_postgres::GenericClient,
    table: &str,
    c: &Checkpoint,
) -> Result<(), Error> {
    let head = hash32(&c.head_hash, "head hash").map_err(Error::Format)?;
    let key = hash32(&c.public_key, "public key").map_err(Error::Format)?;
    let sig =
        hex::decode(&c.signature).map_err(|_| Error::Format("signature is not hex".into()))?;
    catalog
        .execute(
            &format!(
                "INSERT INTO {table} \
                     (log, tenant_id, chain_pos, head_hash, signed_at, public_key, signature) \
                 VALUES ($7, $1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
            ),
            &[
                &c.tenant,
                &c.chain_pos,
                &head.as_slice(),
                &ts(c.signed_at_us)?,
                &key.as_slice(),
                &sig,
                &c.log.as_str(),
            ],
        )
        .await
        .map_err(db("storing an audit checkpoint"))?;
    Ok(())
}

/// The checkpoints of tenant logs stored in the catalog, for one tenant or all, by
/// tenant and position.
pub async fn load_checkpoints(
    catalog: &Client,
    tenant: Option<Uuid>,
) -> Result<Vec<Checkpoint>, Error> {
    load_in(
        catalog,
        "tenancy_catalog.audit_checkpoints",
        Log::Tenant,
        tenant,
    )
    .await
}

/// The checkpoints of `log` stored in the catalog, for one tenant or all.
pub async fn load_log_checkpoints(
    catalog: &impl tokio_postgres::GenericClient,
    log: Log,
    tenant: Option<Uuid>,
) -> Result<Vec<Checkpoint>, Error> {
    load_in(catalog, "tenancy_catalog.audit_checkpoints", log, tenant).await
}

/// The purge anchors of `log` stored in the catalog, for one tenant or all.
pub async fn load_anchors(
    catalog: &impl tokio_postgres::GenericClient,
    log: Log,
    tenant: Option<Uuid>,
) -> Result<Vec<Checkpoint>, Error> {
    load_in(catalog, "tenancy_catalog.audit_anchors", log, tenant).await
}

/// The signed rows of `table` (checkpoints or anchors) of `log`, for one tenant or all,
/// by tenant and position.
pub(crate) async fn load_in(
    catalog: &impl tokio_postgres::GenericClient,
    table: &str,
    log: Log,
    tenant: Option<Uuid>,
) -> Result<Vec<Checkpoint>, Error> {
    let rows = catalog
        .query(
            &format!(
                "SELECT tenant_id, chain_pos, head_hash, signed_at, public_key, signature \
                   FROM {table} WHERE log = $2 AND ($1::uuid IS NULL OR tenant_id = $1) \
                  ORDER BY tenant_id, chain_pos"
            ),
            &[&tenant, &log.as_str()],
        )
        .await
        .map_err(db("reading audit checkpoints"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let at: time::OffsetDateTime = r.get(3);
            Checkpoint {
                log,
                tenant: r.get(0),
                chain_pos: r.get(1),
                head_hash: hex::encode(r.get::<_, Vec<u8>>(2)),
                signed_at_us: (at.unix_timestamp_nanos() / 1000) as i64,
                public_key: hex::encode(r.get::<_, Vec<u8>>(4)),
                signature: hex::encode(r.get::<_, Vec<u8>>(5)),
            }
        })
        .collect())
}

/// Appends checkpoints to a JSON-lines file (one object a line), created if missing.
pub fn append_jsonl(path: &Path, checkpoints: &[Checkpoint]) -> Result<(), Error> {
    let io = |source| Error::Io {
        what: "appending audit checkpoints to",
        path: path.display().to_string(),
        source,
    };
    let mut out = String::new();
    for c in checkpoints {
        out.push_str(&serde_json::to_string(c).map_err(|e| Error::Format(e.to_string()))?);
        out.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    f.write_all(out.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads a JSON-lines checkpoint file (what [`append_jsonl`] writes).
pub fn read_jsonl(path: &Path) -> Result<Vec<Checkpoint>, Error> {
    let f = std::fs::File::open(path).map_err(|source| Error::Io {
        what: "reading audit checkpoints from",
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            what: "reading audit checkpoints from",
            path: path.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| {
            Error::Format(format!(
                "{} line {}: not a checkpoint: {e}",
                path.display(),
                i + 1
            ))
        })?);
    }
    Ok(out)
}

/// Signs a checkpoint for every tenant whose chain head moved past its latest checkpoint
/// by this key, stores them in the catalog and, with `publish`, appends them to that
/// JSON-lines file. `tenant_db` is the tenant database (owner role), `catalog` the catalog
/// (owner role); they may be one connection. Returns the new checkpoints.
pub async fn checkpoint(
    tenant_db: &Client,
    catalog: &Client,
    signer: &Signer,
    publish: Option<&Path>,
) -> Result<Vec<Checkpoint>, Error> {
    checkpoint_log(Log::Tenant, tenant_db, catalog, signer, publish).await
}

/// [`checkpoint`] for the chains of `log` held in `source` (a tenant database, or the
/// catalog for [`Log::Control`]).
pub async fn checkpoint_log(
    log: Log,
    source: &Client,
    catalog: &Client,
    signer: &Signer,
    publish: Option<&Path>,
) -> Result<Vec<Checkpoint>, Error> {
    let out = sign_heads(log, source, catalog, signer).await?;
    if let Some(path) = publish {
        // Published first: a checkpoint in the file but not in the catalog is harmless,
        // the next run signs a newer one.
        append_jsonl(path, &out)?;
    }
    for c in &out {
        store_checkpoint(catalog, c).await?;
    }
    Ok(out)
}

/// Signs (without storing) a checkpoint for every chain of `log` in `source` whose head
/// moved past its latest checkpoint by this key in `catalog`; store them with
/// [`store_checkpoint_in`], e.g. in the transaction that also queues their publication.
pub async fn sign_heads(
    log: Log,
    source: &Client,
    catalog: &impl tokio_postgres::GenericClient,
    signer: &Signer,
) -> Result<Vec<Checkpoint>, Error> {
    let heads = source
        .query(
            &format!(
                "SELECT DISTINCT ON (tenant_id) tenant_id, chain_pos, hash FROM {} \
                  WHERE chain_pos IS NOT NULL ORDER BY tenant_id, chain_pos DESC",
                log.table()
            ),
            &[],
        )
        .await
        .map_err(db("reading the chain heads"))?;
    let key = signer.public_key();
    let done: HashMap<Uuid, i64> = catalog
        .query(
            "SELECT tenant_id, max(chain_pos) FROM tenancy_catalog.audit_checkpoints \
              WHERE public_key = $1 AND log = $2 GROUP BY tenant_id",
            &[&key.as_slice(), &log.as_str()],
        )
        .await
        .map_err(db("reading the latest audit checkpoints"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let at = now_us();
    let mut out = Vec::new();
    for r in &heads {
        let (tenant, pos): (Uuid, i64) = (r.get(0), r.get(1));
        if done.get(&tenant).is_some_and(|&d| d >= pos) {
            continue;
        }
        let hash: Vec<u8> = r.get(2);
        let hash = <[u8; 32]>::try_from(hash).map_err(|_| {
            Error::Format(format!("tenant {tenant}: the head hash is not 32 bytes"))
        })?;
        out.push(signer.sign_in(log, tenant, pos, &hash, at));
    }
    Ok(out)
}

/// [`store_checkpoint`] on any client or transaction.
pub async fn store_checkpoint_in(
    catalog: &impl tokio_postgres::GenericClient,
    c: &Checkpoint,
) -> Result<(), Error> {
    store_in(catalog, "tenancy_catalog.audit_checkpoints", c).await
}
