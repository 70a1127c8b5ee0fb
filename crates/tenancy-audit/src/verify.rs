//! Verification: recompute each tenant's chain and compare it with the signed checkpoints.

use std::collections::BTreeSet;
use std::fmt;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::chain::{event_hash_in, StoredEvent, COLUMNS, GENESIS};
use crate::checkpoint::{hash32, load_in, Checkpoint};
use crate::log::Log;
use crate::{db, Error};

/// Which public keys a checkpoint may be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Only these keys (hex): what an operator who holds the key, or its public half,
    /// passes. A checkpoint signed by another key counts as forged.
    Keys(Vec<String>),
    /// Any key a checkpoint names: the signature is checked, but someone who can write
    /// the checkpoints could sign with a key of their own.
    AnyKey,
}

/// What kind of tampering was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// An event's fields no longer match its hash.
    Modified,
    /// A chain position is missing: an event was deleted (or unsealed).
    Deleted,
    /// An event does not follow the one before it: one was inserted, or events reordered.
    InsertedOrReordered,
    /// The chain ends before a signed checkpoint's position.
    Truncated,
    /// The chain differs from what a signed checkpoint committed to (rewritten).
    CheckpointMismatch,
    /// A checkpoint's signature does not verify or is by an untrusted key.
    BadCheckpoint,
}

impl TamperKind {
    /// A short name.
    pub fn as_str(&self) -> &'static str {
        match self {
            TamperKind::Modified => "modified",
            TamperKind::Deleted => "deleted",
            TamperKind::InsertedOrReordered => "inserted-or-reordered",
            TamperKind::Truncated => "truncated",
            TamperKind::CheckpointMismatch => "checkpoint-mismatch",
            TamperKind::BadCheckpoint => "bad-checkpoint",
        }
    }
}

/// The first bad event of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampering {
    /// What was found.
    pub kind: TamperKind,
    /// The chain position where it shows.
    pub chain_pos: Option<i64>,
    /// The insertion sequence of the event there, when there is one.
    pub seq: Option<i64>,
    /// A sentence for people.
    pub detail: String,
}

impl fmt::Display for Tampering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// The result of verifying one tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The tenant.
    pub tenant: Uuid,
    /// Sealed events checked.
    pub sealed: u64,
    /// Events not sealed yet (not covered by the chain).
    pub unsealed: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The head position of the chain that verified.
    pub head: i64,
    /// The purge anchor the chain was verified from (0: from its first event).
    pub base: i64,
    /// The first problem, if any.
    pub tampering: Option<Tampering>,
}

impl Verdict {
    /// Whether nothing was found.
    pub fn intact(&self) -> bool {
        self.tampering.is_none()
    }
}

fn at(pos: i64, e: &StoredEvent) -> String {
    format!("chain position {pos} (seq {})", e.seq)
}

/// Verifies one tenant's chain: `events` are that tenant's events in any order (sealed
/// and not), `checkpoints` its checkpoints from any source.
pub fn verify_chain(
    tenant: Uuid,
    events: &[StoredEvent],
    checkpoints: &[Checkpoint],
    trust: &Trust,
) -> Verdict {
    verify_chain_in(Log::Tenant, tenant, events, checkpoints, &[], trust)
}

fn trusted(trust: &Trust, key: &str) -> bool {
    match trust {
        Trust::Keys(keys) => keys.iter().any(|k| k.eq_ignore_ascii_case(key)),
        Trust::AnyKey => true,
    }
}

