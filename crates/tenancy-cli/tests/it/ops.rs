//! `tenancy serve` as an operator runs it: readiness and metrics, request ids and trace
//! context, JSON logs, SIGTERM that lets a slow request and a running workflow step finish,
//! a data directory that keeps tenants and the admin token across restarts, the embedded
//! cluster removed after a process-group SIGTERM, 503 (not 500) while PostgreSQL is down,
//! and PostgreSQL's own message (with SQLSTATE) in workflow errors and CLI messages.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// A `tenancy serve` process: its stdout and stderr lines, and a kill when the test ends
/// (also when it fails).
pub(crate) struct Served {
    child: Child,
    stdout: Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Starts `tenancy serve` on the embedded default, in its own process group.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Served {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenancy"));
        c.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        for v in [
            "DATABASE_URL",
            "TENANCY_DATABASE_URL",
            "TENANCY_CONFIG",
            "TENANCY_REGIONS",
            "TENANCY_ADMIN_TOKEN_SHA256",
            "TENANCY_DATA_DIR",
            "TENANCY_LOG",
            "TENANCY_LOG_FORMAT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            c.env_remove(v);
        }
        c.env("TENANCY_WORKERS", "1");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenancy serve");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push(line);
                }
            }
        });
        Served {
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Stdout lines up to and including the one starting with `last`.
    pub(crate) fn banner(&self, last: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.stdout.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {last:?} line; stdout so far: {lines:?}; stderr: {:?}",
                    self.stderr_lines()
                )
            });
            let done = line.starts_with(last);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn signal(&self, sig: &str, group: bool) {
        let target = if group {
            format!("-{}", self.child.id())
        } else {
            self.child.id().to_string()
        };
        let ok = Command::new("kill")
            .args([sig, "--", &target])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {sig} {target}");
    }

    /// Waits for the process to exit (and for the last of its stderr).
    pub(crate) fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                if let Some(h) = self.stderr_reader.take() {
                    let _ = h.join();
                }
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "tenancy serve did not exit within {within:?}; stderr: {:?}",
                self.stderr_lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The admin token a first start prints once.
pub(crate) fn token_of(banner: &[String]) -> String {
    banner
        .iter()
        .find_map(|l| l.strip_prefix("admin token (shown once): "))
        .expect("a generated admin token in the banner")
        .trim()
        .to_owned()
}

