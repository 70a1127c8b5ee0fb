//! One-Sync transaction openings ("the splice"): the socket under a tenant connection
//! lets the SDK put its own extended-protocol messages (`COMMIT` of a finished read-only
//! transaction, `BEGIN`, `tenancy.enter($token)`, the schema's `search_path`) in front of
//! the next request tokio-postgres writes, and hides their replies from tokio-postgres.
//!
//! Why: tokio-postgres ends every request with its own Sync, and each Sync costs the server
//! a ReadyForQuery, a flush and the client a wake-up. Opening a transaction as its own
//! request doubled the server's work per point read. Spliced in front of the first
//! statement, the opening shares that statement's Sync: BEGIN, context and query are one
//! pipeline, one flush, one round trip (the shape pgbench measures with `\startpipeline`).
//!
//! It is also the only way a token reaches the server, on both context implementations:
//! as a bound parameter of a statement prepared once per connection. Query text shows in
//! `pg_stat_activity` to every session of the runtime role and in statement logs; a
//! parameter shows in neither (`pg_stat_activity` shows `SELECT tenancy.enter($1…)`).
//!
//! Layout: [`framer`] frames each direction's bytes into messages, [`machine`] decides
//! where queued messages go and which replies are theirs (pure: no I/O, no runtime),
//! [`stream`] is the `AsyncRead + AsyncWrite` wrapper that feeds the socket's bytes
//! through them, [`encode`] has the SDK's statements. This file: connecting, preparing,
//! and the SDK's handle ([`Splice`]).
//!
//! # The plain pipelined path: the fallback
//!
//! When the carrier is not an extended-protocol request (a simple Query: `batch_execute`,
//! `TenantTx::client()`'s opening in front of an empty query, a deferred COMMIT), the
//! opening cannot share its Sync: it goes as a plain pipeline of its own, Bind/Execute of
//! the `tenancy_*` statements and a Sync the splice adds, written in the same buffer as
//! the Query. One round trip still, one ReadyForQuery more (dropped by the filter). That
//! is the fallback wherever sharing a Sync is not possible; it is selected in
//! [`machine::Machine::write`] by the carrier's first message type. Connections the SDK
//! opens for anything but tenant transactions are not spliced at all. There is no unspliced path for tenant transactions: the token would
//! have to travel in SQL text.
//!
//! # How it stays correct
//!
//! - Messages are only inserted at a frontend message boundary, after start-up, and only
//!   by the one [`TenantTx`](crate::TenantTx) holding the connection; after any simple
//!   query sent ahead (`Splice::query_ahead`) and any Close with its Sync.
//! - Their replies are the first replies after those of every Sync or Query written before
//!   them (counted: each yields exactly one ReadyForQuery). From there the filter drops
//!   BindComplete, ParseComplete, DataRow and CommandComplete until each inserted
//!   statement has completed. Asynchronous messages (notices, parameter status,
//!   notifications) always pass.
//! - One dropped reply is read rather than only dropped: the DataRow of an inserted
//!   `tenancy.enter_session` (the PL/pgSQL session context) is the connection's next
//!   secret (the one the opening sent along, returned once the server stored it), handed
//!   to the connection state ([`machine::Machine::take_secret`]) as soon as it arrives,
//!   even when the request that carried it then fails (the server rotated the secret
//!   either way). A connection without a secret cannot open again and is retired.
//! - If an inserted statement fails, its ErrorResponse passes through: the server skips
//!   the rest up to the Sync, so the ErrorResponse becomes the reply to the request that
//!   carried it, and that request fails with the refusal (recorded so the SDK reports it
//!   as a refused context).
//! - Only statements the SDK prepared itself on this connection (named `tenancy_*`) are
//!   bound here. Behind a transaction-mode pooler nothing named may outlive a transaction,
//!   so there the one inserted statement, `tenancy.enter($1)` with a token bound to the
//!   transaction, is parsed unnamed in front of its Bind ([`Splice::push_transaction_enter`]).
//! - A length field under 4, or a dropped reply longer than `machine::MAX_DROPPED`, is an
//!   I/O error of the connection (never a panic, never an allocation: nothing is buffered
//!   per message).
//!
//! # What it assumes of tokio-postgres (pinned `=0.7.18` in the workspace `Cargo.toml`)
//!
//! None of these is tokio-postgres API; each has a test in `tests/assumptions.rs` that
//! observes the bytes tokio-postgres writes to a scripted peer, so an upgrade that breaks
//! one fails there.
//!
//! 1. **One Sync or Query per request.** Every request after start-up (prepare, query,
//!    execute, bind, portal query, a dropped statement's close, simple query, batch) ends
//!    with exactly one Sync, or is exactly one Query; the server answers each with exactly
//!    one ReadyForQuery, which is what replies are matched by.
//! 2. **Statement names.** Its prepared statements are named `s<N>` and its portals
//!    `p<N>`, never `tenancy_*`; the unnamed statement and portal are used only inside one
//!    request, so the inserted Bind/Execute on the unnamed portal (and, behind a pooler,
//!    the unnamed Parse) cannot clobber one of its requests.
//! 3. **A request is sent on its future's first poll**, not when the future is created,
//!    and written in the order sent: the opening is queued between the two
//!    (`tx::opening::with_opening`), so it lands in front of that request.
//! 4. **No Flush-only request**: it never writes Flush (`H`), so no request leaves the
//!    inserted statements waiting for a Sync that is not coming.
//! 5. **A dropped statement is closed by a request of its own** (Close, Sync), possibly
//!    just before the next request: the opening goes after it (above).
//! 6. **COPY FROM STDIN** writes Bind, Execute, Sync, then CopyData, CopyDone (or
//!    CopyFail) and a second Sync, and expects one ReadyForQuery. In copy-in mode the
//!    server ignores the first Sync, so that is what it sends; the count cannot follow
//!    that, so when the server answers CopyInResponse the splice stops inserting on that
//!    connection, and its next opening fails with an I/O error that closes the connection
//!    (`FrameError::CopyIn`; a transaction's first prepared statement then runs again on
//!    another connection). A COPY refused before copy-in mode (any tenant table: row-level
//!    security refuses COPY FROM) ends with CopyFail and a second Sync, which the server
//!    answers: the splice drops that second ReadyForQuery, which tokio-postgres would
//!    otherwise hand to its next request (replies one request off) or close its
//!    connection on. An opening in front of a COPY request is fine: its replies come
//!    before CopyInResponse.
//! 7. **Start-up ends at a message boundary**, with ReadyForQuery, before `connect_raw`
//!    returns; nothing is written after it until the first request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tenancy_conn::{PgConfig, Stream};
use tokio_postgres::{Client, Config, Connection, NoTls};

