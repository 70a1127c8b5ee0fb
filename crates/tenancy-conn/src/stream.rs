//! Sockets to the server: TCP (with the settings tokio-postgres would apply) or Unix, and
//! TLS negotiated on TCP the way PostgreSQL does it (an SSLRequest, the server's one-byte
//! answer, then the handshake).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;

use crate::{ConnError, PgConfig, SslMode, Tls, TlsSettings};

/// A connection's byte stream: plain TCP, a Unix socket, or TLS over TCP.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// Plain TCP (`sslmode=disable`, or `prefer` with a server that offers no TLS).
    Tcp(TcpStream),
    /// A Unix socket (never encrypted).
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One host to try.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Where the socket goes.
    addr: Addr,
    /// The server's name as configured (`host`): what `verify-full` compares with its
    /// certificate, even when `hostaddr` says where to connect.
    name: Option<String>,
    port: u16,
}

#[derive(Debug, Clone)]
enum Addr {
    Unix(PathBuf),
    Ip(IpAddr),
    Name(String),
}

impl Target {
    /// The host as it appears in messages.
    pub(crate) fn describe(&self) -> String {
        match (&self.addr, &self.name) {
            (Addr::Unix(dir), _) => format!("the Unix socket in {}", dir.display()),
            (Addr::Ip(ip), Some(name)) if name != &ip.to_string() => {
                format!("{name} ({ip}) port {}", self.port)
            }
            (Addr::Ip(ip), _) => format!("{ip} port {}", self.port),
            (Addr::Name(name), _) => format!("{name} port {}", self.port),
        }
    }

    /// The name checked against the server's certificate.
    fn tls_name(&self) -> String {
        match (&self.name, &self.addr) {
            (Some(name), _) => name.clone(),
            (None, Addr::Ip(ip)) => ip.to_string(),
            (None, Addr::Name(n)) => n.clone(),
            (None, Addr::Unix(_)) => String::new(),
        }
    }
}

/// The hosts of `pg`, in the order to try them.
pub(crate) fn targets(pg: &tokio_postgres::Config) -> Result<Vec<Target>, ConnError> {
    let hosts = pg.get_hosts();
    let addrs = pg.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        return Err(ConnError::Invalid(
            "the connection settings name no host: set host (a name, an address or a Unix socket directory) or hostaddr".into(),
        ));
    }
    let ports = pg.get_ports();
    let mut out = Vec::new();
    for i in 0..hosts.len().max(addrs.len()) {
        let port = match ports {
            [] => 5432,
            [p] => *p,
            ps => ps.get(i).copied().unwrap_or(5432),
        };
        let name = match hosts.get(i) {
            Some(Host::Tcp(n)) => Some(n.clone()),
            _ => None,
        };
        let addr = match (addrs.get(i), hosts.get(i)) {
            (Some(ip), _) => Addr::Ip(*ip),
            (None, Some(Host::Unix(dir))) => Addr::Unix(dir.clone()),
            (None, Some(Host::Tcp(n))) => match n.parse::<IpAddr>() {
                Ok(ip) => Addr::Ip(ip),
                Err(_) => Addr::Name(n.clone()),
            },
            (None, None) => continue,
        };
        out.push(Target { addr, name, port });
    }
    Ok(out)
}

/// Opens a stream to the first reachable host of `config`, TLS negotiated as its
/// `sslmode` says.
pub async fn open_stream(config: &PgConfig) -> Result<Stream, ConnError> {
    let mut last = None;
    for target in targets(&config.pg)? {
        match open_one(&config.pg, &target, &config.tls).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ConnError::Invalid("no host to connect to".into())))
}

/// Opens a stream to one host (within the connect timeout, TLS included).
pub(crate) async fn open_one(
    pg: &tokio_postgres::Config,
    target: &Target,
    tls: &Tls,
) -> Result<Stream, ConnError> {
    let (client, tls) = (tls.client.as_ref(), &tls.settings);
    let attempt = async {
        let io_err = |source| ConnError::Io {
            host: target.describe(),
            source,
        };
        let tcp = match &target.addr {
            Addr::Unix(dir) => {
                // The server offers no TLS on Unix sockets; libpq does not ask there either.
                let path = Path::new(dir).join(format!(".s.PGSQL.{}", target.port));
                return UnixStream::connect(path)
                    .await
                    .map(Stream::Unix)
                    .map_err(io_err);
            }
            _ => open_tcp(pg, target).await.map_err(io_err)?,
        };
        let Some(client) = client else {
            return Ok(Stream::Tcp(tcp));
        };
        match negotiate(tcp, target, tls, client).await? {
            Negotiated::Tls(s) => Ok(Stream::Tls(s)),
            Negotiated::Plain(s) => Ok(Stream::Tcp(s)),
            Negotiated::HandshakeFailed(detail) if tls.mode == SslMode::Prefer => {
                // libpq's `prefer`: a failed handshake falls back to plaintext.
                tracing::debug!(host = %target.describe(), %detail, "TLS handshake failed; sslmode=prefer falls back to plaintext");
                Ok(Stream::Tcp(open_tcp(pg, target).await.map_err(io_err)?))
            }
            Negotiated::HandshakeFailed(detail) => Err(ConnError::Handshake {
                host: target.describe(),
                mode: tls.mode,
                roots: tls
                    .root_cert
                    .as_ref()
                    .map(|r| format!(", sslrootcert={r}"))
                    .unwrap_or_default(),
                detail,
            }),
        }
    };
    match pg.get_connect_timeout() {
        Some(t) => tokio::time::timeout(*t, attempt).await.unwrap_or_else(|_| {
            Err(ConnError::Io {
                host: target.describe(),
                source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            })
        }),
        None => attempt.await,
    }
}

