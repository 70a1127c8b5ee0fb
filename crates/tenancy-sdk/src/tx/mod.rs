//! `TenantTx`: a transaction bound to one tenant.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tenancy_core::{ContextKey, TenantId};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use crate::pool::{parse_opening_reply, Conn, Lease};
use crate::wire;
use crate::Error;

mod finish;
mod opening;
mod ops;

use opening::{connection_lost, with_opening};
pub(crate) use opening::{Begin, Credential};
use ops::{run_prepared, run_typed, Op, Out};

/// What a failed statement was doing, for its error.
const RUNNING: &str = "running a statement";

/// Where the transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent yet; the opening goes out with the first statement.
    NotBegun,
    /// Read-only (no schema search path): every statement ran in its own implicit
    /// transaction (context and statement under one Sync), so nothing is open between
    /// statements and there is nothing to commit or roll back.
    Implicit,
    /// BEGIN and context were sent (maybe still in flight): must end with COMMIT or ROLLBACK.
    Open,
    /// A statement failed. `open`: an explicit transaction is open and must be rolled back.
    Failed { open: bool },
}

/// Signs the context tokens of a transaction's later implicit statements (and of its
/// opening again when it moves to another connection).
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    pub(crate) key: Arc<ContextKey>,
    pub(crate) ttl_micros: i64,
    /// The pool's transaction deadline, for the error of a transaction that outlived it.
    pub(crate) deadline: Duration,
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
    conn: Option<Lease>,
    /// Tenant this transaction is bound to.
    tenant: TenantId,
    /// The schema placement's schema, to open the transaction again on another
    /// connection if its first one died before anything of it ran.
    schema: Option<String>,
    /// The opening of the first statement (its token, an owed COMMIT).
    begin: Option<Begin>,
    /// Signs tokens for later implicit statements.
    signer: Signer,
    /// Life-cycle state.
    state: State,
    /// Opened read-only.
    read_only: bool,
    /// The pool's sweeper sends COMMITs left for the connection's next user.
    defer_commit: bool,
    /// A statement future is running (if the transaction is dropped meanwhile, its request
    /// may still be unwritten: the connection is fenced before reuse).
    in_flight: bool,
    /// The pool's observer and when `begin` returned this transaction (its duration).
    observer: Option<(Arc<dyn crate::Observer>, Instant)>,
}

impl TenantTx {
    pub(crate) fn new(
        conn: Lease,
        tenant: TenantId,
        begin: Begin,
        signer: Signer,
        defer_commit: bool,
        observer: Option<Arc<dyn crate::Observer>>,
    ) -> Self {
        TenantTx {
            conn: Some(conn),
            tenant,
            schema: begin.schema.clone(),
            read_only: begin.read_only,
            begin: Some(begin),
            signer,
            state: State::NotBegun,
            defer_commit,
            in_flight: false,
            observer: observer.map(|o| (o, Instant::now())),
        }
    }

    /// Tells the observer how a statement that started at `started` ended.
    fn observe_statement<T>(
        &self,
        started: Option<Instant>,
        r: &Result<T, Error>,
        rows: impl FnOnce(&T) -> u64,
    ) {
        if let (Some(at), Some((o, _))) = (started, &self.observer) {
            let outcome = match r {
                Ok(v) => crate::Outcome::Ok { rows: rows(v) },
                Err(Error::ContextRefused(_)) => crate::Outcome::ContextRefused,
                Err(_) => crate::Outcome::Error,
            };
            o.statement(self.tenant, at.elapsed(), outcome);
        }
    }

