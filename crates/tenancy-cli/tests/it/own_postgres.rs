//! "Running on your own PostgreSQL", as the README tells it, with real processes: a
//! PostgreSQL started by hand (`initdb` + `postgres`, not by tenancy) that takes TCP
//! connections over TLS only, with SCRAM passwords; an admin role such as a managed
//! service grants (CREATEROLE, owns the database, not superuser); `tenancy bootstrap`
//! (dry run, then for real) with `sslmode=verify-full`; PgBouncer in transaction mode
//! with TLS on both sides; `tenancy serve` with the printed connection string and the
//! cluster declared with its direct address and PgBouncer's; two signups that become
//! active; and the example app's binary serving those tenants through PgBouncer.
//!
//! The example app's binary is the `invoicing` executable next to `tenancy` in the target
//! directory: `cargo test --workspace` builds both; `cargo test -p tenancy-cli` alone does
//! not build it (the test then says what to run).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tenancy_pg::{PgBinaries, PgBouncer, PgBouncerOptions, PgBouncerTls, PgBouncerUpstream};
use tenancy_sdk::bootstrap::{RUNTIME_ROLE, WORKER_ROLE};

use crate::bootstrap::tenancy;

/// The processes and files of the test, removed when it ends, also when it fails.
struct Stack {
    /// Everything the test writes: data directory, certificates, logs, configuration.
    dir: PathBuf,
    /// The user the servers run as (as root: `postgres`; `initdb` and `postgres` refuse
    /// root), else `None`.
    run_as: Option<String>,
    bins: PgBinaries,
    /// `postgres` (its watchdog: the `runuser` or the server itself).
    postgres: Option<Child>,
    /// `tenancy serve` and the example app.
    children: Vec<Child>,
}

