//! The request id every HTTP surface of tenancy answers with: the client's
//! `X-Request-Id` when it is sane (1 to 128 visible ASCII characters), else a new one (32
//! hex digits). It is echoed in the `X-Request-Id` response header and added as
//! `request_id` to every problem document ([`add_to_problem`]), so an operator can find
//! the log lines of a failed call from what the client saw.

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
/// header value and never breaks a log line). Cloning it is cheap: a generated id is
/// held inline, a client's shares the request's header bytes.
#[derive(Clone)]
pub struct RequestId(Repr);

#[derive(Clone)]
enum Repr {
    /// 32 lowercase hex digits drawn by the server.
    Random([u8; 32]),
    /// The client's id, validated, as the header value it came in.
    Client(HeaderValue),
}

impl RequestId {
    /// The id a client sent, when it is usable (surrounding spaces trimmed).
    pub fn parse(v: &str) -> Option<Self> {
        let v = v.trim();
        if !usable(v) {
            return None;
        }
        HeaderValue::from_str(v)
            .ok()
            .map(|h| RequestId(Repr::Client(h)))
    }

    /// A new id: 32 random hex digits.
    pub fn generate() -> Self {
        RequestId::from_bits(rand::random())
    }

    /// The id written from 128 bits the caller drew at random (32 hex digits), for a
    /// caller that draws once for several ids (the request layer's trace and span ids).
    pub fn from_bits(bits: u128) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        for (i, d) in buf.iter_mut().enumerate() {
            *d = DIGITS[((bits >> (124 - 4 * i)) & 0xf) as usize];
        }
        RequestId(Repr::Random(buf))
    }

    /// The client's `X-Request-Id` when it is usable, else a new one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        RequestId::sent(headers).unwrap_or_else(RequestId::generate)
    }

    /// The client's `X-Request-Id` when it is usable. A value without surrounding spaces
    /// (what HTTP parsers hand over) is kept as it came, without a copy.
    pub fn sent(headers: &HeaderMap) -> Option<Self> {
        let h = headers.get(&HEADER)?;
        let v = h.to_str().ok()?;
        if usable(v) {
            Some(RequestId(Repr::Client(h.clone())))
        } else {
            RequestId::parse(v)
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Random(b) => std::str::from_utf8(b).unwrap_or_default(),
            // Visible ASCII only (checked when it was accepted).
            Repr::Client(h) => h.to_str().unwrap_or_default(),
        }
    }

    /// The `X-Request-Id` header value.
    pub fn header_value(&self) -> Option<HeaderValue> {
        match &self.0 {
            Repr::Random(b) => HeaderValue::from_bytes(b).ok(),
            Repr::Client(h) => Some(h.clone()),
        }
    }
}

/// 1 to [`MAX_LEN`] visible ASCII characters.
fn usable(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_graphic())
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RequestId {}

impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
        h.insert(&HEADER, HeaderValue::from_static("r-7"));
        let sent = RequestId::from_headers(&h);
        assert_eq!(sent.as_str(), "r-7");
        assert_eq!(sent.header_value(), Some(HeaderValue::from_static("r-7")));
        assert_eq!(sent, RequestId::parse("r-7").expect("id"));
        h.insert(&HEADER, HeaderValue::from_static(" r-8 "));
        assert_eq!(
            RequestId::sent(&h).map(|r| r.to_string()),
            Some("r-8".into())
        );
        let bits = RequestId::from_bits(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(bits.as_str(), "0123456789abcdef0011223344556677");
        assert_eq!(
            bits.header_value(),
            Some(HeaderValue::from_static("0123456789abcdef0011223344556677"))
        );
        assert_eq!(
            format!("{bits:?}"),
            "RequestId(\"0123456789abcdef0011223344556677\")"
        );
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