    /// Tells the observer the transaction ended; `end` is what its COMMIT or ROLLBACK
    /// took. Called at most once: the observer is taken.
    fn observe_end(&mut self, end: Duration, committed: bool) {
        if let Some((o, at)) = self.observer.take() {
            o.transaction(self.tenant, at.elapsed(), end, committed);
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

    /// Whether the database had `tenancy.audit_append(uuid, text, text, text, text, text,
    /// text, jsonb, jsonb, text, text, inet)` (the tenancy_context extension from version
    /// 1.3) when this transaction's connection was made: tenancy-audit then records events
    /// with it rather than with an INSERT. `false` once the transaction has ended.
    pub fn has_audit_append(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.audit_append)
    }

    fn conn(&mut self) -> Result<&mut Lease, Error> {
        self.conn
            .as_mut()
            .ok_or_else(|| Error::Invalid("transaction already ended".into()))
    }

    /// Whether the first statement runs as an implicit transaction: read-only, no schema
    /// search path, on a connection whose database has `tenancy.enter_read_only`.
    /// Behind a transaction-mode pooler: only with single-use tokens (a replay registry),
    /// which any backend accepts, so each statement may run on another.
    fn first_is_implicit(&self) -> bool {
        self.read_only
            && self.begin.as_ref().is_some_and(|b| b.schema.is_none())
            && self.conn.as_ref().is_some_and(|c| match c.pooled {
                Some(_) => c.replay,
                None => c.splice.as_deref().is_some_and(wire::Splice::implicit),
            })
    }

    /// The opening the next statement carries, and whether it is an implicit one.
    /// `extended`: the statement is an extended-protocol request ending with its own Sync,
    /// which can carry an implicit opening; a simple query or `client()` cannot, and turns
    /// a read-only transaction explicit (`BEGIN READ ONLY`) from there on.
    fn opening(&mut self, extended: bool) -> Result<Option<(Begin, bool)>, Error> {
        match self.state {
            State::Failed { .. } => Err(Error::Aborted),
            // Behind a transaction-mode pooler the transaction is open once its opening
            // query returned; `tenancy.enter` goes with the first statement.
            State::Open => Ok(self.begin.take().map(|b| (b, false))),
            State::NotBegun => {
                let implicit = extended && self.first_is_implicit();
                let begin = self
                    .begin
                    .take()
                    .ok_or_else(|| Error::Invalid("transaction opening already used".into()))?;
                self.state = if implicit {
                    State::Implicit
                } else {
                    State::Open
                };
                Ok(Some((begin, implicit)))
            }
            State::Implicit => {
                let conn = self
                    .conn
                    .as_mut()
                    .ok_or_else(|| Error::Invalid("transaction already ended".into()))?;
                let token = conn.sign(&self.signer.key, self.tenant, self.signer.ttl_micros);
                let begin = Begin {
                    commit_first: false,
                    read_only: true,
                    token: Some(token),
                    schema: None,
                };
                if !extended {
                    self.state = State::Open;
                }
                Ok(Some((begin, extended)))
            }
        }
    }

    fn track<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        self.in_flight = false;
        if let Err(e) = &r {
            self.state = State::Failed {
                open: self.state == State::Open,
            };
            if let (Some(conn), Error::Db { source, .. } | Error::ContextRefused(source)) =
                (&self.conn, e)
            {
                if connection_lost(source) {
                    conn.retire();
                }
            }
        }
        r.map_err(|e| self.deadline_error(e))
    }

    /// `e`, or [`Error::TransactionDeadline`] when the pool's watchdog ended this
    /// transaction (its connection was closed under it).
    fn deadline_error(&self, e: Error) -> Error {
        match &self.conn {
            Some(c) if c.watch.expired.load(Ordering::Relaxed) => {
                Error::TransactionDeadline(self.signer.deadline)
            }
            _ => e,
        }
    }

