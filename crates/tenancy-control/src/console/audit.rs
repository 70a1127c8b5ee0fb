//! A tenant's audit events on its page: both logs (the tenant's own, in its database, and
//! the control plane's changes concerning it, in the catalog), newest first, a page at a
//! time, each with the verification state of its chain. The log is opened as `GET
//! /v1/tenants/{id}/audit` opens it, its cursors are that endpoint's, and the chain is
//! verified by `tenancy_audit::verify_log` against the catalog's checkpoints and anchors,
//! trusting this control plane's signing key.

use maud::{html, Markup};
use serde::Deserialize;
use tenancy_audit::{Log, StoredEvent, Trust, Verdict};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::layout::{self, opt};
use crate::api::audit::{cursor, open_log, parse_cursor, unreadable};
use crate::error::ApiError;
use crate::AppState;

/// Events per page of each log.
const PAGE: i64 = 20;

/// The tenant page's query: where each log's page ends, as a cursor in the audit
/// endpoint's form (`<tenant>.<log>.<position>`); the page holds the events before that
/// position.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditCursors {
    /// Page of the tenant's own log.
    pub(crate) tenant_before: Option<String>,
    /// Page of the control log.
    pub(crate) control_before: Option<String>,
}

/// One log's page and chain state.
struct LogView {
    log: Log,
    /// Newest first.
    events: Vec<StoredEvent>,
    verdict: Option<Verdict>,
    /// The latest signed checkpoint's position.
    checkpoint: Option<i64>,
    /// The cursor of the next (older) page.
    older: Option<String>,
}

/// Reads one log's page (events before `before`, newest first) and verifies its chain.
async fn read(
    state: &AppState,
    tid: TenantId,
    log: Log,
    before: Option<&str>,
) -> Result<LogView, ApiError> {
    let before = before.map(|c| parse_cursor(c, tid, log)).transpose()?;
    let conn = state.catalog().await?;
    let catalog: &tokio_postgres::Client = &conn;
    let reader = open_log(state, catalog, tid, log).await?;
    let Some(client) = reader.client(catalog) else {
        return Ok(LogView {
            log,
            events: Vec::new(),
            verdict: None,
            checkpoint: None,
            older: None,
        });
    };
    let uuid = tid.as_uuid();
    let bad = |e: tenancy_audit::Error| unreadable(tid, &e);
    let trust = match state.audit() {
        Some(s) => Trust::Keys(vec![s.public_key_hex()]),
        None => Trust::AnyKey,
    };
    let verdict = tenancy_audit::verify_log(client, Some(catalog), log, Some(uuid), &[], &trust)
        .await
        .map_err(bad)?
        .into_iter()
        .next();
    let checkpoint = tenancy_audit::load_log_checkpoints(catalog, log, Some(uuid))
        .await
        .map_err(bad)?
        .iter()
        .map(|c| c.chain_pos)
        .max();
    // Sealed positions run from the anchor's + 1 without a gap (a gap is reported by the
    // verdict): the page before position `end` starts at `end - PAGE`.
    let (base, sealed) = verdict
        .as_ref()
        .map_or((0, 0), |v| (v.base, v.sealed as i64));
    let end = before.unwrap_or(base + sealed + 1);
    let after = (end - 1 - PAGE).max(base);
    let (mut events, _) = tenancy_audit::load_page(client, log, uuid, after, PAGE)
        .await
        .map_err(bad)?;
    events.retain(|e| e.chain_pos.is_some_and(|p| p < end));
    events.reverse();
    Ok(LogView {
        log,
        events,
        verdict,
        checkpoint,
        older: (after > base).then(|| cursor(tid, log, after + 1)),
    })
}

