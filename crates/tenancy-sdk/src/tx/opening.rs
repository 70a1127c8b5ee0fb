//! A transaction's opening (deferred COMMIT, BEGIN, signed context, search path) and
//! running a request with the opening spliced in front of it.

use std::future::Future;

use tenancy_core::{ContextToken, TenantId};

use crate::pool::{Conn, Pooled};
use crate::wire::{self, Splice};
use crate::Error;

/// What opens a transaction: the deferred COMMIT of the connection's previous read-only
/// transaction, `BEGIN [READ ONLY]`, the signed context, the schema's search path.
#[derive(Debug)]
pub(crate) struct Begin {
    pub(crate) commit_first: bool,
    pub(crate) read_only: bool,
    /// What enters the tenant. Behind a transaction-mode pooler a token signed for the
    /// transaction itself (backend pid, transaction start), once the opening query
    /// returned them.
    pub(crate) token: Option<Credential>,
    /// Checked by the pool: `[a-z0-9_]` only.
    pub(crate) schema: Option<String>,
}

/// What an opening enters its tenant with.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// A signed token (`[a-z0-9.-]` only): the native context, the PL/pgSQL one behind a
    /// transaction-mode pooler or on a runtime without the session context.
    Token(ContextToken),
    /// The PL/pgSQL session context: the tenant, entered with the connection's current
    /// session secret when the opening is queued.
    Session(TenantId),
}

impl Credential {
    /// The token, if this is one.
    pub(crate) fn token(&self) -> Option<&ContextToken> {
        match self {
            Credential::Token(t) => Some(t),
            Credential::Session(_) => None,
        }
    }
}

impl Begin {
    /// Queues the opening on a spliced connection, in front of the next request: as an
    /// implicit read-only transaction's context, or as BEGIN and context.
    /// Behind a transaction-mode pooler (a token bound to the transaction) BEGIN, reset,
    /// limits and search path already ran: only `tenancy.enter` is queued. Returns false when there is
    /// nothing to enter with (no token, or a session-context connection without a secret).
    /// With a single-use token (behind a pooler whose server keeps a replay registry)
    /// everything is queued here, unnamed: the owed COMMIT, BEGIN unless implicit, and
    /// `pooled`'s enter statement with the pool's limits (`one_call`: the database has
    /// `tenancy.enter_pooled`, and that call is the whole opening after BEGIN).
    pub(super) fn splice_into(
        &self,
        splice: &Splice,
        implicit: bool,
        pooled: Option<&Pooled>,
        one_call: bool,
    ) -> bool {
        let Some(credential) = &self.token else {
            return false;
        };
        let path = self.schema.as_ref().map(|s| format!("\"{s}\", public"));
        let mut opening = wire::Opening {
            commit_first: self.commit_first,
            implicit,
            read_only: self.read_only,
            enter: wire::Enter::Token(""),
            search_path: path.as_deref(),
        };
        match credential {
            Credential::Token(token) if token.nonce().is_some() => {
                let Some(pooled) = pooled else {
                    return false;
                };
                let sql = pooled.enter_sql(implicit, self.schema.as_deref(), one_call);
                splice.push_pooled_opening(
                    self.commit_first,
                    (!implicit).then_some(self.read_only),
                    pooled.timeout_sql(one_call),
                    &sql,
                    token.as_str(),
                );
                true
            }
            Credential::Token(token) if token.transaction_start().is_some() => {
                splice.push_transaction_enter(token.as_str());
                true
            }
            Credential::Token(token) => {
                opening.enter = wire::Enter::Token(token.as_str());
                splice.push_opening(&opening);
                true
            }
            Credential::Session(tenant) => {
                splice.push_session_opening(&opening, *tenant.as_uuid().as_bytes())
            }
        }
    }
}

/// Runs `fut` (a request not yet sent: futures send on first poll) with `opening` in front
/// of it, spliced into the request's own messages (as an implicit transaction's context,
/// or as BEGIN and context). The opening is never SQL text: the token travels only as a
/// bound parameter, so no session sees it in `pg_stat_activity` and no statement log has
/// it.
pub(super) async fn with_opening<T>(
    conn: &Conn,
    opening: Option<(Begin, bool)>,
    what: &'static str,
    fut: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    match (opening, conn.splice.as_deref()) {
        (Some((b, implicit)), Some(splice)) => {
            if !b.splice_into(splice, implicit, conn.pooled.as_deref(), conn.one_call) {
                // Nothing was sent; this connection cannot enter a tenant.
                conn.retire();
                return Err(Error::Invalid(
                    "a tenant transaction without a signed context token or session secret".into(),
                ));
            }
            let per_transaction = b
                .token
                .as_ref()
                .and_then(Credential::token)
                .is_some_and(|t| t.transaction_start().is_some());
            fut.await.map_err(|e| {
                if splice.take_failed() {
                    if per_transaction
                        && e.as_db_error()
                            .is_some_and(|d| d.message().contains("malformed tenant context token"))
                    {
                        tracing::warn!(
                            "the database refused a transaction-bound (v2) context token as malformed: its native \
                             tenancy_context library predates transaction-mode pooling; install the current \
                             library (make -C extensions/tenancy_context install) and reconnect"
                        );
                    }
                    // Whatever the cause (a refused token, statements deallocated through
                    // `client()`), this connection is not handed out again.
                    conn.retire();
                    Error::ContextRefused(e)
                } else {
                    Error::Db { what, source: e }
                }
            })
        }
        // Every tenant connection is spliced; a connection without one never gets a tenant.
        (Some(_), None) => Err(Error::Invalid(
            "a tenant transaction on a connection without a splice".into(),
        )),
        (None, _) => fut.await.map_err(Error::db(what)),
    }
}

/// Whether `e` says the connection is gone or unusable for the next transaction: closed,
/// its backend terminated or crashed, its prepared statements deallocated, or its session
/// context gone (DISCARD TEMP or DISCARD ALL dropped it) or burnt (a wrong secret, sent by
/// SQL an earlier transaction injected). In each case the statement did not run: the
/// opening in front of it failed first.
pub(super) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.is_closed()
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::INVALID_SQL_STATEMENT_NAME
        )
        || session_context_lost(e)
}

/// Whether `e` is the session context's refusal of a connection that can no longer enter a
/// tenant (not of a tenant or a token: those are never retried).
fn session_context_lost(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        d.message()
            .starts_with("tenancy: this connection has no session context")
            || d.message().starts_with("tenancy: wrong session secret")
    })
}
