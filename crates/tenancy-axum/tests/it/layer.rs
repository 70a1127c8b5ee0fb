//! The layer configured as the README shows it (JWT + subdomain, plus a path prefix and a
//! public route), on a real cluster, called over real HTTP: naming a tenant is never a
//! credential, a credential of one tenant never selects another, absent scopes grant
//! nothing, a public route gets no transaction, and every response names the request's
//! span in a W3C `traceparent`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tenancy_axum::access::AccessSink;
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::{HttpError, Source, Tenancy, Tenant, Tx};
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_core::{ContextKey, Placement, TenantId, TenantState};
use tenancy_insights::anomaly::{
    network_of, AccessEvent, AccessKind, AnomalyFeed, DetectorOptions, Fingerprint,
};
use tenancy_jobs::TraceParent;
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_layer::Layer as _;

static TEMPLATE: TemplateDb = TemplateDb::new("axum_layer_tpl");
const KEY_HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const SECRET: &[u8] = b"layer-test-secret-of-at-least-32-bytes";
const ISS: &str = "https://idp.test";
const AUD: &str = "app";
const BASE: &str = "app.example.com";

fn key() -> ContextKey {
    ContextKey::from_hex("t".parse().expect("kid"), KEY_HEX).expect("key")
}

async fn connect(cfg: tokio_postgres::Config) -> tokio_postgres::Client {
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    c
}

struct Env {
    db: TestDb,
    base: String,
    acme: TenantId,
    globex: TenantId,
}

fn token(tenant: TenantId, scope: Option<&str>) -> String {
    token_naming(&tenant.to_string(), scope)
}

/// A token whose tenant claim is `tenant_id` exactly as given.
fn token_naming(tenant_id: &str, scope: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut claims = json!({"iss": ISS, "aud": AUD, "sub": "u", "tenant_id": tenant_id,
                            "exp": now + 600});
    if let Some(s) = scope {
        claims["scope"] = json!(s);
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

async fn notes(tx: &mut Tx) -> Result<Vec<String>, HttpError> {
    let rows = tx
        .query("SELECT body FROM notes ORDER BY body", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A cluster with two active tenants, a tenant table `notes`, and the app served.
async fn start() -> Env {
    start_with(None).await
}

/// [`start`], the layer recording access events into `access` when given.
async fn start_with(access: Option<Arc<dyn AccessSink>>) -> Env {
    let db = tenancy_test_support::fresh_catalog_db(
        &TEMPLATE,
        key(),
        "CREATE TABLE notes (tenant_id uuid NOT NULL, id uuid NOT NULL DEFAULT gen_random_uuid(),
             body text NOT NULL, PRIMARY KEY (tenant_id, id));
         SELECT tenancy.make_tenant_table('notes');",
    )
    .await;
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    let region = "eu-west".parse().expect("region");
    tenancy_catalog::add_region(&owner, &region, "EU")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "pg-1".into(),
            region: region.clone(),
            location: tenancy_catalog::ClusterLocation {
                host: db.cluster.socket_dir().display().to_string(),
                port: db.cluster.port(),
                dbname: db.name.clone(),
            },
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let mut ids = Vec::new();
    for slug in ["acme", "globex"] {
        let t = tenancy_catalog::create_tenant(
            &mut owner,
            &NewTenant {
                id: None,
                slug: slug.parse().expect("slug"),
                display_name: slug.into(),
                plan: "pro".parse().expect("plan"),
                region: region.clone(),
                placement: Placement::Pooled,
            },
            "test",
        )
        .await
        .expect("tenant");
        tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "test", "ready")
            .await
            .expect("activate");
        ids.push(t.id);
    }
    let router = Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )
    .expect("router");
    // The README's configuration, plus a path prefix and public routes.
    let mut tenancy = Tenancy::builder(router, db.config_as(RUNTIME_ROLE));
    if let Some(sink) = access {
        tenancy = tenancy.access_sink(sink);
    }
    let tenancy = tenancy
        .source(Source::jwt(
            JwtConfig::new(TenantClaim::Id("tenant_id".into()))
                .issuer(JwtIssuer::new(ISS, AUD).key(JwtKey::hs256(SECRET).expect("key"))),
        ))
        .source(Source::subdomain(BASE))
        .source(Source::path_prefix("/t"))
        .public("/health")
        .public("/open")
        .public("/trace")
        .build()
        .expect("tenancy");
    let routes = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        // The trace context a handler (and the jobs it enqueues) sees.
        .route(
            "/trace",
            get(|| async {
                TraceParent::current()
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            }),
        )
        .route(
            "/open",
            get(|mut tx: Tx| async move { notes(&mut tx).await.map(axum::Json) }),
        )
        .route(
            "/notes",
            get(|t: Tenant, mut tx: Tx| async move {
                t.require_scope("notes:read")?;
                notes(&mut tx).await.map(axum::Json)
            })
            .post(write)
            .patch(write)
            .delete(write)
            .put(write),
        )
        .route(
            "/whoami",
            post(|t: Tenant| async move { t.slug().to_string() }),
        );
    let app = axum::Router::new().fallback_service(tenancy.layer().layer(routes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // With the peer address, as `tenancy serve` and the example app serve.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Env {
        db,
        base: format!("127.0.0.1:{port}"),
        acme: ids[0],
        globex: ids[1],
    }
}

async fn write(t: Tenant, mut tx: Tx) -> Result<&'static str, HttpError> {
    t.require_scope("notes:write")?;
    tx.execute("INSERT INTO notes (body) VALUES ('written')", &[])
        .await?;
    Ok("written")
}

impl Env {
    /// One HTTP/1.1 request; returns the status and the problem code (or body text).
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let (status, _, body) = self.exchange(method, path, headers).await;
        let code = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or(body);
        (status, code)
    }

    /// One HTTP/1.1 request; returns the status, the response headers (names lowercase)
    /// and the body.
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<(String, String)>, String) {
        let mut s = tokio::net::TcpStream::connect(&self.base)
            .await
            .expect("connect");
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nconnection: close\r\ncontent-length: 0\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("host: {}\r\n", self.base));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, body.to_owned())
    }

    /// Every note of every tenant, read as the superuser (past row-level security).
    async fn all_notes(&self) -> i64 {
        let su = self.db.connect_superuser().await.expect("superuser");
        su.query_one("SELECT count(*) FROM notes", &[])
            .await
            .expect("count")
            .get(0)
    }
}

