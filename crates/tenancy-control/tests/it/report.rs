//! `GET /v1/tenants/{id}/report` through `tenancy serve` (build + run, real HTTP): the
//! signed JSON document and the HTML page of a provisioned tenant with sealed audit
//! events, a pushed anomaly and a legal hold, each section from its source; the
//! signature verified with the control plane's key; refusals (401, 404, 422 naming the
//! field).

use serde_json::json;
use tenancy_control::audit::AuditConfig;
use tenancy_control::report::{verify_bytes, PageCheck, SignedReport};
use tenancy_control::SignupConfig;
use tenancy_core::TenantId;
use tenancy_insights::anomaly::{AnomalyKind, Detection, DetectionBatch, Evidence, Severity};

use crate::api::{fresh_state_with, AUTH, JSON};
use crate::audit::{app_events, config, create, eventually, runtime_pool};
use crate::hostile::{http, Resp};

const FROM: &str = "127.0.0.7";

async fn get(port: u16, path: &str, auth: bool) -> Resp {
    let headers: &[(&str, &str)] = if auth { &[AUTH] } else { &[] };
    http(port, FROM, "GET", path, headers, None).await
}

/// An open enumeration anomaly of `t`, flagged from two hours ago to this hour.
fn anomaly(t: TenantId) -> DetectionBatch {
    let hour = time::OffsetDateTime::now_utc().unix_timestamp() as u64 / 3600 * 3600;
    DetectionBatch {
        source: "invoicing@host-1".into(),
        detections: vec![Detection {
            id: 9,
            tenant_id: Some(t),
            subject: None,
            kind: AnomalyKind::Enumeration,
            first_hour: hour - 7200,
            last_hour: hour,
            score: 2.5,
            severity: Severity::High,
            evidence: vec![Evidence {
                signal: "not_found_per_hour".into(),
                baseline: 1.25,
                observed: 180.0,
            }],
        }],
    }
}

