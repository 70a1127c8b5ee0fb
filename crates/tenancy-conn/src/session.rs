//! Sessions that must be one backend for their whole life (the control plane's catalog
//! connections), and the check that refuses a connection pooler in front of them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::stream::{open_one, targets, Stream};
use crate::{error_text, ConnError, PgConfig};

/// Start-up bytes kept to find the BackendKeyData in (it comes before the first
/// ReadyForQuery, after authentication and parameter status messages).
const KEEP: usize = 64 * 1024;

/// A stream that keeps the first bytes the server sends.
struct Recording {
    inner: Stream,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Recording { inner, seen } = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(inner).poll_read(cx, buf);
        if let Ok(mut seen) = seen.lock() {
            let room = KEEP.saturating_sub(seen.len());
            let got = &buf.filled()[before..];
            seen.extend_from_slice(&got[..got.len().min(room)]);
        }
        r
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The process id of the first BackendKeyData in `bytes` (backend messages).
pub(crate) fn key_pid(mut bytes: &[u8]) -> Option<i32> {
    while bytes.len() >= 5 {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        if len < 4 || bytes.len() < 1 + len {
            return None;
        }
        if bytes[0] == b'K' && len >= 8 {
            return Some(i32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]));
        }
        bytes = &bytes[1 + len..];
    }
    None
}

/// Connects like [`crate::connect`], and refuses when a connection pooler (PgBouncer or
/// similar) stands between this client and PostgreSQL: the process id the connection was
/// given at start-up (BackendKeyData) is then the pooler's, not the backend's
/// `pg_backend_pid()`. For connections that need a session of their own (LISTEN,
/// session-level prepared statements and advisory locks): a transaction-mode pooler hands
/// each transaction another backend and keeps none of them. A session-mode pool cannot be
/// told apart from here and is refused too; the error names the fix (a direct URL).
pub async fn connect_session(config: &PgConfig, who: &str) -> Result<Client, ConnError> {
    crate::check_supported(config.pg())?;
    let session = config.session_config();
    let mut last = None;
    for target in targets(config.pg())? {
        let host = target.describe();
        let pg_error = |source: tokio_postgres::Error| ConnError::Pg {
            host: host.clone(),
            dbname: config.pg().get_dbname().unwrap_or("").to_owned(),
            user: config.pg().get_user().unwrap_or("").to_owned(),
            detail: error_text(&source),
            source,
        };
        let attempt = async {
            let inner = open_one(config.pg(), &target, config.tls()).await?;
            let seen = Arc::new(Mutex::new(Vec::new()));
            let stream = Recording {
                inner,
                seen: Arc::clone(&seen),
            };
            let (client, connection) =
                session.connect_raw(stream, NoTls).await.map_err(pg_error)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "database connection closed");
                }
            });
            let key = seen.lock().ok().and_then(|s| key_pid(&s));
            Ok::<_, ConnError>((client, key))
        };
        match attempt.await {
            Ok((client, key)) => {
                let pid = backend_pid(&client).await.map_err(pg_error)?;
                if key.is_some_and(|k| Some(k) != pid) {
                    return Err(ConnError::Pooler {
                        host,
                        who: who.to_owned(),
                    });
                }
                return Ok(client);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ConnError::Invalid("no host to connect to".into())))
}

/// `pg_backend_pid()`, as a simple query (nothing named, whatever is in between).
async fn backend_pid(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let msgs = client
        .simple_query("SELECT pg_catalog.pg_backend_pid()")
        .await?;
    Ok(msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
        _ => None,
    }))
}

#[cfg(test)]
mod tests {
    use super::key_pid;

    #[test]
    fn finds_the_key_after_other_startup_messages() {
        let mut b = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
        b.extend_from_slice(&[b'S', 0, 0, 0, 6, b'a', 0]);
        b.extend_from_slice(&[b'K', 0, 0, 0, 12]);
        b.extend_from_slice(&4242i32.to_be_bytes());
        b.extend_from_slice(&7i32.to_be_bytes());
        assert_eq!(key_pid(&b), Some(4242));
        assert_eq!(key_pid(&b[..12]), None);
        assert_eq!(key_pid(&[b'K', 0, 0, 0, 2]), None);
    }
}
