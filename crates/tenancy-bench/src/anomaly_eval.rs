//! `anomaly_eval`: the access anomaly detector of tenancy-insights against a static
//! threshold detector, on generated traffic with labelled attacks replayed as real HTTP
//! requests through the tenancy layer and the SDK, at accelerated time.
//!
//! The traffic (`tenancy_insights::anomaly::simulate`, fixed seed `--seed`): 200 tenants
//! of 2 to 1,000 requests in their busiest hour (log-uniform), four rhythms, 21 time
//! zones, 30 simulated days; after the 7-day baseline, 12 attacks of each of five kinds,
//! each on a tenant of its own and near normal behaviour: enumeration mixed into the
//! tenant's own 404s (half from one of its own keys), token replay in bursts of three to
//! six refused contexts, slow exfiltration at two to three times the tenant's largest
//! normal page, a credential used in two to four other tenants with a few tenant
//! mismatches, a noisy neighbour at four to seven times its busiest hour on a tenant
//! whose traffic is bursty anyway. Besides, benign anomalies that must not alarm: a
//! marketing spike, a new office network, daylight saving (every tenant of a zone that
//! observes it, and more), a tenant growing by 2–4 % a day.
//!
//! What is real: a private PostgreSQL cluster with the tenancy runtime; the 200 tenants
//! registered (pooled) in the catalog, each with [`MAX_ROWS`] rows in the RLS table
//! `items`; an axum app with the real `TenancyLayer` (HS256 JWT verified per request,
//! tenant resolved through the catalog, a path-prefix selector besides) whose access
//! sink and whose pool observer feed one `AnomalyFeed` (the detector as an application
//! runs it); handlers reading through the SDK's `Tx` under RLS. Every request is sent
//! over HTTP (hyper client, 16 in flight): an id lookup is `GET /items/{id}` and a miss
//! is a real 404 of the handler; a page is `GET /items?limit=n`, its body the rows read
//! (n × (row size + 1) bytes: exfiltration is real large responses); a tenant mismatch
//! is a real 403 of the layer (the JWT of one tenant, a path naming another); a refused
//! context is a request to a second app instance whose router signs context tokens with
//! a forged key, refused inside PostgreSQL and seen by the SDK's observer; a credential
//! used in other tenants is JWTs with the same subject for those tenants. The layer
//! fingerprints the subject, the client network and the `User-Agent` as it always does.
//!
//! What is accelerated or simulated: time and scale. Simulated hours are replayed one
//! after the other as fast as the requests complete (all requests of an hour before any
//! of the next); a front middleware of this benchmark — not part of the layer — takes
//! each request's simulated time (`x-replay-at`), the count of generated requests it
//! stands for (`x-replay-weight`) and the client address (`x-replay-client`, as a proxy
//! in front would pass it) and puts them where this benchmark's sink wrapper and pool
//! observer read them (a task-local) and into `ConnectInfo`. The wrapper records each
//! event the layer or the SDK emits with the simulated time, as many times as the
//! request's weight, into the `AnomalyFeed` and into the static detector. Weights
//! (`simulate::Batcher`): per tenant and hour, its ordinary id lookups, its ordinary
//! pages (up to its 99.5th percentile, sent at its median page size) and its own 404s
//! each become one request carrying their count; every other event — larger pages,
//! mismatches, refused contexts, every 404, page and request of an attack except an
//! insider's ordinary lookups and a noisy neighbour's ordinary requests, and the first
//! request of a subject in a tenant or from a network or user agent — is a request of
//! its own. That bounds the run to a few hundred thousand real requests for about
//! ten million generated ones.
//!
//! Reported: `ours` = F1 of the detector's detections against the labels (a detection is
//! true when it names an attacked tenant during its attack or the day after), `baseline`
//! = the static detector's F1 on the same events in the same run, `ratio` = ours /
//! baseline; precision, recall, false alarms per tenant-week after the baseline for both,
//! the requests sent and the wall time. `--in-process` scores the same traffic fed
//! straight into the detectors instead (no HTTP, no database), unbatched and batched.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use axum::extract::{ConnectInfo, Path, Query, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tenancy_axum::access::AccessSink;
use tenancy_axum::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
use tenancy_axum::{HttpError, Source, Tenancy, Tx};
use tenancy_core::{ContextKey, TenantId};
use tenancy_insights::anomaly::simulate::{
    evaluate, run_with, Batch, Batcher, Evaluation, SimOptions, Simulation, StaticDetector,
    MAX_ROWS,
};
use tenancy_insights::anomaly::{
    AccessEvent, AccessKind, AnomalyFeed, DetectorOptions, Fingerprint,
};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ClusterCredentials, Observer, Outcome, PoolOptions, Router, RouterOptions};

