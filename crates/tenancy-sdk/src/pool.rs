//! The runtime-role connection pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tenancy_core::{ContextKey, ContextToken, TenantId};
use tokio_postgres::{Client, NoTls, Statement};

use crate::tx::{Begin, Signer};
use crate::wire::{self, Splice};
use crate::{Error, TenantTx};

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
    stmts: HashMap<String, Statement>,
    /// Issue time of the last token signed for this connection. Tokens are single-use per
    /// backend (both contexts refuse one not issued after the last they accepted), so
    /// each new token is issued strictly later, even if the wall clock steps back.
    last_issued: i64,
    /// When a read-only transaction on this connection finished without its COMMIT being
    /// sent yet (see [`TenantTx::commit`](crate::TenantTx::commit)).
    deferred_commit: Mutex<Option<Instant>>,
    /// Count of the pool's connections with a deferred commit (the sweeper idles at 0).
    deferred: Arc<AtomicUsize>,
    /// The database refused an opening on this connection: it is closed, not reused.
    retired: AtomicBool,
}

impl Conn {
    /// A cached prepared statement for `sql`, if any.
    pub(crate) fn cached(&self, sql: &str) -> Option<Statement> {
        self.stmts.get(sql).cloned()
    }

    /// Signs a context token for `tenant` on this connection. Tokens are single-use per
    /// backend, so each is issued strictly after the previous one, even if the wall clock
    /// steps back.
    pub(crate) fn sign(
        &mut self,
        key: &ContextKey,
        tenant: TenantId,
        ttl_micros: i64,
    ) -> ContextToken {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let issued = now.max(self.last_issued.saturating_add(1));
        self.last_issued = issued;
        key.sign(tenant, self.pid, issued, ttl_micros)
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

    /// Marks the connection as not to be reused (its opening was refused).
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
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

/// Creates and checks connections for the pool.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role.
    config: tokio_postgres::Config,
    /// Tenant connections: detect the context implementation and prepare the one-Sync
    /// openings.
    tenant: bool,
    /// Shared with every connection: how many have a deferred commit.
    deferred: Arc<AtomicUsize>,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = wire::Error;

    async fn create(&self) -> Result<Conn, wire::Error> {
        // Boxed: connecting is rare, and inline its state would make the future of every
        // checkout (and of every transaction opening) kilobytes larger.
        Box::pin(self.connect()).await
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<wire::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if conn.retired.load(Ordering::Relaxed) {
            return Err(RecycleError::message(
                "the database refused a transaction opening on this connection",
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
            let (client, connection) = self.config.connect(NoTls).await?;
            spawn_connection(connection);
            return Ok(self.conn(client, 0, None));
        }
        let (client, connection, splice) = wire::connect(&self.config).await?;
        spawn_connection(connection);
        let row = client
            .query_one(
                // Native only when every C entry point the openings use is there (a
                // database bootstrapped before `enter_read_only` existed gets explicit
                // read-only openings until its runtime is installed again).
                "SELECT pg_backend_pid(), (SELECT count(*) = 2 FROM pg_catalog.pg_proc p \
                   JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
                  WHERE l.lanname = 'c' AND p.oid IN (to_regprocedure('tenancy.enter(text)'), \
                                                      to_regprocedure('tenancy.enter_read_only(text)')))",
                &[],
            )
            .await?;
        let (pid, native): (i32, bool) = (row.get(0), row.get(1));
        wire::prepare(&client, &splice, native).await?;
        Ok(self.conn(client, pid, Some(splice)))
    }

    fn conn(&self, client: Client, pid: i32, splice: Option<Arc<Splice>>) -> Conn {
        Conn {
            client,
            pid,
            splice,
            stmts: HashMap::new(),
            last_issued: i64::MIN,
            deferred_commit: Mutex::new(None),
            deferred: Arc::clone(&self.deferred),
            retired: AtomicBool::new(false),
        }
    }
}

/// Drives a connection until it closes.
fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "pooled connection closed");
        }
    });
}

pub(crate) type Pool = managed::Pool<Manager>;
pub(crate) type Object = managed::Object<Manager>;

/// Builds a pool of plain connections (used directly only for catalog reads, which are
/// not tenant data).
pub(crate) fn build_pool(
    config: tokio_postgres::Config,
    opts: &PoolOptions,
) -> Result<Pool, Error> {
    build_pool_with(config, opts, false, Arc::default())
}

fn build_pool_with(
    config: tokio_postgres::Config,
    opts: &PoolOptions,
    tenant: bool,
    deferred: Arc<AtomicUsize>,
) -> Result<Pool, Error> {
    Pool::builder(Manager {
        config,
        tenant,
        deferred,
    })
    .max_size(opts.max_size)
    .wait_timeout(Some(opts.wait_timeout))
    .create_timeout(Some(Duration::from_secs(10)))
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .map_err(|e| Error::Pool(e.to_string()))
}

/// Settings of a [`TenantPool`].
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Maximum number of connections.
    pub max_size: usize,
    /// How long a signed context token stays valid after it is issued. It only has to
    /// outlive the gap between signing and the transaction's first message.
    pub token_ttl: Duration,
    /// How long `begin` waits for a free connection.
    pub wait_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 16,
            token_ttl: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(30),
        }
    }
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
    /// Connections are opened lazily.
    pub fn new(
        config: tokio_postgres::Config,
        key: ContextKey,
        opts: PoolOptions,
    ) -> Result<Self, Error> {
        if opts.max_size == 0 {
            return Err(Error::Invalid("pool max_size must be at least 1".into()));
        }
        wire::check_config(&config).map_err(Error::Invalid)?;
        let deferred = Arc::new(AtomicUsize::new(0));
        let pool = build_pool_with(config, &opts, true, Arc::clone(&deferred))?;
        let defers_commits = match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(sweep_deferred_commits(pool.weak(), deferred));
                true
            }
            Err(_) => false,
        };
        Ok(TenantPool {
            pool,
            key: Arc::new(key),
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
    /// On the native context each statement runs in its own read-only implicit
    /// transaction, the context entered in front of it under the same Sync: a point read
    /// costs one round trip and leaves nothing open. Under READ COMMITTED every statement
    /// takes a fresh snapshot anyway, so statements see what they would in one
    /// transaction; `now()` differs per statement. A simple query
    /// ([`TenantTx::batch_execute`]) or [`TenantTx::client`] makes the rest of the
    /// transaction explicit (`BEGIN READ ONLY`). On the PL/pgSQL context the transaction
    /// is explicit and [`TenantTx::commit`] queues its COMMIT behind the connection's next
    /// use instead of waiting a round trip for it.
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
            check_schema_name(schema)?;
        }
        let mut conn = self
            .pool
            .get()
            .await
            .map_err(|e| Error::Pool(e.to_string()))?;
        let ttl_micros = self.opts.token_ttl.as_micros() as i64;
        let token = conn.sign(&self.key, tenant, ttl_micros);
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
        };
        Ok(TenantTx::new(
            conn,
            tenant,
            begin,
            signer,
            self.defers_commits,
        ))
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
