//! The runtime-role connection pool.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use tenancy_core::{ContextKey, TenantId};
use tokio_postgres::{Client, NoTls, Statement};

use crate::{Error, TenantTx};

/// Prepared statements kept per connection before the cache is cleared.
const STATEMENT_CACHE_LIMIT: usize = 256;

/// One pooled connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The client; its connection task runs on the runtime that created it.
    pub(crate) client: Client,
    /// Backend process id, bound into every context token signed for this connection.
    pub(crate) pid: i32,
    /// Prepared statements by SQL text, so repeated queries skip Parse/Describe.
    stmts: HashMap<String, Statement>,
    /// Issue time of the last token signed for this connection. Tokens are single-use per
    /// backend (the native context refuses one not issued after the last it accepted), so
    /// each new token is issued strictly later, even if the wall clock steps back.
    last_issued: i64,
}

impl Conn {
    /// A cached prepared statement for `sql`, if any.
    pub(crate) fn cached(&self, sql: &str) -> Option<Statement> {
        self.stmts.get(sql).cloned()
    }

    /// Remembers a prepared statement.
    pub(crate) fn remember(&mut self, sql: &str, stmt: Statement) {
        if self.stmts.len() >= STATEMENT_CACHE_LIMIT {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_owned(), stmt);
    }
}

/// Creates and checks connections for the pool.
#[derive(Debug)]
pub(crate) struct Manager {
    /// Where to connect, as which role.
    config: tokio_postgres::Config,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<Conn, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "pooled connection closed");
            }
        });
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        Ok(Conn {
            client,
            pid,
            stmts: HashMap::new(),
            last_issued: i64::MIN,
        })
    }

    async fn recycle(&self, conn: &mut Conn, _: &Metrics) -> RecycleResult<tokio_postgres::Error> {
        if conn.client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

pub(crate) type Pool = managed::Pool<Manager>;
pub(crate) type Object = managed::Object<Manager>;

/// Builds a pool of plain connections (used directly only for catalog reads, which are
/// not tenant data).
pub(crate) fn build_pool(
    config: tokio_postgres::Config,
    opts: &PoolOptions,
) -> Result<Pool, Error> {
    Pool::builder(Manager { config })
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
    key: ContextKey,
    /// Token lifetime and wait timeout.
    opts: PoolOptions,
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
        let pool = build_pool(config, &opts)?;
        Ok(TenantPool { pool, key, opts })
    }

    /// Opens a transaction for `tenant`. Nothing is sent yet: `BEGIN` and the signed
    /// context go out in one message together with the first statement.
    pub async fn begin(&self, tenant: TenantId) -> Result<TenantTx, Error> {
        self.open(tenant, None, false).await
    }

    /// Opens a read-only transaction for `tenant` (`BEGIN READ ONLY`): the server refuses
    /// any write in it. Its commit cannot fail, so [`TenantTx::commit`] queues the COMMIT
    /// behind the connection's next use instead of waiting a round trip for it: a point
    /// read costs one round trip in all (begin, context and query together).
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
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let issued = now.max(conn.last_issued.saturating_add(1));
        conn.last_issued = issued;
        let token = self.key.sign(
            tenant,
            conn.pid,
            issued,
            self.opts.token_ttl.as_micros() as i64,
        );
        // The token text is [a-z0-9.-] only (checked by ContextToken), so it is safe inside
        // a string literal; a simple-query message lets BEGIN and enter share one message,
        // which the PL/pgSQL tenancy.enter requires.
        let mut begin = format!(
            "BEGIN{}; SELECT tenancy.enter('{}')",
            if read_only { " READ ONLY" } else { "" },
            token.as_str()
        );
        if let Some(schema) = schema {
            // Checked above: [a-z0-9_] only, so it needs no quoting beyond the double quotes.
            begin.push_str(&format!("; SET LOCAL search_path = \"{schema}\", public"));
        }
        Ok(TenantTx::new(conn, tenant, begin, read_only))
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
