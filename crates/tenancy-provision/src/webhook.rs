//! Outbound webhooks signed per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>): headers `webhook-id`, `webhook-timestamp` (Unix
//! seconds) and `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, with
//! a `whsec_<base64>` secret. The id is stable across retries, so receivers deduplicate.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::Error;

/// Decodes a `whsec_<base64>` secret into key bytes.
pub fn decode_secret(secret: &SecretString) -> Result<Vec<u8>, Error> {
    let s = secret.expose_secret();
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    B64.decode(b64)
        .map_err(|_| Error::Config("webhook secret must be whsec_ followed by base64".into()))
}

/// A fresh random `whsec_` secret.
pub fn generate_secret() -> SecretString {
    let bytes: [u8; 24] = rand::random();
    SecretString::from(format!("whsec_{}", B64.encode(bytes)))
}

/// The `webhook-signature` value (`v1,<base64>`) for a message.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for HMAC.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Verifies a `webhook-signature` header (space-separated list of `v1,<sig>`) in constant
/// time, and the timestamp against `now` within `tolerance`.
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    signature_header.split(' ').any(|part| {
        part.strip_prefix("v1,")
            .and_then(|sig| B64.decode(sig).ok())
            .is_some_and(|sig| mac.clone().verify_slice(&sig).is_ok())
    })
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// Why it failed (transport error or non-2xx status).
    pub error: Option<String>,
    /// Duration in milliseconds.
    pub ms: f64,
}

impl Attempt {
    /// Whether the receiver acknowledged (2xx).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// POSTs a signed JSON webhook to `url` (http only: receivers behind TLS need a
/// terminating proxy, see ARCHITECTURE.md).
pub async fn deliver(url: &str, key: &[u8], id: &str, body: &[u8], timeout: Duration) -> Attempt {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, post(url, key, id, body)).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Err(_) => Attempt {
            status: None,
            error: Some(format!("timed out after {timeout:?}")),
            ms,
        },
        Ok(Err(e)) => Attempt {
            status: None,
            error: Some(e),
            ms,
        },
        Ok(Ok(status)) if (200..300).contains(&status) => Attempt {
            status: Some(status),
            error: None,
            ms,
        },
        Ok(Ok(status)) => Attempt {
            status: Some(status),
            error: Some(format!("receiver answered HTTP {status}")),
            ms,
        },
    }
}

async fn post(url: &str, key: &[u8], id: &str, body: &[u8]) -> Result<u16, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// receivers are supported, got {url:?}"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("URL {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let ts = unix_now();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = http::Request::post(path)
        .header(http::header::HOST, format!("{host}:{port}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(key, id, ts, body))
        .header(http::header::USER_AGENT, "tenancy-webhooks/1")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending to {url}: {e}"))?;
    let status = resp.status().as_u16();
    // Drain the body so the connection ends cleanly.
    let _ = resp.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // From the Standard Webhooks reference libraries' test suite.
        let key = decode_secret(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ))
        .expect("secret");
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let body = br#"{"test": 2432232314}"#;
        // (signature header, body, now, accepted): another signature beside the right
        // one, a changed body, a timestamp past the tolerance.
        let cases: [(&str, &[u8], i64, bool); 3] = [
            (&format!("v1,bogus {sig}"), body, 1614265330 + 10, true),
            (&sig, br#"{"test": 2432232315}"#, 1614265330, false),
            (&sig, body, 1614265330 + 600, false),
        ];
        for (header, body, now, accepted) in cases {
            let got = verify(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                header,
                body,
                now,
                Duration::from_secs(300),
            );
            assert_eq!(got, accepted, "{header} at {now}");
        }
    }
}
