//! `TenantTx`: a transaction bound to one tenant.

use std::future::Future;

use tenancy_core::TenantId;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::pool::{Conn, Object};
use crate::wire::{self, Splice};
use crate::Error;

/// What opens a transaction: the deferred COMMIT of the connection's previous read-only
/// transaction, `BEGIN [READ ONLY]`, the signed context, the schema's search path.
#[derive(Debug)]
pub(crate) struct Begin {
    pub(crate) commit_first: bool,
    pub(crate) read_only: bool,
    /// The signed token: `[a-z0-9.-]` only (checked by `ContextToken`).
    pub(crate) token: String,
    /// Checked by the pool: `[a-z0-9_]` only.
    pub(crate) schema: Option<String>,
}

impl Begin {
    /// The opening as one simple-query message. The PL/pgSQL `tenancy.enter` needs this
    /// form: it must run in the first message of its transaction.
    fn simple_sql(&self) -> String {
        // The token and schema texts need no quoting beyond the quotes (see the fields).
        let mut sql = format!(
            "{}BEGIN{}; SELECT tenancy.enter('{}')",
            if self.commit_first { "COMMIT; " } else { "" },
            if self.read_only { " READ ONLY" } else { "" },
            self.token
        );
        if let Some(schema) = &self.schema {
            sql.push_str(&format!("; SET LOCAL search_path = \"{schema}\", public"));
        }
        sql
    }

    /// Queues the opening on a spliced connection, in front of the next request.
    fn splice_into(&self, splice: &Splice) {
        let path = self.schema.as_ref().map(|s| format!("\"{s}\", public"));
        let (msgs, stmts) = wire::encode(&wire::Opening {
            commit_first: self.commit_first,
            read_only: self.read_only,
            token: &self.token,
            search_path: path.as_deref(),
        });
        splice.push(&msgs, stmts);
    }
}

/// Where the transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet; `begin_sql` goes out with the first statement.
    NotBegun,
    /// BEGIN and context were sent (maybe still in flight): must end with COMMIT or ROLLBACK.
    Open,
    /// A statement failed: only ROLLBACK is possible.
    Failed,
}

/// A transaction on the tenant's database, bound to one tenant by a signed,
/// transaction-local context. Row-level security limits every statement to that tenant.
///
/// End it with [`commit`](TenantTx::commit) or [`rollback`](TenantTx::rollback). Dropping
/// it (including when its future is cancelled) rolls back before the connection goes
/// back to the pool, so no connection ever carries a tenant context to its next user.
#[derive(Debug)]
pub struct TenantTx {
    /// The pooled connection; `None` only after the transaction ended.
    conn: Option<Object>,
    /// Tenant this transaction is bound to.
    tenant: TenantId,
    /// The opening, sent with the first statement.
    begin: Option<Begin>,
    /// Life-cycle state.
    state: State,
    /// Began with `BEGIN READ ONLY`: the commit is not awaited.
    read_only: bool,
    /// The pool's sweeper sends COMMITs left for the connection's next user.
    defer_commit: bool,
}

/// Runs `fut` (a request not yet sent: futures send on first poll) with the opening in
/// front of it when the transaction has not begun: spliced into the request's own
/// messages on a native-context connection, else pipelined as a simple query just before.
async fn with_begin<T>(
    conn: &Conn,
    begin: Option<Begin>,
    what: &'static str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match (begin, conn.splice.as_deref()) {
        (Some(b), Some(splice)) => {
            b.splice_into(splice);
            fut.await.map_err(|e| {
                if splice.take_failed() {
                    // Whatever the cause (a refused token, statements deallocated through
                    // `client()`), this connection is not handed out again.
                    conn.retire();
                    Error::ContextRefused(e)
                } else {
                    Error::Db { what, source: e }
                }
            })
        }
        (Some(b), None) => {
            // join! polls in order, so BEGIN+context is queued on the connection before the
            // statement: both leave in one write and come back in one round trip.
            let sql = b.simple_sql();
            let (rb, r) = futures_util::join!(conn.client.batch_execute(&sql), fut);
            rb.map_err(Error::ContextRefused)?;
            r.map_err(Error::db(what))
        }
        (None, _) => fut.await.map_err(Error::db(what)),
    }
}

impl TenantTx {
    pub(crate) fn new(
        conn: Object,
        tenant: TenantId,
        begin: Begin,
        read_only: bool,
        defer_commit: bool,
    ) -> Self {
        TenantTx {
            conn: Some(conn),
            tenant,
            begin: Some(begin),
            state: State::NotBegun,
            read_only,
            defer_commit,
        }
    }

