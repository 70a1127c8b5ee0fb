//! The runtime-role connection pool: [`TenantPool`], and the pooled connection (`Conn`,
//! lent out as a `Lease`) with its statement cache and deferred read-only commits.
//! Opening and checking connections is `manager`'s, the transaction watchdog
//! `watchdog`'s, openings behind a transaction-mode pooler `pooled`'s, the options
//! `options`'.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool::managed;
use tenancy_conn::PgConfig;
use tenancy_core::{ContextKey, ContextToken, TenantId};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::tx::{Begin, Credential, Signer};
use crate::wire::{self, Splice};
use crate::{Error, TenantTx};

mod manager;
mod options;
mod pooled;
mod watchdog;

use manager::sign_single_use;
pub(crate) use manager::Manager;
pub use options::{PoolOptions, Pooler};
pub(crate) use pooled::{parse_opening_reply, Pooled};
use watchdog::watch_transactions;
pub(crate) use watchdog::Watch;

/// Prepared statements kept per connection before the cache is cleared.
const STATEMENT_CACHE_LIMIT: usize = 256;

/// How long a finished read-only transaction may stay open on an idle connection before
/// the sweeper sends its COMMIT (when the connection is reused sooner, the COMMIT travels
/// in the same message as the next BEGIN).
const DEFERRED_COMMIT_MAX_AGE: Duration = Duration::from_millis(2);
/// How often the sweeper looks for such connections.
const SWEEP_INTERVAL: Duration = Duration::from_millis(5);

/// One pooled connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The client; its connection task runs on the runtime that created it.
    pub(crate) client: Client,
    /// Backend process id, bound into every context token signed for this connection.
    pub(crate) pid: i32,
    /// Set on every tenant connection: transaction openings ride in front of the first
    /// statement with no Sync of their own, the token as a bound parameter (see
    /// [`crate::wire`]).
    pub(crate) splice: Option<Arc<Splice>>,
    /// Prepared statements by SQL text, so repeated queries skip Parse/Describe.
    stmts: crate::FastMap<String, Statement>,
    /// Behind a transaction-mode pooler: what opens a transaction (see [`Pooled`]).
    pub(crate) pooled: Option<Arc<Pooled>>,
    /// Behind a transaction-mode pooler: the server keeps a replay registry (native
    /// context, preloaded), so transactions open with single-use tokens in front of their
    /// first statement, without a round trip of their own.
    pub(crate) replay: bool,
    /// With a replay registry: the database has `tenancy.enter_pooled`, so the opening is
    /// one call (enter, reset, limits) without a statement of its own for the timeout.
    pub(crate) one_call: bool,
    /// The database has `tenancy.audit_append` (the tenancy_context extension from version
    /// 1.3) when the connection was made.
    pub(crate) audit_append: bool,
    /// Behind a transaction-mode pooler: parameter types by statement (keyed by the
    /// schema placement's schema and the SQL text), learnt from a statement prepared and
    /// closed inside one transaction, so later runs are unnamed (Parse, Bind, Execute in
    /// one request) and nothing named outlives a transaction.
    types: HashMap<(Option<String>, String), Vec<Type>>,
    /// Issue time of the last token signed for this connection. Tokens are single-use per
    /// backend (both contexts refuse one not issued after the last they accepted), so
    /// each new token is issued strictly later, even if the wall clock steps back.
    last_issued: i64,
    /// When a read-only transaction on this connection finished without its COMMIT being
    /// sent yet (see [`TenantTx::commit`](crate::TenantTx::commit)).
    deferred_commit: Mutex<Option<Instant>>,
    /// Count of the pool's connections with a deferred commit (the sweeper idles at 0).
    deferred: Arc<AtomicUsize>,
    /// The database refused an opening on this connection, or it died or outlived its
    /// transaction deadline: it is closed, not reused.
    retired: AtomicBool,
    /// Shared with the pool's watchdog: when the transaction holding this connection
    /// began, and how to stop it.
    pub(crate) watch: Arc<Watch>,
}