use crate::report::Report;
use crate::setup::{Env, DB};

const ISSUER: &str = "anomaly-eval-idp";
const AUDIENCE: &str = "anomaly-eval";
const SECRET: &[u8] = b"anomaly-eval-benchmark-secret-32-bytes";
/// Requests in flight.
const CONCURRENCY: usize = 16;
/// The benchmark's own headers, read by its front middleware only.
const AT: &str = "x-replay-at";
const WEIGHT: &str = "x-replay-weight";
const CLIENT: &str = "x-replay-client";

fn figures(e: &Evaluation) -> serde_json::Value {
    json!({
        "precision": e.precision,
        "recall": e.recall,
        "f1": e.f1,
        "false_alarms_per_tenant_week": e.false_alarms_per_tenant_week,
        "true_alerts": e.true_alerts,
        "false_alerts": e.false_alerts,
        "attacks_detected": e.detected,
        "attacks": e.attacks,
        "recall_by_attack": e.by_kind.iter()
            .map(|(k, d, n)| (k.to_string(), json!({"detected": d, "attacks": n})))
            .collect::<serde_json::Map<_, _>>(),
    })
}

fn sim_options(seed: u64) -> SimOptions {
    SimOptions {
        seed,
        ..SimOptions::default()
    }
}

fn detector_options(opts: &SimOptions) -> DetectorOptions {
    DetectorOptions {
        baseline_hours: opts.baseline_days * 24,
        max_detections: 100_000,
        ..DetectorOptions::default()
    }
}

fn print(what: &str, e: &Evaluation) {
    println!(
        "{what}: F1 {:.3} precision {:.3} recall {:.3} false alarms/tenant-week {:.4} ({} true, {} false alerts; {}/{} attacks)",
        e.f1, e.precision, e.recall, e.false_alarms_per_tenant_week, e.true_alerts, e.false_alerts, e.detected, e.attacks
    );
    for (k, d, n) in &e.by_kind {
        if d < n {
            println!("  {k}: {d}/{n}");
        }
    }
}

/// Scores the traffic of `seed` fed straight into the detectors, unbatched and as the
/// replay batches it; prints both and writes nothing.
pub(crate) fn in_process(seed: u64) -> Result<()> {
    let opts = sim_options(seed);
    for batched in [false, true] {
        let mut sim = Simulation::new(opts.clone());
        let started = Instant::now();
        let r = run_with(&mut sim, detector_options(&opts), batched)?;
        println!(
            "in process, {}: {} events, {} requests, {:.1} s",
            if batched { "batched" } else { "unbatched" },
            r.events,
            r.requests,
            started.elapsed().as_secs_f64()
        );
        print("ours", &r.ours);
        print("static thresholds", &r.baseline);
        for d in r.detections.iter().filter(|d| {
            !sim.attacks().iter().any(|a| {
                Some(a.tenant) == d.tenant_id
                    && d.first_hour / 3600 >= a.first_hour
                    && d.first_hour / 3600 <= a.last_hour + 24
            })
        }) {
            let benign = sim
                .benign()
                .iter()
                .filter(|(_, t)| Some(*t) == d.tenant_id)
                .map(|(k, _)| k.to_string())
                .collect::<Vec<_>>();
            println!(
                "  false: {:?} hour {} score {:.2} {:?} benign {benign:?}",
                d.kind,
                d.first_hour / 3600 - sim.hours().start,
                d.score,
                d.evidence.first()
            );
        }
    }
    Ok(())
}

