//! The control plane's own log: events of its changes to the catalog, recorded in the
//! catalog transaction of the change (`tenancy_catalog.audit_log`).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::log::PLATFORM;
use crate::{db, Error, Event};

/// Records `event` in the control plane's log, in the chain of `tenant` (the tenant the
/// change concerns; `None`: the platform chain). `catalog` is the catalog transaction of
/// the change (owner role), so the event commits exactly when the change does.
pub async fn record_control(
    catalog: &impl GenericClient,
    tenant: Option<Uuid>,
    event: &Event,
) -> Result<(), Error> {
    event.check()?;
    catalog
        .execute(
            "INSERT INTO tenancy_catalog.audit_log \
             (tenant_id, actor_kind, actor_subject, actor_key_id, action, target, before, after, \
              request_id, trace_id, client_addr, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            &[
                &tenant.unwrap_or(PLATFORM),
                &event.actor.kind.as_str(),
                &event.actor.subject,
                &event.actor.key_id,
                &event.action,
                &event.target,
                &event.before,
                &event.after,
                &event.request_id,
                &event.trace_id,
                &event.client_addr,
                &event.outcome.as_str(),
            ],
        )
        .await
        .map_err(db("recording a control-plane audit event"))?;
    Ok(())
}

/// A digest of a value for an event's `before`/`after`: `{"sha256": "<hex>"}` over its
/// compact JSON text (object keys sorted), so a log proves what a value was without
/// holding it.
pub fn digest(v: &Value) -> Value {
    let text = serde_json::to_vec(v).unwrap_or_default();
    json!({ "sha256": hex::encode(Sha256::digest(&text)) })
}