impl Conn {
    /// A cached prepared statement for `sql`, if any.
    pub(crate) fn cached(&self, sql: &str) -> Option<Statement> {
        self.stmts.get(sql).cloned()
    }

    /// What enters `tenant` on this connection: the session context where the connection
    /// has one (its secret is taken when the opening is queued), else a signed token.
    pub(crate) fn sign(
        &mut self,
        key: &ContextKey,
        tenant: TenantId,
        ttl_micros: i64,
    ) -> Credential {
        if self.splice.as_deref().is_some_and(Splice::session) {
            return Credential::Session(tenant);
        }
        if self.pooled.is_some() && self.replay {
            return Credential::Token(sign_single_use(key, tenant, ttl_micros));
        }
        Credential::Token(self.sign_token(key, tenant, ttl_micros))
    }

    /// Whether this connection can open another transaction: a session-context
    /// connection needs its next secret (it has none once an opening failed).
    pub(crate) fn can_enter(&self) -> bool {
        match self.splice.as_deref() {
            Some(s) if s.session() => s.has_secret(),
            _ => true,
        }
    }

    /// Signs a context token for `tenant` on this connection. Tokens are single-use per
    /// backend, so each is issued strictly after the previous one, even if the wall clock
    /// steps back.
    fn sign_token(&mut self, key: &ContextKey, tenant: TenantId, ttl_micros: i64) -> ContextToken {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let issued = now.max(self.last_issued.saturating_add(1));
        self.last_issued = issued;
        key.sign(tenant, self.pid, issued, ttl_micros)
    }

    /// Whether transactions on this connection are opened by the SDK in front of their
    /// first statement (everything but a transaction-mode pooler without a replay
    /// registry, where an opening query runs first and the token is signed for it).
    pub(crate) fn signs_at_begin(&self) -> bool {
        self.pooled.is_none() || self.replay
    }

    /// Parameter types learnt for `sql` (behind a transaction-mode pooler).
    pub(crate) fn learnt_types(&self, schema: Option<&str>, sql: &str) -> Option<Vec<Type>> {
        self.types
            .get(&(schema.map(str::to_owned), sql.to_owned()))
            .cloned()
    }

    /// Remembers the parameter types of `sql` (behind a transaction-mode pooler).
    pub(crate) fn learn_types(&mut self, schema: Option<&str>, sql: &str, types: Vec<Type>) {
        if self.types.len() >= STATEMENT_CACHE_LIMIT {
            self.types.clear();
        }
        self.types
            .insert((schema.map(str::to_owned), sql.to_owned()), types);
    }

    /// Remembers a prepared statement.
    pub(crate) fn remember(&mut self, sql: &str, stmt: Statement) {
        if self.stmts.len() >= STATEMENT_CACHE_LIMIT {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_owned(), stmt);
    }

