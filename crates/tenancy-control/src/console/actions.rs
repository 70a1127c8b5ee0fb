//! Lifecycle actions on a tenant: suspend, resume, change plan, delete, set or lift the
//! legal hold. Each is a confirmation page (what will happen, an optional reason) whose
//! form posts to the API's own handler of that operation, called in-process with the
//! operator as the administrator and an idempotency key made for that confirmation: the
//! same checks, the same workflow, the same idempotency (a form sent twice runs once).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::layout::{self, csrf_field, Section};
use super::tenant::api_error_page;
use super::{flash, html_response, refused, session, Ctx};
use crate::api;
use crate::api::lifecycle::TenantPost;
use crate::AppState;

/// The operations the console offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Suspend,
    Resume,
    Delete,
    Plan,
    Hold,
    ReleaseHold,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "suspend" => Action::Suspend,
            "resume" => Action::Resume,
            "delete" => Action::Delete,
            "plan" => Action::Plan,
            "hold" => Action::Hold,
            "release-hold" => Action::ReleaseHold,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Delete => "delete",
            Action::Plan => "plan",
            Action::Hold => "hold",
            Action::ReleaseHold => "release-hold",
        }
    }

    /// What the confirmation page says will happen.
    fn explain(self, plan: &str) -> String {
        match self {
            Action::Suspend => "Suspend this tenant: its requests are refused until it is resumed; its data is kept.".into(),
            Action::Resume => "Resume this tenant: its requests are served again.".into(),
            Action::Delete => "Delete this tenant: it stops serving now, and its data is purged after the retention period unless a legal hold is set.".into(),
            Action::Plan => format!("Move this tenant to plan {plan:?}: the plan's settings are seeded by the change-plan workflow."),
            Action::Hold => "Set a legal hold: a deleted tenant's data is not purged while it is set.".into(),
            Action::ReleaseHold => "Lift the legal hold: a deleted tenant's data may then be purged once its retention period is over.".into(),
        }
    }

    fn takes_reason(self) -> bool {
        matches!(self, Action::Suspend | Action::Delete)
    }
}

/// The confirmation page's query.
#[derive(Debug, Deserialize)]
pub(crate) struct ConfirmQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    plan: String,
}

/// `GET /console/tenants/{id}/actions?action=…`: the confirmation step.
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<ConfirmQuery>,
) -> Response {
    let Some(action) = Action::parse(&q.action) else {
        return refused(StatusCode::NOT_FOUND, "There is no such action.");
    };
    let t = match api::get_tenant(ctx.admin(), State(state.clone()), Path(id)).await {
        Ok(axum::Json(t)) => t,
        Err(e) => return api_error_page(e),
    };
    let title = format!("Confirm: {} {}", action.name(), t.slug);
    let back = format!("/console/tenants/{}", t.id);
    let body = html! {
        h1 { "Confirm: " (action.name()) " " (t.slug) }
        p #confirm-what { (action.explain(&q.plan)) }
        p { "Tenant " strong { (t.display_name) } " (" code { (t.slug) } "), now " (t.state) " on plan " (t.plan) "." }
        form method="post" action=(format!("/console/tenants/{}/actions", t.id)) {
            (csrf_field(&ctx))
            input type="hidden" name="action" value=(action.name());
            input type="hidden" name="plan" value=(q.plan);
            // One key per confirmation: sending this form twice runs the operation once.
            input type="hidden" name="key" value=(format!("console-{}", session::random_token()));
            @if action.takes_reason() {
                label for="reason" { "Reason (recorded with the workflow, optional)" }
                textarea #reason name="reason" maxlength="1000" rows="3" {}
            }
            div.actions {
                button #confirm type="submit" { "Confirm " (action.name()) }
                a href=(back) { "Cancel" }
            }
        }
    };
    html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Tenants, &title, body),
    )
}

/// The confirmation form.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    key: String,
}

/// `POST /console/tenants/{id}/actions`: runs the operation through the API's handler.
pub(crate) async fn run(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    let Some(action) = Action::parse(&f.action) else {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, "There is no such action.");
    };
    let mut headers = HeaderMap::new();
    match HeaderValue::from_str(&f.key) {
        Ok(v) => headers.insert("idempotency-key", v),
        Err(_) => return refused(StatusCode::BAD_REQUEST, "The form's key is not valid."),
    };
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let reason = (!f.reason.trim().is_empty()).then(|| f.reason.clone());
    let body = |v: serde_json::Value| Ok(Bytes::from(v.to_string()));
    let admin = ctx.admin();
    let st = State(state.clone());
    let answer = async {
        match action {
            Action::Suspend => {
                let post = TenantPost::new(admin, id, headers, body(json!({"reason": reason})))?;
                api::suspend(st, post).await
            }
            Action::Resume => {
                api::resume(st, TenantPost::new(admin, id, headers, body(json!({})))?).await
            }
            Action::Delete => {
                let post = TenantPost::new(admin, id, headers, body(json!({"reason": reason})))?;
                api::delete(st, post).await
            }
            Action::Plan => {
                let post = TenantPost::new(admin, id, headers, body(json!({"plan": f.plan})))?;
                api::change_plan(st, post).await
            }
            Action::Hold | Action::ReleaseHold => {
                let hold = action == Action::Hold;
                let post = TenantPost::new(admin, id, headers, body(json!({"hold": hold})))?;
                api::legal_hold(st, post).await
            }
        }
    }
    .await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => return api_error_page(e),
    };
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        let detail = value["detail"].as_str().unwrap_or("the operation failed");
        return refused(status, detail);
    }
    // `Accepted` (a queued workflow) or the tenant itself (legal hold).
    let tenant = value.get("tenant").unwrap_or(&value);
    let tenant_id = tenant["id"].as_str().unwrap_or_default().to_owned();
    let message = match value["workflow"]["id"].as_str() {
        Some(wf) => format!("{} queued (workflow {wf}).", action.name()),
        None => format!("{} done.", action.name()),
    };
    flash(&state, &ctx, message);
    Redirect::to(&format!("/console/tenants/{tenant_id}")).into_response()
}
