//! The signed tenant context.
//!
//! When the SDK opens a tenant transaction it sends `BEGIN` and `SELECT tenancy.enter($1)`
//! in front of the transaction's first statement, the token as a bound parameter (never
//! as SQL text, which every session of the runtime role could read in
//! `pg_stat_activity`). The token says *which tenant*, *for which backend process*, *when
//! it was issued* and *until when*, and carries an HMAC-SHA256 over those fields made
//! with a [`ContextKey`] that the application holds and the runtime database role cannot
//! read. `tenancy.enter` (a `SECURITY DEFINER` function owned by the owner role) checks
//! the MAC, the backend pid, the expiry, and that the token was issued after the last one
//! the backend accepted (tokens are single-use); only then does it enter the tenant for
//! that one transaction, which the RLS predicate `tenancy.current_tenant_id()` reads on
//! every statement.
//!
//! Consequences, each covered by the context and isolation tests:
//! - `set_config('tenancy.ctx', …)` from injected SQL cannot name another tenant: the
//!   native context keeps no setting, and the PL/pgSQL one stores a binding that is itself
//!   a MAC (with a key that never leaves the database) over the tenant, the backend pid
//!   and the transaction start time.
//! - A token replayed later on the same connection fails (issued no later than the last
//!   one accepted), a token taken from another connection fails (pid), an old token
//!   fails (expiry).
//!
//! Behind a transaction-mode pooler (PgBouncer) the backend is known only once the
//! transaction runs, and a backend serves many clients' transactions in no order: there
//! the SDK reads the backend pid and the transaction's start inside the transaction and
//! signs a `v2` token bound to exactly that transaction
//! ([`ContextKey::sign_for_transaction`]); `tenancy.enter` accepts it only there, once.
//!
//! This module only builds and checks token text; it does no IO and takes the clock as an
//! argument.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use uuid::Uuid;

use crate::ids::TenantId;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of the token format bound to a backend process; bump it when the signed
/// fields change.
pub const TOKEN_VERSION: &str = "v1";
/// Version prefix of the token format bound to one transaction (the opening of a
/// transaction behind a transaction-mode pooler, where the backend is not known before the
/// transaction starts): `v2.<kid>.<tenant>.<backend pid>-<transaction start>.<issued
/// µs>.<expires µs>.<hmac hex>`, the transaction start as PostgreSQL's
/// `timestamptz_send` bytes in lowercase hex (16 digits: microseconds since 2000-01-01).
pub const TRANSACTION_TOKEN_VERSION: &str = "v2";
/// Version prefix of the single-use token format bound to no backend (the opening of a
/// transaction behind a transaction-mode pooler, on a server whose native context keeps a
/// replay registry in shared memory): `v3.<kid>.<tenant>.<nonce>.<issued µs>.<expires
/// µs>.<hmac hex>`, the nonce 16 random bytes in lowercase hex (32 digits). The server
/// accepts each nonce once, server-wide, until the token expires.
pub const SINGLE_USE_TOKEN_VERSION: &str = "v3";

/// Why a token or key could not be built or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The key id breaks the rules.
    #[error("context key id {value:?} is not allowed: use 1 to 16 characters from a-z and 0-9")]
    KeyId {
        /// The value given.
        value: String,
    },
    /// The key material is not 64 hex digits.
    #[error("context key must be 64 hex digits (32 random bytes), e.g. the output of `openssl rand -hex 32`")]
    KeyMaterial,
    /// The token text does not have the expected shape.
    #[error("context token is malformed: {0}")]
    Malformed(&'static str),
    /// The token's MAC does not verify.
    #[error("context token signature does not verify")]
    BadSignature,
    /// The token is outside its validity window.
    #[error("context token has expired")]
    Expired,
    /// The token was signed by a key we do not hold.
    #[error("context token was signed with unknown key id {0:?}")]
    UnknownKey(String),
}

/// The id of a context key, so keys can be rotated: `[a-z0-9]{1,16}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The key id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=16).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(TokenError::KeyId {
                value: s.to_owned(),
            });
        }
        Ok(KeyId(s.to_owned()))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// A secret key that signs context tokens.
///
/// The application holds it (from configuration); each tenant database holds a copy in a
/// schema the runtime role cannot read. `Debug` never prints the material.
#[derive(Clone)]
pub struct ContextKey {
    /// Which key this is, carried in every token so verification picks the right one
    /// during a rotation.
    kid: KeyId,
    /// 32 bytes of key material.
    material: [u8; 32],
    /// HMAC state with the key already absorbed: each token costs the hash of its text,
    /// not the key schedule again.
    keyed: HmacSha256,
}