    /// After the transaction's first request failed: if its connection died under it
    /// (terminated, crashed, or closed before the request was written), moves the
    /// transaction to another connection so the request can run again, and returns true.
    /// Nothing of the transaction can have taken effect: the request is an
    /// extended-protocol statement (one statement, never a COMMIT of its own) that ran,
    /// if at all, after BEGIN or, read-only, in an implicit transaction, and a dead
    /// connection commits neither. A simple query (`batch_execute`, `client()`) may
    /// commit on its own and is never run again. Retried at most once per connection of
    /// the pool (injected SQL may have terminated every idle one, and each can still
    /// look alive when it is handed out); a transaction that outlived its deadline is not
    /// retried.
    ///
    /// A connection whose prepared statements are gone (`DEALLOCATE` by an earlier
    /// transaction's SQL) counts as lost too: its statement cache no longer matches the
    /// server, and a Bind of a missing statement fails before it runs.
    async fn retry_first<T>(&mut self, r: &Result<T, Error>, retries: &mut usize) -> bool {
        let Err(e) = r else { return false };
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        if *retries >= conn.pool_size() {
            return false;
        }
        *retries += 1;
        let source = match e {
            Error::Db { source, .. } | Error::ContextRefused(source) => source,
            _ => return false,
        };
        if !connection_lost(source) && !conn.client.is_closed() {
            return false;
        }
        if conn.watch.expired.load(Ordering::Relaxed) {
            return false;
        }
        conn.retire();
        let Some(conn) = self.conn.take() else {
            return false;
        };
        let mut fresh = match conn.replace().await {
            Ok(c) => c,
            Err(err) => {
                tracing::debug!(error = %err, "no connection to retry a transaction whose connection died");
                return false;
            }
        };
        tracing::debug!(error = %e, "a pooled connection died before the transaction's first statement ran; retrying on another");
        let token = fresh
            .signs_at_begin()
            .then(|| fresh.sign(&self.signer.key, self.tenant, self.signer.ttl_micros));
        let begin = Begin {
            commit_first: fresh.take_deferred_commit(),
            read_only: self.read_only,
            token,
            schema: self.schema.clone(),
        };
        self.conn = Some(fresh);
        self.begin = Some(begin);
        self.state = State::NotBegun;
        self.in_flight = false;
        true
    }

