//! The SDK's own statements on a tenant connection: their names and texts, and the
//! encoding of an opening as Bind/Execute messages (no Sync) of them.

use bytes::BytesMut;
use postgres_protocol::message::frontend;

/// The statements prepared on every tenant connection, by name. Names resolve when they
/// are prepared, at connection start, before any statement of a user runs (and a plan is
/// re-analysed with that same search path); they are qualified anyway.
pub(super) const PREPARED: &[(&str, &str)] = &[
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
/// Prepared on connections with a PL/pgSQL session context (direct connections to a
/// database whose runtime has `tenancy.init_session`): the explicit and the implicit
/// read-only opening, with the tenant as two int8, the session secret and the next one.
pub(super) const PREPARED_SESSION: &[(&str, &str)] = &[
    (
        ENTER_SESSION,
        "SELECT tenancy.enter_session($1::pg_catalog.int8, $2::pg_catalog.int8, $3::pg_catalog.int8, $4::pg_catalog.int8)",
    ),
    (
        ENTER_SESSION_READ_ONLY,
        "SELECT tenancy.enter_session_read_only($1::pg_catalog.int8, $2::pg_catalog.int8, $3::pg_catalog.int8, $4::pg_catalog.int8)",
    ),
];
/// Prepared only where the database has `tenancy.enter_read_only` (both context
/// implementations do, unless the runtime predates it).
pub(super) const PREPARED_IMPLICIT: (&str, &str) = (
    ENTER_READ_ONLY,
    "SELECT tenancy.enter_read_only($1::pg_catalog.text)",
);
const BEGIN: &str = "tenancy_begin";
const BEGIN_READ_ONLY: &str = "tenancy_begin_ro";
const COMMIT: &str = "tenancy_commit";
const ENTER: &str = "tenancy_enter";
const ENTER_READ_ONLY: &str = "tenancy_enter_ro";
const ENTER_SESSION: &str = "tenancy_enter_session";
const ENTER_SESSION_READ_ONLY: &str = "tenancy_enter_session_ro";
const SEARCH_PATH: &str = "tenancy_search_path";
const RESET: &str = "tenancy_reset";
pub(super) const RESET_SESSION: &str = "tenancy_reset_session";
/// The opening statement of a transaction behind a transaction-mode pooler, parsed unnamed.
const ENTER_SQL: &str = "SELECT tenancy.enter($1::pg_catalog.text)";

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
    /// What enters the tenant.
    pub(crate) enter: Enter<'a>,
    /// The schema placement's `search_path`, already formatted.
    pub(crate) search_path: Option<&'a str>,
}

/// How an opening enters its tenant.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Enter<'a> {
    /// A signed context token (`tenancy.enter`, `tenancy.enter_read_only`).
    Token(&'a str),
    /// The PL/pgSQL session context: the tenant's id as two int8 (big-endian halves), the
    /// session secret and the one that replaces it (`tenancy.enter_session`,
    /// `tenancy.enter_session_read_only`).
    Session {
        hi: i64,
        lo: i64,
        secret: i64,
        next: i64,
    },
}

/// Appends Parse messages of `stmts` (name, text) to `buf`; returns how many.
pub(super) fn parse_all<'a>(
    stmts: impl IntoIterator<Item = (&'a str, &'a str)>,
    buf: &mut BytesMut,
) -> u32 {
    let mut n = 0;
    for (name, sql) in stmts {
        // Statement texts are constants without NUL bytes: encoding cannot fail.
        let _ = frontend::parse(name, sql, [], buf);
        n += 1;
    }
    n
}

/// Appends a Bind/Execute pair of prepared statement `name` (no Sync) to `buf`, with
/// one text argument or none.
fn bind_execute(name: &str, arg: Option<&str>, buf: &mut BytesMut) {
    bind_execute_with(
        name,
        0,
        arg,
        |v, buf| buf.extend_from_slice(v.as_bytes()),
        buf,
    );
}

/// Appends a Bind/Execute pair of prepared statement `name` with int8 arguments in binary
/// (eight bytes, big-endian: nothing to format here or to parse on the server).
fn bind_execute_int8<const N: usize>(name: &str, args: [i64; N], buf: &mut BytesMut) {
    bind_execute_with(
        name,
        1,
        args,
        |v, buf| buf.extend_from_slice(&v.to_be_bytes()),
        buf,
    );
}

