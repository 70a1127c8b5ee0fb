//! The configuration rules on every write, over HTTP: a change that brings a finding
//! from the rules' `reject_from` severity on is refused with a `config-rule` problem
//! naming the rule, and nothing of it is stored; one below it is made and handed to the
//! rules' sink as a warning.

use std::sync::{Arc, Mutex};

use serde_json::json;
use tenancy_config::model::OverrideTarget;
use tenancy_config_service::rules::RuleCheck;
use tenancy_config_service::ChangeMeta;
use tenancy_insights::anomaly::{AnomalyKind, Severity};
use tenancy_insights::rules::{Finding, RulesConfig};
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::support::*;

fn refused(r: &Resp, rule: &str) {
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(r.body["code"], "config-rule", "{:?}", r.body);
    assert_eq!(r.body["type"], "urn:tenancy:problem:config-rule");
    let detail = r.body["detail"].as_str().expect("detail");
    assert!(detail.starts_with(&format!("rule {rule}: ")), "{detail}");
}

/// Rows of the change log, overrides and audit events (what a refused change must not
/// leave behind).
async fn stored(db: &tenancy_pg::testing::TestDb) -> (i64, i64, i64) {
    let c = connect(db.config_as(OWNER_ROLE)).await;
    let n = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0) }
    };
    (
        n("SELECT count(*) FROM tenancy_catalog.config_changes").await,
        n("SELECT count(*) FROM tenancy_catalog.config_overrides").await,
        n("SELECT count(*) FROM tenancy_catalog.audit_log").await,
    )
}

#[tokio::test]
async fn a_change_a_rule_refuses_is_a_problem_naming_the_rule_and_nothing_is_stored() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let eu = tenant(&db, "team", "eu-west").await;
    let us = tenant(&db, "team", "us-east").await;
    let boolean = json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off", "off_variant": "off"});
    let mut mfa = boolean.clone();
    mfa["default_variant"] = json!("on");
    assert_eq!(
        put(app.addr, "/v1/config/flags/mfa_required", mfa)
            .await
            .status,
        200
    );

    // An override turning a security flag off: refused, nothing stored.
    let before = stored(&db).await;
    let r = put(
        app.addr,
        &format!("/v1/config/tenants/{us}/overrides/flag/mfa_required"),
        json!({"value": "off", "reason": "customer asked"}),
    )
    .await;
    refused(&r, "security_override");
    assert!(r.body["detail"]
        .as_str()
        .unwrap_or("")
        .contains(&us.to_string()));
    assert_eq!(
        stored(&db).await,
        before,
        "no change, override or audit event"
    );
    // Turning it on is fine.
    let r = put(
        app.addr,
        &format!("/v1/config/tenants/{us}/overrides/flag/mfa_required"),
        json!({"value": "on", "reason": "customer asked"}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // A flag excluding eu-west by its own rule; then a rule before it that serves
    // everyone reaches eu-west: refused.
    let mut billing = boolean.clone();
    billing["rules"] = json!([{"name": "not in the EU", "conditions": [{"attribute": "region", "op": "not_in", "values": ["eu-west"]}],
                               "serve": {"type": "rollout", "weights": [{"variant": "on", "weight": 5000}, {"variant": "off", "weight": 5000}]}}]);
    assert_eq!(
        put(app.addr, "/v1/config/flags/new_billing", billing.clone())
            .await
            .status,
        200
    );
    let mut everyone = billing.clone();
    everyone["rules"] = json!([{"name": "everyone", "conditions": [], "serve": {"type": "variant", "variant": "on"}},
                               billing["rules"][0].clone()]);
    let before = stored(&db).await;
    let r = put(app.addr, "/v1/config/flags/new_billing", everyone).await;
    refused(&r, "rollout_region");
    assert!(r.body["detail"]
        .as_str()
        .unwrap_or("")
        .contains(&eu.to_string()));
    assert_eq!(stored(&db).await, before);
    let c = connect(db.config_as(OWNER_ROLE)).await;
    let def: serde_json::Value = c
        .query_one(
            "SELECT definition FROM tenancy_catalog.config_flags WHERE key = 'new_billing'",
            &[],
        )
        .await
        .expect("flag")
        .get(0);
    assert_eq!(def["rules"].as_array().map(Vec::len), Some(1), "unchanged");

    // The EU tenant lacks gdpr already: that finding is not the change's, and its tags
    // can still change. Giving it the tag and taking it away again brings the finding.
    let attrs = format!("/v1/config/tenants/{eu}/attributes");
    assert_eq!(
        put(app.addr, &attrs, json!({"tags": ["beta"]}))
            .await
            .status,
        200
    );
    assert_eq!(
        put(app.addr, &attrs, json!({"tags": ["beta", "gdpr"]}))
            .await
            .status,
        200
    );
    refused(
        &put(app.addr, &attrs, json!({"tags": ["beta"]})).await,
        "compliance_missing",
    );
}

#[tokio::test]
async fn a_finding_below_reject_from_is_a_warning_and_the_change_is_made() {
    let db = fresh_db().await;
    let eu = tenant(&db, "team", "eu-west").await;
    let seen: Arc<Mutex<Vec<Finding>>> = Arc::default();
    let sink = {
        let seen = Arc::clone(&seen);
        Arc::new(move |f: &[Finding]| seen.lock().expect("lock").extend_from_slice(f))
    };
    let cfg = RulesConfig {
        reject_from: Severity::Critical,
        ..RulesConfig::default()
    };
    let store = store(&db).with_rules(Some(RuleCheck {
        config: Arc::new(cfg),
        sink: Some(sink),
    }));
    let meta = ChangeMeta::new("alice@ops", "test");
    store
        .put_tenant_attributes(eu, &["gdpr".into()], &Default::default(), &meta)
        .await
        .expect("tag");
    assert!(seen.lock().expect("lock").is_empty());
    let v = store
        .put_tenant_attributes(eu, &[], &Default::default(), &meta)
        .await
        .expect("a warning does not refuse");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].kind, AnomalyKind::ComplianceMissing);
    assert_eq!(seen[0].tenant, Some(eu));
    assert_eq!(seen[0].severity, Severity::High);
    let log = store.changes(v - 1, 10, Some(eu)).await.expect("log");
    assert_eq!(log.last().map(|c| c.version), Some(v), "stored");

    // The fleet check sees the same finding; without rules, writes are not checked.
    let fleet = store.fleet_findings().await.expect("fleet").expect("rules");
    assert!(fleet
        .iter()
        .any(|f| f.kind == AnomalyKind::ComplianceMissing && f.tenant == Some(eu)));
    let unchecked = store.clone().with_rules(None);
    unchecked
        .put_flag(
            &tenancy_config::model::Flag::boolean("mfa_required".parse().expect("key")),
            &meta,
        )
        .await
        .expect("flag");
    unchecked
        .put_override(
            &tenancy_config::model::Override {
                tenant_id: eu,
                target: OverrideTarget::Flag("mfa_required".parse().expect("key")),
                value: json!("off"),
                reason: "unchecked".into(),
                expires_at: None,
                created_by: String::new(),
            },
            &meta,
        )
        .await
        .expect("no rules, no refusal");
    assert!(unchecked.fleet_findings().await.expect("none").is_none());
}
