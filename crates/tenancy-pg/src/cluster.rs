use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{io_err, HarnessError, PgBinaries};

/// How to create and start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the data directory goes. `None` makes a private temporary directory that is
    /// removed when the cluster stops; `Some` keeps the data (and reuses it next time).
    pub data_dir: Option<PathBuf>,
    /// Listen on this loopback TCP port as well as the Unix socket; `Some(0)` picks a free
    /// port. `None` listens on the Unix socket only.
    pub tcp_port: Option<u16>,
    /// Name of the bootstrap superuser created by `initdb`.
    pub superuser: String,
    /// Turn off durability (`fsync`, `synchronous_commit`, `full_page_writes`) for speed.
    /// Only for throw-away clusters (tests, demo): a crash can corrupt the data.
    pub ephemeral: bool,
    /// Extra `postgresql.conf` settings passed with `-c name=value`.
    pub settings: Vec<(String, String)>,
    /// Serve TLS on TCP with certificates from a CA made for this cluster (implies TCP:
    /// a free port when `tcp_port` is `None`). TCP connections must then use TLS.
    pub tls: Option<ClusterTls>,
}

/// TLS for a test cluster: a CA generated at start, a server certificate it signed for
/// `localhost` and `127.0.0.1`, and client certificates on demand
/// ([`Cluster::issue_client_cert`]).
#[derive(Debug, Clone, Default)]
pub struct ClusterTls {
    /// Roles that log in over TCP with a client certificate (pg_hba `cert`: the
    /// certificate's common name must be the role's name) instead of a password.
    pub cert_roles: Vec<String>,
}

/// A test cluster's TLS material. The CA's key stays in memory, to sign client
/// certificates; files are in `dir`.
struct TlsMaterial {
    /// Holds `ca.crt` (for `sslrootcert`), the server's certificate and key, and issued
    /// client certificates.
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> HarnessError + '_ {
    move |e| HarnessError::Command {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

impl TlsMaterial {
    /// Makes the CA and the server's certificate, and writes them into `dir` (created).
    /// `chown` gives a file to the server's user.
    fn create(
        dir: PathBuf,
        chown: &dyn Fn(&Path) -> Result<(), HarnessError>,
    ) -> Result<TlsMaterial, HarnessError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        chown(&dir)?;
        let ca_key = KeyPair::generate().map_err(tls_err("generating the test CA key"))?;
        let mut ca =
            CertificateParams::new(Vec::<String>::new()).map_err(tls_err("making the test CA"))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tenancy test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca
            .self_signed(&ca_key)
            .map_err(tls_err("signing the test CA"))?;
        let server_key = KeyPair::generate().map_err(tls_err("generating the server key"))?;
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(tls_err("making the server certificate"))?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server
            .signed_by(&server_key, &ca, &ca_key)
            .map_err(tls_err("signing the server certificate"))?;
        let m = TlsMaterial { dir, ca, ca_key };
        m.write("ca.crt", &m.ca.pem(), 0o644, chown)?;
        m.write("server.crt", &server.pem(), 0o644, chown)?;
        m.write("server.key", &server_key.serialize_pem(), 0o600, chown)?;
        Ok(m)
    }

    fn write(
        &self,
        name: &str,
        contents: &str,
        mode: u32,
        chown: &dyn Fn(&Path) -> Result<(), HarnessError>,
    ) -> Result<PathBuf, HarnessError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("chmod {}", path.display())))?;
        chown(&path)?;
        Ok(path)
    }
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            data_dir: None,
            tcp_port: None,
            superuser: "postgres".into(),
            ephemeral: false,
            settings: Vec::new(),
            tls: None,
        }
    }
}

impl ClusterOptions {
    /// Options for a throw-away test cluster: temporary directory, Unix socket only, no
    /// durability, enough connections for parallel tests.
    pub fn for_tests() -> Self {
        ClusterOptions {
            ephemeral: true,
            settings: vec![("max_connections".into(), "300".into())],
            ..Default::default()
        }
    }
}