/// A TCP socket to `target`.
async fn open_tcp(pg: &tokio_postgres::Config, target: &Target) -> io::Result<TcpStream> {
    match &target.addr {
        Addr::Ip(ip) => tcp(pg, (*ip, target.port)).await,
        Addr::Name(n) => tcp(pg, (n.as_str(), target.port)).await,
        Addr::Unix(_) => Err(io::Error::other("a Unix socket is not a TCP host")),
    }
}

enum Negotiated {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Plain(TcpStream),
    HandshakeFailed(String),
}

/// SSLRequest, the server's answer, and the handshake.
async fn negotiate(
    mut tcp: TcpStream,
    target: &Target,
    tls: &TlsSettings,
    client: &Arc<rustls::ClientConfig>,
) -> Result<Negotiated, ConnError> {
    let io_err = |source| ConnError::Io {
        host: target.describe(),
        source,
    };
    // Length 8, then the SSLRequest code 1234.5679.
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .map_err(io_err)?;
    // Exactly one byte: anything the server (or someone in between) sent after it before
    // the handshake must not be taken as protected data.
    let answer = tcp.read_u8().await.map_err(io_err)?;
    match answer {
        b'S' => {}
        b'N' if tls.mode.requires_tls() => {
            return Err(ConnError::TlsRefused {
                host: target.describe(),
                mode: tls.mode,
            })
        }
        b'N' => return Ok(Negotiated::Plain(tcp)),
        other => {
            return Err(ConnError::Io {
                host: target.describe(),
                source: io::Error::other(format!(
                "unexpected answer {other:#04x} to the TLS request: is this a PostgreSQL server?"
            )),
            })
        }
    }
    let name = target.tls_name();
    let server_name = ServerName::try_from(name.clone()).map_err(|_| {
        ConnError::Invalid(format!(
            "{name:?} is not a host name or IP address that TLS can check a certificate against"
        ))
    })?;
    match tokio_rustls::TlsConnector::from(Arc::clone(client))
        .connect(server_name, tcp)
        .await
    {
        Ok(s) => Ok(Negotiated::Tls(Box::new(s))),
        Err(e) => Ok(Negotiated::HandshakeFailed(handshake_detail(&e, &name))),
    }
}

/// What went wrong in a handshake, in words an operator can act on.
fn handshake_detail(e: &io::Error, name: &str) -> String {
    use rustls::{CertificateError, Error as TlsError};
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>());
    match tls {
        Some(TlsError::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "the server's certificate is not signed by a CA in sslrootcert (wrong CA file, or a server that is not the one you meant)".into()
        }
        Some(TlsError::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the server's certificate does not name the host {name:?} (connect with a host name the certificate lists, or use sslmode=verify-ca to check the CA only)"
        ),
        Some(TlsError::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. })) => {
            "the server's certificate has expired".into()
        }
        Some(TlsError::AlertReceived(alert)) => format!(
            "the server refused the handshake ({alert:?}); if it asks for a client certificate, give sslcert and sslkey"
        ),
        _ => e.to_string(),
    }
}

/// A TCP socket with the settings tokio-postgres would apply: TCP_NODELAY, keepalives,
/// the TCP user timeout.
async fn tcp<A: tokio::net::ToSocketAddrs>(
    pg: &tokio_postgres::Config,
    addr: A,
) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let sock = socket2::SockRef::from(&s);
    if pg.get_keepalives() {
        let mut ka = socket2::TcpKeepalive::new().with_time(pg.get_keepalives_idle());
        if let Some(interval) = pg.get_keepalives_interval() {
            ka = ka.with_interval(interval);
        }
        if let Some(retries) = pg.get_keepalives_retries() {
            ka = ka.with_retries(retries);
        }
        sock.set_tcp_keepalive(&ka)?;
    }
    #[cfg(target_os = "linux")]
    if let Some(t) = pg.get_tcp_user_timeout() {
        sock.set_tcp_user_timeout(Some(*t))?;
    }
    Ok(s)
}