const METHODS: [&str; 5] = ["GET", "POST", "PATCH", "DELETE", "PUT"];

#[tokio::test]
async fn anonymous_requests_naming_a_tenant_are_refused_on_every_method() {
    let env = start().await;
    let globex_path = format!("/t/{}/notes", env.globex);
    for method in METHODS {
        for (path, headers) in [
            ("/t/globex/notes", vec![]),
            (globex_path.as_str(), vec![]),
            ("/notes", vec![("host", "globex.app.example.com")]),
            ("/notes", vec![("host", "globex.app.example.com:443")]),
            ("/t/globex/whoami", vec![]),
            ("/t/globex/nope", vec![]),
        ] {
            let r = env.call(method, path, &headers).await;
            assert_eq!(
                r,
                (401, "unauthenticated".into()),
                "{method} {path} {headers:?}"
            );
        }
    }
    assert_eq!(env.all_notes().await, 0, "nothing written");
}

#[tokio::test]
async fn a_token_of_one_tenant_never_selects_another() {
    let env = start().await;
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read notes:write")));
    let globex_path = format!("/t/{}/notes", env.globex);
    for method in METHODS {
        for (path, host) in [
            ("/t/globex/notes", None),
            (globex_path.as_str(), None),
            ("/notes", Some("globex.app.example.com")),
            ("/notes", Some("nosuchco.app.example.com")),
        ] {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(host.map(|h| ("host", h)));
            let r = env.call(method, path, &headers).await;
            assert_eq!(
                r,
                (403, "tenant-mismatch".into()),
                "{method} {path} {host:?}"
            );
        }
    }
    assert_eq!(env.all_notes().await, 0, "nothing written");
    // Its own tenant, selected or not, works.
    for (path, host) in [
        ("/notes", None),
        ("/t/acme/notes", None),
        ("/notes", Some("acme.app.example.com")),
    ] {
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend(host.map(|h| ("host", h)));
        assert_eq!(
            env.call("POST", path, &headers).await.0,
            200,
            "{path} {host:?}"
        );
    }
    assert_eq!(env.all_notes().await, 3);
}

#[tokio::test]
async fn a_token_naming_its_tenant_in_another_spelling_names_no_tenant_even_once_cached() {
    let env = start().await;
    let canonical = env.acme.to_string();
    let uuid = uuid::Uuid::parse_str(&canonical).expect("uuid");
    for other in [
        canonical.to_uppercase(),
        uuid.simple().to_string(),
        format!("{{{canonical}}}"),
        uuid.urn().to_string(),
        format!(" {canonical}"),
    ] {
        let auth = format!("Bearer {}", token_naming(&other, Some("notes:read")));
        // The second request is answered from the cache of verified tokens.
        for attempt in ["verified", "cached"] {
            assert_eq!(
                env.call("GET", "/notes", &[("authorization", auth.as_str())])
                    .await,
                (404, "tenant-not-found".into()),
                "{other:?} ({attempt})"
            );
        }
    }
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read")));
    for attempt in ["verified", "cached"] {
        assert_eq!(
            env.call("GET", "/notes", &[("authorization", auth.as_str())])
                .await
                .0,
            200,
            "{attempt}"
        );
    }
}