pub(crate) fn port_of(banner: &[String]) -> u16 {
    banner
        .iter()
        .find_map(|l| l.strip_prefix("tenancy control plane on http://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("port line")
}

fn data_dirs(banner: &[String]) -> Vec<String> {
    banner
        .iter()
        .filter_map(|l| l.strip_prefix("PostgreSQL data directory "))
        .map(|d| d.trim().to_owned())
        .collect()
}

/// An HTTP answer: status, headers (lowercase names), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn request_text(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (String, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    (req, body.to_owned())
}

fn read_answer(mut s: TcpStream) -> Answer {
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The trace id of a valid version-00 W3C `traceparent` (lowercase hex, ids not all
/// zero), `None` for anything else.
fn valid_traceparent(v: &str) -> Option<String> {
    let p: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n| s.len() == n && s.bytes().all(|b| b"0123456789abcdef".contains(&b));
    let id = |s: &str, n| hex(s, n) && s.bytes().any(|b| b != b'0');
    let ok = p.len() == 4 && p[0] == "00" && id(p[1], 32) && id(p[2], 16) && hex(p[3], 2);
    ok.then(|| p[1].to_owned())
}

pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let (head, body) = request_text(method, path, headers, body);
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body.as_bytes()).expect("send body");
    read_answer(s)
}

pub(crate) fn wait_ready(port: u16) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = http(port, "GET", "/readyz", &[], None);
        if a.status == 200 {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered 200: {} {}",
            a.status,
            a.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn create_tenant(
    port: u16,
    token: &str,
    slug: &str,
    placement: &str,
) -> (String, String) {
    let auth = format!("Bearer {token}");
    let key = format!("ops-{slug}");
    let a = http(
        port,
        "POST",
        "/v1/tenants",
        &[("Authorization", &auth), ("Idempotency-Key", &key)],
        Some(&format!(
            r#"{{"slug":"{slug}","display_name":"{slug}","plan":"free","region":"eu-west","placement":"{placement}"}}"#
        )),
    );
    assert_eq!(a.status, 202, "{}", a.body);
    let v = a.json();
    (
        v["tenant"]["id"].as_str().expect("tenant id").to_owned(),
        v["workflow"]["id"]
            .as_str()
            .expect("workflow id")
            .to_owned(),
    )
}

fn get(port: u16, token: &str, path: &str) -> Answer {
    let auth = format!("Bearer {token}");
    http(port, "GET", path, &[("Authorization", &auth)], None)
}

pub(crate) fn wait_active(port: u16, token: &str, id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let t = get(port, token, &format!("/v1/tenants/{id}")).json();
        if t["state"] == "active" {
            return;
        }
        assert!(Instant::now() < deadline, "tenant never became active: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// A fresh directory under the system temp dir, reachable by the `postgres` user that
/// runs the clusters when the tests run as root.
fn temp_dir(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!(
        "tenancy-ops-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn migrations_dir(name: &str, sql: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("0001_app.sql"), sql).expect("migration");
    dir
}

/// JSON log lines of stderr.
fn json_logs(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"))
        })
        .collect()
}

#[test]
fn serve_drains_on_sigterm_keeps_its_data_dir_and_exports_metrics() {
    let data = temp_dir("data");
    let data_s = data.display().to_string();
    // Each schema tenant's storage step sleeps eight seconds: a workflow step long enough
    // to be under way when SIGTERM comes.
    let mig = migrations_dir(
        "slow",
        "CREATE TABLE notes (tenant_id uuid NOT NULL, id bigint NOT NULL, body text NOT NULL, PRIMARY KEY (tenant_id, id));\nSELECT pg_sleep(8);\n",
    );
    let mig_s = mig.display().to_string();
    let env = [("TENANCY_APP_MIGRATIONS_DIR", mig_s.as_str())];
    let mut serve = Served::start(&["--data-dir", &data_s], &env);
    let banner = serve.banner("admin token");
    let port = port_of(&banner);
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("kept in {data_s}"))),
        "{banner:?}"
    );
    let token = token_of(&banner);
    let dirs = data_dirs(&banner);
    assert_eq!(dirs.len(), 1, "{banner:?}");
    assert!(dirs[0].starts_with(&data_s), "{dirs:?}");

    // Ready: catalog, migrations, native context, workers.
    let ready = wait_ready(port).json();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(
        ready["checks"]["context"]["implementation"]
            .as_str()
            .unwrap_or("")
            .starts_with("native"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["workers"]["alive"], 1, "{ready}");
    assert_eq!(http(port, "GET", "/livez", &[], None).status, 200);
    assert_eq!(http(port, "GET", "/healthz", &[], None).status, 200);

    // Request id and trace context: the client's are kept and echoed.
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = http(
        port,
        "GET",
        "/v1/tenants/00000000-0000-4000-8000-000000000000",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Request-Id", "ops-req-1"),
            ("traceparent", parent),
        ],
        None,
    );
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(
        a.headers.get("x-request-id").map(String::as_str),
        Some("ops-req-1")
    );
    assert_eq!(a.json()["request_id"], "ops-req-1", "{}", a.body);
    let tp = a.headers.get("traceparent").expect("traceparent out");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && !tp.contains("00f067aa0ba902b7"),
        "{tp}"
    );
    assert!(valid_traceparent(tp).is_some(), "{tp}");
    // Without one, a new id is made.
    let a = http(port, "GET", "/livez", &[], None);
    let id = a.headers.get("x-request-id").expect("request id");
    assert_eq!(id.len(), 32, "{id}");
    // Without a traceparent, or with a malformed one (ignored), a new trace each time,
    // answered in a valid traceparent.
    let mut traces = vec!["4bf92f3577b34da6a3ce929d0e0e4736".to_owned()];
    for bad in [
        None,
        Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        Some("garbage"),
    ] {
        let headers: Vec<(&str, &str)> = bad.iter().map(|v| ("traceparent", *v)).collect();
        let a = http(port, "GET", "/livez", &headers, None);
        let tp = a.headers.get("traceparent").expect("traceparent out");
        let trace = valid_traceparent(tp)
            .unwrap_or_else(|| panic!("{bad:?}: a valid traceparent, got {tp}"));
        assert!(!traces.contains(&trace), "{bad:?}: a new trace, got {tp}");
        traces.push(trace);
    }

    // A schema tenant whose storage step takes eight seconds.
    let (first, wf) = create_tenant(port, &token, "drain-one", "schema");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = get(port, &token, &format!("/v1/workflows/{wf}")).json();
        if w["step"] == 1 && w["status"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the storage step never started: {w}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));

    // A slow request: headers and half the body sent, the rest after SIGTERM.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let auth = format!("Bearer {token}");
    let (head, body) = request_text(
        "POST",
        "/v1/tenants",
        &[
            ("Authorization", &auth),
            ("Idempotency-Key", "ops-drain-two"),
        ],
        Some(
            r#"{"slug":"drain-two","display_name":"drain-two","plan":"free","region":"eu-west","placement":"schema"}"#,
        ),
    );
    slow.write_all(head.as_bytes()).expect("send");
    let (b1, b2) = body.split_at(body.len() / 2);
    slow.write_all(b1.as_bytes()).expect("send");
    std::thread::sleep(Duration::from_millis(200));

    let signalled = Instant::now();
    serve.signal("-TERM", false);
    std::thread::sleep(Duration::from_millis(500));
    // The listener is closed: no new connection is served.
    let refused = TcpStream::connect(("127.0.0.1", port))
        .map(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            s.read_to_string(&mut out).map(|_| out).unwrap_or_default()
        })
        .unwrap_or_default();
    assert!(
        !refused.contains("200 OK"),
        "served after SIGTERM: {refused}"
    );
    // The slow request finishes.
    slow.write_all(b2.as_bytes()).expect("send the rest");
    let a = read_answer(slow);
    assert_eq!(a.status, 202, "the request in flight was cut: {}", a.body);
    let second = a.json()["tenant"]["id"].as_str().expect("id").to_owned();

    let status = serve.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "exited {took:?} after SIGTERM: the storage step (8 s) cannot have finished"
    );
    assert!(process_with(&dirs[0]).is_none(), "PostgreSQL still runs");
    assert!(Path::new(&dirs[0]).join("PG_VERSION").exists());

    // Logs: JSON (stderr is not a terminal), no colour codes, lifecycle and access lines.
    let logs = json_logs(&serve.stderr_lines());
    assert!(!serve.stderr_lines().iter().any(|l| l.contains('\u{1b}')));
    let messages: Vec<&str> = logs
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for m in ["serving", "shutting down", "stopped"] {
        assert!(
            messages.iter().any(|x| x.starts_with(m)),
            "no {m:?} log line in {messages:?}"
        );
    }
    let access: Vec<&serde_json::Value> = logs
        .iter()
        .filter(|l| l["fields"]["message"] == "access")
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l["fields"]["route"] == "/v1/workflows/{id}" && l["fields"]["status"] == 200),
        "{access:?}"
    );
    assert!(
        access.iter().any(|l| l["span"]["request_id"] == "ops-req-1"
            && l["span"]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"),
        "{access:?}"
    );
    drop(serve);

    // Restarted on the same directory: the tenants and the admin token are there, and the
    // storage step under way at SIGTERM had finished (a redo would take eight seconds).
    let serve = Served::start(&["--data-dir", &data_s], &env);
    let banner = serve.banner("admin token");
    assert!(
        !banner.iter().any(|l| l.contains("shown once")),
        "{banner:?}"
    );
    let port = port_of(&banner);
    let restarted = Instant::now();
    wait_ready(port);
    let w = get(port, &token, &format!("/v1/workflows/{wf}"));
    assert_eq!(
        w.status, 200,
        "the admin token of the first start: {}",
        w.body
    );
    let w = w.json();
    assert!(
        restarted.elapsed() < Duration::from_secs(6),
        "too slow to tell whether the step was redone"
    );
    assert!(
        w["step"].as_i64().unwrap_or(0) >= 2 || w["status"] == "succeeded",
        "the storage step under way at SIGTERM did not finish: {w}"
    );
    wait_active(port, &token, &first, Duration::from_secs(60));
    wait_active(port, &token, &second, Duration::from_secs(60));
    // A tenant provisioned wholly by this process: the draining one may have run every
    // remaining step of the first two before it exited, and its counters went with it.
    let (third, _) = create_tenant(port, &token, "after-restart", "pooled");
    wait_active(port, &token, &third, Duration::from_secs(60));

    // Metrics, in Prometheus text format.
    let m = http(port, "GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert!(
        m.headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        m.headers
    );
    let scrape = prometheus_parse::Scrape::parse(m.body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    let find = |name: &str| -> Vec<&prometheus_parse::Sample> {
        scrape.samples.iter().filter(|s| s.metric == name).collect()
    };
    let requests = find("tenancy_http_requests_total");
    assert!(
        requests
            .iter()
            .any(|s| s.labels.get("route") == Some("/v1/tenants/:id")
                && s.labels.get("status") == Some("200")
                && matches!(s.value, prometheus_parse::Value::Counter(v) if v >= 1.0)),
        "{requests:?}"
    );
    for s in &requests {
        let route = s.labels.get("route").unwrap_or("");
        assert!(
            !route.contains(&first) && !route.contains(&wf),
            "a raw path as a label: {route}"
        );
    }
    assert!(
        find("tenancy_http_request_duration_seconds")
            .iter()
            .any(|s| matches!(&s.value, prometheus_parse::Value::Histogram(h) if !h.is_empty())),
        "no latency histogram"
    );
    assert!(
        find("tenancy_workflow_steps_total")
            .iter()
            .any(|s| s.labels.get("kind") == Some("provision")
                && s.labels.get("outcome") == Some("ok")),
        "no workflow step counter"
    );
    assert!(
        find("tenancy_catalog_pool_connections")
            .iter()
            .any(|s| s.labels.get("state") == Some("max")),
        "no pool gauge"
    );
    assert!(!find("tenancy_config_snapshot_age_seconds").is_empty());
    let gauge = |name: &str, labels: &[(&str, &str)]| -> f64 {
        find(name)
            .iter()
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(gauge("tenancy_tenants", &[("state", "active")]), 3.0);
    assert_eq!(
        gauge(
            "tenancy_migration_targets",
            &[("kind", "schema"), ("state", "current")]
        ),
        2.0
    );
    assert!(!find("tenancy_workers_alive").is_empty());

    serve.signal("-TERM", false);
    let mut serve = serve;
    assert!(serve.wait_exit(Duration::from_secs(60)).success());
    drop(serve);
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&mig);
}

#[test]
fn serve_without_data_dir_says_so_answers_503_when_postgres_is_down_and_cleans_up_after_a_group_sigterm(
) {
    let mig = migrations_dir(
        "broken",
        "CREATE TABLE notes (id bigint PRIMARY KEY);\nSELECT tenancy.no_such_function('notes'::regclass);\n",
    );
    let mig_s = mig.display().to_string();
    let mut serve = Served::start(
        &["--shutdown-grace-secs", "10", "--log-format", "text"],
        &[("TENANCY_APP_MIGRATIONS_DIR", mig_s.as_str())],
    );
    let banner = serve.banner("admin token");
    assert!(
        banner.iter().any(|l| l.contains("ALL DATA")
            && l.contains("DELETED ON EXIT")
            && l.contains("--data-dir")),
        "{banner:?}"
    );
    let port = port_of(&banner);
    let token = token_of(&banner);
    let dir = data_dirs(&banner).pop().expect("data dir");
    wait_ready(port);

    // The workflow's last error is PostgreSQL's message with its SQLSTATE.
    let (_, wf) = create_tenant(port, &token, "broken", "schema");
    let deadline = Instant::now() + Duration::from_secs(60);
    let last_error = loop {
        let w = get(port, &token, &format!("/v1/workflows/{wf}")).json();
        if let Some(e) = w["last_error"].as_str() {
            break e.to_owned();
        }
        assert!(Instant::now() < deadline, "no last_error: {w}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        last_error.contains("function tenancy.no_such_function(regclass) does not exist")
            && last_error.contains("SQLSTATE 42883")
            && !last_error.contains("db error"),
        "{last_error}"
    );
    // The log says it too, in text without colour codes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve
        .stderr_lines()
        .iter()
        .any(|l| l.contains("SQLSTATE 42883"))
    {
        assert!(Instant::now() < deadline, "{:?}", serve.stderr_lines());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!serve.stderr_lines().iter().any(|l| l.contains('\u{1b}')));

    // PostgreSQL stops: not ready, and the API answers 503 with a problem, not 500.
    let pid = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .expect("pid")
        .trim()
        .to_owned();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let not_ready = loop {
        let a = http(port, "GET", "/readyz", &[], None);
        if a.status == 503 {
            break a;
        }
        assert!(Instant::now() < deadline, "/readyz stays {}", a.status);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        not_ready.headers.get("content-type").map(String::as_str),
        Some("application/problem+json")
    );
    let p = not_ready.json();
    assert_eq!(p["code"], "unavailable", "{p}");
    assert_eq!(p["checks"]["catalog"]["ok"], false, "{p}");
    assert!(!not_ready.body.contains("SQLSTATE"), "{p}");
    assert_eq!(http(port, "GET", "/livez", &[], None).status, 200);
    let a = get(port, &token, "/v1/tenants");
    assert_eq!(a.status, 503, "{}", a.body);
    let p = a.json();
    assert_eq!(p["code"], "unavailable", "{p}");
    assert!(
        p["request_id"].as_str().is_some_and(|r| r.len() == 32),
        "{p}"
    );
    assert!(
        !a.body.contains("SQLSTATE") && !a.body.contains("socket"),
        "{p}"
    );

    // SIGTERM to the whole process group (what a terminal's Ctrl-C or `kill -TERM -PGID`
    // does): serve exits 0 and the cluster's watchdog still removes its directory.
    serve.signal("-TERM", true);
    let status = serve.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {:?}", serve.stderr_lines());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&dir).exists() || process_with(&dir).is_some() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}, directory exists: {}",
            process_with(&dir),
            Path::new(&dir).exists()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&mig);
}

#[tokio::test]
async fn cli_messages_carry_postgres_message_and_sqlstate() {
    let cluster = tenancy_pg::Cluster::start(tenancy_pg::ClusterOptions {
        tcp_port: Some(0),
        ..tenancy_pg::ClusterOptions::for_tests()
    })
    .await
    .expect("cluster");
    let url = format!(
        "host=127.0.0.1 port={} user=tenancy_owner password=wrong dbname=postgres",
        cluster.port()
    );
    let dir = migrations_dir("cli", "CREATE TABLE notes (id bigint PRIMARY KEY);\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["migrate", "--dir"])
        .arg(&dir)
        .env("DATABASE_URL", &url)
        .env_remove("TENANCY_CONFIG")
        .output()
        .expect("run tenancy migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("password authentication failed for user \"tenancy_owner\"")
            && stderr.contains("SQLSTATE 28P01")
            && !stderr.contains("db error"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
