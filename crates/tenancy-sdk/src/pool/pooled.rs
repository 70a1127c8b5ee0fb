//! Behind a transaction-mode pooler: what opens each tenant transaction, and reading its
//! reply.

use std::borrow::Cow;
use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

use super::PoolOptions;

/// What opens a tenant transaction behind a transaction-mode pooler. Without a replay
/// registry, one simple query whose reply names the transaction (backend pid, transaction
/// start), which its token is then bound to: `BEGIN` with its modes named, `RESET ALL`
/// (session settings an earlier transaction on the same backend left), and the pool's
/// session limits as transaction-local settings. With one, unnamed statements in front of
/// the first statement with a single-use token: `tenancy.enter_pooled` where the database
/// has it (the native extension's version 1.1; one call does the enter, the reset and the
/// limits), else a `SET statement_timeout` and a SELECT of `tenancy.enter` and
/// `set_config` calls.
#[derive(Debug)]
pub(crate) struct Pooled {
    /// `SET LOCAL statement_timeout`, then the SELECT of the backend pid, the transaction
    /// start and the other limits (`set_config(…, true)`); the search path is added as its last
    /// column.
    limits: String,
    /// `SET LOCAL statement_timeout = …; `, also sent before `RESET ALL`: a leftover
    /// session value or a role default (1 ms) would otherwise time out the reset itself.
    timeout: String,
    search_path: Option<String>,
    /// With a replay registry: the statement that enters the tenant, `$1` the single-use
    /// token, with the pool's limits as columns after it (`set_config(…, true)`), the
    /// backend pid first; the search path is added as its last column.
    enter: String,
    /// The same with `tenancy.enter_read_only` (an implicit read-only transaction).
    enter_read_only: String,
    /// With a replay registry and `tenancy.enter_pooled` (tenancy_context 1.1): the whole
    /// opening as one call, `$1` the token, the pool's limits as constants, without its
    /// last argument (the search path) and closing parenthesis; by implicit (0: an
    /// explicit transaction, 1: an implicit read-only one).
    call_prefix: [String; 2],
    /// The same calls complete, with the pool's search path.
    call: [String; 2],
    /// With a replay registry: the pool's statement timeout as a statement of its own in
    /// front of the enter statement. Each statement's timer starts
    /// with the value in force when it starts: a leftover session value or a role default
    /// (1 ms) would otherwise time out the enter statement (and its RESET ALL) every time.
    timeout_sql: String,
}

impl Pooled {
    pub(super) fn new(opts: &PoolOptions) -> Self {
        let ms = |d: Duration| d.as_millis().min(i32::MAX as u128);
        // The statement timeout first, as a statement of its own: the timer of a running
        // statement keeps the value it started with, and a role default (1 ms) would
        // otherwise apply to the SELECT below. The rest are columns of that SELECT: fewer
        // statements to parse per transaction.
        let mut limits = format!(
            "SET LOCAL statement_timeout = {}; SELECT pg_catalog.pg_backend_pid(), \
             pg_catalog.encode(pg_catalog.timestamptz_send(pg_catalog.transaction_timestamp()), 'hex'), \
             pg_catalog.set_config('lock_timeout', '{}', true), \
             pg_catalog.set_config('idle_in_transaction_session_timeout', '{}', true), \
             pg_catalog.set_config('row_security', 'on', true), \
             pg_catalog.set_config('client_min_messages', 'notice', true)",
            ms(opts.statement_timeout),
            ms(opts.lock_timeout),
            ms(opts.idle_in_transaction_timeout)
        );
        if let Some(t) = opts.transaction_timeout {
            limits.push_str(&format!(
                ", pg_catalog.set_config('transaction_timeout', '{}', true)",
                ms(t)
            ));
        }
        // Columns are evaluated in order: the limits after `enter`, whose RESET ALL would
        // otherwise undo them. The statement runs under whatever timeout was in force when
        // it started; the next statement's timer starts with the pool's.
        let mut set = format!(
            "pg_catalog.set_config('statement_timeout', '{}', true), \
             pg_catalog.set_config('lock_timeout', '{}', true), \
             pg_catalog.set_config('row_security', 'on', true), \
             pg_catalog.set_config('client_min_messages', 'notice', true)",
            ms(opts.statement_timeout),
            ms(opts.lock_timeout),
        );
        if let Some(t) = opts.transaction_timeout {
            set.push_str(&format!(
                ", pg_catalog.set_config('transaction_timeout', '{}', true)",
                ms(t)
            ));
        }
        // An implicit transaction ends at its Sync: it is never idle in a transaction
        // block, so only explicit ones set that timeout.
        let idle = format!(
            ", pg_catalog.set_config('idle_in_transaction_session_timeout', '{}', true)",
            ms(opts.idle_in_transaction_timeout)
        );
        let enter = |f: &str, idle: &str| {
            format!(
                "SELECT pg_catalog.pg_backend_pid(), tenancy.{f}($1::pg_catalog.text), {set}{idle}"
            )
        };
        // The same limits, as arguments of tenancy.enter_pooled, which also restarts its
        // own statement's timer with the statement timeout: no SET statement in front.
        let call = |read_only: bool, idle: Option<Duration>| {
            let opt =
                |d: Option<Duration>| d.map_or_else(|| "NULL".to_owned(), |d| ms(d).to_string());
            format!(
                "SELECT tenancy.enter_pooled($1::pg_catalog.text, {read_only}, {}, {}, {}, {}, ",
                ms(opts.statement_timeout),
                ms(opts.lock_timeout),
                opt(idle),
                opt(opts.transaction_timeout),
            )
        };
        // As above: an implicit transaction is never idle in a transaction block.
        let call_prefix = [
            call(false, Some(opts.idle_in_transaction_timeout)),
            call(true, None),
        ];
        let path = opts.search_path.as_deref();
        Pooled {
            call: [
                call_sql(&call_prefix[0], path),
                call_sql(&call_prefix[1], path),
            ],
            call_prefix,
            // A utility statement (no plan, no executor), session-level because SET LOCAL
            // outside a transaction block warns: the enter statement's RESET ALL, in the
            // same transaction, takes the session value back to its default (and if the
            // transaction aborts, both are undone), so it never outlives the transaction.
            timeout_sql: format!("SET statement_timeout = {}", ms(opts.statement_timeout)),
            enter: enter("enter", &idle),
            enter_read_only: enter("enter_read_only", ""),
            limits,
            timeout: format!(
                "SET LOCAL statement_timeout = {}; ",
                ms(opts.statement_timeout)
            ),
            search_path: opts.search_path.clone(),
        }
    }