#[tokio::test]
async fn a_token_without_scopes_allows_no_scoped_operation() {
    let env = start().await;
    let bare = format!("Bearer {}", token(env.acme, None));
    assert_eq!(
        env.call("POST", "/whoami", &[("authorization", &bare)])
            .await,
        (200, "acme".into())
    );
    for method in METHODS {
        let r = env
            .call(method, "/notes", &[("authorization", &bare)])
            .await;
        assert_eq!(r, (403, "insufficient-scope".into()), "{method}");
    }
    let read = format!("Bearer {}", token(env.acme, Some("notes:read")));
    assert_eq!(
        env.call("GET", "/notes", &[("authorization", &read)])
            .await
            .0,
        200
    );
    let r = env
        .call("POST", "/notes", &[("authorization", &read)])
        .await;
    assert_eq!(r, (403, "insufficient-scope".into()));
    assert_eq!(env.all_notes().await, 0, "nothing written");
}

#[tokio::test]
async fn a_public_route_is_served_without_a_tenant_and_gets_no_tx() {
    let env = start().await;
    assert_eq!(env.call("GET", "/health", &[]).await, (200, "ok".into()));
    // Even with a valid token, the public route's handler cannot open a transaction.
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read")));
    for headers in [vec![], vec![("authorization", auth.as_str())]] {
        let r = env.call("GET", "/open", &headers).await;
        assert_eq!(r, (401, "unauthenticated".into()), "{headers:?}");
    }
    // Other spellings of a public path are not public.
    for path in [
        "//health",
        "/health/",
        "/%68ealth",
        "/t/acme/health",
        "/t/acme/open",
    ] {
        let r = env.call("GET", path, &[]).await;
        assert_eq!(r, (401, "unauthenticated".into()), "{path}");
    }
}

/// A path, the headers to send and the status expected.
type Route<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

/// The `traceparent` of a response: valid, and the only one.
fn traceparent_of(headers: &[(String, String)]) -> TraceParent {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values.len(), 1, "one traceparent: {headers:?}");
    TraceParent::parse(values[0]).unwrap_or_else(|| panic!("valid traceparent: {}", values[0]))
}

#[tokio::test]
async fn every_response_names_the_request_span_in_a_w3c_traceparent() {
    let env = start().await;
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let incoming = TraceParent::parse(caller).expect("caller");
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read")));
    // A public route, a tenant route, and a refusal (a problem answered by the layer).
    let routes: [Route; 3] = [
        ("/trace", vec![], 200),
        ("/notes", vec![("authorization", auth.as_str())], 200),
        ("/notes", vec![], 401),
    ];
    for (path, headers, status) in routes {
        // With the caller's traceparent: the same trace and sampling, a new span.
        let mut with = headers.clone();
        with.push(("traceparent", caller));
        let (got, resp, body) = env.exchange("GET", path, &with).await;
        assert_eq!(got, status, "{path}: {body}");
        let answered = traceparent_of(&resp);
        assert_eq!(answered.trace_id(), incoming.trace_id(), "{path}");
        assert_ne!(answered.parent_id(), incoming.parent_id(), "{path}");
        assert!(answered.sampled(), "{path}");
        if path == "/trace" {
            // The handler runs in the span the response names (its jobs are its children).
            assert_eq!(body, answered.to_string());
        }
        // Without one, and with malformed ones: a new trace each time.
        let mut seen = vec![answered.trace_id()];
        for bad in [
            None,
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("nonsense"),
        ] {
            let mut h = headers.clone();
            h.extend(bad.map(|v| ("traceparent", v)));
            let (got, resp, body) = env.exchange("GET", path, &h).await;
            assert_eq!(got, status, "{path} {bad:?}: {body}");
            let fresh = traceparent_of(&resp);
            assert!(
                !seen.contains(&fresh.trace_id()),
                "{path} {bad:?}: a new trace, got {fresh}"
            );
            seen.push(fresh.trace_id());
            if path == "/trace" {
                assert_eq!(body, fresh.to_string(), "{bad:?}");
            }
        }
    }
}

#[test]
fn selectors_alone_are_not_a_configuration() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let cfg: tokio_postgres::Config = "host=/nonexistent dbname=x user=x".parse().expect("cfg");
        let router = Router::new(
            cfg.clone(),
            key(),
            ClusterCredentials {
                user: "x".into(),
                password: None,
            },
            RouterOptions::default(),
        )
        .expect("router");
        let err = Tenancy::builder(router, cfg)
            .source(Source::subdomain(BASE))
            .source(Source::path_prefix("/t"))
            .source(Source::custom_domain())
            .listen_for_changes(false)
            .build()
            .expect_err("selectors only");
        assert!(err.to_string().contains("credential"), "{err}");
    });
}

