//! JWT verification for the tenant resolver.
//!
//! Trust is configured per issuer: each [`JwtIssuer`] has its audience and its own keys,
//! each key pinned to one algorithm. A token is checked only against the keys of the
//! issuer it claims (`iss`), and only with the algorithm its key is pinned to, so:
//! `alg: none` is refused (no key has it), HS256 signed with an RSA public key is refused
//! (no HMAC key holds that secret, and an RSA key never verifies HMAC), and a valid
//! signature by another configured issuer's key does not make a token of this issuer.
//! `exp` is required; `exp`, `nbf` are checked with a small leeway; `iss` and `aud` must
//! match.

use std::path::Path;
use std::time::Duration;

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::HttpError;

/// A verification key pinned to one algorithm.
#[derive(Clone)]
pub struct JwtKey {
    /// Optional key id; when both the token and the key have one they must match.
    kid: Option<String>,
    /// The only algorithm this key verifies.
    alg: Algorithm,
    /// The key material.
    key: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn key_err(what: &str) -> impl FnOnce(jsonwebtoken::errors::Error) -> ConfigError + '_ {
    move |e| ConfigError::Key {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

impl JwtKey {
    /// An HS256 shared secret (at least 32 bytes).
    pub fn hs256(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError::Key {
                what: "HS256 secret".into(),
                detail: "must be at least 32 bytes".into(),
            });
        }
        Ok(JwtKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        })
    }

    /// An RS256 public key in PEM.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        Ok(JwtKey {
            kid: None,
            alg: Algorithm::RS256,
            key: DecodingKey::from_rsa_pem(pem).map_err(key_err("RS256 public key"))?,
        })
    }

    /// An ES256 (P-256) public key in PEM.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        Ok(JwtKey {
            kid: None,
            alg: Algorithm::ES256,
            key: DecodingKey::from_ec_pem(pem).map_err(key_err("ES256 public key"))?,
        })
    }

    /// An Ed25519 (EdDSA) public key in PEM.
    pub fn eddsa_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        Ok(JwtKey {
            kid: None,
            alg: Algorithm::EdDSA,
            key: DecodingKey::from_ed_pem(pem).map_err(key_err("EdDSA public key"))?,
        })
    }

    /// Sets the key id.
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The algorithm the key is pinned to.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Which claim names the tenant, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantClaim {
    /// The claim holds the tenant id (UUID).
    Id(String),
    /// The claim holds the tenant slug.
    Slug(String),
}

/// One trusted token issuer.
#[derive(Debug, Clone)]
pub struct JwtIssuer {
    /// Exact `iss` value.
    issuer: String,
    /// Accepted `aud` values (at least one must be in the token).
    audience: Vec<String>,
    /// This issuer's keys.
    keys: Vec<JwtKey>,
}

impl JwtIssuer {
    /// An issuer with its audience and no keys yet.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        JwtIssuer {
            issuer: issuer.into(),
            audience: vec![audience.into()],
            keys: Vec::new(),
        }
    }

    /// Adds a key.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds every supported key of a JWKS document (JSON text). Keys without an `alg`
    /// are refused: an algorithm must be pinned.
    pub fn jwks_json(mut self, json: &str) -> Result<Self, ConfigError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| ConfigError::Key {
            what: "JWKS".into(),
            detail: e.to_string(),
        })?;
        for jwk in &set.keys {
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
                .ok_or_else(|| ConfigError::Key {
                    what: format!("JWKS key {:?}", jwk.common.key_id),
                    detail: "every key needs a supported \"alg\"".into(),
                })?;
            let key = DecodingKey::from_jwk(jwk).map_err(key_err("JWKS key"))?;
            self.keys.push(JwtKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        Ok(self)
    }

    /// Adds the keys of a JWKS file.
    pub fn jwks_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Key {
            what: format!("JWKS file {}", path.display()),
            detail: e.to_string(),
        })?;
        self.jwks_json(&text)
    }
}