#[tokio::test]
async fn a_tenants_report_is_signed_gathered_from_its_sources_and_served_as_json_and_html() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let cfg = config(
        &db,
        AuditConfig {
            seal_interval_secs: 1,
            ..AuditConfig::default()
        },
    );
    let app = tenancy_control::build(cfg).await.expect("build");
    let port = app.port();
    let public_key = app.state().audit().expect("sealer").public_key_hex();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());

    let t = create(port, "reported", "req-report-1").await;
    eventually("the tenant active", || async {
        let r = get(port, &format!("/v1/tenants/{t}"), true).await;
        (r.body["state"] == "active").then_some(())
    })
    .await;
    let r = http(
        port,
        FROM,
        "POST",
        &format!("/v1/tenants/{t}/legal-hold"),
        &[AUTH, JSON, ("idempotency-key", "report-hold")],
        Some(&json!({"hold": true}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    app_events(&runtime_pool(&db), t, 3).await;
    let pushed = http(
        port,
        FROM,
        "POST",
        "/v1/insights/anomalies",
        &[AUTH, JSON],
        Some(&serde_json::to_string(&anomaly(t)).expect("json")),
    )
    .await;
    assert_eq!(pushed.status, 202, "{}", pushed.body);

    // The JSON document, once the sealer has sealed and checkpointed the three events.
    let path = format!("/v1/tenants/{t}/report");
    let doc = eventually("the tenant log sealed in the report", || async {
        let r = get(port, &path, true).await;
        assert_eq!(r.status, 200, "{}", r.body);
        (r.body["report"]["audit"]["tenant_log"]["last_checkpoint"]["chain_pos"] == 3).then_some(r)
    })
    .await;
    assert!(
        doc.headers["content-type"].starts_with("application/json"),
        "{:?}",
        doc.headers
    );
    let v = verify_bytes(&doc.raw, Some(&public_key)).expect("the report verifies");
    assert_eq!(v.tenant, t.to_string());
    assert_eq!(v.page, PageCheck::NotHtml);
    // One byte of the content edited: no longer valid.
    let text = String::from_utf8(doc.raw.clone()).expect("utf-8");
    let edited = text.replacen("\"legal_hold\":true", "\"legal_hold\":fals", 1);
    assert_ne!(edited, text);
    let edited = edited.replacen("\"legal_hold\":fals", "\"legal_hold\":false", 1);
    assert!(verify_bytes(edited.as_bytes(), Some(&public_key)).is_err());

    let signed: SignedReport = serde_json::from_slice(&doc.raw).expect("a signed report");
    let r = &signed.report;
    assert_eq!(r.tenant.slug, "reported");
    assert_eq!(r.tenant.state, "active");
    assert_eq!(r.placement.current.placement, "pooled");
    assert_eq!(r.placement.current.region, "eu-west");
    assert_eq!(r.placement.history.len(), 1);
    assert!(r.placement.moves.is_empty());
    assert_eq!(r.residency.allowed_regions, ["eu-west"]);
    assert!(r.residency.policy.is_none() && r.residency.current_region_allowed);
    // The isolation check ran on the tenants' shared database, and the probe (as the
    // runtime role, with the context key) found no way across tenants.
    assert_eq!(r.isolation.status, "checked", "{:?}", r.isolation);
    assert_eq!(r.isolation.runtime_role.as_deref(), Some("tenancy_app"));
    assert!(r.isolation.probe_ran, "{:?}", r.isolation);
    assert!(
        r.isolation
            .probe_findings
            .iter()
            .all(|f| f.severity != "error"),
        "{:?}",
        r.isolation.probe_findings
    );
    // Both audit chains verified against checkpoints signed by the control plane's key.
    let tl = &r.audit.tenant_log;
    assert_eq!(
        (tl.status.as_str(), tl.sealed, tl.head),
        ("intact", 3, 3),
        "{tl:?}"
    );
    assert_eq!(r.audit.trusted_key, public_key);
    assert_eq!(
        r.audit.control_log.status, "intact",
        "{:?}",
        r.audit.control_log
    );
    assert_eq!(r.audit.per_day.len(), 30);
    let today = r.audit.per_day.last().expect("today");
    assert_eq!(today.tenant, 3);
    assert!(today.control >= 2, "created and held: {today:?}");
    // The pushed anomaly, open, with its evidence; counted in this week.
    assert_eq!(r.anomalies.items.len(), 1);
    let a = &r.anomalies.items[0];
    assert_eq!(
        (a.kind.as_str(), a.severity.as_str()),
        ("enumeration", "high")
    );
    assert_eq!(a.resolution, "open");
    assert_eq!(a.evidence[0].observed, 180.0);
    assert_eq!(r.anomalies.open, 1);
    assert_eq!(r.anomalies.per_week.iter().map(|w| w.count).sum::<u64>(), 1);
    // Retention by plan (the default 365 days) and the hold.
    assert_eq!(r.retention.audit_retention_days, Some(365));
    assert!(r.retention.legal_hold);
    // Keys: no key directory configured; the data-key table is not installed.
    assert_eq!(r.keys.kek, "not_visible");
    assert!(!r.keys.data_keys_readable);
    assert!(r.transfers.is_empty());

    // The HTML page, by slug: self-contained, served with a policy that loads nothing,
    // and verifiable.
    let page = get(port, "/v1/tenants/reported/report?format=html", true).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(page.headers["content-security-policy"].starts_with("default-src 'none'"));
    let html = String::from_utf8(page.raw.clone()).expect("utf-8");
    for external in ["src=\"", "href=\"", "<link", "url(", "@import", "https://"] {
        assert!(!html.contains(external), "{external} in the page");
    }
    assert_eq!(html.matches("<svg").count(), 3);
    let v = verify_bytes(&page.raw, Some(&public_key)).expect("the page verifies");
    assert_eq!(v.page, PageCheck::Matches);

    // Refusals.
    let r = get(port, &path, false).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let unknown = uuid::Uuid::new_v4();
    let r = get(port, &format!("/v1/tenants/{unknown}/report"), true).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(port, "/v1/tenants/no-such-tenant/report", true).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(port, &format!("{path}?format=pdf"), true).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "format", "{}", r.body);

    let _ = stopper.send(true);
    tokio::time::timeout(std::time::Duration::from_secs(30), running)
        .await
        .expect("stops")
        .expect("join")
        .expect("served");
}
