//! `http_get`: GET one tenant row over HTTP through the tenancy layer (JWT verified per
//! request, tenant resolved through the cached catalog, `Tx` extractor → `TenantTx`, RLS
//! on) against the same handler without tenancy (tenant id in the path, the same query
//! written out on a table without RLS, a bare pool of the same size). Same process, same
//! HTTP client (keep-alive hyper connections), same server stack (axum on 127.0.0.1).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::extract::{Path, State};
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::{HttpError, Source, Tenancy, Tx};
use tenancy_core::TenantId;
use tenancy_insights::anomaly::{AnomalyFeed, DetectorOptions};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ClusterCredentials, PoolOptions, Router, RouterOptions};
use uuid::Uuid;

use crate::bare;
use crate::harness::{self, Sample, Settings, Variants, CONCURRENCY};
use crate::report::Report;
use crate::setup::{expected_payload, Env, ROWS_PER_TENANT, TENANTS};

const OURS: &str = "ours";
const BARE: &str = "bare";
/// Ours with the layer recording access events into an anomaly feed.
const RECORDING: &str = "ours_recording";
const ISSUER: &str = "bench-idp";
const AUDIENCE: &str = "bench";
const SECRET: &[u8] = b"http-get-benchmark-secret-32-bytes!!";
/// Our handler's query: RLS adds the tenant predicate.
const OURS_SQL: &str = "SELECT payload FROM items WHERE id = $1";
/// The baseline handler's query: same row, same index, tenant written out, no RLS.
const BARE_SQL: &str = "SELECT payload FROM items_plain WHERE tenant_id = $1 AND id = $2";

/// Registers the seeded tenants in a catalog in `bench` (idempotent per process run).
pub(crate) async fn catalog(env: &Env) -> Result<()> {
    let ids = env
        .tenants
        .iter()
        .map(|t| TenantId::from_uuid(*t))
        .collect::<Result<Vec<_>, _>>()?;
    crate::setup::register_pooled_tenants(env, ids, "bench").await
}

pub(crate) fn token(tenant: Uuid) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "tenant_id": tenant.to_string(),
                        "iat": now, "exp": now + 24 * 3600});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )?)
}

async fn ours_handler(mut tx: Tx, Path(id): Path<i64>) -> Result<String, HttpError> {
    let row = tx
        .query_opt(OURS_SQL, &[&id])
        .await?
        .ok_or_else(|| HttpError::not_found("item"))?;
    Ok(row.get(0))
}

async fn bare_handler(
    State(pool): State<bare::Pool>,
    Path((tenant, id)): Path<(Uuid, i64)>,
) -> Result<String, HttpError> {
    let mut conn = pool.get().await.map_err(HttpError::internal)?;
    let stmt = conn
        .statement(BARE_SQL)
        .await
        .map_err(HttpError::internal)?;
    let row = conn
        .client
        .query_opt(&stmt, &[&tenant, &id])
        .await
        .map_err(HttpError::internal)?
        .ok_or_else(|| HttpError::not_found("item"))?;
    Ok(row.get(0))
}

/// Serves `app` on 127.0.0.1 and returns its base URL; with `peer`, each request carries
/// the peer address (`ConnectInfo`), as a server recording client networks needs.
async fn serve(app: axum::Router, peer: bool) -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding")?;
    let port = listener.local_addr()?.port();
    if peer {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    Ok(format!("http://127.0.0.1:{port}"))
}

pub(crate) async fn ours_server(env: &Env, c: usize, recording: bool) -> Result<String> {
    ours_server_with(env, c, None, recording).await
}

