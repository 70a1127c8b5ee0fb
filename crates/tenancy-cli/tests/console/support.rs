//! What the browser tests need: `tenancy serve` on the embedded default, chromedriver,
//! a headless Chromium session of its own, plain HTTP requests and explicit waits.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// Generous: the machine running the tests may be loaded.
pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// A child process killed when the test ends (also when it fails).
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tenancy serve` on the embedded default, and its admin token.
pub(crate) struct Serve {
    pub(crate) port: u16,
    pub(crate) token: String,
    _proc: Proc,
}

impl Serve {
    /// Starts it and waits for its port line and `/healthz`.
    pub(crate) fn start() -> Serve {
        let token = format!("console-admin-{}", std::process::id());
        let digest: String = tenancy_control::auth::token_digest(&token)
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
            .env("TENANCY_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tenancy serve");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc(child);
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
        let deadline = Instant::now() + Duration::from_secs(240);
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("tenancy serve printed its port");
            if let Some(rest) = line.strip_prefix("tenancy control plane on http://127.0.0.1:") {
                break rest.trim().parse::<u16>().expect("port");
            }
        };
        let serve = Serve {
            port,
            token,
            _proc: proc,
        };
        wait_until("/healthz answers 200", || {
            serve.get("/healthz", None).0 == 200
        });
        serve
    }

    /// The console's address of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A GET with the admin token (`Some`) or a cookie header.
    pub(crate) fn get(&self, path: &str, cookie: Option<&str>) -> (u16, String, String) {
        request(self.port, "GET", path, &[("Cookie", cookie)], None)
    }

    /// An admin API call with a JSON body: (status, body).
    pub(crate) fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        let key = format!("console-test-{method}-{path}-{}", body.map_or(0, str::len));
        let (s, _, b) = request(
            self.port,
            method,
            path,
            &[
                ("Authorization", Some(&auth)),
                ("Idempotency-Key", Some(&key)),
                ("Content-Type", Some("application/json")),
            ],
            body,
        );
        (s, b)
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, head, body).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, Option<&str>)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        if let Some(v) = value {
            req.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_owned(), body.to_owned())
}

/// Polls `ready` until it holds, failing after [`WAIT`].
pub(crate) fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// chromedriver on a free loopback port, and a headless Chromium session with its own
/// profile directory (removed at the end).
pub(crate) struct Browser {
    pub(crate) client: Client,
    _driver: Proc,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    pub(crate) async fn start(name: &str) -> Browser {
        let driver_bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {driver_bin} ({e}): install Chromium and its driver with scripts/browser.sh")
            });
        let driver = Proc(driver);
        wait_until("chromedriver accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let profile = std::env::temp_dir().join(format!(
            "tenancy-console-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ] }),
        );
        caps.insert(
            "timeouts".into(),
            serde_json::json!({ "pageLoad": 120_000, "script": 60_000, "implicit": 0 }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser {
            client,
            _driver: driver,
            profile,
        }
    }

    /// The element, once it is there.
    pub(crate) async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
    }

    /// The element an XPath finds, once it is there.
    pub(crate) async fn find_xpath(
        &self,
        xpath: &str,
        what: &str,
    ) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(xpath))
            .await
            .unwrap_or_else(|e| panic!("{what}: {xpath} never appeared: {e}"))
    }

    /// Opens a page.
    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Types into an element, once it is there.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.expect("type");
    }

    /// The text of an element, once it is there.
    pub(crate) async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Waits until the page's path is `path`.
    pub(crate) async fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.expect("url");
            if url.path() == path {
                return;
            }
            assert!(Instant::now() < deadline, "never reached {path} (at {url})");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the page's query string holds `needle` (a submitted search).
    pub(crate) async fn wait_query(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.expect("url");
            if url.query().is_some_and(|q| q.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the query never held {needle} (at {url})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reloads the page until the text of `css` is `want`.
    pub(crate) async fn reload_until_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.text(css).await == want {
                return;
            }
            assert!(Instant::now() < deadline, "{css} never became {want:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.client.refresh().await.expect("reload");
        }
    }

    /// Reloads the page until `script` returns true.
    pub(crate) async fn reload_until_js(&self, script: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.js(script).await == serde_json::Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.client.refresh().await.expect("reload");
        }
    }

    /// Runs a script and returns its JSON value.
    pub(crate) async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Writes a screenshot under target/console-screenshots/.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        path
    }
}
