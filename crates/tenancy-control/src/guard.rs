//! The guard every request passes before its handler: who the client is, the rate limits
//! of the routes that need no admin token, the body read under a deadline and a size
//! limit, and the refusal of text no handler may store.
//!
//! The client address is the socket's peer (put in the request's extensions by
//! [`crate::server::serve`] as `ConnectInfo`), or, on a connection from a configured
//! trusted proxy, the rightmost address of the configured header that is not itself a
//! trusted proxy. IPv6 clients are counted per /64, the smallest block a host is given.
//! Without a peer address (a router called without a socket) only the global buckets
//! apply.
//!
//! The NUL character (U+0000) cannot be stored in PostgreSQL text or `jsonb`, and no
//! field of this API has a use for it, so a request carrying one anywhere (a JSON string
//! or key, a path segment, a query value) is refused here, naming the field, before any
//! handler runs: this covers every route, including other crates' merged routes, and
//! every field added later.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::HeaderName;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::{LimitsConfig, RateConfig};
use crate::error::{ApiError, ProblemCode};
use crate::BODY_LIMIT;

/// The client's address as rate limits and signup quotas count it: IPv4 as is, IPv6 as
/// its /64 network; `None` when the request came without a peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// How the address is written in the catalog (`203.0.113.7`, `2001:db8:1:2::/64`).
    pub fn label(&self) -> Option<String> {
        self.0.map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("{v6}/64"),
        })
    }
}

/// The counting key of an address: IPv4-mapped IPv6 as IPv4, IPv6 cut to its /64.
fn counting_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// An address or a network (`10.0.0.7`, `10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("trusted proxy {s:?} is not an address or a network (10.0.0.0/8)");
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

impl Network {
    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Refills for the time since the last use, then takes a token if there is one; else
    /// says how long until there is.
    fn take(&mut self, now: Instant, per_minute: u32, burst: u32) -> Result<(), Duration> {
        let per_sec = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }

    /// Whether the bucket would be full by now (then it is no different from a new one).
    fn refilled(&self, now: Instant, per_minute: u32, burst: u32) -> bool {
        let per_sec = f64::from(per_minute) / 60.0;
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec
            >= f64::from(burst)
    }
}

