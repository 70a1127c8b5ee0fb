//! The tower [`Service`]: request id and trace context, resolve, scope, run, end the
//! transaction.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderName, Request, Uri};
use tenancy_jobs::TraceParent;
use tenancy_problem::request_id::{self, RequestId};
use tower_service::Service;
use tracing::Instrument;

use crate::access::Recording;
use crate::tx::{PublicRoute, TxSlot};
use crate::{HttpError, ResponseFuture, Tenancy};

/// The service built by [`crate::TenancyLayer`].
#[derive(Debug, Clone)]
pub struct TenancyService<S> {
    /// The wrapped service (the application's router).
    inner: S,
    /// Resolvers, catalog caches and router.
    tenancy: Tenancy,
}

impl<S> TenancyService<S> {
    pub(crate) fn new(inner: S, tenancy: Tenancy) -> Self {
        TenancyService { inner, tenancy }
    }
}

/// W3C `traceparent`.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Runs the request, then stamps its response with the request id: the `X-Request-Id`
/// header on every response, `request_id` in every problem body. A `then` rather than an
/// `async fn`: the request's future and the stamping share the space (an `async fn` would
/// keep its argument and the awaited future side by side, doubling the per-request
/// allocation).
fn with_request_id<E>(
    fut: impl Future<Output = Result<Response, E>>,
    id: RequestId,
) -> impl Future<Output = Result<Response, E>> {
    fut.then(move |res| async move {
        let mut resp = res?;
        if request_id::is_problem(&resp) {
            // Boxed: only problems pay for the rewrite's state.
            resp = Box::pin(request_id::add_to_problem(resp, &id)).await;
        }
        if let Some(v) = id.header_value() {
            resp.headers_mut().insert(request_id::HEADER.clone(), v);
        }
        Ok(resp)
    })
}

/// `resp` with the `traceparent` header naming the request's span. Stamped by the
/// futures that already hold the trace context (a copy kept for the stamping alone would
/// push the per-request future past 1 KB).
fn traced(mut resp: Response, trace: &TraceParent) -> Response {
    if let Ok(v) = http::HeaderValue::from_bytes(&trace.header_bytes()) {
        resp.headers_mut().insert(TRACEPARENT.clone(), v);
    }
    resp
}

/// Bytes as lower-case hex, written only when a subscriber formats the field (the span's
/// fields are evaluated for every request, even when nothing records them).
struct Hex<const N: usize>([u8; N]);

impl<const N: usize> std::fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; 64];
        let out = buf.get_mut(..2 * N).ok_or(std::fmt::Error)?;
        hex::encode_to_slice(self.0, out).map_err(|_| std::fmt::Error)?;
        f.write_str(std::str::from_utf8(out).map_err(|_| std::fmt::Error)?)
    }
}

/// The request's id and its own span in W3C trace-context terms, from one random draw.
/// The id is the client's `X-Request-Id` when it is sane, else the 128 bits as 32 hex
/// digits. The span is under the caller's trace and sampled flag when its `traceparent`
/// is valid, else in a new trace (sampled) whose id is the same 128 bits (so a request
/// that brings neither has one id for both); its span id is always new, the 128 bits
/// folded and mixed to 64. An invalid `traceparent` is ignored, as the specification
/// asks.
fn request_ids(headers: &http::HeaderMap) -> (RequestId, TraceParent) {
    let incoming = headers
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    loop {
        let bits: u128 = rand::random();
        let (trace_id, flags) = match incoming {
            Some(t) => (t.trace_id(), t.flags() & 1),
            None => (bits.to_be_bytes(), 1),
        };
        // W3C forbids all-zero ids: draw again (never, in practice).
        if let Some(t) = TraceParent::new(trace_id, span_id(bits), flags) {
            let id = RequestId::sent(headers).unwrap_or_else(|| RequestId::from_bits(bits));
            return (id, t);
        }
    }
}

/// The span id of a request whose draw was `bits`: both halves folded and mixed
/// (SplitMix64's finaliser), so it repeats no part of the ids written from the same bits.
fn span_id(bits: u128) -> [u8; 8] {
    let mut z = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_be_bytes()
}

