//! The pool's watchdog: what it knows about each connection's transaction, and how it
//! ends a transaction that outlived its deadline.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool::managed;
use tenancy_conn::PgConfig;
use tokio::sync::oneshot;
use tokio_postgres::{CancelToken, NoTls};

use super::Manager;

/// What the pool's watchdog knows about one connection.
pub(crate) struct Watch {
    /// The pool's clock: `since` counts from here.
    pub(super) epoch: Instant,
    /// Milliseconds from `epoch` (plus one) at which the transaction holding the
    /// connection began; 0 while the connection is in the pool.
    pub(super) since: AtomicU64,
    /// Backend process id, to terminate it (behind a transaction-mode pooler: the backend
    /// of the current transaction, learnt when it opens; 0 before). Shared with the
    /// connection's splice, which stores the pid a single-use opening's row gives.
    pub(super) pid: Arc<AtomicI32>,
    /// Cancels the statement running on the connection.
    pub(super) cancel: CancelToken,
    /// Fired, the connection task drops the socket.
    pub(super) kill: Mutex<Option<oneshot::Sender<()>>>,
    /// The watchdog ended the connection's transaction: the transaction's errors say so,
    /// and none of its requests is retried.
    pub(crate) expired: AtomicBool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("since", &self.since)
            .field("pid", &self.pid)
            .field("expired", &self.expired)
            .finish_non_exhaustive()
    }
}

impl Watch {
    fn now_mark(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Behind a transaction-mode pooler: the backend the current transaction runs on.
    pub(crate) fn set_backend(&self, pid: i32) {
        self.pid.store(pid, Ordering::Relaxed);
    }

    /// A transaction took the connection.
    pub(super) fn start(&self) {
        self.since.store(self.now_mark(), Ordering::Relaxed);
    }

    /// Whether a transaction has held the connection for longer than `limit`.
    fn overdue(&self, limit: Duration) -> bool {
        let since = self.since.load(Ordering::Relaxed);
        since != 0 && self.now_mark().saturating_sub(since) > limit.as_millis() as u64
    }
}

/// Ends transactions that have held their connection longer than `limit`, until the pool
/// is dropped. Statement and lock timeouts are session settings that the transaction's own
/// SQL may lift (`SET statement_timeout = 0`); this limit lives in the application.
pub(super) async fn watch_transactions(
    pool: managed::WeakPool<Manager>,
    watches: Arc<Mutex<Vec<Weak<Watch>>>>,
    config: PgConfig,
    limit: Duration,
) {
    let every = (limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.upgrade().is_none() {
            return;
        }
        let overdue: Vec<Arc<Watch>> = {
            let Ok(mut ws) = watches.lock() else { return };
            ws.retain(|w| w.strong_count() > 0);
            ws.iter()
                .filter_map(Weak::upgrade)
                .filter(|w| w.overdue(limit) && !w.expired.swap(true, Ordering::Relaxed))
                .collect()
        };
        for w in overdue {
            tracing::warn!(pid = w.pid.load(Ordering::Relaxed), limit_ms = limit.as_millis() as u64, "a tenant transaction outlived its deadline; cancelling it and closing its connection");
            // Its own task: reaching the server may take a while, and other overdue
            // transactions must not wait for it.
            tokio::spawn(stop_backend(config.clone(), w));
        }
    }
}

/// Stops the backend of a connection whose transaction outlived its deadline: closes the
/// socket (a backend waiting for its client ends its transaction, releasing its locks),
/// cancels the running statement, and terminates the backend, since the statement may
/// catch the cancel (PL/pgSQL can trap `query_canceled`) and a busy backend does not
/// notice a closed socket.
async fn stop_backend(config: PgConfig, w: Arc<Watch>) {
    let fired_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    if let Some(kill) = w.kill.lock().ok().and_then(|mut k| k.take()) {
        let _ = kill.send(());
    }
    // Over TLS when the pool's connections use it: the cancel key travels encrypted.
    if let Ok(socket) = tenancy_conn::open_stream(&config).await {
        if let Err(e) = w.cancel.cancel_query_raw(socket, NoTls).await {
            tracing::debug!(error = %e, "cancelling an overdue transaction failed");
        }
    }
    // A separate connection as the same role (a role may terminate its own backends). Only
    // a backend that started before the deadline fired: the pid is never another, later
    // connection's.
    let pid = w.pid.load(Ordering::Relaxed);
    if pid == 0 {
        return;
    }
    let terminated = async {
        let client = tenancy_conn::connect(&config)
            .await
            .map_err(|e| e.to_string())?;
        // One simple query of two numbers: it also works through a transaction-mode pooler,
        // where a prepared statement may not survive to its execution.
        client
            .simple_query(&format!(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                  WHERE pid = {pid} AND backend_start < pg_catalog.to_timestamp({fired_at:.6}::float8)"
            ))
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = terminated.await {
        tracing::warn!(error = %e, pid, "terminating the backend of an overdue transaction failed");
    }
}
