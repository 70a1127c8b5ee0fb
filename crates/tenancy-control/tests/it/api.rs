//! The API end to end through the router (no socket), on a fresh catalog per test.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tenancy_control::{router, AppState, SignupConfig};
use tenancy_core::TenantState;
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_provision::{AppMigrations, ClusterAccess, ProvisionConfig, Provisioner};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tenancy_sdk::ContextKey;
use tower::ServiceExt;

static TEMPLATE: TemplateDb = TemplateDb::new("ctl_tpl");
pub(crate) const TOKEN: &str = "test-admin-token";
const STRIPE: &str = "whsec_test_stripe";

fn key() -> ContextKey {
    ContextKey::from_hex("ctl".parse().expect("kid"), &"ab".repeat(32)).expect("key")
}

async fn fresh() -> (TestDb, axum::Router, Provisioner) {
    let (db, state, p) = fresh_state().await;
    (db, router(state), p)
}

/// A fresh catalog and the control plane's state on it (without the configuration
/// service; see `config_routes::with_config`).
pub(crate) async fn fresh_state() -> (TestDb, AppState, Provisioner) {
    fresh_state_with(SignupConfig::default()).await
}

/// [`fresh_state`] with these signup settings.
pub(crate) async fn fresh_state_with(signup: SignupConfig) -> (TestDb, AppState, Provisioner) {
    let db = tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), "").await;
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    tenancy_catalog::add_region(&owner, &"eu-west".parse().expect("r"), "Europe")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &owner,
        &tenancy_catalog::NewCluster {
            name: "pg-eu".into(),
            region: "eu-west".parse().expect("r"),
            location: tenancy_catalog::ClusterLocation {
                host: db.cluster.socket_dir().display().to_string(),
                port: db.cluster.port(),
                dbname: db.name.clone(),
            },
            capacity: 100,
        },
    )
    .await
    .expect("cluster");
    let p = Provisioner::new(
        db.config_as(OWNER_ROLE),
        ClusterAccess::local(db.cluster.superuser()),
        key(),
        ProvisionConfig {
            app_migrations: AppMigrations::generated(2),
            poll_interval: Duration::from_millis(50),
            plans: ["free", "pro", "enterprise"]
                .into_iter()
                .map(|p| (p.to_owned(), serde_json::Map::new()))
                .collect(),
            ..Default::default()
        },
    )
    .expect("provisioner");
    let state = AppState::new(
        tenancy_provision::pg_pool(db.config_as(OWNER_ROLE), 4).expect("pool"),
        p.clone(),
        vec![tenancy_control::auth::token_digest(TOKEN)],
        Some(secrecy::SecretString::from(STRIPE.to_owned())),
        signup,
    );
    (db, state, p)
}

pub(crate) async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        ct,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub(crate) const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token");
pub(crate) const JSON: (&str, &str) = ("content-type", "application/json");