fn strip_path(uri: &Uri, n: usize) -> Option<Uri> {
    let path = uri.path();
    let rest = path.get(n..)?;
    let rest = if rest.is_empty() { "/" } else { rest };
    let pq = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

impl<S, B> Service<Request<B>> for TenancyService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone is not ready; swap so the ready one is used (tower's usual dance).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tenancy = self.tenancy.clone();
        // The request's id and span: under the caller's trace, or a new one.
        let (id, trace) = request_ids(req.headers());
        // The span exists before anything else runs; tenant_id is filled in as soon as
        // the tenant is known, before any handler code.
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %id,
            trace_id = %Hex(trace.trace_id()),
            span_id = %Hex(trace.parent_id()),
            tenant_id = tracing::field::Empty,
            tenant = tracing::field::Empty,
        );
        // The trace context reaches handlers as the task's `TraceParent::current()`, not
        // as an extension: one insert fewer keeps the request's extension map from
        // growing twice.
        req.extensions_mut().insert(id.clone());
        // A route declared public runs without a tenant: no resolution, no `Tenant`, no
        // tenant id, no transaction slot (the `Tx` and `Tenant` extractors refuse there).
        if tenancy.is_public(req.uri().path()) {
            count_resolution("public");
            req.extensions_mut().insert(PublicRoute);
            let fut = TraceParent::scope(Some(trace), inner.call(req))
                .map(move |res| res.map(|resp| traced(resp, &trace)));
            return ResponseFuture::new(with_request_id(fut, id).instrument(span));
        }
        // Split outside the future: what it captures is kept for its whole life, so
        // capturing the request and splitting it inside would hold both.
        let (mut parts, body) = req.into_parts();
        let fut = async move {
            let resolved = match tenancy.resolve(&parts).await {
                Ok(r) => r,
                Err(e) => {
                    count_resolution(e.problem_type().code());
                    return Ok(traced(e.into_response(), &trace));
                }
            };
            count_resolution("resolved");
            let tenant = resolved.tenant;
            {
                // Dropped before the awaits below: a span handle kept alive across them
                // would take its place in the per-request future.
                let span = tracing::Span::current();
                span.record("tenant_id", tracing::field::display(tenant.id()));
                span.record("tenant", tracing::field::display(tenant.slug()));
            }
            if let Some(n) = resolved.strip {
                match strip_path(&parts.uri, n) {
                    Some(u) => parts.uri = u,
                    None => {
                        let e = HttpError::BadRequest("malformed path".into());
                        return Ok(traced(e.into_response(), &trace));
                    }
                }
            }
            let recording = tenancy
                .access_sink()
                // Boxed: only a recording layer pays for its state, and the future
                // every request allocates stays under 1 KB.
                .map(|sink| Box::new(Recording::start(sink, &parts, &tenant)));
            let read_only = tenancy.read_only_for(&parts.method);
            let slot = TxSlot::new(tenancy, tenant.clone(), read_only);
            // Three extensions, which the map's first allocation holds: the request id
            // (inserted above), the tenant id for layers and crates that only need it
            // (tenancy-config's guard), and the slot, which carries the `Tenant` too.
            parts.extensions.insert(tenant.id());
            parts.extensions.insert(slot.clone());
            let req = Request::from_parts(parts, body);
            // Jobs the handler enqueues are children of the request's span.
            let out = TraceParent::scope(
                Some(trace),
                tenant.scope(AssertUnwindSafe(inner.call(req)).catch_unwind()),
            )
            .await;
            // One place ends the transaction, whatever the handler did: commit on a
            // success or redirect, roll back on an error response, an error or a panic.
            let (commit, outcome) = match out {
                Ok(Ok(resp)) => {
                    let ok = resp.status().is_success() || resp.status().is_redirection();
                    (ok, Ok(resp))
                }
                Ok(Err(e)) => (false, Err(Some(e))),
                Err(_panic) => {
                    tracing::error!("handler panicked; its tenant transaction was rolled back");
                    (false, Err(None))
                }
            };
            let ended = slot.finish(commit).await;
            let answer = match outcome {
                Ok(resp) => match ended {
                    Ok(()) => Ok(resp),
                    // The handler succeeded but its writes did not commit: the caller must
                    // not see a success.
                    Err(e) => Ok(e.into_response()),
                },
                Err(Some(e)) => Err(e),
                Err(None) => Ok(HttpError::internal("handler panicked").into_response()),
            };
            if let (Some(r), Ok(resp)) = (&recording, &answer) {
                r.answered(resp);
            }
            answer.map(|resp| traced(resp, &trace))
        };
        ResponseFuture::new(with_request_id(fut, id).instrument(span))
    }
}