impl ContextKey {
    /// Builds a key from its id and 64 hex digits of material.
    pub fn from_hex(kid: KeyId, material_hex: &str) -> Result<Self, TokenError> {
        let bytes = hex::decode(material_hex.trim()).map_err(|_| TokenError::KeyMaterial)?;
        let material: [u8; 32] = bytes.try_into().map_err(|_| TokenError::KeyMaterial)?;
        Ok(Self::from_bytes(kid, material))
    }

    /// Builds a key from raw bytes (for example freshly generated random bytes).
    pub fn from_bytes(kid: KeyId, material: [u8; 32]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail for a 32-byte key.
        let keyed = match HmacSha256::new_from_slice(&material) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 accepts any key length"),
        };
        ContextKey {
            kid,
            material,
            keyed,
        }
    }

    /// The key id.
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// The material as hex, for installing the key into a database. Handle with care.
    pub fn material_hex(&self) -> String {
        hex::encode(self.material)
    }

    fn mac(&self, msg: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(msg.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Appends `.` and the hex MAC of everything in `text` so far.
    fn append_mac(&self, text: &mut String) {
        let mac = self.mac(text);
        let mut mac_hex = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(mac, &mut mac_hex);
        text.push('.');
        // Hex digits are ASCII: the conversion cannot fail.
        text.push_str(std::str::from_utf8(&mac_hex).unwrap_or_default());
    }

    /// Signs a token for `tenant` on the backend with process id `backend_pid`, issued at
    /// `now_micros` (microseconds since the Unix epoch) and valid for `ttl_micros`.
    pub fn sign(
        &self,
        tenant: TenantId,
        backend_pid: i32,
        now_micros: i64,
        ttl_micros: i64,
    ) -> ContextToken {
        let expires = now_micros.saturating_add(ttl_micros);
        // One buffer: the signed fields, a dot, the MAC in hex (about 150 bytes), written
        // without the formatting machinery (signed on every direct transaction).
        let mut text = String::with_capacity(192);
        text.push_str(TOKEN_VERSION);
        text.push('.');
        text.push_str(self.kid.as_str());
        text.push('.');
        text.push_str(
            tenant
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer()),
        );
        let mut num = itoa::Buffer::new();
        for n in [i64::from(backend_pid), now_micros, expires] {
            text.push('.');
            text.push_str(num.format(n));
        }
        self.append_mac(&mut text);
        ContextToken {
            text,
            tenant,
            backend_pid,
            transaction_start: None,
            nonce: None,
            issued_micros: now_micros,
            expires_micros: expires,
        }
    }

    /// Signs a token for `tenant` bound to one transaction: the one that started at
    /// `transaction_start` (PostgreSQL's `transaction_timestamp()`, microseconds since
    /// 2000-01-01, as `timestamptz_send` gives it) on the backend with process id
    /// `backend_pid`, both read inside that transaction. `tenancy.enter` accepts it only
    /// in that transaction: behind a transaction-mode pooler the backend is known only
    /// once the transaction runs, and a later transaction on the same backend starts
    /// later.
    pub fn sign_for_transaction(
        &self,
        tenant: TenantId,
        backend_pid: i32,
        transaction_start: i64,
        now_micros: i64,
        ttl_micros: i64,
    ) -> ContextToken {
        let expires = now_micros.saturating_add(ttl_micros);
        let mut text = String::with_capacity(200);
        // Writing to a String cannot fail.
        let _ = write!(
            text,
            "{TRANSACTION_TOKEN_VERSION}.{}.{}.{}-{:016x}.{}.{}",
            self.kid, tenant, backend_pid, transaction_start as u64, now_micros, expires
        );
        self.append_mac(&mut text);
        ContextToken {
            text,
            tenant,
            backend_pid,
            transaction_start: Some(transaction_start),
            nonce: None,
            issued_micros: now_micros,
            expires_micros: expires,
        }
    }

    /// Signs a single-use token for `tenant` that is bound to no backend: `nonce` (16
    /// random bytes, never reused) makes it unique, and the database's replay registry
    /// accepts each nonce once until the token expires. Issued at `now_micros`
    /// (microseconds since the Unix epoch), valid for `ttl_micros`.
    pub fn sign_single_use(
        &self,
        tenant: TenantId,
        nonce: [u8; 16],
        now_micros: i64,
        ttl_micros: i64,
    ) -> ContextToken {
        let expires = now_micros.saturating_add(ttl_micros);
        let mut nonce_hex = [0u8; 32];
        // 16 bytes always fit 32 hex digits.
        let _ = hex::encode_to_slice(nonce, &mut nonce_hex);
        let mut text = String::with_capacity(200);
        // Writing to a String cannot fail.
        let _ = write!(text, "{SINGLE_USE_TOKEN_VERSION}.{}.{}.", self.kid, tenant);
        text.extend(nonce_hex.iter().map(|&b| char::from(b)));
        let _ = write!(text, ".{now_micros}.{expires}");
        self.append_mac(&mut text);
        ContextToken {
            text,
            tenant,
            backend_pid: 0,
            transaction_start: None,
            nonce: Some(nonce),
            issued_micros: now_micros,
            expires_micros: expires,
        }
    }

    /// Checks a token's signature and expiry as the database does, for tests and tools.
    pub fn verify(&self, token: &str, now_micros: i64) -> Result<ContextToken, TokenError> {
        let parsed = ContextToken::parse_unverified(token)?;
        let (body, mac_hex) = token
            .rsplit_once('.')
            .ok_or(TokenError::Malformed("no signature"))?;
        let kid = body.split('.').nth(1).unwrap_or_default();
        if kid != self.kid.as_str() {
            return Err(TokenError::UnknownKey(kid.to_owned()));
        }
        let given =
            hex::decode(mac_hex).map_err(|_| TokenError::Malformed("signature is not hex"))?;
        let expected = self.mac(body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_slice(),
            given.as_slice(),
        )) {
            return Err(TokenError::BadSignature);
        }
        if now_micros > parsed.expires_micros {
            return Err(TokenError::Expired);
        }
        Ok(parsed)
    }
}