    /// Leaves the open read-only transaction's COMMIT to the next user of the connection
    /// (or to the sweeper, if nobody uses it within `DEFERRED_COMMIT_MAX_AGE`).
    pub(crate) fn defer_commit(&self) {
        if let Ok(mut g) = self.deferred_commit.lock() {
            if g.replace(Instant::now()).is_none() {
                self.deferred.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Takes a deferred commit: the caller must send `COMMIT` before anything else.
    pub(crate) fn take_deferred_commit(&self) -> bool {
        let taken = self
            .deferred_commit
            .lock()
            .map(|mut g| g.take().is_some())
            .unwrap_or(false);
        if taken {
            self.deferred.fetch_sub(1, Ordering::Relaxed);
        }
        taken
    }

    /// Sends a deferred COMMIT that has waited at least `age` (the connection is idle).
    fn flush_deferred_commit(&self, age: Duration) {
        let due = self
            .deferred_commit
            .lock()
            .map(|mut g| match *g {
                Some(at) if at.elapsed() >= age => g.take().is_some(),
                _ => false,
            })
            .unwrap_or(false);
        if due {
            self.deferred.fetch_sub(1, Ordering::Relaxed);
            self.send_commit_without_waiting();
        }
    }

    /// Sends COMMIT without waiting for its reply. On a spliced connection the splice is
    /// told first, so an opening queued while this COMMIT is still unwritten goes after
    /// it on the wire, never before (where the COMMIT would end that new transaction).
    pub(crate) fn send_commit_without_waiting(&self) -> Option<Result<(), tokio_postgres::Error>> {
        if let Some(splice) = &self.splice {
            splice.query_ahead();
        }
        send_without_waiting(&self.client, "COMMIT")
    }

    /// Marks the connection as not to be reused (its opening was refused, or it died).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }
}

/// A pooled connection lent to one transaction. Until it is dropped (back to the pool)
/// the watchdog counts its time against the transaction deadline; a dropped statement's
/// fence (see `TenantTx`'s `Drop`) still holds it, so a connection stuck behind a long
/// statement stays watched.
#[derive(Debug)]
pub(crate) struct Lease(Object);

impl Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.0
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.watch.since.store(0, Ordering::Relaxed);
    }
}

impl Lease {
    /// The pool's maximum number of connections.
    pub(crate) fn pool_size(&self) -> usize {
        Object::pool(&self.0).map_or(0, |p| p.status().max_size)
    }

    /// Gives this (retired) connection back and takes another from the pool, for another
    /// attempt of the same transaction. Back first: in a pool of one it is the only
    /// connection, and the pool replaces it when it sees it retired.
    pub(crate) async fn replace(self) -> Result<Lease, Error> {
        let pool = Object::pool(&self.0)
            .ok_or_else(|| Error::Pool("the connection pool was dropped".into()))?;
        let since = self.watch.since.load(Ordering::Relaxed);
        drop(self);
        let conn = pool.get().await.map_err(|e| Error::Pool(e.to_string()))?;
        // The transaction's deadline runs from its first attempt.
        conn.watch.since.store(since, Ordering::Relaxed);
        Ok(Lease(conn))
    }
}

/// Hands `sql` to the connection task and returns without waiting for the reply, which the
/// connection task reads and discards. Requests on a connection are sent in order, so
/// whatever is sent after this runs after it.
pub(crate) fn send_without_waiting(
    client: &Client,
    sql: &str,
) -> Option<Result<(), tokio_postgres::Error>> {
    // tokio-postgres sends a request on the future's first poll, before it awaits the reply.
    let fut = client.batch_execute(sql);
    futures_util::pin_mut!(fut);
    futures_util::FutureExt::now_or_never(fut)
}

/// Sends the deferred COMMITs of connections that have sat idle too long, until the pool
/// is dropped.
async fn sweep_deferred_commits(pool: managed::WeakPool<Manager>, deferred: Arc<AtomicUsize>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        if deferred.load(Ordering::Relaxed) == 0 {
            continue;
        }
        // Only idle connections are visited: one in use is never touched here.
        pool.retain(|conn, _| {
            conn.flush_deferred_commit(DEFERRED_COMMIT_MAX_AGE);
            true
        });
    }
}

pub(crate) type Pool = managed::Pool<Manager>;
pub(crate) type Object = managed::Object<Manager>;

/// Builds a pool of plain connections (used directly only for catalog reads, which are
/// not tenant data).
pub(crate) fn build_pool(config: PgConfig, opts: &PoolOptions) -> Result<Pool, Error> {
    build_pool_with(config, opts, None, Arc::default(), Arc::default())
}

