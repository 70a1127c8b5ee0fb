//! Connections to PostgreSQL for every tenancy component: one place that reads libpq-style
//! connection settings, opens the socket, negotiates TLS with rustls and starts the
//! session.
//!
//! Main parts:
//! - [`PgConfig`]: a `tokio_postgres::Config` plus the TLS settings tokio-postgres does
//!   not know (`sslmode` `verify-ca` and `verify-full`, `sslrootcert`, `sslcert`,
//!   `sslkey`). Parsed from a URL (`postgres://…?sslmode=verify-full&sslrootcert=…`) or
//!   a keyword string (`host=… sslmode=verify-full …`); certificate files are read when
//!   it is built, so a bad file is reported at start-up, not at the first connection.
//! - [`open_stream`]: the socket to the first reachable host with the TCP settings
//!   (`hostaddr`, connect timeout, TCP_NODELAY, keepalives, TCP user timeout), and TLS
//!   negotiated on it (SSLRequest, then the rustls handshake). The SDK's tenant pools put
//!   their protocol splice on top of this stream, above TLS, where the protocol is
//!   plaintext.
//! - [`connect_session`]: [`connect`] for a connection that must be one backend for its
//!   whole life (the control plane's catalog): refuses a connection pooler in front of
//!   the server, naming the fix.
//! - [`connect`]: a session over [`open_stream`] (tokio-postgres' `connect_raw`, with
//!   TLS already done), trying each host in turn.
//! - [`native_required`]: whether `TENANCY_REQUIRE_NATIVE=1` forbids falling back to the
//!   PL/pgSQL tenant context.
//! - [`DbError`]: a failed statement or connection, naming what was being done (what
//!   provisioning and migrations report for either).
//!
//! `sslmode` as in libpq: `disable` (never TLS), `prefer` (TLS when the server offers it;
//! the certificate is not checked; a failed handshake falls back to plaintext), `require`
//! (TLS or fail; the certificate is checked against `sslrootcert` when one is given,
//! like libpq), `verify-ca` (the chain must lead to `sslrootcert`), `verify-full` (that,
//! and the certificate must name the host). Unix sockets never use TLS, whatever the
//! mode: the server does not offer it there, and libpq does the same.
//!
//! What it does not do: channel binding, `sslnegotiation=direct`, certificate revocation
//! lists, encrypted client keys, `target_session_attrs` and `load_balance_hosts` (refused
//! with a clear error rather than ignored).

mod error_text;
mod listen;
mod pool;
mod session;
mod settings;
mod stream;
mod tls;

use std::sync::Arc;

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Connection, NoTls};

pub use error_text::{error_text, pg_error_text, ErrorText};
pub use listen::{listen, Notifications};
pub use pool::{plain_pool, PlainConn, PlainManager, PlainPool};
pub use session::connect_session;
pub use settings::SslMode;
pub use stream::{open_stream, Stream};
pub use tls::RootCerts;

/// Quotes an SQL identifier (always, so a name that looks like a keyword is safe too).
pub fn quote_ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// Quotes an SQL string literal, correct whatever `standard_conforming_strings` is (a value
/// with a backslash becomes an `E'…'` literal).
pub fn quote_literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

/// Connection settings: tokio-postgres' own, and how to secure the socket.
#[derive(Clone)]
pub struct PgConfig {
    /// Everything but TLS. Its own `sslmode` is always `disable`: TLS is negotiated here,
    /// below tokio-postgres, before the session starts.
    pg: tokio_postgres::Config,
    /// How the socket is secured.
    tls: Tls,
}

