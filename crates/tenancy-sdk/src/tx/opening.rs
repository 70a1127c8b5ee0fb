//! A transaction's opening (deferred COMMIT, BEGIN, signed context, search path) and
//! running a request with the opening spliced in front of it.

use std::future::Future;

use tenancy_core::ContextToken;

use crate::pool::Conn;
use crate::wire::{self, Splice};
use crate::Error;

/// What opens a transaction: the deferred COMMIT of the connection's previous read-only
/// transaction, `BEGIN [READ ONLY]`, the signed context, the schema's search path.
#[derive(Debug)]
pub(crate) struct Begin {
    pub(crate) commit_first: bool,
    pub(crate) read_only: bool,
    /// The signed token: `[a-z0-9.-]` only. Behind a transaction-mode pooler it is signed
    /// for the transaction itself (backend pid, transaction start), once the opening query
    /// returned them.
    pub(crate) token: Option<ContextToken>,
    /// Checked by the pool: `[a-z0-9_]` only.
    pub(crate) schema: Option<String>,
}

impl Begin {
    /// Queues the opening on a spliced connection, in front of the next request: as an
    /// implicit read-only transaction's context, or as BEGIN and context.
    /// Behind a transaction-mode pooler (a token bound to the transaction) BEGIN, reset,
    /// limits and search path already ran: only `tenancy.enter` is queued. Returns false when there is
    /// no token to queue.
    pub(super) fn splice_into(&self, splice: &Splice, implicit: bool) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        if token.transaction_start().is_some() {
            splice.push_transaction_enter(token.as_str());
            return true;
        }
        let path = self.schema.as_ref().map(|s| format!("\"{s}\", public"));
        splice.push_opening(&wire::Opening {
            commit_first: self.commit_first,
            implicit,
            read_only: self.read_only,
            token: token.as_str(),
            search_path: path.as_deref(),
        });
        true
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
            if !b.splice_into(splice, implicit) {
                return Err(Error::Invalid(
                    "a tenant transaction without a signed context token".into(),
                ));
            }
            let per_transaction = b
                .token
                .as_ref()
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
/// its backend terminated or crashed, or its prepared statements deallocated.
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
}
