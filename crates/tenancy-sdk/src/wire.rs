//! One-Sync transaction openings: the socket under a tenant connection lets the SDK put
//! its own extended-protocol messages (`COMMIT` of a finished read-only transaction,
//! `BEGIN`, `tenancy.enter($token)`, the schema's `search_path`) in front of the next
//! request tokio-postgres writes, and hides their replies from tokio-postgres.
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
//! How it stays correct:
//! - Messages are only inserted at a frontend message boundary, after start-up, and only
//!   by the one [`TenantTx`](crate::TenantTx) holding the connection.
//! - Their replies are the first replies after those of every Sync or Query written before
//!   them (counted: each yields exactly one ReadyForQuery). From there the filter drops
//!   BindComplete, ParseComplete, DataRow and CommandComplete until each inserted
//!   statement has completed. Asynchronous messages (notices, parameter status,
//!   notifications) always pass.
//! - If an inserted statement fails, its ErrorResponse passes through: the server skips
//!   the rest up to the Sync, so the ErrorResponse becomes the reply to the request that
//!   carried it, and that request fails with the refusal (recorded so the SDK reports it
//!   as a refused context).
//! - Only statements the SDK prepared itself on this connection (named `tenancy_*`) are
//!   bound here; tokio-postgres names its own `s<N>`. Behind a transaction-mode pooler
//!   nothing named may outlive a transaction, so there the one inserted statement,
//!   `tenancy.enter($1)` with a token bound to the transaction, is parsed unnamed in front of its
//!   Bind ([`Splice::push_transaction_enter`]).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tenancy_conn::{PgConfig, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::{Client, Config, Connection, NoTls};

/// The statements prepared on every tenant connection, by name. Names resolve when they
/// are prepared, at connection start, before any statement of a user runs (and a plan is
/// re-analysed with that same search path); they are qualified anyway.
const PREPARED: &[(&str, &str)] = &[
    // The modes are explicit: a session default an earlier transaction's SQL set (`SET
    // default_transaction_read_only = on`) would otherwise apply to this transaction,
    // which starts before `tenancy.enter` resets session settings.
    (BEGIN, "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE"),
    (
        BEGIN_READ_ONLY,
        "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY",
    ),
    (COMMIT, "COMMIT"),
    (ENTER, "SELECT tenancy.enter($1::pg_catalog.text)"),
    (
        SEARCH_PATH,
        "SELECT pg_catalog.set_config('search_path', $1::pg_catalog.text, true)",
    ),
    (RESET, "RESET ALL"),
];
/// Prepared only where the database has `tenancy.enter_read_only` (both context
/// implementations do, unless the runtime predates it).
const PREPARED_IMPLICIT: (&str, &str) = (
    ENTER_READ_ONLY,
    "SELECT tenancy.enter_read_only($1::pg_catalog.text)",
);
const BEGIN: &str = "tenancy_begin";
const BEGIN_READ_ONLY: &str = "tenancy_begin_ro";
const COMMIT: &str = "tenancy_commit";
const ENTER: &str = "tenancy_enter";
const ENTER_READ_ONLY: &str = "tenancy_enter_ro";
const SEARCH_PATH: &str = "tenancy_search_path";
const RESET: &str = "tenancy_reset";
const RESET_SESSION: &str = "tenancy_reset_session";
/// A Sync message.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];
/// The opening statement of a transaction behind a transaction-mode pooler, parsed unnamed.
const ENTER_SQL: &str = "SELECT tenancy.enter($1::pg_catalog.text)";
/// Start-up bytes kept to read the BackendKeyData from (authentication, parameter status
/// and the key come first; a server sends well under this).
const STARTUP_KEEP: usize = 64 * 1024;

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
        Connection<SpliceStream, tokio_postgres::tls::NoTlsStream>,
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
    splice.lock().armed = true;
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
/// settings, where `enter` does not do it itself (the PL/pgSQL context).
pub(crate) async fn prepare(
    client: &Client,
    splice: &Splice,
    implicit: bool,
    reset: Option<&'static str>,
) -> Result<(), tokio_postgres::Error> {
    let mut buf = BytesMut::new();
    let implicit_only = implicit.then_some(PREPARED_IMPLICIT);
    let reset_stmt = reset.map(|sql| (RESET_SESSION, sql));
    let mut n = 0;
    for (name, sql) in PREPARED
        .iter()
        .copied()
        .chain(implicit_only)
        .chain(reset_stmt)
    {
        // Statement texts are constants without NUL bytes: encoding cannot fail.
        let _ = frontend::parse(name, sql, [], &mut buf);
        n += 1;
    }
    splice.push(&buf, n);
    splice.implicit.store(implicit, Ordering::Relaxed);
    splice
        .reset_in_opening
        .store(reset.is_some(), Ordering::Relaxed);
    // An empty query: the parses ride in front of it and share its ReadyForQuery.
    client.batch_execute("").await
}