/// [`verify_chain`] for a chain of `log`, whose head may have been purged: `anchors` are
/// the signed checkpoints stored at purge boundaries. When the chain's first remaining
/// event is at position `n + 1` and a valid, trusted anchor commits to position `n`, the
/// chain is verified from that anchor's hash; without one, the missing head is reported
/// as deleted. Anchors are also checked like checkpoints wherever their position remains.
pub fn verify_chain_in(
    log: Log,
    tenant: Uuid,
    events: &[StoredEvent],
    checkpoints: &[Checkpoint],
    anchors: &[Checkpoint],
    trust: &Trust,
) -> Verdict {
    let mine = |c: &&Checkpoint| c.tenant == tenant && c.log == log;
    let anchors: Vec<&Checkpoint> = anchors.iter().filter(mine).collect();
    let mut sealed: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.tenant == tenant && e.chain_pos.is_some())
        .collect();
    sealed.sort_by_key(|e| (e.chain_pos, e.seq));
    let unsealed = events
        .iter()
        .filter(|e| e.tenant == tenant && e.chain_pos.is_none())
        .count() as u64;
    let mut verdict = Verdict {
        tenant,
        sealed: sealed.len() as u64,
        unsealed,
        checkpoints: 0,
        head: 0,
        base: 0,
        tampering: None,
    };
    let mut found: Option<(i64, Tampering)> = None;
    // hashes[i] is the verified hash at position i + 1.
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(sealed.len());
    let mut prev = GENESIS;
    let mut prev_seq: Option<i64> = None;
    // The purge boundary the remaining chain starts after (0: none, the chain starts at
    // its first event).
    let first = sealed.first().and_then(|e| e.chain_pos).unwrap_or(1);
    let mut base = 0i64;
    if first > 1 {
        if let Some(a) = anchors.iter().find(|a| {
            a.chain_pos == first - 1
                && a.verify_signature().is_ok()
                && trusted(trust, &a.public_key)
        }) {
            if let Ok(h) = hash32(&a.head_hash, "") {
                base = a.chain_pos;
                prev = h;
            }
        }
    }
    verdict.base = base;
    for e in &sealed {
        let expected = base + hashes.len() as i64 + 1;
        let pos = e.chain_pos.unwrap_or_default();
        let bad = |kind, detail: String| {
            Some((
                pos.min(expected),
                Tampering {
                    kind,
                    chain_pos: Some(pos.min(expected)),
                    seq: Some(e.seq),
                    detail,
                },
            ))
        };
        if pos > expected {
            found = bad(
                TamperKind::Deleted,
                format!(
                    "chain position {expected} is missing: the chain jumps to {} after {}",
                    at(pos, e),
                    prev_seq.map_or("its start".to_owned(), |s| format!("seq {s}"))
                ),
            );
            break;
        }
        if pos < expected {
            found = bad(
                TamperKind::InsertedOrReordered,
                format!(
                    "{} holds a second event at an already used position",
                    at(pos, e)
                ),
            );
            break;
        }
        let stored_prev = e.prev_hash.as_deref().and_then(|h| hash32(h, "").ok());
        if stored_prev != Some(prev) {
            found = bad(
                TamperKind::InsertedOrReordered,
                format!(
                    "the event at {} does not follow the one before it ({}): its previous hash differs; an event was inserted or the events were reordered",
                    at(pos, e),
                    prev_seq.map_or(
                        if base > 0 { format!("the purge anchor at position {base}") } else { "the chain's start".to_owned() },
                        |s| format!("seq {s}")
                    )
                ),
            );
            break;
        }
        let h = event_hash_in(log, e, pos, &prev);
        let stored = e.hash.as_deref().and_then(|h| hash32(h, "").ok());
        if stored != Some(h) {
            found = bad(
                TamperKind::Modified,
                format!(
                    "the event at {} does not match its hash: it was modified",
                    at(pos, e)
                ),
            );
            break;
        }
        hashes.push(h);
        prev = h;
        prev_seq = Some(e.seq);
    }
    verdict.head = base + hashes.len() as i64;
    let chain_end = sealed
        .iter()
        .filter_map(|e| e.chain_pos)
        .max()
        .unwrap_or(base);
    let mut cps: Vec<&Checkpoint> = checkpoints.iter().filter(mine).collect();
    cps.extend(anchors.iter().copied());
    cps.sort_by_key(|c| c.chain_pos);
    for c in cps {
        verdict.checkpoints += 1;
        let problem = |kind, pos: i64, seq, detail: String| {
            (
                pos,
                Tampering {
                    kind,
                    chain_pos: Some(pos),
                    seq,
                    detail,
                },
            )
        };
        let when =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(c.signed_at_us) * 1000)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| format!("{} µs", c.signed_at_us));
        let candidate = if let Err(e) = c.verify_signature() {
            Some(problem(
                TamperKind::BadCheckpoint,
                c.chain_pos,
                None,
                format!(
                    "the checkpoint at chain position {} signed {when}: {e}",
                    c.chain_pos
                ),
            ))
        } else if !trusted(trust, &c.public_key) {
            Some(problem(TamperKind::BadCheckpoint, c.chain_pos, None, format!("the checkpoint at chain position {} signed {when} is signed by key {}, which is not trusted", c.chain_pos, c.public_key)))
        } else if c.chain_pos > chain_end && found.is_none() {
            Some(problem(TamperKind::Truncated, chain_end + 1, None, format!("the chain ends at position {chain_end}, but the checkpoint signed {when} covers position {}: events {}..={} were removed", c.chain_pos, chain_end + 1, c.chain_pos)))
        } else if c.chain_pos > base && ((c.chain_pos - base) as usize) <= hashes.len() {
            let i = (c.chain_pos - base) as usize - 1;
            let (h, e) = (hashes[i], sealed[i]);
            (hash32(&c.head_hash, "").ok() != Some(h)).then(|| problem(
                TamperKind::CheckpointMismatch,
                c.chain_pos,
                Some(e.seq),
                format!("the chain up to {} differs from what the checkpoint signed {when} committed to: it was rewritten at or before that position", at(c.chain_pos, e)),
            ))
        } else {
            None
        };
        if let Some((pos, t)) = candidate {
            if found.as_ref().is_none_or(|(p, _)| pos < *p) {
                found = Some((pos, t));
            }
        }
    }
    verdict.tampering = found.map(|(_, t)| t);
    verdict
}