impl fmt::Debug for ContextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextKey")
            .field("kid", &self.kid)
            .field("material", &"<redacted>")
            .finish()
    }
}

/// A signed context token, as text plus its parsed fields.
#[derive(Clone, PartialEq, Eq)]
pub struct ContextToken {
    text: String,
    tenant: TenantId,
    backend_pid: i32,
    /// The start of the transaction a `v2` token is bound to.
    transaction_start: Option<i64>,
    /// The nonce of a single-use `v3` token.
    nonce: Option<[u8; 16]>,
    issued_micros: i64,
    expires_micros: i64,
}

impl ContextToken {
    /// The token text (`[a-z0-9.-]` only). A bearer credential for one transaction on one
    /// backend: send it as a bound parameter, never inside SQL text, which other sessions
    /// of the same role can read in `pg_stat_activity` and statement logs keep.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The tenant the token names.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The backend process the token is bound to.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The start of the transaction a `v2` token is bound to (microseconds since
    /// 2000-01-01), if it is one.
    pub fn transaction_start(&self) -> Option<i64> {
        self.transaction_start
    }

    /// The nonce of a single-use `v3` token (bound to no backend), if it is one.
    pub fn nonce(&self) -> Option<[u8; 16]> {
        self.nonce
    }

    /// When the token stops being accepted (microseconds since the Unix epoch).
    pub fn expires_micros(&self) -> i64 {
        self.expires_micros
    }

    /// When the token was issued (microseconds since the Unix epoch).
    pub fn issued_micros(&self) -> i64 {
        self.issued_micros
    }

    /// Parses the fields without checking the signature.
    pub fn parse_unverified(token: &str) -> Result<Self, TokenError> {
        if !token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        {
            return Err(TokenError::Malformed("unexpected character"));
        }
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 7 {
            return Err(TokenError::Malformed("expected 7 dot-separated fields"));
        }
        let (per_transaction, single_use) = match parts[0] {
            TOKEN_VERSION => (false, false),
            TRANSACTION_TOKEN_VERSION => (true, false),
            SINGLE_USE_TOKEN_VERSION => (false, true),
            _ => return Err(TokenError::Malformed("unknown version")),
        };
        parts[1].parse::<KeyId>()?;
        let tenant = parts[2]
            .parse::<TenantId>()
            .map_err(|_| TokenError::Malformed("tenant is not a UUID"))?;
        let mut nonce = None;
        let (backend_pid, transaction_start) = if single_use {
            let mut bytes = [0u8; 16];
            if parts[3].len() != 32
                || parts[3].bytes().any(|b| b.is_ascii_uppercase())
                || hex::decode_to_slice(parts[3], &mut bytes).is_err()
            {
                return Err(TokenError::Malformed(
                    "nonce must be 32 lowercase hex digits",
                ));
            }
            nonce = Some(bytes);
            (0, None)
        } else if per_transaction {
            let (pid, start) = parts[3]
                .split_once('-')
                .ok_or(TokenError::Malformed("expected <pid>-<transaction start>"))?;
            let pid = pid
                .parse::<i32>()
                .map_err(|_| TokenError::Malformed("pid is not a number"))?;
            if start.len() != 16 {
                return Err(TokenError::Malformed(
                    "transaction start must be 16 hex digits",
                ));
            }
            let start = u64::from_str_radix(start, 16)
                .map_err(|_| TokenError::Malformed("transaction start is not hex"))?;
            (pid, Some(start as i64))
        } else {
            let pid = parts[3]
                .parse::<i32>()
                .map_err(|_| TokenError::Malformed("pid is not a number"))?;
            (pid, None)
        };
        let issued_micros = parts[4]
            .parse::<i64>()
            .map_err(|_| TokenError::Malformed("issued-at is not a number"))?;
        let expires_micros = parts[5]
            .parse::<i64>()
            .map_err(|_| TokenError::Malformed("expiry is not a number"))?;
        if parts[6].len() != 64 {
            return Err(TokenError::Malformed("signature must be 64 hex digits"));
        }
        Ok(ContextToken {
            text: token.to_owned(),
            tenant,
            backend_pid,
            transaction_start,
            nonce,
            issued_micros,
            expires_micros,
        })
    }
}

