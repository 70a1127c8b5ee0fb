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
//!
//! A client sends the same token with many requests, so a verified token is remembered by
//! its exact text (at most [`CACHE_CAPACITY`] tokens, each at most [`CACHE_TTL_SECS`]):
//! a later request with the same text skips signature and claim parsing but still has
//! `exp` and `nbf` checked against the clock. Only tokens that verified are remembered,
//! and a token differing in any byte is verified from scratch.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken::Algorithm;
use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
use serde_json::{Map, Value};
use tenancy_core::TenantId;

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
    /// With [`TenantClaim::Id`], the tenant the claim's value names in its canonical
    /// spelling (`None` for any other text): parsed once per verification, not per request.
    pub(crate) tenant_id: Option<TenantId>,
    /// Who is calling: `sub`, else `jwt:<iss>` (shared by every request with this token).
    pub(crate) caller: Arc<str>,
    /// What the token allows, from `scope` or `scp`; `None` is nothing (shared too).
    pub(crate) scopes: Option<Arc<[String]>>,
    /// The `iss` it was verified for: claims such as roles mean what their issuer says.
    pub(crate) issuer: String,
    /// Every verified claim, for the application's own mappings (roles, groups).
    pub(crate) claims: Map<String, Value>,
}

/// The scopes of verified claims: `scope` as one space-separated string (RFC 8693,
/// OAuth 2.0 access tokens), else `scp` as an array of strings or one space-separated
/// string (as some identity providers send it). Anything else grants nothing.
fn claim_scopes(claims: &Map<String, Value>) -> Option<Arc<[String]>> {
    let words = |s: &str| s.split_ascii_whitespace().map(str::to_owned).collect();
    let scopes: Vec<String> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) => words(s),
        (None, Some(Value::String(s))) => words(s),
        (None, Some(Value::Array(a))) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    (!scopes.is_empty()).then(|| Arc::from(scopes))
}

/// Most verified tokens remembered at once (the least useful are evicted first).
const CACHE_CAPACITY: u64 = 4096;
/// Longest a verified token is trusted without verifying its signature again.
const CACHE_TTL_SECS: u64 = 60;

/// A verified token, remembered by its exact text.
#[derive(Debug, Clone)]
struct Cached {
    token: Arc<VerifiedToken>,
    /// `exp` and `nbf` (seconds since the epoch), checked again on every use.
    exp: u64,
    nbf: Option<u64>,
    /// Verified from scratch again after this time.
    until: u64,
}