    /// Whether this transaction was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The tenant this transaction is bound to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    fn conn(&mut self) -> Result<&mut Object, Error> {
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Invalid("transaction already ended".into()))
    }

    fn take_begin(&mut self) -> Option<Begin> {
        let b = self.begin.take();
        if b.is_some() {
            // From here on the server may have an open transaction: drop must roll back.
            self.state = State::Open;
        }
        b
    }

    fn track<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.state == State::Failed {
            return Err(Error::Aborted);
        }
        Ok(())
    }

    /// The prepared statement for `sql`, from the connection's cache or prepared now. When
    /// the transaction has not begun, BEGIN and the context are pipelined ahead of the
    /// Parse, so names resolve with the transaction's settings (its `search_path`).
    async fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement, Error> {
        if let Some(s) = self.conn()?.cached(sql) {
            return Ok(s);
        }
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "preparing a statement",
            conn.client.prepare(sql),
        )
        .await;
        let stmt = self.track(r)?;
        self.conn()?.remember(sql, stmt.clone());
        Ok(stmt)
    }

    /// Runs a statement and returns its rows.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.check_usable()?;
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "running a statement",
            conn.client.query(&stmt, params),
        )
        .await;
        self.track(r)
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.check_usable()?;
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "running a statement",
            conn.client.query_one(&stmt, params),
        )
        .await;
        self.track(r)
    }

    /// Runs a statement that returns zero or one row.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.check_usable()?;
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "running a statement",
            conn.client.query_opt(&stmt, params),
        )
        .await;
        self.track(r)
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.check_usable()?;
        let stmt = self.statement(sql).await?;
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "running a statement",
            conn.client.execute(&stmt, params),
        )
        .await;
        self.track(r)
    }

    /// Runs one or more statements without parameters (simple-query protocol).
    pub async fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.check_usable()?;
        let begin = self.take_begin();
        let conn = self.conn()?;
        let r = with_begin(
            conn,
            begin,
            "running a statement",
            conn.client.batch_execute(sql),
        )
        .await;
        self.track(r)
    }

    /// The underlying `tokio_postgres::Client`, inside this transaction, for what the
    /// methods above do not cover (`copy_out`, `query_raw`, …). The transaction is begun
    /// first if it has not been.
    pub async fn client(&mut self) -> Result<&Client, Error> {
        self.check_usable()?;
        if let Some(b) = self.take_begin() {
            let r = self
                .conn()?
                .client
                .batch_execute(&b.simple_sql())
                .await
                .map_err(Error::ContextRefused);
            self.track(r)?;
        }
        Ok(&self.conn()?.client)
    }

    /// Commits. If a statement failed earlier the transaction is rolled back instead and
    /// [`Error::Aborted`] is returned, so a failed transaction never looks committed.
    ///
    /// A read-only transaction ([`TenantPool::begin_read_only`](crate::TenantPool::begin_read_only))
    /// has nothing to commit that could fail, so its COMMIT is not awaited: the connection
    /// goes back to the pool at once and the COMMIT leads the next message its next user
    /// sends (`COMMIT; BEGIN …; SELECT tenancy.enter(…)`), or, if the connection stays idle
    /// for a few milliseconds, the pool's sweeper sends it. Either way it is the first
    /// thing the server receives on that connection, so nothing ever runs inside this
    /// finished transaction.
    pub async fn commit(mut self) -> Result<(), Error> {
        let state = self.state;
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        match state {
            State::NotBegun => {
                self.release_unbegun(&conn);
                Ok(())
            }
            State::Open if self.read_only && self.defer_commit => {
                conn.defer_commit();
                Ok(())
            }
            State::Open if self.read_only => match conn.send_commit_without_waiting() {
                Some(r) => r.map_err(Error::db("committing")),
                None => Ok(()),
            },
            State::Open => conn
                .client
                .batch_execute("COMMIT")
                .await
                .map_err(Error::db("committing")),
            State::Failed => {
                conn.client
                    .batch_execute("ROLLBACK")
                    .await
                    .map_err(Error::db("rolling back"))?;
                Err(Error::Aborted)
            }
        }
    }

    /// Ends a transaction that never sent anything. If it had taken over the COMMIT of the
    /// connection's previous read-only transaction, that COMMIT is still owed: hand it
    /// back to the connection (the next user or the sweeper sends it).
    fn release_unbegun(&mut self, conn: &Conn) {
        if self.begin.take().is_some_and(|b| b.commit_first) {
            conn.defer_commit();
        }
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let state = self.state;
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        if state == State::NotBegun {
            self.release_unbegun(&conn);
            return Ok(());
        }
        conn.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::db("rolling back"))
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.state == State::NotBegun {
            // Nothing was sent; the connection is as this transaction found it.
            self.release_unbegun(&conn);
            return;
        }
        // Roll back before the connection is reused. The ROLLBACK is queued behind whatever
        // the dropped statement left in flight, so it ends this transaction whatever state
        // it was in. Without a runtime, close the connection instead of reusing it.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = conn.client.batch_execute("ROLLBACK").await {
                        tracing::warn!(error = %e, "rollback of a dropped tenant transaction failed; closing the connection");
                        drop(deadpool::managed::Object::take(conn));
                    }
                });
            }
            Err(_) => drop(deadpool::managed::Object::take(conn)),
        }
    }
}