impl fmt::Debug for ContextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a bearer credential for one transaction; print only what it names.
        f.debug_struct("ContextToken")
            .field("tenant", &self.tenant)
            .field("backend_pid", &self.backend_pid)
            .field("transaction_start", &self.transaction_start)
            .field("expires_micros", &self.expires_micros)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ContextKey {
        ContextKey::from_bytes("k1".parse().expect("kid"), [7u8; 32])
    }

    #[test]
    fn sign_and_verify_roundtrip() {
        let t = TenantId::new_random();
        let tok = key().sign(t, 4242, 1_000_000, 30_000_000);
        let back = key().verify(tok.as_str(), 2_000_000).expect("verifies");
        assert_eq!(back.tenant(), t);
        assert_eq!(back.backend_pid(), 4242);
        assert!(tok.as_str().starts_with("v1.k1."));
    }

    #[test]
    fn tampering_and_expiry_are_refused() {
        let t = TenantId::new_random();
        let other = TenantId::new_random();
        let tok = key().sign(t, 1, 0, 10);
        let forged = tok.as_str().replace(&t.to_string(), &other.to_string());
        assert_eq!(key().verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(key().verify(tok.as_str(), 11), Err(TokenError::Expired));
        let other_key = ContextKey::from_bytes("k1".parse().expect("kid"), [8u8; 32]);
        assert_eq!(
            other_key.verify(tok.as_str(), 0),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            key().verify("v1.k1.x", 0),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            key().verify("v1.k1.'; drop table x; --", 0),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn transaction_tokens_bind_pid_and_transaction_start() {
        let t = TenantId::new_random();
        let start = 817_000_000_123_456_i64;
        let tok = key().sign_for_transaction(t, 4242, start, 1_000_000, 30_000_000);
        assert!(tok.as_str().starts_with("v2.k1."));
        assert!(
            tok.as_str().contains(&format!(".4242-{:016x}.", start)),
            "{}",
            tok.as_str()
        );
        assert!(
            tok.as_str().len() <= 200,
            "the servers refuse longer tokens"
        );
        let back = key().verify(tok.as_str(), 2_000_000).expect("verifies");
        assert_eq!(back.transaction_start(), Some(start));
        assert_eq!((back.tenant(), back.backend_pid()), (t, 4242));
        let later = tok
            .as_str()
            .replace(&format!("{:016x}", start), &format!("{:016x}", start + 1));
        assert_eq!(key().verify(&later, 0), Err(TokenError::BadSignature));
        let short = tok
            .as_str()
            .replace(&format!("-{:016x}", start), &format!("-{:x}", start));
        assert!(matches!(
            key().verify(&short, 0),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn single_use_tokens_carry_a_signed_nonce() {
        let t = TenantId::new_random();
        let nonce = [0xabu8; 16];
        let tok = key().sign_single_use(t, nonce, 1_000_000, 30_000_000);
        assert!(tok.as_str().starts_with("v3.k1."), "{}", tok.as_str());
        assert!(tok.as_str().contains(&format!(".{}.", "ab".repeat(16))));
        assert!(
            tok.as_str().len() <= 200,
            "the servers refuse longer tokens"
        );
        let back = key().verify(tok.as_str(), 2_000_000).expect("verifies");
        assert_eq!(back.nonce(), Some(nonce));
        assert_eq!(back.tenant(), t);
        assert_eq!(back.transaction_start(), None);
        let other = tok.as_str().replace(&"ab".repeat(16), &"ac".repeat(16));
        assert_eq!(key().verify(&other, 0), Err(TokenError::BadSignature));
        let short = tok.as_str().replace(&"ab".repeat(16), &"ab".repeat(15));
        assert!(matches!(
            key().verify(&short, 0),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            key().verify(tok.as_str(), 31_000_001),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn key_parsing() {
        assert!("K1".parse::<KeyId>().is_err());
        assert!("".parse::<KeyId>().is_err());
        assert!(ContextKey::from_hex("k1".parse().expect("kid"), "abc").is_err());
        let k = ContextKey::from_hex("k1".parse().expect("kid"), &"ab".repeat(32)).expect("key");
        assert!(!format!("{k:?}").contains("ab"));
    }
}
