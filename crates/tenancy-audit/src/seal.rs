//! The sealer: links recorded events into one hash chain per tenant.

use std::collections::HashMap;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::chain::{event_hash_in, StoredEvent, COLUMNS, GENESIS};
use crate::log::Log;
use crate::{db, Error};

/// What one [`seal`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Events sealed.
    pub sealed: u64,
    /// Tenants whose chain grew, with their new head position.
    pub heads: Vec<(Uuid, i64)>,
}

/// Seals every event that can be sealed now, in batches of `batch` events, each batch one
/// transaction. `owner` must be connected to the tenant database as the owner role.
///
/// Why no event is passed over or sealed twice:
///
/// - A batch runs under a transaction-level advisory lock, so batches of every sealer of
///   this database run one after another, and it updates only events whose chain position
///   is still empty (re-checked by the `UPDATE`): an event is sealed at most once. The
///   unique `(tenant_id, chain_pos)` key refuses two events at one position.
/// - It takes the events whose inserting transaction id is below its snapshot's `xmin`:
///   every transaction with a smaller id had ended when the snapshot was taken, so each
///   such event is either committed (and visible to this and every later statement) or
///   rolled back (and never will be). No event a running transaction may still commit is
///   looked at, so the set a batch seals and its order (insertion sequence) cannot change
///   while it works.
/// - There is no high-water mark: an event skipped because its transaction was running is
///   still unsealed at the next pass, when its id is below that pass's `xmin`, and is
///   sealed then (appended to its tenant's chain after what was sealed meanwhile). A chain
///   is therefore in insertion order except that an event whose transaction outlived a
///   pass follows events sealed in that pass.
/// - Recording takes no lock the sealer waits for, nor the other way round: the sealer
///   updates only rows of ended transactions.
pub async fn seal(owner: &mut Client, batch: i64) -> Result<SealReport, Error> {
    seal_log(owner, Log::Tenant, batch).await
}

/// [`seal`] for the events of `log` (`owner` connected to the database that holds them:
/// a tenant database, or the catalog for [`Log::Control`]).
pub async fn seal_log(owner: &mut Client, log: Log, batch: i64) -> Result<SealReport, Error> {
    if batch < 1 {
        return Err(Error::Invalid("the seal batch must be at least 1".into()));
    }
    let mut report = SealReport::default();
    let mut heads: HashMap<Uuid, i64> = HashMap::new();
    loop {
        let n = seal_batch(owner, log, batch, &mut heads).await?;
        report.sealed += n;
        if (n as i64) < batch {
            break;
        }
    }
    let mut heads: Vec<(Uuid, i64)> = heads.into_iter().collect();
    heads.sort();
    report.heads = heads;
    Ok(report)
}

async fn seal_batch(
    owner: &mut Client,
    log: Log,
    batch: i64,
    heads_out: &mut HashMap<Uuid, i64>,
) -> Result<u64, Error> {
    let tx = owner
        .transaction()
        .await
        .map_err(db("starting a seal transaction"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&log.seal_lock()],
    )
    .await
    .map_err(db("waiting for the seal lock"))?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM {} \
                  WHERE chain_pos IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot()) \
                  ORDER BY seq LIMIT $1",
                log.table()
            ),
            &[&batch],
        )
        .await
        .map_err(db("reading unsealed audit events"))?;
    if rows.is_empty() {
        tx.commit().await.map_err(db("ending a seal transaction"))?;
        return Ok(0);
    }
    let events = rows
        .iter()
        .map(StoredEvent::from_row)
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading unsealed audit events"))?;
    let mut tenants: Vec<Uuid> = events.iter().map(|e| e.tenant).collect();
    tenants.sort();
    tenants.dedup();
    let head_rows = tx
        .query(
            &format!(
                "SELECT DISTINCT ON (tenant_id) tenant_id, chain_pos, hash FROM {} \
                  WHERE tenant_id = ANY($1) AND chain_pos IS NOT NULL \
                  ORDER BY tenant_id, chain_pos DESC",
                log.table()
            ),
            &[&tenants],
        )
        .await
        .map_err(db("reading the chain heads"))?;
    let mut heads: HashMap<Uuid, (i64, [u8; 32])> = HashMap::new();
    for r in &head_rows {
        let hash: Vec<u8> = r.get(2);
        let hash: [u8; 32] = hash.try_into().map_err(|_| {
            Error::Format("a chain head's hash is not 32 bytes (the CHECK was removed)".into())
        })?;
        heads.insert(r.get(0), (r.get(1), hash));
    }
    let (mut t, mut s, mut p, mut prev, mut hash) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in &events {
        let head = heads.entry(e.tenant).or_insert((0, GENESIS));
        let pos = head.0 + 1;
        let h = event_hash_in(log, e, pos, &head.1);
        t.push(e.tenant);
        s.push(e.seq);
        p.push(pos);
        prev.push(head.1.to_vec());
        hash.push(h.to_vec());
        *head = (pos, h);
    }
    let n = tx
        .execute(
            &format!(
                "UPDATE {} e \
                SET chain_pos = u.pos, prev_hash = u.prev, hash = u.hash, sealed_at = now() \
               FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::bytea[], $5::bytea[]) \
                    AS u(tenant_id, seq, pos, prev, hash) \
              WHERE e.tenant_id = u.tenant_id AND e.seq = u.seq AND e.chain_pos IS NULL",
                log.table()
            ),
            &[&t, &s, &p, &prev, &hash],
        )
        .await
        .map_err(db("sealing audit events"))?;
    if n != events.len() as u64 {
        // Cannot happen under the lock; refuse rather than leave a gap.
        return Err(Error::Format(format!(
            "sealed {n} of {} audit events; nothing was committed",
            events.len()
        )));
    }
    tx.commit().await.map_err(db("committing sealed events"))?;
    for (tenant, (pos, _)) in heads {
        if tenants.binary_search(&tenant).is_ok() {
            heads_out.insert(tenant, pos);
        }
    }
    Ok(n)
}
