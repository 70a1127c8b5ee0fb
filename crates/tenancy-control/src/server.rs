//! Serving a router on a public socket: HTTP/1.1 with a deadline for each request's
//! headers (which also bounds how long a kept-alive connection may sit idle) and for each
//! whole request, a cap on connections served at once, the peer address in every request's extensions (`ConnectInfo`, which
//! rate limits count by), and a graceful stop. `axum::serve` has no header deadline, so a
//! client sending its headers a byte at a time would hold a connection and a task
//! forever.
//!
//! Any axum router can be served this way (the example application included); the
//! control plane's [`crate::App`] uses it with the timeouts of its `[limits]`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::error::{ApiError, ProblemCode};
use crate::LimitsConfig;

/// Deadlines of [`serve`]; `None` turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// Time a client has to send a request's line and headers, counted from when the
    /// server starts waiting for them (so it also closes idle kept-alive connections).
    pub header_read_timeout: Option<Duration>,
    /// Time a whole request may take, from its headers to the end of the handler
    /// (then 408 with a problem document).
    pub request_timeout: Option<Duration>,
    /// Connections served at once; past it, accepting waits until one closes, so new
    /// clients queue in the kernel's listen backlog instead of costing memory and tasks.
    pub max_connections: Option<usize>,
}

impl ServeOptions {
    /// The deadlines of a `[limits]` section.
    pub fn from_limits(limits: &LimitsConfig) -> Self {
        ServeOptions {
            header_read_timeout: crate::guard::millis(limits.header_read_timeout_ms),
            request_timeout: crate::guard::millis(limits.request_timeout_ms),
            max_connections: (limits.max_connections > 0).then_some(limits.max_connections),
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::from_limits(&LimitsConfig::default())
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish and closes idle connections.
pub async fn serve<F>(
    listener: TcpListener,
    router: axum::Router,
    options: ServeOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let cap = options.max_connections.unwrap_or(usize::MAX);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept(), if connections.len() < cap => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections there are, and try again shortly.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            options,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// One connection, until the client or the deadline closes it, or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let response = router.clone().call(req);
        async move {
            let response = match options.request_timeout {
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(r) => r,
                    Err(_) => Ok(timed_out(limit)),
                },
                None => response.await,
            };
            Ok::<Response, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection closed");
            }
        }
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn timed_out(limit: Duration) -> Response {
    ApiError::new(
        ProblemCode::RequestTimeout,
        format!(
            "the request did not complete within {} ms",
            limit.as_millis()
        ),
    )
    .into_response()
}