/// A running private PostgreSQL cluster.
///
/// Dropping it stops the server (fast shutdown) and, for a temporary cluster, removes
/// its directory. If this process dies instead, the watchdog does the same.
#[derive(Debug)]
pub struct Cluster {
    /// Data directory; the Unix socket lives here too.
    data_dir: PathBuf,
    /// Port number: the TCP port when listening on TCP, else only the socket's name.
    port: u16,
    /// Whether the server also listens on 127.0.0.1.
    tcp: bool,
    /// Bootstrap superuser name.
    superuser: String,
    /// The watchdog shell that owns the postmaster.
    watchdog: Watchdog,
    /// Major version of the server.
    major: u32,
    /// The CA and certificates of a TLS cluster.
    tls: Option<TlsMaterial>,
}

pub(crate) fn current_euid() -> Option<u32> {
    let out = Command::new("id").arg("-u").output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
    let uid = Command::new("id").args(["-u", name]).output().ok()?;
    let gid = Command::new("id").args(["-g", name]).output().ok()?;
    if !uid.status.success() || !gid.status.success() {
        return None;
    }
    let uid = String::from_utf8_lossy(&uid.stdout).trim().parse().ok()?;
    let gid = String::from_utf8_lossy(&gid.stdout).trim().parse().ok()?;
    Some((uid, gid))
}

/// A user name and its uid and gid.
pub(crate) type RunAs = (String, (u32, u32));

/// As root: the unprivileged user (and its uid, gid) to run servers as (`initdb`,
/// `postgres` and `pgbouncer` refuse root); `None` when not root.
pub(crate) fn unprivileged_user() -> Result<Option<RunAs>, HarnessError> {
    if current_euid() != Some(0) {
        return Ok(None);
    }
    let candidates = match std::env::var("TENANCY_PG_USER") {
        Ok(u) => vec![u],
        Err(_) => vec!["postgres".to_owned(), "nobody".to_owned()],
    };
    let found = candidates
        .iter()
        .find_map(|u| user_ids(u).map(|ids| (u.clone(), ids)));
    match found {
        Some(found) => Ok(Some(found)),
        None => Err(HarnessError::NoUnprivilegedUser {
            tried: candidates.join(", "),
        }),
    }
}

/// Gives `p` to the unprivileged user the server runs as, when there is one.
pub(crate) fn chown_to(run_as: Option<&RunAs>, p: &Path) -> Result<(), HarnessError> {
    if let Some((_, (uid, gid))) = run_as {
        std::os::unix::fs::chown(p, Some(*uid), Some(*gid))
            .map_err(io_err(format!("chown {}", p.display())))?;
    }
    Ok(())
}

/// Builds a command that runs `program` as `run_as` (when root) or as ourselves.
pub(crate) fn command_as(run_as: Option<&str>, program: &Path) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

pub(crate) fn free_tcp_port() -> Result<u16, HarnessError> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free TCP port"))?;
    let port = l
        .local_addr()
        .map_err(io_err("finding a free TCP port"))?
        .port();
    Ok(port)
}

/// Whether a server (PostgreSQL, or a pooler in front of it) at `cfg` accepts a connection
/// and answers a query within 2 s.
pub(crate) fn accepts_queries(rt: &tokio::runtime::Runtime, cfg: &tokio_postgres::Config) -> bool {
    rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(2), cfg.connect(tokio_postgres::NoTls)).await
        {
            Ok(Ok((client, conn))) => {
                let h = tokio::spawn(conn);
                let r = client.simple_query("SELECT 1").await.is_ok();
                drop(client);
                let _ = h.await;
                r
            }
            _ => false,
        }
    })
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The watchdog: starts the postmaster in the background, then blocks reading stdin.
/// When stdin reaches end of file (we dropped the pipe, or our process died), it asks the
/// postmaster for a fast shutdown, waits for it, and removes a temporary directory. It
/// ignores SIGINT, SIGTERM and SIGHUP (after starting the postmaster, which keeps its own
/// handlers), so a signal sent to the whole process group (Ctrl-C in a terminal, `kill
/// -TERM -PGID`) does not kill it before it has cleaned up.
const WATCHDOG: &str = r#"
log="$1"; cleanup="$2"; shift 2
"$@" >>"$log" 2>&1 &
pid=$!
trap '' INT TERM HUP
while read -r _line; do :; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
"#;