/// What a transaction opening contains.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opening<'a> {
    /// A finished read-only transaction's COMMIT goes first.
    pub(crate) commit_first: bool,
    /// No BEGIN: the context is entered in the implicit transaction the carrying statement
    /// runs in (up to its Sync), made read-only in the same statement.
    pub(crate) implicit: bool,
    /// `BEGIN READ ONLY` instead of `BEGIN`.
    pub(crate) read_only: bool,
    /// The signed context token.
    pub(crate) token: &'a str,
    /// The schema placement's `search_path`, already formatted.
    pub(crate) search_path: Option<&'a str>,
}

/// Appends a Bind/Execute pair of prepared statement `name` (no Sync) to `buf`.
fn bind_execute(name: &str, arg: Option<&str>, buf: &mut BytesMut) {
    // Values are text without NUL bytes and statement names constants: cannot fail.
    let _ = frontend::bind(
        "",
        name,
        [0i16],
        arg,
        |v, buf| {
            buf.extend_from_slice(v.as_bytes());
            Ok(postgres_protocol::IsNull::No)
        },
        [0i16],
        buf,
    );
    let _ = frontend::execute("", 0, buf);
}

/// Encodes an opening as Bind/Execute pairs of the prepared statements (no Sync) at the
/// end of `buf`, and returns the number of statements whose replies the filter must drop.
fn encode_into(o: &Opening<'_>, reset: bool, buf: &mut BytesMut) -> u32 {
    let mut n = 0;
    let mut stmt = |name: &str, arg: Option<&str>, buf: &mut BytesMut| {
        bind_execute(name, arg, buf);
        n += 1;
    };
    if o.commit_first {
        stmt(COMMIT, None, buf);
    }
    if o.implicit {
        stmt(ENTER_READ_ONLY, Some(o.token), buf);
    } else {
        stmt(if o.read_only { BEGIN_READ_ONLY } else { BEGIN }, None, buf);
        if reset {
            stmt(RESET_SESSION, None, buf);
        }
        stmt(ENTER, Some(o.token), buf);
    }
    if let Some(path) = o.search_path {
        stmt(SEARCH_PATH, Some(path), buf);
    }
    n
}

/// Statements whose replies are dropped, starting after the `after_z`-th ReadyForQuery.
#[derive(Debug)]
struct Skip {
    after_z: u64,
    /// Statements not yet complete.
    left: u32,
    /// The insertion ended with a Sync of its own (its carrier was not an extended-protocol
    /// message): its ReadyForQuery is dropped too.
    sync: bool,
}

/// State shared by the stream (in the connection task) and the SDK (in `TenantTx`).
#[derive(Debug, Default)]
struct Shared {
    /// Start-up is over: messages may be inserted and replies filtered.
    armed: bool,
    /// Messages waiting to go in front of the next frontend message.
    pending: BytesMut,
    /// Statements in `pending`.
    pending_stmts: u32,
    /// Sync and Query messages written since arming.
    syncs_written: u64,
    /// ReadyForQuery messages read since arming.
    z_seen: u64,
    /// Inserted statements in flight, oldest first.
    skips: VecDeque<Skip>,
    /// An inserted statement failed since the last `push`.
    failed: bool,
    /// Simple queries the SDK sent ahead of any later insertion (a deferred COMMIT sent
    /// without waiting) and not yet written: an insertion goes after them.
    queries_ahead: u32,
    /// What the server sent before the splice was armed (start-up), to read the process
    /// id of its BackendKeyData.
    startup: Vec<u8>,
}