mod encode;
mod framer;
mod machine;
mod stream;
#[cfg(test)]
mod tests;

pub(crate) use encode::{Enter, Opening};
use machine::Machine;
pub(crate) use stream::SpliceStream;

/// Refuses connection settings that only tokio-postgres' own connect honours: the pool
/// opens its sockets itself (to splice them), and would otherwise ignore them silently.
pub(crate) fn check_config(config: &Config) -> Result<(), String> {
    use tokio_postgres::config::{LoadBalanceHosts, TargetSessionAttrs};
    if config.get_target_session_attrs() != TargetSessionAttrs::Any {
        return Err("target_session_attrs is not supported by tenant pools: connect them to the primary's address".into());
    }
    if config.get_load_balance_hosts() != LoadBalanceHosts::Disable {
        return Err("load_balance_hosts is not supported by tenant pools: list the hosts in the order to try them".into());
    }
    Ok(())
}

/// Connects with `config` over a [`SpliceStream`]. The splice is armed (ready to carry an
/// opening) once start-up has finished. On TLS the splice sits above the TLS stream,
/// where the protocol is plaintext: `tenancy_conn` negotiates TLS on the socket, and
/// tokio-postgres starts the session over the splice without TLS of its own.
pub(crate) async fn connect(
    config: &PgConfig,
) -> Result<
    (
        Client,
        Connection<SpliceStream<Stream>, tokio_postgres::tls::NoTlsStream>,
        Arc<Splice>,
    ),
    Error,
