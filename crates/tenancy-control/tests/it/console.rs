//! The operator console through the router (no socket, no browser): sign-in and the
//! session, CSRF, the security headers, and the tenants page's search, filters and
//! keyset paging on a catalog of 100,000 tenants. The browser tests are in tenancy-cli.

use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tenancy_control::router;
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tower::ServiceExt;

use crate::api::{fresh_state, TOKEN};

/// (status, headers, body) of one request.
pub(crate) async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if form.is_some() {
        req = req.header("content-type", "application/x-www-form-urlencoded");
    }
    let req = req
        .body(form.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The value the response sets for cookie `name`.
fn set_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// Signs in: the sign-in page's CSRF cookie and field, then the token; the session cookie.
pub(crate) async fn sign_in(app: &axum::Router) -> String {
    let (s, h, page) = send(app, "GET", "/console/sign-in", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let pre = set_cookie(&h, "tenancy_console_sign_in").expect("sign-in cookie");
    assert!(
        page.contains(&format!("value=\"{pre}\"")),
        "the form carries it"
    );
    let cookie = format!("tenancy_console_sign_in={pre}");
    // Without the form's token, or with a wrong admin token: refused.
    let (s, _, _) = send(
        app,
        "POST",
        "/console/sign-in",
        Some(&cookie),
        Some(&format!("token={TOKEN}")),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, h, _) = send(
        app,
        "POST",
        "/console/sign-in",
        Some(&cookie),
        Some(&format!("csrf={pre}&token=wrong")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&h, "tenancy_console").is_none());
    let (s, h, _) = send(
        app,
        "POST",
        "/console/sign-in",
        Some(&cookie),
        Some(&format!("csrf={pre}&token={TOKEN}")),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let raw = h
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("tenancy_console="))
        .expect("session cookie")
        .to_owned();
    assert!(
        raw.contains("HttpOnly")
            && raw.contains("SameSite=Strict")
            && raw.contains("Path=/console"),
        "{raw}"
    );
    assert!(!raw.contains("Secure"), "plain HTTP: no Secure attribute");
    format!(
        "tenancy_console={}",
        set_cookie(&h, "tenancy_console").expect("value")
    )
}

/// The slugs of the tenants page, in order, and the next page's address.
fn slugs_and_next(page: &str) -> (Vec<String>, Option<String>) {
    let mut slugs = Vec::new();
    for part in page
        .split("<th scope=\"row\"><a href=\"/console/tenants/")
        .skip(1)
    {
        let slug = part
            .split_once("\">")
            .and_then(|(_, r)| r.split_once('<'))
            .map(|(s, _)| s);
        slugs.push(slug.expect("a slug").to_owned());
    }
    let next = page
        .split_once("rel=\"next\" href=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(h, _)| h.replace("&amp;", "&"));
    (slugs, next)
}

#[tokio::test]
async fn console_sessions_csrf_headers_and_keyset_paging_over_100k_tenants() {
    let (db, state, _p) = fresh_state().await;
    let app = router(state);
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    // 100,000 tenants: every 1000th suspended, every 10th on plan pro; one custom domain.
    let started = Instant::now();
    owner
        .batch_execute(
            "INSERT INTO tenancy_catalog.tenants (id, slug, display_name, plan, region, placement, cluster_id, state)
             SELECT gen_random_uuid(), 't' || lpad(i::text, 6, '0'), 'Tenant ' || i,
                    CASE WHEN i % 10 = 0 THEN 'pro' ELSE 'free' END, 'eu-west', 'pooled',
                    (SELECT id FROM tenancy_catalog.clusters LIMIT 1),
                    CASE WHEN i % 1000 = 0 THEN 'suspended' ELSE 'active' END
               FROM generate_series(1, 100000) i;
             INSERT INTO tenancy_catalog.config_domains (tenant_id, hostname, state, token, version)
             SELECT id, 'app.t042000.example.com', 'verified', 'tok', 1 FROM tenancy_catalog.tenants WHERE slug = 't042000';
             ANALYZE tenancy_catalog.tenants;",
        )
        .await
        .expect("100,000 tenants");
    eprintln!("seeded 100,000 tenants in {:?}", started.elapsed());

    // No session: every page redirects to the sign-in page, a POST too.
    for (method, path) in [
        ("GET", "/console/tenants"),
        ("GET", "/console/flags"),
        ("POST", "/console/sign-out"),
    ] {
        let (s, h, _) = send(&app, method, path, None, None).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{method} {path}");
        assert_eq!(h["location"], "/console/sign-in");
    }
    let cookie = sign_in(&app).await;
    let (s, h, page) = send(&app, "GET", "/console/tenants", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    let csp = h["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(
        !page.contains("style=") && !page.contains("<script>"),
        "no inline style or script"
    );
    let csrf = page
        .split_once("name=\"csrf\" value=\"")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .expect("the sign-out form's CSRF token");

    // Timed pages: the first, a deep one, a selective filter, searches.
    let mut timed = Vec::new();
    let mut get = async |label: &str, uri: &str| {
        let t = Instant::now();
        let (s, _, page) = send(&app, "GET", uri, Some(&cookie), None).await;
        timed.push(format!(
            "{label}: {:.1} ms",
            t.elapsed().as_secs_f64() * 1000.0
        ));
        assert_eq!(s, StatusCode::OK, "{uri}");
        slugs_and_next(&page)
    };
    let (first, next) = get("first page", "/console/tenants").await;
    assert_eq!(first.len(), 50);
    assert_eq!(first[0], "t000001");
    let next = next.expect("a next page");
    let (second, _) = get("second page", &next).await;
    assert_eq!(
        second[0], "t000051",
        "the next page starts after the last one"
    );
    let deep_id: String = owner
        .query_one(
            "SELECT id::text FROM tenancy_catalog.tenants WHERE slug = 't099980'",
            &[],
        )
        .await
        .expect("id")
        .get(0);
    let (deep, next) = get(
        "page after t099980",
        &format!("/console/tenants?after_slug=t099980&after_id={deep_id}"),
    )
    .await;
    assert_eq!(
        deep,
        (99981..=100000)
            .map(|i| format!("t{i:06}"))
            .collect::<Vec<_>>()
    );
    assert!(next.is_none(), "the last page has no next page");
    // A selective filter, paged to its end: every suspended tenant exactly once, in order.
    let mut seen = Vec::new();
    let mut uri = Some("/console/tenants?state=suspended".to_owned());
    while let Some(u) = uri {
        let (s, n) = get("suspended, one page", &u).await;
        seen.extend(s);
        uri = n;
    }
    assert_eq!(
        seen,
        (1..=100)
            .map(|i| format!("t{:06}", i * 1000))
            .collect::<Vec<_>>()
    );
    let (pro, _) = get(
        "plan pro and prefix t0999",
        "/console/tenants?q=t0999&plan=pro",
    )
    .await;
    assert_eq!(
        pro,
        (99900..=99990)
            .step_by(10)
            .map(|i| format!("t{i:06}"))
            .collect::<Vec<_>>()
    );
    let (by_domain, _) = get("by domain", "/console/tenants?q=APP.t042000.example.com").await;
    assert_eq!(by_domain, ["t042000"]);
    let (none, _) = get("prefix without match", "/console/tenants?q=zzz").await;
    assert!(none.is_empty());
    let (s, _, page) = send(
        &app,
        "GET",
        "/console/tenants?state=gone",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Unknown state"));
    eprintln!(
        "console tenants pages at 100,000 tenants (through the router):\n  {}",
        timed.join("\n  ")
    );

    // An action goes through the API's handler: confirmation page, then the post queues
    // the workflow once (the form's key is its idempotency key), an unknown plan is refused
    // with the API's own message.
    let t1: String = owner
        .query_one(
            "SELECT id::text FROM tenancy_catalog.tenants WHERE slug = 't000001'",
            &[],
        )
        .await
        .expect("id")
        .get(0);
    let confirm = format!("/console/tenants/{t1}/actions?action=plan&plan=pro");
    let (s, _, page) = send(&app, "GET", &confirm, Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    let field = |name: &str| {
        page.split_once(&format!("name=\"{name}\" value=\""))
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(v, _)| v.to_owned())
            .expect(name)
    };
    let form = format!(
        "csrf={}&action=plan&plan=pro&key={}",
        field("csrf"),
        field("key")
    );
    let actions = format!("/console/tenants/{t1}/actions");
    for _ in 0..2 {
        let (s, h, _) = send(&app, "POST", &actions, Some(&cookie), Some(&form)).await;
        assert_eq!(s, StatusCode::SEE_OTHER);
        assert_eq!(h["location"], format!("/console/tenants/{t1}").as_str());
    }
    let queued: i64 = owner
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.workflows WHERE tenant_id = $1::text::uuid AND kind = 'change_plan' AND input->>'plan' = 'pro'",
            &[&t1],
        )
        .await
        .expect("workflows")
        .get(0);
    assert_eq!(queued, 1, "the form sent twice queued one workflow");
    let (s, _, page) = send(
        &app,
        "GET",
        &format!("/console/tenants/{t1}"),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("plan queued (workflow "),
        "the flash of the action"
    );
    // The queued workflow is in flight on the workflows page, with its own page.
    let (s, _, page) = send(&app, "GET", "/console/workflows", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    let wf = page
        .split_once("<a href=\"/console/workflows/")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .expect("a workflow in flight");
    assert!(
        page.contains(">t000001</a>") && page.contains("change_plan"),
        "{page}"
    );
    let (s, _, page) = send(
        &app,
        "GET",
        &format!("/console/workflows/{wf}"),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("pending"), "{page}");
    let (s, _, _) = send(
        &app,
        "GET",
        "/console/workflows/not-a-uuid",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = send(&app, "GET", "/console/deliveries", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, page) = send(&app, "GET", "/console/flags", Some(&cookie), None).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "no configuration service on this state"
    );
    assert!(page.contains("not mounted"));
    let (s, _, _) = send(
        &app,
        "GET",
        "/console/tenants/no-such-tenant",
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let bad = format!(
        "csrf={}&action=plan&plan=nope&key=console-test-bad-plan",
        field("csrf")
    );
    let (s, _, page) = send(&app, "POST", &actions, Some(&cookie), Some(&bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("does not exist"), "{page}");
    let nul = format!(
        "csrf={}&action=suspend&reason=a%00b&key=console-test-nul",
        field("csrf")
    );
    let (s, _, page) = send(&app, "POST", &actions, Some(&cookie), Some(&nul)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("NUL"), "{page}");

    // CSRF: a POST without the token, or with another, is refused and ends nothing.
    let (s, _, _) = send(&app, "POST", "/console/sign-out", Some(&cookie), Some("")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(
        &app,
        "POST",
        "/console/sign-out",
        Some(&cookie),
        Some("csrf=00"),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = send(&app, "GET", "/console/tenants", Some(&cookie), None).await;
    assert_eq!(s, StatusCode::OK, "the session still works");
    let (s, h, _) = send(
        &app,
        "POST",
        "/console/sign-out",
        Some(&cookie),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/console/sign-in");
    let (s, h, _) = send(&app, "GET", "/console/tenants", Some(&cookie), None).await;
    assert_eq!(
        s,
        StatusCode::SEE_OTHER,
        "signed out: the cookie no longer works"
    );
    assert_eq!(h["location"], "/console/sign-in");
}
