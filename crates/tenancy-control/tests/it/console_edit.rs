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

/// Saves plan pro's form through the console and waits until `/v1/evaluate` of `tenant`
/// serves `seats` and `sso` from the plan.
async fn save_and_see(
    app: &axum::Router,
    cookie: &str,
    tenant: &str,
    form: &str,
    seats: Value,
    sso: bool,
) {
    let (s, h, page) = send(app, "POST", "/console/plans/pro", Some(cookie), Some(form)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{form}: {page}");
    assert_eq!(h["location"], "/console/plans/pro");
    let seen = evaluate_until(app, tenant, |b| {
        b["entitlements"]["sso"]["value"] == sso && b["entitlements"]["seats"]["value"] == seats
    })
    .await;
    assert_eq!(
        seen["entitlements"]["seats"],
        json!({"value": seats, "layer": "plan"}),
        "{seen}"
    );
    assert_eq!(
        seen["entitlements"]["sso"],
        json!({"value": sso, "layer": "plan"}),
        "{seen}"
    );
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
    save_and_see(&app, &cookie, &tenant, &form, json!(25), true).await;
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
    save_and_see(&app, &cookie, &tenant, &form, Value::Null, false).await;

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

/// Runs a lifecycle action through the console: its confirmation page, then its form.
async fn console_action(app: &axum::Router, cookie: &str, tenant: &str, action: &str) {
    let confirm = format!("/console/tenants/{tenant}/actions?action={action}");
    let (s, _, page) = send(app, "GET", &confirm, Some(cookie), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let form = format!(
        "csrf={}&action={action}&plan=&key={}&reason=console+test",
        field(&page, "csrf"),
        field(&page, "key")
    );
    let actions = format!("/console/tenants/{tenant}/actions");
    let (s, _, page) = send(app, "POST", &actions, Some(cookie), Some(&form)).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{action}: {page}");
}

/// Waits until the tenant is in `want` (through the API).
async fn wait_state(app: &axum::Router, tenant: &str, want: &str) {
    crate::audit::eventually(want, || async {
        let (_, _, t) = call(app, "GET", &format!("/v1/tenants/{tenant}"), &[AUTH], None).await;
        (t["state"] == want).then_some(())
    })
    .await;
}

/// The text of a page's `<table id="…">`.
fn table<'p>(page: &'p str, id: &str) -> &'p str {
    page.split_once(&format!("<table id=\"{id}\">"))
        .and_then(|(_, r)| r.split_once("</table>"))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no table {id} in {page}"))
}

#[tokio::test]
async fn console_tenant_page_lists_both_audit_logs_newest_first_with_verified_chains() {
    let (db, _state, _p) =
        crate::api::fresh_state_with(tenancy_control::SignupConfig::default()).await;
    let served = tenancy_control::build(crate::audit::config(
        &db,
        tenancy_control::audit::AuditConfig {
            seal_interval_secs: 0,
            ..Default::default()
        },
    ))
    .await
    .expect("build");
    let port = served.port();
    let state = served.state().clone();
    let sealer = state.audit().expect("sealer").clone();
    let stopper = served.stopper();
    let running = tokio::spawn(served.run_until_stopped());
    let tenant = crate::audit::create(port, "acme", "req-console")
        .await
        .to_string();
    let app = router(state);
    wait_state(&app, &tenant, "active").await;
    sealer
        .pass(false)
        .await
        .expect("first pass installs and seals");
    // 25 application events: more than one page of the tenant log.
    let pool = crate::audit::runtime_pool(&db);
    crate::audit::app_events(&pool, tenant.parse().expect("id"), 25).await;

    let cookie = sign_in(&app).await;
    console_action(&app, &cookie, &tenant, "suspend").await;
    wait_state(&app, &tenant, "suspended").await;
    console_action(&app, &cookie, &tenant, "resume").await;
    wait_state(&app, &tenant, "active").await;

    let uri = format!("/console/tenants/{tenant}");
    let page = crate::audit::eventually("both logs sealed and checkpointed", || async {
        sealer.pass(false).await.expect("pass");
        let (s, _, page) = send(&app, "GET", &uri, Some(&cookie), None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let done = page
            .matches("<p class=\"chain verified\">Verified up to the latest checkpoint")
            .count()
            == 2
            && !page.contains("not yet sealed")
            && page.contains("tenant.resume");
        done.then_some(page)
    })
    .await;
    // The control log: the console's suspend and resume, newest first, by the operator.
    let control = table(&page, "audit-control");
    let (suspend, resume) = (
        control
            .find("<th scope=\"row\">tenant.suspend</th>")
            .expect("suspend listed"),
        control
            .find("<th scope=\"row\">tenant.resume</th>")
            .expect("resume listed"),
    );
    assert!(resume < suspend, "newest first: {control}");
    assert!(
        control.contains("<td>admin:"),
        "the operator is the actor: {control}"
    );
    assert!(
        control.contains(&format!("<td>tenant:{tenant}</td>")),
        "{control}"
    );
    assert!(control.contains("<td>success</td>"), "{control}");
    assert!(control.contains("<time datetime=\""), "{control}");
    // The tenant log: its newest 20 events, then the older ones by cursor.
    let own = table(&page, "audit-tenant");
    assert_eq!(
        own.matches("<th scope=\"row\">invoice.create</th>").count(),
        20,
        "{own}"
    );
    assert!(
        own.find(">invoice:24<") < own.find(">invoice:5<"),
        "newest first: {own}"
    );
    assert!(!own.contains(">invoice:4<"), "{own}");
    assert!(
        own.contains("<td>user-1 (user)</td>"),
        "the actor and its kind: {own}"
    );
    assert!(
        !page.contains("control_before="),
        "the control log fits one page"
    );
    let older = page
        .split("href=\"")
        .find(|h| h.starts_with("/console/tenants/") && h.contains("tenant_before="))
        .and_then(|h| h.split_once('"'))
        .map(|(h, _)| h.replace("&amp;", "&"))
        .expect("a link to older events");
    let (s, _, page) = send(&app, "GET", &older, Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let own = table(&page, "audit-tenant");
    assert_eq!(own.matches("invoice.create").count(), 5, "{own}");
    assert!(
        own.contains(">invoice:0<") && own.contains(">invoice:4<"),
        "{own}"
    );
    assert!(
        !page.contains("tenant_before="),
        "the first event is on this page"
    );
    // Another tenant's cursor is refused in its section, and the rest of the page shows.
    let other = uuid::Uuid::new_v4();
    let (s, _, page) = send(
        &app,
        "GET",
        &format!("{uri}?tenant_before={other}.tenant.5"),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("the cursor belongs to"), "{page}");
    assert!(page.contains("id=\"audit-control\""), "{page}");

    // An event changed behind the log's back: the page names the first bad one.
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "SET session_replication_role = replica; \
         UPDATE tenancy.audit_events SET target = 'invoice:700' WHERE tenant_id = '{tenant}' AND target = 'invoice:7'"
    ))
    .await
    .expect("tamper");
    let pos: i64 = su
        .query_one(
            "SELECT chain_pos FROM tenancy.audit_events WHERE target = 'invoice:700'",
            &[],
        )
        .await
        .expect("position")
        .get(0);
    let (s, _, page) = send(&app, "GET", &uri, Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(
            "Verification failed at the first bad event, chain position {pos} (seq "
        )) && page.contains("modified"),
        "{page}"
    );
    assert_eq!(
        page.matches("<p class=\"chain verified\">").count(),
        1,
        "the control log still verifies"
    );

    let _ = stopper.send(true);
    running.await.expect("join").expect("served");
}
