//! Purging a tenant log's old events behind a signed anchor.

use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::checkpoint::{hash32, load_in, now_us, store_in, Checkpoint, Signer};
use crate::control::record_control;
use crate::log::Log;
use crate::verify::{load_log_events, verify_chain_in, Trust};
use crate::{db, Actor, Error, Event};

/// What one [`purge`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The signed anchor at the purge boundary (events up to its position were removed).
    pub anchor: Checkpoint,
    /// Events removed.
    pub removed: u64,
}

/// Purges `tenant`'s sealed events that occurred before `before` from its tenant log
/// (`owner`: the tenant database, owner role), as one prefix of the chain: up to the
/// last position before the first newer event, and never the newest sealed event (the
/// chain goes on from it). Nothing is purged when that prefix is empty.
///
/// Order, so that a crash anywhere leaves a log that verifies: the prefix is verified
/// first (a tampered log is never anchored: the purge fails); then, in one catalog
/// transaction, the signed anchor (`tenancy_catalog.audit_anchors`) and the
/// `audit.purge` event of the control plane's platform chain by `actor` are stored; only
/// then are the events deleted (the append-only trigger lets a delete through only for
/// that tenant, up to that position, named in a transaction-local setting). Events still
/// there behind an anchor verify as before; once they are gone, verification starts the
/// chain from the anchor's hash.
///
/// `proceed_if` is a catalog query taking the tenant id as `$1` and returning one boolean
/// (e.g. "no legal hold", reading the tenant row `FOR SHARE`); it runs first in the
/// anchor's transaction, and nothing happens unless it returns true. A change it reads
/// that commits later (a hold set meanwhile) waits for that transaction.
pub async fn purge(
    owner: &mut Client,
    catalog: &mut Client,
    tenant: Uuid,
    before: time::OffsetDateTime,
    signer: &Signer,
    actor: &Actor,
    proceed_if: Option<&str>,
) -> Result<Option<Purged>, Error> {
    let log = Log::Tenant;
    let row = owner
        .query_one(
            "WITH s AS (SELECT chain_pos, occurred_at FROM tenancy.audit_events \
                         WHERE tenant_id = $1 AND chain_pos IS NOT NULL), \
                  stop AS (SELECT coalesce(min(chain_pos) FILTER (WHERE occurred_at >= $2), max(chain_pos)) AS p FROM s) \
             SELECT max(s.chain_pos), min(s.chain_pos) FROM s, stop WHERE s.chain_pos < stop.p",
            &[&tenant, &before],
        )
        .await
        .map_err(db("finding the purge boundary"))?;
    let (Some(upto), Some(_)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) else {
        return Ok(None);
    };
    let anchors = load_in(
        &*catalog,
        "tenancy_catalog.audit_anchors",
        log,
        Some(tenant),
    )
    .await?;
    let events = load_log_events(&*owner, log, tenant).await?;
    let verdict = verify_chain_in(
        log,
        tenant,
        &events,
        &[],
        &anchors,
        &Trust::Keys(vec![signer.public_key_hex()]),
    );
    if let Some(t) = verdict.tampering {
        return Err(Error::Format(format!(
            "tenant {tenant}: the audit log does not verify, nothing was purged: {t}"
        )));
    }
    let Some(at) = events.iter().find(|e| e.chain_pos == Some(upto)) else {
        return Ok(None);
    };
    let head = at
        .hash
        .as_deref()
        .and_then(|h| hash32(h, "").ok())
        .ok_or_else(|| Error::Format(format!("tenant {tenant}: no hash at position {upto}")))?;
    let removed = events
        .iter()
        .filter(|e| e.chain_pos.is_some_and(|p| p <= upto))
        .count() as u64;
    let anchor = signer.sign_in(log, tenant, upto, &head, now_us());
    let tx = catalog
        .transaction()
        .await
        .map_err(db("starting the purge's catalog transaction"))?;
    if let Some(q) = proceed_if {
        let go: Option<bool> = tx
            .query_opt(q, &[&tenant])
            .await
            .map_err(db("checking whether the purge may proceed"))?
            .and_then(|r| r.get(0));
        if go != Some(true) {
            return Ok(None);
        }
    }
    store_in(&tx, "tenancy_catalog.audit_anchors", &anchor).await?;
    let event = Event::new(actor.clone(), "audit.purge")
        .target(format!("tenant:{tenant}"))
        .after(json!({
            "log": log.as_str(),
            "tenant": tenant,
            "up_to_position": upto,
            "head_hash": anchor.head_hash,
            "events": removed,
            "before": before.unix_timestamp(),
        }));
    record_control(&tx, None, &event).await?;
    tx.commit()
        .await
        .map_err(db("committing the purge anchor"))?;
    let tx = owner
        .transaction()
        .await
        .map_err(db("starting the purge"))?;
    tx.execute(
        "SELECT set_config('tenancy.audit_purge', $1, true)",
        &[&format!("{tenant}:{upto}")],
    )
    .await
    .map_err(db("naming the purge"))?;
    let n = tx
        .execute(
            "DELETE FROM tenancy.audit_events WHERE tenant_id = $1 AND chain_pos <= $2",
            &[&tenant, &upto],
        )
        .await
        .map_err(db("purging audit events"))?;
    tx.commit().await.map_err(db("committing the purge"))?;
    Ok(Some(Purged { anchor, removed: n }))
}
