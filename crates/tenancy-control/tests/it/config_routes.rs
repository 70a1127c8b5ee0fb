//! The configuration service mounted in the control plane: behind admin authentication,
//! the actor taken from the admin token, changes visible through the evaluation endpoint,
//! and its paths in the one OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_config_service::dns::StaticResolver;
use tenancy_config_service::ConfigState;
use tenancy_control::{router, AppState};
use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{CONFIG_READER_ROLE, OWNER_ROLE};

use crate::api::{call, fresh_state, AUTH, JSON, TOKEN};

/// `state` with the configuration service on `db` (the snapshot client as the
/// configuration reader role, as an application would run it).
pub(crate) async fn with_config(db: &TestDb, state: AppState) -> AppState {
    let client = ConfigClient::connect(
        db.config_as(CONFIG_READER_ROLE),
        ClientOptions {
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..ClientOptions::default()
        },
    )
    .await
    .expect("config client");
    state.with_config(ConfigState {
        store: tenancy_config_service::Store::new(db.config_as(OWNER_ROLE), 2).expect("store"),
        client,
        resolver: Arc::new(StaticResolver::new()),
    })
}

/// The configuration paths are in the document, each needs the admin token and names
/// its 401, and every `$ref` resolves (the two crates' problem schemas do not collide).
pub(crate) fn check_config_paths(doc: &Value) {
    for p in [
        "/v1/config/flags/{key}",
        "/v1/config/tenants/{tenant}/domains/{hostname}/verify",
        "/v1/evaluate/{tenant}",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    let put_flag = &doc["paths"]["/v1/config/flags/{key}"]["put"];
    assert_eq!(put_flag["security"], json!([{"admin": []}]), "{put_flag}");
    assert_eq!(
        put_flag["responses"]["401"]["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let schemas = &doc["components"]["schemas"];
    // One problem document for the control plane and the configuration service.
    assert!(schemas.get("Problem").is_some() && schemas.get("ConfigProblem").is_none());
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(refs.len() > 20, "{refs:?}");
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.get(name).is_some(), "dangling $ref {r}");
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

const FLAG_ON: &str = r#"{"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "on", "off_variant": "off"}"#;

#[tokio::test]
async fn config_routes_need_an_admin_token() {
    let (db, state, _p) = fresh_state().await;
    let app = router(with_config(&db, state).await);
    let tenant = uuid::Uuid::new_v4();
    for (method, uri, body) in [
        ("PUT", "/v1/config/flags/new-billing", Some(FLAG_ON)),
        ("POST", "/v1/config/flags/new-billing/kill", None),
        ("GET", "/v1/config/changes", None),
        ("GET", &*format!("/v1/evaluate/{tenant}"), None),
    ] {
        for auth in [None, Some(("authorization", "Bearer not-the-token"))] {
            let mut headers = vec![JSON, ("x-tenancy-actor", "mallory")];
            headers.extend(auth);
            let (s, ct, body) = call(&app, method, uri, &headers, body).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {uri}: {body}");
            assert_eq!(ct, "application/problem+json");
            assert_eq!(body["code"], "unauthenticated", "{body}");
            assert_eq!(body["status"], 401);
        }
    }
    // Nothing was written.
    let (s, _, log) = call(&app, "GET", "/v1/config/changes", &[AUTH], None).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    assert_eq!(log["changes"], json!([]));
    // Unknown paths are still 404, not 401.
    let (s, _, _) = call(&app, "GET", "/v1/config/nothing-here", &[], None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_admin_flag_change_is_visible_through_evaluate() {
    let (db, state, _p) = fresh_state().await;
    let app = router(with_config(&db, state).await);
    let (s, _, created) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "cfg-tenant-1")],
        Some(r#"{"slug":"acme","display_name":"Acme","plan":"pro","region":"eu-west","placement":"pooled"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{created}");
    let tenant = created["tenant"]["id"].as_str().expect("id").to_owned();
    let evaluate = format!("/v1/evaluate/{tenant}?flags=new-billing");

    let (_, _, before) = call(&app, "GET", &evaluate, &[AUTH], None).await;
    assert_eq!(
        before["flags"]["new-billing"]["error"], "flag_not_found",
        "{before}"
    );
    // No x-tenancy-actor: the actor is the admin token's principal.
    let (s, _, written) = call(
        &app,
        "PUT",
        "/v1/config/flags/new-billing",
        &[AUTH, JSON],
        Some(FLAG_ON),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{written}");
    let version = written["version"].as_i64().expect("version");
    let mut seen = Value::Null;
    for _ in 0..250 {
        let (s, _, body) = call(&app, "GET", &evaluate, &[AUTH], None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        if body["version"].as_i64() >= Some(version) {
            seen = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen["flags"]["new-billing"]["value"], json!(true), "{seen}");
    assert_eq!(seen["flags"]["new-billing"]["variant"], "on", "{seen}");

    // An explicit actor is kept.
    let (s, _, _) = call(
        &app,
        "POST",
        "/v1/config/flags/new-billing/kill",
        &[
            AUTH,
            ("x-tenancy-actor", "alice@ops"),
            ("x-tenancy-reason", "incident"),
        ],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, log) = call(&app, "GET", "/v1/config/changes", &[AUTH], None).await;
    let changes = log["changes"].as_array().expect("changes");
    let digest = tenancy_control::auth::token_digest(TOKEN);
    let principal: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(changes.len(), 2, "{log}");
    assert_eq!(changes[0]["actor"], format!("admin:{principal}"));
    assert_eq!(changes[1]["actor"], "alice@ops");
    assert_eq!(changes[1]["reason"], "incident");
}
