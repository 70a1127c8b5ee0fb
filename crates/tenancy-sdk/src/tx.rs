//! `TenantTx`: a transaction bound to one tenant.

use std::future::Future;

use tenancy_core::TenantId;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::pool::Object;
use crate::Error;

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
    /// `BEGIN; SELECT tenancy.enter('<token>')`, sent with the first statement.
    begin_sql: Option<String>,
    /// Life-cycle state.
    state: State,
    /// Began with `BEGIN READ ONLY`: the commit is not awaited.
    read_only: bool,
    /// The pool's sweeper sends COMMITs left for the connection's next user.
    defer_commit: bool,
}

async fn with_begin<T>(
    client: &Client,
    begin: Option<&str>,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match begin {
        Some(sql) => {
            // join! polls in order, so BEGIN+context is queued on the connection before the
            // statement: both leave in one write and come back in one round trip.
            let (b, r) = futures_util::join!(client.batch_execute(sql), fut);
            b.map_err(Error::ContextRefused)?;
            r.map_err(Error::db("running a statement"))
        }
        None => fut.await.map_err(Error::db("running a statement")),
    }
}

impl TenantTx {
    pub(crate) fn new(
        conn: Object,
        tenant: TenantId,
        begin_sql: String,
        read_only: bool,
        defer_commit: bool,
    ) -> Self {
        TenantTx {
            conn: Some(conn),
            tenant,
            begin_sql: Some(begin_sql),
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

    fn take_begin(&mut self) -> Option<String> {
        let b = self.begin_sql.take();
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
        let r = match begin {
            Some(b) => {
                let (rb, rs) =
                    futures_util::join!(conn.client.batch_execute(&b), conn.client.prepare(sql));
                match (rb, rs) {
                    (Err(e), _) => Err(Error::ContextRefused(e)),
                    (Ok(()), r) => r.map_err(Error::db("preparing a statement")),
                }
            }
            None => conn
                .client
                .prepare(sql)
                .await
                .map_err(Error::db("preparing a statement")),
        };
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
        let client = &self.conn()?.client;
        let r = with_begin(client, begin.as_deref(), client.query(&stmt, params)).await;
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
        let client = &self.conn()?.client;
        let r = with_begin(client, begin.as_deref(), client.query_one(&stmt, params)).await;
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
        let client = &self.conn()?.client;
        let r = with_begin(client, begin.as_deref(), client.query_opt(&stmt, params)).await;
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
        let client = &self.conn()?.client;
        let r = with_begin(client, begin.as_deref(), client.execute(&stmt, params)).await;
        self.track(r)
    }

    /// Runs one or more statements without parameters (simple-query protocol).
    pub async fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.check_usable()?;
        let begin = self.take_begin();
        let client = &self.conn()?.client;
        let r = with_begin(client, begin.as_deref(), client.batch_execute(sql)).await;
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
                .batch_execute(&b)
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
            State::NotBegun => Ok(()),
            State::Open if self.read_only && self.defer_commit => {
                conn.defer_commit();
                Ok(())
            }
            State::Open if self.read_only => {
                match crate::pool::send_without_waiting(&conn.client, "COMMIT") {
                    Some(r) => r.map_err(Error::db("committing")),
                    None => Ok(()),
                }
            }
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

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let state = self.state;
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        if state == State::NotBegun {
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
            return; // Nothing was sent; the connection is clean.
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
