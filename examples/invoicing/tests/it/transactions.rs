//! The request transaction: committed on success, rolled back on an error response or a
//! panic; the tenant scope reaches spawned tasks.

use axum::routing::{get, post};
use serde_json::json;
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::{spawn_with_tenant, HttpError, Source, Tenancy, Tenant, TenantKey, Tx};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};

use crate::support::*;

async fn insert(tx: &mut Tx, email: &str) {
    tx.execute(
        "INSERT INTO invoicing.customers (name, email) VALUES ('t', $1)",
        &[&email],
    )
    .await
    .expect("insert");
}

#[tokio::test]
async fn commit_on_success_rollback_on_error_response_or_panic() {
    let mut env = start().await;
    // The app: a failing line rolls back the invoice inserted before it.
    let (cust, _) = env.seed(env.acme, "acme").await;
    let r = env
        .as_tenant(env.acme, "POST", "/invoices", Some(json!({"customer_id": cust, "number": "BAD-1",
            "lines": [{"description": "ok", "quantity": 1, "unit_price_cents": 1}, {"description": "bad", "quantity": 0, "unit_price_cents": 1}]})))
        .await;
    assert_eq!((r.status, r.code()), (422, "validation"), "{r:?}");
    let r = env.as_tenant(env.acme, "GET", "/invoices", None).await;
    assert_eq!(
        r.body.as_array().map(Vec::len),
        Some(1),
        "the failed invoice was rolled back: {r:?}"
    );

    // A bespoke router on the same layer, with handlers that succeed, fail and panic.
    let router = Router::new(
        env.db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )
    .expect("router");
    let tenancy = Tenancy::builder(router, env.db.config_as(RUNTIME_ROLE))
        .source(Source::jwt(
            JwtConfig::new(TenantClaim::Id("tenant_id".into()))
                .issuer(JwtIssuer::new(DEV_ISS, AUD).key(JwtKey::hs256(HS_SECRET).expect("key"))),
        ))
        .build()
        .expect("tenancy");
    let app = axum::Router::new()
        .route(
            "/ok",
            post(|mut tx: Tx| async move {
                insert(&mut tx, "ok@x.test").await;
                axum::http::StatusCode::CREATED
            }),
        )
        .route(
            "/fail",
            post(|mut tx: Tx| async move {
                insert(&mut tx, "fail@x.test").await;
                Err::<(), _>(HttpError::Conflict("no".into()))
            }),
        )
        .route(
            "/panic",
            post(|mut tx: Tx| async move {
                insert(&mut tx, "panic@x.test").await;
                let boom = || -> &'static str { panic!("handler bug") };
                boom()
            }),
        )
        .route(
            "/write-on-get",
            get(|mut tx: Tx| async move {
                tx.execute(
                    "INSERT INTO invoicing.customers (name, email) VALUES ('t', 'get@x.test')",
                    &[],
                )
                .await
                .map_err(HttpError::from)?;
                Ok::<_, HttpError>(axum::http::StatusCode::CREATED)
            }),
        )
        .route(
            "/scope",
            get(|tenant: Tenant| async move {
                let current = Tenant::current().map(|t| t.id());
                let spawned =
                    spawn_with_tenant(&tenant, async { Tenant::current().map(|t| t.id()) })
                        .await
                        .expect("task");
                let key = TenantKey::new(&tenant, "invoice:42").to_string();
                axum::Json(json!({"current": current, "spawned": spawned, "key": key}))
            }),
        )
        .layer(tenancy.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    env.base = format!("http://127.0.0.1:{port}");
    let bespoke = &env;
    let r = bespoke.as_tenant(bespoke.acme, "POST", "/ok", None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = bespoke.as_tenant(bespoke.acme, "POST", "/fail", None).await;
    assert_eq!((r.status, r.code()), (409, "conflict"));
    let r = bespoke
        .as_tenant(bespoke.acme, "POST", "/panic", None)
        .await;
    assert_eq!((r.status, r.code()), (500, "internal"), "{r:?}");
    assert!(r.body.get("detail").is_none(), "no internal details: {r:?}");
    // GET requests get read-only transactions: a write in one is refused.
    let r = bespoke
        .as_tenant(bespoke.acme, "GET", "/write-on-get", None)
        .await;
    assert!(r.status >= 400, "a GET must not write: {r:?}");
    let r = bespoke.as_tenant(bespoke.acme, "GET", "/scope", None).await;
    assert_eq!(r.body["current"], bespoke.acme.to_string(), "{r:?}");
    assert_eq!(r.body["spawned"], bespoke.acme.to_string());
    assert_eq!(r.body["key"], format!("t:{}:invoice:42", bespoke.acme));

    let pool = tenancy_sdk::TenantPool::new(
        bespoke.db.config_as(RUNTIME_ROLE),
        key(),
        Default::default(),
    )
    .expect("pool");
    let mut tx = pool.begin(bespoke.acme).await.expect("begin");
    let rows = tx
        .query(
            "SELECT email FROM invoicing.customers WHERE email LIKE '%@x.test' ORDER BY email",
            &[],
        )
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    let emails: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        emails,
        vec!["ok@x.test".to_owned()],
        "only the successful request committed"
    );
}
