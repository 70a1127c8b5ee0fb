//! The HTML page of a signed report: one self-contained file (inline style, inline SVG
//! charts, no script that runs, no external reference; a Content-Security-Policy that
//! forbids loading anything), every value escaped (maud escapes all text and attribute
//! values; the embedded JSON escapes `<`, `>` and `&`), and the signed JSON document
//! embedded as data so `tenancy report verify` can check the page.
//!
//! Rendering is a pure function of the signed document (no clock, no environment), so a
//! verifier of the same version re-renders the page and compares it byte for byte.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::model::{ChainView, FindingView, Location, PlacementPeriod, SignedReport};

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1c2430;background:#f6f7f9}
main{max-width:1040px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:32px 0 8px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
table{border-collapse:collapse;width:100%;background:#fff;margin:8px 0}th,td{border:1px solid #d5dae1;padding:4px 8px;text-align:left;vertical-align:top;font-size:.92em}
th{background:#eef1f5}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.88em;word-break:break-all}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:16px 0}.card{background:#fff;border:1px solid #d5dae1;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:1.1em}.ok{color:#146c2e}.bad{color:#a4161a}.warn{color:#8a5a00}.muted{color:#5b6573}
svg{background:#fff;border:1px solid #d5dae1;max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#1c2430}
.s-tenant{fill:#2f5d9e}.s-control{fill:#9db8dc}.s-anomaly{fill:#b5462f}.p-pooled{fill:#4c8c4a}.p-schema{fill:#c68a1d}.p-dedicated{fill:#5a4fa8}.axis{stroke:#8d96a3;stroke-width:1}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
";

/// The page of `signed`.
pub fn render(signed: &SignedReport) -> String {
    page(signed).into_string()
}

/// The signed document as JSON that may sit inside a `<script>` element: `<`, `>` and
/// `&` (only ever inside strings) written as `\u003c`, `\u003e`, `\u0026`.
fn embedded_json(signed: &SignedReport) -> String {
    serde_json::to_string_pretty(signed)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn page(s: &SignedReport) -> Markup {
    let r = &s.report;
    let t = &r.tenant;
    let open_anomalies = r.anomalies.open;
    let residency_ok = r.residency.current_region_allowed && r.residency.periods_outside.is_empty();
    let chains_ok = [&r.audit.tenant_log, &r.audit.control_log]
        .iter()
        .all(|c| c.status == "intact" || c.status == "empty");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Compliance evidence: " (t.display_name) " (" (t.slug) ")" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    h1 { "Compliance evidence: " (t.display_name) }
                    p.muted {
                        "Tenant " code { (t.id) } " · slug " code { (t.slug) } " · plan " (t.plan)
                        " · state " (t.state) " · created " (t.created_at)
                    }
                    p.muted {
                        "Generated " (r.generated_at) " by " (r.generator) ". Signed with Ed25519 key "
                        code { (s.signature.key_id) } " (public key " code { (s.signature.public_key) } ")."
                    }
                    div.cards {
                        (card("Residency", if residency_ok { "kept" } else { "VIOLATED" }, residency_ok))
                        (card("Isolation errors", &r.isolation_label(), r.isolation.status == "checked" && r.isolation.errors == 0 && r.isolation.probe_findings.iter().all(|f| f.severity != "error")))
                        (card("Audit chains", if chains_ok { "intact" } else { "NOT VERIFIED" }, chains_ok))
                        (card("Open anomalies", &open_anomalies.to_string(), open_anomalies == 0))
                        (card("Legal hold", if r.retention.legal_hold { "set" } else { "none" }, true))
                        (card("Encryption key", &r.keys.kek, r.keys.kek == "live"))
                    }
                    (placement(s))
                    (residency(s))
                    (isolation(s))
                    (keys(s))
                    (audit(s))
                    (anomalies(s))
                    (retention(s))
                    (transfers(s))
                    h2 { "Verifying this page" }
                    p {
                        "This page embeds its signed data. " code { "tenancy report verify FILE --public-key " (s.signature.public_key) }
                        " checks the signature (" (s.signature.signed_bytes) ") and that the page is exactly what that data renders to."
                    }
                    script type="application/json" id="tenancy-report-data" { (PreEscaped(embedded_json(s))) }
                }
            }
        }
    }
}

impl super::model::Report {
    fn isolation_label(&self) -> String {
        if self.isolation.status == "checked" {
            let probe = self
                .isolation
                .probe_findings
                .iter()
                .filter(|f| f.severity == "error")
                .count();
            (self.isolation.errors as usize + probe).to_string()
        } else {
            "not checked".to_owned()
        }
    }
}

fn card(label: &str, value: &str, ok: bool) -> Markup {
    html! {
        div.card { span.muted { (label) } b class=(if ok { "ok" } else { "bad" }) { (value) } }
    }
}

fn opt(v: &Option<String>) -> Markup {
    html! {
        @match v { Some(v) => (v), None => span.muted { "—" } }
    }
}

fn location(l: &Location) -> Markup {
    html! {
        (l.placement) " in " (l.region) " on "
        @match &l.cluster { Some(c) => (c), None => code { (l.cluster_id) } }
    }
}

fn parse(t: &str) -> Option<i128> {
    OffsetDateTime::parse(t, &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos() / 1_000_000_000)
}

/// The placement timeline: one bar per period, its width its share of the tenant's life.
fn timeline(periods: &[PlacementPeriod], now: &str) -> Markup {
    const W: i128 = 680;
    let (Some(start), Some(end)) = (periods.first().and_then(|p| parse(&p.from)), parse(now))
    else {
        return html! { p.muted { "No placement history." } };
    };
    let span = (end - start).max(1);
    let x = |t: i128| 10 + ((t - start).clamp(0, span) * W) / span;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 700 70" width="700" height="70" role="img" aria-label="Placement timeline" {
            @for p in periods {
                @let x0 = x(parse(&p.from).unwrap_or(start));
                @let x1 = x(p.until.as_deref().and_then(parse).unwrap_or(end));
                rect class=(format!("p-{}", p.location.placement)) x=(x0) y="10" width=((x1 - x0).max(2)) height="26" {
                    title { (p.location.placement) " in " (p.location.region) ": " (p.from) " – " (p.until.as_deref().unwrap_or("now")) }
                }
                text x=(x0 + 2) y="52" { (p.location.placement) " · " (p.location.region) }
            }
            line.axis x1="10" y1="38" x2="690" y2="38" {}
        }
        p.legend.muted {
            span.p-pooled style="background:#4c8c4a" {} "pooled"
            span.p-schema style="background:#c68a1d" {} "schema"
            span.p-dedicated style="background:#5a4fa8" {} "dedicated"
        }
    }
}