impl Stack {
    fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// A command running `program` as the servers' user.
    fn command_as(&self, program: &Path) -> Command {
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Gives `path` to the servers' user.
    fn chown(&self, path: &Path) {
        if let Some(user) = &self.run_as {
            let s = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:"))
                .arg(path)
                .status()
                .expect("run chown");
            assert!(s.success(), "chown {}", path.display());
        }
    }

    /// A log file's lines, without the per-request access lines.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("tenancy_control::access"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.postgres.is_some() {
            let _ = self
                .command_as(&self.bins.bin("pg_ctl"))
                .arg("stop")
                .arg("-D")
                .arg(self.pgdata())
                .args(["-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(mut c) = self.postgres.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback TCP port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
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
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The value of `NAME=value` on a line of `out`.
fn printed(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} not printed:\n{out}"))
        .to_owned()
}

/// Waits for `ready` to hold, up to `within`; `what` and `diagnose` explain a timeout.
fn wait_for(
    within: Duration,
    what: &str,
    mut ready: impl FnMut() -> bool,
    diagnose: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} (waited {within:?})\n{}",
            diagnose()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The CA, and a certificate it signed for `localhost` and `127.0.0.1` (PostgreSQL's and
/// PgBouncer's), written into `dir`: `ca.crt`, `server.crt`, `server.key`.
fn make_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("tls dir");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "own-postgres test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca.self_signed(&ca_key).expect("sign CA");
    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&key, &ca, &ca_key).expect("sign server");
    for (name, text, mode) in [
        ("ca.crt", ca.pem(), 0o644),
        ("server.crt", server.pem(), 0o644),
        ("server.key", key.serialize_pem(), 0o600),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write certificate");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

/// Connects as the superuser over the server's Unix socket, waiting up to 30 s for the
/// server to accept connections.
async fn superuser(stack: &Stack, port: u16, dbname: &str) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(stack.socket_dir())
        .port(port)
        .user("postgres")
        .dbname(dbname);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match cfg.connect(tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                return client;
            }
            Err(e) => assert!(
                Instant::now() < deadline,
                "PostgreSQL did not accept the superuser over its socket: {e}\n{}",
                stack.log("postgres.log")
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn your_own_postgres_with_tls_goes_from_nothing_to_a_tenant_served_through_pgbouncer() {
    let tenancy_bin = PathBuf::from(env!("CARGO_BIN_EXE_tenancy"));
    let invoicing_bin = tenancy_bin.with_file_name("invoicing");
    assert!(
        invoicing_bin.is_file(),
        "the example app's binary {} is missing: build it with `cargo build -p invoicing` (cargo test --workspace builds it)",
        invoicing_bin.display()
    );
    let built = std::fs::metadata(&invoicing_bin)
        .and_then(|m| m.modified())
        .expect("the example app's binary");
    let app_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/invoicing");
    for sub in ["src", "migrations"] {
        for entry in std::fs::read_dir(app_dir.join(sub)).expect("the example app's sources") {
            let path = entry.expect("entry").path();
            let changed = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            assert!(
                changed <= built,
                "{} is newer than {}: rebuild it with `cargo build -p invoicing`",
                path.display(),
                invoicing_bin.display()
            );
        }
    }
    PgBouncer::locate().expect("pgbouncer (apt-get install pgbouncer)");
    let bins = PgBinaries::locate().expect("PostgreSQL server binaries");
    let root = std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0);
    let dir = std::env::temp_dir().join(format!(
        "tenancy-own-pg-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("test dir");
    let mut stack = Stack {
        dir,
        run_as: root.then(|| "postgres".to_owned()),
        bins,
        postgres: None,
        children: Vec::new(),
    };

    // 1. PostgreSQL, by hand: initdb, a CA and a server certificate, ssl=on, and pg_hba
    // taking TCP over TLS with SCRAM only (the superuser on the private socket only).
    let tls = stack.dir.join("tls");
    make_certificates(&tls);
    let ca = tls.join("ca.crt");
    std::fs::create_dir_all(stack.socket_dir()).expect("socket dir");
    stack.chown(&stack.dir);
    let out = stack
        .command_as(&stack.bins.bin("initdb"))
        .arg("-D")
        .arg(stack.pgdata())
        .args([
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=reject",
        ])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let hba = stack.pgdata().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "local     all all             trust\n\
         hostssl   all all 127.0.0.1/32 scram-sha-256\n\
         hostnossl all all all          reject\n",
    )
    .expect("pg_hba.conf");
    stack.chown(&hba);
    let pg_port = free_port();
    let pg_log = std::fs::File::create(stack.dir.join("postgres.log")).expect("log");
    let mut cmd = stack.command_as(&stack.bins.bin("postgres"));
    cmd.arg("-D").arg(stack.pgdata());
    for setting in [
        format!("port={pg_port}"),
        "listen_addresses=127.0.0.1".to_owned(),
        format!("unix_socket_directories={}", stack.socket_dir().display()),
        "ssl=on".to_owned(),
        format!("ssl_cert_file={}", tls.join("server.crt").display()),
        format!("ssl_key_file={}", tls.join("server.key").display()),
        "fsync=off".to_owned(),
    ] {
        cmd.arg("-c").arg(setting);
    }
    stack.postgres = Some(
        cmd.stdin(Stdio::null())
            .stdout(pg_log.try_clone().expect("log"))
            .stderr(pg_log)
            .spawn()
            .expect("start postgres"),
    );
    let su = superuser(&stack, pg_port, "postgres").await;
    let native_offered: bool = su
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'tenancy_context')",
            &[],
        )
        .await
        .expect("available extensions")
        .get(0);
    if tenancy_pg::native_required() {
        assert!(
            native_offered,
            "TENANCY_REQUIRE_NATIVE=1 and this PostgreSQL {} does not offer the tenancy_context extension: \
             make -C extensions/tenancy_context PG_CONFIG={}/pg_config with_llvm=no install",
            stack.bins.major(),
            stack.bins.dir().display()
        );
    }

    // 2. The admin a managed service hands out: CREATEROLE, owner of the database, no
    // superuser. Then `tenancy bootstrap` as that admin, over TLS, verify-full.
    for sql in [
        "CREATE ROLE admin LOGIN CREATEROLE NOSUPERUSER NOCREATEDB PASSWORD 'admin-own-pg'",
        "CREATE DATABASE app OWNER admin",
    ] {
        su.batch_execute(sql)
            .await
            .expect("admin role and database");
    }
    let admin_url = format!(
        "postgres://admin:admin-own-pg@127.0.0.1:{pg_port}/app?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let o = tenancy(
        &["bootstrap", "--database-url", &admin_url, "--dry-run"],
        &[],
    );
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "bootstrap --dry-run: {out}\n{err}");
    assert!(out.contains("CREATE ROLE tenancy_owner"), "{out}");
    let roles: i64 = su
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenancy%'",
            &[],
        )
        .await
        .expect("roles")
        .get(0);
    assert_eq!(roles, 0, "the dry run created nothing");

    let o = tenancy(&["bootstrap", "--database-url", &admin_url], &[]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "bootstrap: {out}\n{err}");
    let expected = if native_offered { "native" } else { "PL/pgSQL" };
    assert!(
        out.contains(&format!("signed context: {expected})")),
        "the bootstrap reports the {expected} context:\n{out}"
    );
    let owner_password = printed(&out, "TENANCY_OWNER_PASSWORD");
    let runtime_password = printed(&out, "TENANCY_RUNTIME_PASSWORD");
    let worker_password = printed(&out, "TENANCY_WORKER_PASSWORD");
    let reader_password = printed(&out, "TENANCY_CONFIG_READER_PASSWORD");
    let key_hex = printed(&out, "TENANCY_CONTEXT_KEY_HEX");
    let serve_line = out
        .lines()
        .find(|l| l.trim_end().ends_with("tenancy serve"))
        .unwrap_or_else(|| panic!("no `… tenancy serve` line:\n{out}"));
    let database_url = serve_line
        .split_once("DATABASE_URL='")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(url, _)| url.to_owned())
        .unwrap_or_else(|| panic!("no DATABASE_URL in {serve_line}"));
    let cluster_admin = printed(&serve_line.replace(' ', "\n"), "TENANCY_CLUSTER_ADMIN_USER");
    assert!(
        serve_line.contains("TENANCY_CLUSTER_ADMIN_PASSWORD="),
        "the serve line names every secret serve needs: {serve_line}"
    );
    assert!(
        database_url.contains("sslmode=verify-full")
            && database_url.contains(&format!("sslrootcert={}", ca.display())),
        "{database_url}"
    );

