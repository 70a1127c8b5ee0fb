//! What the control plane refuses, and how: every error is one kind of problem document
//! (axum's own rejections included), requests that could only fail later are refused up
//! front (unknown plans, lifecycle operations the tenant's state does not allow), tenants
//! are named by id or slug, and an interrupted request's retry gets the first answer.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tenancy_control::{router, ControlConfig, SignupConfig};
use tower::ServiceExt;

use crate::api::{call, fresh_state, AUTH, JSON};
use crate::hostile::{generous, http, served};

fn assert_problem(what: &str, status: u16, content_type: Option<&str>, body: &Value, code: &str) {
    assert_eq!(
        content_type,
        Some("application/problem+json"),
        "{what}: {body}"
    );
    assert_eq!(body["status"], status, "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert_eq!(
        body["type"],
        format!("urn:tenancy:problem:{code}"),
        "{what}: {body}"
    );
    assert!(body["title"].is_string(), "{what}: {body}");
}

#[tokio::test]
async fn every_error_axum_itself_produces_is_a_problem_document_of_the_one_scheme() {
    let s = served(generous(), SignupConfig::default()).await;
    let auth = ("authorization", "Bearer test-admin-token");
    let json = ("content-type", "application/json");
    // A query string the extractor cannot read (control plane and configuration service).
    for path in ["/v1/tenants?limit=many", "/v1/config/changes?after=soon"] {
        let r = http(s.port, "127.0.0.1", "GET", path, &[auth], None).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_problem(
            path,
            400,
            r.headers.get("content-type").map(String::as_str),
            &r.body,
            "bad-request",
        );
        assert!(
            r.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{path}: the rejection says what is wrong: {r:?}"
        );
    }
    // A method the route does not have: 405 with Allow, as a problem.
    let r = http(s.port, "127.0.0.1", "DELETE", "/v1/tenants", &[auth], None).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert!(r.headers.contains_key("allow"), "{r:?}");
    assert_problem(
        "405",
        405,
        r.headers.get("content-type").map(String::as_str),
        &r.body,
        "method-not-allowed",
    );
    // No such route.
    let r = http(s.port, "127.0.0.1", "GET", "/v2/nothing", &[], None).await;
    assert_problem(
        "404",
        404,
        r.headers.get("content-type").map(String::as_str),
        &r.body,
        "not-found",
    );
    // The configuration service's JSON extractor: not JSON, and not declared as JSON.
    let r = http(
        s.port,
        "127.0.0.1",
        "PUT",
        "/v1/config/flags/checkout",
        &[auth, json],
        Some("{not json"),
    )
    .await;
    assert_problem(
        "config JSON",
        400,
        r.headers.get("content-type").map(String::as_str),
        &r.body,
        "bad-request",
    );
    let r = http(
        s.port,
        "127.0.0.1",
        "PUT",
        "/v1/config/flags/checkout",
        &[auth],
        Some("{}"),
    )
    .await;
    assert_problem(
        "config content type",
        415,
        r.headers.get("content-type").map(String::as_str),
        &r.body,
        "unsupported-media-type",
    );
    // The configuration service's own refusals use the same scheme.
    let r = http(
        s.port,
        "127.0.0.1",
        "GET",
        "/v1/config/flags/missing-flag",
        &[auth],
        None,
    )
    .await;
    assert_problem(
        "config 404",
        404,
        r.headers.get("content-type").map(String::as_str),
        &r.body,
        "not-found",
    );
    drop(s);

    // The body limit (the router as `serve` runs it).
    let (_db, state, _p) = fresh_state().await;
    let app = router(state);
    let big = format!("{{\"slug\":\"{}\"}}", "a".repeat(70 * 1024));
    let (st, ct, body) = call(
        &app,
        "POST",
        "/v1/signup",
        &[JSON, ("idempotency-key", "big")],
        Some(&big),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    assert_problem("413", 413, Some(&ct), &body, "payload-too-large");

    // One code table: every crate's codes agree with the common ones and with each other.
    let control = tenancy_control::ProblemCode::table();
    let config = tenancy_config_service::ProblemCode::table();
    let layer = tenancy_axum::ProblemType::table();
    assert_eq!(
        tenancy_axum::problem::check_table(&[&control, &config, &layer]),
        Ok(()),
        "the problem code tables disagree"
    );
}

async fn tenant_count(app: &axum::Router) -> usize {
    let (_, _, page) = call(app, "GET", "/v1/tenants?limit=200", &[AUTH], None).await;
    page["items"].as_array().map_or(0, Vec::len)
}

async fn workflow_count(app: &axum::Router, tenant: &str) -> usize {
    let (_, _, wfs) = call(
        app,
        "GET",
        &format!("/v1/tenants/{tenant}/workflows"),
        &[AUTH],
        None,
    )
    .await;
    wfs.as_array().map_or(0, Vec::len)
}

async fn wait_state(app: &axum::Router, tenant: &str, want: &str) {
    for _ in 0..500 {
        let (_, _, t) = call(app, "GET", &format!("/v1/tenants/{tenant}"), &[AUTH], None).await;
        if t["state"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("tenant {tenant} never reached {want}");
}

#[tokio::test]
async fn unknown_plans_are_refused_on_create_and_on_plan_change_and_nothing_is_queued() {
    let (_db, state, p) = fresh_state().await;
    let app = router(state);
    let workers = p.spawn_workers(1);
    let create = |slug: &str, plan: &str| {
        format!(
            r#"{{"slug":"{slug}","display_name":"X","plan":"{plan}","region":"eu-west","placement":"pooled"}}"#
        )
    };
    let (st, ct, body) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "p1")],
        Some(&create("acme", "gold")),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_problem("unknown plan", 422, Some(&ct), &body, "validation");
    assert_eq!(body["errors"][0]["field"], "plan", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("pro") && m.contains("free")),
        "the refusal lists the plans: {body}"
    );
    assert_eq!(tenant_count(&app).await, 0, "nothing was created");

    let (st, _, body) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "p2")],
        Some(&create("acme", "pro")),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let id = body["tenant"]["id"].as_str().expect("id").to_owned();
    wait_state(&app, &id, "active").await;
    let before = workflow_count(&app, &id).await;
    let (st, _, body) = call(
        &app,
        "POST",
        &format!("/v1/tenants/{id}/plan"),
        &[AUTH, JSON, ("idempotency-key", "p3")],
        Some(r#"{"plan":"gold"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "plan", "{body}");
    assert_eq!(
        workflow_count(&app, &id).await,
        before,
        "no workflow queued"
    );
    let (st, _, body) = call(
        &app,
        "POST",
        &format!("/v1/tenants/{id}/plan"),
        &[AUTH, JSON, ("idempotency-key", "p4")],
        Some(r#"{"plan":"enterprise"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    workers.stop().await;
}

#[tokio::test]
async fn tenants_are_named_by_slug_as_well_as_by_id_and_lifecycle_steps_their_state_forbids_get_409(
) {
    let (_db, state, p) = fresh_state().await;
    let app = router(state);
    let workers = p.spawn_workers(1);
    let (st, _, body) = call(
        &app,
        "POST",
        "/v1/tenants",
        &[AUTH, JSON, ("idempotency-key", "s1")],
        Some(r#"{"slug":"globex","display_name":"Globex","plan":"free","region":"eu-west","placement":"pooled"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    let id = body["tenant"]["id"].as_str().expect("id").to_owned();
    wait_state(&app, "globex", "active").await;
    let (st, _, by_slug) = call(&app, "GET", "/v1/tenants/globex", &[AUTH], None).await;
    assert_eq!(st, StatusCode::OK, "{by_slug}");
    assert_eq!(by_slug["id"], id.as_str());
    for missing in ["/v1/tenants/initech", "/v1/tenants/Not_A-Slug"] {
        let (st, ct, body) = call(&app, "GET", missing, &[AUTH], None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert_problem(missing, 404, Some(&ct), &body, "not-found");
    }

    // Delete (by slug), then everything the deleting state forbids is a 409, queueing
    // nothing, instead of a workflow that is accepted and then cancelled.
    let (st, _, body) = call(
        &app,
        "POST",
        "/v1/tenants/globex/delete",
        &[AUTH, JSON, ("idempotency-key", "s2")],
        Some(r#"{"reason":"closing"}"#),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    wait_state(&app, &id, "deleting").await;
    let before = workflow_count(&app, &id).await;
    for (i, op) in ["resume", "suspend", "plan"].into_iter().enumerate() {
        let body = if op == "plan" {
            r#"{"plan":"pro"}"#
        } else {
            "{}"
        };
        let key = format!("s3-{i}");
        let (st, ct, problem) = call(
            &app,
            "POST",
            &format!("/v1/tenants/{id}/{op}"),
            &[AUTH, JSON, ("idempotency-key", &key)],
            Some(body),
        )
        .await;
        assert_eq!(st, StatusCode::CONFLICT, "{op}: {problem}");
        assert_problem(op, 409, Some(&ct), &problem, "conflict");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("deleting")),
            "{op}: the refusal names the state: {problem}"
        );
    }
    assert_eq!(
        workflow_count(&app, &id).await,
        before,
        "nothing was queued"
    );
    workers.stop().await;
}

/// One request through the router, with the response's headers.
async fn send(app: &axum::Router, key: &str, body: &str) -> (StatusCode, Option<String>, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/tenants")
        .header("authorization", "Bearer test-admin-token")
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_owned()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .or_else(|| resp.headers().get("retry-after"))
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            if status == StatusCode::CONFLICT {
                format!("retry-after:{v}")
            } else {
                format!("replayed:{v}")
            }
        });
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        replayed,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn an_interrupted_request_still_completes_and_its_retry_gets_the_first_answer() {
    let (_db, state, _p) = fresh_state().await;
    let app = router(state);
    let mut replays = 0;
    for (i, micros) in [
        200u64, 500, 1_000, 2_000, 3_000, 5_000, 8_000, 13_000, 21_000,
    ]
    .into_iter()
    .enumerate()
    {
        let slug = format!("cut-{i}");
        let key = format!("cut-key-{i}");
        let body = format!(
            r#"{{"slug":"{slug}","display_name":"Cut","plan":"free","region":"eu-west","placement":"pooled"}}"#
        );
        // The client goes away after `micros`: the request's future is dropped.
        let req = Request::builder()
            .method("POST")
            .uri("/v1/tenants")
            .header("authorization", "Bearer test-admin-token")
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(Body::from(body.clone()))
            .expect("request");
        let _ = tokio::time::timeout(Duration::from_micros(micros), app.clone().oneshot(req)).await;
        // The retry: while the first execution runs, 409 with Retry-After; then its
        // answer, never a second execution (which would answer slug-taken).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let (st, note, answer) = loop {
            let (st, note, answer) = send(&app, &key, &body).await;
            if st != StatusCode::CONFLICT || answer["code"] != "idempotency-in-progress" {
                break (st, note, answer);
            }
            assert!(
                note.as_deref()
                    .is_some_and(|n| n.starts_with("retry-after:")),
                "409 in progress carries Retry-After: {answer}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "the interrupted request never completed: {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            st,
            StatusCode::ACCEPTED,
            "retry {i} ({micros} µs): {answer}"
        );
        assert_eq!(answer["tenant"]["slug"], slug.as_str(), "{answer}");
        if note.as_deref() == Some("replayed:true") {
            replays += 1;
        }
        let (_, _, page) = call(&app, "GET", "/v1/tenants?limit=200", &[AUTH], None).await;
        let same: Vec<&Value> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|t| t["slug"] == slug.as_str())
            .collect();
        assert_eq!(same.len(), 1, "one tenant {slug}");
    }
    // At least one cut fell inside the first execution, whose answer the retry replayed.
    assert!(replays > 0, "no request was interrupted mid-way");
}

#[test]
fn signup_defaults_that_would_refuse_every_signup_are_refused_at_start() {
    let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let mut cfg = ControlConfig::default();
    cfg.signup.placement = "mars".into();
    let err = cfg.signup.validate(&cfg).expect_err("placement mars");
    assert!(err.contains("signup.placement"), "{err}");
    let mut cfg = ControlConfig::default();
    cfg.plans.insert("pro".into(), Default::default());
    let err = cfg
        .signup
        .validate(&cfg)
        .expect_err("plan free is not configured");
    assert!(err.contains("signup.plan") && err.contains("pro"), "{err}");
    let mut cfg = ControlConfig::default();
    cfg.signup.region = "Mars!".into();
    let err = cfg.signup.validate(&cfg).expect_err("not a region id");
    assert!(err.contains("signup.region"), "{err}");
    // The defaults are consistent, and loading applies the check.
    let cfg = ControlConfig::default();
    assert_eq!(cfg.signup.validate(&cfg), Ok(()));
    let dir = std::env::temp_dir().join(format!("tenancy-signup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("mars.toml");
    std::fs::write(&file, "[signup]\nplacement = \"mars\"\n").expect("write");
    let loaded = ControlConfig::load_with_env(Some(&file), &env("TENANCY_UNRELATED", "1"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        loaded
            .as_ref()
            .is_err_and(|e| e.contains("signup.placement")),
        "{:?}",
        loaded.map(|_| ())
    );
}

#[tokio::test]
async fn the_openapi_document_declares_every_status_parameter_and_header_a_client_needs() {
    let (db, state, _p) = fresh_state().await;
    let app = router(crate::config_routes::with_config(&db, state).await);
    let (st, _, doc) = call(&app, "GET", "/openapi.json", &[], None).await;
    assert_eq!(st, StatusCode::OK);
    let mut problems = Vec::new();
    let mut idempotent = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let what = format!("{method} {path}");
            let responses = op["responses"].as_object().expect("responses");
            for (status, r) in responses {
                if r["description"]
                    .as_str()
                    .is_none_or(|d| d.trim().is_empty())
                {
                    problems.push(format!("{what} {status}: no description"));
                }
            }
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for p in &params {
                let name = p["name"].as_str().unwrap_or("");
                let in_path = path.contains(&format!("{{{name}}}"));
                if (p["in"] == "path") != in_path {
                    problems.push(format!("{what}: {name} is declared in {}", p["in"]));
                }
                if p["name"] == "Idempotency-Key" {
                    idempotent += 1;
                    if p["required"] != true || !p["schema"]["pattern"].is_string() {
                        problems.push(format!(
                            "{what}: Idempotency-Key not required or without pattern: {p}"
                        ));
                    }
                    if responses
                        .get("409")
                        .is_none_or(|r| r["headers"].get("Retry-After").is_none())
                    {
                        problems.push(format!("{what}: 409 without Retry-After"));
                    }
                }
            }
            let mut want = Vec::new();
            if op
                .get("security")
                .is_some_and(|s| s != &serde_json::json!([]))
            {
                want.push("401");
            }
            if op.get("requestBody").is_some() {
                want.extend(["400", "413", "415", "422"]);
            }
            if path.contains('{') {
                want.extend(["400", "404", "422"]);
            }
            if params.iter().any(|p| p["in"] == "query") {
                want.extend(["400", "422"]);
            }
            for status in want {
                match responses.get(status) {
                    Some(r)
                        if r["content"]["application/problem+json"]["schema"]["$ref"]
                            == "#/components/schemas/Problem" => {}
                    _ => problems.push(format!("{what}: {status} not documented as a Problem")),
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        idempotent >= 9,
        "every state-changing POST takes an Idempotency-Key"
    );
    // What a request may name now: the registered regions and the known plans.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["CreateTenant"]["properties"]["region"]["enum"],
        serde_json::json!(["eu-west"])
    );
    assert_eq!(
        schemas["ChangePlan"]["properties"]["plan"]["enum"],
        serde_json::json!(["enterprise", "free", "pro"])
    );
    assert!(schemas["Signup"]["properties"]["slug"]["not"]["enum"]
        .as_array()
        .is_some_and(|r| r.iter().any(|s| s == "admin")));
    // Both bodies that name a new tenant state the same rules for its slug and name.
    for body in ["CreateTenant", "Signup"] {
        let props = &schemas[body]["properties"];
        for (field, min, max) in [("slug", 3, 40), ("display_name", 1, 200)] {
            let p = &props[field];
            assert_eq!(p["type"], "string", "{body}.{field}: {p}");
            assert_eq!(
                (&p["minLength"], &p["maxLength"]),
                (&serde_json::json!(min), &serde_json::json!(max)),
                "{body}.{field}: {p}"
            );
            assert!(p["pattern"].is_string(), "{body}.{field}: {p}");
            assert!(p["description"].is_string(), "{body}.{field}: {p}");
        }
        let required = schemas[body]["required"].as_array().expect("required");
        assert!(required.contains(&serde_json::json!("slug")), "{body}");
        assert!(
            required.contains(&serde_json::json!("display_name")),
            "{body}"
        );
    }
}
