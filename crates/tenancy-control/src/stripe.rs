//! Stripe webhooks: signature verification (Stripe's scheme) and event mapping.
//!
//! `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.payload">[,v1=…]`, keyed
//! with the endpoint's signing secret (`whsec_…`, used as-is). The timestamp must be within
//! the tolerance; signatures are compared in constant time.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No or malformed header.
    #[error("the Stripe-Signature header is missing or malformed (expected t=<timestamp>,v1=<signature>)")]
    Malformed,
    /// Timestamp outside the tolerance.
    #[error("the Stripe-Signature timestamp is outside the {0}s tolerance")]
    TooOld(u64),
    /// No v1 signature matches.
    #[error("no v1 signature in Stripe-Signature matches the payload")]
    Mismatch,
}

/// Computes the v1 signature (hex) of a payload at a timestamp.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

/// Verifies a `Stripe-Signature` header against the raw payload.
pub fn verify(
    secret: &str,
    header: &str,
    payload: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let mut ts: Option<i64> = None;
    let mut sigs: Vec<Vec<u8>> = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match k {
            "t" => ts = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => {
                if let Ok(b) = hex::decode(v) {
                    sigs.push(b);
                }
            }
            _ => {}
        }
    }
    let ts = ts.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - ts).unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::TooOld(tolerance.as_secs()));
    }
    let expected = hex::decode(sign(secret, ts, payload)).unwrap_or_default();
    let mut ok = subtle::Choice::from(0u8);
    for s in &sigs {
        if s.len() == expected.len() {
            ok |= s.ct_eq(&expected);
        }
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_signatures_table() {
        let secret = "whsec_test_secret";
        let body = br#"{"id":"evt_1","type":"invoice.payment_failed"}"#;
        let now = 1_700_000_000;
        let good = sign(secret, now, body);
        let tol = Duration::from_secs(300);
        let cases: Vec<(String, Result<(), SignatureError>)> = vec![
            (format!("t={now},v1={good}"), Ok(())),
            (format!("t={now},v0=abc,v1=00,v1={good}"), Ok(())),
            (
                format!("t={now},v1={}", "00".repeat(32)),
                Err(SignatureError::Mismatch),
            ),
            (
                format!("t={},v1={good}", now - 301),
                Err(SignatureError::TooOld(300)),
            ),
            (format!("v1={good}"), Err(SignatureError::Malformed)),
            ("garbage".to_owned(), Err(SignatureError::Malformed)),
            (format!("t={now}"), Err(SignatureError::Malformed)),
        ];
        for (header, want) in cases {
            assert_eq!(verify(secret, &header, body, now, tol), want, "{header}");
        }
        // Another payload with a valid-looking header.
        let h = format!("t={now},v1={good}");
        assert_eq!(
            verify(secret, &h, b"{}", now, tol),
            Err(SignatureError::Mismatch)
        );
    }
}