/// Counts how the layer settled a request's tenant, with the `metrics` feature:
/// `tenancy_tenant_requests_total{outcome}`, `outcome` being `resolved`, `public` or the
/// problem code of the refusal (`unauthenticated`, `tenant-mismatch`, …). No tenant id is
/// a label, so the series do not grow with the number of tenants.
#[inline]
fn count_resolution(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tenancy_tenant_requests_total", "outcome" => outcome).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwtConfig, JwtIssuer, JwtKey, TenantClaim};
    use crate::Source;

    #[cfg(feature = "metrics")]
    #[test]
    fn resolutions_are_counted_by_outcome_without_tenant_labels() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            count_resolution("resolved");
            count_resolution("resolved");
            count_resolution(crate::ProblemType::TenantMismatch.code());
        });
        let text = handle.render();
        assert!(
            text.contains(r#"tenancy_tenant_requests_total{outcome="resolved"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tenancy_tenant_requests_total{outcome="tenant-mismatch"} 1"#),
            "{text}"
        );
    }

    /// A layer with one JWT source and `/x` public, over a database that is never
    /// reached (public routes skip resolution).
    fn offline_tenancy() -> Tenancy {
        let cfg: tokio_postgres::Config =
            "host=/nonexistent dbname=x user=x".parse().expect("config");
        let router = tenancy_sdk::Router::new(
            cfg.clone(),
            tenancy_core::ContextKey::from_bytes("k".parse().expect("kid"), [7; 32]),
            tenancy_sdk::ClusterCredentials {
                user: "x".into(),
                password: None,
            },
            tenancy_sdk::RouterOptions::default(),
        )
        .expect("router");
        Tenancy::builder(router, cfg)
            .source(Source::jwt(
                JwtConfig::new(TenantClaim::Id("tenant_id".into())).issuer(
                    JwtIssuer::new("iss", "aud").key(JwtKey::hs256(&[1; 32]).expect("key")),
                ),
            ))
            .public("/x")
            .listen_for_changes(false)
            .build()
            .expect("tenancy")
    }

    #[tokio::test]
    async fn handlers_get_the_request_id_and_the_request_span_as_trace_context() {
        let app = axum::Router::new().route(
            "/x",
            axum::routing::get(|req: Request<axum::body::Body>| async move {
                let id = req.extensions().get::<RequestId>().map(|r| r.to_string());
                let tp = TraceParent::current();
                format!("{id:?} {}", tp.map(|t| t.to_string()).unwrap_or_default())
            }),
        );
        let mut svc = TenancyService::new(app, offline_tenancy());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let caller = TraceParent::parse(tp).expect("caller");
        for (traceparent, continues) in [
            (tp, true),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                false,
            ),
            ("nonsense", false),
        ] {
            let req = Request::builder()
                .uri("/x")
                .header("x-request-id", "r-1")
                .header("traceparent", traceparent)
                .body(axum::body::Body::empty())
                .expect("request");
            let resp = svc.call(req).await.expect("response");
            assert_eq!(resp.headers()["x-request-id"], "r-1");
            let answered = resp.headers()["traceparent"]
                .to_str()
                .ok()
                .and_then(TraceParent::parse)
                .expect("a valid traceparent answered");
            let body = axum::body::to_bytes(resp.into_body(), 1024)
                .await
                .expect("body");
            // The handler saw the span the response names.
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("Some(\"r-1\") {answered}"),
                "{traceparent}"
            );
            assert_ne!(answered.parent_id(), caller.parent_id(), "{traceparent}");
            if continues {
                assert_eq!(answered.trace_id(), caller.trace_id());
                assert!(
                    !answered.sampled(),
                    "the caller's sampling decision is kept"
                );
            } else {
                assert_ne!(answered.trace_id(), caller.trace_id(), "{traceparent}");
                assert!(answered.sampled(), "{traceparent}");
            }
        }
    }

    #[tokio::test]
    async fn a_request_bringing_neither_id_gets_one_draw_for_both() {
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let mut svc = TenancyService::new(app, offline_tenancy());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let resp = svc
                .call(
                    Request::builder()
                        .uri("/x")
                        .body(axum::body::Body::empty())
                        .expect("request"),
                )
                .await
                .expect("response");
            let id = resp.headers()["x-request-id"]
                .to_str()
                .expect("ascii")
                .to_owned();
            let tp = resp.headers()["traceparent"]
                .to_str()
                .ok()
                .and_then(TraceParent::parse)
                .expect("a valid traceparent answered");
            assert_eq!(
                id,
                tp.trace_id_hex(),
                "the new trace's id is the request id"
            );
            assert!(!id.contains(&hex::encode(tp.parent_id())), "{id} {tp}");
            assert!(tp.sampled());
            assert!(seen.insert(id), "ids repeat");
        }
    }

    #[test]
    fn span_ids_are_written_as_the_traceparent_writes_them() {
        let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("traceparent");
        assert_eq!(Hex(t.trace_id()).to_string(), t.trace_id_hex());
        assert_eq!(
            Hex(t.parent_id()).to_string(),
            "00f067aa0ba902b7",
            "the span id"
        );
    }

    /// The future allocated per request stays within glibc's per-thread cache (see
    /// ARCHITECTURE.md, "Per-request cost").
    #[test]
    fn the_per_request_future_stays_under_1_kb() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let tenancy = offline_tenancy();
            let mut svc = TenancyService::new(
                axum::Router::new().route("/x", axum::routing::get(|| async { "x" })),
                tenancy,
            );
            let fut = svc.call(Request::new(axum::body::Body::empty()));
            let size = std::mem::size_of_val(&*fut.inner);
            assert!(size < 1024, "the layer's future is {size} bytes");
            println!("layer future: {size} bytes");
        });
    }
}
