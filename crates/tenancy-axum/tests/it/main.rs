//! Tests of the layer's database-free parts, and (`layer`) of its authentication rules
//! over real HTTP on a real cluster. The layer end to end (every source, every rule,
//! jobs, JWT attacks, transactions) is tested over HTTP against the example app in
//! `examples/invoicing/tests/it`.

mod layer;

use std::collections::HashSet;

use axum::response::IntoResponse;
use tenancy_axum::api_key::ApiKey;
use tenancy_axum::{HttpError, ProblemType};
use tenancy_core::TenantId;
use tenancy_jobs::JobSigner;

#[test]
fn problem_table_is_stable_and_unique() {
    let codes: HashSet<&str> = ProblemType::ALL.iter().map(|p| p.code()).collect();
    assert_eq!(codes.len(), ProblemType::ALL.len(), "codes are unique");
    let table: Vec<(&str, u16)> = ProblemType::ALL
        .iter()
        .map(|p| (p.code(), p.status().as_u16()))
        .collect();
    assert_eq!(
        table,
        vec![
            ("unauthenticated", 401),
            ("invalid-credentials", 401),
            ("tenant-mismatch", 403),
            ("tenant-not-found", 404),
            ("tenant-suspended", 403),
            ("tenant-provisioning", 409),
            ("tenant-deleted", 410),
            ("insufficient-scope", 403),
            ("permission-denied", 403),
            ("not-found", 404),
            ("bad-request", 400),
            ("validation", 422),
            ("conflict", 409),
            ("unavailable", 503),
            ("internal", 500),
        ]
    );
}

#[test]
fn internal_errors_are_problem_json_without_details() {
    let resp = HttpError::internal("password=hunter2 at db.internal:5432").into_response();
    assert_eq!(resp.status().as_u16(), 500);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let body = rt
        .block_on(axum::body::to_bytes(resp.into_body(), 4096))
        .expect("body");
    let text = String::from_utf8_lossy(&body);
    assert!(
        !text.contains("hunter2") && !text.contains("db.internal"),
        "{text}"
    );
    assert!(
        text.contains("\"type\":\"urn:tenancy:problem:internal\""),
        "{text}"
    );
}

#[test]
fn api_keys_parse_and_hash() {
    let k = ApiKey::generate();
    assert!(k.expose().starts_with("tnk_"));
    assert_eq!(ApiKey::parse(k.expose()).as_ref(), Some(&k));
    assert_eq!(k.hash(), ApiKey::parse(k.expose()).expect("parses").hash());
    assert!(
        !format!("{k:?}").contains(&k.expose()[21..]),
        "Debug hides the secret"
    );
    for bad in [
        "",
        "tnk_",
        "tnk_abc_def",
        "sk_live_123",
        &k.expose().to_uppercase(),
    ] {
        assert!(ApiKey::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn job_envelopes_bind_tenant_kind_and_payload() {
    let signer = JobSigner::new([3; 32]);
    let t = TenantId::new_random();
    let env = signer.seal(t, "send_invoice", &serde_json::json!({"invoice_id": "x"}));
    assert!(signer.verify(&env));
    let mut other = env.clone();
    other.tenant = TenantId::new_random();
    assert!(!signer.verify(&other), "retargeted to another tenant");
    let mut other = env.clone();
    other.kind = "delete_everything".into();
    assert!(!signer.verify(&other));
    let mut other = env.clone();
    other.payload = "{\"invoice_id\":\"y\"}".into();
    assert!(!signer.verify(&other));
    let mut other = env.clone();
    other.signature = None;
    assert!(!signer.verify(&other), "unsigned");
    assert!(!JobSigner::new([4; 32]).verify(&env), "other key");
}
