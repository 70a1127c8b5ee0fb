//! Entitlements in the axum layer: the guard answers 403 problem+json when the plan lacks
//! a feature; handlers check numeric limits through the extractor.

use axum::extract::{Path, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tenancy_config::{ConfigClient, RequireFeatureLayer, TenantConfig};
use tenancy_config_service::ChangeMeta;
use tenancy_core::TenantId;

use crate::support::*;

/// Stands in for the tenant-resolution layer: the tenant comes from a header.
async fn tenant_from_header(mut req: Request, next: Next) -> Response {
    if let Some(t) = req
        .headers()
        .get("x-test-tenant")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TenantId>().ok())
    {
        req.extensions_mut().insert(t);
    }
    next.run(req).await
}

async fn add_seat(
    cfg: TenantConfig,
    Path(current): Path<u64>,
) -> Result<&'static str, tenancy_config::Problem> {
    cfg.check_limit("seats", current + 1)?;
    Ok("seat added")
}

fn app_router(client: ConfigClient) -> Router {
    Router::new()
        .route(
            "/sso",
            get(|| async { "sso settings" }).layer(RequireFeatureLayer::new(client.clone(), "sso")),
        )
        .route("/seats/{current}", post(add_seat))
        .layer(middleware::from_fn(tenant_from_header))
        .with_state(client)
}

#[tokio::test]
async fn guard_refuses_tenants_whose_plan_lacks_the_feature() {
    let db = fresh_db().await;
    let store = store(&db);
    let m = ChangeMeta::new("test", "");
    let pro = tenant(&db, "pro", "eu-west").await;
    let free = tenant(&db, "free", "eu-west").await;
    store
        .put_entitlement(
            &serde_json::from_value(json!({"key": "sso", "kind": "feature", "default": false}))
                .expect("def"),
            &m,
        )
        .await
        .expect("sso");
    store
        .put_entitlement(
            &serde_json::from_value(json!({"key": "seats", "kind": "limit", "default": 2}))
                .expect("def"),
            &m,
        )
        .await
        .expect("seats");
    let v = store
        .put_plan(
            &serde_json::from_value(json!({"key": "pro", "display_name": "Pro", "entitlements": {"sso": true, "seats": null}})).expect("plan"),
            &m,
        )
        .await
        .expect("plan");
    let client = client(&db).await;
    assert!(
        client
            .wait_for_version(v, std::time::Duration::from_secs(10))
            .await
    );
    let addr = serve(app_router(client)).await;

    let ok = call(
        addr,
        "GET",
        "/sso",
        &[("x-test-tenant", &pro.to_string())],
        None,
    )
    .await;
    assert_eq!(ok.status, 200);
    let no = call(
        addr,
        "GET",
        "/sso",
        &[("x-test-tenant", &free.to_string())],
        None,
    )
    .await;
    assert_eq!(no.status, 403);
    assert_eq!(no.content_type, "application/problem+json");
    assert_eq!(no.body["type"], "urn:tenancy:problem:feature-not-entitled");
    assert!(no.body["detail"].as_str().unwrap_or("").contains("sso"));
    let anonymous = call(addr, "GET", "/sso", &[], None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.body["code"], "tenant-required");

    // Limits: free has 2 seats, pro is unlimited.
    let seat = |t: TenantId, current: &str| {
        let t = t.to_string();
        let path = format!("/seats/{current}");
        async move { call(addr, "POST", &path, &[("x-test-tenant", &t)], None).await }
    };
    assert_eq!(seat(free, "1").await.status, 200);
    let over = seat(free, "2").await;
    assert_eq!(over.status, 403);
    assert_eq!(over.body["code"], "limit-exceeded");
    assert_eq!(seat(pro, "100000").await.status, 200);
}
