//! The public surface as an attacker meets it: real sockets to the router `tenancy
//! serve` runs, served by the same `server::serve`, on a real cluster. NUL bytes in every
//! text field, clients that send slowly, floods of public requests from one address or
//! many, and signup used to pile up tenants.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tenancy_control::server::{serve, ServeOptions};
use tenancy_control::{router, LimitsConfig, RateConfig, SignupConfig};
use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::api::fresh_state_with;

/// A control plane on a socket, stopped when dropped.
pub(crate) struct Served {
    pub(crate) db: TestDb,
    pub(crate) port: u16,
    stop: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves `tenancy serve`'s router (with the configuration service) with these limits
/// and signup settings.
pub(crate) async fn served(limits: LimitsConfig, signup: SignupConfig) -> Served {
    let (db, state, _p) = fresh_state_with(signup).await;
    let state = crate::config_routes::with_config(&db, state)
        .await
        .with_limits(&limits)
        .expect("limits");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, mut rx) = watch::channel(false);
    let app = router(state);
    tokio::spawn(async move {
        serve(
            listener,
            app,
            ServeOptions::from_limits(&limits),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        )
        .await
    });
    Served { db, port, stop }
}

/// Limits with every rate far away (a test turns on the one it looks at).
pub(crate) fn generous() -> LimitsConfig {
    let far = RateConfig {
        per_ip_per_minute: 60_000,
        per_ip_burst: 10_000,
        global_per_minute: 60_000,
        global_burst: 10_000,
    };
    LimitsConfig {
        signup: far,
        availability: far,
        public: far,
        ..LimitsConfig::default()
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Value,
    /// The body as received (de-chunked), for answers that are not JSON.
    pub(crate) raw: Vec<u8>,
}

/// One HTTP/1.1 request over a fresh connection from source address `from` (any
/// 127.0.0.0/8 address is this host).
pub(crate) async fn http(
    port: u16,
    from: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut stream = connect_from(port, from).await;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    parse_response(&raw)
}

async fn connect_from(port: u16, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    let ip: IpAddr = from.parse().expect("source address");
    socket.bind(SocketAddr::new(ip, 0)).expect("bind source");
    socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let len = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .expect("chunk size");
            if len == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + len]);
            rest = &rest[eol + 2 + len + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body,
    }
}

const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token");
const JSON: (&str, &str) = ("content-type", "application/json");

