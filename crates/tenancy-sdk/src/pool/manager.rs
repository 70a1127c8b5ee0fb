//! Connection set-up for the pool: the deadpool [`Manager`] that opens a connection (TLS
//! or not, directly or behind a transaction-mode pooler), learns its backend pid and which
//! context functions the database has, initialises a PL/pgSQL session context, prepares
//! the one-Sync openings, and checks a connection before it is reused; the task that
//! drives each connection; the single-use tokens of pooler openings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tenancy_conn::PgConfig;
use tenancy_core::{ContextKey, ContextToken, TenantId};
use tokio::sync::oneshot;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::{Conn, Pooled, Pooler, Watch};
use crate::wire::{self, Splice};

/// What a tenant connection learns when it opens: its backend pid, and which context
/// functions the database has. Native only when every C entry point the openings use is
/// there. Implicit read-only openings need `tenancy.enter_read_only` (both implementations
/// have it; a database whose runtime predates it gets explicit read-only openings until its
/// runtime is installed again). The PL/pgSQL session context needs
/// `tenancy.init_session(text)` (a runtime that predates it gets token openings). The last
/// column but one is the size of the native context's replay registry, NULL where the
/// server has none (the library is not in `shared_preload_libraries`); the last, whether
/// the database has `tenancy.enter_pooled` (the extension's version 1.1), the one-call
/// opening behind a transaction-mode pooler; then whether it has `tenancy.audit_append`
/// (version 1.3), the insertion of an audit event without the executor.
const CONNECTION_CHECK: &str = "SELECT pg_catalog.pg_backend_pid(), (SELECT count(*) = 2 FROM pg_catalog.pg_proc p \
       JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
      WHERE l.lanname = 'c' AND p.oid IN (pg_catalog.to_regprocedure('tenancy.enter(text)'), \
                                          pg_catalog.to_regprocedure('tenancy.enter_read_only(text)'))), \
            pg_catalog.to_regprocedure('tenancy.reset_session()') IS NOT NULL, \
            pg_catalog.to_regprocedure('tenancy.enter_read_only(text)') IS NOT NULL, \
            pg_catalog.to_regprocedure('tenancy.init_session(text)') IS NOT NULL, \
            pg_catalog.current_setting('tenancy_context.replay_slots', true), \
            pg_catalog.to_regprocedure('tenancy.enter_pooled(text, bool, int4, int4, int4, int4, text)') IS NOT NULL, \
            pg_catalog.to_regprocedure('tenancy.audit_append(uuid, text, text, text, text, text, text, jsonb, jsonb, text, text, inet)') IS NOT NULL";

/// Creates and checks connections for the pool.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role, and how to secure the connection.
    pub(super) config: PgConfig,
    /// Tenant connections: detect the context implementation and prepare the one-Sync
    /// openings.
    pub(super) tenant: bool,
    /// Shared with every connection: how many have a deferred commit.
    pub(super) deferred: Arc<AtomicUsize>,
    /// Every connection's watch, for the watchdog (dead entries are pruned as it runs).
    pub(super) watches: Arc<Mutex<Vec<Weak<Watch>>>>,
    /// The pool's clock for transaction deadlines.
    pub(super) epoch: Instant,
    /// Set once the pool logged which context implementation its database runs.
    pub(super) context_reported: AtomicBool,
    /// How the pool reaches PostgreSQL, and (behind a transaction-mode pooler) what opens
    /// each transaction.
    pub(super) pooler: Pooler,
    pub(super) pooled: Option<Arc<Pooled>>,
    /// Tenant pools: the context key, which signs the token that initialises a PL/pgSQL
    /// session context.
    pub(super) key: Option<Arc<ContextKey>>,
}

impl managed::Manager for Manager {
    /// Boxed: a connection is moved into and out of the pool's slots, the lease and the
    /// transaction on every checkout; a pointer moves in a few instructions, the
    /// connection's few hundred bytes in a copy each time.
    type Type = Box<Conn>;
    type Error = wire::Error;

    async fn create(&self) -> Result<Box<Conn>, wire::Error> {
        // Boxed: connecting is rare, and inline its state would make the future of every
        // checkout (and of every transaction opening) kilobytes larger.
        Box::pin(self.connect()).await.map(Box::new)
    }

    async fn recycle(&self, conn: &mut Box<Conn>, _: &Metrics) -> RecycleResult<wire::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if conn.retired.load(Ordering::Relaxed)
            || conn.watch.expired.load(Ordering::Relaxed)
            || !conn.can_enter()
        {
            return Err(RecycleError::message(
                "the connection was retired (a refused opening, a dead backend or an overdue transaction)",
            ));
        }
        Ok(())
    }
}