/// [`ours_server`] with the layer's and the router's caches trusting an entry for `ttl`
/// (their defaults when `None`); with `recording`, the layer records access events into
/// an anomaly feed (served with the peer address, for the client network).
pub(crate) async fn ours_server_with(
    env: &Env,
    c: usize,
    ttl: Option<Duration>,
    recording: bool,
) -> Result<String> {
    let router = Router::new(
        env.app_config(),
        env.key.clone(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions {
            pool: PoolOptions {
                max_size: c,
                ..Default::default()
            },
            cache_ttl: ttl.unwrap_or(RouterOptions::default().cache_ttl),
            ..Default::default()
        },
    )?;
    let mut tenancy = Tenancy::builder(router, env.app_config()).source(Source::jwt(
        JwtConfig::new(TenantClaim::Id("tenant_id".into()))
            .issuer(JwtIssuer::new(ISSUER, AUDIENCE).key(JwtKey::hs256(SECRET)?)),
    ));
    if let Some(ttl) = ttl {
        tenancy = tenancy.cache_ttl(ttl);
    }
    if recording {
        let feed = AnomalyFeed::new(DetectorOptions::default())?;
        tenancy = tenancy.access_sink(Arc::new(feed));
    }
    let tenancy = tenancy.build()?;
    let app = axum::Router::new()
        .route("/items/{id}", get(ours_handler))
        .layer(tenancy.layer());
    serve(app, recording).await
}

pub(crate) async fn bare_server(env: &Env, c: usize) -> Result<String> {
    let pool = bare::build(env.app_config(), c)?;
    let app = axum::Router::new()
        .route("/plain/items/{tenant}/{id}", get(bare_handler))
        .with_state(pool);
    serve(app, false).await
}

pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One GET; checks status and body. Both variants send the same Authorization header.
pub(crate) async fn get_row(
    client: &HttpClient,
    url: String,
    auth: &str,
    tenant: Uuid,
    id: i64,
) -> Result<()> {
    let req = hyper::Request::get(url)
        .header("authorization", auth)
        .body(Empty::<Bytes>::new())
        .context("building a request")?;
    let resp = client.request(req).await.context("sending")?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    ensure!(
        status == 200,
        "status {status}: {}",
        String::from_utf8_lossy(&body)
    );
    ensure!(body == expected_payload(tenant, id).as_bytes(), "wrong row");
    Ok(())
}

struct Bench {
    tenants: Arc<Vec<Uuid>>,
    tokens: Arc<std::collections::HashMap<Uuid, String>>,
    /// Per concurrency: the base URLs of ours, bare and ours recording.
    servers: Vec<[String; 3]>,
    clients: Vec<HttpClient>,
    postmaster: Option<u32>,
}

impl Variants for Bench {
    fn names(&self) -> &[&'static str] {
        &[OURS, BARE, RECORDING]
    }

    async fn run(&self, v: usize, ci: usize, duration: Duration) -> Result<Sample> {
        let c = CONCURRENCY[ci];
        let client = self.clients[ci].clone();
        let tokens = Arc::clone(&self.tokens);
        let [ours, bare, recording] = self.servers[ci].clone();
        harness::measure(&self.tenants, c, duration, self.postmaster, move |t, id| {
            let client = client.clone();
            let tokens = Arc::clone(&tokens);
            let url = match v {
                0 => format!("{ours}/items/{id}"),
                1 => format!("{bare}/plain/items/{t}/{id}"),
                _ => format!("{recording}/items/{id}"),
            };
            async move {
                let auth = format!(
                    "Bearer {}",
                    tokens.get(&t).map(String::as_str).unwrap_or_default()
                );
                get_row(&client, url, &auth, t, id).await
            }
        })
        .await
    }
}

/// Runs the benchmark and writes `target/bench/http_get.json`.
pub(crate) async fn run(env: &Env, settings: Settings) -> Result<()> {
    println!("== http_get: GET one tenant row through the tenancy layer (JWT, TenantTx) vs the same handler without tenancy");
    catalog(env).await?;
    let mut tokens = std::collections::HashMap::new();
    for t in &env.tenants {
        tokens.insert(*t, token(*t)?);
    }
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for c in CONCURRENCY {
        servers.push([
            ours_server(env, c, false).await?,
            bare_server(env, c).await?,
            ours_server(env, c, true).await?,
        ]);
        clients.push(
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(c)
                .build_http(),
        );
    }
    let bench = Bench {
        tenants: Arc::new(env.tenants.clone()),
        tokens: Arc::new(tokens),
        servers,
        clients,
        postmaster: env.postmaster_pid,
    };
    let m = harness::run_matrix(&bench, settings).await?;
    m.print_medians();
    if harness::profiling_only(settings) {
        return Ok(());
    }
    let (o8, b8) = (m.median_ops(OURS, 0), m.median_ops(BARE, 0));
    let (o32, b32) = (m.median_ops(OURS, 1), m.median_ops(BARE, 1));
    let (r8, r32) = (m.median_ops(RECORDING, 0), m.median_ops(RECORDING, 1));
    let report = Report {
        name: "http_get".into(),
        unit: "requests/s (higher is better; ratio = ours/baseline)".into(),
        ours: harness::ops(o8),
        baseline: harness::ops(b8),
        baseline_name: "the same axum handler without tenancy: tenant id in the path, the same row read from a \
                        table without RLS on a bare deadpool pool of the same size, no JWT, no transaction"
            .into(),
        ratio: harness::ratio(o8, b8),
        params: json!({
            "headline": "top-level ours/baseline/ratio are the medians at concurrency 8; see ratio_c8 and ratio_c32",
            "ratio_c8": harness::ratio(o8, b8),
            "ratio_c32": harness::ratio(o32, b32),
            "overhead_ratio": harness::ratio(r8, o8),
            "overhead_ratio_c32": harness::ratio(r32, o32),
            "overhead": format!("{RECORDING}: ours with the layer recording an access event per request into a tenancy_insights AnomalyFeed (served with the peer address); overhead_ratio = {RECORDING}/ours requests/s at c=8 (c=32 in overhead_ratio_c32)"),
            "concurrency": CONCURRENCY,
            "pool_size": "= concurrency",
            "runs": settings.runs,
            "seconds": settings.seconds,
            "warmup_seconds": settings.warmup_seconds,
            "statistic": "median over runs of requests/s",
            "tenants": TENANTS,
            "rows_per_tenant": ROWS_PER_TENANT,
            "ours": format!("GET /items/{{id}} with Authorization: Bearer <HS256 JWT>; TenancyLayer (JWT verified every request, catalog cached), Tx extractor, {OURS_SQL:?}, commit"),
            "baseline": format!("GET /plain/items/{{tenant}}/{{id}} (same Authorization header sent, ignored); {BARE_SQL:?}"),
            "client": "hyper-util legacy client, keep-alive, same process",
            "variants": m.variants_json(),
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        }),
    };
    let path = report.write()?;
    println!(
        "http_get: ours {o8:.0} req/s vs bare {b8:.0} req/s at c=8 → ratio {:.3}; c=32: {o32:.0} vs {b32:.0} → {:.3}",
        o8 / b8,
        o32 / b32
    );
    println!(
        "http_get: access recording on/off: {r8:.0} vs {o8:.0} req/s at c=8 → {:.3}; c=32: {r32:.0} vs {o32:.0} → {:.3}",
        r8 / o8,
        r32 / o32
    );
    println!("wrote {}", path.display());
    Ok(())
}
