//! One tenant's page: what the catalog knows (placement, region, cluster, state history,
//! plan), what the configuration service resolves for it (every flag, entitlement and
//! setting with its explanation, overrides, branding, custom domains), its migration
//! status, its workflows and its webhook deliveries, its audit events with their chains'
//! verification state, and the actions an operator can take.
//! The tenant, its workflows and its migration status are read through the API's own
//! handlers, so the page shows exactly what `GET /v1/tenants/{id}…` answers.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use maud::{html, Markup};
use serde::Serialize;
use tenancy_core::TenantId;

use super::audit::AuditCursors;
use super::layout::{self, json, none, opt, Section};
use super::{html_response, refused, Ctx};
use crate::api::{self, MigrationStatusView, TenantView, WorkflowView};
use crate::error::ApiError;
use crate::AppState;

/// The snake_case name serde gives a value (layers, domain states).
pub(crate) fn label<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// An API error as a console page (its status and detail).
pub(crate) fn api_error_page(e: ApiError) -> Response {
    refused(e.status(), &e.detail)
}

/// `GET /console/tenants/{id}` (id or slug).
pub(crate) async fn show(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<AuditCursors>,
) -> Response {
    match render(&state, &ctx, id, &q).await {
        Ok(page) => html_response(StatusCode::OK, page),
        Err(e) => api_error_page(e),
    }
}

async fn render(
    state: &AppState,
    ctx: &Ctx,
    id: String,
    q: &AuditCursors,
) -> Result<Markup, ApiError> {
    let Json(t) = api::get_tenant(ctx.admin(), State(state.clone()), Path(id)).await?;
    let key = t.id.to_string();
    let Json(workflows) =
        api::tenant_workflows(ctx.admin(), State(state.clone()), Path(key.clone())).await?;
    let Json(migrations) =
        api::tenant_migrations(ctx.admin(), State(state.clone()), Path(key)).await?;
    let tid = TenantId::from_uuid(t.id)
        .map_err(|e| ApiError::new(crate::error::ProblemCode::NotFound, e.to_string()))?;
    let conn = state.catalog().await?;
    let cluster = tenancy_catalog::get_cluster(&conn, t.cluster_id)
        .await
        .map(|c| c.name)
        .ok();
    let events = tenancy_catalog::tenant_events(&conn, tid).await?;
    let deliveries = tenancy_catalog::deliveries(&conn, Some(tid), 50).await?;
    let plans: Vec<String> = api::known_plans(state).into_iter().collect();
    let audit = super::audit::section(state, tid, q).await;
    let title = format!("Tenant {}", t.slug);
    let body = html! {
        h1 { "Tenant " (t.slug) }
        (summary(&t, cluster.as_deref()))
        (actions(&t, &plans))
        (history(&events))
        (audit)
        (config(state, tid))
        (migration(&migrations))
        (workflow_table(&workflows))
        (super::ops::delivery_table("Webhook deliveries", &deliveries))
    };
    Ok(layout::page(ctx, Section::Tenants, &title, body))
}

fn summary(t: &TenantView, cluster: Option<&str>) -> Markup {
    html! {
        section aria-labelledby="h-summary" {
            h2 #h-summary { "Summary" }
            dl.summary {
                dt { "Name" } dd #display-name { (t.display_name) }
                dt { "Id" } dd { code { (t.id) } }
                dt { "State" } dd #tenant-state { span class=(format!("state state-{}", t.state)) { (t.state) } }
                dt { "Plan" } dd #tenant-plan { (t.plan) }
                dt { "Region" } dd { (t.region) }
                dt { "Placement" } dd { (t.placement) }
                dt { "Cluster" } dd { (opt(cluster)) " " small { code { (t.cluster_id) } } }
                dt { "Schema" } dd { (opt(t.schema_name.as_deref())) }
                dt { "Database" } dd { (opt(t.database_name.as_deref())) }
                dt { "Billing customer" } dd { (opt(t.billing_customer.as_deref())) }
                dt { "Legal hold" } dd { (if t.legal_hold { "yes" } else { "no" }) }
                dt { "Purge after" } dd { (opt(t.purge_after.as_deref())) }
                dt { "Created" } dd { (t.created_at) }
                dt { "Updated" } dd { (t.updated_at) }
            }
        }
    }
}

/// The actions this tenant's state allows; each opens a confirmation page.
fn actions(t: &TenantView, plans: &[String]) -> Markup {
    let live = !matches!(t.state.as_str(), "deleting" | "deleted");
    let href = format!("/console/tenants/{}/actions", t.id);
    let button = |action: &str, label: &str| {
        html! {
            form.inline method="get" action=(href) {
                input type="hidden" name="action" value=(action);
                button type="submit" { (label) }
            }
        }
    };
    html! {
        section aria-labelledby="h-actions" {
            h2 #h-actions { "Actions" }
            div.actions {
                @if t.state == "active" { (button("suspend", "Suspend…")) }
                @if t.state == "suspended" { (button("resume", "Resume…")) }
                @if matches!(t.state.as_str(), "active" | "suspended") { (button("delete", "Delete…")) }
                @if t.legal_hold { (button("release-hold", "Lift legal hold…")) } @else { (button("hold", "Set legal hold…")) }
            }
            @if live {
                form.inline method="get" action=(href) {
                    input type="hidden" name="action" value="plan";
                    label for="new-plan" { "New plan" }
                    select #new-plan name="plan" {
                        @for p in plans { option value=(p) selected[*p == t.plan] { (p) } }
                    }
                    button type="submit" { "Change plan…" }
                }
            }
        }
    }
}

