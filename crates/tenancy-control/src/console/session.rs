//! Console sessions: the admin token is exchanged once for a random session id kept in
//! an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the request came over TLS).
//! Sessions live in this process's memory, keyed by the SHA-256 of their id, with an
//! idle and an absolute expiry; signing out removes the session, so its cookie no longer
//! works. Each session has its own CSRF token, which every form carries and every POST
//! must send back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub(crate) const SESSION_COOKIE: &str = "tenancy_console";
/// Name of the cookie that carries the sign-in form's CSRF token (before any session).
pub(crate) const SIGN_IN_COOKIE: &str = "tenancy_console_sign_in";
/// A session unused for this long is gone.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session older than this is gone, however much it is used.
const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// At most this many sessions at once (expired ones are dropped first).
const MAX_SESSIONS: usize = 10_000;

/// One signed-in operator.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The admin token's principal (first 8 hex digits of its digest).
    pub(crate) principal: String,
    /// The token every form of this session carries.
    pub(crate) csrf: String,
    /// A one-shot message for the next page (what an action did).
    pub(crate) flash: Option<String>,
    created: Instant,
    last_used: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_used) > IDLE || now.duration_since(self.created) > ABSOLUTE
    }
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

/// 32 random bytes as 64 hex digits.
pub(crate) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Whether two secrets are equal, in constant time.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.by_digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `principal`; returns its id (the cookie value).
    pub(crate) fn create(&self, principal: String) -> String {
        let now = Instant::now();
        let id = random_token();
        let mut map = self.map();
        map.retain(|_, s| !s.expired(now));
        if map.len() >= MAX_SESSIONS {
            // Make room by dropping the least recently used one.
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&id),
            Session {
                principal,
                csrf: random_token(),
                flash: None,
                created: now,
                last_used: now,
            },
        );
        id
    }

    /// The live session of this id (its idle clock restarted, its flash taken).
    pub(crate) fn touch(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map();
        let key = digest(id);
        let live = map.get(&key).is_some_and(|s| !s.expired(now));
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_used = now;
        let view = s.clone();
        s.flash = None;
        Some(view)
    }

    /// Leaves a one-shot message for the session's next page.
    pub(crate) fn flash(&self, id: &str, message: String) {
        if let Some(s) = self.map().get_mut(&digest(id)) {
            s.flash = Some(message);
        }
    }

    /// Ends a session.
    pub(crate) fn remove(&self, id: &str) {
        self.map().remove(&digest(id));
    }
}

/// The value of cookie `name` in the request, if it has one.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached us over TLS (directly, or through a proxy that says so).
pub(crate) fn over_tls(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let header_says = |name: &str, f: &dyn Fn(&str) -> bool| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| f(&v.to_ascii_lowercase()))
    };
    uri.scheme_str() == Some("https")
        || header_says("x-forwarded-proto", &|v| v.trim() == "https")
        || header_says("forwarded", &|v| v.contains("proto=https"))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, path `/console`, `Secure` over TLS;
/// `max_age` 0 deletes the cookie.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let s = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    // Names and values are hex or fixed ASCII.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Seconds a session cookie is kept by the browser (the server's absolute expiry).
pub(crate) const COOKIE_MAX_AGE: u64 = ABSOLUTE.as_secs();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_works_until_removed_and_its_flash_is_shown_once() {
        let s = Sessions::default();
        let id = s.create("abcd1234".into());
        let got = s.touch(&id).expect("live");
        assert_eq!(got.principal, "abcd1234");
        assert_eq!(got.csrf.len(), 64);
        assert!(s.touch("not-a-session").is_none());
        s.flash(&id, "done".into());
        assert_eq!(s.touch(&id).and_then(|x| x.flash).as_deref(), Some("done"));
        assert_eq!(s.touch(&id).and_then(|x| x.flash), None);
        s.remove(&id);
        assert!(s.touch(&id).is_none());
    }

    #[test]
    fn an_idle_session_expires() {
        let s = Sessions::default();
        let id = s.create("p".into());
        if let Some(x) = s.map().get_mut(&digest(&id)) {
            x.last_used = Instant::now() - IDLE - Duration::from_secs(1);
        }
        assert!(s.touch(&id).is_none());
        assert!(s.map().is_empty());
    }

    #[test]
    fn cookies_are_parsed_and_set_with_their_attributes() {
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("a=1; tenancy_console=xyz"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        let v = set_cookie(SESSION_COOKIE, "xyz", true, 10);
        let v = v.to_str().expect("ascii");
        assert!(v.contains("HttpOnly") && v.contains("SameSite=Strict") && v.contains("Secure"));
        let plain = set_cookie(SESSION_COOKIE, "xyz", false, 10);
        assert!(!plain.to_str().expect("ascii").contains("Secure"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_tls(&h, &"/console".parse().expect("uri")));
        assert!(!over_tls(
            &HeaderMap::new(),
            &"/console".parse().expect("uri")
        ));
    }
}