/// `key`: a tenant pool's context key (tenant connections), `None` for plain connections.
fn build_pool_with(
    mut config: PgConfig,
    opts: &PoolOptions,
    key: Option<Arc<ContextKey>>,
    deferred: Arc<AtomicUsize>,
    watches: Arc<Mutex<Vec<Weak<Watch>>>>,
) -> Result<Pool, Error> {
    // Behind a transaction-mode pooler the limits are set per transaction instead: a
    // pooler refuses (PgBouncer: `unsupported startup parameter`) or drops `options`.
    let tenant = key.is_some();
    let pooled =
        (tenant && opts.pooler == Pooler::Transaction).then(|| Arc::new(Pooled::new(opts)));
    if opts.pooler == Pooler::Direct {
        let options = match config.pg().get_options() {
            Some(own) if !own.trim().is_empty() => format!("{} {own}", opts.startup_options()),
            _ => opts.startup_options(),
        };
        config.pg_mut().options(options);
    }
    Pool::builder(Manager {
        config,
        key,
        tenant,
        deferred,
        watches,
        epoch: Instant::now(),
        context_reported: AtomicBool::new(false),
        pooler: opts.pooler,
        pooled,
    })
    .max_size(opts.max_size)
    .wait_timeout(Some(opts.wait_timeout))
    .create_timeout(Some(Duration::from_secs(10)))
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .map_err(|e| Error::Pool(e.to_string()))
}

/// A pool of runtime-role connections to one database that hands out connections only
/// as [`TenantTx`]s.
#[derive(Clone, Debug)]
pub struct TenantPool {
    /// The connections.
    pool: Pool,
    /// Signs context tokens; the database holds the same key where the runtime role
    /// cannot read it.
    key: Arc<ContextKey>,
    /// Token lifetime and wait timeout.
    opts: PoolOptions,
    /// A sweeper task sends deferred read-only COMMITs (false without a Tokio runtime:
    /// read-only commits are then sent at once).
    defers_commits: bool,
}

