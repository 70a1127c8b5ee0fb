//! Operations pages: workflows in flight and failed (newest first, with the tenant),
//! one workflow with its step log, and the webhook delivery log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use maud::{html, Markup};
use time::OffsetDateTime;
use uuid::Uuid;

use super::layout::{self, opt, Section};
use super::{html_response, Ctx, PageResult};
use crate::api;
use crate::error::ApiError;
use crate::AppState;

/// Rows per list.
const LIMIT: i64 = 100;

/// One row of the workflows page.
struct WorkflowRow {
    id: Uuid,
    tenant_id: Uuid,
    slug: String,
    kind: String,
    status: String,
    step: i32,
    attempts: i32,
    last_error: Option<String>,
    created_at: OffsetDateTime,
}

/// Workflows with `statuses`, newest first (backwards on the `seq` index).
async fn workflows_with(
    conn: &tokio_postgres::Client,
    statuses: &[&str],
) -> Result<Vec<WorkflowRow>, ApiError> {
    let statuses: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
    let rows = conn
        .query(
            "SELECT w.id, w.tenant_id, t.slug, w.kind, w.status, w.step, w.attempts, w.last_error, w.created_at
               FROM tenancy_catalog.workflows w JOIN tenancy_catalog.tenants t ON t.id = w.tenant_id
              WHERE w.status = ANY($1) ORDER BY w.seq DESC LIMIT $2",
            &[&statuses, &LIMIT],
        )
        .await
        .map_err(|e| ApiError::unavailable("listing workflows", &e))?;
    Ok(rows
        .iter()
        .map(|r| WorkflowRow {
            id: r.get(0),
            tenant_id: r.get(1),
            slug: r.get(2),
            kind: r.get(3),
            status: r.get(4),
            step: r.get(5),
            attempts: r.get(6),
            last_error: r.get(7),
            created_at: r.get(8),
        })
        .collect())
}

fn workflow_rows(id: &str, caption: &str, rows: &[WorkflowRow]) -> Markup {
    html! {
        @if rows.is_empty() { p #(id) { "None." } } @else {
            div.scroll { table #(id) {
                caption.visually-hidden { (caption) }
                thead { tr { th scope="col" { "Workflow" } th scope="col" { "Tenant" } th scope="col" { "Status" } th scope="col" { "Step" } th scope="col" { "Attempts" } th scope="col" { "Queued" } th scope="col" { "Last error" } } }
                tbody { @for w in rows { tr {
                    th scope="row" { a href=(format!("/console/workflows/{}", w.id)) { (w.kind) } }
                    td { a href=(format!("/console/tenants/{}", w.tenant_id)) { (w.slug) } }
                    td { (w.status) } td { (w.step) } td { (w.attempts) } td { (layout::time(w.created_at)) }
                    td { (opt(w.last_error.as_deref())) }
                } } }
            } }
        }
    }
}

/// `GET /console/workflows`.
pub(crate) async fn workflows(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
) -> PageResult {
    let conn = state.catalog().await?;
    let running = workflows_with(&conn, &["pending", "running", "compensating"]).await?;
    let failed = workflows_with(&conn, &["failed"]).await?;
    let body = html! {
        h1 { "Workflows" }
        section aria-labelledby="h-running" {
            h2 #h-running { "In flight" }
            (workflow_rows("running", "Workflows in flight", &running))
        }
        section aria-labelledby="h-failed" {
            h2 #h-failed { "Failed" }
            (workflow_rows("failed", "Failed workflows", &failed))
        }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Workflows, "Workflows", body),
    ))
}

/// `GET /console/workflows/{id}`: the workflow (through the API's handler) and its steps.
pub(crate) async fn workflow(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> PageResult {
    let Json(w) = api::get_workflow(ctx.admin(), State(state.clone()), Path(id)).await?;
    let conn = state.catalog().await?;
    let steps = tenancy_catalog::workflow_steps(&conn, w.id)
        .await
        .map_err(ApiError::from)?;
    let title = format!("Workflow {}", w.kind);
    let body = html! {
        h1 { "Workflow " (w.kind) }
        dl.summary {
            dt { "Id" } dd { code { (w.id) } }
            dt { "Tenant" } dd { a href=(format!("/console/tenants/{}", w.tenant_id)) { (w.tenant_id) } }
            dt { "Status" } dd { (w.status) }
            dt { "Next step" } dd { (w.step) }
            dt { "Attempts of this step" } dd { (w.attempts) }
            dt { "Queued" } dd { (w.created_at) }
            dt { "Finished" } dd { (opt(w.finished_at.as_deref())) }
            dt { "Last error" } dd { (opt(w.last_error.as_deref())) }
        }
        section aria-labelledby="h-steps" {
            h2 #h-steps { "Steps" }
            @if steps.is_empty() { p { "No step has run yet." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Step" } th scope="col" { "Compensation" } th scope="col" { "Attempt" } th scope="col" { "Outcome" } th scope="col" { "ms" } th scope="col" { "Error" } } }
                    tbody { @for s in &steps { tr {
                        th scope="row" { (s.step) } td { (if s.compensation { "yes" } else { "no" }) } td { (s.attempt) }
                        td { (s.outcome) } td { (format!("{:.1}", s.ms)) } td { (opt(s.error.as_deref())) }
                    } } }
                } }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Workflows, &title, body),
    ))
}

/// A table of webhook deliveries.
pub(crate) fn delivery_table(title: &str, ds: &[tenancy_catalog::Delivery]) -> Markup {
    html! {
        section aria-labelledby="h-deliveries" {
            h2 #h-deliveries { (title) }
            @if ds.is_empty() { p { "None." } } @else {
                div.scroll { table #deliveries {
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Receiver" } th scope="col" { "Tenant" } th scope="col" { "Attempt" } th scope="col" { "HTTP status" } th scope="col" { "ms" } th scope="col" { "Error" } } }
                    tbody { @for d in ds { tr {
                        th scope="row" { (d.event_type) } td { (d.receiver) }
                        td { @match d.tenant_id { Some(t) => a href=(format!("/console/tenants/{t}")) { (t) }, None => (layout::none()) } }
                        td { (d.attempt) } td { (opt(d.http_status)) } td { (format!("{:.1}", d.ms)) } td { (opt(d.error.as_deref())) }
                    } } }
                } }
            }
        }
    }
}

/// `GET /console/deliveries`: the newest deliveries of every tenant.
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
) -> PageResult {
    let conn = state.catalog().await?;
    let ds = tenancy_catalog::deliveries(&conn, None, LIMIT)
        .await
        .map_err(ApiError::from)?;
    let body = html! {
        h1 { "Webhook deliveries" }
        p { "The newest " (LIMIT) " delivery attempts, registrations and lifecycle events alike." }
        (delivery_table("Deliveries", &ds))
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Deliveries, "Webhook deliveries", body),
    ))
}
