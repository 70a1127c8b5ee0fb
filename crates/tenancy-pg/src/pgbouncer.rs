//! PgBouncer in front of a private [`Cluster`], or of a server reached over TCP (with TLS
//! to it and from its clients, and SCRAM logins), for tests and benchmarks of tenancy
//! behind a transaction pooler.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cluster::{
    accepts_queries, chown_to, command_as, free_tcp_port, tail, unprivileged_user, Watchdog,
};
use crate::{io_err, Cluster, HarnessError};

/// How to start a [`PgBouncer`].
#[derive(Debug, Clone)]
pub struct PgBouncerOptions {
    /// `pool_mode`: `transaction` (the default), `session` or `statement`.
    pub pool_mode: String,
    /// Roles that may log in through it (PgBouncer's `auth_file`; authentication is
    /// `trust`, and the cluster trusts its Unix socket).
    pub users: Vec<String>,
    /// Server connections per database and user.
    pub default_pool_size: u32,
    /// Client connections it accepts.
    pub max_client_conn: u32,
    /// Logins checked with SCRAM (`auth_type = scram-sha-256`): each role and its
    /// password, which PgBouncer also uses to log in to the server. When not empty it
    /// replaces `users` and `trust`.
    pub passwords: Vec<(String, String)>,
    /// TLS for its clients (`client_tls_sslmode = require`): the certificate and key it
    /// presents. `None`: clients connect in plaintext.
    pub client_tls: Option<PgBouncerTls>,
}

/// A certificate (PEM chain) and its private key (PEM) for PgBouncer to present to its
/// clients.
#[derive(Debug, Clone)]
pub struct PgBouncerTls {
    /// `client_tls_cert_file`.
    pub cert_file: PathBuf,
    /// `client_tls_key_file`.
    pub key_file: PathBuf,
}

/// A PostgreSQL server PgBouncer reaches over TCP (one tenancy did not start), for
/// [`PgBouncer::start_upstream`].
#[derive(Debug, Clone)]
pub struct PgBouncerUpstream {
    /// Host name or address (also the name `verify-full` checks).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `server_tls_sslmode`: `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub sslmode: String,
    /// `server_tls_ca_file`: the CA the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        PgBouncerOptions {
            pool_mode: "transaction".into(),
            users: Vec::new(),
            default_pool_size: 20,
            max_client_conn: 500,
            passwords: Vec::new(),
            client_tls: None,
        }
    }
}

/// A running `pgbouncer` listening on a loopback TCP port, forwarding every database to a
/// cluster's Unix socket. Stopped when dropped or when this process dies (a watchdog
/// shell, as for [`Cluster`]).
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    dir: PathBuf,
    watchdog: Watchdog,
}

/// Starts the program in the background and, when stdin reaches end of file, stops it
/// at once (SIGTERM: PgBouncer's immediate shutdown) and removes its directory.
const WATCHDOG: &str = r#"
log="$1"; cleanup="$2"; shift 2
"$@" >>"$log" 2>&1 &
pid=$!
while read -r _line; do :; done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
"#;

