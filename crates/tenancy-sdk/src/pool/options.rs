//! The pool's settings.

use std::time::Duration;

use crate::Error;

/// Settings of a [`TenantPool`].
///
/// The session limits (`statement_timeout` to `transaction_timeout`) travel in every
/// connection's startup packet. Settings given there take precedence over defaults stored
/// with `ALTER ROLE … SET` or `ALTER DATABASE … SET`, which the runtime role could
/// otherwise use to break every later connection (the runtime role may change its own
/// defaults, e.g. `ALTER ROLE tenancy_app SET statement_timeout = '1ms'`). Alongside them
/// every connection is pinned to `default_transaction_read_only = off`,
/// `default_transaction_isolation = 'read committed'`,
/// `default_transaction_deferrable = off`, `row_security = on` and
/// `client_min_messages = notice`. Options in the connection configuration itself
/// (`options=-c …`) are sent after these and win, so an operator can still change any of
/// them on purpose. A transaction's own `SET` changes them for the rest of its session
/// only until the next transaction opens: every opening resets session-level settings
/// (`RESET ALL`).
///
/// Behind a transaction-mode pooler ([`Pooler::Transaction`]) nothing travels in the
/// startup packet; every transaction's opening sets the same limits with `SET LOCAL`
/// after its `RESET ALL` instead, which also beats role and database defaults.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Maximum number of connections.
    pub max_size: usize,
    /// How long a signed context token stays valid after it is issued. It only has to
    /// outlive the gap between signing and the transaction's first message.
    pub token_ttl: Duration,
    /// How long `begin` waits for a free connection.
    pub wait_timeout: Duration,
    /// Longest a transaction may hold its connection, from `begin` until it ends;
    /// `Duration::ZERO` for no limit. Enforced by the pool, not by a session setting the
    /// transaction's SQL could lift: past it the running statement is cancelled, the
    /// backend terminated (releasing its locks) and the connection closed, and the
    /// transaction fails with [`Error::TransactionDeadline`]. Checked every quarter of
    /// the limit (at most every second), so a transaction ends within 1.25 times it.
    /// Needs a Tokio runtime when the pool is built.
    pub transaction_deadline: Duration,
    /// `statement_timeout` of every connection; `Duration::ZERO` for none.
    pub statement_timeout: Duration,
    /// `lock_timeout` of every connection: how long a statement waits for a lock before it
    /// fails; `Duration::ZERO` for none.
    pub lock_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every connection; `Duration::ZERO` for none.
    pub idle_in_transaction_timeout: Duration,
    /// `search_path` of every connection, as PostgreSQL spells it; `None` keeps the
    /// server's, database's or role's default. The default is PostgreSQL's own,
    /// `"$user", public`.
    pub search_path: Option<String>,
    /// `transaction_timeout` of every connection (PostgreSQL 17 and later only: older
    /// servers refuse connections that set it); `None` sends nothing.
    pub transaction_timeout: Option<Duration>,
    /// How the pool reaches PostgreSQL: directly (the default) or through a
    /// transaction-mode pooler such as PgBouncer. A direct pool that finds itself behind
    /// a pooler refuses to connect, naming this setting.
    pub pooler: Pooler,
    /// Receives per-tenant timings of this pool's transactions (see [`crate::Observer`]);
    /// `None`: nothing is timed.
    pub observer: Option<std::sync::Arc<dyn crate::Observer>>,
}

/// How a [`TenantPool`] reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Pooler {
    /// Each pooled connection is one backend for its whole life. Context tokens are bound
    /// to the backend pid, the SDK's own statements are prepared once per connection,
    /// and a transaction's opening rides in front of its first statement (a read-only
    /// point read is one round trip).
    #[default]
    Direct,
    /// Through a pooler that may hand each transaction another backend (PgBouncer
    /// `pool_mode = transaction`; a session-mode pool works too). Every transaction opens
    /// with one round trip of its own (`BEGIN`, `RESET ALL`, the session limits as `SET
    /// LOCAL`, and reading the backend pid and the transaction's start); its token is
    /// bound to that transaction (a `v2` token), and `tenancy.enter` rides in front of
    /// the first statement. Statements are unnamed: parameter types are learnt once per connection
    /// and SQL from a statement prepared and closed inside one transaction. Statements
    /// prepared through [`TenantTx::client`](crate::TenantTx::client) must be dropped
    /// before the transaction ends.
    Transaction,
}

impl std::str::FromStr for Pooler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "direct" | "none" => Ok(Pooler::Direct),
            "transaction" => Ok(Pooler::Transaction),
            other => Err(Error::Invalid(format!(
                "pooler {other:?} is not known: use \"direct\" or \"transaction\""
            ))),
        }
    }
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 16,
            token_ttl: Duration::from_secs(60),
            wait_timeout: Duration::from_secs(30),
            transaction_deadline: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
            search_path: Some("\"$user\", public".into()),
            transaction_timeout: None,
            pooler: Pooler::Direct,
            observer: None,
        }
    }
}

impl PoolOptions {
    /// The `options` startup parameter carrying the session limits.
    pub(crate) fn startup_options(&self) -> String {
        let ms = |d: Duration| d.as_millis().min(i32::MAX as u128).to_string();
        let mut settings: Vec<(&str, String)> = vec![
            ("statement_timeout", ms(self.statement_timeout)),
            ("lock_timeout", ms(self.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_timeout),
            ),
            ("default_transaction_read_only", "off".into()),
            ("default_transaction_isolation", "read committed".into()),
            ("default_transaction_deferrable", "off".into()),
            ("row_security", "on".into()),
            ("client_min_messages", "notice".into()),
        ];
        if let Some(path) = &self.search_path {
            settings.push(("search_path", path.clone()));
        }
        if let Some(t) = self.transaction_timeout {
            settings.push(("transaction_timeout", ms(t)));
        }
        let mut out = String::new();
        for (name, value) in settings {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("-c ");
            out.push_str(name);
            out.push('=');
            // The server splits `options` at white space; a backslash keeps the next
            // character (a space in a value, or a backslash) in the value.
            for c in value.chars() {
                if c.is_whitespace() || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
        }
        out
    }
}
