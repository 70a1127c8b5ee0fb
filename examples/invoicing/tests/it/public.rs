//! Routes declared public are served without a credential and without any tenant data;
//! an application's own session source authenticates like a JWT.

use std::future::Future;
use std::pin::Pin;

use axum::http::request::Parts;
use axum::routing::{get, post};
use serde_json::json;
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::{HttpError, Session, SessionSource, Source, Tenancy, Tenant, Tx};
use tenancy_core::TenantId;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};
use tower_layer::Layer as _;

use crate::anonymous::db_state;
use crate::support::*;

/// A session cookie `session=<tenant id>.<secret>` checked against one known secret: the
/// shape of an application's own credential.
#[derive(Debug)]
struct CookieSessions {
    tenant: TenantId,
    secret: &'static str,
}

impl SessionSource for CookieSessions {
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Session>, HttpError>> + Send + 'a>> {
        Box::pin(async move {
            let Some(cookie) = parts
                .headers
                .get("cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|c| c.strip_prefix("session="))
            else {
                return Ok(None);
            };
            if cookie == format!("{}.{}", self.tenant, self.secret) {
                Ok(Some(
                    Session::new(self.tenant, "cookie-user").with_scopes(["invoices:write"]),
                ))
            } else {
                Err(HttpError::InvalidCredentials {
                    reason: "session is not valid".into(),
                })
            }
        })
    }
}

async fn insert(tx: &mut Tx, email: &str) -> Result<(), HttpError> {
    tx.execute(
        "INSERT INTO invoicing.customers (name, email) VALUES ('t', $1)",
        &[&email],
    )
    .await?;
    Ok(())
}

/// Serves a bespoke app on the env's database with a public route whose handlers try to
/// reach tenant data, and a session source for acme; points `env` at it.
async fn bespoke(env: &mut Env) {
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
        .source(Source::session(CookieSessions {
            tenant: env.acme,
            secret: "s3cret",
        }))
        .source(Source::path_prefix("/t"))
        .public("/open")
        .public("/open/{token}/tx")
        .public("/open/tenant")
        .build()
        .expect("tenancy");
    let app = axum::Router::new()
        .route("/open", get(|| async { "open" }))
        .route(
            "/open/{token}/tx",
            post(|mut tx: Tx| async move {
                insert(&mut tx, "public@x.test").await?;
                Ok::<_, HttpError>(axum::http::StatusCode::CREATED)
            }),
        )
        .route(
            "/open/tenant",
            get(|t: Tenant| async move { t.slug().to_string() }),
        )
        .route(
            "/write",
            post(|tenant: Tenant, mut tx: Tx| async move {
                tenant.require_scope("invoices:write")?;
                insert(&mut tx, "session@x.test").await?;
                Ok::<_, HttpError>(axum::Json(
                    json!({"slug": tenant.slug(), "via": tenant.via().iter().map(|v| v.as_str()).collect::<Vec<_>>(), "subject": tenant.subject()}),
                ))
            }),
        )
        ;
    // Around the whole router, as the example app does, so the path prefix is stripped
    // before routing.
    let app = axum::Router::new().fallback_service(tenancy.layer().layer(app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    env.base = format!("http://127.0.0.1:{port}");
}

#[tokio::test]
async fn a_public_route_is_served_anonymously_and_cannot_obtain_a_tx() {
    let mut env = start().await;
    // The example app's own public route.
    let r = env.call("GET", "/health", &[], None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("ok")),
        "{r:?}"
    );
    // Other spellings of it are not public, and neither is a tenant's copy of it.
    for path in [
        "/health/",
        "//health",
        "/%68ealth",
        "/t/globex/health",
        "/health/../customers",
    ] {
        let r = env.call("GET", path, &[], None).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{path}: {r:?}"
        );
    }

    bespoke(&mut env).await;
    let before = db_state(&env).await;
    let r = env.call("GET", "/open", &[], None).await;
    assert_eq!((r.status, r.body.as_str()), (200, Some("open")), "{r:?}");
    // A handler of a public route gets no transaction and no tenant, even when the
    // request carries a valid credential or names a tenant.
    let acme_jwt = format!("Bearer {}", token(env.acme));
    for headers in [
        vec![],
        vec![("authorization", acme_jwt.as_str())],
        vec![("host", "acme.invoicing.test")],
    ] {
        let r = env.call("POST", "/open/abc/tx", &headers, None).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{headers:?}: {r:?}"
        );
        let r = env.call("GET", "/open/tenant", &headers, None).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{headers:?}: {r:?}"
        );
    }
    // Path tricks only make a route non-public (then a credential is needed).
    for path in [
        "/open/%2e%2e/tx",
        "/open/../tx",
        "//open/abc/tx",
        "/t/acme/open/abc/tx",
    ] {
        let r = env.call("POST", path, &[], None).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthenticated"),
            "{path}: {r:?}"
        );
    }
    assert_eq!(db_state(&env).await, before, "nothing stored");
}

#[tokio::test]
async fn an_application_session_authenticates_like_a_credential() {
    let mut env = start().await;
    bespoke(&mut env).await;
    let before = db_state(&env).await;
    // Anonymous, a forged session, or acme's session selecting globex: refused.
    let r = env.call("POST", "/write", &[], None).await;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{r:?}");
    let forged = format!("session={}.guess", env.acme);
    let r = env
        .call("POST", "/write", &[("cookie", &forged)], None)
        .await;
    assert_eq!((r.status, r.code()), (401, "invalid-credentials"), "{r:?}");
    let good = format!("session={}.s3cret", env.acme);
    let r = env
        .call("POST", "/t/globex/write", &[("cookie", &good)], None)
        .await;
    assert_eq!((r.status, r.code()), (403, "tenant-mismatch"), "{r:?}");
    // A globex token together with acme's session: the credentials disagree.
    let globex_jwt = format!("Bearer {}", token(env.globex));
    let r = env
        .call(
            "POST",
            "/write",
            &[("cookie", &good), ("authorization", &globex_jwt)],
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "tenant-mismatch"), "{r:?}");
    assert_eq!(db_state(&env).await, before, "nothing stored");
    // The session itself works, with the scopes it grants.
    let r = env
        .call("POST", "/t/acme/write", &[("cookie", &good)], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        json!({"slug": "acme", "via": ["session", "path_prefix"], "subject": "cookie-user"})
    );
}