    /// Whether the connection is behind a transaction-mode pooler.
    fn pooled(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.pooled.is_some())
    }

    /// Behind a transaction-mode pooler, before the transaction's first statement: one
    /// round trip runs `BEGIN`, `RESET ALL` and the pool's limits (`SET LOCAL`) and reads
    /// the backend pid and the transaction's start, and the token is signed for exactly
    /// that transaction. The pooler keeps the backend for the transaction from here on;
    /// `tenancy.enter` rides in front of the first statement.
    async fn open_pooled(&mut self) -> Result<(), Error> {
        if self.state != State::NotBegun {
            return Ok(());
        }
        let Some(pooled) = self
            .conn
            .as_ref()
            .filter(|c| !c.replay)
            .and_then(|c| c.pooled.clone())
        else {
            // Direct, or a single-use token that opens in front of the first statement.
            return Ok(());
        };
        let begin = self
            .begin
            .as_mut()
            .ok_or_else(|| Error::Invalid("transaction opening already used".into()))?;
        let sql = pooled.opening_sql(begin.commit_first, begin.read_only, begin.schema.as_deref());
        // The COMMIT it owed is in this query now.
        begin.commit_first = false;
        self.state = State::Open;
        self.in_flight = true;
        let conn = self.conn()?;
        let r = conn
            .client
            .simple_query(&sql)
            .await
            .map_err(Error::db("opening the transaction (BEGIN, limits)"));
        let msgs = self.track(r)?;
        let Some((pid, start)) = parse_opening_reply(&msgs) else {
            self.state = State::Failed { open: true };
            return Err(Error::Invalid(
                "the transaction opening returned no backend pid and transaction start".into(),
            ));
        };
        self.conn()?.watch.set_backend(pid);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let token = self.signer.key.sign_for_transaction(
            self.tenant,
            pid,
            start,
            now,
            self.signer.ttl_micros,
        );
        if let Some(b) = self.begin.as_mut() {
            b.token = Some(Credential::Token(token));
        }
        Ok(())
    }

    /// Runs a statement behind a transaction-mode pooler: unnamed (Parse, Bind, Execute in
    /// one request) once the connection knows its parameter types; the first time,
    /// prepared, run and closed inside this transaction, which teaches it the types.
    async fn run_pooled(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        op: Op,
    ) -> Result<Out, Error> {
        self.check_usable()?;
        self.open_pooled().await?;
        let schema = self.schema.clone();
        let types = self.conn()?.learnt_types(schema.as_deref(), sql);
        if let Some(types) = &types {
            if types.len() != params.len() {
                return Err(Error::Invalid(format!(
                    "the statement has {} parameters but {} values were given",
                    types.len(),
                    params.len()
                )));
            }
        }
        // A statement whose types are unknown is prepared, run and closed in three
        // requests: inside an explicit transaction, so they reach one backend.
        let opening = self.opening(types.is_some())?;
        self.in_flight = true;
        let conn: &Lease = self.conn()?;
        let (r, learnt) = match types {
            Some(types) => {
                let typed: Vec<(&(dyn ToSql + Sync), Type)> =
                    params.iter().copied().zip(types).collect();
                let r = with_opening(
                    conn,
                    opening,
                    RUNNING,
                    run_typed(&conn.client, sql, &typed, op),
                )
                .await;
                (r, None)
            }
            None => {
                let prepared = with_opening(
                    conn,
                    opening,
                    "preparing a statement",
                    conn.client.prepare(sql),
                )
                .await;
                match prepared {
                    Ok(stmt) => {
                        let types = stmt.params().to_vec();
                        let r = run_prepared(&conn.client, &stmt, params, op)
                            .await
                            .map_err(Error::db(RUNNING));
                        // Closed now, inside this transaction: its Close reaches the backend
                        // that prepared it.
                        drop(stmt);
                        (r, Some(types))
                    }
                    Err(e) => (Err(e), None),
                }
            }
        };
        if let (Ok(_), Some(types)) = (&r, learnt) {
            self.conn()?.learn_types(schema.as_deref(), sql, types);
        }
        if self.state == State::Implicit {
            // The implicit transaction ended with its statement: the backend serves
            // others now, and the watchdog must not stop it.
            self.conn()?.watch.set_backend(0);
        }
        self.track(r)
    }

    fn check_usable(&self) -> Result<(), Error> {
        if matches!(self.state, State::Failed { .. }) {
            return Err(Error::Aborted);
        }
        Ok(())
    }

    /// The prepared statement for `sql`, from the connection's cache or prepared now. When
    /// the transaction opens explicitly and has not begun, BEGIN and the context are
    /// pipelined ahead of the Parse, so names resolve with the transaction's settings (its
    /// `search_path`). An implicit transaction's opening must share its statement's Sync,
    /// so the Parse goes alone (no search path is involved then).
    async fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement, Error> {
        if let Some(s) = self.conn()?.cached(sql) {
            return Ok(s);
        }
        let mut reset = false;
        let opening = match self.state {
            State::NotBegun if !self.first_is_implicit() => self.opening(false)?,
            State::NotBegun => {
                // The Parse runs before the implicit opening: names must not resolve
                // with session settings an earlier transaction left on this connection.
                if let Some(splice) = self.conn()?.splice.as_deref() {
                    splice.push_reset();
                    reset = true;
                }
                None
            }
            _ => None,
        };
        self.in_flight = true;
        let conn = self.conn()?;
        let mut r = with_opening(
            conn,
            opening,
            "preparing a statement",
            conn.client.prepare(sql),
        )
        .await;
        if let (true, Err(Error::Db { .. }), Some(splice)) = (reset, &r, conn.splice.as_deref()) {
            if splice.take_failed() {
                // Like a refused opening: the connection lost the SDK's statements.
                conn.retire();
                if let Err(Error::Db { source, .. }) = r {
                    r = Err(Error::ContextRefused(source));
                }
            }
        }
        let stmt = self.track(r)?;
        self.conn()?.remember(sql, stmt.clone());
        Ok(stmt)
    }

    /// Before a prepared statement runs: the statement, and the opening it carries.
    async fn ready(
        &mut self,
        sql: &str,
    ) -> Result<(tokio_postgres::Statement, Option<(Begin, bool)>), Error> {
        self.check_usable()?;
        let stmt = self.statement(sql).await?;
        let opening = self.opening(true)?;
        self.in_flight = true;
        Ok((stmt, opening))
    }

    /// Runs a statement and returns its rows.
    pub async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        self.run(sql, params, Op::Rows).await.and_then(Out::rows)
    }

    /// Runs a statement that returns exactly one row.
    pub async fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, Error> {
        self.run(sql, params, Op::One).await.and_then(Out::one)
    }

    /// Runs a statement that returns zero or one row.
    pub async fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        self.run(sql, params, Op::Opt).await.and_then(Out::opt)
    }

    /// Runs a statement and returns the number of rows it affected.
    pub async fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        self.run(sql, params, Op::Count).await.and_then(Out::count)
    }

    /// Runs a statement; the transaction's first statement runs again on another
    /// connection when its own died under it (see `retry_first`).
    async fn run(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        op: Op,
    ) -> Result<Out, Error> {
        let started = self.observer.as_ref().map(|_| Instant::now());
        let mut retries = 0;
        loop {
            let first = self.state == State::NotBegun;
            let r = self.run_once(sql, params, op).await;
            if !(first && r.is_err() && self.retry_first(&r, &mut retries).await) {
                self.observe_statement(started, &r, Out::row_count);
                return r;
            }
        }
    }

    async fn run_once(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        op: Op,
    ) -> Result<Out, Error> {
        if self.pooled() {
            return self.run_pooled(sql, params, op).await;
        }
        let (stmt, opening) = self.ready(sql).await?;
        let conn = self.conn()?;
        let r = with_opening(
            conn,
            opening,
            RUNNING,
            run_prepared(&conn.client, &stmt, params, op),
        )
        .await;
        self.track(r)
    }

    /// Runs one or more statements without parameters (simple-query protocol).
    pub async fn batch_execute(&mut self, sql: &str) -> Result<(), Error> {
        self.check_usable()?;
        self.open_pooled().await?;
        let opening = self.opening(false)?;
        self.in_flight = true;
        let started = self.observer.as_ref().map(|_| Instant::now());
        let conn = self.conn()?;
        let r = with_opening(conn, opening, RUNNING, conn.client.batch_execute(sql)).await;
        let r = self.track(r);
        self.observe_statement(started, &r, |_| 0);
        r
    }

    /// The underlying `tokio_postgres::Client`, inside this transaction, for what the
    /// methods above do not cover (`copy_out`, `query_raw`, …). The transaction is begun
    /// first if it has not been.
    pub async fn client(&mut self) -> Result<&Client, Error> {
        self.check_usable()?;
        self.open_pooled().await?;
        if let Some(opening) = self.opening(false)? {
            // The opening rides in front of an empty query, which ends it with a Sync.
            self.in_flight = true;
            let conn = self.conn()?;
            let r = with_opening(
                conn,
                Some(opening),
                "opening the transaction",
                conn.client.batch_execute(""),
            )
            .await;
            self.track(r)?;
        }
        Ok(&self.conn()?.client)
    }

    /// Commits. If a statement failed earlier the transaction is rolled back instead and
    /// [`Error::Aborted`] is returned, so a failed transaction never looks committed.
    ///
    /// A read-only transaction ([`TenantPool::begin_read_only`](crate::TenantPool::begin_read_only))
    /// has nothing to commit that could fail:
    /// - Normally each of its statements ran as its own implicit transaction, so there is
    ///   nothing left to send.
    /// - Otherwise (a schema tenant, a runtime without `tenancy.enter_read_only`, or after
    ///   [`client`](TenantTx::client) or [`batch_execute`](TenantTx::batch_execute)) its
    ///   COMMIT is not awaited: the
    ///   connection goes back to the pool at once and the COMMIT leads the next opening its
    ///   next user sends (COMMIT, BEGIN, `tenancy.enter($1)` in one pipeline), or, if the
    ///   connection stays idle for a few milliseconds, the pool's sweeper sends it. Either
    ///   way it is the first thing the server receives on that connection, so nothing ever
    ///   runs inside this finished transaction.
    pub async fn commit(mut self) -> Result<(), Error> {
        match self.end_without_round_trip(true) {
            Some(done) => done,
            None => self.end_with_round_trip(true).await,
        }
    }

    /// Rolls back.
    pub async fn rollback(mut self) -> Result<(), Error> {
        match self.end_without_round_trip(false) {
            Some(done) => done,
            None => self.end_with_round_trip(false).await,
        }
    }

    /// Ends the transaction now (commits when `commit`, else rolls back) if that needs no
    /// round trip to the server, which is the case for every read-only transaction and
    /// for one that never sent a statement, and returns the outcome: exactly what
    /// [`commit`](TenantTx::commit) or [`rollback`](TenantTx::rollback) would return. The
    /// transaction is then over (dropping it does nothing). Returns `None` and changes
    /// nothing when a COMMIT or ROLLBACK must be awaited: end it with `commit` or
    /// `rollback` then.
    ///
    /// For callers that end many transactions and want the common case without an
    /// `.await` (the HTTP layer does this for every request).
    pub fn end_without_round_trip(&mut self, commit: bool) -> Option<Result<(), Error>> {
        let state = self.state;
        let Some(conn) = self.conn.take() else {
            return Some(Ok(()));
        };
        let done = match state {
            State::NotBegun => {
                self.release_unbegun(&conn);
                Ok(())
            }
            State::Implicit => Ok(()),
            State::Failed { open: false } if commit => Err(Error::Aborted),
            State::Failed { open: false } => Ok(()),
            State::Open if commit && self.read_only && self.defer_commit => {
                conn.defer_commit();
                Ok(())
            }
            State::Open if commit && self.read_only => match conn.send_commit_without_waiting() {
                Some(r) => r.map_err(Error::db("committing")),
                None => Ok(()),
            },
            State::Open | State::Failed { open: true } => {
                self.conn = Some(conn);
                return None;
            }
        };
        count_end(commit, &done);
        self.observe_end(Duration::ZERO, commit && done.is_ok());
        Some(done)
    }

    /// Ends an open transaction with COMMIT (or ROLLBACK, also when a statement failed),
    /// waiting for the server.
    async fn end_with_round_trip(&mut self, commit: bool) -> Result<(), Error> {
        let state = self.state;
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        // Only an open, healthy transaction commits; a failed one is rolled back and its
        // commit reports the abort.
        let (sql, what) = if commit && state == State::Open {
            ("COMMIT", "committing")
        } else {
            ("ROLLBACK", "rolling back")
        };
        let ending = self.observer.as_ref().map(|_| Instant::now());
        let r = conn.client.batch_execute(sql).await;
        let end = ending.map(|at| at.elapsed()).unwrap_or_default();
        let done = match r {
            Err(e) => {
                let expired = conn.watch.expired.load(Ordering::Relaxed);
                Err(if expired {
                    Error::TransactionDeadline(self.signer.deadline)
                } else {
                    Error::db(what)(e)
                })
            }
            Ok(()) if commit && state != State::Open => Err(Error::Aborted),
            Ok(()) => Ok(()),
        };
        count_end(commit, &done);
        self.observe_end(end, commit && done.is_ok());
        done
    }

    /// Ends a transaction that never sent anything. If it had taken over the COMMIT of the
    /// connection's previous read-only transaction, that COMMIT is still owed: hand it
    /// back to the connection (the next user or the sweeper sends it).
    fn release_unbegun(&mut self, conn: &Conn) {
        if self.begin.take().is_some_and(|b| b.commit_first) {
            conn.defer_commit();
        }
    }
}