> {
    let socket = tenancy_conn::open_stream(config).await?;
    let splice = Arc::new(Splice::default());
    let stream = SpliceStream::new(socket, Arc::clone(&splice));
    let (client, connection) = config
        .session_config()
        .connect_raw(stream, NoTls)
        .await
        .map_err(Error::Pg)?;
    splice.arm();
    Ok((client, connection, splice))
}

/// Why a pooled connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Conn(#[from] tenancy_conn::ConnError),
    #[error("{}", describe(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// The connection works but cannot serve tenant transactions as configured.
    #[error("{0}")]
    Setup(String),
}

/// The server's message where there is one (tokio-postgres shows only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{e}: {}", d.message()),
        None => e.to_string(),
    }
}

/// Prepares the `tenancy_*` statements on a tenant connection (one round trip, at
/// connection creation), and records whether its database has `tenancy.enter_read_only`
/// (`implicit`), the opening of implicit read-only transactions. `reset`:
/// what an explicit opening runs between BEGIN and `tenancy.enter` to reset session
/// settings, where `enter` does not do it itself (the PL/pgSQL context). `session`: the
/// first secret of the PL/pgSQL session context (`tenancy.init_session` ran on this
/// connection): openings then enter with `tenancy.enter_session`.
pub(crate) async fn prepare(
    client: &Client,
    splice: &Splice,
    implicit: bool,
    reset: Option<&'static str>,
    session: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let implicit_only = implicit.then_some(encode::PREPARED_IMPLICIT);
    let reset_stmt = reset.map(|sql| (encode::RESET_SESSION, sql));
    let session_stmts: &[(&str, &str)] = if session.is_some() {
        encode::PREPARED_SESSION
    } else {
        &[]
    };
    let stmts = encode::PREPARED
        .iter()
        .copied()
        .chain(implicit_only)
        .chain(reset_stmt)
        .chain(session_stmts.iter().copied());
    if let Some(secret) = session {
        splice.lock().set_secret(secret);
        splice.session.store(true, Ordering::Relaxed);
    }
    splice.lock().queue(|buf| encode::parse_all(stmts, buf));
    splice.implicit.store(implicit, Ordering::Relaxed);
    splice
        .reset_in_opening
        .store(reset.is_some(), Ordering::Relaxed);
    // An empty query: the parses ride in front of it and share its ReadyForQuery.
    client.batch_execute("").await
}

/// The SDK's handle on a spliced connection.
#[derive(Debug, Default)]
pub(crate) struct Splice {
    shared: Mutex<Machine>,
    /// The database has `tenancy.enter_read_only` (prepared as `tenancy_enter_ro`):
    /// read-only transactions can open implicitly.
    implicit: AtomicBool,
    /// Explicit openings run `tenancy_reset_session` before `enter` (PL/pgSQL context,
    /// whose `enter` does not reset session settings itself).
    reset_in_opening: AtomicBool,
    /// Openings enter with the PL/pgSQL session context (`tenancy.enter_session`), whose
    /// secret rotates with every opening: see [`Machine::take_secret`].
    session: AtomicBool,
}

impl Splice {
    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The lock is never held across anything that can panic.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start-up is over: from now on messages may be inserted and replies are filtered.
    fn arm(&self) {
        self.lock().armed = true;
    }

    /// Queues an opening in front of the next request (encoded straight into the queue).
    pub(crate) fn push_opening(&self, o: &Opening<'_>) {
        let reset = self.reset_in_opening.load(Ordering::Relaxed);
        self.lock()
            .queue_with_secret(|buf| encode::opening(o, reset, buf), encode::secret_at(o));
    }

    /// Queues an opening that enters `tenant` with the session context, in front of the
    /// next request: `o`'s `enter` is replaced by the tenant, the connection's current
    /// secret, which this uses up, and the next secret, drawn here from a CSPRNG (the
    /// DataRow of the enter returns it once the database stored it). Returns false,
    /// queueing nothing, when the connection has no secret (a failed opening or a dropped
    /// reply lost it): the connection cannot enter a tenant again.
    pub(crate) fn push_session_opening(&self, o: &Opening<'_>, tenant: [u8; 16]) -> bool {
        let next: i64 = rand::random();
        let mut m = self.lock();
        let Some(secret) = m.take_secret() else {
            return false;
        };
        let (hi, lo) = tenant.split_at(8);
        let o = Opening {
            enter: Enter::Session {
                hi: i64::from_be_bytes(hi.try_into().unwrap_or_default()),
                lo: i64::from_be_bytes(lo.try_into().unwrap_or_default()),
                secret,
                next,
            },
            ..*o
        };
        m.queue_with_secret(|buf| encode::opening(&o, false, buf), encode::secret_at(&o));
        true
    }

