//! Billing events (Stripe's format) → workflows, idempotent on the event id: the event is
//! recorded and its workflow queued in one catalog transaction.

use serde_json::{json, Value};
use tenancy_catalog::{NewTenant, WorkflowKind};
use tenancy_core::{Placement, TenantId};

use crate::api::BillingOutcome;
use crate::error::ApiError;
use crate::AppState;

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Applies one verified event.
pub(crate) async fn handle(state: &AppState, event: &Value) -> Result<BillingOutcome, ApiError> {
    let id = s(event, &["id"]).unwrap_or_default().to_owned();
    let kind = s(event, &["type"]).unwrap_or_default().to_owned();
    if id.is_empty() || kind.is_empty() {
        return Err(ApiError::field(
            "id",
            "a Stripe event needs an id and a type",
        ));
    }
    let obj = event
        .pointer("/data/object")
        .cloned()
        .unwrap_or(Value::Null);
    let customer = s(&obj, &["customer"]).map(str::to_owned);
    let mut conn = state.catalog().await?;
    // Resolve the tenant before the transaction (read-only).
    let tenant: Option<TenantId> = match &customer {
        Some(c) => match tenancy_catalog::tenant_by_billing_customer(&conn, c).await? {
            Some(t) => Some(t.id),
            None => tenancy_catalog::tenant_by_pending_billing_customer(&conn, c).await?,
        },
        None => None,
    };
    let mut tx = conn
        .transaction()
        .await
        .map_err(|e| ApiError::internal("starting a transaction", &e))?;
    if !tenancy_catalog::record_billing_event(&tx, &id, &kind).await? {
        return Ok(BillingOutcome {
            received: true,
            duplicate: true,
            outcome: "already processed".into(),
            workflow_id: None,
        });
    }
    let actor = format!("stripe:{id}");
    let queued: Result<(TenantId, tenancy_catalog::Workflow, &str), String> = match kind.as_str() {
        "checkout.session.completed" => {
            let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
            let signup = state.signup();
            let parsed = (|| -> Result<NewTenant, String> {
                Ok(NewTenant {
                    id: None,
                    slug: s(&meta, &["slug"])
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e: tenancy_core::IdError| e.to_string())?,
                    display_name: s(&meta, &["display_name"])
                        .or(s(&meta, &["slug"]))
                        .unwrap_or_default()
                        .to_owned(),
                    plan: s(&meta, &["plan"])
                        .unwrap_or(&signup.plan)
                        .parse()
                        .map_err(|e: tenancy_core::IdError| e.to_string())?,
                    region: s(&meta, &["region"])
                        .unwrap_or(&signup.region)
                        .parse()
                        .map_err(|e: tenancy_core::IdError| e.to_string())?,
                    placement: s(&meta, &["placement"])
                        .unwrap_or(&signup.placement)
                        .parse::<Placement>()
                        .map_err(|e| e.to_string())?,
                })
            })();
            match parsed {
                Err(e) => Err(e),
                Ok(new) => {
                    let input = json!({"billing_customer": customer, "billing_subscription": s(&obj, &["subscription"])});
                    // A savepoint keeps the event recorded even if the tenant is refused.
                    let sp = tx
                        .savepoint("provision")
                        .await
                        .map_err(|e| ApiError::internal("savepoint", &e))?;
                    match tenancy_catalog::start_provisioning(&sp, &new, &input, &actor).await {
                        Ok((t, wf)) => {
                            sp.commit()
                                .await
                                .map_err(|e| ApiError::internal("savepoint", &e))?;
                            Ok((t.id, wf, "provision"))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            }
        }
        "customer.subscription.updated"
        | "invoice.payment_failed"
        | "customer.subscription.deleted" => match tenant {
            None => Err(format!("no tenant is linked to customer {customer:?}")),
            Some(t) => {
                let (wk, input, label) = match kind.as_str() {
                    "invoice.payment_failed" => (
                        WorkflowKind::Suspend,
                        json!({"reason": "non-payment"}),
                        "suspend",
                    ),
                    "customer.subscription.deleted" => (
                        WorkflowKind::Delete,
                        json!({"reason": "subscription cancelled"}),
                        "delete",
                    ),
                    _ => {
                        let plan = s(&obj, &["metadata", "plan"]).or_else(|| {
                            obj.pointer("/items/data/0/price/lookup_key")
                                .and_then(Value::as_str)
                        });
                        match plan {
                            Some(p) => {
                                (WorkflowKind::ChangePlan, json!({"plan": p}), "change_plan")
                            }
                            None => (WorkflowKind::ChangePlan, Value::Null, "none"),
                        }
                    }
                };
                if input.is_null() {
                    Err(
                        "the subscription carries no plan (metadata.plan or price.lookup_key)"
                            .into(),
                    )
                } else {
                    let wf = tenancy_catalog::enqueue_workflow(&tx, t, wk, &input, &actor).await?;
                    Ok((t, wf, label))
                }
            }
        },
        other => Err(format!("event type {other} is not handled")),
    };
    let outcome = match queued {
        Ok((t, wf, label)) => {
            let who = crate::audit::Who::named(&actor, crate::audit::Origin::default());
            let target = format!("tenant:{t}");
            crate::audit::record(
                &tx,
                Some(t),
                &who,
                &format!("billing.{label}"),
                target,
                None,
                None,
            )
            .await
            .map_err(|e| ApiError::internal("recording a control-plane audit event", &e))?;
            tenancy_catalog::link_billing_event(&tx, &id, Some(t), Some(wf.id)).await?;
            BillingOutcome {
                received: true,
                duplicate: false,
                outcome: label.to_owned(),
                workflow_id: Some(wf.id),
            }
        }
        Err(why) => {
            tracing::info!(event = %id, kind = %kind, why = %why, "billing event ignored");
            BillingOutcome {
                received: true,
                duplicate: false,
                outcome: format!("ignored: {why}"),
                workflow_id: None,
            }
        }
    };
    tx.commit()
        .await
        .map_err(|e| ApiError::internal("committing a billing event", &e))?;
    state.provisioner().wake();
    Ok(outcome)
}
