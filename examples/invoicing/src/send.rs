//! The "send invoice" job: runs in the invoice's tenant (span, `Tx`), records a delivery
//! and marks the invoice sent. Idempotent: a second run of the same job changes nothing.

use tenancy_axum::Tenancy;
use tenancy_jobs::{JobContext, JobResult};
use uuid::Uuid;

/// Job kind.
pub(crate) const KIND: &str = "send_invoice";

pub(crate) async fn send_invoice(mut ctx: JobContext<Tenancy>) -> JobResult {
    let invoice: Uuid = ctx
        .payload
        .get("invoice_id")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse().ok())
        .ok_or("payload has no invoice_id")?;
    // RLS: the row is only visible if the invoice belongs to the job's tenant.
    let row = ctx
        .tx
        .query_opt(
            "SELECT c.email FROM invoicing.invoices i
               JOIN invoicing.customers c ON c.id = i.customer_id
              WHERE i.id = $1",
            &[&invoice],
        )
        .await?
        .ok_or("invoice not found for this tenant")?;
    let recipient: String = row.get(0);
    ctx.tx
        .execute(
            "INSERT INTO invoicing.deliveries (invoice_id, job_id, recipient) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, job_id) DO NOTHING",
            &[&invoice, &ctx.job_id, &recipient],
        )
        .await?;
    ctx.tx
        .execute(
            "UPDATE invoicing.invoices SET status = CASE WHEN status = 'draft' THEN 'sent' ELSE status END,
                    sent_at = coalesce(sent_at, now())
              WHERE id = $1",
            &[&invoice],
        )
        .await?;
    tracing::info!(%invoice, %recipient, "invoice sent");
    Ok(())
}