/// Prepared verifier.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    /// Per issuer: name, and (key, validation) pairs.
    issuers: Vec<(String, Vec<(JwtKey, Validation)>)>,
    /// Tenant claim.
    pub(crate) claim: TenantClaim,
    /// Clock-skew allowance for `exp` and `nbf`, seconds.
    leeway: u64,
    /// Tokens that verified, by their exact text, each for at most `CACHE_TTL_SECS`.
    cache: moka::sync::Cache<String, Cached, foldhash::fast::RandomState>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
            leeway: cfg.leeway.as_secs(),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(Duration::from_secs(CACHE_TTL_SECS))
                // Tokens are long: SipHash over one cost more than the rest of a hit.
                .build_with_hasher(foldhash::fast::RandomState::default()),
        })
    }

    /// Verifies `token`: from the cache of verified tokens when its exact text is there
    /// (its `exp` and `nbf` checked again), else from scratch (then remembered).
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, HttpError> {
        let now = now_secs();
        if let Some(hit) = self.cached(token, now)? {
            return Ok(hit);
        }
        let (verified, exp, nbf) = self.verify_signed(token)?;
        let verified = Arc::new(verified);
        self.cache.insert(
            token.to_owned(),
            Cached {
                token: Arc::clone(&verified),
                exp,
                nbf,
                until: now.saturating_add(CACHE_TTL_SECS),
            },
        );
        Ok(verified)
    }

    /// The remembered verification of exactly `token`, if any and still fresh at `now`;
    /// an error if it has expired (or is not valid yet) by now.
    fn cached(&self, token: &str, now: u64) -> Result<Option<Arc<VerifiedToken>>, HttpError> {
        let Some(c) = self.cache.get(token) else {
            return Ok(None);
        };
        if now >= c.until {
            return Ok(None);
        }
        // The same tests as jsonwebtoken's, with the same leeway.
        if c.exp.saturating_add(self.leeway) < now {
            return Err(invalid("token has expired"));
        }
        if c.nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
        {
            return Err(invalid("token is not valid yet"));
        }
        Ok(Some(Arc::clone(&c.token)))
    }

    /// Verifies signature and claims; returns what the token says, its `exp` and `nbf`.
    fn verify_signed(&self, token: &str) -> Result<(VerifiedToken, u64, Option<u64>), HttpError> {
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
                    let secs = |c: &str| claims.get(c).and_then(Value::as_f64).map(|v| v as u64);
                    // Required and checked by `decode`: present here.
                    let exp = secs("exp").ok_or_else(|| invalid("token lacks the exp claim"))?;
                    let nbf = secs("nbf");
                    let caller = Arc::from(match claims.get("sub").and_then(Value::as_str) {
                        Some(sub) => sub.to_owned(),
                        None => format!("jwt:{iss}"),
                    });
                    let tenant = claims.get(name).and_then(Value::as_str).map(str::to_owned);
                    let tenant_id = match &self.claim {
                        TenantClaim::Id(_) => tenant.as_deref().and_then(|v| v.parse().ok()),
                        TenantClaim::Slug(_) => None,
                    };
                    let verified = VerifiedToken {
                        tenant,
                        tenant_id,
                        caller,
                        scopes: claim_scopes(&claims),
                        issuer: iss.clone(),
                        claims,
                    };
                    return Ok((verified, exp, nbf));
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

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"unit-test-secret-of-at-least-32-bytes";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            JwtConfig::new(TenantClaim::Id("tenant_id".into()))
                .issuer(JwtIssuer::new("idp", "app").key(JwtKey::hs256(SECRET).expect("key")))
                .leeway(Duration::from_secs(5)),
        )
        .expect("verifier")
    }

    fn token(exp: u64, tenant: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"iss": "idp", "aud": "app", "exp": exp, "tenant_id": tenant}),
            &EncodingKey::from_secret(SECRET),
        )
        .expect("sign")
    }

    #[test]
    fn a_remembered_token_still_expires_and_only_its_exact_text_is_remembered() {
        let v = verifier();
        let now = now_secs();
        let t = token(now + 20, "a");
        assert_eq!(v.verify(&t).expect("verifies").tenant.as_deref(), Some("a"));
        // Remembered: a hit while fresh.
        assert_eq!(
            v.cached(&t, now).expect("fresh").map(|c| c.tenant.clone()),
            Some(Some("a".into()))
        );
        // Past exp + leeway the remembered token is refused, as a fresh one would be.
        assert!(matches!(
            v.cached(&t, now + 26),
            Err(HttpError::InvalidCredentials { .. })
        ));
        // Within the leeway it still passes.
        assert!(v.cached(&t, now + 24).expect("leeway").is_some());
        // After the cache lifetime the token is verified from scratch.
        assert!(v.cached(&t, now + CACHE_TTL_SECS).expect("stale").is_none());
        // One byte changed in the signature: not a hit, and it does not verify.
        let mut tampered = t.clone();
        let last = tampered.pop().expect("non-empty");
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(v.cached(&tampered, now).expect("no error").is_none());
        assert!(v.verify(&tampered).is_err());
        // A token of another tenant is its own entry.
        let u = token(now + 100, "b");
        assert!(v.cached(&u, now).expect("no error").is_none());
        assert_eq!(v.verify(&u).expect("verifies").tenant.as_deref(), Some("b"));
    }

    #[test]
    fn scopes_come_from_the_standard_claims_and_absent_means_none() {
        let scopes = |v: serde_json::Value| {
            let Value::Object(m) = v else {
                panic!("object")
            };
            claim_scopes(&m).map(|s| s.to_vec())
        };
        let read_write = Some(vec![
            "invoices:read".to_owned(),
            "invoices:write".to_owned(),
        ]);
        assert_eq!(
            scopes(json!({"scope": "invoices:read invoices:write"})),
            read_write
        );
        assert_eq!(
            scopes(json!({"scp": ["invoices:read", "invoices:write"]})),
            read_write
        );
        assert_eq!(
            scopes(json!({"scp": "invoices:read  invoices:write"})),
            read_write
        );
        // `scope` wins over `scp`; no claim, an empty one or a wrong type grants nothing.
        assert_eq!(
            scopes(json!({"scope": "invoices:read", "scp": ["*"]})),
            Some(vec!["invoices:read".to_owned()])
        );
        for none in [
            json!({}),
            json!({"scope": ""}),
            json!({"scope": ["invoices:read"]}),
            json!({"scope": 1, "scp": ["*"]}),
            json!({"scp": [1, "", "a b"]}),
            json!({"scopes": "*"}),
        ] {
            assert_eq!(scopes(none.clone()), None, "{none}");
        }
    }

    #[test]
    fn an_expired_token_is_refused_and_not_remembered() {
        let v = verifier();
        let t = token(now_secs() - 60, "a");
        assert!(v.verify(&t).is_err());
        assert!(v.cached(&t, now_secs()).expect("no error").is_none());
    }
}