/// The rate limit of one class of routes: a bucket per client address (at most
/// `max_ips` of them) and one for everyone.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    cfg: RateConfig,
    max_ips: usize,
    global: Mutex<Bucket>,
    per_ip: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(cfg: RateConfig, max_ips: usize) -> Self {
        let now = Instant::now();
        RateLimiter {
            cfg,
            max_ips: max_ips.max(1),
            global: Mutex::new(Bucket::full(cfg.global_burst, now)),
            per_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from the client's bucket and from the global one, or says how long
    /// to wait. A request refused by the global bucket does not spend the client's token.
    pub(crate) fn check(&self, ip: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let RateConfig {
            per_ip_per_minute,
            per_ip_burst,
            global_per_minute,
            global_burst,
        } = self.cfg;
        let per_ip = per_ip_per_minute > 0;
        if let (true, Some(ip)) = (per_ip, ip) {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if !map.contains_key(&ip) && map.len() >= self.max_ips {
                // Full buckets carry no information: drop them first; if every bucket is
                // in use, drop the least recently used one.
                map.retain(|_, b| !b.refilled(now, per_ip_per_minute, per_ip_burst));
                if map.len() >= self.max_ips {
                    if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                        map.remove(&oldest);
                    }
                }
            }
            map.entry(ip)
                .or_insert_with(|| Bucket::full(per_ip_burst, now))
                .take(now, per_ip_per_minute, per_ip_burst)?;
        }
        if global_per_minute > 0 {
            let taken = self.global.lock().unwrap_or_else(|p| p.into_inner()).take(
                now,
                global_per_minute,
                global_burst,
            );
            if let Err(wait) = taken {
                if let (true, Some(ip)) = (per_ip, ip) {
                    let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(b) = map.get_mut(&ip) {
                        b.tokens = (b.tokens + 1.0).min(f64::from(per_ip_burst));
                    }
                }
                return Err(wait);
            }
        }
        Ok(())
    }

    /// Client addresses currently tracked (tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_ip.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// The guard's configuration and state, shared by every request.
#[derive(Debug)]
pub(crate) struct Guard {
    body_timeout: Option<Duration>,
    client_ip_header: Option<HeaderName>,
    trusted: Vec<Network>,
    signup: RateLimiter,
    availability: RateLimiter,
    public: RateLimiter,
}

impl Guard {
    pub(crate) fn new(cfg: &LimitsConfig) -> Result<Self, String> {
        cfg.validate()?;
        let header = match &cfg.client_ip_header {
            Some(h) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("limits.client_ip_header {h:?} is not a header name"))?,
            ),
            None => None,
        };
        Ok(Guard::from_parts(cfg, header, cfg.trusted_networks()?))
    }

    /// The guard of `cfg` with its proxy settings already parsed.
    pub(crate) fn from_parts(
        cfg: &LimitsConfig,
        client_ip_header: Option<HeaderName>,
        trusted: Vec<Network>,
    ) -> Self {
        Guard {
            body_timeout: millis(cfg.body_timeout_ms),
            client_ip_header,
            trusted,
            signup: RateLimiter::new(cfg.signup, cfg.max_tracked_ips),
            availability: RateLimiter::new(cfg.availability, cfg.max_tracked_ips),
            public: RateLimiter::new(cfg.public, cfg.max_tracked_ips),
        }
    }

    /// The rate limit of a route, when it needs no admin token.
    fn limiter_for(&self, route: &str) -> Option<&RateLimiter> {
        match route {
            "/v1/signup" => Some(&self.signup),
            "/v1/signup/availability" => Some(&self.availability),
            "/healthz" | "/openapi.json" | "/v1/billing/stripe" | "/console/sign-in" => {
                Some(&self.public)
            }
            _ => None,
        }
    }

    /// The client's counting address (see the module documentation).
    fn client_ip(&self, parts: &Parts) -> ClientIp {
        let Some(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
        else {
            return ClientIp(None);
        };
        let trusted = |ip: IpAddr| self.trusted.iter().any(|n| n.contains(ip));
        if let Some(name) = &self.client_ip_header {
            if trusted(peer) {
                // Proxies append the address they saw, so the rightmost entries are the
                // trusted ones; everything left of the first untrusted address is what
                // the client claimed.
                let values: Vec<&str> = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .collect();
                for v in values.iter().rev() {
                    match v.trim().parse::<IpAddr>() {
                        Ok(ip) if trusted(ip) => continue,
                        Ok(ip) => return ClientIp(Some(counting_key(ip))),
                        Err(_) => break,
                    }
                }
            }
        }
        ClientIp(Some(counting_key(peer)))
    }
}

/// A timeout in milliseconds, 0 meaning none.
pub(crate) fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

const NUL_MESSAGE: &str = "must not contain the NUL character (U+0000)";

/// The guard as an axum middleware (see the module documentation).
pub(crate) async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let ip = g.client_ip(&parts);
    parts.extensions.insert(ip);
    // Before the body is read: a refused request costs no more than its headers.
    let limiter = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|m| g.limiter_for(m.as_str()));
    if let Some(limiter) = limiter {
        if let Err(wait) = limiter.check(ip.0, Instant::now()) {
            return ApiError::rate_limited(wait).into_response();
        }
    }
    if let Some(field) = nul_in_uri(&mut parts).await {
        return ApiError::field(&field, NUL_MESSAGE).into_response();
    }
    let bytes = match read_body(body, g.body_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(field) = nul_in_json(&bytes) {
        return ApiError::field(&field, NUL_MESSAGE).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Reads the whole body within the deadline and the size limit.
async fn read_body(body: Body, deadline: Option<Duration>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ProblemCode::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        )
    };
    let read = Limited::new(body, BODY_LIMIT).collect();
    let collected = match deadline {
        Some(d) => tokio::time::timeout(d, read).await.map_err(|_| {
            ApiError::new(
                ProblemCode::RequestTimeout,
                format!(
                    "the request body was not received within {} ms",
                    d.as_millis()
                ),
            )
        })?,
        None => read.await,
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            ProblemCode::BadRequest,
            format!("could not read the body: {e}"),
        )),
    }
}

/// The path parameter or query parameter whose value holds a NUL, if one does. A NUL can
/// only reach a URI percent-encoded (`%00`): raw control bytes are refused by the HTTP
/// parser.
async fn nul_in_uri(parts: &mut Parts) -> Option<String> {
    if parts.uri.path().contains("%00") {
        use axum::extract::FromRequestParts;
        let named = RawPathParams::from_request_parts(parts, &())
            .await
            .ok()
            .and_then(|ps| {
                ps.iter()
                    .find(|(_, v)| v.contains('\0'))
                    .map(|(k, _)| k.to_owned())
            });
        return Some(named.unwrap_or_else(|| "path".to_owned()));
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.contains("%00") {
            Some("query".to_owned())
        } else if value.contains("%00") {
            Some(name.to_owned())
        } else {
            None
        }
    })
}