/// The SDK's handle on a spliced connection.
#[derive(Debug, Default)]
pub(crate) struct Splice {
    shared: Mutex<Shared>,
    /// The database has `tenancy.enter_read_only` (prepared as `tenancy_enter_ro`):
    /// read-only transactions can open implicitly.
    implicit: AtomicBool,
    /// Explicit openings run `tenancy_reset_session` before `enter` (PL/pgSQL context,
    /// whose `enter` does not reset session settings itself).
    reset_in_opening: AtomicBool,
}

impl Splice {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // The lock is never held across anything that can panic.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msgs` (holding `stmts` statements) in front of the next request.
    pub(crate) fn push(&self, msgs: &[u8], stmts: u32) {
        let mut s = self.lock();
        s.pending.extend_from_slice(msgs);
        s.pending_stmts += stmts;
        s.failed = false;
    }

    /// Queues an opening in front of the next request (encoded straight into the queue).
    pub(crate) fn push_opening(&self, o: &Opening<'_>) {
        let mut s = self.lock();
        let reset = self.reset_in_opening.load(Ordering::Relaxed);
        let stmts = encode_into(o, reset, &mut s.pending);
        s.pending_stmts += stmts;
        s.failed = false;
    }

    /// Queues a reset of session settings in front of the next request: the Parse of an
    /// implicit read-only transaction's first statement goes ahead of its opening (whose
    /// `enter_read_only` resets session settings), and must not resolve names with
    /// settings a previous transaction left behind. `RESET ALL` where `enter` resets by
    /// itself (native); `tenancy.reset_session()` otherwise, which keeps the PL/pgSQL
    /// context's single-use mark.
    pub(crate) fn push_reset(&self) {
        let mut s = self.lock();
        let stmt = if self.reset_in_opening.load(Ordering::Relaxed) {
            RESET_SESSION
        } else {
            RESET
        };
        bind_execute(stmt, None, &mut s.pending);
        s.pending_stmts += 1;
        s.failed = false;
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

    /// Queues `tenancy.enter($token)` in front of the next request as an unnamed statement
    /// (Parse, Bind, Execute; no Sync): the opening of a transaction behind a
    /// transaction-mode pooler, whose BEGIN, reset and limits already ran.
    pub(crate) fn push_transaction_enter(&self, token: &str) {
        let mut s = self.lock();
        // Constant text and a token of `[a-z0-9.-]`: encoding cannot fail.
        let _ = frontend::parse("", ENTER_SQL, [], &mut s.pending);
        bind_execute_unnamed(Some(token), &mut s.pending);
        // ParseComplete and CommandComplete each end one counted reply.
        s.pending_stmts += 2;
        s.failed = false;
    }

    /// The process id the server gave in its BackendKeyData at start-up, if it sent one.
    /// Behind a pooler such as PgBouncer it is the pooler's own (random) key, not the
    /// `pg_backend_pid()` of any backend.
    pub(crate) fn key_pid(&self) -> Option<i32> {
        let s = self.lock();
        let mut rest = s.startup.as_slice();
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let end = 1 + len;
            if len < 4 || rest.len() < end {
                return None;
            }
            if rest[0] == b'K' && len >= 8 {
                return Some(i32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]));
            }
            rest = &rest[end..];
        }
        None
    }
}

/// Appends Bind/Execute of the unnamed statement (no Sync) to `buf`.
fn bind_execute_unnamed(arg: Option<&str>, buf: &mut BytesMut) {
    bind_execute("", arg, buf);
}

/// Messages that each end with a ReadyForQuery (Sync and Query), and Queries among them.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    syncs: u64,
    queries: u32,
}

/// Frames a byte stream into protocol messages (type byte, then a length that counts
/// itself), calling back at each message start.
#[derive(Debug, Default, Clone)]
struct Framer {
    /// Type byte of the last message that started.
    last: u8,
    /// Header bytes seen of the current message (0 at a boundary or in a body).
    got: usize,
    len: [u8; 4],
    /// Body bytes still to come.
    left: usize,
}