/// A bar chart: one bar per label, stacked from `series` (CSS class, values).
fn bars(label: &str, labels: &[String], series: &[(&str, Vec<u64>)]) -> Markup {
    const H: u64 = 120;
    let n = labels.len().max(1) as u64;
    let step = 680 / n;
    let value = |s: &(&str, Vec<u64>), i: usize| s.1.get(i).copied().unwrap_or(0);
    let max = (0..labels.len())
        .map(|i| series.iter().map(|s| value(s, i)).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    // Each bar's segments, bottom up: (class, x, y, height, tooltip).
    let mut rects = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let x = 10 + i as u64 * step;
        let mut y = 20 + H;
        for s in series {
            let v = value(s, i);
            if v == 0 {
                continue;
            }
            let h = (v * H / max).max(1);
            y -= h;
            rects.push((s.0, x, y, h, format!("{l}: {v}")));
        }
    }
    let every = labels.len().div_ceil(6).max(1);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 700 170" width="700" height="170" role="img" aria-label=(label) {
            text x="10" y="14" { (label) " (max " (max) ")" }
            @for (class, x, y, h, tip) in &rects {
                rect class=(class) x=(x + 1) y=(y) width=(step.saturating_sub(2).max(1)) height=(h) { title { (tip) } }
            }
            @for (i, l) in labels.iter().enumerate() {
                @if i % every == 0 { text x=(10 + i as u64 * step) y="160" { (l) } }
            }
            line.axis x1="10" y1=(20 + H) x2="690" y2=(20 + H) {}
        }
    }
}

fn placement(s: &SignedReport) -> Markup {
    let p = &s.report.placement;
    html! {
        h2 id="placement" { "Placement and region history" }
        p { "Now: " (location(&p.current))
            @if let Some(x) = &p.schema_name { " · schema " code { (x) } }
            @if let Some(x) = &p.database_name { " · database " code { (x) } } }
        (timeline(&p.history, &s.report.generated_at))
        table {
            tr { th { "From" } th { "Until" } th { "Placement" } }
            @for h in &p.history {
                tr { td { (h.from) } td { (opt(&h.until)) } td { (location(&h.location)) } }
            }
        }
        h2 id="moves" { "Moves" }
        @if p.moves.is_empty() { p.muted { "No moves." } } @else {
            table {
                tr { th { "Started" } th { "From" } th { "To" } th { "Status" } th { "Switched" } th { "Finished" } }
                @for m in &p.moves {
                    tr { td { (m.started_at) } td { (location(&m.from)) } td { (location(&m.to)) } td { (m.status) } td { (opt(&m.switched_at)) } td { (opt(&m.finished_at)) } }
                }
            }
        }
    }
}