/// The simulated time and weight of the request being served.
#[derive(Debug, Clone, Copy)]
struct Replay {
    at: u64,
    weight: u32,
}

tokio::task_local! {
    static REPLAY: Replay;
}

/// The benchmark's sink and pool observer: records what the layer and the SDK emit at
/// the request's simulated time, once per generated request it stands for, into the
/// anomaly feed and the static detector.
#[derive(Debug)]
struct ReplaySink {
    feed: AnomalyFeed,
    baseline: Mutex<StaticDetector>,
    recorded: AtomicU64,
    refusals: AtomicU64,
}

impl ReplaySink {
    fn put(&self, e: &AccessEvent) {
        let r = REPLAY.try_with(|r| *r).unwrap_or(Replay {
            at: e.at,
            weight: 1,
        });
        let e = AccessEvent { at: r.at, ..*e };
        for _ in 0..r.weight {
            self.feed.record(&e);
        }
        let mut b = match self.baseline.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for _ in 0..r.weight {
            b.observe(&e);
        }
        self.recorded
            .fetch_add(u64::from(r.weight), Ordering::Relaxed);
    }
}

impl AccessSink for ReplaySink {
    fn record(&self, event: &AccessEvent) {
        self.put(event);
    }
}

impl Observer for ReplaySink {
    fn statement(&self, tenant: TenantId, _: Duration, outcome: Outcome) {
        if matches!(outcome, Outcome::ContextRefused) {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            self.put(&AccessEvent::new(0, tenant, AccessKind::ContextRefused));
        }
    }

    fn transaction(&self, _: TenantId, _: Duration, _: Duration, _: bool) {}

    fn pool_wait(&self, _: TenantId, _: Duration, _: bool) {}
}

/// The front middleware: the request's simulated time, weight and client address.
async fn replay_front(mut req: Request, next: Next) -> Response {
    let (at, weight, client) = {
        let h = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            h(AT).and_then(|v| v.parse().ok()).unwrap_or(0),
            h(WEIGHT).and_then(|v| v.parse().ok()).unwrap_or(1),
            h(CLIENT).and_then(|v| v.parse::<IpAddr>().ok()),
        )
    };
    if let Some(ip) = client {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    }
    REPLAY.scope(Replay { at, weight }, next.run(req)).await
}

async fn lookup(mut tx: Tx, Path(id): Path<i64>) -> Result<String, HttpError> {
    let row = tx
        .query_opt("SELECT payload FROM items WHERE id = $1", &[&id])
        .await?
        .ok_or_else(|| HttpError::not_found("item"))?;
    Ok(row.get(0))
}

#[derive(serde::Deserialize)]
struct Page {
    limit: i64,
}

async fn page(mut tx: Tx, Query(p): Query<Page>) -> Result<String, HttpError> {
    let rows = tx
        .query(
            "SELECT payload FROM items WHERE id <= $1 ORDER BY id",
            &[&p.limit],
        )
        .await?;
    let mut body = String::new();
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push('\n');
        }
        body.push_str(r.get(0));
    }
    Ok(body)
}