/// Appends a Bind/Execute pair of prepared statement `name`, its arguments in `format`
/// (0 text, 1 binary) written by `put`, its result in text.
fn bind_execute_with<T>(
    name: &str,
    format: i16,
    args: impl IntoIterator<Item = T>,
    put: impl Fn(T, &mut BytesMut),
    buf: &mut BytesMut,
) {
    // Values are text without NUL bytes or int8, statement names constants: cannot fail.
    let _ = frontend::bind(
        "",
        name,
        [format],
        args,
        |v, buf| {
            put(v, buf);
            Ok(postgres_protocol::IsNull::No)
        },
        [0i16],
        buf,
    );
    let _ = frontend::execute("", 0, buf);
}

/// Encodes an opening as Bind/Execute pairs of the prepared statements (no Sync) at the
/// end of `buf`, and returns the number of statements whose replies the filter must drop.
/// `reset`: run `tenancy_reset_session` between BEGIN and `enter` (token openings only:
/// `enter_session` resets session settings itself).
pub(super) fn opening(o: &Opening<'_>, reset: bool, buf: &mut BytesMut) -> u32 {
    let mut n = 0;
    if o.commit_first {
        bind_execute(COMMIT, None, buf);
        n += 1;
    }
    if !o.implicit {
        bind_execute(if o.read_only { BEGIN_READ_ONLY } else { BEGIN }, None, buf);
        n += 1;
    }
    match o.enter {
        Enter::Token(token) if o.implicit => bind_execute(ENTER_READ_ONLY, Some(token), buf),
        Enter::Token(token) => {
            if reset {
                bind_execute(RESET_SESSION, None, buf);
                n += 1;
            }
            bind_execute(ENTER, Some(token), buf);
        }
        Enter::Session {
            hi,
            lo,
            secret,
            next,
        } => {
            let name = if o.implicit {
                ENTER_SESSION_READ_ONLY
            } else {
                ENTER_SESSION
            };
            bind_execute_int8(name, [hi, lo, secret, next], buf);
        }
    }
    n += 1;
    if let Some(path) = o.search_path {
        bind_execute(SEARCH_PATH, Some(path), buf);
        n += 1;
    }
    n
}

/// Which statement of [`opening`] (from 0) returns the next session secret, if any.
pub(super) fn secret_at(o: &Opening<'_>) -> Option<u32> {
    matches!(o.enter, Enter::Session { .. })
        .then(|| u32::from(o.commit_first) + u32::from(!o.implicit))
}

/// Encodes a reset of session settings (one statement): `tenancy_reset_session` where
/// `session` (it keeps the PL/pgSQL context's single-use mark), `RESET ALL` otherwise.
pub(super) fn reset(session: bool, buf: &mut BytesMut) -> u32 {
    bind_execute(if session { RESET_SESSION } else { RESET }, None, buf);
    1
}

/// Encodes `tenancy.enter($token)` as an unnamed statement (Parse, Bind, Execute; no
/// Sync); returns the replies that each end one counted reply (ParseComplete and
/// CommandComplete).
pub(super) fn transaction_enter(token: &str, buf: &mut BytesMut) -> u32 {
    // Constant text and a token of `[a-z0-9.-]`: encoding cannot fail.
    let _ = frontend::parse("", ENTER_SQL, [], buf);
    bind_execute("", Some(token), buf);
    2
}

/// Encodes the opening of a transaction behind a transaction-mode pooler with a
/// single-use token, each statement unnamed (Parse, Bind, Execute; no Sync): the COMMIT of
/// the connection's finished read-only transaction when `commit_first`, `BEGIN` with its
/// modes unless `begin` is `None` (an implicit transaction), `timeout_sql` if any (the
/// pool's statement timeout; none in front of `tenancy.enter_pooled`), then `enter_sql`
/// (the pooled enter statement: backend pid first, `$1` the token). Returns the replies that each end one counted reply
/// (ParseComplete and CommandComplete, two per statement).
pub(super) fn pooled_opening(
    commit_first: bool,
    begin: Option<bool>,
    timeout_sql: Option<&str>,
    enter_sql: &str,
    token: &str,
    buf: &mut BytesMut,
) -> u32 {
    let mut n = 0;
    let mut unnamed = |sql: &str, arg: Option<&str>, buf: &mut BytesMut| {
        // Texts without NUL bytes (checked by the pool) and a token of `[a-z0-9.-]`:
        // encoding cannot fail.
        let _ = frontend::parse("", sql, [], buf);
        bind_execute("", arg, buf);
        n += 2;
    };
    if commit_first {
        unnamed("COMMIT", None, buf);
    }
    match begin {
        Some(true) => unnamed("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY", None, buf),
        Some(false) => unnamed(
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
            None,
            buf,
        ),
        None => {}
    }
    if let Some(timeout_sql) = timeout_sql {
        unnamed(timeout_sql, None, buf);
    }
    unnamed(enter_sql, Some(token), buf);
    n
}