/// The chain's state in a sentence.
fn chain_state(v: &LogView) -> Markup {
    let Some(verdict) = v
        .verdict
        .as_ref()
        .filter(|d| d.sealed + d.unsealed > 0 || d.tampering.is_some())
    else {
        return html! { p.chain { "No events." } };
    };
    let unsealed = html! {
        @if verdict.unsealed > 0 { " " (verdict.unsealed) " events are not yet sealed (they join the chain at the sealer's next pass)." }
    };
    match &verdict.tampering {
        Some(t) => html! {
            p.error.chain role="alert" {
                "Verification failed at the first bad event"
                @if let Some(p) = t.chain_pos { ", chain position " (p) }
                @if let Some(s) = t.seq { " (seq " (s) ")" }
                ": " (t.to_string()) "." (unsealed)
            }
        },
        None => html! {
            p.chain.verified {
                @match v.checkpoint {
                    Some(c) => { "Verified up to the latest checkpoint (chain position " (c) "); " (verdict.sealed) " sealed events, head at position " (verdict.head) "." }
                    None => { (verdict.sealed) " sealed events chained up to position " (verdict.head) "; no checkpoint is signed yet." }
                }
                (unsealed)
            }
        },
    }
}

fn when(us: i64) -> Markup {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000) {
        Ok(t) => layout::time(t),
        Err(_) => html! { (us) " µs" },
    }
}

/// Who acted: the subject, with its kind unless the subject names it (`admin:…`).
fn actor(e: &StoredEvent) -> String {
    let r = &e.recorded;
    match &r.actor_subject {
        Some(s) if s.starts_with(&format!("{}:", r.actor_kind)) => s.clone(),
        Some(s) => format!("{s} ({})", r.actor_kind),
        None => r.actor_kind.clone(),
    }
}

fn log_section(tenant: &str, v: &LogView, other: Option<&str>) -> Markup {
    let name = v.log.as_str();
    let (title, id) = match v.log {
        Log::Tenant => ("Tenant log (the application's events)", "audit-tenant"),
        Log::Control => ("Control log (the control plane's changes)", "audit-control"),
    };
    let older = v.older.as_ref().map(|c| {
        let mut q = format!("{name}_before={c}");
        if let Some(o) = other {
            q.push('&');
            q.push_str(o);
        }
        format!("/console/tenants/{tenant}?{q}#h-{id}")
    });
    html! {
        h3 #(format!("h-{id}")) { (title) }
        (chain_state(v))
        @if !v.events.is_empty() {
            div.scroll { table id=(id) {
                caption.visually-hidden { (title) ", newest first" }
                thead { tr { th scope="col" { "Position" } th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Actor" } th scope="col" { "Target" } th scope="col" { "Outcome" } } }
                tbody { @for e in &v.events { tr {
                    td { (opt(e.chain_pos)) } td { (when(e.occurred_at_us)) } th scope="row" { (e.recorded.action) }
                    td { (actor(e)) }
                    td { (opt(e.recorded.target.as_deref())) } td { (e.recorded.outcome) }
                } } }
            } }
        }
        @if let Some(href) = older { p.next { a href=(href) rel="next" { "Older events" } } }
    }
}

/// The audit section of tenant `tid`'s page (a log that cannot be read says why, the
/// rest of the page is shown).
pub(crate) async fn section(state: &AppState, tid: TenantId, q: &AuditCursors) -> Markup {
    let tenant = read(state, tid, Log::Tenant, q.tenant_before.as_deref()).await;
    let control = read(state, tid, Log::Control, q.control_before.as_deref()).await;
    // Paging one log keeps the other where it is.
    let keep = |log: Log, c: &Option<String>| {
        c.as_ref()
            .filter(|c| parse_cursor(c, tid, log).is_ok())
            .map(|c| format!("{}_before={c}", log.as_str()))
    };
    let view = |r: &Result<LogView, ApiError>, other: Option<String>, log: Log| match r {
        Ok(v) => log_section(&tid.to_string(), v, other.as_deref()),
        Err(e) => html! {
            h3 { (log.as_str()) " log" }
            p.error role="alert" { "This log cannot be shown: " (e.detail) }
        },
    };
    html! {
        section #audit aria-labelledby="h-audit" {
            h2 #h-audit { "Audit events" }
            (view(&tenant, keep(Log::Control, &q.control_before), Log::Tenant))
            (view(&control, keep(Log::Tenant, &q.tenant_before), Log::Control))
        }
    }
}