/// Counts how a transaction ended (see [`crate::metrics`]): a commit that found the
/// transaction aborted rolled it back; a failed COMMIT or ROLLBACK is not counted.
fn count_end(commit: bool, done: &Result<(), Error>) {
    match done {
        Ok(()) if commit => crate::metrics::tx_event("committed"),
        Ok(()) | Err(Error::Aborted) => crate::metrics::tx_event("rolled_back"),
        Err(_) => {}
    }
}

impl Drop for TenantTx {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        crate::metrics::tx_event("rolled_back");
        self.observe_end(Duration::ZERO, false);
        let fence = match self.state {
            State::NotBegun => {
                // Nothing was sent; the connection is as this transaction found it.
                self.release_unbegun(&conn);
                return;
            }
            // Nothing is open. A statement dropped mid-flight may still be unwritten, though:
            // an empty query behind it makes sure it is on the wire (and its implicit
            // transaction over) before anyone else queues an opening on this connection.
            State::Implicit | State::Failed { open: false } if !self.in_flight => return,
            State::Implicit | State::Failed { open: false } => "",
            // Roll back before the connection is reused. The ROLLBACK is queued behind
            // whatever the dropped statement left in flight, so it ends this transaction
            // whatever state it was in.
            State::Open | State::Failed { open: true } => "ROLLBACK",
        };
        // Without a runtime, close the connection instead of reusing it.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = conn.client.batch_execute(fence).await {
                        tracing::warn!(error = %e, "ending a dropped tenant transaction failed; closing the connection");
                        conn.retire();
                    }
                });
            }
            Err(_) => conn.retire(),
        }
    }
}
