//! Registration with receivers, lifecycle events through the transactional outbox, and
//! the outbox's delivery.

use std::collections::HashSet;

use serde_json::json;
use tenancy_catalog::{self as catalog, Delivery, OutboxMessage, Tenant, Workflow};
use tenancy_core::TenantId;
use tokio_postgres::{Client, Transaction};

use super::{now_rfc3339, tenant_json, Provisioner, StepCtx};
use crate::webhook;
use crate::Error;

impl Provisioner {
    /// Registers the tenant with every registration receiver it is not yet registered
    /// with. The webhook id is derived from tenant and receiver, so a retried registration
    /// carries the same id and the receiver deduplicates it.
    pub(super) async fn register(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
        ctx: &mut StepCtx,
    ) -> Result<(), Error> {
        let done: HashSet<String> = catalog::registrations_in(tx, tenant.id)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        for (receiver, key) in &self.inner.reg_keys {
            if done.contains(&receiver.name) {
                continue;
            }
            let webhook_id = format!("msg_reg_{}_{}", tenant.id.as_uuid().simple(), receiver.name);
            let body = serde_json::to_vec(&json!({
                "type": "tenant.registration",
                "timestamp": now_rfc3339(),
                "data": tenant_json(tenant),
            }))
            .unwrap_or_default();
            let attempt = webhook::deliver(
                &receiver.url,
                key,
                &webhook_id,
                &body,
                self.inner.cfg.webhook_timeout,
            )
            .await;
            ctx.deliveries.push(Delivery {
                webhook_id: webhook_id.clone(),
                receiver: receiver.name.clone(),
                tenant_id: Some(tenant.id),
                event_type: "tenant.registration".into(),
                attempt: wf.attempts + 1,
                http_status: attempt.status.map(i32::from),
                error: attempt.error.clone(),
                ms: attempt.ms,
            });
            match attempt.error {
                None => {
                    catalog::record_registration(tx, tenant.id, &receiver.name, &webhook_id)
                        .await?;
                    ctx.registered.push((receiver.name.clone(), webhook_id));
                }
                Some(detail) => {
                    return Err(Error::Registration {
                        receiver: receiver.name.clone(),
                        detail,
                    })
                }
            }
        }
        Ok(())
    }

    /// Queues a deregistration for every receiver the tenant is registered with and
    /// forgets the registrations, in the step's transaction.
    pub(super) async fn deregister(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
    ) -> Result<(), Error> {
        for (receiver, _) in catalog::registrations_in(tx, tenant.id).await? {
            if let Some((r, _)) = self.inner.reg_keys.iter().find(|(r, _)| r.name == receiver) {
                catalog::enqueue_outbox(
                    tx,
                    &OutboxMessage {
                        webhook_id: format!(
                            "msg_dereg_{}_{}",
                            tenant.id.as_uuid().simple(),
                            receiver
                        ),
                        receiver: receiver.clone(),
                        url: r.url.clone(),
                        tenant_id: Some(tenant.id),
                        event_type: "tenant.deregistration".into(),
                        payload: json!({
                            "type": "tenant.deregistration",
                            "timestamp": now_rfc3339(),
                            "data": tenant_json(tenant),
                            "workflow": wf.id.to_string(),
                        }),
                        attempts: 0,
                    },
                )
                .await?;
            }
            catalog::remove_registration(tx, tenant.id, &receiver).await?;
        }
        Ok(())
    }

    /// Queues a lifecycle event for every event receiver (transactional outbox).
    pub(super) async fn emit(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        step: &str,
        tenant: &Tenant,
        event_type: &str,
    ) -> Result<(), Error> {
        self.queue_event(
            tx,
            &format!("{}_{}", wf.id.simple(), step),
            Some(tenant.id),
            event_type,
            tenant_json(tenant),
        )
        .await
    }

    /// Queues an event for every event receiver in `tx` (the transactional outbox): the
    /// outbox delivery signs it (Standard Webhooks), sends it and retries it like the
    /// lifecycle events. `id` names the event: each receiver's message has the
    /// `webhook-id` `msg_<id>_<receiver>`, the same across retries, and queueing an id
    /// again is a no-op. The body is `{"type", "timestamp", "data"}`; `tenant` (which
    /// must exist in the catalog) files the deliveries under it.
    pub async fn queue_event(
        &self,
        tx: &Transaction<'_>,
        id: &str,
        tenant: Option<TenantId>,
        event_type: &str,
        data: serde_json::Value,
    ) -> Result<(), Error> {
        for (r, _) in &self.inner.event_keys {
            catalog::enqueue_outbox(
                tx,
                &OutboxMessage {
                    webhook_id: format!("msg_{id}_{}", r.name),
                    receiver: r.name.clone(),
                    url: r.url.clone(),
                    tenant_id: tenant,
                    event_type: event_type.into(),
                    payload: json!({
                        "type": event_type,
                        "timestamp": now_rfc3339(),
                        "data": data,
                    }),
                    attempts: 0,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Whether any event receiver is configured (an event queued without one goes
    /// nowhere).
    pub fn has_event_receivers(&self) -> bool {
        !self.inner.event_keys.is_empty()
    }

    /// Delivers the next due outbox message. Returns whether there was one.
    pub async fn deliver_outbox_once(&self, client: &mut Client) -> Result<bool, Error> {
        let tx = client
            .transaction()
            .await
            .map_err(Error::db("starting a catalog transaction"))?;
        let Some(m) = catalog::claim_outbox(&tx).await? else {
            return Ok(false);
        };
        let key = self
            .inner
            .event_keys
            .iter()
            .chain(self.inner.reg_keys.iter())
            .find(|(r, _)| r.name == m.receiver)
            .map(|(_, k)| k.clone());
        let attempt_no = m.attempts + 1;
        let (a, retry_in) = match key {
            None => (
                webhook::Attempt {
                    status: None,
                    error: Some("receiver is no longer configured".into()),
                    ms: 0.0,
                },
                None,
            ),
            Some(key) => {
                let body = serde_json::to_vec(&m.payload).unwrap_or_default();
                let a = webhook::deliver(
                    &m.url,
                    &key,
                    &m.webhook_id,
                    &body,
                    self.inner.cfg.webhook_timeout,
                )
                .await;
                let retry = (!a.ok() && attempt_no < self.inner.cfg.outbox_max_attempts)
                    .then(|| self.inner.cfg.backoff(m.attempts));
                (a, retry)
            }
        };
        let delivered = a.ok();
        let delivery = Delivery {
            webhook_id: m.webhook_id.clone(),
            receiver: m.receiver.clone(),
            tenant_id: m.tenant_id,
            event_type: m.event_type.clone(),
            attempt: attempt_no,
            http_status: a.status.map(i32::from),
            error: a.error,
            ms: a.ms,
        };
        catalog::record_delivery(&tx, &delivery).await?;
        catalog::finish_outbox(&tx, &m.webhook_id, delivered, retry_in).await?;
        tx.commit()
            .await
            .map_err(Error::db("recording a webhook delivery"))?;
        let outcome = match (delivered, retry_in) {
            (true, _) => "delivered",
            (false, Some(_)) => "retry",
            (false, None) => "gave_up",
        };
        metrics::counter!("tenancy_webhook_deliveries_total", "outcome" => outcome).increment(1);
        Ok(true)
    }
}