    // 3. PgBouncer in transaction mode: verify-full to PostgreSQL, TLS from its clients,
    // the runtime role's SCRAM login.
    let bouncer = PgBouncer::start_upstream(
        PgBouncerUpstream {
            host: "127.0.0.1".into(),
            port: pg_port,
            sslmode: "verify-full".into(),
            ca_file: Some(ca.clone()),
        },
        PgBouncerOptions {
            passwords: vec![(RUNTIME_ROLE.to_owned(), runtime_password.clone())],
            client_tls: Some(PgBouncerTls {
                cert_file: tls.join("server.crt"),
                key_file: tls.join("server.key"),
            }),
            default_pool_size: 3,
            ..Default::default()
        },
    )
    .await
    .expect("pgbouncer");

    // 4. `tenancy serve` with the printed line, the cluster declared with its direct
    // address (for the control plane) and PgBouncer's (for the applications' tenant
    // pools); two tenants sign up and become active.
    let config = stack.dir.join("tenancy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nworkers = 2\n\
             [region_names]\neu-west = \"Europe\"\n\
             [[clusters]]\nname = \"pg-eu-1\"\nregion = \"eu-west\"\nhost = \"127.0.0.1\"\n\
             port = {pg_port}\ndbname = \"app\"\ncapacity = 100\n\
             pooler_host = \"127.0.0.1\"\npooler_port = {}\n",
            bouncer.port()
        ),
    )
    .expect("tenancy.toml");
    let serve_log = std::fs::File::create(stack.dir.join("serve.log")).expect("log");
    let mut serve = Command::new(&tenancy_bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("TENANCY_CONFIG")
        .env_remove("TENANCY_DATABASE_URL")
        .env("DATABASE_URL", &database_url)
        .env("TENANCY_CONTEXT_KEY_HEX", &key_hex)
        .env("TENANCY_OWNER_PASSWORD", &owner_password)
        .env("TENANCY_RUNTIME_PASSWORD", &runtime_password)
        .env("TENANCY_CONFIG_READER_PASSWORD", &reader_password)
        .env("TENANCY_CLUSTER_ADMIN_USER", &cluster_admin)
        .env("TENANCY_CLUSTER_ADMIN_PASSWORD", "admin-own-pg")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(serve_log)
        .spawn()
        .expect("start tenancy serve");
    let stdout = serve.stdout.take().expect("stdout");
    stack.children.push(serve);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut control, mut admin_token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.is_none() || admin_token.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!(
                "tenancy serve did not print its port and admin token:\n{}",
                stack.log("serve.log")
            );
        };
        if let Some(rest) = line.strip_prefix("tenancy control plane on http://127.0.0.1:") {
            control = rest.trim().parse::<u16>().ok();
        }
        if let Some(token) = line.strip_prefix("admin token (shown once): ") {
            admin_token = Some(token.trim().to_owned());
        }
    }
    let (control, admin_token) = (control.expect("port"), admin_token.expect("token"));
    let bearer = format!("Bearer {admin_token}");
    let mut tenants = Vec::new();
    for slug in ["acme", "globex"] {
        let (s, body) = http(
            control,
            "POST",
            "/v1/signup",
            "127.0.0.1",
            &[("Idempotency-Key", &format!("own-pg-{slug}"))],
            Some(&format!(r#"{{"slug":"{slug}","display_name":"{slug}"}}"#)),
        );
        assert_eq!(s, 202, "signup {slug}: {body}");
        let id = json(&body)["tenant"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no tenant id in {body}"))
            .to_owned();
        tenants.push((slug, id));
    }
    for (slug, id) in &tenants {
        wait_for(
            Duration::from_secs(60),
            &format!("{slug} never became active"),
            || {
                let (_, body) = http(
                    control,
                    "GET",
                    &format!("/v1/tenants/{id}"),
                    "127.0.0.1",
                    &[("Authorization", &bearer)],
                    None,
                );
                json(&body)["state"] == "active"
            },
            || {
                let (_, workflows) = http(
                    control,
                    "GET",
                    &format!("/v1/tenants/{id}/workflows"),
                    "127.0.0.1",
                    &[("Authorization", &bearer)],
                    None,
                );
                format!(
                    "workflows: {workflows}\nserve log:\n{}",
                    stack.log("serve.log")
                )
            },
        );
    }

    // 5. The example app: catalog, migrations and job queue direct over TLS, tenant data
    // through PgBouncer over TLS; a token for each tenant from the app's binary.
    let pg_url = |user: &str, password: &str| {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{pg_port}/app?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };
    let app_port = free_port();
    let jwt_secret = "own-postgres-jwt-secret-0123456789abcdef";
    let app_log = std::fs::File::create(stack.dir.join("invoicing.log")).expect("log");
    let app = Command::new(&invoicing_bin)
        .env(
            "INVOICING_DATABASE_URL",
            pg_url(RUNTIME_ROLE, &runtime_password),
        )
        .env(
            "INVOICING_OWNER_DATABASE_URL",
            pg_url("tenancy_owner", &owner_password),
        )
        .env(
            "INVOICING_WORKER_DATABASE_URL",
            pg_url(WORKER_ROLE, &worker_password),
        )
        .env("TENANCY_CONTEXT_KEY", format!("k1:{key_hex}"))
        .env("INVOICING_JWT_SECRET", jwt_secret)
        .env("INVOICING_JOB_KEY", "5a".repeat(32))
        .env("TENANCY_POOLER", "transaction")
        .env("INVOICING_LISTEN", format!("127.0.0.1:{app_port}"))
        .env("INVOICING_BASE_DOMAIN", "invoicing.localhost")
        .stdin(Stdio::null())
        .stdout(app_log.try_clone().expect("log"))
        .stderr(app_log)
        .spawn()
        .expect("start the example app");
    stack.children.push(app);
    wait_for(
        Duration::from_secs(60),
        "the example app did not answer /health",
        || {
            std::net::TcpStream::connect(("127.0.0.1", app_port)).is_ok()
                && http(app_port, "GET", "/health", "127.0.0.1", &[], None).0 == 200
        },
        || stack.log("invoicing.log"),
    );
    let token = |id: &str| {
        let o = Command::new(&invoicing_bin)
            .args(["token", id])
            .env("INVOICING_JWT_SECRET", jwt_secret)
            .output()
            .expect("invoicing token");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        format!("Bearer {}", String::from_utf8_lossy(&o.stdout).trim())
    };
    let (acme, globex) = (token(&tenants[0].1), token(&tenants[1].1));

    // A write and a read as acme, through PgBouncer.
    let (s, body) = http(
        app_port,
        "POST",
        "/customers",
        "127.0.0.1",
        &[("Authorization", &acme)],
        Some(r#"{"name":"Wile E. Coyote","email":"wile@acme.example"}"#),
    );
    assert_eq!(
        s,
        201,
        "create a customer as acme: {body}\n{}",
        stack.log("invoicing.log")
    );
    let (s, body) = http(
        app_port,
        "GET",
        "/customers",
        "127.0.0.1",
        &[("Authorization", &acme)],
        None,
    );
    assert_eq!(s, 200, "{body}");
    let names: Vec<String> = json(&body)
        .as_array()
        .unwrap_or_else(|| panic!("a list: {body}"))
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["Wile E. Coyote"]);
    // globex sees none of it; without a credential: 401; globex's token on acme's
    // subdomain: 403.
    let (s, body) = http(
        app_port,
        "GET",
        "/customers",
        "127.0.0.1",
        &[("Authorization", &globex)],
        None,
    );
    assert_eq!((s, json(&body)), (200, serde_json::json!([])), "{body}");
    let (s, body) = http(app_port, "GET", "/customers", "127.0.0.1", &[], None);
    assert_eq!(s, 401, "{body}");
    let (s, body) = http(
        app_port,
        "GET",
        "/customers",
        "acme.invoicing.localhost",
        &[("Authorization", &globex)],
        None,
    );
    assert_eq!(s, 403, "{body}");
    assert_eq!(json(&body)["code"], "tenant-mismatch", "{body}");

    // The tenant data went through PgBouncer: without it, acme's requests fail.
    bouncer.stop().await;
    let (s, body) = http(
        app_port,
        "GET",
        "/customers",
        "127.0.0.1",
        &[("Authorization", &acme)],
        None,
    );
    assert!(s >= 500, "served without PgBouncer: {s} {body}");
    drop(su);
    drop(stack);
}