/// TLS settings with their certificate files read: what connections use. Cheap to clone
/// (the rustls configuration is shared).
#[derive(Clone, Default)]
pub struct Tls {
    /// The settings as given (for messages).
    settings: TlsSettings,
    /// The rustls client configuration built from `settings` (`None` for `disable`).
    client: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl Tls {
    /// Reads the certificate files `settings` names and builds the rustls configuration.
    pub fn new(settings: TlsSettings) -> Result<Tls, ConnError> {
        let client = tls::client_config(&settings)?;
        Ok(Tls { settings, client })
    }

    /// The settings.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// No TLS (`sslmode=disable`).
    pub fn disabled() -> Tls {
        Tls {
            settings: TlsSettings {
                mode: SslMode::Disable,
                ..TlsSettings::default()
            },
            client: None,
        }
    }
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("PgConfig")
            .field("pg", &self.pg)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// How to secure connections: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`; libpq's default is `prefer`.
    pub mode: SslMode,
    /// `sslrootcert`: the CA certificates the server's certificate must chain to.
    pub root_cert: Option<RootCerts>,
    /// `sslcert`: a client certificate chain (PEM), for servers that ask for one.
    pub client_cert: Option<std::path::PathBuf>,
    /// `sslkey`: the client certificate's private key (PEM, unencrypted, not readable by
    /// group or others).
    pub client_key: Option<std::path::PathBuf>,
}

/// Why a connection could not be configured or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The connection string or settings are invalid.
    #[error("invalid connection settings: {0}")]
    Invalid(String),
    /// A certificate or key file could not be used.
    #[error("{0}")]
    Certificate(String),
    /// No socket could be opened.
    #[error("could not connect to {host}: {source}")]
    Io {
        /// The host (or socket directory) tried.
        host: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server does not offer TLS and the settings require it.
    #[error("the server at {host} does not accept TLS connections, and sslmode={mode} requires TLS: enable ssl on the server, or use sslmode=prefer or disable on a network you trust")]
    TlsRefused {
        /// The host (or socket directory) tried.
        host: String,
        /// The `sslmode` in force.
        mode: SslMode,
    },
    /// The TLS handshake failed (for instance, the certificate did not verify).
    #[error("TLS handshake with {host} failed (sslmode={mode}{roots}): {detail}")]
    Handshake {
        /// The host (or socket directory) tried.
        host: String,
        /// The `sslmode` in force.
        mode: SslMode,
        /// Which root certificates were trusted.
        roots: String,
        /// What failed, in words.
        detail: String,
    },
    /// A connection pooler stands between this client and PostgreSQL, and the caller
    /// needs a session of its own.
    #[error("{who} is connected to {host} through a connection pooler (PgBouncer or similar: the process id the connection was given at start-up is not its backend's). {who} needs a database session of its own (LISTEN for changes, prepared statements, advisory locks), which a transaction-mode pooler does not keep: give it a URL that reaches PostgreSQL directly. Tenant pools of the SDK can use the pooler (PoolOptions::pooler = Pooler::Transaction)")]
    Pooler {
        /// The host (or socket directory) tried.
        host: String,
        /// The component that needs a session of its own.
        who: String,
    },
    /// The session could not be started (authentication, unknown database…).
    #[error("connecting to database {dbname:?} as {user:?} on {host}: {detail}")]
    Pg {
        /// The host (or socket directory) tried.
        host: String,
        /// The database.
        dbname: String,
        /// The role.
        user: String,
        /// What the server said, or what failed.
        detail: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// A database call that failed, naming what was being done: a statement on a connection,
/// or a connection that could not be opened. The error the engines that work on tenant
/// clusters (provisioning, migrations) report for both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// A database call failed.
    #[error("{what}: {source}")]
    Query {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be opened.
    #[error("connecting to {what}: {detail}")]
    Connect {
        /// What was being connected to.
        what: String,
        /// What failed, in words.
        detail: String,
    },
}

impl DbError {
    /// For `map_err`: a failed call while doing `what`.
    pub fn query(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        let what = what.into();
        move |source| DbError::Query { what, source }
    }
}

impl PgConfig {
    /// Builds a configuration from tokio-postgres settings and TLS settings, reading the
    /// certificate files they name.
    pub fn new(pg: tokio_postgres::Config, tls: TlsSettings) -> Result<Self, ConnError> {
        check_supported(&pg)?;
        Ok(PgConfig::with_tls(pg, &Tls::new(tls)?))
    }

    /// Connection settings secured with `tls` (whatever `sslmode` `pg` has).
    pub fn with_tls(mut pg: tokio_postgres::Config, tls: &Tls) -> Self {
        pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
        PgConfig {
            pg,
            tls: tls.clone(),
        }
    }

    /// Parses a libpq-style URL (`postgres://user@host/db?sslmode=verify-full&…`) or
    /// keyword string (`host=… dbname=… sslmode=…`).
    pub fn parse(s: &str) -> Result<Self, ConnError> {
        let (rest, tls) = settings::split(s)?;
        let pg: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| ConnError::Invalid(format!("{e}")))?;
        PgConfig::new(pg, tls)
    }

    /// The settings tokio-postgres sees (its own `sslmode` is always `disable`).
    pub fn pg(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    /// Changes settings other than TLS (user, database, options…); its `sslmode` is not
    /// used (TLS is [`PgConfig::tls`]).
    pub fn pg_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.pg
    }

    /// The settings to start a session with over a stream from [`open_stream`]: TLS is
    /// already done there, so tokio-postgres must not ask for it again (an `sslmode` set
    /// through [`PgConfig::pg_mut`] is ignored).
    pub fn session_config(&self) -> std::borrow::Cow<'_, tokio_postgres::Config> {
        use tokio_postgres::config::SslMode as Pg;
        if self.pg.get_ssl_mode() == Pg::Disable {
            std::borrow::Cow::Borrowed(&self.pg)
        } else {
            let mut pg = self.pg.clone();
            pg.ssl_mode(Pg::Disable);
            std::borrow::Cow::Owned(pg)
        }
    }

    /// The TLS settings, certificate files read.
    pub fn tls(&self) -> &Tls {
        &self.tls
    }

    /// The `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.settings.mode
    }

