//! The control-plane routes: validation, versioning, the change log, settings, branding,
//! evaluation and explain over HTTP.

use serde_json::json;
use tenancy_sdk::bootstrap::{CONFIG_READER_ROLE, RUNTIME_ROLE};

use crate::support::*;

fn problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.content_type, "application/problem+json");
    assert_eq!(r.body["code"], code, "{:?}", r.body);
    assert_eq!(r.body["type"], format!("urn:tenancy:problem:{code}"));
    assert_eq!(r.body["status"], status);
}

#[tokio::test]
async fn every_change_is_versioned_with_who_when_why() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let flag = json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off", "off_variant": "off"});
    let r1 = put(app.addr, "/v1/config/flags/new-billing", flag.clone()).await;
    assert_eq!(r1.status, 200, "{:?}", r1.body);
    let mut flag2 = flag.clone();
    flag2["default_variant"] = json!("on");
    let r2 = put(app.addr, "/v1/config/flags/new-billing", flag2).await;
    let (v1, v2) = (
        r1.body["version"].as_i64().expect("v1"),
        r2.body["version"].as_i64().expect("v2"),
    );
    assert!(v2 > v1);

    let log = call(
        app.addr,
        "GET",
        &format!("/v1/config/changes?after={}", v1 - 1),
        &[],
        None,
    )
    .await;
    assert_eq!(log.status, 200);
    let changes = log.body["changes"].as_array().expect("changes").clone();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["actor"], "alice@ops");
    assert_eq!(changes[0]["reason"], "test change");
    assert_eq!(changes[0]["entity"], "flag");
    assert_eq!(changes[0]["before"], json!(null));
    assert_eq!(changes[1]["before"]["default_variant"], "off");
    assert_eq!(changes[1]["after"]["default_variant"], "on");
    assert!(changes[1]["at"].as_str().is_some());

    // The change log is append-only; the configuration reader can read but not write
    // config, and the runtime role cannot even read it.
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    assert!(owner
        .execute("DELETE FROM tenancy_catalog.config_changes", &[])
        .await
        .is_err());
    let reader = connect(db.config_as(CONFIG_READER_ROLE)).await;
    assert!(reader
        .query("SELECT * FROM tenancy_catalog.config_flags", &[])
        .await
        .is_ok());
    assert!(reader
        .execute("DELETE FROM tenancy_catalog.config_flags", &[])
        .await
        .is_err());
    let runtime = connect(db.config_as(RUNTIME_ROLE)).await;
    assert!(runtime
        .query("SELECT * FROM tenancy_catalog.config_flags", &[])
        .await
        .is_err());

    // Writes without an actor are refused.
    let r = call(app.addr, "PUT", "/v1/config/flags/x", &[], Some(flag)).await;
    problem(&r, 400, "bad-request");
}

