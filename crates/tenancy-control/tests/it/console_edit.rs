//! The operator console's editors through the router (no socket, no browser): a plan's
//! entitlements changed through the console and seen through the JSON API and
//! `/v1/evaluate`; what the editor refuses (no CSRF token, a bad value, a reduction not
//! confirmed) stores nothing.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tenancy_control::router;

use crate::api::{call, fresh_state, AUTH, JSON};
use crate::config_routes::with_config;
use crate::console::{send, sign_in};

/// The value of the first `name` field of a page.
fn field(page: &str, name: &str) -> String {
    page.split_once(&format!("name=\"{name}\" value=\""))
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("no field {name} in {page}"))
}

/// The number of entries in the configuration change log.
async fn changes(app: &axum::Router) -> usize {
    let (s, _, log) = call(app, "GET", "/v1/config/changes", &[AUTH], None).await;
    assert_eq!(s, StatusCode::OK, "{log}");
    log["changes"].as_array().map_or(0, Vec::len)
}

/// `/v1/evaluate` of `tenant` once `check` holds for it (or the last answer after 5 s).
async fn evaluate_until(app: &axum::Router, tenant: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..250 {
        let (s, _, body) = call(app, "GET", &format!("/v1/evaluate/{tenant}"), &[AUTH], None).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        if check(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    last
}

#[tokio::test]
async fn console_plan_editor_writes_entitlements_through_the_store() {
    let (db, state, _p) = fresh_state().await;
    let app = router(with_config(&db, state).await);
    for (uri, body) in [
        (
            "/v1/config/entitlements/seats",
            json!({"kind": "limit", "default": 5}),
        ),
        (
            "/v1/config/entitlements/sso",
            json!({"kind": "feature", "default": false}),
        ),
        (
            "/v1/config/plans/pro",
            json!({"display_name": "Pro", "entitlements": {"seats": 10}}),
        ),
    ] {
        let (s, _, b) = call(&app, "PUT", uri, &[AUTH, JSON], Some(&body.to_string())).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
    }
    let (s, _, created) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "console-plan-tenant")],
        Some(r#"{"slug":"acme","display_name":"Acme","plan":"pro","region":"eu-west","placement":"pooled"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{created}");
    let tenant = created["tenant"]["id"].as_str().expect("id").to_owned();
    let seen = evaluate_until(&app, &tenant, |b| b["entitlements"]["seats"]["value"] == 10).await;
    assert_eq!(
        seen["entitlements"]["seats"],
        json!({"value": 10, "layer": "plan"}),
        "{seen}"
    );

    let cookie = sign_in(&app).await;
    let (s, _, page) = send(&app, "GET", "/console/plans", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("href=\"/console/plans/pro\"") && page.contains("<code>seats</code>: 10"),
        "{page}"
    );
    let (s, _, page) = send(&app, "GET", "/console/plans/pro", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("<label for=\"ent-sso\">sso</label>"),
        "every entitlement is labelled: {page}"
    );
    let csrf = field(&page, "csrf");
    let before = changes(&app).await;

    // Refused, nothing stored: no CSRF token; a negative limit; a NUL; a limit given to a
    // feature (the store's own check); a reduction not confirmed.
    for (form, status, says) in [
        (
            "ent.seats=25&ent.sso=on".to_owned(),
            StatusCode::FORBIDDEN,
            "CSRF",
        ),
        (
            format!("csrf={csrf}&ent.seats=-1&ent.sso="),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not a value",
        ),
        (
            format!("csrf={csrf}&ent.seats=1%00&ent.sso="),
            StatusCode::UNPROCESSABLE_ENTITY,
            "NUL",
        ),
        (
            format!("csrf={csrf}&ent.seats=10&ent.sso=7"),
            StatusCode::CONFLICT,
            "does not fit",
        ),
        (
            format!("csrf={csrf}&ent.seats=3&ent.sso="),
            StatusCode::CONFLICT,
            "seats: 10 → 3",
        ),
        (
            format!("csrf={csrf}&ent.seats=&ent.sso="),
            StatusCode::CONFLICT,
            "seats: 10 removed",
        ),
    ] {
        let (s, _, page) = send(
            &app,
            "POST",
            "/console/plans/pro",
            Some(&cookie),
            Some(&form),
        )
        .await;
        assert_eq!(s, status, "{form}: {page}");
        assert!(page.contains(says), "{form}: {page}");
        assert!(
            page.contains("role=\"alert\""),
            "{form}: the error is announced"
        );
    }
    assert_eq!(changes(&app).await, before, "nothing was stored");

    // A raise and a new feature: written with the operator as the actor and the reason.
    let form = format!("csrf={csrf}&ent.seats=25&ent.sso=on&reason=bigger+teams");
    let (s, h, page) = send(
        &app,
        "POST",
        "/console/plans/pro",
        Some(&cookie),
        Some(&form),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    assert_eq!(h["location"], "/console/plans/pro");
    let seen = evaluate_until(&app, &tenant, |b| b["entitlements"]["sso"]["value"] == true).await;
    assert_eq!(
        seen["entitlements"]["seats"],
        json!({"value": 25, "layer": "plan"}),
        "{seen}"
    );
    assert_eq!(
        seen["entitlements"]["sso"],
        json!({"value": true, "layer": "plan"}),
        "{seen}"
    );
    let (_, _, log) = call(&app, "GET", "/v1/config/changes", &[AUTH], None).await;
    let last = log["changes"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .expect("a change");
    assert_eq!(last["entity"], "plan", "{last}");
    assert_eq!(last["reason"], "bigger teams", "{last}");
    assert!(
        last["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("admin:")),
        "{last}"
    );
    let (s, _, page) = send(&app, "GET", "/console/plans/pro", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("Plan pro saved (version "),
        "the flash: {page}"
    );

    // A confirmed reduction: the feature off, the limit unlimited.
    let form = format!("csrf={csrf}&ent.seats=unlimited&ent.sso=off&confirm=yes");
    let (s, _, page) = send(
        &app,
        "POST",
        "/console/plans/pro",
        Some(&cookie),
        Some(&form),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{page}");
    let seen = evaluate_until(&app, &tenant, |b| {
        b["entitlements"]["sso"]["value"] == false
    })
    .await;
    assert_eq!(
        seen["entitlements"]["seats"],
        json!({"value": null, "layer": "plan"}),
        "{seen}"
    );
    assert_eq!(
        seen["entitlements"]["sso"],
        json!({"value": false, "layer": "plan"}),
        "{seen}"
    );

    let (s, _, _) = send(
        &app,
        "GET",
        "/console/plans/no-such-plan",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
