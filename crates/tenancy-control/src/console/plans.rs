//! The plans editor: every plan with the entitlements it sets, and a form per plan that
//! sets, changes or removes its entitlement values (a feature on or off, a limit or
//! unlimited). It writes through the configuration service's store, like `PUT
//! /v1/config/plans/{plan}`: the plan as stored with its entitlements replaced (its
//! settings and forced flags kept), the same validation, the same change log with the
//! operator as the actor and the reason given. A change that takes something away from
//! the plan's tenants (a feature turned off, a lower limit, a value removed) is written
//! only once the operator confirms it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use tenancy_config::model::{EntitlementKey, EntitlementKind, EntitlementValue, Plan};
use tenancy_config::Snapshot;
use tenancy_config_service::ChangeMeta;
use tenancy_core::PlanKey;

use super::flags::{config_of, store_error};
use super::layout::{self, csrf_field, none, Section};
use super::{flash, html_response, Ctx, PageResult, Refusal};
use crate::AppState;

/// The prefix of an entitlement's form field (`ent.seats`).
const FIELD: &str = "ent.";

/// An entitlement value as the console shows and the form takes it.
fn show(v: &EntitlementValue) -> String {
    match v {
        EntitlementValue::Enabled(true) => "on".into(),
        EntitlementValue::Enabled(false) => "off".into(),
        EntitlementValue::Limit(n) => n.to_string(),
        EntitlementValue::Unlimited => "unlimited".into(),
    }
}

/// What the operator typed for one entitlement: empty (the plan does not set it), `on`,
/// `off`, `unlimited` or a whole number. Whether the value fits the entitlement's kind is
/// the store's check.
fn parse_value(key: &str, text: &str) -> Result<Option<EntitlementValue>, String> {
    Ok(Some(match text.trim() {
        "" => return Ok(None),
        "on" => EntitlementValue::Enabled(true),
        "off" => EntitlementValue::Enabled(false),
        "unlimited" => EntitlementValue::Unlimited,
        n => EntitlementValue::Limit(n.parse().map_err(|_| {
            format!("Entitlement {key}: {n:?} is not a value: a feature takes on or off, a limit a whole number from 0, or unlimited.")
        })?),
    }))
}

/// The entitlement keys of a plan's rows: every defined one, and any the plan sets.
fn keys(snap: &Snapshot, plan: &Plan) -> Vec<EntitlementKey> {
    let mut keys: Vec<EntitlementKey> = snap.entitlement_keys().into_iter().cloned().collect();
    keys.extend(plan.values.entitlements.keys().cloned());
    keys.sort();
    keys.dedup();
    keys
}

/// `GET /console/plans`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
) -> PageResult {
    let snap = config_of(&state)?.client.snapshot();
    let mut plans: Vec<&Plan> = snap
        .plan_keys()
        .into_iter()
        .filter_map(|k| snap.plan_def(k))
        .collect();
    plans.sort_by(|a, b| a.key.cmp(&b.key));
    let body = html! {
        h1 { "Plans" }
        @if plans.is_empty() { p { "No plans are defined." } } @else {
            div.scroll { table #plans {
                caption.visually-hidden { "Plans and the entitlements they set" }
                thead { tr { th scope="col" { "Plan" } th scope="col" { "Name" } th scope="col" { "Entitlements" } th scope="col" { "Settings" } th scope="col" { "Forced flags" } } }
                tbody { @for p in &plans { tr {
                    th scope="row" { a href=(format!("/console/plans/{}", p.key)) { (p.key) } }
                    td { (p.display_name) }
                    td { @if p.values.entitlements.is_empty() { (none()) } @else { ul.plain {
                        @for (k, v) in &p.values.entitlements { li { code { (k) } ": " (show(v)) } }
                    } } }
                    td { (p.values.settings.len()) } td { (p.values.flags.len()) }
                } } }
            } }
        }
        p.hint { "A plan's settings and forced flags are edited through the API (" code { "PUT /v1/config/plans/{plan}" } "); entitlements here." }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Plans, "Plans", body),
    ))
}

/// The configuration service's snapshot and the plan of the path as stored.
async fn stored_plan(state: &AppState, key: &str) -> Result<(Arc<Snapshot>, Plan), Refusal> {
    let cfg = config_of(state)?;
    let key = key
        .parse::<PlanKey>()
        .map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let plan = cfg
        .store
        .get_plan(&key)
        .await
        .map_err(|e| store_error(&e))?;
    Ok((Arc::clone(&cfg.client.snapshot()), plan))
}

/// `GET /console/plans/{plan}`.
pub(crate) async fn edit(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(key): Path<String>,
) -> PageResult {
    let (snap, plan) = stored_plan(&state, &key).await?;
    let typed: BTreeMap<String, String> = plan
        .values
        .entitlements
        .iter()
        .map(|(k, v)| (k.to_string(), show(v)))
        .collect();
    Ok(editor(&ctx, &snap, &plan, &typed, "", StatusCode::OK, None))
}

