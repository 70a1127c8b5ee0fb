//! The control plane's own log: events of its changes to the catalog, recorded in the
//! catalog transaction of the change (`tenancy_catalog.audit_log`).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::log::{Log, PLATFORM};
use crate::{db, Error, Event, Insert};

/// Records `event` in the control plane's log, in the chain of `tenant` (the tenant the
/// change concerns; `None`: the platform chain). `catalog` is the catalog transaction of
/// the change (owner role), so the event commits exactly when the change does.
pub async fn record_control(
    catalog: &impl GenericClient,
    tenant: Option<Uuid>,
    event: &Event,
) -> Result<(), Error> {
    let insert = Insert::new(Log::Control, tenant.unwrap_or(PLATFORM), event)?;
    let (params, n) = insert.params();
    catalog
        .execute(&insert.sql(), &params[..n])
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
