//! The stored form of an event and its hash: SHA-256 over a canonical, length-prefixed
//! encoding of every field and the previous event's hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::log::Log;

/// The previous hash of a chain's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// An event as stored, with the values exactly as they are hashed: `before`, `after` are
/// PostgreSQL's `jsonb` text (canonical for a given value), `client_addr` the `inet` text,
/// `occurred_at_us` microseconds since the Unix epoch, hashes in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The tenant.
    pub tenant: Uuid,
    /// Insertion sequence.
    pub seq: i64,
    /// When it was recorded (µs since the Unix epoch).
    pub occurred_at_us: i64,
    /// `user`, `api_key`, `admin`, `worker` or `system`.
    pub actor_kind: String,
    /// Who.
    pub actor_subject: Option<String>,
    /// The API key used.
    pub actor_key_id: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// State before (jsonb text).
    pub before: Option<String>,
    /// State after (jsonb text).
    pub after: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Client address (inet text).
    pub client_addr: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Position in the tenant's chain; `None` until sealed.
    pub chain_pos: Option<i64>,
    /// The previous event's hash (hex).
    pub prev_hash: Option<String>,
    /// This event's hash (hex).
    pub hash: Option<String>,
}

fn put_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

fn put_opt(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            put_str(h, s);
        }
    }
}

/// The hash of `e` at chain position `pos` after an event whose hash is `prev`. Every
/// variable field is written with a presence byte and a 64-bit length, so no two
/// different events encode alike.
pub fn event_hash(e: &StoredEvent, pos: i64, prev: &[u8; 32]) -> [u8; 32] {
    event_hash_in(Log::Tenant, e, pos, prev)
}

/// [`event_hash`] for an event of `log` (each log hashes under its own domain).
pub fn event_hash_in(log: Log, e: &StoredEvent, pos: i64, prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    put_str(&mut h, log.event_domain());
    h.update(e.tenant.as_bytes());
    h.update(pos.to_be_bytes());
    h.update(e.seq.to_be_bytes());
    h.update(e.occurred_at_us.to_be_bytes());
    put_str(&mut h, &e.actor_kind);
    put_opt(&mut h, e.actor_subject.as_deref());
    put_opt(&mut h, e.actor_key_id.as_deref());
    put_str(&mut h, &e.action);
    put_opt(&mut h, e.target.as_deref());
    put_opt(&mut h, e.before.as_deref());
    put_opt(&mut h, e.after.as_deref());
    put_opt(&mut h, e.request_id.as_deref());
    put_opt(&mut h, e.trace_id.as_deref());
    put_opt(&mut h, e.client_addr.as_deref());
    put_str(&mut h, &e.outcome);
    h.update(prev);
    h.finalize().into()
}

/// The columns [`StoredEvent::from_row`] reads, in order.
pub(crate) const COLUMNS: &str = "tenant_id, seq, occurred_at, actor_kind, actor_subject, \
    actor_key_id, action, target, before::text, after::text, request_id, trace_id, \
    client_addr::text, outcome, chain_pos, prev_hash, hash";

impl StoredEvent {
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        let at: time::OffsetDateTime = r.try_get(2)?;
        let prev: Option<Vec<u8>> = r.try_get(15)?;
        let hash: Option<Vec<u8>> = r.try_get(16)?;
        Ok(StoredEvent {
            tenant: r.try_get(0)?,
            seq: r.try_get(1)?,
            occurred_at_us: (at.unix_timestamp_nanos() / 1000) as i64,
            actor_kind: r.try_get(3)?,
            actor_subject: r.try_get(4)?,
            actor_key_id: r.try_get(5)?,
            action: r.try_get(6)?,
            target: r.try_get(7)?,
            before: r.try_get(8)?,
            after: r.try_get(9)?,
            request_id: r.try_get(10)?,
            trace_id: r.try_get(11)?,
            client_addr: r.try_get(12)?,
            outcome: r.try_get(13)?,
            chain_pos: r.try_get(14)?,
            prev_hash: prev.map(hex::encode),
            hash: hash.map(hex::encode),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> StoredEvent {
        StoredEvent {
            tenant: Uuid::nil(),
            seq: 1,
            occurred_at_us: 0,
            actor_kind: "user".into(),
            actor_subject: Some("u".into()),
            actor_key_id: None,
            action: "a".into(),
            target: None,
            before: None,
            after: None,
            request_id: None,
            trace_id: None,
            client_addr: None,
            outcome: "success".into(),
            chain_pos: None,
            prev_hash: None,
            hash: None,
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = event();
        let mut b = event();
        a.actor_subject = Some("ab".into());
        a.actor_key_id = Some("c".into());
        b.actor_subject = Some("a".into());
        b.actor_key_id = Some("bc".into());
        assert_ne!(event_hash(&a, 1, &GENESIS), event_hash(&b, 1, &GENESIS));
        let mut c = event();
        c.target = Some(String::new());
        assert_ne!(
            event_hash(&event(), 1, &GENESIS),
            event_hash(&c, 1, &GENESIS)
        );
    }

    #[test]
    fn logs_hash_apart() {
        let e = event();
        assert_ne!(
            event_hash_in(Log::Tenant, &e, 1, &GENESIS),
            event_hash_in(Log::Control, &e, 1, &GENESIS)
        );
    }

    #[test]
    fn position_and_previous_hash_are_committed() {
        let e = event();
        assert_ne!(event_hash(&e, 1, &GENESIS), event_hash(&e, 2, &GENESIS));
        assert_ne!(event_hash(&e, 1, &GENESIS), event_hash(&e, 1, &[1; 32]));
    }
}
