//! `POST /v1/tenants/{id}/export` through `tenancy serve` (build + run, real HTTP): the
//! archive streamed, read back and imported into another tenant with equal checksums
//! (`tenancy_transfer::import`, what `tenancy tenants import` runs); its trailers; the
//! `tenant.export` events in the control log and in the tenant's own log with the admin,
//! the digest, the rows, the request id and the client address; the compliance report's
//! exports; refusals (401, 404, 409 for a suspended tenant and for one being moved); a
//! client that goes away mid-stream cancels the export (nothing recorded, the tenant's
//! transaction gone) while the server's memory stays bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tenancy_control::audit::AuditConfig;
use tenancy_control::SignupConfig;
use tenancy_core::TenantId;
use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, ContextKey, PoolOptions, Router, RouterOptions, TenantPool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::api::{fresh_state_with, AUTH, JSON};
use crate::audit::{config, create, eventually};
use crate::hostile::http;

const FROM: &str = "127.0.0.9";

fn key() -> ContextKey {
    ContextKey::from_hex("ctl".parse().expect("kid"), &"ab".repeat(32)).expect("key")
}

/// Tenant transactions of the test (runtime role), without a deadline: loading the
/// large tenant takes a while on a busy machine.
fn tenant_pool(db: &TestDb) -> TenantPool {
    TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            transaction_deadline: Duration::ZERO,
            statement_timeout: Duration::ZERO,
            ..PoolOptions::default()
        },
    )
    .expect("pool")
}

async fn owner(db: &TestDb) -> tokio_postgres::Client {
    tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner")
}

/// `n` rows in `t00` and one child of every tenth in `t01`, in `t`'s own transaction.
async fn rows(pool: &TenantPool, t: TenantId, n: i64, tag: &str) {
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute(
        "INSERT INTO t00 (name, amount) SELECT $1 || ' ' || g, g / 7.0 FROM generate_series(1, $2::bigint) g",
        &[&tag, &n],
    )
    .await
    .expect("t00");
    tx.execute(
        "INSERT INTO t01 (name, parent_id) SELECT 'child of ' || name, id FROM t00 WHERE id % 10 = 0",
        &[],
    )
    .await
    .expect("t01");
    tx.commit().await.expect("commit");
}

async fn wait_active(port: u16, t: TenantId) {
    wait_state(port, t, "active").await;
}

/// Waits until the API shows tenant `t` in `state`.
async fn wait_state(port: u16, t: TenantId, state: &str) {
    eventually(&format!("the tenant {state}"), || async {
        let r = http(
            port,
            FROM,
            "GET",
            &format!("/v1/tenants/{t}"),
            &[AUTH],
            None,
        )
        .await;
        (r.body["state"] == state).then_some(())
    })
    .await;
}

/// An answer read whole: status, headers, the de-chunked body and the trailers.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    trailers: BTreeMap<String, String>,
    /// Whether a chunked body ended with its last chunk (not cut short).
    complete: bool,
}

async fn connect(port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(FROM.parse().expect("ip"), 0))
        .expect("bind");
    socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

fn request(path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

fn split_head(raw: &[u8]) -> (u16, BTreeMap<String, String>, usize) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, end + 4)
}

