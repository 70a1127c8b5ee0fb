//! End-to-end tests of the `tenancy` binary.

use std::process::Command;

mod audit;
mod bootstrap;
mod keys;
mod ops;
mod otlp;
mod own_postgres;
mod pooler;
mod report;
mod tenants;
mod top;
mod transfer;

#[test]
fn unknown_subcommands_get_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .arg("frobnicate")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand"));
}

#[test]
fn serve_and_tenants_exit_2_when_they_cannot_run() {
    // A configuration that cannot be read, and a catalog that cannot be reached.
    let serve = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["serve", "--config", "/nonexistent/tenancy.toml"])
        .output()
        .expect("run serve");
    assert_eq!(
        serve.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
    assert!(String::from_utf8_lossy(&serve.stderr).contains("error:"));
    let tenants = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["tenants", "list"])
        .env(
            "DATABASE_URL",
            "postgres://tenancy@127.0.0.1:1/catalog?connect_timeout=2",
        )
        .output()
        .expect("run tenants");
    assert_eq!(
        tenants.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&tenants.stderr)
    );
}

/// The `tenancy serve` process, killed when the test ends (also when it fails).
struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method == "POST" || method == "PUT" {
        req.push_str(&format!("Idempotency-Key: smoke-{method}-{path}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// Whether a live process has `needle` in its command line.
fn process_with(needle: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                return Some(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    None
}

#[test]
fn serve_answers_on_the_embedded_default_and_leaves_no_cluster_when_killed() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    let token = "smoke-admin-token";
    let digest: String = tenancy_control::auth::token_digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env_remove("TENANCY_DATABASE_URL")
        .env_remove("TENANCY_CONFIG")
        .env_remove("TENANCY_REGIONS")
        .env("TENANCY_ADMIN_TOKEN_SHA256", format!("sha256:{digest}"))
        .env("TENANCY_WORKERS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start tenancy serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut serve = Serve(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The startup lines: the port, then the private cluster's data directory.
    let (mut port, mut data_dir) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(180);
    while data_dir.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("tenancy serve printed its port and data directory");
        if let Some(rest) = line.strip_prefix("tenancy control plane on http://127.0.0.1:") {
            port = rest.trim().parse::<u16>().ok();
        }
        if let Some(dir) = line.strip_prefix("PostgreSQL data directory ") {
            data_dir = Some(dir.trim().to_owned());
        }
    }
    let (port, data_dir) = (port.expect("port line"), data_dir.expect("dir"));
    assert!(
        process_with(&data_dir).is_some(),
        "the private cluster runs"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if http(port, "GET", "/healthz", None, None).0 == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (s, body) = http(port, "GET", "/openapi.json", None, None);
    assert_eq!(s, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI is JSON");
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["paths"].get("/v1/evaluate/{tenant}").is_some());

    // The admin API: a region, then a tenant provisioned by the workers.
    let (s, _) = http(port, "GET", "/v1/regions", None, None);
    assert_eq!(s, 401);
    let (s, body) = http(
        port,
        "POST",
        "/v1/regions",
        Some(token),
        Some(r#"{"id":"us-east","display_name":"US East"}"#),
    );
    assert_eq!(s, 201, "{body}");
    let (s, body) = http(
        port,
        "POST",
        "/v1/tenants",
        Some(token),
        Some(
            r#"{"slug":"smoke","display_name":"Smoke","plan":"free","region":"eu-west","placement":"pooled"}"#,
        ),
    );
    assert_eq!(s, 202, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let id = created["tenant"]["id"]
        .as_str()
        .expect("tenant id")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http(port, "GET", &format!("/v1/tenants/{id}"), Some(token), None);
        let t: serde_json::Value = serde_json::from_str(&body).expect("json");
        if t["state"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "tenant never became active: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The configuration service is mounted and its snapshot client is live.
    let (s, body) = http(
        port,
        "PUT",
        "/v1/config/flags/smoke-flag",
        Some(token),
        Some(
            r#"{"kind":"boolean","variants":{"on":true,"off":false},"default_variant":"on","off_variant":"off"}"#,
        ),
    );
    assert_eq!(s, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = http(
            port,
            "GET",
            &format!("/v1/evaluate/{id}?flags=smoke-flag"),
            Some(token),
            None,
        );
        let e: serde_json::Value = serde_json::from_str(&body).expect("json");
        if e["flags"]["smoke-flag"]["value"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flag change never evaluated: {e}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Killed (SIGKILL: no chance to clean up), the process exits, and the cluster's
    // watchdog stops PostgreSQL and removes its temporary directory.
    serve.0.kill().expect("kill");
    let status = serve.0.wait().expect("wait");
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = process_with(&data_dir);
        if left.is_none() && !std::path::Path::new(&data_dir).exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind after the kill: {left:?}, directory exists: {}",
            std::path::Path::new(&data_dir).exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