/// The field (`display_name`, `variants/on`, `tags/0`) of the first string or key
/// holding a NUL in a JSON body; `None` for a body that is not JSON (its handler says
/// so).
fn nul_in_json(bytes: &[u8]) -> Option<String> {
    // Cheap test first: a NUL in JSON text is either a raw byte (invalid JSON, refused by
    // the handler) or the escape `\u0000`.
    if bytes.is_empty() || !contains_nul_escape(bytes) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut path = Vec::new();
    find_nul(&value, &mut path).then(|| {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.join("/")
        }
    })
}

fn contains_nul_escape(bytes: &[u8]) -> bool {
    bytes
        .windows(6)
        .any(|w| w[0] == b'\\' && (w[1] == b'u' || w[1] == b'U') && &w[2..] == b"0000")
}

fn find_nul(v: &serde_json::Value, path: &mut Vec<String>) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().enumerate().any(|(i, v)| {
            path.push(i.to_string());
            let found = find_nul(v, path);
            if !found {
                path.pop();
            }
            found
        }),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
            path.push(k.replace('\0', "\\u0000"));
            let found = k.contains('\0') || find_nul(v, path);
            if !found {
                path.pop();
            }
            found
        }),
        _ => false,
    }
}

/// The `Retry-After` value of a wait: whole seconds, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_ip: u32, burst: u32, global: u32, gburst: u32) -> RateConfig {
        RateConfig {
            per_ip_per_minute: per_ip,
            per_ip_burst: burst,
            global_per_minute: global,
            global_burst: gburst,
        }
    }

    #[test]
    fn per_ip_bucket_refuses_past_the_burst_and_refills() {
        let l = RateLimiter::new(rate(60, 2, 0, 0), 10);
        let a = Some("192.0.2.1".parse().expect("ip"));
        let b = Some("192.0.2.2".parse().expect("ip"));
        let t = Instant::now();
        assert!(l.check(a, t).is_ok() && l.check(a, t).is_ok());
        let wait = l.check(a, t).expect_err("third is refused");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(l.check(b, t).is_ok(), "another address has its own bucket");
        assert!(l.check(a, t + Duration::from_secs(1)).is_ok(), "refilled");
    }

    #[test]
    fn global_bucket_refuses_everyone_and_spends_no_client_token() {
        let l = RateLimiter::new(rate(60, 5, 60, 1), 10);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let t = Instant::now();
        assert!(l.check(Some(a), t).is_ok());
        assert!(l.check(Some(b), t).is_err());
        assert!(l.check(None, t).is_err());
        let map = l.per_ip.lock().expect("lock");
        assert_eq!(map[&b].tokens, 5.0);
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let l = RateLimiter::new(rate(1, 1, 0, 0), 100);
        let t = Instant::now();
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.check(Some(ip), t + Duration::from_millis(u64::from(i)));
        }
        assert!(l.tracked() <= 100, "{}", l.tracked());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(counting_key(a), counting_key(b));
        let m: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(counting_key(m), "192.0.2.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            ClientIp(Some(counting_key(a))).label().as_deref(),
            Some("2001:db8:1:2::/64")
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let n: Network = "10.0.0.0/8".parse().expect("net");
        assert!(n.contains("10.1.2.3".parse().expect("ip")));
        assert!(!n.contains("11.0.0.1".parse().expect("ip")));
        let one: Network = "192.0.2.7".parse().expect("one");
        assert!(one.contains("::ffff:192.0.2.7".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Network>().is_err());
        assert!("proxy".parse::<Network>().is_err());
    }

    #[test]
    fn nul_is_found_and_named_in_json() {
        assert_eq!(
            nul_in_json(br#"{"display_name":"a\u0000b"}"#).as_deref(),
            Some("display_name")
        );
        assert_eq!(
            nul_in_json(br#"{"variants":{"on":"x\u0000"}}"#).as_deref(),
            Some("variants/on")
        );
        assert_eq!(
            nul_in_json(br#"{"tags":["ok","\u0000"]}"#).as_deref(),
            Some("tags/1")
        );
        assert!(nul_in_json(br#"{"k\u0000":1}"#).is_some());
        assert_eq!(
            nul_in_json(br#"{"a":"\\u0000"}"#),
            None,
            "an escaped backslash"
        );
        assert_eq!(nul_in_json(br#"{"a":"b"}"#), None);
    }
}