impl Framer {
    /// Walks `bytes`; `keep(type)` is asked at each message start whether to keep it, and
    /// kept bytes are compacted to the front. Returns how many bytes were kept.
    fn filter(
        &mut self,
        bytes: &mut [u8],
        keep_current: &mut bool,
        mut keep: impl FnMut(u8) -> bool,
    ) -> usize {
        let (mut r, mut w) = (0, 0);
        while r < bytes.len() {
            if self.left > 0 {
                let n = self.left.min(bytes.len() - r);
                if *keep_current {
                    if w != r {
                        bytes.copy_within(r..r + n, w);
                    }
                    w += n;
                }
                r += n;
                self.left -= n;
                continue;
            }
            let b = bytes[r];
            self.header_byte(b, |t| *keep_current = keep(t));
            if *keep_current {
                bytes[w] = b;
                w += 1;
            }
            r += 1;
        }
        w
    }

    /// Walks `bytes` from this state; `on_start(offset, type)` runs at each message start
    /// and may stop the walk there by returning false (the state is then at that start).
    fn walk(&mut self, bytes: &[u8], mut on_start: impl FnMut(usize, u8) -> bool) {
        let mut r = 0;
        while r < bytes.len() {
            if self.left > 0 {
                let k = self.left.min(bytes.len() - r);
                r += k;
                self.left -= k;
                continue;
            }
            if self.got == 0 && !on_start(r, bytes[r]) {
                return;
            }
            self.header_byte(bytes[r], |_| {});
            r += 1;
        }
    }

    /// Walks `bytes`; returns how many Sync and how many Query messages start in them.
    fn count(&mut self, bytes: &[u8]) -> Counts {
        let mut c = Counts::default();
        self.walk(bytes, |_, t| {
            match t {
                b'S' => c.syncs += 1,
                b'Q' => {
                    c.syncs += 1;
                    c.queries += 1;
                }
                _ => {}
            }
            true
        });
        c
    }

    /// Takes one header byte; `on_start(type)` runs at a message's first byte.
    fn header_byte(&mut self, b: u8, on_start: impl FnOnce(u8)) {
        if self.got == 0 {
            self.last = b;
            on_start(b);
        } else {
            self.len[self.got - 1] = b;
        }
        self.got += 1;
        if self.got == 5 {
            self.left = (u32::from_be_bytes(self.len) as usize).saturating_sub(4);
            self.got = 0;
        }
    }
}

/// The socket of a tenant connection: inserts queued openings, filters their replies.
#[derive(Debug)]
pub(crate) struct SpliceStream {
    inner: Stream,
    splice: Arc<Splice>,
    /// Bytes accepted from tokio-postgres (with an opening in front) not yet on the socket.
    wbuf: Vec<u8>,
    /// Bytes of `wbuf` already on the socket.
    wpos: usize,
    /// Written bytes written so far, which may end mid-message.
    out: Framer,
    /// Read bytes so far.
    inn: Framer,
    /// Whether the message being read is passed on.
    keep_in: bool,
}

impl SpliceStream {
    fn new(inner: Stream, splice: Arc<Splice>) -> Self {
        SpliceStream {
            inner,
            splice,
            wbuf: Vec::new(),
            wpos: 0,
            out: Framer::default(),
            inn: Framer::default(),
            keep_in: true,
        }
    }