/// Rows of every table outside the system schemas.
async fn all_rows(db: &TestDb) -> BTreeMap<String, i64> {
    let c = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let tables = c
        .query(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
              WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .await
        .expect("tables");
    let mut out = BTreeMap::new();
    for t in tables {
        let name: String = t.get(0);
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .expect("count")
            .get(0);
        out.insert(name, n);
    }
    out
}

async fn tenant_count(db: &TestDb) -> i64 {
    let c = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    c.query_one("SELECT count(*) FROM tenancy_catalog.tenants", &[])
        .await
        .expect("count")
        .get(0)
}

fn stripe_signed(payload: &str) -> String {
    let t = tenancy_provision::webhook::unix_now();
    format!(
        "t={t},v1={}",
        tenancy_control::stripe::sign("whsec_test_stripe", t, payload.as_bytes())
    )
}

/// Method, path, extra headers, body, and the field the problem must name.
type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, String, &'a str);

#[tokio::test]
async fn nul_byte_in_any_text_field_is_refused_naming_the_field_and_nothing_is_stored() {
    let s = served(generous(), SignupConfig::default()).await;
    // An existing tenant (no workflow: nothing runs in the background) for the routes
    // that act on one.
    let mut owner = tenancy_pg::connect(&s.db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let t = tenancy_catalog::create_tenant(
        &mut owner,
        &tenancy_catalog::NewTenant {
            id: None,
            slug: "acme".parse().expect("slug"),
            display_name: "Acme".into(),
            plan: "free".parse().expect("plan"),
            region: "eu-west".parse().expect("region"),
            placement: tenancy_core::Placement::Pooled,
        },
        "test",
    )
    .await
    .expect("tenant");
    let id = t.id.to_string();
    let checkout =
        json!({"id": "evt_nul", "type": "checkout.session.completed", "data": {"object": {
        "customer": "cus_nul", "metadata": {"slug": "initech", "display_name": "Ini\u{0}tech"}}}})
        .to_string();
    let stripe_sig = stripe_signed(&checkout);
    let tenant = |p: &str| format!("/v1/tenants/{id}/{p}");
    let config = |p: &str| format!("/v1/config/tenants/{id}/{p}");
    // (method, path, extra headers, body, the field the problem must name)
    let cases: Vec<Case> = vec![
        ("POST", "/v1/regions".into(), vec![AUTH], r#"{"id":"ap-south","display_name":"Asia\u0000"}"#.into(), "display_name"),
        ("POST", "/v1/clusters".into(), vec![AUTH], r#"{"name":"pg\u0000","region":"eu-west","host":"db","port":5432,"dbname":"d","capacity":5}"#.into(), "name"),
        ("POST", "/v1/clusters".into(), vec![AUTH], r#"{"name":"pg2","region":"eu-west","host":"db\u0000","port":5432,"dbname":"d","capacity":5}"#.into(), "host"),
        ("POST", "/v1/clusters".into(), vec![AUTH], r#"{"name":"pg3","region":"eu-west","host":"db","port":5432,"dbname":"d\u0000","capacity":5}"#.into(), "dbname"),
        ("POST", "/v1/tenants".into(), vec![AUTH], r#"{"slug":"globex","display_name":"Glo\u0000bex","plan":"free","region":"eu-west","placement":"pooled"}"#.into(), "display_name"),
        ("POST", "/v1/tenants".into(), vec![AUTH], r#"{"slug":"glo\u0000bex","display_name":"Globex","plan":"free","region":"eu-west","placement":"pooled"}"#.into(), "slug"),
        ("POST", "/v1/tenants".into(), vec![AUTH], r#"{"slug":"globex","display_name":"Globex","plan":"fr\u0000ee","region":"eu-west","placement":"pooled"}"#.into(), "plan"),
        ("POST", "/v1/signup".into(), vec![], r#"{"slug":"hooli","display_name":"Hoo\u0000li"}"#.into(), "display_name"),
        ("POST", "/v1/signup".into(), vec![], r#"{"slug":"hooli","display_name":"Hooli","region":"eu-west\u0000"}"#.into(), "region"),
        ("POST", tenant("suspend"), vec![AUTH], r#"{"reason":"audit\u0000"}"#.into(), "reason"),
        ("POST", tenant("delete"), vec![AUTH], r#"{"reason":"bye\u0000"}"#.into(), "reason"),
        ("POST", tenant("resume"), vec![AUTH], r#"{"reason":"back\u0000"}"#.into(), "reason"),
        ("POST", tenant("plan"), vec![AUTH], r#"{"plan":"pro\u0000"}"#.into(), "plan"),
        ("POST", "/v1/billing/stripe".into(), vec![("stripe-signature", &stripe_sig)], checkout.clone(), "data/object/metadata/display_name"),
        ("PUT", "/v1/config/plans/pro".into(), vec![AUTH], r#"{"display_name":"Pro\u0000","entitlements":{},"settings":{},"flags":{}}"#.into(), "display_name"),
        ("PUT", "/v1/config/entitlements/seats".into(), vec![AUTH], r#"{"kind":"limit","default":5,"description":"seats\u0000"}"#.into(), "description"),
        ("PUT", "/v1/config/flags/beta".into(), vec![AUTH], r#"{"kind":"multivariate","variants":{"on":"x\u0000","off":"y"},"default_variant":"on","off_variant":"off"}"#.into(), "variants/on"),
        ("PUT", "/v1/config/settings/theme".into(), vec![AUTH], r#"{"schema":{"type":"string"},"default":"dark\u0000","description":"t"}"#.into(), "default"),
        ("PUT", "/v1/config/regions/eu-west".into(), vec![AUTH], r#"{"settings":{"theme":"hi\u0000"}}"#.into(), "settings/theme"),
        ("PUT", config("attributes"), vec![AUTH], r#"{"tags":["vip","x\u0000"],"custom":{}}"#.into(), "tags/1"),
        ("PUT", config("attributes"), vec![AUTH], r#"{"tags":[],"custom":{"ref\u0000":"1"}}"#.into(), "custom/ref\\u0000"),
        ("PUT", config("overrides/entitlement/seats"), vec![AUTH], r#"{"value":9,"reason":"deal\u0000"}"#.into(), "reason"),
        ("PUT", config("branding"), vec![AUTH], r##"{"display_name":"Acme","primary_color":"#112233","accent_color":"#445566","logo_url":"https://x.test/l\u0000.png","email_from_name":"A","email_from_address":"a@x.test"}"##.into(), "logo_url"),
        ("PUT", config("settings/theme"), vec![AUTH], r#"{"value":"li\u0000ght"}"#.into(), "value"),
        ("PUT", config("domains/shop%00.example.com"), vec![AUTH], String::new(), "hostname"),
        ("PUT", "/v1/config/flags/be%00ta".into(), vec![AUTH], r#"{"kind":"boolean","variants":{"on":true,"off":false},"default_variant":"on","off_variant":"off"}"#.into(), "key"),
        ("GET", "/v1/signup/availability?slug=ab%00c".into(), vec![], String::new(), "slug"),
        ("GET", "/v1/tenants?after=a%00".into(), vec![AUTH], String::new(), "after"),
        ("GET", "/v1/config/changes?flag=x%00".into(), vec![AUTH], String::new(), "flag"),
    ];
    // What the configuration cases refer to exists, so that only the NUL is wrong.
    for (path, body) in [
        (
            "/v1/config/entitlements/seats",
            r#"{"kind":"limit","default":5,"description":"seats"}"#,
        ),
        (
            "/v1/config/settings/theme",
            r#"{"schema":{"type":"string"},"default":"dark","description":"t"}"#,
        ),
    ] {
        let r = http(s.port, "127.0.0.1", "PUT", path, &[AUTH, JSON], Some(body)).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let before = all_rows(&s.db).await;
    let mut failures = Vec::new();
    for (i, (method, path, extra, body, field)) in cases.iter().enumerate() {
        let key = format!("nul-{i}");
        let mut headers = vec![JSON, ("idempotency-key", key.as_str())];
        headers.extend(extra.iter().copied());
        let r = http(s.port, "127.0.0.1", method, path, &headers, Some(body)).await;
        let named = r.body["errors"][0]["field"].as_str().unwrap_or("");
        let ct = r.headers.get("content-type").map(String::as_str);
        if !(400..500).contains(&r.status)
            || named != *field
            || ct != Some("application/problem+json")
        {
            failures.push(format!(
                "{method} {path}: {} {ct:?} naming {named:?} (want {field:?}): {}",
                r.status, r.body
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(all_rows(&s.db).await, before, "nothing was stored");
    // The same requests without the NUL are accepted: the refusal is the NUL's.
    let r = http(
        s.port,
        "127.0.0.1",
        "POST",
        "/v1/regions",
        &[AUTH, JSON, ("idempotency-key", "clean-1")],
        Some(r#"{"id":"ap-south","display_name":"Asia"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn a_client_sending_headers_slower_than_the_deadline_is_disconnected() {
    let limits = LimitsConfig {
        header_read_timeout_ms: 600,
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    // A prompt client is served.
    let r = http(s.port, "127.0.0.1", "GET", "/healthz", &[], None).await;
    assert_eq!(r.status, 200);
    // A slow one: a byte every 100 ms, forever unless the server hangs up.
    let mut stream = connect_from(s.port, "127.0.0.1").await;
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(10) {
            panic!("the slow client is still connected after 10 s");
        }
        if stream.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => {
                // Whatever the server says, it must then hang up.
            }
            Err(_) => {}
        }
    };
    assert!(
        closed_after >= Duration::from_millis(500),
        "closed before the deadline: {closed_after:?}"
    );
    // An idle kept-alive connection is closed by the same deadline.
    let mut idle = connect_from(s.port, "127.0.0.1").await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "an idle connection stays open");
}

#[tokio::test]
async fn a_client_sending_its_body_slower_than_the_deadline_gets_408() {
    let limits = LimitsConfig {
        body_timeout_ms: 500,
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    let mut stream = connect_from(s.port, "127.0.0.1").await;
    stream
        .write_all(
            b"POST /v1/signup HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nidempotency-key: slow\r\ncontent-length: 200\r\n\r\n{\"slug\":",
        )
        .await
        .expect("write");
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no answer to a body that never ends"
        );
        let _ = stream.write_all(b" ").await;
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.ends_with(b"}") {
                    break;
                }
            }
            Err(_) => {}
        }
    }
    let r = parse_response(&raw);
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (408, Some("request-timeout")),
        "{}",
        r.body
    );
    assert_eq!(tenant_count(&s.db).await, 0);
}

fn assert_limited(r: &Resp, code: &str, status: u16) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["code"], code, "{}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/problem+json")
    );
    let secs: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After in {:?}", r.headers));
    assert!(secs >= 1, "{secs}");
}

#[tokio::test]
async fn the_n_plus_first_public_request_from_one_address_gets_429_while_another_address_succeeds()
{
    let per_ip = |burst| RateConfig {
        per_ip_per_minute: 1,
        per_ip_burst: burst,
        global_per_minute: 60_000,
        global_burst: 10_000,
    };
    let limits = LimitsConfig {
        availability: per_ip(3),
        signup: per_ip(2),
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    let avail = "/v1/signup/availability?slug=umbrella";
    for _ in 0..3 {
        let r = http(s.port, "127.0.0.1", "GET", avail, &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = http(s.port, "127.0.0.1", "GET", avail, &[], None).await;
    assert_limited(&r, "too-many-requests", 429);
    assert!(r.headers["retry-after"].parse::<u64>().expect("secs") <= 60);
    let r = http(s.port, "127.0.0.2", "GET", avail, &[], None).await;
    assert_eq!(
        r.status, 200,
        "another address has its own budget: {}",
        r.body
    );

    let signup = |slug: &str| format!(r#"{{"slug":"{slug}","display_name":"X"}}"#);
    for (i, slug) in ["one-co", "two-co"].iter().enumerate() {
        let key = format!("s{i}");
        let r = http(
            s.port,
            "127.0.0.1",
            "POST",
            "/v1/signup",
            &[JSON, ("idempotency-key", &key)],
            Some(&signup(slug)),
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let before = all_rows(&s.db).await;
    let r = http(
        s.port,
        "127.0.0.1",
        "POST",
        "/v1/signup",
        &[JSON, ("idempotency-key", "s2")],
        Some(&signup("three-co")),
    )
    .await;
    assert_limited(&r, "too-many-requests", 429);
    assert_eq!(
        all_rows(&s.db).await,
        before,
        "a refused signup stores nothing"
    );
    let r = http(
        s.port,
        "127.0.0.3",
        "POST",
        "/v1/signup",
        &[JSON, ("idempotency-key", "s3")],
        Some(&signup("three-co")),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
}

#[tokio::test]
async fn the_global_budget_of_a_public_route_holds_against_many_addresses() {
    let limits = LimitsConfig {
        availability: RateConfig {
            per_ip_per_minute: 60_000,
            per_ip_burst: 10_000,
            global_per_minute: 1,
            global_burst: 4,
        },
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    let avail = "/v1/signup/availability?slug=umbrella";
    for i in 1..=4 {
        let r = http(s.port, &format!("127.0.0.{i}"), "GET", avail, &[], None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = http(s.port, "127.0.0.9", "GET", avail, &[], None).await;
    assert_limited(&r, "too-many-requests", 429);
}

#[tokio::test]
async fn a_forwarded_address_is_believed_only_from_a_trusted_proxy() {
    let limits = LimitsConfig {
        client_ip_header: Some("x-forwarded-for".into()),
        trusted_proxies: vec!["127.0.0.1".into()],
        availability: RateConfig {
            per_ip_per_minute: 1,
            per_ip_burst: 1,
            global_per_minute: 60_000,
            global_burst: 10_000,
        },
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    let avail = "/v1/signup/availability?slug=umbrella";
    let get = |from: &'static str, xff: &'static str| {
        let port = s.port;
        async move {
            http(port, from, "GET", avail, &[("x-forwarded-for", xff)], None)
                .await
                .status
        }
    };
    // Through the proxy: one budget per forwarded client.
    assert_eq!(get("127.0.0.1", "198.51.100.1").await, 200);
    assert_eq!(get("127.0.0.1", "198.51.100.1").await, 429);
    assert_eq!(get("127.0.0.1", "198.51.100.2").await, 200);
    // What the client put left of the proxy's entry does not count.
    assert_eq!(get("127.0.0.1", "203.0.113.9, 198.51.100.1").await, 429);
    // Not from the proxy: the header is ignored, the peer address counts.
    assert_eq!(get("127.0.0.5", "198.51.100.3").await, 200);
    assert_eq!(get("127.0.0.5", "198.51.100.4").await, 429);
}

#[tokio::test]
async fn the_signup_quota_refuses_further_signups_with_nothing_stored() {
    let signup = SignupConfig {
        max_signups: 4,
        max_signups_per_ip: 2,
        ..SignupConfig::default()
    };
    let s = served(generous(), signup).await;
    let body = |slug: &str| format!(r#"{{"slug":"{slug}","display_name":"X"}}"#);
    let post = |from: &'static str, slug: &'static str, key: &'static str| {
        let port = s.port;
        let b = body(slug);
        async move {
            http(
                port,
                from,
                "POST",
                "/v1/signup",
                &[JSON, ("idempotency-key", key)],
                Some(&b),
            )
            .await
        }
    };
    // Concurrent signups from one address: exactly its quota gets through.
    let racers = [
        ("race-a", "k-a"),
        ("race-b", "k-b"),
        ("race-c", "k-c"),
        ("race-d", "k-d"),
        ("race-e", "k-e"),
    ];
    let results = futures_util_join(
        racers
            .iter()
            .map(|&(slug, key)| post("127.0.0.1", slug, key)),
    )
    .await;
    let accepted = results.iter().filter(|r| r.status == 202).count();
    assert_eq!(accepted, 2, "{results:#?}");
    for r in results.iter().filter(|r| r.status != 202) {
        assert_limited(r, "signup-quota-exceeded", 429);
        let secs: u64 = r.headers["retry-after"].parse().expect("secs");
        assert!(
            secs > 23 * 3600,
            "the oldest counted signup leaves the window in ~24 h: {secs}"
        );
    }
    assert_eq!(tenant_count(&s.db).await, 2);
    // A refusal is not remembered as the key's answer: the same key is free later.
    let before = all_rows(&s.db).await;
    let r = post("127.0.0.1", "late-co", "k-a2").await;
    assert_limited(&r, "signup-quota-exceeded", 429);
    assert_eq!(
        all_rows(&s.db).await,
        before,
        "nothing stored, not even the key"
    );
    // Other addresses, until everyone's quota is reached.
    assert_eq!(post("127.0.0.2", "other-a", "o-a").await.status, 202);
    assert_eq!(post("127.0.0.3", "other-b", "o-b").await.status, 202);
    let before = all_rows(&s.db).await;
    let r = post("127.0.0.4", "other-c", "o-c").await;
    assert_limited(&r, "signups-paused", 503);
    assert_eq!(all_rows(&s.db).await, before);
    assert_eq!(tenant_count(&s.db).await, 4);
    // The signups record who made them (the quota counts by it).
    let c = tenancy_pg::connect(&s.db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let actors: Vec<String> = c
        .query(
            "SELECT actor FROM tenancy_catalog.workflows WHERE kind = 'provision' ORDER BY actor",
            &[],
        )
        .await
        .expect("actors")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        actors,
        [
            "signup:127.0.0.1",
            "signup:127.0.0.1",
            "signup:127.0.0.2",
            "signup:127.0.0.3"
        ]
    );
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_util_join<F: std::future::Future<Output = Resp> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Resp> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn input_the_database_refuses_is_a_422_naming_the_field_not_a_500() {
    let s = served(generous(), SignupConfig::default()).await;
    let before = all_rows(&s.db).await;
    // Port 0 passes the request's types (u16) and reaches the catalog's CHECK.
    let r = http(
        s.port,
        "127.0.0.1",
        "POST",
        "/v1/clusters",
        &[AUTH, JSON, ("idempotency-key", "port-0")],
        Some(r#"{"name":"pg-zero","region":"eu-west","host":"db","port":0,"dbname":"d","capacity":5}"#),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["errors"][0]["field"], "port", "{}", r.body);
    // Only the idempotency key keeps the (final, 4xx) answer.
    let after = all_rows(&s.db).await;
    let changed: Vec<_> = after
        .iter()
        .filter(|(t, n)| {
            before.get(*t) != Some(n) && t.as_str() != "tenancy_catalog.idempotency_keys"
        })
        .collect();
    assert!(changed.is_empty(), "{changed:?}");
}

#[tokio::test]
async fn tenancy_serve_applies_its_limits_end_to_end() {
    // `build` + `run_until_stopped`, as `tenancy serve` runs them, on a catalog database.
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let digest = tenancy_control::auth::token_digest(crate::api::TOKEN);
    let config = tenancy_control::ControlConfig {
        listen: "127.0.0.1:0".into(),
        database_url: Some(secrecy::SecretString::from(
            db.cluster.url_as(OWNER_ROLE, &db.name),
        )),
        context_key_id: "ctl".into(),
        context_key_hex: Some(secrecy::SecretString::from("ab".repeat(32))),
        admin_token_sha256: vec![format!("sha256:{}", hex::encode(digest))],
        cluster_admin_user: db.cluster.superuser().to_owned(),
        workers: 1,
        limits: LimitsConfig {
            header_read_timeout_ms: 600,
            availability: RateConfig {
                per_ip_per_minute: 1,
                per_ip_burst: 2,
                global_per_minute: 60_000,
                global_burst: 10_000,
            },
            ..generous()
        },
        ..tenancy_control::ControlConfig::default()
    };
    let app = tenancy_control::build(config).await.expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let avail = "/v1/signup/availability?slug=umbrella";
    for _ in 0..2 {
        assert_eq!(
            http(port, "127.0.0.1", "GET", avail, &[], None)
                .await
                .status,
            200
        );
    }
    let r = http(port, "127.0.0.1", "GET", avail, &[], None).await;
    assert_limited(&r, "too-many-requests", 429);
    assert_eq!(
        http(port, "127.0.0.2", "GET", avail, &[], None)
            .await
            .status,
        200
    );
    // A connection that never finishes its headers is closed.
    let mut slow = connect_from(port, "127.0.0.1").await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut sink)).await;
    assert!(
        closed.is_ok(),
        "a connection without complete headers stays open"
    );
    let _ = stopper.send(true);
    running.await.expect("task").expect("served");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let limits = LimitsConfig {
        max_connections: 2,
        ..generous()
    };
    let s = served(limits, SignupConfig::default()).await;
    // Two clients that say nothing hold both places.
    let holders = [
        connect_from(s.port, "127.0.0.1").await,
        connect_from(s.port, "127.0.0.2").await,
    ];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let port = s.port;
    let third =
        tokio::spawn(async move { http(port, "127.0.0.3", "GET", "/healthz", &[], None).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served past the cap"
    );
    drop(holders);
    let r = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("served once a place is free")
        .expect("task");
    assert_eq!(r.status, 200);
}