impl PgBouncer {
    /// The `pgbouncer` program: `TENANCY_PGBOUNCER`, else Debian's `/usr/sbin/pgbouncer`,
    /// else `/usr/bin/pgbouncer`.
    pub fn locate() -> Result<PathBuf, HarnessError> {
        let candidates: Vec<PathBuf> = match std::env::var_os("TENANCY_PGBOUNCER") {
            Some(p) => vec![PathBuf::from(p)],
            None => vec![
                PathBuf::from("/usr/sbin/pgbouncer"),
                PathBuf::from("/usr/bin/pgbouncer"),
            ],
        };
        candidates
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| HarnessError::Command {
                what: "finding pgbouncer".into(),
                detail: format!(
                    "not found (looked at {}); install it (`apt-get install pgbouncer`) or set TENANCY_PGBOUNCER",
                    candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// Starts PgBouncer in front of `cluster` and waits until it accepts connections.
    pub async fn start(
        cluster: &Cluster,
        opts: PgBouncerOptions,
    ) -> Result<PgBouncer, HarnessError> {
        let socket_dir = cluster.socket_dir().to_path_buf();
        let server_port = cluster.port();
        let probe_user = cluster.superuser().to_owned();
        tokio::task::spawn_blocking(move || {
            Self::start_blocking(&socket_dir, server_port, &probe_user, opts)
        })
        .await
        .map_err(|e| HarnessError::Command {
            what: "starting pgbouncer".into(),
            detail: e.to_string(),
        })?
    }

    /// Starts PgBouncer in front of a server reached over TCP (`server_tls_*` from
    /// `upstream`), and waits until it listens. Give `opts.passwords` for servers that ask
    /// for a password, and `opts.client_tls` to take TLS from clients.
    pub async fn start_upstream(
        upstream: PgBouncerUpstream,
        opts: PgBouncerOptions,
    ) -> Result<PgBouncer, HarnessError> {
        tokio::task::spawn_blocking(move || {
            let mut server = format!("host={} port={}", upstream.host, upstream.port);
            let mut tls = format!("server_tls_sslmode = {}\n", upstream.sslmode);
            if let Some(ca) = &upstream.ca_file {
                tls.push_str(&format!("server_tls_ca_file = {}\n", ca.display()));
            }
            server.push('\n');
            Self::launch(&server, &tls, None, opts)
        })
        .await
        .map_err(|e| HarnessError::Command {
            what: "starting pgbouncer".into(),
            detail: e.to_string(),
        })?
    }

    fn start_blocking(
        socket_dir: &Path,
        server_port: u16,
        probe_user: &str,
        opts: PgBouncerOptions,
    ) -> Result<PgBouncer, HarnessError> {
        let server = format!("host={} port={server_port}\n", socket_dir.display());
        // The superuser probes through it only where it logs in without a password or TLS.
        let probe = (opts.passwords.is_empty() && opts.client_tls.is_none()).then_some(probe_user);
        Self::launch(&server, "", probe, opts)
    }

    /// Writes the configuration (every database forwarded to `server`, plus `extra`
    /// settings), starts PgBouncer under its watchdog and waits until it is ready: until
    /// `probe_user` gets an answer through it, or, without one, until it listens.
    fn launch(
        server: &str,
        extra: &str,
        probe_user: Option<&str>,
        opts: PgBouncerOptions,
    ) -> Result<PgBouncer, HarnessError> {
        let program = Self::locate()?;
        let run_as = unprivileged_user()?;
        let chown = |p: &Path| chown_to(run_as.as_ref(), p);
        let dir =
            std::env::temp_dir().join(format!("tenancy-pgbouncer-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        chown(&dir)?;
        let port = free_tcp_port()?;
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let (auth, auth_type) = if opts.passwords.is_empty() {
            let mut users: Vec<String> = opts.users.clone();
            if let Some(probe) = probe_user {
                if !users.iter().any(|u| u == probe) {
                    users.push(probe.to_owned());
                }
            }
            let auth: String = users
                .iter()
                .map(|u| format!("{} \"\"\n", quote(u)))
                .collect();
            (auth, "trust")
        } else {
            let auth: String = opts
                .passwords
                .iter()
                .map(|(u, p)| format!("{} {}\n", quote(u), quote(p)))
                .collect();
            (auth, "scram-sha-256")
        };
        let mut extra = extra.to_owned();
        if let Some(t) = &opts.client_tls {
            extra.push_str(&format!(
                "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
                t.cert_file.display(),
                t.key_file.display()
            ));
        }
        let auth_file = dir.join("users.txt");
        let log = dir.join("pgbouncer.log");
        let ini = format!(
            "[databases]\n\
             * = {server}\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = {auth_type}\n\
             auth_file = {auth}\n\
             pool_mode = {mode}\n\
             default_pool_size = {size}\n\
             max_client_conn = {max}\n\
             server_reset_query =\n\
             ignore_startup_parameters = extra_float_digits\n\
             logfile = {log}\n\
             {extra}",
            auth = auth_file.display(),
            mode = opts.pool_mode,
            size = opts.default_pool_size,
            max = opts.max_client_conn,
            log = log.display(),
        );
        let ini_file = dir.join("pgbouncer.ini");
        for (path, text) in [(&auth_file, auth.as_str()), (&ini_file, ini.as_str())] {
            std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
            // The auth file may hold passwords: readable by PgBouncer's user only.
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io_err(format!("chmod {}", path.display())))?;
            chown(path)?;
        }
        let user = run_as.as_ref().map(|(u, _)| u.as_str());
        let mut cmd = command_as(user, Path::new("/bin/sh"));
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("tenancy-pgbouncer-watchdog")
            .arg(dir.join("stdout.log"))
            .arg(&dir)
            .arg(&program)
            .arg(&ini_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(io_err("starting the pgbouncer watchdog"))?;
        let mut bouncer = PgBouncer {
            port,
            dir,
            watchdog: Watchdog::new(child),
        };
        bouncer.wait_ready(probe_user, &log)?;
        tracing::info!(port, mode = %opts.pool_mode, "pgbouncer started");
        Ok(bouncer)
    }

    fn wait_ready(&mut self, user: Option<&str>, log: &Path) -> Result<(), HarnessError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("building a runtime"))?;
        loop {
            let ok = match user {
                Some(user) => accepts_queries(&rt, &self.config_as(user, "postgres")),
                None => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
            };
            if ok {
                return Ok(());
            }
            let exited = self.watchdog.exited();
            if exited || Instant::now() > deadline {
                return Err(HarnessError::Command {
                    what: "starting pgbouncer".into(),
                    detail: format!(
                        "it did not accept connections within 30s; last lines of {}:\n{}{}",
                        log.display(),
                        tail(log, 20),
                        tail(&self.dir.join("stdout.log"), 20)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The loopback TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection settings for `user` on `dbname` through PgBouncer (no TLS; the
    /// application name is one PgBouncer forwards).
    pub fn config_as(&self, user: &str, dbname: &str) -> tokio_postgres::Config {
        let mut c = crate::cluster::config_at(self.port, user, dbname);
        c.host("127.0.0.1");
        c
    }

    /// A libpq-style connection string for `user` on `dbname` through PgBouncer.
    pub fn url_as(&self, user: &str, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={dbname} sslmode=disable",
            self.port
        )
    }

    /// Stops PgBouncer and waits for it to exit.
    pub async fn stop(mut self) {
        self.watchdog.stop().await;
    }
}
