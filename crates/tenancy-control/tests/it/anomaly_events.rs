//! New detections delivered by `tenancy serve` (build + run, real HTTP) as Standard
//! Webhooks `anomaly.detected` events to a real local receiver that verifies every
//! signature: an application's access detection, and a configuration rule's warning on
//! a configuration write.

use std::sync::atomic::Ordering;

use serde_json::json;
use tenancy_control::audit::AuditConfig;
use tenancy_control::SignupConfig;
use tenancy_insights::anomaly::{AnomalyKind, Detection, DetectionBatch, Evidence, Severity};
use tenancy_test_support::webhooks::{Message, WebhookReceiver};

use crate::api::{fresh_state_with, AUTH, JSON};
use crate::audit::{config, create, eventually};
use crate::hostile::http;

/// The anomaly events `rx` received of detections of `kind`.
fn anomalies(rx: &WebhookReceiver, kind: &str) -> Vec<Message> {
    rx.messages()
        .into_iter()
        .filter(|(_, v)| v["type"] == "anomaly.detected" && v["data"]["detection"]["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn new_detections_are_delivered_as_signed_webhook_events() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let rx = WebhookReceiver::start().await;
    let mut cfg = config(&db, AuditConfig::default());
    cfg.event_receivers = vec![tenancy_control::config::ReceiverConfig {
        name: "siem".into(),
        url: rx.url.clone(),
        secret: rx.secret.clone(),
    }];
    // Warnings rather than refusals, so that a write brings a detection.
    cfg.insights.rules.reject_from = Severity::Critical;
    let app = tenancy_control::build(cfg).await.expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let t = create(port, "watched", "req-anomaly-1").await;

    // An application's detection: one event, whose body is the detection as kept.
    let detection = Detection {
        id: 3,
        tenant_id: Some(t),
        subject: None,
        kind: AnomalyKind::Enumeration,
        first_hour: 1_800_000_000,
        last_hour: 1_800_000_000,
        score: 2.5,
        severity: Severity::High,
        evidence: vec![Evidence {
            signal: "not_found_per_hour".into(),
            baseline: 0.9,
            observed: 41.0,
        }],
    };
    let batch = DetectionBatch {
        source: "billing@host-1".into(),
        detections: vec![detection.clone()],
    };
    let body = serde_json::to_string(&batch).expect("json");
    for _ in 0..2 {
        let r = http(
            port,
            "127.0.0.1",
            "POST",
            "/v1/insights/anomalies",
            &[AUTH, JSON],
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let (id, msg) = eventually("the enumeration event", || async {
        anomalies(&rx, "enumeration").into_iter().next()
    })
    .await;
    assert!(
        id.starts_with("msg_anomaly_") && id.ends_with("_siem"),
        "{id}"
    );
    assert_eq!(msg["data"]["source"], "billing@host-1");
    assert_eq!(
        msg["data"]["detection"],
        serde_json::to_value(&detection).expect("json")
    );
    assert!(msg["timestamp"].as_str().is_some());

    // A configuration write that brings a rule's finding below `reject_from`: made, and
    // delivered as a detection of the source `rules`.
    let attrs = format!("/v1/config/tenants/{t}/attributes");
    for tags in [json!(["gdpr"]), json!([])] {
        let r = http(
            port,
            "127.0.0.1",
            "PUT",
            &attrs,
            &[AUTH, JSON, ("x-tenancy-actor", "alice@ops")],
            Some(&json!({ "tags": tags }).to_string()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (_, msg) = eventually("the compliance event", || async {
        anomalies(&rx, "compliance_missing").into_iter().next()
    })
    .await;
    let d = &msg["data"]["detection"];
    assert_eq!(msg["data"]["source"], "rules");
    assert_eq!(d["tenant_id"], t.to_string());
    assert_eq!(d["subject"], "flag:gdpr");
    assert_eq!(d["severity"], "high");
    let listed = http(
        port,
        "127.0.0.1",
        "GET",
        "/v1/insights/anomalies?kind=compliance_missing",
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["anomalies"][0]["source"], "rules");

    // The update of the application's detection was not delivered again, and every
    // message was signed correctly.
    assert_eq!(anomalies(&rx, "enumeration").len(), 1);
    assert_eq!(rx.bad_signatures.load(Ordering::Relaxed), 0);
    let _ = stopper.send(true);
    running.await.expect("join").expect("stopped");
}