/// JWT resolver settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Trusted issuers.
    issuers: Vec<JwtIssuer>,
    /// Clock-skew allowance for `exp` and `nbf`.
    leeway: Duration,
    /// Where the tenant is in the claims.
    claim: TenantClaim,
}

impl JwtConfig {
    /// Tokens name the tenant by id in `tenant_id`, 30 s leeway.
    pub fn new(claim: TenantClaim) -> Self {
        JwtConfig {
            issuers: Vec::new(),
            leeway: Duration::from_secs(30),
            claim,
        }
    }

    /// Trusts an issuer.
    pub fn issuer(mut self, issuer: JwtIssuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// Sets the clock-skew leeway.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }
}

/// What a verified token says.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    /// The tenant claim's value.
    pub(crate) tenant: Option<String>,
    /// `sub`, if present.
    pub(crate) subject: Option<String>,
    /// `iss`.
    pub(crate) issuer: String,
}

/// Prepared verifier.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    /// Per issuer: name, and (key, validation) pairs.
    issuers: Vec<(String, Vec<(JwtKey, Validation)>)>,
    /// Tenant claim.
    pub(crate) claim: TenantClaim,
}

fn invalid(reason: &str) -> HttpError {
    HttpError::InvalidCredentials {
        reason: reason.to_owned(),
    }
}

impl JwtVerifier {
    pub(crate) fn new(cfg: JwtConfig) -> Result<Self, ConfigError> {
        if cfg.issuers.is_empty() || cfg.issuers.iter().any(|i| i.keys.is_empty()) {
            return Err(ConfigError::Invalid(
                "the JWT source needs at least one issuer, each with at least one key".into(),
            ));
        }
        let issuers = cfg
            .issuers
            .into_iter()
            .map(|i| {
                let pairs = i
                    .keys
                    .into_iter()
                    .map(|k| {
                        let mut v = Validation::new(k.alg);
                        v.leeway = cfg.leeway.as_secs();
                        v.validate_exp = true;
                        v.validate_nbf = true;
                        v.set_issuer(&[i.issuer.as_str()]);
                        v.set_audience(&i.audience);
                        v.set_required_spec_claims(&["exp", "iss", "aud"]);
                        (k, v)
                    })
                    .collect();
                (i.issuer, pairs)
            })
            .collect();
        Ok(JwtVerifier {
            issuers,
            claim: cfg.claim,
        })
    }

    pub(crate) fn verify(&self, token: &str) -> Result<VerifiedToken, HttpError> {
        let header = decode_header(token).map_err(|_| invalid("malformed or unsupported token"))?;
        // Pick the issuer from the (not yet verified) claims; verification below checks
        // `iss` again with that issuer's keys only.
        let iss = unverified_issuer(token).ok_or_else(|| invalid("token has no issuer"))?;
        let Some((_, keys)) = self.issuers.iter().find(|(name, _)| *name == iss) else {
            return Err(invalid("token issuer is not trusted"));
        };
        let mut last = invalid("no key of this issuer verifies the token");
        for (key, validation) in keys {
            if key.alg != header.alg {
                continue;
            }
            if let (Some(a), Some(b)) = (&key.kid, &header.kid) {
                if a != b {
                    continue;
                }
            }
            match decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let name = match &self.claim {
                        TenantClaim::Id(n) | TenantClaim::Slug(n) => n,
                    };
                    return Ok(VerifiedToken {
                        tenant: claims.get(name).and_then(Value::as_str).map(str::to_owned),
                        subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
                        issuer: iss,
                    });
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => return Err(invalid("token has expired")),
                        K::ImmatureSignature => return Err(invalid("token is not valid yet")),
                        K::InvalidAudience => {
                            return Err(invalid("token audience is not accepted"))
                        }
                        K::InvalidIssuer => return Err(invalid("token issuer is not trusted")),
                        K::MissingRequiredClaim(c) => {
                            return Err(invalid(&format!("token lacks the {c} claim")))
                        }
                        _ => invalid("token signature does not verify"),
                    };
                }
            }
        }
        Err(last)
    }
}

fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}