impl Manager {
    /// Opens a connection: a tenant connection learns its backend pid and context
    /// implementation, and prepares the one-Sync openings.
    async fn connect(&self) -> Result<Conn, wire::Error> {
        if !self.tenant {
            let (client, connection) = self.config.connect_raw().await?;
            let kill = spawn_connection(connection);
            return Ok(self.conn(client, 0, None, kill));
        }
        let (client, connection, splice) = match wire::connect(&self.config).await {
            Ok(c) => c,
            // PgBouncer refuses the startup packet's session limits (`options`).
            Err(wire::Error::Pg(e))
                if self.pooler == Pooler::Direct
                    && e.as_db_error()
                        .is_some_and(|d| d.message().contains("unsupported startup parameter")) =>
            {
                return Err(wire::Error::Setup(format!(
                    "this tenant pool seems to connect through a connection pooler, which refused the \
                     session limits the pool sends at start-up ({}). Set PoolOptions::pooler = \
                     Pooler::Transaction (pooler = \"transaction\" in configuration): limits are then \
                     set per transaction. Or connect the pool to PostgreSQL directly",
                    e.as_db_error().map(|d| d.message()).unwrap_or_default()
                )));
            }
            Err(e) => return Err(e),
        };
        let kill = spawn_connection(connection);
        // A simple query: one round trip, and nothing named that a transaction-mode pooler
        // could hand to another backend between Parse and Bind.
        // Behind a transaction-mode pooler the backend may have role defaults the runtime
        // role stored for itself (a 1 ms statement timeout): the check lifts the timeout for
        // its own transaction first.
        let (before, after) = match self.pooler {
            Pooler::Transaction => ("BEGIN; SET LOCAL statement_timeout = 0; ", "; COMMIT"),
            Pooler::Direct => ("", ""),
        };
        let msgs = client
            .simple_query(&format!("{before}{CONNECTION_CHECK}{after}"))
            .await?;
        let row = msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| wire::Error::Setup("the connection check returned no row".into()))?;
        let flag = |i: usize| row.get(i) == Some("t");
        let pid: i32 = row.get(0).and_then(|p| p.parse().ok()).ok_or_else(|| {
            wire::Error::Setup("the connection check returned no backend pid".into())
        })?;
        let (native, reset_fn, read_only_fn, session_fn) = (flag(1), flag(2), flag(3), flag(4));
        let replay = native && row.get(5).is_some();
        let one_call = replay && flag(6);
        let audit_append = flag(7);
        self.report_context_impl(native, replay);
        // Through a pooler (PgBouncer and the like) the BackendKeyData is the pooler's,
        // not the backend's.
        let behind_pooler = splice.key_pid().is_some_and(|k| k != pid);
        match (self.pooler, &self.pooled) {
            (Pooler::Direct, _) if behind_pooler => {
                return Err(wire::Error::Setup(format!(
                    "this tenant pool connects through a connection pooler (the server process is {pid}, \
                     but the connection was given process id {} at start-up, as PgBouncer does): a \
                     transaction-mode pooler hands each transaction another backend, so tokens bound to \
                     one backend would be refused and prepared statements lost. Set \
                     PoolOptions::pooler = Pooler::Transaction (pooler = \"transaction\" in configuration), \
                     or connect the pool to PostgreSQL directly",
                    splice.key_pid().unwrap_or_default()
                )));
            }
            (Pooler::Transaction, Some(pooled)) => {
                // Nothing is prepared: no named statement may outlive a transaction.
                let mut conn = self.conn(client, 0, Some(splice), kill);
                conn.pooled = Some(Arc::clone(pooled));
                conn.replay = replay;
                conn.one_call = one_call;
                conn.audit_append = audit_append;
                return Ok(conn);
            }
            _ => {}
        }
        // PL/pgSQL openings reset session settings with tenancy.reset_session(), which keeps
        // the context's single-use mark; a database bootstrapped before it existed gets a
        // plain RESET ALL until `bootstrap_database` runs again (which also drops the mark).
        // The native tenancy.enter resets them itself, and so does either implementation's
        // tenancy.enter_read_only.
        // The PL/pgSQL session context (direct connections only: behind a pooler the
        // backend changes between transactions): initialised once, here, before any
        // statement of a user; its enter_session resets session settings itself.
        let session = match &self.key {
            Some(key) if !native && session_fn => Some(init_session(&client, key, pid).await?),
            _ => None,
        };
        let reset = match (native, reset_fn, session) {
            (true, _, _) | (false, _, Some(_)) => None,
            (false, true, None) => Some("SELECT tenancy.reset_session()"),
            (false, false, None) => Some("RESET ALL"),
        };
        let implicit = read_only_fn;
        wire::prepare(&client, &splice, implicit, reset, session).await?;
        let mut conn = self.conn(client, pid, Some(splice), kill);
        conn.audit_append = audit_append;
        Ok(conn)
    }

    /// Logs, at the pool's first tenant connection, which implementation of the signed
    /// context the database runs, so an operator sees a database left on the slower
    /// PL/pgSQL one.
    fn report_context_impl(&self, native: bool, replay: bool) {
        if self.context_reported.swap(true, Ordering::Relaxed) {
            return;
        }
        let database = self.config.pg().get_dbname().unwrap_or_default();
        if self.pooler == Pooler::Transaction {
            if replay {
                tracing::info!(
                    database,
                    replay_registry = true,
                    "tenant pool behind a transaction-mode pooler: the server keeps a replay registry; \
                     transactions open with single-use tokens in front of their first statement"
                );
            } else {
                tracing::info!(
                    database,
                    replay_registry = false,
                    "tenant pool behind a transaction-mode pooler: the server has no replay registry \
                     (tenancy_context not in shared_preload_libraries); each transaction opens with a \
                     round trip of its own"
                );
            }
        }
        if native {
            tracing::info!(
                database,
                context = "native",
                "tenant pool: the database runs the native tenant context (tenancy_context)"
            );
        } else {
            tracing::info!(
                database,
                context = "plpgsql",
                "tenant pool: the database runs the PL/pgSQL tenant context; install the tenancy_context extension \
                 (extensions/tenancy_context) and bootstrap the database again for the native one"
            );
        }
    }

    fn conn(
        &self,
        client: Client,
        pid: i32,
        splice: Option<Arc<Splice>>,
        kill: oneshot::Sender<()>,
    ) -> Conn {
        let backend = splice
            .as_deref()
            .map_or_else(|| Arc::new(AtomicI32::new(0)), Splice::backend);
        backend.store(pid, Ordering::Relaxed);
        let watch = Arc::new(Watch {
            epoch: self.epoch,
            since: AtomicU64::new(0),
            pid: backend,
            cancel: client.cancel_token(),
            kill: Mutex::new(Some(kill)),
            expired: AtomicBool::new(false),
        });
        if self.tenant {
            if let Ok(mut ws) = self.watches.lock() {
                ws.push(Arc::downgrade(&watch));
            }
        }
        Conn {
            client,
            pid,
            splice,
            stmts: crate::FastMap::default(),
            pooled: None,
            replay: false,
            audit_append: false,
            one_call: false,
            types: HashMap::new(),
            last_issued: i64::MIN,
            deferred_commit: Mutex::new(None),
            deferred: Arc::clone(&self.deferred),
            retired: AtomicBool::new(false),
            watch,
        }
    }
}