fn residency(s: &SignedReport) -> Markup {
    let r = &s.report.residency;
    html! {
        h2 id="residency" { "Residency policy" }
        p {
            @match &r.policy { Some(p) => { "Policy: " (p.join(", ")) "." }, None => { "No policy set: the tenant's current region is the only one allowed." } }
            " Allowed regions: " (r.allowed_regions.join(", ")) ". Current region "
            @if r.current_region_allowed { span.ok { "allowed" } } @else { span.bad { "NOT allowed" } } "."
        }
        @if r.periods_outside.is_empty() { p.ok { "Every placement period was in an allowed region." } } @else {
            p.bad { (r.periods_outside.len()) " placement period(s) in a region the policy does not allow:" }
            ul { @for p in &r.periods_outside { li { (location(&p.location)) " from " (p.from) " until " (p.until.as_deref().unwrap_or("now")) } } }
        }
    }
}

fn findings(title: &str, fs: &[FindingView]) -> Markup {
    html! {
        @if fs.is_empty() { p.ok { (title) ": none." } } @else {
            table {
                tr { th { "Severity" } th { "Rule" } th { "Object" } th { "Finding" } }
                @for f in fs {
                    tr { td class=(if f.severity == "error" { "bad" } else if f.severity == "warning" { "warn" } else { "muted" }) { (f.severity) }
                         td { code { (f.rule) } } td { code { (f.object) } } td { (f.message) } }
                }
            }
        }
    }
}

fn isolation(s: &SignedReport) -> Markup {
    let i = &s.report.isolation;
    html! {
        h2 id="isolation" { "Isolation evidence" }
        @if i.status != "checked" {
            p.bad { "The isolation check could not run: " (i.unavailable_reason.as_deref().unwrap_or("unknown reason")) }
        } @else {
            p { "tenancy check of database " code { (i.database.as_deref().unwrap_or("")) } " for role " code { (i.runtime_role.as_deref().unwrap_or("")) }
                " (context " (i.context_impl.as_deref().unwrap_or("none")) ", server " (i.server_version.unwrap_or(0)) "): "
                (i.errors) " error(s), " (i.warnings) " warning(s), " (i.info) " info." }
            (findings("Static audit findings", &i.findings))
            h3 { "Probe" }
            @if i.probe_ran { (findings("Probe findings (every cross-tenant attempt refused)", &i.probe_findings)) } @else { p.muted { "The probe did not run." } }
        }
    }
}

fn keys(s: &SignedReport) -> Markup {
    let k = &s.report.keys;
    html! {
        h2 id="keys" { "Encryption keys" }
        p { "Key-encryption key: " b { (k.kek) } @if let Some(v) = k.kek_version { " (version " (v) ")" } "." }
        @if !k.data_keys_readable { p.muted { "The tenant's data keys could not be read (no tenancy.data_keys in its database)." } }
        @else if k.data_keys.is_empty() { p.muted { "No data keys." } } @else {
            table {
                tr { th { "Data key version" } th { "Wrapped under KEK version" } th { "Created (rotation)" } }
                @for d in &k.data_keys { tr { td { (d.version) } td { (d.kek_version) } td { (d.created_at) } } }
            }
        }
        (events("Key events", &k.events))
    }
}

fn events(title: &str, es: &[super::model::ControlEvent]) -> Markup {
    html! {
        @if es.is_empty() { p.muted { (title) ": none recorded." } } @else {
            table {
                tr { th { "When" } th { "Action" } th { "Actor" } th { "Outcome" } th { "Target" } th { "Request" } }
                @for e in es { tr { td { (e.at) } td { code { (e.action) } } td { (e.actor) } td { (e.outcome) } td { (opt(&e.target)) } td { (opt(&e.request_id)) } } }
            }
        }
    }
}

fn chain_row(name: &str, c: &ChainView) -> Markup {
    html! {
        tr {
            td { (name) }
            td class=(if c.status == "intact" || c.status == "empty" { "ok" } else { "bad" }) { (c.status) }
            td { (c.sealed) } td { (c.unsealed) } td { (c.head) } td { (c.base) } td { (c.checkpoints) }
            td { @match &c.last_checkpoint { Some(cp) => { "position " (cp.chain_pos) " at " (cp.signed_at) br; code { (cp.head_hash) } }, None => span.muted { "—" } } }
            td { (opt(&c.problem)) }
        }
    }
}