/// Serves the app on 127.0.0.1 with a router signing contexts with `key`.
async fn server(env: &Env, key: ContextKey, sink: &Arc<ReplaySink>) -> Result<String> {
    let router = Router::new(
        env.app_config(),
        key,
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions {
            pool: PoolOptions {
                max_size: CONCURRENCY,
                observer: Some(sink.clone() as Arc<dyn Observer>),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    let tenancy = Tenancy::builder(router, env.app_config())
        .source(Source::jwt(
            JwtConfig::new(TenantClaim::Id("tenant_id".into()))
                .issuer(JwtIssuer::new(ISSUER, AUDIENCE).key(JwtKey::hs256(SECRET)?)),
        ))
        .source(Source::path_prefix("/t"))
        .access_sink(sink.clone() as Arc<dyn AccessSink>)
        .build()?;
    let app = axum::Router::new()
        .route("/items/{id}", get(lookup))
        .route("/items", get(page))
        // Requests naming a tenant in the path: the layer answers them (a mismatch with
        // the JWT's tenant is refused before any handler runs).
        .route("/t/{tenant}/items/{id}", get(|| async { "" }))
        .layer(tenancy.layer())
        .layer(axum::middleware::from_fn(replay_front));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding")?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://127.0.0.1:{port}"))
}

/// Registers the simulated tenants (pooled, active) and seeds their rows: `MAX_ROWS`
/// rows each, every payload as long as the tenant's row size.
async fn provision(env: &Env, tenants: &[(TenantId, u64)]) -> Result<()> {
    crate::setup::register_pooled_tenants(env, tenants.iter().map(|(id, _)| *id), "sim").await?;
    let su = env.cluster.connect(DB).await.context("connecting")?;
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|(t, _)| t.as_uuid()).collect();
    let sizes: Vec<i32> = tenants
        .iter()
        .map(|(_, b)| i32::try_from(*b).unwrap_or(100))
        .collect();
    su.execute(
        "INSERT INTO items (tenant_id, id, payload) \
         SELECT t, g, repeat('x', l) FROM unnest($1::uuid[], $2::int[]) AS u(t, l), \
         generate_series(1, $3::bigint) AS g",
        &[&ids, &sizes, &(MAX_ROWS as i64)],
    )
    .await
    .context("seeding the simulated tenants' rows")?;
    su.batch_execute("VACUUM ANALYZE items")
        .await
        .context("vacuuming")?;
    Ok(())
}

fn token(tenant: TenantId, subject: Fingerprint) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("{:016x}", subject.get()),
                        "tenant_id": tenant.to_string(), "iat": now, "exp": now + 24 * 3600});
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )?)
}

/// The client address of a network fingerprint: a /48 of its own.
fn address(network: Fingerprint) -> IpAddr {
    let n = network.get();
    IpAddr::V6(Ipv6Addr::new(
        0xfd00 | ((n >> 48) & 0xff) as u16,
        (n >> 32) as u16,
        (n >> 16) as u16,
        0,
        0,
        0,
        0,
        1,
    ))
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One request to send and the status it must get.
struct Outgoing {
    url: String,
    auth: String,
    agent: Option<String>,
    client: Option<IpAddr>,
    at: u64,
    weight: u32,
    expect: u16,
}

async fn send(client: &HttpClient, s: Outgoing) -> Result<(u16, u16, usize)> {
    let mut req = hyper::Request::get(&s.url)
        .header("authorization", &s.auth)
        .header(AT, s.at.to_string())
        .header(WEIGHT, s.weight.to_string());
    if let Some(a) = &s.agent {
        req = req.header("user-agent", a);
    }
    if let Some(c) = s.client {
        req = req.header(CLIENT, c.to_string());
    }
    let resp = client
        .request(req.body(Empty::<Bytes>::new())?)
        .await
        .with_context(|| format!("sending {}", s.url))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, s.expect, body.len()))
}

/// What the replay of one run measured.
struct Replayed {
    requests: u64,
    events: u64,
    recorded: u64,
    refusals: u64,
    unexpected: u64,
    bytes: u64,
    seconds: f64,
    ours: Evaluation,
    baseline: Evaluation,
    detections: Vec<tenancy_insights::anomaly::Detection>,
}