/// POSTs an export and reads the whole answer.
async fn export(port: u16, t: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = connect(port).await;
    stream
        .write_all(request(&format!("/v1/tenants/{t}/export"), headers).as_bytes())
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .expect("read");
    let (status, headers, start) = split_head(&raw);
    let mut body = Vec::new();
    let mut trailers = BTreeMap::new();
    let mut complete = false;
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        let mut rest = &raw[start..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let len = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .expect("chunk size");
            rest = &rest[eol + 2..];
            if len == 0 {
                complete = true;
                for line in String::from_utf8_lossy(rest).split("\r\n") {
                    if let Some((k, v)) = line.split_once(':') {
                        trailers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                break;
            }
            if rest.len() < len + 2 {
                body.extend_from_slice(rest);
                break;
            }
            body.extend_from_slice(&rest[..len]);
            rest = &rest[len + 2..];
        }
    } else {
        body = raw[start..].to_vec();
        complete = true;
    }
    Answer {
        status,
        headers,
        body,
        trailers,
        complete,
    }
}

fn problem(a: &Answer) -> Value {
    assert_eq!(
        a.headers.get("content-type").map(String::as_str),
        Some("application/problem+json"),
        "{:?}",
        a.headers
    );
    serde_json::from_slice(&a.body).expect("a problem document")
}

/// The `tenant.export` events of `t` in a log table, oldest first.
async fn events(client: &tokio_postgres::Client, table: &str, t: TenantId) -> Vec<Value> {
    client
        .query(
            &format!(
                "SELECT jsonb_build_object('actor_kind', actor_kind, 'actor_subject', actor_subject,
                        'after', after, 'request_id', request_id, 'client_addr', host(client_addr),
                        'outcome', outcome, 'target', target)
                   FROM {table} WHERE tenant_id = $1 AND action = 'tenant.export' ORDER BY seq"
            ),
            &[&t.as_uuid()],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn admin_subject() -> String {
    let digest = tenancy_control::auth::token_digest(crate::api::TOKEN);
    format!("admin:{}", hex::encode(&digest[..4]))
}

#[tokio::test]
async fn a_tenant_exported_over_http_imports_with_equal_checksums_and_is_audited_and_reported() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let cfg = config(
        &db,
        AuditConfig {
            seal_interval_secs: 1,
            ..AuditConfig::default()
        },
    );
    let app = tenancy_control::build(cfg).await.expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());

    let t = create(port, "exported", "req-export-create").await;
    let other = create(port, "neighbour", "req-export-other").await;
    wait_active(port, t).await;
    wait_active(port, other).await;
    let pool = tenant_pool(&db);
    rows(&pool, t, 2500, "mine").await;
    rows(&pool, other, 700, "theirs").await;

    let a = export(
        port,
        "exported",
        &[AUTH, ("x-request-id", "req-export-1"), ("te", "trailers")],
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.complete, "the chunked body ended with its last chunk");
    assert_eq!(
        a.headers.get("content-type").map(String::as_str),
        Some("application/vnd.tenancy.archive")
    );
    let disposition = &a.headers["content-disposition"];
    assert!(
        disposition.starts_with("attachment; filename=\"exported-")
            && disposition.ends_with(".tenancy\""),
        "{disposition}"
    );
    let export_id = a.headers["tenancy-export-id"].clone();
    assert!(uuid::Uuid::parse_str(&export_id).is_ok(), "{export_id}");
    let sha256 = hex::encode(Sha256::digest(&a.body));
    assert_eq!(
        a.trailers.get("tenancy-archive-sha256"),
        Some(&sha256),
        "{:?}",
        a.trailers
    );

    // The archive verifies by itself, and holds this tenant's rows only.
    let verified = tenancy_transfer::verify_archive(&a.body[..], &tenancy_transfer::NoProgress)
        .await
        .expect("a valid archive");
    assert_eq!(verified.bytes, a.body.len() as u64);
    assert_eq!(
        a.trailers.get("tenancy-archive-digest"),
        Some(&verified.summary.digest)
    );
    let counts: BTreeMap<&str, u64> = verified
        .summary
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.rows))
        .collect();
    assert_eq!(counts["t00"], 2500, "{counts:?}");
    assert_eq!(counts["t01"], 250, "{counts:?}");
    assert!(!String::from_utf8_lossy(&a.body).contains("theirs"));

    // Imported into another tenant (what `tenancy tenants import` runs): every table's
    // count and checksum equal to the archive's, and a second export of the copy equal
    // table by table.
    let copy = create(port, "exported-copy", "req-export-copy").await;
    wait_active(port, copy).await;
    let catalog = owner(&db).await;
    let router = Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )
    .expect("router");
    let access = tenancy_provision::ClusterAccess::local(db.cluster.superuser());
    let imported = tenancy_transfer::import(
        &router,
        &catalog,
        &access,
        copy,
        &a.body[..],
        &tenancy_transfer::NoProgress,
    )
    .await
    .expect("import");
    assert_eq!(imported.tables, verified.summary.tables);
    let again = export(port, &copy.to_string(), &[AUTH]).await;
    assert_eq!(again.status, 200);
    let again = tenancy_transfer::verify_archive(&again.body[..], &tenancy_transfer::NoProgress)
        .await
        .expect("the copy's archive");
    assert_eq!(again.summary.tables, verified.summary.tables);

    // Recorded in the control log and in the tenant's own log: the admin, the digests,
    // the rows, the request and the client.
    for table in ["tenancy_catalog.audit_log", "tenancy.audit_events"] {
        let es = events(&catalog, table, t).await;
        assert_eq!(es.len(), 1, "{table}: {es:?}");
        let e = &es[0];
        assert_eq!(e["actor_kind"], "admin", "{table}: {e}");
        assert_eq!(e["actor_subject"], admin_subject(), "{table}: {e}");
        assert_eq!(e["target"], format!("tenant:{t}"));
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["request_id"], "req-export-1", "{table}: {e}");
        assert_eq!(e["client_addr"], FROM, "{table}: {e}");
        assert_eq!(e["after"]["sha256"], sha256, "{table}: {e}");
        assert_eq!(e["after"]["digest"], verified.summary.digest.as_str());
        assert_eq!(e["after"]["rows"], 2750);
        assert_eq!(e["after"]["bytes"], a.body.len() as u64);
        assert_eq!(e["after"]["export_id"], export_id.as_str());
        assert_eq!(e["after"]["via"], "api");
        assert_eq!(e["after"]["tables"][0]["table"], "t00");
    }
    // The neighbour was not exported.
    assert!(events(&catalog, "tenancy_catalog.audit_log", other)
        .await
        .is_empty());

    // The compliance report lists the export.
    let r = http(
        port,
        FROM,
        "GET",
        &format!("/v1/tenants/{t}/report"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let exports = r.body["report"]["exports"].as_array().expect("exports");
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["sha256"], sha256);
    assert_eq!(exports[0]["rows"], 2750);
    assert_eq!(exports[0]["actor"], format!("admin {}", admin_subject()));
    assert_eq!(exports[0]["request_id"], "req-export-1");
    assert_eq!(exports[0]["via"], "api");
    let page = http(
        port,
        FROM,
        "GET",
        &format!("/v1/tenants/{t}/report?format=html"),
        &[AUTH],
        None,
    )
    .await;
    assert!(String::from_utf8_lossy(&page.raw).contains(&sha256));

    let _ = stopper.send(true);
    running.await.expect("join").expect("stopped");
}