/// Keeps every event it records and passes it on to a real anomaly feed.
struct Keep {
    events: Mutex<Vec<AccessEvent>>,
    feed: AnomalyFeed,
}

impl AccessSink for Keep {
    fn record(&self, event: &AccessEvent) {
        self.events.lock().expect("events").push(*event);
        self.feed.record(event);
    }
}

#[tokio::test]
async fn answered_requests_and_cross_tenant_refusals_reach_the_anomaly_feed() {
    let keep = Arc::new(Keep {
        events: Mutex::new(Vec::new()),
        feed: AnomalyFeed::new(DetectorOptions::default()).expect("feed"),
    });
    let env = start_with(Some(keep.clone())).await;
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read")));
    let agent = ("user-agent", "probe/1.0");
    let signed = [("authorization", auth.as_str()), agent];
    assert_eq!(env.call("GET", "/notes", &signed).await.0, 200);
    let (status, code) = env.call("POST", "/notes", &signed).await;
    assert_eq!((status, code.as_str()), (403, "insufficient-scope"));
    let lookup = format!("/t/acme/notes/{}", 42);
    assert_eq!(env.call("GET", &lookup, &signed).await.0, 404);
    let globex = [
        ("authorization", auth.as_str()),
        ("host", "globex.app.example.com"),
        agent,
    ];
    assert_eq!(
        env.call("GET", "/notes", &globex).await,
        (403, "tenant-mismatch".into())
    );
    // Nothing for requests without a tenant: anonymous, public.
    assert_eq!(env.call("GET", "/notes", &[agent]).await.0, 401);
    assert_eq!(env.call("GET", "/health", &[agent]).await.0, 200);

    let events = keep.events.lock().expect("events").clone();
    let kinds: Vec<_> = events
        .iter()
        .map(|e| match e.kind {
            AccessKind::Response {
                status, id_lookup, ..
            } => format!("{status}{}", if id_lookup { " lookup" } else { "" }),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["200", "403", "404 lookup", "TenantMismatch"]);
    let now = tenancy_insights::anomaly::unix_now();
    let subject = Fingerprint::of("u");
    for e in &events {
        assert_eq!(e.tenant, env.acme, "the credential's tenant, every time");
        assert_eq!(e.credential, Some(subject));
        assert_eq!(e.subject, Some(subject));
        assert_eq!(
            e.network,
            Some(network_of("127.0.0.1".parse().expect("ip")))
        );
        assert_eq!(e.agent, Some(Fingerprint::of("probe/1.0")));
        assert!(e.at <= now && e.at + 60 > now, "{}", e.at);
    }
    let AccessKind::Response { bytes, .. } = events[0].kind else {
        panic!("{:?}", events[0]);
    };
    assert!(bytes > 0, "the body's length");
    let stats = keep.feed.stats();
    assert_eq!(
        (stats.tenants, stats.credentials, stats.subjects),
        (1, 1, 1),
        "{stats:?}"
    );
}

/// The request layer has no replay clock: headers naming a time, a weight or a client
/// (what the anomaly benchmark's own front middleware reads) change nothing it records —
/// one event per request, at the real time, from the real peer.
#[tokio::test]
async fn replay_headers_get_the_real_clock_and_peer() {
    let keep = Arc::new(Keep {
        events: Mutex::new(Vec::new()),
        feed: AnomalyFeed::new(DetectorOptions::default()).expect("feed"),
    });
    let env = start_with(Some(keep.clone())).await;
    let auth = format!("Bearer {}", token(env.acme, Some("notes:read")));
    let headers = [
        ("authorization", auth.as_str()),
        ("x-replay-at", "1767571200"),
        ("x-replay-weight", "50"),
        ("x-replay-client", "fd00:1:2::1"),
        ("x-forwarded-for", "203.0.113.9"),
    ];
    let before = tenancy_insights::anomaly::unix_now();
    assert_eq!(env.call("GET", "/notes", &headers).await.0, 200);
    let after = tenancy_insights::anomaly::unix_now();
    let events = keep.events.lock().expect("events").clone();
    assert_eq!(
        events.len(),
        1,
        "one event, whatever weight is asked: {events:?}"
    );
    let e = events[0];
    assert!(
        e.at >= before && e.at <= after,
        "{} not in {before}..={after}",
        e.at
    );
    assert_eq!(
        e.network,
        Some(network_of("127.0.0.1".parse().expect("ip"))),
        "the peer, not a header"
    );
    assert_eq!(keep.feed.stats().tenants, 1);
}