    /// The opening query: `commit_first` sends a finished read-only transaction's COMMIT
    /// first; `schema` goes first on the search path (checked `[a-z0-9_]`). Its last row
    /// starts with (backend pid, transaction start as `timestamptz_send` hex).
    pub(crate) fn opening_sql(
        &self,
        commit_first: bool,
        read_only: bool,
        schema: Option<&str>,
    ) -> String {
        let mut sql = String::with_capacity(512);
        if commit_first {
            sql.push_str("COMMIT; ");
        }
        sql.push_str(if read_only {
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY, NOT DEFERRABLE; "
        } else {
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE, NOT DEFERRABLE; "
        });
        // Each statement of a simple query runs under the statement timeout in force when it
        // starts: the pool's, not a hostile leftover, for the reset.
        sql.push_str(&self.timeout);
        sql.push_str("RESET ALL; ");
        sql.push_str(&self.limits);
        let path = match schema {
            Some(schema) => Some(format!("\"{schema}\", public")),
            None => self.search_path.clone(),
        };
        if let Some(path) = path {
            // The whole query is parsed before RESET ALL runs: hence the escape literal.
            push_search_path(&mut sql, &path);
        }
        sql
    }
}

impl Pooled {
    /// With a replay registry: the statement that sets the pool's statement timeout for
    /// the transaction, sent in front of [`Pooled::enter_sql`]; none where the opening is
    /// `tenancy.enter_pooled` (`one_call`), which starts its statement's timer itself.
    pub(crate) fn timeout_sql(&self, one_call: bool) -> Option<&str> {
        (!one_call).then_some(self.timeout_sql.as_str())
    }

    /// With a replay registry: the statement that enters the tenant and sets the pool's
    /// limits (`implicit`: and makes the implicit transaction read-only), its first column
    /// the backend pid. `schema` goes first on the search path (checked `[a-z0-9_]`).
    /// `one_call`: the database has `tenancy.enter_pooled`, which does all of it.
    pub(crate) fn enter_sql(
        &self,
        implicit: bool,
        schema: Option<&str>,
        one_call: bool,
    ) -> Cow<'_, str> {
        if one_call {
            let i = usize::from(implicit);
            return match schema {
                Some(schema) => Cow::Owned(call_sql(
                    &self.call_prefix[i],
                    Some(&format!("\"{schema}\", public")),
                )),
                None => Cow::Borrowed(&self.call[i]),
            };
        }
        let base = if implicit {
            &self.enter_read_only
        } else {
            &self.enter
        };
        let path = match schema {
            Some(schema) => Cow::Owned(format!("\"{schema}\", public")),
            None => match &self.search_path {
                Some(p) => Cow::Borrowed(p.as_str()),
                None => return Cow::Borrowed(base),
            },
        };
        let mut sql = String::with_capacity(base.len() + 64);
        sql.push_str(base);
        push_search_path(&mut sql, &path);
        Cow::Owned(sql)
    }
}

/// A `tenancy.enter_pooled` call: `prefix` (see [`Pooled::call_prefix`]) with `path` as
/// its last argument (NULL: none).
fn call_sql(prefix: &str, path: Option<&str>) -> String {
    let mut sql = String::with_capacity(prefix.len() + 64);
    sql.push_str(prefix);
    match path {
        Some(path) => push_literal(&mut sql, path),
        None => sql.push_str("NULL"),
    }
    sql.push(')');
    sql
}

/// Appends `, set_config('search_path', <path>, true)` with `path` as an escape string
/// literal (see [`push_literal`]).
fn push_search_path(sql: &mut String, path: &str) {
    sql.push_str(", pg_catalog.set_config('search_path', ");
    push_literal(sql, path);
    sql.push_str(", true)");
}

/// Appends `text` as an escape string literal: read the same whatever
/// `standard_conforming_strings` an earlier transaction left.
fn push_literal(sql: &mut String, text: &str) {
    sql.push_str("E'");
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            sql.push(c);
        }
        sql.push(c);
    }
    sql.push('\'');
}

/// The backend pid and the transaction's start (microseconds since 2000-01-01) in the
/// reply to [`Pooled::opening_sql`].
pub(crate) fn parse_opening_reply(msgs: &[SimpleQueryMessage]) -> Option<(i32, i64)> {
    let row = msgs.iter().rev().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    })?;
    let pid = row.get(0)?.parse().ok()?;
    let start = row.get(1).filter(|h| h.len() == 16)?;
    let start = u64::from_str_radix(start, 16).ok()? as i64;
    Some((pid, start))
}
