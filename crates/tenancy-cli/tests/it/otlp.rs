//! `tenancy serve` exporting traces over OTLP/HTTP to a collector the test runs.

use std::io::{Read, Write};
use std::time::Duration;

use crate::ops::{create_tenant, http, port_of, token_of, wait_active, wait_ready, Served};

/// A minimal OTLP/HTTP collector: answers every POST with 200 and keeps the spans of the
/// `ExportTraceServiceRequest` bodies (with their resource's `service.name`).
struct Collector {
    port: u16,
    spans: std::sync::Arc<
        std::sync::Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>,
    >,
}

impl Collector {
    fn start() -> Collector {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = &buf[head_end..(head_end + len).min(buf.len())];
                if let Ok(req) = ExportTraceServiceRequest::decode(body) {
                    if let Ok(mut s) = sink.lock() {
                        for rs in req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| r.attributes.iter())
                                .find(|a| a.key == "service.name")
                                .and_then(|a| a.value.as_ref())
                                .map(|v| format!("{:?}", v.value))
                                .unwrap_or_default();
                            for ss in rs.scope_spans {
                                for span in ss.spans {
                                    s.push((service.clone(), span));
                                }
                            }
                        }
                    }
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Collector { port, spans }
    }
}

/// A span attribute's string value.
fn attr(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            Some(Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

#[test]
fn serve_exports_spans_over_otlp_continuing_the_callers_trace_with_tenant_ids() {
    let collector = Collector::start();
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let mut serve = Served::start(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    let banner = serve.banner("admin token");
    let port = port_of(&banner);
    let token = token_of(&banner);
    wait_ready(port);
    let (tenant, _) = create_tenant(port, &token, "traced", "pooled");
    wait_active(port, &token, &tenant, Duration::from_secs(60));
    let a = http(
        port,
        "GET",
        &format!("/v1/tenants/{tenant}"),
        &[
            ("Authorization", &format!("Bearer {token}")),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let answered = a.headers.get("traceparent").expect("traceparent").clone();
    // Exported spans are flushed when the process exits.
    serve.signal("-TERM", false);
    assert!(serve.wait_exit(Duration::from_secs(60)).success());

    let spans = collector
        .spans
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    assert!(!spans.is_empty(), "no span reached the collector");
    assert!(
        spans
            .iter()
            .all(|(service, _)| service.contains("\"tenancy\"")),
        "{:?}",
        spans.iter().map(|(s, _)| s).collect::<Vec<_>>()
    );
    let request = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| {
            s.name == "request" && hex::encode(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
        })
        .unwrap_or_else(|| {
            panic!(
                "no request span in the caller's trace: {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex::encode(&request.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        answered,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex::encode(&request.span_id)
        ),
        "the traceparent answered names the exported span"
    );
    assert_eq!(attr(request, "tenant_id").as_deref(), Some(tenant.as_str()));
    assert_eq!(attr(request, "route").as_deref(), Some("/v1/tenants/{id}"));
    assert!(
        spans.iter().any(|(_, s)| s.name == "workflow_step"
            && attr(s, "tenant_id").as_deref() == Some(tenant.as_str())),
        "no workflow step span with the tenant id"
    );
}
