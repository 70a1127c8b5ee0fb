//! The request id every HTTP surface of tenancy answers with: the client's
//! `X-Request-Id` when it is sane (1 to 128 visible ASCII characters), else a new one (32
//! hex digits). It is echoed in the `X-Request-Id` response header and added as
//! `request_id` to every problem document ([`add_to_problem`]), so an operator can find
//! the log lines of a failed call from what the client saw.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;

/// `X-Request-Id`.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a client.
pub const MAX_LEN: usize = 128;

/// Largest problem body rewritten to carry the request id (problems are small; anything
/// bigger is left as it is).
const MAX_PROBLEM_BODY: usize = 64 * 1024;

/// A request's id: 1 to [`MAX_LEN`] visible ASCII characters (so it is always a valid
/// header value and never breaks a log line). Cloning it is cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

impl RequestId {
    /// The id a client sent, when it is usable (surrounding spaces trimmed).
    pub fn parse(v: &str) -> Option<Self> {
        let v = v.trim();
        (!v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| RequestId(Arc::from(v)))
    }

    /// A new id: 32 random hex digits.
    pub fn generate() -> Self {
        let mut buf = [0u8; 32];
        // 32 bytes for 16 encoded: cannot fail; the digits are ASCII.
        let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut buf);
        RequestId(Arc::from(std::str::from_utf8(&buf).unwrap_or_default()))
    }

    /// The client's `X-Request-Id` when it is usable, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(&HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(RequestId::parse)
            .unwrap_or_else(RequestId::generate)
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `X-Request-Id` header value.
    pub fn header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.0).ok()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `response` is a problem document.
pub fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(crate::CONTENT_TYPE.as_bytes()))
}

/// A problem document gains `request_id` (other responses pass unchanged; so does a
/// problem body that is not a JSON object or is larger than 64 KiB).
pub async fn add_to_problem(response: Response, id: &RequestId) -> Response {
    if !is_problem(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_PROBLEM_BODY).await {
        Ok(b) => b,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let rewritten = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut doc)) => {
            doc.insert(
                "request_id".into(),
                serde_json::Value::String(id.as_str().to_owned()),
            );
            serde_json::to_vec(&doc).ok()
        }
        _ => None,
    };
    match rewritten {
        Some(b) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(b))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn only_sane_client_ids_are_kept() {
        assert_eq!(
            RequestId::parse(" abc-123_X ").map(|r| r.to_string()),
            Some("abc-123_X".into())
        );
        let long = "a".repeat(MAX_LEN);
        assert!(RequestId::parse(&long).is_some());
        for bad in ["", "   ", "a b", "é", "a\tb", &"a".repeat(MAX_LEN + 1)] {
            assert!(RequestId::parse(bad).is_none(), "{bad:?}");
        }
        let g = RequestId::generate();
        assert_eq!(g.as_str().len(), 32);
        assert_ne!(g, RequestId::generate());
        let mut h = HeaderMap::new();
        h.insert(&HEADER, HeaderValue::from_static("a b"));
        assert_eq!(RequestId::from_headers(&h).as_str().len(), 32, "replaced");
    }

    #[tokio::test]
    async fn problems_gain_the_id_and_other_bodies_do_not() {
        let id = RequestId::parse("req-1").expect("id");
        let problem = crate::Problem::new(crate::NOT_FOUND, None).into_response();
        let out = add_to_problem(problem, &id).await;
        let body = axum::body::to_bytes(out.into_body(), 1 << 16)
            .await
            .expect("body");
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc["request_id"], "req-1");
        assert_eq!(doc["code"], "not-found");
        let plain = add_to_problem("hello".into_response(), &id).await;
        let body = axum::body::to_bytes(plain.into_body(), 1 << 16)
            .await
            .expect("body");
        assert_eq!(&body[..], b"hello");
    }
}