/// The longest a single-use token lives: it holds a slot of the server's replay registry
/// until it expires, and is sent within moments of being signed.
const SINGLE_USE_TTL: Duration = Duration::from_secs(10);

/// Signs a single-use (`v3`) token for `tenant`: a random nonce, valid for the pool's
/// token lifetime but at most [`SINGLE_USE_TTL`].
pub(super) fn sign_single_use(key: &ContextKey, tenant: TenantId, ttl_micros: i64) -> ContextToken {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let ttl = ttl_micros.min(SINGLE_USE_TTL.as_micros() as i64);
    key.sign_single_use(tenant, rand::random(), now, ttl)
}

/// How long the token that initialises a session context is valid.
const INIT_TOKEN_TTL_MICROS: i64 = 60_000_000;

/// Initialises the PL/pgSQL session context of a new connection (backend `pid`) and
/// returns its first secret. The database takes it only with a v1 token signed for this
/// backend (for a random tenant, entered by nothing), so SQL on a backend the SDK did not
/// initialise cannot give itself a session context. Token and secret travel as a bound
/// parameter and in the reply, never in query text.
async fn init_session(client: &Client, key: &ContextKey, pid: i32) -> Result<i64, wire::Error> {
    let issued = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    let token = key.sign(TenantId::new_random(), pid, issued, INIT_TOKEN_TTL_MICROS);
    let row = client
        .query_one(
            "SELECT tenancy.init_session($1::pg_catalog.text)",
            &[&token.as_str()],
        )
        .await
        .map_err(|e| {
            wire::Error::Setup(format!(
                "initialising the tenant session context (tenancy.init_session()) failed: {}",
                e.as_db_error().map_or_else(
                    || e.to_string(),
                    |d| match d.hint() {
                        Some(h) => format!("{}. {h}", d.message()),
                        None => d.message().to_owned(),
                    }
                )
            ))
        })?;
    row.try_get::<_, Option<i64>>(0)
        .ok()
        .flatten()
        .ok_or_else(|| wire::Error::Setup("tenancy.init_session() returned no secret".into()))
}

/// Drives a connection until it closes, or until the returned sender fires (the
/// watchdog's way to drop the socket of an overdue transaction).
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>) -> oneshot::Sender<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (kill, killed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            r = connection => if let Err(e) = r {
                tracing::debug!(error = %e, "pooled connection closed");
            },
            Ok(()) = killed => tracing::debug!("pooled connection closed by the transaction watchdog"),
        }
    });
    kill
}
