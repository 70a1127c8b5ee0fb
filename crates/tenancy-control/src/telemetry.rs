//! What every request gets before and after its handler: a request id, W3C trace
//! context, a span and one access log line.
//!
//! - Request id: the client's `X-Request-Id` when it is 1 to 128 visible ASCII
//!   characters, else a new one (32 hex digits). It is echoed in the `X-Request-Id`
//!   response header, recorded on the request span and added as `request_id` to every
//!   problem document, so an operator can find the log lines of a failed call. The rules
//!   are `tenancy_problem::request_id`'s, shared with the tenancy request layer.
//! - Trace context: a valid incoming `traceparent` (version 00) keeps its trace id, and the
//!   request gets a new span id under it; without one, a new trace starts. The response
//!   carries the request's `traceparent`, and the span records `trace_id` and `span_id`
//!   (log lines carry them too).
//! - The span (`request`: method, route, request id, trace ids; handlers fill in
//!   `tenant_id` when they know it) and, when the response is ready, one `info` line
//!   (`access`: method, route template, status, duration in ms). The route is the matched
//!   template (`/v1/tenants/{id}`), never the raw path, so neither logs nor metrics grow
//!   with ids.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use tenancy_problem::request_id::add_to_problem;
/// The request id of a request (in its extensions once [`observe`] ran).
pub use tenancy_problem::request_id::RequestId;
/// `X-Request-Id`.
pub use tenancy_problem::request_id::HEADER as REQUEST_ID;

/// W3C `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// W3C trace context of a request: the trace it belongs to and its own span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// This request's span, 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The caller's span, when a `traceparent` came in.
    pub parent_span_id: Option<[u8; 8]>,
    /// The sampled flag (from the caller, else set).
    pub sampled: bool,
}

impl TraceContext {
    /// A new span under the incoming `traceparent` (when valid), else a new trace.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let parent = headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let span_id = nonzero_random();
        match parent {
            Some((trace_id, parent_span, flags)) => TraceContext {
                trace_id,
                span_id,
                parent_span_id: Some(parent_span),
                sampled: flags & 1 == 1,
            },
            None => TraceContext {
                trace_id: nonzero_random(),
                span_id,
                parent_span_id: None,
                sampled: true,
            },
        }
    }

    /// The `traceparent` header value naming this request's span.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Random bytes, not all zero (W3C forbids all-zero ids).
fn nonzero_random<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    while b.iter().all(|x| *x == 0) {
        rand::thread_rng().fill_bytes(&mut b);
    }
    b
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>` (lowercase; all-zero ids are invalid). Versions
/// other than 00 are read the same way when their first four fields look the same, as the
/// specification asks. The rules are `tenancy_jobs::TraceParent`'s, shared with the
/// request layer and the job queue.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    tenancy_jobs::TraceParent::parse(v).map(|t| (t.trace_id(), t.parent_id(), t.flags()))
}

/// The route template of a request, or `unmatched` (no route: the 404 fallback).
pub fn route_of(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

/// The middleware: request id, trace context, span, access line.
pub async fn observe(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::from_headers(req.headers());
    let mut trace = TraceContext::from_headers(req.headers());
    let route = route_of(&req);
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.kind = "server",
        method = %method,
        route = %route,
        request_id = %id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
    );
    join_trace(&span, &mut trace);
    span.record("trace_id", hex::encode(trace.trace_id));
    span.record("span_id", hex::encode(trace.span_id));
    if let Some(tenant) = tenant_in_path(&route, req.uri().path()) {
        span.record("tenant_id", tenant);
    }
    req.extensions_mut().insert(id.clone());
    req.extensions_mut().insert(trace);
    let response = next.run(req).instrument(span.clone()).await;
    let mut response = add_to_problem(response, &id).await;
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    crate::metrics::record_request(method.as_str(), &route, status, started.elapsed());
    span.in_scope(|| {
        tracing::info!(
            target: "tenancy_control::access",
            method = %method,
            route = %route,
            status,
            duration_ms = (duration_ms * 1000.0).round() / 1000.0,
            "access"
        )
    });
    if let Some(v) = id.header_value() {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace.traceparent()) {
        response.headers_mut().insert(TRACEPARENT.clone(), v);
    }
    response
}

/// With OpenTelemetry on (the `tracing-opentelemetry` layer is installed and the span
/// is enabled): the span continues the caller's trace, and `trace` takes the span's own
/// ids, so logs, the `traceparent` answered and the exported span agree. Otherwise `trace`
/// keeps the ids made from the headers.
fn join_trace(span: &tracing::Span, trace: &mut TraceContext) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(parent) = trace.parent_span_id {
        let flags = if trace.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(parent),
            flags,
            true,
            TraceState::default(),
        );
        // Fails only when no OpenTelemetry layer is installed: then there is nothing to join.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let cx = span.context();
    let own = cx.span().span_context().clone();
    if own.is_valid() {
        trace.trace_id = own.trace_id().to_bytes();
        trace.span_id = own.span_id().to_bytes();
        trace.sampled = own.is_sampled();
    }
}

/// The tenant a `/v1/tenants/{id}…` or `/v1/evaluate/{tenant}` route is about, when the
/// path names one (a UUID), for the request span's `tenant_id`.
fn tenant_in_path(route: &str, path: &str) -> Option<String> {
    let prefix = ["/v1/tenants/{id}", "/v1/evaluate/{tenant}"]
        .into_iter()
        .find(|p| route.starts_with(p))?;
    let index = prefix.split('/').count() - 1;
    let segment = path.split('/').nth(index)?;
    segment.parse::<uuid::Uuid>().ok().map(|u| u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_of_a_path_is_read_only_from_tenant_routes() {
        let id = "0b5d4e1e-8a8c-4c49-9d55-5b7c2c3f0a11";
        assert_eq!(
            tenant_in_path(
                "/v1/tenants/{id}/suspend",
                &format!("/v1/tenants/{id}/suspend")
            ),
            Some(id.to_owned())
        );
        assert_eq!(
            tenant_in_path("/v1/evaluate/{tenant}", &format!("/v1/evaluate/{id}")),
            Some(id.to_owned())
        );
        assert_eq!(
            tenant_in_path("/v1/tenants/{id}", "/v1/tenants/not-a-uuid"),
            None
        );
        assert_eq!(
            tenant_in_path("/v1/workflows/{id}", &format!("/v1/workflows/{id}")),
            None
        );
    }

    #[test]
    fn traceparent_parsing_follows_the_w3c_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (t, s, f) = parse_traceparent(ok).expect("valid");
        assert_eq!(hex::encode(t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(s), "00f067aa0ba902b7");
        assert_eq!(f, 1);
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