impl Cluster {
    /// Creates (if needed) and starts a cluster, waiting until it accepts connections.
    pub async fn start(opts: ClusterOptions) -> Result<Cluster, HarnessError> {
        tokio::task::spawn_blocking(move || Self::start_blocking(opts))
            .await
            .map_err(|e| HarnessError::Command {
                what: "starting PostgreSQL".into(),
                detail: e.to_string(),
            })?
    }

    fn start_blocking(opts: ClusterOptions) -> Result<Cluster, HarnessError> {
        let bins = PgBinaries::locate()?;
        let run_as = unprivileged_user()?;
        let chown = |p: &Path| chown_to(run_as.as_ref(), p);

        let (data_dir, cleanup) = match &opts.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                let base =
                    std::env::temp_dir().join(format!("tenancy-pg-{:016x}", rand::random::<u64>()));
                std::fs::create_dir(&base)
                    .map_err(io_err(format!("creating {}", base.display())))?;
                chown(&base)?;
                (base.join("data"), Some(base))
            }
        };
        use std::os::unix::fs::PermissionsExt;
        if !data_dir.exists() {
            std::fs::create_dir(&data_dir)
                .map_err(io_err(format!("creating {}", data_dir.display())))?;
        }
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("chmod {}", data_dir.display())))?;
        chown(&data_dir)?;
        let user = run_as.as_ref().map(|(u, _)| u.as_str());

        if !data_dir.join("PG_VERSION").exists() {
            let out = command_as(user, &bins.bin("initdb"))
                .arg("-D")
                .arg(&data_dir)
                .args([
                    "-U",
                    &opts.superuser,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .stdin(Stdio::null())
                .output()
                .map_err(io_err("running initdb"))?;
            if !out.status.success() {
                return Err(HarnessError::Command {
                    what: format!("initdb -D {}", data_dir.display()),
                    detail: format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                });
            }
        }

        let (port, tcp) = match opts.tcp_port {
            Some(0) => (free_tcp_port()?, true),
            None if opts.tls.is_some() => (free_tcp_port()?, true),
            Some(p) => (p, true),
            // The socket file is named after the port; any number works, the directory is ours.
            None => (5432, false),
        };
        let mut settings: Vec<(String, String)> = vec![
            ("port".into(), port.to_string()),
            (
                "listen_addresses".into(),
                if tcp {
                    "127.0.0.1".into()
                } else {
                    String::new()
                },
            ),
            (
                "unix_socket_directories".into(),
                data_dir.display().to_string(),
            ),
            ("unix_socket_permissions".into(), "0700".into()),
            ("logging_collector".into(), "off".into()),
            ("dynamic_shared_memory_type".into(), "posix".into()),
        ];
        if opts.ephemeral {
            for (k, v) in [
                ("fsync", "off"),
                ("synchronous_commit", "off"),
                ("full_page_writes", "off"),
            ] {
                settings.push((k.into(), v.into()));
            }
        }
        let tls = match &opts.tls {
            Some(t) => {
                let m = TlsMaterial::create(data_dir.join("tls"), &chown)?;
                let hba = data_dir.join("tenancy_tls_hba.conf");
                let mut rules = String::from("local all all trust\n");
                if !t.cert_roles.is_empty() {
                    rules.push_str(&format!(
                        "hostssl all {} 127.0.0.1/32 cert\n",
                        t.cert_roles.join(",")
                    ));
                }
                rules.push_str(
                    "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all all reject\n",
                );
                std::fs::write(&hba, rules)
                    .map_err(io_err(format!("writing {}", hba.display())))?;
                chown(&hba)?;
                for (k, v) in [
                    ("ssl", "on".to_owned()),
                    (
                        "ssl_cert_file",
                        m.dir.join("server.crt").display().to_string(),
                    ),
                    (
                        "ssl_key_file",
                        m.dir.join("server.key").display().to_string(),
                    ),
                    ("ssl_ca_file", m.dir.join("ca.crt").display().to_string()),
                    ("hba_file", hba.display().to_string()),
                ] {
                    settings.push((k.into(), v));
                }
                Some(m)
            }
            None => None,
        };
        settings.extend(opts.settings.iter().cloned());
        // tenancy's native tenant context (library, and extension files on 18+), when one
        // was built for this server; settings given in `opts` win.
        for (k, v) in crate::native::install_into_data_dir(
            &data_dir,
            bins.major(),
            crate::native::native_required(),
            &chown,
        )? {
            if !settings.iter().any(|(name, _)| *name == k) {
                settings.push((k, v));
            }
        }

        let log = data_dir.join("tenancy-postgres.log");
        let mut cmd = command_as(user, Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("tenancy-pg-watchdog")
            .arg(&log);
        cmd.arg(
            cleanup
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
        cmd.arg(bins.bin("postgres")).arg("-D").arg(&data_dir);
        for (k, v) in &settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(io_err("starting the PostgreSQL watchdog"))?;
        let mut cluster = Cluster {
            data_dir,
            port,
            tcp,
            superuser: opts.superuser.clone(),
            watchdog: Watchdog::new(child),
            major: bins.major(),
            tls,
        };
        cluster.wait_ready(&log)?;
        if crate::native::native_required() {
            cluster.check_native_loads(&log)?;
        }
        tracing::info!(data_dir = %cluster.data_dir.display(), port, tcp, "PostgreSQL cluster started");
        Ok(cluster)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("building a runtime"))?;
        loop {
            let cfg = self.config("postgres");
            let ok = accepts_queries(&rt, &cfg);
            if ok {
                return Ok(());
            }
            let exited = self.watchdog.exited();
            if exited || Instant::now() > deadline {
                return Err(HarnessError::StartTimeout {
                    secs: 60,
                    log: log.display().to_string(),
                    tail: tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Under `TENANCY_REQUIRE_NATIVE=1`: fails unless the server loads the native library
    /// (its SHA-256 self-test runs when it loads).
    fn check_native_loads(&self, log: &Path) -> Result<(), HarnessError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("building a runtime"))?;
        let cfg = self.config("postgres");
        let result = rt.block_on(async {
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
            let h = tokio::spawn(conn);
            let r = client
                .batch_execute(&format!("LOAD '{}'", crate::NATIVE_LIBRARY_NAME))
                .await;
            drop(client);
            let _ = h.await;
            r
        });
        result.map_err(|e| HarnessError::NativeMissing {
            major: self.major,
            detail: format!(
                "the server could not load it ({}); see {}",
                e.as_db_error()
                    .map(|d| d.message().to_owned())
                    .unwrap_or_else(|| e.to_string()),
                log.display()
            ),
        })
    }

    /// The data directory (the Unix socket is inside it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory of the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The port (TCP port when listening on TCP).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the cluster listens on 127.0.0.1 as well.
    pub fn listens_on_tcp(&self) -> bool {
        self.tcp
    }

    /// The CA certificate (PEM file) that signed a TLS cluster's server certificate: what
    /// clients name in `sslrootcert`. `None` without TLS.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|t| t.dir.join("ca.crt"))
    }

    /// Issues a client certificate for `role` (its common name), signed by the cluster's
    /// CA, and writes it and its key (mode 0600, owned by this process's user) to the
    /// cluster's TLS directory. Returns (certificate file, key file), for `sslcert` and
    /// `sslkey`.
    pub fn issue_client_cert(&self, role: &str) -> Result<(PathBuf, PathBuf), HarnessError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let Some(t) = &self.tls else {
            return Err(HarnessError::Command {
                what: format!("issuing a client certificate for {role}"),
                detail: "the cluster was started without TLS (ClusterOptions::tls)".into(),
            });
        };
        let key = KeyPair::generate().map_err(tls_err("generating a client key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(tls_err("making a client certificate"))?;
        params.distinguished_name.push(DnType::CommonName, role);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &t.ca, &t.ca_key)
            .map_err(tls_err("signing a client certificate"))?;
        let own = |_: &Path| Ok(());
        let cert_file = t.write(&format!("client-{role}.crt"), &cert.pem(), 0o644, &own)?;
        let key_file = t.write(
            &format!("client-{role}.key"),
            &key.serialize_pem(),
            0o600,
            &own,
        )?;
        Ok((cert_file, key_file))
    }

    /// The bootstrap superuser's name.
    pub fn superuser(&self) -> &str {
        &self.superuser
    }

    /// The server's major version.
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// Connection settings for the superuser on database `dbname`, over the Unix socket.
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        self.config_as(&self.superuser, dbname)
    }

    /// Connection settings for `user` on database `dbname`, over the Unix socket.
    pub fn config_as(&self, user: &str, dbname: &str) -> tokio_postgres::Config {
        let mut c = config_at(self.port, user, dbname);
        c.host_path(&self.data_dir);
        c
    }

    /// A libpq-style connection string for `user` on `dbname` over the Unix socket.
    pub fn url_as(&self, user: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.data_dir.display(),
            self.port,
            user,
            dbname
        )
    }

    /// Connects as the superuser to `dbname`, driving the connection on the current runtime.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, HarnessError> {
        connect(&self.config(dbname)).await
    }

    /// Stops the server and waits for it to exit.
    pub async fn stop(mut self) {
        self.watchdog.stop().await;
    }
}

