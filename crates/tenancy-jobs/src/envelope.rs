//! Job envelopes: what is signed, and how a job is put in the queue.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenancy_core::TenantId;
use tenancy_sdk::TenantTx;
use uuid::Uuid;

use crate::TraceParent;

/// Signs and checks job envelopes. Keep the key secret, like the context key.
#[derive(Clone)]
pub struct JobSigner {
    /// HMAC-SHA256 key.
    key: [u8; 32],
}

impl std::fmt::Debug for JobSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobSigner").finish_non_exhaustive()
    }
}

/// A job as stored in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnvelope {
    /// Job id.
    pub id: Uuid,
    /// The tenant it runs as.
    pub tenant: TenantId,
    /// Handler name.
    pub kind: String,
    /// JSON text (references, not copies of tenant data).
    pub payload: String,
    /// Microseconds since the Unix epoch.
    pub issued_at: i64,
    /// Hex HMAC; `None` if unsigned (refused by workers).
    pub signature: Option<String>,
    /// The trace the job continues (not signed: it names a trace, not a tenant).
    pub traceparent: Option<TraceParent>,
}

fn message(tenant: TenantId, id: Uuid, kind: &str, issued_at: i64, payload: &str) -> String {
    format!("tenancy-job-v1\n{tenant}\n{id}\n{kind}\n{issued_at}\n{payload}")
}

impl JobSigner {
    /// A signer with this key.
    pub fn new(key: [u8; 32]) -> Self {
        JobSigner { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
        }
    }

    /// Builds a signed envelope (without trace context).
    pub fn seal(&self, tenant: TenantId, kind: &str, payload: &serde_json::Value) -> JobEnvelope {
        let id = Uuid::new_v4();
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let payload = payload.to_string();
        let mut mac = self.mac();
        mac.update(message(tenant, id, kind, issued_at, &payload).as_bytes());
        JobEnvelope {
            id,
            tenant,
            kind: kind.to_owned(),
            payload,
            issued_at,
            signature: Some(hex::encode(mac.finalize().into_bytes())),
            traceparent: None,
        }
    }

    /// Whether the envelope's signature is present and verifies.
    pub fn verify(&self, env: &JobEnvelope) -> bool {
        let Some(sig) = env.signature.as_deref().and_then(|s| hex::decode(s).ok()) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(message(env.tenant, env.id, &env.kind, env.issued_at, &env.payload).as_bytes());
        mac.verify_slice(&sig).is_ok()
    }
}

/// Enqueues a job for the transaction's tenant on `queue`, inside the transaction. The
/// job keeps the current task's trace context ([`TraceParent::current`]: the request's,
/// when the request layer received a valid `traceparent`, or the running job's).
pub async fn enqueue(
    tx: &mut TenantTx,
    signer: &JobSigner,
    queue: &str,
    kind: &str,
    payload: &serde_json::Value,
) -> Result<Uuid, tenancy_sdk::Error> {
    enqueue_traced(tx, signer, queue, kind, payload, TraceParent::current()).await
}

/// [`enqueue`] with the trace context given explicitly (`None`: the job starts no trace
/// of its own), for work outside a request.
pub async fn enqueue_traced(
    tx: &mut TenantTx,
    signer: &JobSigner,
    queue: &str,
    kind: &str,
    payload: &serde_json::Value,
    traceparent: Option<TraceParent>,
) -> Result<Uuid, tenancy_sdk::Error> {
    let env = signer.seal(tx.tenant(), kind, payload);
    let traceparent = traceparent.map(|t| t.to_string());
    tx.execute(
        "INSERT INTO tenancy.jobs (tenant_id, id, queue, kind, payload, issued_at, signature, traceparent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &env.tenant.as_uuid(),
            &env.id,
            &queue,
            &env.kind,
            &env.payload,
            &env.issued_at,
            &env.signature,
            &traceparent,
        ],
    )
    .await?;
    Ok(env.id)
}
