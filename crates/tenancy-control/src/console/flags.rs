//! The flag editor: every flag of the snapshot, a form to create a boolean flag, and a
//! form per flag (description, variants, default and off variants, kill switch, rules)
//! that writes through the configuration service's store, like `PUT
//! /v1/config/flags/{key}`: the same validation, the same change log with the operator as
//! the actor and the reason given, the same notification to every snapshot.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;
use tenancy_config::model::{Flag, FlagKey, FlagKind};
use tenancy_config::ConfigError;
use tenancy_config_service::{ChangeMeta, ConfigState};

use super::layout::{self, csrf_field, json, Section};
use super::tenant::label;
use super::{flash, html_response, Ctx, PageResult, Refusal};
use crate::AppState;

/// The configuration service, or the refusal of a server without it.
pub(super) fn config_of(state: &AppState) -> Result<&ConfigState, Refusal> {
    state.config().ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "The configuration service is not mounted on this server.",
        )
    })
}

/// A store error as a message and status.
pub(super) fn store_error(e: &ConfigError) -> Refusal {
    match e {
        ConfigError::Invalid(m) => Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, m.to_string()),
        ConfigError::NotFound { .. } => Refusal::new(StatusCode::NOT_FOUND, e.to_string()),
        ConfigError::Conflict(m) => Refusal::new(StatusCode::CONFLICT, m.clone()),
        ConfigError::Rule { message, .. } => {
            Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, message.clone())
        }
        _ => {
            tracing::warn!(error = %e, "console: configuration store");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The configuration store could not be reached; try again.",
            )
        }
    }
}

/// The configuration service, the key of the path and its flag as stored.
async fn stored_flag<'s>(
    state: &'s AppState,
    key: &str,
) -> Result<(&'s ConfigState, FlagKey, Flag), Refusal> {
    let cfg = config_of(state)?;
    let key: FlagKey = key
        .parse()
        .map_err(|e: tenancy_config::model::ModelError| {
            Refusal::new(StatusCode::NOT_FOUND, e.to_string())
        })?;
    let flag = cfg
        .store
        .get_flag(&key)
        .await
        .map_err(|e| store_error(&e))?;
    Ok((cfg, key, flag))
}

/// `GET /console/flags`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
) -> PageResult {
    let snap = config_of(&state)?.client.snapshot();
    let body = html! {
        h1 { "Flags" }
        @if snap.flag_keys().is_empty() { p { "No flags are defined." } } @else {
            div.scroll { table #flags {
                caption.visually-hidden { "Feature flags" }
                thead { tr { th scope="col" { "Key" } th scope="col" { "Kind" } th scope="col" { "Default" } th scope="col" { "Rules" } th scope="col" { "Kill switch" } th scope="col" { "Description" } } }
                tbody { @for k in snap.flag_keys() { @if let Some(f) = snap.flag_def(k.as_str()) { tr {
                    th scope="row" { a href=(format!("/console/flags/{k}")) { (k) } }
                    td { (label(&f.kind)) } td { (f.default_variant) } td { (f.rules.len()) }
                    td { (if f.killed { "on" } else { "off" }) } td { (f.description) }
                } } } }
            } }
        }
        section aria-labelledby="h-new-flag" {
            h2 #h-new-flag { "New boolean flag" }
            form method="post" action="/console/flags" {
                (csrf_field(&ctx))
                label for="new-key" { "Key" }
                input #new-key name="key" required pattern="[a-z][a-z0-9_.\\-]*" maxlength="64";
                label for="new-description" { "Description" }
                input #new-description name="description" maxlength="2000";
                button type="submit" { "Create (off for every tenant)" }
            }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        layout::page(&ctx, Section::Flags, "Flags", body),
    ))
}

/// The new-flag form.
#[derive(Debug, Deserialize)]
pub(crate) struct NewFlag {
    #[serde(default)]
    key: String,
    #[serde(default)]
    description: String,
}

/// `POST /console/flags`: creates a boolean flag, off by default.
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Form(f): Form<NewFlag>,
) -> PageResult {
    let cfg = config_of(&state)?;
    let key: FlagKey = f
        .key
        .trim()
        .parse()
        .map_err(|e: tenancy_config::model::ModelError| {
            Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        })?;
    match cfg.store.get_flag(&key).await {
        Ok(_) => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                format!("Flag {key} already exists."),
            ))
        }
        Err(ConfigError::NotFound { .. }) => {}
        Err(e) => return Err(store_error(&e)),
    }
    let mut flag = Flag::boolean(key.clone());
    flag.description = f.description.trim().to_owned();
    let meta = ChangeMeta::new(ctx.actor(), "created in the console");
    let v = cfg
        .store
        .put_flag(&flag, &meta)
        .await
        .map_err(|e| store_error(&e))?;
    flash(&state, &ctx, format!("Flag {key} created (version {v})."));
    Ok(Redirect::to(&format!("/console/flags/{key}")).into_response())
}