/// Connection settings for `user` on `dbname` at `port`, with the application name
/// `tenancy`; the caller adds the host.
pub(crate) fn config_at(port: u16, user: &str, dbname: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.port(port)
        .user(user)
        .dbname(dbname)
        .application_name("tenancy");
    c
}

/// A watchdog shell that owns a server process (the postmaster, or PgBouncer) and stops it
/// when its stdin closes: when [`Watchdog::stop`] is called, when the handle is dropped,
/// or when this process dies (only this process holds the write end of the pipe).
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Option<Child>,
    stop_pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Takes over `child`, spawned with a piped stdin.
    pub(crate) fn new(mut child: Child) -> Self {
        let stop_pipe = child.stdin.take();
        Watchdog {
            child: Some(child),
            stop_pipe,
        }
    }

    /// Whether the watchdog (and so its server) has already exited.
    pub(crate) fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
            .is_some()
    }

    /// Stops the server and waits for the watchdog to exit, off the async threads.
    pub(crate) async fn stop(&mut self) {
        let stop_pipe = self.stop_pipe.take();
        let child = self.child.take();
        let _ = tokio::task::spawn_blocking(move || {
            drop(stop_pipe);
            if let Some(mut c) = child {
                let _ = c.wait();
            }
        })
        .await;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop_pipe.take());
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Connects with `cfg` and spawns the connection task on the current runtime.
pub async fn connect(cfg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, HarnessError> {
    let (client, conn) =
        cfg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| HarnessError::Sql {
                what: format!(
                    "connecting to {:?} as {:?}",
                    cfg.get_dbname().unwrap_or(""),
                    cfg.get_user().unwrap_or("")
                ),
                source,
            })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "harness connection closed");
        }
    });
    Ok(client)
}