impl TenantPool {
    /// Builds a pool that connects with `config` (which must name the runtime role).
    /// Connections are opened lazily. TLS is as `config` says (a `tokio_postgres::Config`
    /// converts with its own `sslmode`; [`PgConfig`] also verifies the server's
    /// certificate and presents client certificates).
    pub fn new(
        config: impl Into<PgConfig>,
        key: ContextKey,
        opts: PoolOptions,
    ) -> Result<Self, Error> {
        let config = config.into();
        if opts.max_size == 0 {
            return Err(Error::Invalid("pool max_size must be at least 1".into()));
        }
        wire::check_config(config.pg()).map_err(Error::Invalid)?;
        if let Some(path) = &opts.search_path {
            if path.contains('\0') {
                return Err(Error::Invalid(
                    "pool search_path must not contain a NUL byte".into(),
                ));
            }
        }
        let deferred = Arc::new(AtomicUsize::new(0));
        let watches = Arc::default();
        let key = Arc::new(key);
        let pool = build_pool_with(
            config,
            &opts,
            Some(Arc::clone(&key)),
            Arc::clone(&deferred),
            Arc::clone(&watches),
        )?;
        let defers_commits = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweep_deferred_commits(pool.weak(), deferred));
                if !opts.transaction_deadline.is_zero() {
                    rt.spawn(watch_transactions(
                        pool.weak(),
                        watches,
                        pool.manager().config.clone(),
                        opts.transaction_deadline,
                    ));
                }
                true
            }
            Err(_) => false,
        };
        Ok(TenantPool {
            pool,
            key,
            opts,
            defers_commits,
        })
    }

    /// Opens a transaction for `tenant`. Nothing is sent yet: `BEGIN` and the signed
    /// context go out in one message together with the first statement.
    pub async fn begin(&self, tenant: TenantId) -> Result<TenantTx, Error> {
        self.open(tenant, None, false).await
    }

    /// Opens a read-only transaction for `tenant`: the server refuses any write in it.
    ///
    /// Each statement runs in its own read-only implicit transaction, the context entered
    /// in front of it (`tenancy.enter_read_only`) under the same Sync: a point read
    /// costs one round trip and leaves nothing open. Under READ COMMITTED every statement
    /// takes a fresh snapshot anyway, so statements see what they would in one
    /// transaction; `now()` differs per statement. A simple query
    /// ([`TenantTx::batch_execute`]) or [`TenantTx::client`] makes the rest of the
    /// transaction explicit (`BEGIN READ ONLY`); an explicit read-only transaction's
    /// [`TenantTx::commit`] queues its COMMIT behind the connection's next use instead of
    /// waiting a round trip for it.
    pub async fn begin_read_only(&self, tenant: TenantId) -> Result<TenantTx, Error> {
        self.open(tenant, None, true).await
    }

    /// Opens a transaction for `tenant` whose unqualified table names resolve in `schema`
    /// first (the schema placement). The `search_path` is set with `SET LOCAL` in the same
    /// message as BEGIN and the context. It is a convenience, not the isolation: tables in
    /// tenant schemas are tenant tables with the same RLS policy, so a statement that
    /// names another tenant's schema still sees none of its rows.
    pub async fn begin_in_schema(&self, tenant: TenantId, schema: &str) -> Result<TenantTx, Error> {
        self.open(tenant, Some(schema), false).await
    }

    /// Opens a transaction: `schema` first on the search path when given, read-only when
    /// asked.
    pub(crate) async fn open(
        &self,
        tenant: TenantId,
        schema: Option<&str>,
        read_only: bool,
    ) -> Result<TenantTx, Error> {
        if let Some(schema) = schema {
            check_schema_name(schema).inspect_err(|_| crate::metrics::tx_event("refused"))?;
        }
        let waited = crate::metrics::wait_started();
        let observed = self.opts.observer.as_ref().map(|o| (o, Instant::now()));
        let got = self.pool.get().await;
        if let Some((o, at)) = observed {
            o.pool_wait(tenant, at.elapsed(), got.is_ok());
        }
        let mut conn = Lease(got.map_err(|e| {
            crate::metrics::tx_event("refused");
            Error::Pool(e.to_string())
        })?);
        if waited.is_some() {
            let st = self.pool.status();
            crate::metrics::wait_ended(waited, (st.size, st.available, st.max_size));
        }
        crate::metrics::tx_event("opened");
        conn.watch.start();
        let ttl_micros = self.opts.token_ttl.as_micros() as i64;
        // Behind a transaction-mode pooler without a replay registry the token is signed
        // once the transaction runs (its backend and start are known).
        let token = conn
            .signs_at_begin()
            .then(|| conn.sign(&self.key, tenant, ttl_micros));
        // A read-only transaction that ended on this connection without its COMMIT being
        // sent yet: the COMMIT leads the opening.
        let begin = Begin {
            commit_first: conn.take_deferred_commit(),
            read_only,
            token,
            schema: schema.map(str::to_owned),
        };
        let signer = Signer {
            key: Arc::clone(&self.key),
            ttl_micros,
            deadline: self.opts.transaction_deadline,
        };
        Ok(TenantTx::new(
            conn,
            tenant,
            begin,
            signer,
            self.defers_commits,
            self.opts.observer.clone(),
        ))
    }

    /// Opens connections until `n` are open (at most the pool's size) and leaves them
    /// idle, ahead of the transactions that will need them (connections are otherwise
    /// opened on first use).
    pub async fn warm(&self, n: usize) -> Result<(), Error> {
        let st = self.pool.status();
        let want = n.min(st.max_size).saturating_sub(st.size);
        let opened = futures_util::future::join_all((0..want).map(|_| self.pool.get())).await;
        // Dropped: back to the pool, idle.
        for conn in opened {
            drop(conn.map_err(|e| Error::Pool(e.to_string()))?);
        }
        Ok(())
    }

    /// Pool status: (connections open, connections idle).
    pub fn status(&self) -> (usize, usize) {
        let s = self.pool.status();
        (s.size, s.available)
    }
}

/// Schema names the SDK puts into `SET LOCAL search_path`: `[a-z][a-z0-9_]{0,62}`.
fn check_schema_name(schema: &str) -> Result<(), Error> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.as_bytes()[0].is_ascii_lowercase()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "schema name {schema:?} is not allowed: use 1 to 63 characters from a-z, 0-9 and '_', starting with a letter"
        )))
    }
}