    /// Whether openings on this connection use the session context.
    pub(crate) fn session(&self) -> bool {
        self.session.load(Ordering::Relaxed)
    }

    /// Whether this session-context connection has a secret for its next opening.
    pub(crate) fn has_secret(&self) -> bool {
        self.lock().has_secret()
    }

    /// Queues a reset of session settings in front of the next request: the Parse of an
    /// implicit read-only transaction's first statement goes ahead of its opening (whose
    /// `enter_read_only` resets session settings), and must not resolve names with
    /// settings a previous transaction left behind. `RESET ALL` where `enter` resets by
    /// itself (native); `tenancy.reset_session()` otherwise, which keeps the PL/pgSQL
    /// context's single-use mark.
    pub(crate) fn push_reset(&self) {
        let session = self.reset_in_opening.load(Ordering::Relaxed);
        self.lock().queue(|buf| encode::reset(session, buf));
    }

    /// Queues `tenancy.enter($token)` in front of the next request as an unnamed statement
    /// (Parse, Bind, Execute; no Sync): the opening of a transaction behind a
    /// transaction-mode pooler, whose BEGIN, reset and limits already ran.
    pub(crate) fn push_transaction_enter(&self, token: &str) {
        self.lock()
            .queue(|buf: &mut BytesMut| encode::transaction_enter(token, buf));
    }

    /// Queues the opening of a transaction behind a transaction-mode pooler with a
    /// single-use token in front of the next request: unnamed statements only (see
    /// [`encode::pooled_opening`]). The backend pid in the first column of the enter
    /// statement's row goes to [`Splice::backend`] when it arrives.
    pub(crate) fn push_pooled_opening(
        &self,
        commit_first: bool,
        begin: Option<bool>,
        timeout_sql: Option<&str>,
        enter_sql: &str,
        token: &str,
    ) {
        let mut m = self.lock();
        m.capture_backend = true;
        // The enter statement is the last; its DataRow comes while its CommandComplete is
        // the one counted reply left.
        let stmts = 2
            * (1 + u32::from(commit_first)
                + u32::from(begin.is_some())
                + u32::from(timeout_sql.is_some()));
        m.queue_with_secret(
            |buf: &mut BytesMut| {
                encode::pooled_opening(commit_first, begin, timeout_sql, enter_sql, token, buf)
            },
            Some(stmts - 1),
        );
    }

    /// The backend pid the last pooled opening's row gave (0 before any): shared, so the
    /// pool's watchdog knows the backend of a statement still running.
    pub(crate) fn backend(&self) -> Arc<std::sync::atomic::AtomicI32> {
        Arc::clone(&self.lock().backend)
    }

    /// Notes a simple query about to be sent without waiting: messages pushed later go
    /// after it on the wire even if it is still unwritten when they are pushed.
    pub(crate) fn query_ahead(&self) {
        self.lock().queries_ahead += 1;
    }

    /// Whether an inserted statement failed since the last `push` (and clears it).
    pub(crate) fn take_failed(&self) -> bool {
        std::mem::take(&mut self.lock().failed)
    }

    /// Whether implicit read-only openings (`tenancy.enter_read_only`) can be used.
    pub(crate) fn implicit(&self) -> bool {
        self.implicit.load(Ordering::Relaxed)
    }

    /// The process id the server gave in its BackendKeyData at start-up, if it sent one.
    /// Behind a pooler such as PgBouncer it is the pooler's own (random) key, not the
    /// `pg_backend_pid()` of any backend.
    pub(crate) fn key_pid(&self) -> Option<i32> {
        self.lock().key_pid()
    }
}