fn history(events: &[tenancy_catalog::TenantEvent]) -> Markup {
    html! {
        section aria-labelledby="h-history" {
            h2 #h-history { "State history" }
            @if events.is_empty() { p { "No events." } } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "From" } th scope="col" { "To" } th scope="col" { "By" } th scope="col" { "Detail" } } }
                    tbody { @for e in events { tr {
                        td { (layout::time(e.at)) } td { (e.kind) } td { (opt(e.from_state.as_deref())) }
                        td { (opt(e.to_state.as_deref())) } td { (e.actor) } td { code { (json(&e.detail)) } }
                    } } }
                } }
            }
        }
    }
}

/// Every flag, entitlement and setting as the configuration service resolves it for the
/// tenant, with the layers `explain` walked; then overrides, branding and domains.
fn config(state: &AppState, tid: TenantId) -> Markup {
    let Some(cfg) = state.config() else {
        return html! { section { h2 { "Configuration" } p { "The configuration service is not mounted." } } };
    };
    let snap = cfg.client.snapshot();
    let mut rows = Vec::new();
    let mut keys: Vec<(&str, String)> = Vec::new();
    keys.extend(
        snap.flag_keys()
            .into_iter()
            .map(|k| ("flag", k.to_string())),
    );
    keys.extend(
        snap.entitlement_keys()
            .into_iter()
            .map(|k| ("entitlement", k.to_string())),
    );
    keys.extend(
        snap.setting_keys()
            .into_iter()
            .map(|k| ("setting", k.to_string())),
    );
    for (kind, key) in keys {
        if let Ok(e) = cfg.client.explain(kind, tid, &key) {
            rows.push(e);
        }
    }
    let data = snap.tenant(tid);
    let now = time::OffsetDateTime::now_utc();
    html! {
        section aria-labelledby="h-config" {
            h2 #h-config { "Configuration" }
            p { "Snapshot version " (snap.version()) "." }
            @if rows.is_empty() { p { "No flags, entitlements or settings are defined." } } @else {
                div.scroll { table #config-values {
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Key" } th scope="col" { "Value" } th scope="col" { "Decided by" } th scope="col" { "Explanation" } } }
                    tbody { @for e in &rows { tr {
                        td { (e.kind) } th scope="row" { (e.key) } td { code { (json(&e.value)) } }
                        td { (label(&e.decided_by)) }
                        td { details {
                            summary { (e.detail) }
                            ol { @for l in &e.layers { li {
                                (label(&l.layer)) ": " (l.source) " → " @match &l.value { Some(v) => code { (json(v)) }, None => (none()) }
                                @if let Some(n) = &l.note { " (" (n) ")" }
                            } } }
                        } }
                    } } }
                } }
            }
            h3 { "Overrides" }
            @match data.map(|d| &d.overrides) {
                Some(o) if !o.is_empty() => ul { @for ov in o { li {
                    code { (json(&serde_json::to_value(&ov.target).unwrap_or_default())) } " = " code { (json(&ov.value)) }
                    " — " (ov.reason) " (" (ov.created_by) ")"
                    @if !ov.active_at(now) { " expired" }
                } } },
                _ => p { "None." },
            }
            h3 { "Branding" }
            @match snap.branding(tid) {
                Some(b) => dl.summary #branding {
                    dt { "Product name" } dd #branding-name { (b.display_name) }
                    dt { "Colours" } dd { (b.primary_color) ", " (b.accent_color) }
                    dt { "Logo" } dd { (opt(b.logo_url.as_deref())) }
                    dt { "Email from" } dd { (b.email_from_name) " <" (b.email_from_address) ">" }
                },
                None => p { "Not set." },
            }
            h3 { "Custom domains" }
            @match data.map(|d| &d.domains) {
                Some(ds) if !ds.is_empty() => ul { @for d in ds { li {
                    (d.hostname) " — " (label(&d.state))
                    @if let Some(e) = &d.last_error { " (" (e) ")" }
                } } },
                _ => p { "None." },
            }
        }
    }
}

fn migration(m: &MigrationStatusView) -> Markup {
    html! {
        section aria-labelledby="h-migrations" {
            h2 #h-migrations { "App migrations" }
            dl.summary {
                dt { "Version" } dd { (m.version) }
                dt { "Applied" } dd { (opt(m.applied_at.as_deref())) }
                dt { "Checksum" } dd { (opt(m.checksum.as_deref())) }
                dt { "Last error" } dd { (opt(m.error.as_deref())) @if let Some(v) = m.error_version { " (version " (v) ")" } }
            }
            @if m.placement == "pooled" { p.hint { "A pooled tenant shares its cluster's tables: this is the cluster's status." } }
        }
    }
}

fn workflow_table(ws: &[WorkflowView]) -> Markup {
    html! {
        section aria-labelledby="h-workflows" {
            h2 #h-workflows { "Workflows" }
            @if ws.is_empty() { p { "None." } } @else {
                div.scroll { table #workflows {
                    thead { tr { th scope="col" { "Kind" } th scope="col" { "Status" } th scope="col" { "Step" } th scope="col" { "Queued" } th scope="col" { "Finished" } th scope="col" { "Last error" } } }
                    tbody { @for w in ws.iter().rev() { tr {
                        th scope="row" { a href=(format!("/console/workflows/{}", w.id)) { (w.kind) } }
                        td.wf-status { (w.status) } td { (w.step) } td { (w.created_at) }
                        td { (opt(w.finished_at.as_deref())) } td { (opt(w.last_error.as_deref())) }
                    } } }
                } }
            }
        }
    }
}