async fn wait_state(app: &axum::Router, id: &str, want: &str) -> Value {
    for _ in 0..300 {
        let (_, _, t) = call(app, "GET", &format!("/v1/tenants/{id}"), &[AUTH], None).await;
        if t["state"] == want {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("tenant {id} never reached {want}");
}

#[tokio::test]
async fn a_tenant_moves_through_the_api_and_bad_targets_are_refused_up_front() {
    let (_db, app, p) = fresh().await;
    let workers = p.spawn_workers(1);
    let (st, _, body) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "m1")],
        Some(r#"{"slug":"mover","display_name":"Mover","plan":"free","region":"eu-west","placement":"pooled"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let id = body["tenant"]["id"].as_str().expect("id").to_owned();
    wait_state(&app, &id, "active").await;
    for (n, (bad, field)) in [
        (r#"{"to":"elsewhere"}"#, "to"),
        (r#"{"to":"dedicated","region":"Not A Region"}"#, "region"),
        (r#"{"to":"dedicated","cluster":"9lives"}"#, "cluster"),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("bad-{n}");
        let (st, _, body) = call(
            &app,
            "POST",
            &format!("/v1/tenants/{id}/move"),
            &[AUTH, JSON, ("idempotency-key", key.as_str())],
            Some(bad),
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{bad}: {body}");
    }
    let (st, _, body) = call(
        &app,
        "POST",
        "/v1/tenants/mover/move",
        &[AUTH, JSON, ("idempotency-key", "m2")],
        Some(r#"{"to":"dedicated"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["workflow"]["kind"], "move", "{body}");
    let wf = body["workflow"]["id"]
        .as_str()
        .expect("workflow id")
        .to_owned();
    let mut last = Value::Null;
    for _ in 0..1500 {
        let (_, _, w) = call(&app, "GET", &format!("/v1/workflows/{wf}"), &[AUTH], None).await;
        if w["status"] == "succeeded" || w["status"] == "failed" {
            last = w;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    let t = wait_state(&app, &id, "active").await;
    assert_eq!(t["placement"], "dedicated", "{t}");
    workers.stop().await;
}

#[tokio::test]
async fn openapi_document_is_valid_openapi_3_1() {
    // As `tenancy serve` builds it: with the configuration service mounted.
    let (db, state, _p) = fresh_state().await;
    let app = router(crate::config_routes::with_config(&db, state).await);
    let (status, _, doc) = call(&app, "GET", "/openapi.json", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    let schema: Value =
        serde_json::from_str(include_str!("../data/oas-3.1-schema.json")).expect("schema");
    let validator = jsonschema::draft202012::new(&schema).expect("meta-schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "OpenAPI document invalid: {errors:#?}");
    // A document that breaks the spec is caught (the validation can fail).
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"] = json!("nope");
    assert!(!validator.is_valid(&broken));
    for p in [
        "/v1/tenants",
        "/v1/signup",
        "/v1/billing/stripe",
        "/v1/tenants/{id}/suspend",
        "/v1/tenants/{id}/migrations",
        "/v1/tenants/{id}/move",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} documented");
    }
    crate::config_routes::check_config_paths(&doc);
    // The public routes declare their rate-limit and quota refusals, with Retry-After.
    for (path, method, statuses) in [
        ("/v1/signup", "post", &["429", "503"][..]),
        ("/v1/signup/availability", "get", &["429"][..]),
        ("/healthz", "get", &["429"][..]),
        ("/openapi.json", "get", &["429"][..]),
        ("/v1/billing/stripe", "post", &["429"][..]),
    ] {
        for status in statuses {
            let resp = &doc["paths"][path][method]["responses"][status];
            assert_eq!(
                resp["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}: {resp}"
            );
            assert!(
                resp["headers"].get("Retry-After").is_some(),
                "{method} {path} {status}: {resp}"
            );
        }
    }
}

#[tokio::test]
async fn admin_api_authenticates_validates_and_is_idempotent() {
    let (_db, app, p) = fresh().await;
    let workers = p.spawn_workers(1);
    // No token / wrong token: 401 problem+json.
    let (s, ct, body) = call(&app, "GET", "/v1/tenants", &[], None).await;
    assert_eq!(
        (s, ct.as_str()),
        (StatusCode::UNAUTHORIZED, "application/problem+json")
    );
    assert_eq!(body["code"], "unauthenticated");
    assert_eq!(body["type"], "urn:tenancy:problem:unauthenticated");
    let (s, _, _) = call(
        &app,
        "GET",
        "/v1/tenants",
        &[("authorization", "Bearer nope")],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let body = r#"{"slug":"acme","display_name":"Acme","plan":"pro","region":"eu-west","placement":"schema"}"#;
    // Missing Idempotency-Key.
    let (s, _, b) = call(&app, "POST", "/v1/tenants", &[AUTH, JSON], Some(body)).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("idempotency-key-required"))
    );
    // Created, then replayed with the same key and body (reformatted).
    let (s, _, first) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k1")],
        Some(body),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(body).expect("json"))
        .expect("pretty");
    let (s, _, again) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k1")],
        Some(&pretty),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(again["tenant"]["id"], first["tenant"]["id"]);
    // Same key, different body: 422.
    let other = body.replace("acme", "acme-two");
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k1")],
        Some(&other),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency-key-reused")
        )
    );
    // Slug taken (new key): 409; invalid input: 422 with the field named.
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k2")],
        Some(body),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::CONFLICT, Some("slug-taken"))
    );
    let bad = body.replace("\"acme\"", "\"Ac me\"");
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k3")],
        Some(&bad),
    )
    .await;
    assert_eq!(
        (s, b["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("slug"))
    );
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k4")],
        Some("{not json"),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad-request"))
    );
    let big = format!("{{\"slug\":\"{}\"}}", "a".repeat(70_000));
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "k5")],
        Some(&big),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload-too-large"))
    );
    // The tenant becomes active; suspend and resume through the API.
    let id = first["tenant"]["id"].as_str().expect("id").to_owned();
    wait_state(&app, &id, "active").await;
    let (s, _, _) = call(
        &app,
        "POST",
        &format!("/v1/tenants/{id}/suspend"),
        &[AUTH, JSON, ("idempotency-key", "s1")],
        Some(r#"{"reason":"audit"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_state(&app, &id, "suspended").await;
    let (s, _, _) = call(
        &app,
        "POST",
        &format!("/v1/tenants/{id}/resume"),
        &[AUTH, JSON, ("idempotency-key", "r1")],
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_state(&app, &id, "active").await;
    // Pagination.
    for i in 0..3 {
        let b = format!(
            r#"{{"slug":"page-{i}","display_name":"P","plan":"free","region":"eu-west","placement":"pooled"}}"#
        );
        let (s, _, _) = call(
            &app,
            "POST",
            "/v1/tenants",
            &[AUTH, JSON, ("idempotency-key", &format!("p{i}"))],
            Some(&b),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    let (_, _, page) = call(&app, "GET", "/v1/tenants?limit=2", &[AUTH], None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let after = page["next_after"].as_str().expect("next").to_owned();
    let (_, _, page2) = call(
        &app,
        "GET",
        &format!("/v1/tenants?limit=2&after={after}"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(2));
    assert!(page2["next_after"].is_null());
    let (s, _, _) = call(&app, "GET", "/v1/tenants?limit=5000", &[AUTH], None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, ct, _) = call(&app, "GET", "/v1/nope", &[], None).await;
    assert_eq!(
        (s, ct.as_str()),
        (StatusCode::NOT_FOUND, "application/problem+json")
    );
    workers.stop().await;
}

fn stripe_header(payload: &str) -> String {
    let t = tenancy_provision::webhook::unix_now();
    format!(
        "t={t},v1={}",
        tenancy_control::stripe::sign(STRIPE, t, payload.as_bytes())
    )
}

#[tokio::test]
async fn signup_and_stripe_events_drive_the_lifecycle() {
    let (db, app, p) = fresh().await;
    let workers = p.spawn_workers(1);
    let (_, _, a) = call(
        &app,
        "GET",
        "/v1/signup/availability?slug=globex",
        &[],
        None,
    )
    .await;
    assert_eq!(a["available"], true);
    let (_, _, a) = call(&app, "GET", "/v1/signup/availability?slug=admin", &[], None).await;
    assert_eq!(a["available"], false);
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/signup",
        &[JSON, ("idempotency-key", "su1")],
        Some(r#"{"slug":"globex","display_name":"Globex"}"#),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (_, _, a) = call(
        &app,
        "GET",
        "/v1/signup/availability?slug=globex",
        &[],
        None,
    )
    .await;
    assert_eq!(a["available"], false);

    // Stripe: bad signature refused; checkout provisions; duplicate is a no-op.
    let checkout = json!({"id": "evt_1", "type": "checkout.session.completed", "data": {"object": {
        "customer": "cus_1", "subscription": "sub_1", "metadata": {"slug": "initech", "plan": "pro"}}}}).to_string();
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/billing/stripe",
        &[JSON, ("stripe-signature", "t=1,v1=00")],
        Some(&checkout),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-signature"))
    );
    let (s, _, b) = call(
        &app,
        "POST",
        "/v1/billing/stripe",
        &[JSON, ("stripe-signature", &stripe_header(&checkout))],
        Some(&checkout),
    )
    .await;
    assert_eq!(
        (s, b["outcome"].as_str()),
        (StatusCode::OK, Some("provision")),
        "{b}"
    );
    let (_, _, b) = call(
        &app,
        "POST",
        "/v1/billing/stripe",
        &[JSON, ("stripe-signature", &stripe_header(&checkout))],
        Some(&checkout),
    )
    .await;
    assert_eq!(b["duplicate"], true);
    let catalog = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("catalog");
    let slug = "initech".parse().expect("slug");
    let t = tenancy_catalog::get_tenant_by_slug(&catalog, &slug)
        .await
        .expect("tenant");
    let id = t.id.to_string();
    let t = wait_state(&app, &id, "active").await;
    assert_eq!(t["billing_customer"], "cus_1");
    for (evt, kind, want) in [
        ("evt_2", "customer.subscription.updated", "active"),
        ("evt_3", "invoice.payment_failed", "suspended"),
        ("evt_4", "customer.subscription.deleted", "deleting"),
    ] {
        let e = json!({"id": evt, "type": kind, "data": {"object": {"customer": "cus_1", "metadata": {"plan": "enterprise"}}}}).to_string();
        let (s, _, b) = call(
            &app,
            "POST",
            "/v1/billing/stripe",
            &[JSON, ("stripe-signature", &stripe_header(&e))],
            Some(&e),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let t = wait_state(&app, &id, want).await;
        if kind == "customer.subscription.updated" {
            for _ in 0..100 {
                if tenancy_catalog::get_tenant(&catalog, t_id(&id))
                    .await
                    .expect("t")
                    .plan
                    .as_str()
                    == "enterprise"
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let _ = t;
    }
    let t = tenancy_catalog::get_tenant(&catalog, t_id(&id))
        .await
        .expect("t");
    assert_eq!(
        (t.plan.as_str(), t.state),
        ("enterprise", TenantState::Deleting)
    );
    let events: i64 = catalog
        .query_one("SELECT count(*) FROM tenancy_catalog.billing_events", &[])
        .await
        .expect("n")
        .get(0);
    assert_eq!(events, 4, "one record per distinct event id");
    workers.stop().await;
}

fn t_id(s: &str) -> tenancy_core::TenantId {
    s.parse().expect("tenant id")
}

#[tokio::test]
async fn migration_status_of_a_tenant_comes_from_the_ledger_and_needs_an_admin() {
    let (db, app, p) = fresh().await;
    let mut catalog = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("catalog");
    let req = tenancy_provision::ProvisionRequest {
        tenant: tenancy_catalog::NewTenant {
            id: None,
            slug: "schema-a".parse().expect("slug"),
            display_name: "A".into(),
            plan: "free".parse().expect("plan"),
            region: "eu-west".parse().expect("region"),
            placement: tenancy_core::Placement::Schema,
        },
        billing_customer: None,
        billing_subscription: None,
    };
    let (t, wf) = p
        .provision(&mut catalog, &req, "test")
        .await
        .expect("provision");
    p.drive(&mut catalog, wf.id, Duration::from_secs(30))
        .await
        .expect("drive");
    let uri = format!("/v1/tenants/{}/migrations", t.id);
    let (status, _, body) = call(&app, "GET", &uri, &[AUTH], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Provisioning recorded the version it created (the generated app: version 1).
    assert_eq!(body["version"], 1);
    assert_eq!(body["placement"], "schema");
    assert!(body["error"].is_null());
    let (status, _, _) = call(&app, "GET", &uri, &[], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let missing = format!("/v1/tenants/{}/migrations", uuid::Uuid::new_v4());
    let (status, _, _) = call(&app, "GET", &missing, &[AUTH], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