/// One tenant's events as stored, in chain order (unsealed ones last).
pub async fn load_events(owner: &Client, tenant: Uuid) -> Result<Vec<StoredEvent>, Error> {
    load_log_events(owner, Log::Tenant, tenant).await
}

/// [`load_events`] for a chain of `log`. Sealed and unsealed events are read apart, each
/// through its own partial index (the tenant log's table has no index on its tenant
/// alone).
pub async fn load_log_events(
    owner: &impl tokio_postgres::GenericClient,
    log: Log,
    tenant: Uuid,
) -> Result<Vec<StoredEvent>, Error> {
    let rows = owner
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {table} WHERE tenant_id = $1 AND chain_pos IS NOT NULL \
                 UNION ALL \
                 SELECT {COLUMNS} FROM {table} WHERE tenant_id = $1 AND chain_pos IS NULL \
                 ORDER BY chain_pos NULLS LAST, seq",
                table = log.table()
            ),
            &[&tenant],
        )
        .await
        .map_err(db("reading audit events"))?;
    rows.iter()
        .map(StoredEvent::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading audit events"))
}

/// One page of a chain of `log`: `tenant`'s sealed events after chain position `after`,
/// in chain order, at most `limit`; and how many of its events are not sealed yet.
pub async fn load_page(
    source: &impl tokio_postgres::GenericClient,
    log: Log,
    tenant: Uuid,
    after: i64,
    limit: i64,
) -> Result<(Vec<StoredEvent>, i64), Error> {
    let rows = source
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND chain_pos > $2 \
                  ORDER BY chain_pos LIMIT $3",
                log.table()
            ),
            &[&tenant, &after, &limit],
        )
        .await
        .map_err(db("reading audit events"))?;
    let events = rows
        .iter()
        .map(StoredEvent::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading audit events"))?;
    let unsealed: i64 = source
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE tenant_id = $1 AND chain_pos IS NULL",
                log.table()
            ),
            &[&tenant],
        )
        .await
        .map_err(db("counting unsealed audit events"))?
        .get(0);
    Ok((events, unsealed))
}

/// Verifies the chains in a tenant database (`owner`: owner role), for one tenant or every
/// tenant that has events or checkpoints. Checkpoints come from the catalog (when
/// `catalog` is given) and from `extra` (e.g. a published file).
pub async fn verify_database(
    owner: &Client,
    catalog: Option<&Client>,
    tenant: Option<Uuid>,
    extra: &[Checkpoint],
    trust: &Trust,
) -> Result<Vec<Verdict>, Error> {
    verify_log(owner, catalog, Log::Tenant, tenant, extra, trust).await
}

/// [`verify_database`] for the chains of `log` (`owner` on the database that holds them).
/// Checkpoints and purge anchors come from the catalog, when given.
pub async fn verify_log(
    owner: &Client,
    catalog: Option<&Client>,
    log: Log,
    tenant: Option<Uuid>,
    extra: &[Checkpoint],
    trust: &Trust,
) -> Result<Vec<Verdict>, Error> {
    let (mut checkpoints, anchors) = match catalog {
        Some(c) => (
            load_in(c, "tenancy_catalog.audit_checkpoints", log, tenant).await?,
            load_in(c, "tenancy_catalog.audit_anchors", log, tenant).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    checkpoints.extend(
        extra
            .iter()
            .filter(|c| tenant.is_none_or(|t| t == c.tenant))
            .cloned(),
    );
    let mut tenants: BTreeSet<Uuid> = checkpoints.iter().map(|c| c.tenant).collect();
    match tenant {
        Some(t) => {
            tenants.insert(t);
        }
        None => {
            let rows = owner
                .query(
                    &format!("SELECT DISTINCT tenant_id FROM {}", log.table()),
                    &[],
                )
                .await
                .map_err(db("listing tenants with audit events"))?;
            tenants.extend(rows.iter().map(|r| r.get::<_, Uuid>(0)));
        }
    }
    let mut out = Vec::new();
    for t in tenants {
        let events = load_log_events(owner, log, t).await?;
        out.push(verify_chain_in(
            log,
            t,
            &events,
            &checkpoints,
            &anchors,
            trust,
        ));
    }
    Ok(out)
}
