//! The stored form of an event and its hash: SHA-256 over a canonical, length-prefixed
//! encoding of every field and the previous event's hash.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::log::Log;

/// The previous hash of a chain's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// What an event records, with the values exactly as they are hashed: `before` and
/// `after` are PostgreSQL's `jsonb` text (canonical for a given value), `client_addr` the
/// `inet` text. A [`StoredEvent`] carries it with the event's place in the chain; the
/// control plane's audit pages serve it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recorded {
    /// The actor's kind: `user`, `api_key`, `admin`, `worker` or `system`.
    pub actor_kind: String,
    /// The actor (user id, `admin:<principal>`, worker name), if recorded.
    pub actor_subject: Option<String>,
    /// The API key the actor used, if any.
    pub actor_key_id: Option<String>,
    /// The action, e.g. `invoice.create` or `tenant.suspend`.
    pub action: String,
    /// What it acted on, e.g. `invoice:42`.
    pub target: Option<String>,
    /// The state before (or its digest) as PostgreSQL prints the jsonb value.
    pub before: Option<String>,
    /// The state after (or its digest), printed the same way.
    pub after: Option<String>,
    /// The request that made the change.
    pub request_id: Option<String>,
    /// The W3C trace it ran in.
    pub trace_id: Option<String>,
    /// The client address as PostgreSQL prints an inet (`203.0.113.7/32`).
    pub client_addr: Option<String>,
    /// How it ended: `success`, `failure` or `denied`.
    pub outcome: String,
}

/// An event as stored: what it records and where it is, with `occurred_at_us` in
/// microseconds since the Unix epoch and hashes in lowercase hex. Its JSON form is flat
/// (the fields of [`Recorded`] beside the others).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The tenant.
    pub tenant: Uuid,
    /// Insertion sequence.
    pub seq: i64,
    /// When it was recorded (µs since the Unix epoch).
    pub occurred_at_us: i64,
    /// What it records.
    #[serde(flatten)]
    pub recorded: Recorded,
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
    let r = &e.recorded;
    put_str(&mut h, &r.actor_kind);
    put_opt(&mut h, r.actor_subject.as_deref());
    put_opt(&mut h, r.actor_key_id.as_deref());
    put_str(&mut h, &r.action);
    put_opt(&mut h, r.target.as_deref());
    put_opt(&mut h, r.before.as_deref());
    put_opt(&mut h, r.after.as_deref());
    put_opt(&mut h, r.request_id.as_deref());
    put_opt(&mut h, r.trace_id.as_deref());
    put_opt(&mut h, r.client_addr.as_deref());
    put_str(&mut h, &r.outcome);
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
            recorded: Recorded {
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
            },
            chain_pos: r.try_get(14)?,
            prev_hash: prev.map(hex::encode),
            hash: hash.map(hex::encode),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unsealed event with every optional field absent (serde reads a missing
    /// `Option` as `None`).
    fn event() -> StoredEvent {
        serde_json::from_value(serde_json::json!({
            "tenant": Uuid::nil(), "seq": 1, "occurred_at_us": 0, "actor_kind": "user",
            "actor_subject": "u", "action": "a", "outcome": "success",
        }))
        .expect("an event")
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = event();
        let mut b = event();
        a.recorded.actor_subject = Some("ab".into());
        a.recorded.actor_key_id = Some("c".into());
        b.recorded.actor_subject = Some("a".into());
        b.recorded.actor_key_id = Some("bc".into());
        assert_ne!(event_hash(&a, 1, &GENESIS), event_hash(&b, 1, &GENESIS));
        let mut c = event();
        c.recorded.target = Some(String::new());
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