/// The edit form's fields, as text (what the operator typed is shown again on error).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct FlagForm {
    #[serde(default)]
    description: String,
    #[serde(default)]
    variants: String,
    #[serde(default)]
    default_variant: String,
    #[serde(default)]
    off_variant: String,
    #[serde(default)]
    killed: Option<String>,
    #[serde(default)]
    rules: String,
    #[serde(default)]
    reason: String,
}

impl FlagForm {
    fn of(f: &Flag) -> FlagForm {
        FlagForm {
            description: f.description.clone(),
            variants: serde_json::to_string_pretty(&f.variants).unwrap_or_default(),
            default_variant: f.default_variant.to_string(),
            off_variant: f.off_variant.to_string(),
            killed: f.killed.then(|| "on".to_owned()),
            rules: serde_json::to_string_pretty(&f.rules).unwrap_or_default(),
            reason: String::new(),
        }
    }

    /// The flag this form describes (checked by the store's validation on write).
    fn to_flag(&self, key: &FlagKey, kind: FlagKind) -> Result<Flag, String> {
        let variants = serde_json::from_str(&self.variants)
            .map_err(|e| format!("Variants: not a JSON object of variant → value ({e})."))?;
        let rules = if self.rules.trim().is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&self.rules)
                .map_err(|e| format!("Rules: not a JSON list of rules ({e})."))?
        };
        Ok(Flag {
            key: key.clone(),
            kind,
            description: self.description.trim().to_owned(),
            variants,
            default_variant: self
                .default_variant
                .parse()
                .map_err(|e| format!("Default variant: {e}"))?,
            off_variant: self
                .off_variant
                .parse()
                .map_err(|e| format!("Off variant: {e}"))?,
            killed: self.killed.is_some(),
            rules,
        })
    }
}

/// `GET /console/flags/{key}`.
pub(crate) async fn edit(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(key): Path<String>,
) -> PageResult {
    let (_, _, f) = stored_flag(&state, &key).await?;
    Ok(editor(&ctx, &f, &FlagForm::of(&f), StatusCode::OK, None))
}

/// `POST /console/flags/{key}`: writes the flag through the store.
pub(crate) async fn save(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(key): Path<String>,
    Form(form): Form<FlagForm>,
) -> PageResult {
    let (cfg, key, stored) = stored_flag(&state, &key).await?;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let flag = match form.to_flag(&key, stored.kind) {
        Ok(f) => f,
        Err(m) => return Ok(editor(&ctx, &stored, &form, unprocessable, Some(&m))),
    };
    let reason = if form.reason.trim().is_empty() {
        "edited in the console"
    } else {
        form.reason.trim()
    };
    let meta = ChangeMeta::new(ctx.actor(), reason);
    Ok(match cfg.store.put_flag(&flag, &meta).await {
        Ok(v) => {
            flash(&state, &ctx, format!("Flag {key} saved (version {v})."));
            Redirect::to(&format!("/console/flags/{key}")).into_response()
        }
        Err(e) => {
            let r = store_error(&e);
            editor(&ctx, &stored, &form, r.status, Some(&r.message))
        }
    })
}

fn editor(
    ctx: &Ctx,
    f: &Flag,
    form: &FlagForm,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let variants: Vec<String> = f.variants.keys().map(|v| v.to_string()).collect();
    let choose = |id: &str, name: &str, current: &str| -> Markup {
        html! {
            select id=(id) name=(name) {
                @for v in &variants { option value=(v) selected[v == current] { (v) } }
                @if !variants.iter().any(|v| v == current) { option value=(current) selected { (current) } }
            }
        }
    };
    let title = format!("Flag {}", f.key);
    let body = html! {
        h1 { "Flag " (f.key) }
        p { "Kind: " (label(&f.kind)) ". Stored variants: " code { (json(&serde_json::to_value(&f.variants).unwrap_or_default())) } }
        @if let Some(e) = error { p.error role="alert" #flag-error { (e) } }
        form method="post" action=(format!("/console/flags/{}", f.key)) aria-describedby=[error.map(|_| "flag-error")] {
            (csrf_field(ctx))
            label for="description" { "Description" }
            input #description name="description" value=(form.description) maxlength="2000";
            label for="default_variant" { "Default variant (served when no rule matches)" }
            (choose("default_variant", "default_variant", &form.default_variant))
            label for="off_variant" { "Off variant (served while the kill switch is on)" }
            (choose("off_variant", "off_variant", &form.off_variant))
            div.check {
                input #killed type="checkbox" name="killed" value="on" checked[form.killed.is_some()];
                label for="killed" { "Kill switch on" }
            }
            label for="variants" { "Variants (JSON object: variant → value)" }
            textarea #variants name="variants" rows="4" spellcheck="false" { (form.variants) }
            label for="rules" { "Targeting rules (JSON list; first match wins)" }
            textarea #rules name="rules" rows="8" spellcheck="false" { (form.rules) }
            label for="reason" { "Reason (recorded in the change log)" }
            input #reason name="reason" value=(form.reason) maxlength="500";
            button #save type="submit" { "Save flag" }
        }
    };
    html_response(status, layout::page(ctx, Section::Flags, &title, body))
}