#[tokio::test]
async fn invalid_input_is_a_problem_json() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let t = tenant(&db, "free", "eu-west").await;
    let bad_weights = json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off", "off_variant": "off",
        "rules": [{"serve": {"type": "rollout", "weights": [{"variant": "on", "weight": 10}]}}]});
    problem(
        &put(app.addr, "/v1/config/flags/f", bad_weights).await,
        422,
        "validation",
    );
    problem(
        &put(app.addr, "/v1/config/flags/BadKey", json!({})).await,
        400,
        "bad-request",
    );
    problem(
        &put(
            app.addr,
            "/v1/config/tenants/not-a-uuid/branding",
            json!({}),
        )
        .await,
        400,
        "bad-request",
    );
    let branding = json!({"display_name": "Acme", "primary_color": "blue", "accent_color": "#000000",
        "logo_url": null, "email_from_name": "Acme", "email_from_address": "hi@acme.com"});
    let r = put(
        app.addr,
        &format!("/v1/config/tenants/{t}/branding"),
        branding,
    )
    .await;
    problem(&r, 422, "validation");
    assert!(r.body["detail"]
        .as_str()
        .unwrap_or("")
        .contains("primary_color"));
    let unknown = tenancy_core::TenantId::new_random();
    let good = json!({"display_name": "Acme", "primary_color": "#0000ff", "accent_color": "#000000",
        "logo_url": "https://cdn.acme.com/logo.png", "email_from_name": "Acme", "email_from_address": "hi@acme.com"});
    problem(
        &put(
            app.addr,
            &format!("/v1/config/tenants/{unknown}/branding"),
            good.clone(),
        )
        .await,
        404,
        "not-found",
    );
    assert_eq!(
        put(app.addr, &format!("/v1/config/tenants/{t}/branding"), good)
            .await
            .status,
        200
    );
    eventually(&app.client, "branding visible", |c| {
        c.snapshot().branding(t).is_some()
    })
    .await;
    let r = call(
        app.addr,
        "GET",
        &format!("/v1/config/tenants/{t}/branding"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["primary_color"], "#0000ff");
    // Plans are checked against definitions: an undefined key is 404, a value that does
    // not fit the definition's kind 409.
    problem(
        &put(
            app.addr,
            "/v1/config/plans/pro",
            json!({"display_name": "Pro", "entitlements": {"sso": true}}),
        )
        .await,
        404,
        "not-found",
    );
    assert_eq!(
        put(
            app.addr,
            "/v1/config/entitlements/sso",
            json!({"kind": "feature", "default": false})
        )
        .await
        .status,
        200
    );
    problem(
        &put(
            app.addr,
            "/v1/config/plans/pro",
            json!({"display_name": "Pro", "entitlements": {"sso": 3}}),
        )
        .await,
        409,
        "conflict",
    );
    // An entitlement cannot change kind.
    problem(
        &put(
            app.addr,
            "/v1/config/entitlements/sso",
            json!({"kind": "limit", "default": 1}),
        )
        .await,
        409,
        "conflict",
    );
    // Overrides need a reason (422) and a variant of the flag (409: it conflicts with the
    // stored flag).
    let body = json!({"value": "on", "reason": ""});
    assert_eq!(put(app.addr, "/v1/config/flags/f", json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off", "off_variant": "off"})).await.status, 200);
    problem(
        &put(
            app.addr,
            &format!("/v1/config/tenants/{t}/overrides/flag/f"),
            body,
        )
        .await,
        422,
        "validation",
    );
    problem(
        &put(
            app.addr,
            &format!("/v1/config/tenants/{t}/overrides/flag/f"),
            json!({"value": "blue", "reason": "x"}),
        )
        .await,
        409,
        "conflict",
    );
}

#[tokio::test]
async fn settings_are_typed_by_json_schema_and_layered() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let pro = tenant(&db, "pro", "eu-west").await;
    let free = tenant(&db, "free", "us-east").await;
    let schema = json!({"type": "object", "properties": {"locale": {"type": "string", "enum": ["en", "de", "fr"]}, "max_upload_mb": {"type": "integer", "minimum": 1}}, "required": ["locale"], "additionalProperties": false});
    let r = put(
        app.addr,
        "/v1/config/settings/ui",
        json!({"schema": schema, "default": {"locale": "en"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    problem(
        &put(
            app.addr,
            "/v1/config/settings/bad",
            json!({"schema": {"type": 5}, "default": 1}),
        )
        .await,
        422,
        "validation",
    );
    problem(
        &put(
            app.addr,
            "/v1/config/settings/bad",
            json!({"schema": {"type": "string"}, "default": 1}),
        )
        .await,
        422,
        "validation",
    );
    let r = put(
        app.addr,
        "/v1/config/plans/pro",
        json!({"display_name": "Pro", "settings": {"ui": {"locale": "de"}}}),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    problem(
        &put(
            app.addr,
            "/v1/config/regions/eu-west",
            json!({"settings": {"ui": {"locale": "xx"}}}),
        )
        .await,
        409,
        "conflict",
    );
    let r = put(
        app.addr,
        &format!("/v1/config/tenants/{pro}/settings/ui"),
        json!({"locale": "fr", "max_upload_mb": 0}),
    )
    .await;
    problem(&r, 409, "conflict");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("max_upload_mb"),
        "{:?}",
        r.body
    );
    let r = put(
        app.addr,
        &format!("/v1/config/tenants/{pro}/settings/ui"),
        json!({"locale": "fr", "max_upload_mb": 20}),
    )
    .await;
    assert_eq!(r.status, 200);
    // A schema change must still accept stored values.
    problem(&put(app.addr, "/v1/config/settings/ui", json!({"schema": {"type": "object", "properties": {"locale": {"const": "en"}}}, "default": {"locale": "en"}})).await, 409, "conflict");

    let v = r.body["version"].as_i64().expect("version");
    assert!(
        app.client
            .wait_for_version(v, std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(
        app.client.setting(pro, "ui"),
        Some(json!({"locale": "fr", "max_upload_mb": 20}))
    );
    assert_eq!(
        app.client.setting(free, "ui"),
        Some(json!({"locale": "en"}))
    );
    let ex = call(
        app.addr,
        "GET",
        &format!("/v1/evaluate/{pro}/explain/setting/ui"),
        &[],
        None,
    )
    .await;
    assert_eq!(ex.body["decided_by"], "tenant");
    assert_eq!(ex.body["layers"][1]["value"], json!({"locale": "de"}));
    let r = call(
        app.addr,
        "DELETE",
        &format!("/v1/config/tenants/{pro}/settings/ui"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    eventually(&app.client, "plan layer applies again", |c| {
        c.setting(pro, "ui") == Some(json!({"locale": "de"}))
    })
    .await;
}

#[tokio::test]
async fn evaluate_and_explain_endpoints() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let t = tenant(&db, "pro", "eu-west").await;
    assert_eq!(
        put(
            app.addr,
            "/v1/config/entitlements/seats",
            json!({"kind": "limit", "default": 3})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        put(
            app.addr,
            "/v1/config/plans/pro",
            json!({"display_name": "Pro", "entitlements": {"seats": 25}})
        )
        .await
        .status,
        200
    );
    let flag = json!({"kind": "multivariate", "variants": {"blue": "#00f", "green": "#0f0"}, "default_variant": "blue", "off_variant": "blue",
        "rules": [{"name": "eu", "conditions": [{"attribute": "region", "op": "in", "values": ["eu-west"]}], "serve": {"type": "variant", "variant": "green"}}]});
    let r = put(app.addr, "/v1/config/flags/theme", flag).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = r.body["version"].as_i64().expect("version");
    assert!(
        app.client
            .wait_for_version(v, std::time::Duration::from_secs(10))
            .await
    );

    let e = call(app.addr, "GET", &format!("/v1/evaluate/{t}"), &[], None).await;
    assert_eq!(e.status, 200);
    assert_eq!(e.body["flags"]["theme"]["variant"], "green");
    assert_eq!(e.body["flags"]["theme"]["value"], "#0f0");
    assert_eq!(e.body["flags"]["theme"]["reason"]["reason"], "rule");
    assert_eq!(e.body["entitlements"]["seats"]["value"], 25);
    assert_eq!(e.body["entitlements"]["seats"]["layer"], "plan");
    assert_eq!(e.body["stale"], false);
    let e = call(
        app.addr,
        "GET",
        &format!("/v1/evaluate/{t}?flags=theme,nope"),
        &[],
        None,
    )
    .await;
    assert_eq!(e.body["flags"]["nope"]["error"], "flag_not_found");

    let ex = call(
        app.addr,
        "GET",
        &format!("/v1/evaluate/{t}/explain/flag/theme"),
        &[],
        None,
    )
    .await;
    assert_eq!(ex.status, 200);
    assert_eq!(ex.body["decided_by"], "global");
    assert!(
        ex.body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("rule 0 (eu)"),
        "{:?}",
        ex.body
    );
    let ex = call(
        app.addr,
        "GET",
        &format!("/v1/evaluate/{t}/explain/entitlement/seats"),
        &[],
        None,
    )
    .await;
    assert_eq!(ex.body["decided_by"], "plan");
    problem(
        &call(
            app.addr,
            "GET",
            &format!("/v1/evaluate/{t}/explain/flag/nope"),
            &[],
            None,
        )
        .await,
        404,
        "not-found",
    );

    // The OpenAPI document names every route.
    use utoipa::OpenApi;
    let doc = tenancy_config_service::http::ConfigApiDoc::openapi();
    let paths: Vec<&String> = doc.paths.paths.keys().collect();
    assert!(
        paths.iter().any(|p| p.as_str() == "/v1/evaluate/{tenant}"),
        "{paths:?}"
    );
    assert!(paths.len() >= 18, "{paths:?}");
}

#[tokio::test]
async fn bodies_outside_their_schema_are_refused_naming_the_field_and_nothing_is_stored() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let t = tenant(&db, "free", "eu-west").await;
    let changes = || async {
        call(app.addr, "GET", "/v1/config/changes", &[], None)
            .await
            .body["changes"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let before = changes().await;
    let nul = "a\u{0}b";
    let cases = [
        (
            "/v1/config/flags/f".to_owned(),
            json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off",
                   "off_variant": "off", "owner": "me"}),
            "body",
        ),
        (
            "/v1/config/flags/f".to_owned(),
            json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": "off",
                   "off_variant": "off", "rules": [{"serve": {"type": "variant", "variant": "On"}}]}),
            "rules/0/serve",
        ),
        (
            "/v1/config/entitlements/sso".to_owned(),
            json!({"kind": "feature", "default": 1}),
            "body",
        ),
        (
            "/v1/config/plans/pro".to_owned(),
            json!({"display_name": "Pro", "settings": {"ui": {"footer": nul}}}),
            "settings/ui",
        ),
        (
            "/v1/config/settings/ui".to_owned(),
            json!({"schema": {"type": "string"}, "default": "x", "key": "ui"}),
            "body",
        ),
        (
            format!("/v1/config/tenants/{t}/attributes"),
            json!({"tags": ["ok", "Not Ok"]}),
            "tags/1",
        ),
        (
            format!("/v1/config/tenants/{t}/overrides/flag/f"),
            json!({"value": "on", "reason": "x", "expires_at": "2030-02-30"}),
            "expires_at",
        ),
        (
            format!("/v1/config/tenants/{t}/branding"),
            json!({"display_name": "Acme", "primary_color": "#000000", "accent_color": "#000000",
                   "logo_url": "https://acme.com/logo.png", "email_from_name": "Acme", "email_from_address": "hi@acme.com",
                   "favicon": "x"}),
            "body",
        ),
    ];
    for (path, body, field) in cases {
        let r = put(app.addr, &path, body.clone()).await;
        problem(&r, 422, "validation");
        let errors = r.body["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors.iter().any(|e| e["field"] == field),
            "{path} {body}: {:?}",
            r.body
        );
        assert!(
            r.body["detail"].as_str().unwrap_or("").contains(field),
            "{:?}",
            r.body
        );
    }
    assert_eq!(changes().await, before, "nothing was written");
    let r = call(app.addr, "GET", "/v1/config/flags/f", &[], None).await;
    problem(&r, 404, "not-found");
}