async fn replay(env: &Env, seed: u64) -> Result<Replayed> {
    let opts = sim_options(seed);
    let mut sim = Simulation::new(opts.clone());
    let tenants = sim.row_sizes();
    let rows: HashMap<TenantId, u64> = tenants.iter().copied().collect();
    let ids: Vec<TenantId> = tenants.iter().map(|(t, _)| *t).collect();
    provision(env, &tenants).await?;
    let sink = Arc::new(ReplaySink {
        feed: AnomalyFeed::new(detector_options(&opts))?,
        baseline: Mutex::new(StaticDetector::new()),
        recorded: AtomicU64::new(0),
        refusals: AtomicU64::new(0),
    });
    let real = server(env, env.key.clone(), &sink).await?;
    // The same key id, another secret: every context this instance signs is forged.
    let forged_key = ContextKey::from_bytes(env.key.kid().clone(), rand::random());
    let forged = server(env, forged_key, &sink).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CONCURRENCY)
        .build_http();
    let mut tokens: HashMap<(TenantId, Fingerprint), String> = HashMap::new();
    let mut auth = |t: TenantId, s: Option<Fingerprint>| -> Result<String> {
        let s = s.unwrap_or(Fingerprint::from_u64(0));
        if let Some(a) = tokens.get(&(t, s)) {
            return Ok(a.clone());
        }
        let a = format!("Bearer {}", token(t, s)?);
        tokens.insert((t, s), a.clone());
        Ok(a)
    };
    let started = Instant::now();
    let (mut requests, mut events, mut unexpected, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = Vec::new();
    let mut batcher = Batcher::default();
    let mut n = 0u64;
    for hour in sim.hours() {
        buf.clear();
        sim.labelled_hour(hour, &mut buf);
        buf.sort_by_key(|l| l.event.at);
        events += buf.len() as u64;
        let mut sends = Vec::new();
        for Batch {
            event: e, weight, ..
        } in batcher.batches(&buf)
        {
            n += 1;
            let row = rows.get(&e.tenant).copied().unwrap_or(100);
            let (url, expect, tenant) = match e.kind {
                AccessKind::Response {
                    id_lookup: true,
                    status,
                    ..
                } => {
                    let id = if status == 404 {
                        MAX_ROWS + 1 + n % 1000
                    } else {
                        1 + n % MAX_ROWS
                    };
                    (format!("{real}/items/{id}"), status, e.tenant)
                }
                AccessKind::Response { bytes, status, .. } => {
                    let limit = (bytes / (row + 1)).clamp(1, MAX_ROWS);
                    (format!("{real}/items?limit={limit}"), status, e.tenant)
                }
                AccessKind::TenantMismatch => {
                    let i = ids.iter().position(|t| *t == e.tenant).unwrap_or(0);
                    let other = ids[(i + 1 + (n as usize) % (ids.len() - 1)) % ids.len()];
                    (format!("{real}/t/{other}/items/1"), 403, e.tenant)
                }
                AccessKind::ContextRefused => (format!("{forged}/items/1"), 500, e.tenant),
            };
            sends.push(Outgoing {
                url,
                auth: auth(tenant, e.subject)?,
                agent: e.agent.map(|a| format!("client/{:016x}", a.get())),
                client: e.network.map(address),
                at: e.at,
                weight,
                expect,
            });
        }
        requests += sends.len() as u64;
        let mut results = futures_util::stream::iter(sends)
            .map(|s| {
                let client = client.clone();
                async move { send(&client, s).await }
            })
            .buffer_unordered(CONCURRENCY);
        while let Some(r) = results.next().await {
            let (got, want, len) = r?;
            bytes += len as u64;
            if got != want {
                unexpected += 1;
                if unexpected <= 5 {
                    eprintln!("anomaly_eval: status {got} where {want} was expected");
                }
            }
        }
        if (hour - sim.hours().start) % 120 == 119 {
            println!(
                "  day {:>2}: {requests} requests, {:.0} s",
                (hour - sim.hours().start + 1) / 24,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let end = sim.hours().end;
    sink.feed.advance(end * 3600);
    let seconds = started.elapsed().as_secs_f64();
    let baseline_alerts = {
        let mut b = match sink.baseline.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        b.advance(end);
        b.alerts().to_vec()
    };
    let detections = sink.feed.detections();
    let alerts: Vec<(TenantId, u64)> = detections
        .iter()
        .filter_map(|d| Some((d.tenant_id?, d.first_hour / 3600)))
        .collect();
    let weeks = sim.scored_tenant_weeks();
    Ok(Replayed {
        requests,
        events,
        recorded: sink.recorded.load(Ordering::Relaxed),
        refusals: sink.refusals.load(Ordering::Relaxed),
        unexpected,
        bytes,
        seconds,
        ours: evaluate(&alerts, sim.attacks(), weeks),
        baseline: evaluate(&baseline_alerts, sim.attacks(), weeks),
        detections,
    })
}

/// Runs the evaluation with `seed` through the real layer and SDK and writes the report.
pub(crate) async fn run(seed: u64) -> Result<()> {
    let opts = sim_options(seed);
    println!(
        "anomaly_eval: {} tenants, {} days, seed {seed}, replayed over HTTP…",
        opts.tenants, opts.days
    );
    let wall = Instant::now();
    let env = Env::start().await.context("starting the cluster")?;
    let r = replay(&env, seed).await;
    env.cluster.stop().await;
    let r = r?;
    let wall = wall.elapsed().as_secs_f64();
    ensure!(
        r.unexpected * 1000 <= r.requests,
        "{} of {} requests got an unexpected status",
        r.unexpected,
        r.requests
    );
    print("ours", &r.ours);
    print("static thresholds", &r.baseline);
    println!(
        "{} requests for {} generated events ({} recorded) in {:.1} s ({:.0} requests/s), wall {wall:.1} s",
        r.requests,
        r.events,
        r.recorded,
        r.seconds,
        r.requests as f64 / r.seconds
    );
    let mut by_kind = serde_json::Map::new();
    for d in &r.detections {
        let n = by_kind.entry(d.kind.as_str()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let mut params = figures(&r.ours);
    if let Some(p) = params.as_object_mut() {
        p.insert("seed".into(), json!(seed));
        p.insert("tenants".into(), json!(opts.tenants));
        p.insert("days".into(), json!(opts.days));
        p.insert("baseline_days".into(), json!(opts.baseline_days));
        p.insert("attacks_per_kind".into(), json!(opts.attacks_per_kind));
        p.insert("benign_per_kind".into(), json!(opts.benign_per_kind));
        p.insert("generated_events".into(), json!(r.events));
        p.insert("http_requests".into(), json!(r.requests));
        p.insert("events_recorded".into(), json!(r.recorded));
        p.insert("context_refusals_observed".into(), json!(r.refusals));
        p.insert("unexpected_statuses".into(), json!(r.unexpected));
        p.insert("response_bytes".into(), json!(r.bytes));
        p.insert("replay_seconds".into(), json!(r.seconds));
        p.insert("wall_seconds".into(), json!(wall));
        p.insert("concurrency".into(), json!(CONCURRENCY));
        p.insert("detections_by_kind".into(), json!(by_kind));
        p.insert("baseline_figures".into(), figures(&r.baseline));
        p.insert(
            "replay".into(),
            json!("real HTTP through the TenancyLayer (JWT, catalog, path-prefix selector) and SDK Tx handlers on a private cluster; \
                   simulated time, weights and client addresses carried by benchmark-only headers read by a front middleware of the benchmark; \
                   per tenant-hour its ordinary lookups, ordinary pages and own 404s are one request each carrying their count; everything else one request each"),
        );
    }
    let ratio = if r.baseline.f1 > 0.0 {
        r.ours.f1 / r.baseline.f1
    } else {
        0.0
    };
    let report = Report {
        name: "anomaly_eval".into(),
        unit: "F1 of detections against injected attacks (higher is better; ratio = ours / baseline)".into(),
        ours: r.ours.f1,
        baseline: r.baseline.f1,
        baseline_name: "static thresholds on the same events in the same run (requests, 404s, refusals, mismatches, heavy responses per hour; tenants per subject per day)".into(),
        ratio,
        params,
    };
    let path = report.write()?;
    println!("ratio {ratio:.2}; wrote {}", path.display());
    Ok(())
}