#[tokio::test]
async fn an_export_is_refused_without_a_token_for_an_unknown_tenant_and_while_it_cannot_be_exported(
) {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let app = tenancy_control::build(config(&db, AuditConfig::default()))
        .await
        .expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let t = create(port, "refused", "req-refused").await;
    let moving = create(port, "moving", "req-moving").await;
    wait_active(port, t).await;
    wait_active(port, moving).await;

    // No token, a wrong token: 401, before the tenant is even looked up.
    let a = export(port, "refused", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(problem(&a)["status"], 401);
    let a = export(port, "no-such-tenant", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(a.status, 401);
    // Unknown tenants.
    for unknown in ["no-such-tenant", &uuid::Uuid::new_v4().to_string()] {
        let a = export(port, unknown, &[AUTH]).await;
        assert_eq!(a.status, 404, "{unknown}");
        assert_eq!(problem(&a)["status"], 404);
    }
    // A suspended tenant.
    let r = http(
        port,
        FROM,
        "POST",
        &format!("/v1/tenants/{t}/suspend"),
        &[AUTH, JSON, ("idempotency-key", "suspend-refused")],
        Some(&json!({}).to_string()),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    wait_state(port, t, "suspended").await;
    let a = export(port, "refused", &[AUTH]).await;
    assert_eq!(a.status, 409);
    let p = problem(&a);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("suspended")),
        "{p}"
    );
    // A tenant with a move queued (held back from the workers): 409 until it is over.
    let catalog = owner(&db).await;
    let wf: uuid::Uuid = catalog
        .query_one(
            "INSERT INTO tenancy_catalog.workflows (id, tenant_id, kind, input, status, actor, run_after)
             VALUES (gen_random_uuid(), $1, 'move', '{\"to\": \"dedicated\"}', 'pending', 'test', now() + interval '1 day')
             RETURNING id",
            &[&moving.as_uuid()],
        )
        .await
        .expect("a queued move")
        .get(0);
    let a = export(port, "moving", &[AUTH]).await;
    assert_eq!(a.status, 409);
    assert!(
        problem(&a)["detail"]
            .as_str()
            .is_some_and(|d| d.contains("being moved")),
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
    catalog
        .execute(
            "UPDATE tenancy_catalog.workflows SET status = 'cancelled', finished_at = now() WHERE id = $1",
            &[&wf],
        )
        .await
        .expect("cancel the move");
    let a = export(port, "moving", &[AUTH]).await;
    assert_eq!(a.status, 200);
    // Nothing refused was recorded.
    assert!(events(&catalog, "tenancy_catalog.audit_log", t)
        .await
        .is_empty());

    let _ = stopper.send(true);
    running.await.expect("join").expect("stopped");
}

/// Resident memory of this process (the server runs in it), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_large_export_streams_in_bounded_memory_and_a_client_that_goes_away_cancels_it() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let app = tenancy_control::build(config(&db, AuditConfig::default()))
        .await
        .expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let t = create(port, "large", "req-large").await;
    wait_active(port, t).await;
    // About 40 MB of archive.
    rows(
        &tenant_pool(&db),
        t,
        400_000,
        "a row with some text in it to make it longer",
    )
    .await;

    // Read the whole archive as it comes, keeping only its digest, and watch the
    // process's memory meanwhile.
    let before = rss_kib();
    let mut stream = connect(port).await;
    stream
        .write_all(request("/v1/tenants/large/export", &[AUTH]).as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0u64;
    let mut peak = before;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(120), stream.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        if n == 0 {
            break;
        }
        received += n as u64;
        peak = peak.max(rss_kib());
    }
    assert!(received > 30 << 20, "{received} bytes");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "export over HTTP: {received} bytes streamed; RSS {before} KiB before, peak {peak} KiB"
    );
    assert!(
        growth < 24 << 10,
        "the process grew by {growth} KiB while streaming {received} bytes"
    );
    let catalog = owner(&db).await;
    assert_eq!(
        events(&catalog, "tenancy_catalog.audit_log", t).await.len(),
        1
    );

    // A client that reads the first bytes and goes away: the export is cancelled, its
    // transaction ends, nothing is recorded.
    let mut stream = connect(port).await;
    stream
        .write_all(request("/v1/tenants/large/export", &[AUTH]).as_bytes())
        .await
        .expect("write");
    let n = stream.read(&mut buf).await.expect("first bytes");
    assert!(n > 0);
    // As the superuser: the owner role does not see other roles' statements.
    let admin = tenancy_pg::connect(&db.cluster.config(&db.name))
        .await
        .expect("superuser");
    let exporting = || async {
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE usename = 'tenancy_app' AND state <> 'idle' AND query LIKE 'COPY%'",
                &[],
            )
            .await
            .expect("activity")
            .get::<_, i64>(0)
    };
    // The export is held by the client that does not read (its COPY waits).
    eventually("the export's COPY running", || async {
        (exporting().await > 0).then_some(())
    })
    .await;
    drop(stream);
    eventually("the cancelled export's transaction gone", || async {
        (exporting().await == 0).then_some(())
    })
    .await;
    // Still one export recorded: the cancelled one is not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events(&catalog, "tenancy_catalog.audit_log", t).await.len(),
        1
    );

    let _ = stopper.send(true);
    running.await.expect("join").expect("stopped");
}