    /// Writes `wbuf` to the socket until it is empty.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpliceStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let mut s = this.splice.lock();
        if !s.armed {
            drop(s);
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if !s.pending.is_empty() {
            // The queued messages go in front of the first message that starts in `buf`
            // (the rest of a message begun in an earlier write comes first), after any
            // simple query sent ahead of them, and after any Close with its Sync:
            // tokio-postgres closes a dropped statement with a request of its own, which
            // it may write just before the statement the opening belongs to. In front of
            // it the opening would end at the Close's Sync: an implicit transaction (and
            // its context) before its statement ran, a refusal reported to the Close.
            let mut ahead = s.queries_ahead;
            let mut after_close = this.out.last == b'C';
            let mut at = None;
            this.out.clone().walk(buf, |pos, t| {
                let close = t == b'C' || (t == b'S' && after_close);
                after_close = t == b'C';
                if ahead == 0 && !close {
                    at = Some((pos, t));
                    return false;
                }
                if t == b'Q' {
                    ahead -= 1;
                }
                true
            });
            if let Some((pos, carrier)) = at {
                // An extended-protocol carrier ends with a Sync the insertion shares. Anything
                // else (a simple Query, above all) gets a Sync after the insertion: after an
                // error the server skips to the next Sync, which a Query does not end.
                let sync = !matches!(carrier, b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S');
                let stmts = std::mem::take(&mut s.pending_stmts);
                let before = this.out.count(&buf[..pos]);
                let after_z = s.syncs_written + before.syncs;
                if stmts > 0 || sync {
                    s.skips.push_back(Skip {
                        after_z,
                        left: stmts,
                        sync,
                    });
                }
                this.wbuf.extend_from_slice(&buf[..pos]);
                this.wbuf.extend_from_slice(&s.pending);
                s.pending.clear();
                if sync {
                    this.wbuf.extend_from_slice(&SYNC);
                }
                this.wbuf.extend_from_slice(&buf[pos..]);
                let rest = this.out.count(&buf[pos..]);
                s.syncs_written += before.syncs + u64::from(sync) + rest.syncs;
                s.queries_ahead = s
                    .queries_ahead
                    .saturating_sub(before.queries + rest.queries);
                drop(s);
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        drop(s);
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        let c = this.out.count(&buf[..n]);
        if c.syncs > 0 {
            let mut s = this.splice.lock();
            s.syncs_written += c.syncs;
            s.queries_ahead = s.queries_ahead.saturating_sub(c.queries);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl AsyncRead for SpliceStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let after = buf.filled().len();
            if after == before {
                return Poll::Ready(Ok(())); // end of stream
            }
            let mut s = this.splice.lock();
            if !s.armed {
                let room = STARTUP_KEEP.saturating_sub(s.startup.len());
                let got = &buf.filled()[before..after];
                s.startup.extend_from_slice(&got[..got.len().min(room)]);
                return Poll::Ready(Ok(()));
            }
            let kept = this.inn.filter(
                &mut buf.filled_mut()[before..after],
                &mut this.keep_in,
                |t| keep_reply(&mut s, t),
            );
            drop(s);
            buf.set_filled(before + kept);
            if kept > 0 {
                return Poll::Ready(Ok(()));
            }
            // Everything read was an inserted statement's reply: read on.
        }
    }
}

/// Whether a backend message starting with type byte `t` goes on to tokio-postgres.
fn keep_reply(s: &mut Shared, t: u8) -> bool {
    let z_seen = s.z_seen;
    let Some(front) = s.skips.front_mut().filter(|k| z_seen >= k.after_z) else {
        if t == b'Z' {
            s.z_seen += 1;
        }
        return true;
    };
    match t {
        // Notice, parameter status, notification: asynchronous, never a reply.
        b'N' | b'S' | b'A' => true,
        // An inserted statement failed. The server skips to the next Sync: the inserted
        // one (whose ReadyForQuery is still dropped), or the carrier's, which makes this
        // error the carrier's reply.
        b'E' => {
            s.failed = true;
            if front.sync {
                front.left = 0;
            } else {
                s.skips.pop_front();
            }
            true
        }
        b'Z' => {
            s.z_seen += 1;
            let own = front.sync && front.left == 0;
            s.skips.pop_front();
            // The inserted Sync's ReadyForQuery is dropped; no other can come before the
            // inserted statements complete (kept, to be safe).
            !own
        }
        // ParseComplete, CommandComplete, EmptyQueryResponse, PortalSuspended end a statement.
        b'1' | b'C' | b'I' | b's' if front.left > 0 => {
            front.left -= 1;
            if front.left == 0 && !front.sync {
                s.skips.pop_front();
            }
            false
        }
        // BindComplete, DataRow, RowDescription, NoData, ParameterDescription.
        _ => false,
    }
}
