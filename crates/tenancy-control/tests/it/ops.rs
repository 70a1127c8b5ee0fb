//! The operator's endpoints through the router: `/metrics` counts requests by route
//! template and tenant transactions (the SDK's `metrics` feature), `/readyz` reports its
//! checks, and an unreachable catalog is a 503 problem.

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tenancy_control::router;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};
use tower::ServiceExt;

use crate::api::fresh_state;

async fn get(app: &axum::Router, uri: &str) -> (u16, String, String) {
    let req = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, ct, String::from_utf8_lossy(&body).into_owned())
}

/// The value of one counter series in a scrape (0 when absent).
fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_count_routes_by_template_and_tenant_transactions() {
    let (db, state, _p) = fresh_state().await;
    let app = router(state);
    let (s, _, _) = get(&app, "/metrics").await;
    assert_eq!(s, 200);
    let (_, _, before) = get(&app, "/metrics").await;

    // Requests on a templated route are one series, whatever the id.
    for id in [
        "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-000000000002",
    ] {
        let (s, _, _) = get(&app, &format!("/v1/tenants/{id}")).await;
        assert_eq!(s, 401);
    }
    let (s, ct, body) = get(&app, "/metrics").await;
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    let route = [("route", "/v1/tenants/:id"), ("status", "401")];
    assert!(
        counter(&body, "tenancy_http_requests_total", &route)
            - counter(&before, "tenancy_http_requests_total", &route)
            >= 2.0,
        "{body}"
    );
    assert!(!body.contains("00000000-0000-4000-8000-000000000001"));

    // Tenant transactions: committed, rolled back, dropped, refused.
    let pool = TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        ContextKey::from_hex("ctl".parse().expect("kid"), &"ab".repeat(32)).expect("key"),
        PoolOptions::default(),
    )
    .expect("pool");
    let tenant = TenantId::new_random();
    for _ in 0..3 {
        let mut tx = pool.begin(tenant).await.expect("begin");
        tx.query_one("SELECT 1", &[]).await.expect("query");
        tx.commit().await.expect("commit");
    }
    for _ in 0..2 {
        let mut tx = pool.begin(tenant).await.expect("begin");
        tx.query_one("SELECT 1", &[]).await.expect("query");
        tx.rollback().await.expect("rollback");
    }
    {
        let mut tx = pool.begin(tenant).await.expect("begin");
        tx.batch_execute("SELECT 1").await.expect("explicit");
    }
    assert!(pool.begin_in_schema(tenant, "Not A Schema").await.is_err());
    let (_, _, after) = get(&app, "/metrics").await;
    let delta = |event: &str| {
        counter(&after, "tenancy_tenant_tx_total", &[("event", event)])
            - counter(&before, "tenancy_tenant_tx_total", &[("event", event)])
    };
    assert!(delta("opened") >= 6.0, "{after}");
    assert!(delta("committed") >= 3.0, "{after}");
    assert!(delta("rolled_back") >= 3.0, "{after}");
    assert!(delta("refused") >= 1.0, "{after}");
    // The waits for a connection: one sample per opened transaction, and the pool's sizes.
    let sample = |body: &str, name: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        sample(&after, "tenancy_pool_wait_seconds_count")
            - sample(&before, "tenancy_pool_wait_seconds_count")
            >= 6.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "tenancy_pool_connections{state=\"max\"}"),
        PoolOptions::default().max_size as f64,
        "{after}"
    );
}

#[tokio::test]
async fn readyz_reports_its_checks_and_livez_needs_nothing() {
    let (_db, state, _p) = fresh_state().await;
    let app = router(state);
    let (s, _, body) = get(&app, "/readyz").await;
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["checks"]["catalog"]["ok"], true, "{v}");
    assert_eq!(v["checks"]["migrations"]["ok"], true, "{v}");
    assert_eq!(
        v["checks"]["migrations"]["at"], v["checks"]["migrations"]["needed"],
        "{v}"
    );
    assert!(
        v["checks"]["context"]["implementation"]
            .as_str()
            .is_some_and(|i| i.starts_with("native") || i.starts_with("PL/pgSQL")),
        "{v}"
    );
    let (s, _, _) = get(&app, "/livez").await;
    assert_eq!(s, 200);
}

#[test]
fn data_dir_and_shutdown_grace_are_read_from_the_environment_and_checked() {
    use tenancy_control::ControlConfig;
    let env = |kv: &[(&str, &str)]| -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let c = ControlConfig::load_with_env(
        None,
        &env(&[
            ("TENANCY_DATA_DIR", "/var/lib/tenancy"),
            ("TENANCY_SHUTDOWN_GRACE_SECS", "5"),
        ]),
    )
    .expect("config");
    assert_eq!(
        c.data_dir.as_deref(),
        Some(std::path::Path::new("/var/lib/tenancy"))
    );
    assert_eq!(c.shutdown_grace_secs, 5);
    assert_eq!(
        ControlConfig::load_with_env(None, &[])
            .expect("defaults")
            .shutdown_grace_secs,
        30
    );
    let refused =
        |kv: &[(&str, &str)]| ControlConfig::load_with_env(None, &env(kv)).expect_err("refused");
    let e = refused(&[("TENANCY_SHUTDOWN_GRACE_SECS", "soon")]);
    assert!(
        e.contains("TENANCY_SHUTDOWN_GRACE_SECS") && e.contains("number"),
        "{e}"
    );
    let e = refused(&[("TENANCY_SHUTDOWN_GRACE_SECS", "7200")]);
    assert!(e.contains("at most 3600"), "{e}");
    let e = refused(&[
        ("TENANCY_DATA_DIR", "/var/lib/tenancy"),
        ("DATABASE_URL", "host=/tmp dbname=x"),
    ]);
    assert!(e.contains("data_dir") && e.contains("database_url"), "{e}");
}
