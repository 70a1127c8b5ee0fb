//! Admin authentication: bearer tokens whose SHA-256 digests come from configuration.
//! Plain tokens are never stored; comparison is constant-time over digests.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ProblemCode};
use crate::AppState;

/// SHA-256 of a token, as stored in configuration (`sha256:<hex>` or bare hex).
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parses a configured digest.
pub fn parse_digest(s: &str) -> Result<[u8; 32], String> {
    let hex_part = s.strip_prefix("sha256:").unwrap_or(s);
    let bytes = hex::decode(hex_part).map_err(|_| {
        format!("admin token digest {s:?} is not hex (expected sha256:<64 hex digits>)")
    })?;
    bytes
        .try_into()
        .map_err(|_| format!("admin token digest {s:?} must be 32 bytes (64 hex digits)"))
}

/// An authenticated administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Short, non-secret id of the token (first 8 hex digits of its digest), for logs and
    /// idempotency scopes.
    pub principal: String,
    /// Where the request came from (request id, trace id, client address), for the audit
    /// events of the changes it makes.
    pub origin: crate::audit::Origin,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    ProblemCode::Unauthorized,
                    "send an admin token as Authorization: Bearer <token>",
                )
            })?;
        let digest = token_digest(token);
        let mut ok = subtle::Choice::from(0u8);
        for d in state.admin_digests() {
            ok |= d.ct_eq(&digest);
        }
        if bool::from(ok) {
            Ok(Admin {
                principal: hex::encode(&digest[..4]),
                origin: crate::audit::Origin::of(parts),
            })
        } else {
            Err(ApiError::new(
                ProblemCode::Unauthorized,
                "the admin token is not valid",
            ))
        }
    }
}
