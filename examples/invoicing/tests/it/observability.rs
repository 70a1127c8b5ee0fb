//! What a request carries into its answer and its jobs, over real HTTP against the app:
//! the request id (the `X-Request-Id` header and `request_id` in every problem body) and
//! the W3C trace context (the request is a span of the caller's trace when its
//! `traceparent` is valid, of a new trace otherwise; the response's `traceparent` names
//! that span, and the jobs the request enqueues are its children).

use std::time::Duration;

use serde_json::json;
use tenancy_axum::TraceParent;

use crate::support::*;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The job row's stored trace context and state, as the superuser sees them.
async fn job_trace(env: &Env, job: &str) -> (Option<String>, String) {
    let su = env.db.connect_superuser().await.expect("superuser");
    let id: uuid::Uuid = job.parse().expect("job id");
    let row = su
        .query_one(
            "SELECT traceparent, state FROM tenancy.jobs WHERE id = $1",
            &[&id],
        )
        .await
        .expect("job row");
    (row.get(0), row.get(1))
}

/// Sends an invoice as `tenant` with `traceparent` (when given); returns the job id and
/// the response's `traceparent`.
async fn send(env: &Env, inv: &str, traceparent: Option<&str>) -> (String, TraceParent) {
    let auth = format!("Bearer {}", token(env.acme));
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(t) = traceparent {
        headers.push(("traceparent", t));
    }
    let r = env
        .call("POST", &format!("/invoices/{inv}/send"), &headers, None)
        .await;
    assert_eq!(r.status, 202, "{traceparent:?}: {r:?}");
    let answered = r
        .traceparent
        .as_deref()
        .and_then(TraceParent::parse)
        .unwrap_or_else(|| panic!("a valid traceparent answered: {r:?}"));
    (
        r.body["job_id"].as_str().expect("job id").to_owned(),
        answered,
    )
}

#[tokio::test]
async fn a_job_enqueued_by_a_request_is_a_child_of_the_requests_span() {
    let env = start().await;
    let (_, inv) = env.seed(env.acme, "acme").await;
    let caller = TraceParent::parse(TRACEPARENT).expect("caller");
    let (job, answered) = send(&env, &inv, Some(TRACEPARENT)).await;
    // The request's span continues the caller's trace under a span id of its own, and
    // the job is stored with that span as its parent.
    assert_eq!(answered.trace_id(), caller.trace_id());
    assert_ne!(answered.parent_id(), caller.parent_id());
    assert_eq!(
        job_trace(&env, &job).await.0.as_deref(),
        Some(answered.to_string().as_str())
    );
    // The app's worker claims it (with its trace) and runs it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            job_trace(&env, &job).await.1 == "done"
        })
        .await,
        "{:?}",
        job_trace(&env, &job).await
    );
    // Without a traceparent, the request starts a trace, and the job is in it.
    let (job, fresh) = send(&env, &inv, None).await;
    assert_ne!(fresh.trace_id(), caller.trace_id());
    assert_eq!(
        job_trace(&env, &job).await.0.as_deref(),
        Some(fresh.to_string().as_str())
    );
}

#[tokio::test]
async fn malformed_traceparents_are_ignored_and_not_stored() {
    let env = start().await;
    let (_, inv) = env.seed(env.acme, "acme").await;
    let caller = TraceParent::parse(TRACEPARENT).expect("caller");
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'; --",
    ] {
        // The request succeeds as if no trace context came with it: a new trace, which
        // the job is stored with.
        let (job, answered) = send(&env, &inv, Some(bad)).await;
        assert_ne!(answered.trace_id(), caller.trace_id(), "{bad:?}");
        assert_eq!(
            job_trace(&env, &job).await.0.as_deref(),
            Some(answered.to_string().as_str()),
            "{bad:?}"
        );
    }
}

/// What is asked and the status it gets: what, status, method, path, headers, body.
type Case<'a> = (
    &'a str,
    u16,
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Option<serde_json::Value>,
);

/// The request id of a response: the header, and the same id in the problem body.
fn id_of(what: &str, r: &Resp) -> String {
    let header = r
        .request_id
        .clone()
        .unwrap_or_else(|| panic!("{what}: no X-Request-Id: {r:?}"));
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{what}: {r:?}"
    );
    assert_eq!(r.body["request_id"], json!(header), "{what}: {r:?}");
    header
}

#[tokio::test]
async fn every_problem_carries_the_request_id_its_header_carries() {
    let env = start().await;
    let (_, inv) = env.seed(env.acme, "acme").await;
    let acme = format!("Bearer {}", token(env.acme));
    let read_only = format!(
        "Bearer {}",
        token_with(env.acme, |c| c["scope"] = json!("invoices:read"))
    );
    let initech = format!("Bearer {}", token(env.initech));
    let missing = uuid::Uuid::new_v4();
    let cases: Vec<Case> = vec![
        (
            "no credential",
            401,
            "GET",
            "/customers".into(),
            vec![],
            None,
        ),
        (
            "bad token",
            401,
            "GET",
            "/customers".into(),
            vec![("authorization", "Bearer not.a.token")],
            None,
        ),
        (
            "suspended tenant",
            403,
            "GET",
            "/customers".into(),
            vec![("authorization", &initech)],
            None,
        ),
        (
            "missing scope",
            403,
            "POST",
            format!("/invoices/{inv}/send"),
            vec![("authorization", &read_only)],
            None,
        ),
        (
            "unknown invoice",
            404,
            "GET",
            format!("/invoices/{missing}"),
            vec![("authorization", &acme)],
            None,
        ),
        (
            "unknown route",
            404,
            "GET",
            "/nowhere".into(),
            vec![("authorization", &acme)],
            None,
        ),
        (
            "invalid customer",
            422,
            "POST",
            "/customers".into(),
            vec![("authorization", &acme)],
            Some(json!({"name": "", "email": "not-an-email"})),
        ),
        (
            "axum's own rejection (wrong method)",
            405,
            "PUT",
            "/customers".into(),
            vec![("authorization", &acme)],
            None,
        ),
    ];
    for (what, status, method, path, headers, body) in cases {
        // A fresh id when the client sends none.
        let r = env.call(method, &path, &headers, body.clone()).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        let id = id_of(what, &r);
        assert_eq!(id.len(), 32, "{what}: {id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{what}: {id}");
        // The client's own id when it is sane.
        let mut with_id = headers.clone();
        with_id.push(("x-request-id", "client-req-42"));
        let r = env.call(method, &path, &with_id, body.clone()).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert_eq!(id_of(what, &r), "client-req-42");
        // A new one when it is not (too long).
        let long = "x".repeat(129);
        let mut with_bad = headers.clone();
        with_bad.push(("x-request-id", &long));
        let r = env.call(method, &path, &with_bad, body).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert_eq!(id_of(what, &r).len(), 32, "{what}");
    }
    // Successes carry the header too (and their bodies are left alone).
    let r = env
        .call(
            "GET",
            "/customers",
            &[("authorization", &acme), ("x-request-id", "ok-1")],
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.request_id.as_deref()),
        (200, Some("ok-1")),
        "{r:?}"
    );
    let r = env
        .call("GET", "/health", &[("x-request-id", "pub-1")], None)
        .await;
    assert_eq!(
        (r.status, r.request_id.as_deref()),
        (200, Some("pub-1")),
        "{r:?}"
    );
}