    /// Connects and starts the session. The caller drives the returned connection (or
    /// use [`connect`] to have it spawned).
    pub async fn connect_raw(
        &self,
    ) -> Result<(Client, Connection<Stream, NoTlsStream>), ConnError> {
        check_supported(&self.pg)?;
        let hosts = stream::targets(&self.pg)?;
        let session = self.session_config();
        let mut last = None;
        for target in &hosts {
            let attempt = async {
                let s = stream::open_one(&self.pg, target, &self.tls).await?;
                session
                    .connect_raw(s, NoTls)
                    .await
                    .map_err(|source| ConnError::Pg {
                        host: target.describe(),
                        dbname: self.pg.get_dbname().unwrap_or("").to_owned(),
                        user: self.pg.get_user().unwrap_or("").to_owned(),
                        detail: pg_error_text(&source),
                        source,
                    })
            };
            match attempt.await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ConnError::Invalid("no host to connect to".into())))
    }
}

impl From<tokio_postgres::Config> for PgConfig {
    /// Keeps tokio-postgres' own `sslmode` (`disable`, `prefer` or `require`), without a
    /// root certificate: `prefer` and `require` encrypt without checking the server's
    /// certificate, as libpq does without `sslrootcert`.
    fn from(pg: tokio_postgres::Config) -> Self {
        use tokio_postgres::config::SslMode as Pg;
        let mode = match pg.get_ssl_mode() {
            Pg::Disable => SslMode::Disable,
            Pg::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let settings = TlsSettings {
            mode,
            ..TlsSettings::default()
        };
        // Without files to read, only `disable` has no rustls configuration.
        let client = tls::client_config(&settings).unwrap_or(None);
        PgConfig::with_tls(pg, &Tls { settings, client })
    }
}

impl std::str::FromStr for PgConfig {
    type Err = ConnError;
    fn from_str(s: &str) -> Result<Self, ConnError> {
        PgConfig::parse(s)
    }
}

/// Refuses settings only tokio-postgres' own connect honours: connections here are
/// opened by [`open_stream`], which would otherwise ignore them silently.
pub(crate) fn check_supported(pg: &tokio_postgres::Config) -> Result<(), ConnError> {
    use tokio_postgres::config::{LoadBalanceHosts, SslNegotiation, TargetSessionAttrs};
    if pg.get_target_session_attrs() != TargetSessionAttrs::Any {
        return Err(ConnError::Invalid(
            "target_session_attrs is not supported: connect to the primary's address".into(),
        ));
    }
    if pg.get_load_balance_hosts() != LoadBalanceHosts::Disable {
        return Err(ConnError::Invalid(
            "load_balance_hosts is not supported: list the hosts in the order to try them".into(),
        ));
    }
    if pg.get_ssl_negotiation() != SslNegotiation::Postgres {
        return Err(ConnError::Invalid(
            "sslnegotiation=direct is not supported: leave sslnegotiation at postgres".into(),
        ));
    }
    if pg.get_channel_binding() == tokio_postgres::config::ChannelBinding::Require {
        return Err(ConnError::Invalid(
            "channel_binding=require is not supported: use sslmode=verify-full to authenticate the server".into(),
        ));
    }
    Ok(())
}

/// Connects with `config` and drives the connection on the current runtime until it
/// closes.
pub async fn connect(config: &PgConfig) -> Result<Client, ConnError> {
    let (client, connection) = config.connect_raw().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Whether `TENANCY_REQUIRE_NATIVE=1`: every place that would fall back to the PL/pgSQL
/// tenant context fails instead (the build of the native library, private cluster start,
/// `bootstrap_database`, `tenancy serve` and the test helpers). Read here, where every
/// component that connects can see it, so they all read it the same way.
pub fn native_required() -> bool {
    std::env::var("TENANCY_REQUIRE_NATIVE").is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokio_postgres_config_keeps_its_sslmode_and_sessions_never_ask_for_tls_again() {
        let mut pg = tokio_postgres::Config::new();
        pg.host("db.example")
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let cfg = PgConfig::from(pg);
        assert_eq!(cfg.ssl_mode(), SslMode::Require);
        assert_eq!(
            cfg.session_config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let mut cfg = PgConfig::parse("host=db.example sslmode=prefer").expect("parse");
        cfg.pg_mut()
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        assert_eq!(
            cfg.session_config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert_eq!(cfg.ssl_mode(), SslMode::Prefer);
    }

    #[test]
    fn settings_only_tokio_postgres_own_connect_honours_are_refused() {
        let e = PgConfig::parse("host=a,b target_session_attrs=read-write")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("target_session_attrs is not supported"), "{e}");
        let e = PgConfig::parse("host=a sslnegotiation=direct sslmode=require")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("sslnegotiation=direct"), "{e}");
        let e = PgConfig::parse("host=a sslmode=require sslrootcert=system")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("only be used with sslmode=verify-full"), "{e}");
    }
}