fn audit(s: &SignedReport) -> Markup {
    let a = &s.report.audit;
    let labels: Vec<String> = a.per_day.iter().map(|d| d.day.clone()).collect();
    html! {
        h2 id="audit" { "Audit chain verification" }
        p { "Checkpoints trusted only from key " code { (a.trusted_key) } "." }
        table {
            tr { th { "Log" } th { "Status" } th { "Sealed" } th { "Unsealed" } th { "Head" } th { "From anchor" } th { "Checkpoints" } th { "Last checkpoint" } th { "Problem" } }
            (chain_row("tenant (application events)", &a.tenant_log))
            (chain_row("control plane", &a.control_log))
        }
        (bars("Audit events per day, last 30 days", &labels, &[
            ("s-tenant", a.per_day.iter().map(|d| d.tenant).collect()),
            ("s-control", a.per_day.iter().map(|d| d.control).collect()),
        ]))
        p.legend.muted { span style="background:#2f5d9e" {} "tenant log" span style="background:#9db8dc" {} "control log" }
    }
}

fn anomalies(s: &SignedReport) -> Markup {
    let a = &s.report.anomalies;
    let labels: Vec<String> = a.per_week.iter().map(|w| w.week.clone()).collect();
    html! {
        h2 id="anomalies" { "Access anomalies" }
        (bars("Anomalies per week, last 12 weeks", &labels, &[("s-anomaly", a.per_week.iter().map(|w| w.count).collect())]))
        @if a.items.is_empty() { p.ok { "No access anomalies reported." } } @else {
            table {
                tr { th { "Kind" } th { "Severity" } th { "Score" } th { "Flagged" } th { "Resolution" } th { "Evidence" } th { "Source" } }
                @for x in &a.items {
                    tr {
                        td { (x.kind) } td { (x.severity) } td { (x.score) }
                        td { (x.first_hour) " – " (x.last_hour) }
                        td class=(if x.resolution == "open" { "bad" } else { "ok" }) { (x.resolution) @if let Some(e) = &x.ended_at { " at " (e) } }
                        td { @for e in &x.evidence { code { (e.signal) } " " (e.observed) " vs " (e.baseline) br; } }
                        td { (x.source) " #" (x.id) }
                    }
                }
            }
        }
    }
}

fn retention(s: &SignedReport) -> Markup {
    let r = &s.report.retention;
    html! {
        h2 id="retention" { "Retention and legal hold" }
        p {
            "Audit events kept " @match r.audit_retention_days { Some(d) => { (d) " days" }, None => "forever" }
            ". Legal hold: " b { @if r.legal_hold { "set (nothing is purged)" } @else { "none" } } "."
            @if let Some(p) = &r.purge_after { " Data may be purged after " (p) "." }
        }
        @if r.anchors.is_empty() { p.muted { "No audit events purged." } } @else {
            table {
                tr { th { "Log" } th { "Purged up to position" } th { "Anchor signed" } }
                @for a in &r.anchors { tr { td { (a.log) } td { (a.chain_pos) } td { (a.signed_at) } } }
            }
        }
    }
}

fn transfers(s: &SignedReport) -> Markup {
    html! {
        h2 id="transfers" { "Exports and moves" }
        h3 { "Exports" }
        @if s.report.exports.is_empty() { p.muted { "Exports: none recorded." } } @else {
            table {
                tr { th { "When" } th { "Actor" } th { "Via" } th { "Rows" } th { "Bytes" } th { "Archive SHA-256" } th { "Request" } th { "Client" } }
                @for e in &s.report.exports {
                    tr {
                        td { (e.at) } td { (e.actor) } td { (opt(&e.via)) }
                        td { @match e.rows { Some(n) => { (n) }, None => span.muted { "—" } } }
                        td { @match e.bytes { Some(n) => { (n) }, None => span.muted { "—" } } }
                        td { @match &e.sha256 { Some(h) => code { (h) }, None => span.muted { "—" } } }
                        td { (opt(&e.request_id)) } td { (opt(&e.client_addr)) }
                    }
                }
            }
        }
        p.muted { "Moves are listed under Moves above; these are the control plane's audit events of exports, imports and moves." }
        (events("Export, import and move events", &s.report.transfers))
    }
}