/// What a change takes away from the plan's tenants, one sentence per entitlement.
fn reductions(
    before: &BTreeMap<EntitlementKey, EntitlementValue>,
    after: &BTreeMap<EntitlementKey, EntitlementValue>,
) -> Vec<String> {
    use EntitlementValue::{Enabled, Limit, Unlimited};
    before
        .iter()
        .filter_map(|(k, old)| {
            let lower = match (old, after.get(k)) {
                (_, None) => {
                    return Some(format!("{k}: {} removed (the default applies)", show(old)))
                }
                (Enabled(true), Some(Enabled(false))) => true,
                (Unlimited, Some(Limit(_))) => true,
                (Limit(a), Some(Limit(b))) => b < a,
                _ => false,
            };
            lower.then(|| {
                format!(
                    "{k}: {} → {}",
                    show(old),
                    after.get(k).map(show).unwrap_or_default()
                )
            })
        })
        .collect()
}

/// `POST /console/plans/{plan}`: writes the plan's entitlements through the store.
pub(crate) async fn save(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(key): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let (snap, stored) = stored_plan(&state, &key).await?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let reason = field("reason").unwrap_or_default();
    let typed: BTreeMap<String, String> = fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(FIELD)?.to_owned(), v.clone())))
        .collect();
    let show_form =
        |status, error: Option<&str>| editor(&ctx, &snap, &stored, &typed, reason, status, error);
    let mut entitlements = BTreeMap::new();
    for (k, text) in &typed {
        let parsed = k
            .parse::<EntitlementKey>()
            .map_err(|e| format!("Entitlement {k:?}: {e}"))
            .and_then(|key| Ok((key, parse_value(k, text)?)));
        match parsed {
            Ok((key, Some(v))) => {
                entitlements.insert(key, v);
            }
            Ok((_, None)) => {}
            Err(m) => return Ok(show_form(StatusCode::UNPROCESSABLE_ENTITY, Some(&m))),
        }
    }
    let taken = reductions(&stored.values.entitlements, &entitlements);
    if !taken.is_empty() && field("confirm") != Some("yes") {
        let m = format!(
            "This takes away from every tenant on plan {}: {}. Tick “Confirm” and save again to apply it.",
            stored.key,
            taken.join("; ")
        );
        return Ok(show_form(StatusCode::CONFLICT, Some(&m)));
    }
    let mut plan = stored.clone();
    plan.values.entitlements = entitlements;
    let reason = if reason.trim().is_empty() {
        "edited in the console"
    } else {
        reason.trim()
    };
    let meta = ChangeMeta::new(ctx.actor(), reason);
    let cfg = config_of(&state)?;
    Ok(match cfg.store.put_plan(&plan, &meta).await {
        Ok(v) => {
            flash(
                &state,
                &ctx,
                format!("Plan {} saved (version {v}).", plan.key),
            );
            Redirect::to(&format!("/console/plans/{}", plan.key)).into_response()
        }
        Err(e) => {
            let r = store_error(&e);
            show_form(r.status, Some(&r.message))
        }
    })
}

/// The editor of a plan's entitlements, with what the operator typed (`typed`: key →
/// text) and the error of the last attempt.
fn editor(
    ctx: &Ctx,
    snap: &Snapshot,
    plan: &Plan,
    typed: &BTreeMap<String, String>,
    reason: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let title = format!("Plan {}", plan.key);
    let rows = keys(snap, plan);
    let body = html! {
        h1 { "Plan " (plan.key) }
        p { "Name: " (plan.display_name) ". Settings set: " (plan.values.settings.len()) ", forced flags: " (plan.values.flags.len()) " (kept as they are)." }
        @if let Some(e) = error { p.error role="alert" #plan-error { (e) } }
        form method="post" action=(format!("/console/plans/{}", plan.key)) aria-describedby=[error.map(|_| "plan-error")] {
            (csrf_field(ctx))
            @if rows.is_empty() { p { "No entitlements are defined." } } @else {
                div.scroll { table #plan-entitlements {
                    caption.visually-hidden { "Entitlements of plan " (plan.key) }
                    thead { tr { th scope="col" { "Entitlement" } th scope="col" { "Kind" } th scope="col" { "Default" } th scope="col" { "This plan" } } }
                    tbody { @for k in &rows {
                        @let def = snap.entitlement_def(k.as_str());
                        @let id = format!("ent-{k}");
                        @let name = format!("{FIELD}{k}");
                        @let current = typed.get(k.as_str()).map(String::as_str).unwrap_or_default();
                        tr {
                            th scope="row" { label for=(id) { (k) } }
                            td { (def.map(|d| d.kind.as_str()).unwrap_or("?")) }
                            td { @match def { Some(d) => (show(&d.default)), None => (none()) } }
                            td { @if def.is_some_and(|d| d.kind == EntitlementKind::Feature) {
                                select id=(id) name=(name) {
                                    option value="" selected[current.is_empty()] { "not set (default)" }
                                    option value="on" selected[current == "on"] { "on" }
                                    option value="off" selected[current == "off"] { "off" }
                                }
                            } @else {
                                input id=(id) name=(name) value=(current) inputmode="numeric" maxlength="20"
                                    placeholder="not set" aria-describedby="limit-hint";
                            } }
                        }
                    } }
                } }
                p.hint #limit-hint { "A limit takes a whole number from 0 or " code { "unlimited" } "; empty: the plan does not set it and the default applies." }
            }
            label for="reason" { "Reason (recorded in the change log)" }
            input #reason name="reason" value=(reason) maxlength="500";
            div.check {
                input #confirm type="checkbox" name="confirm" value="yes";
                label for="confirm" { "Confirm: apply a change that takes something away from this plan's tenants" }
            }
            button #save type="submit" { "Save plan" }
        }
    };
    html_response(status, layout::page(ctx, Section::Plans, &title, body))
}
