//! Ending a transaction with one last statement sent together with its COMMIT.

use std::sync::atomic::Ordering;

use tokio_postgres::types::ToSql;

use super::opening::connection_lost;
use super::ops::{run_prepared, Op};
use super::{count_end, State, TenantTx, RUNNING};
use crate::Error;

impl TenantTx {
    /// Runs `sql` and commits, in one round trip: the statement and the COMMIT are sent
    /// together, without waiting for the statement's reply in between. Returns the number
    /// of rows the statement affected.
    ///
    /// The outcome is the one of `execute` followed by `commit`: when the statement fails,
    /// the server has aborted the transaction, so the COMMIT behind it rolls everything
    /// back, and the statement's error is returned; nothing of the transaction is then
    /// committed. For a last statement whose result decides nothing else in the
    /// transaction, such as the audit event of the change the transaction made.
    ///
    /// The statement and the COMMIT run one after the other (two round trips, same
    /// outcome) when nothing of the transaction was sent yet (the opening must go first),
    /// when it is read-only, and behind a transaction-mode pooler.
    pub async fn execute_and_commit(
        mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, Error> {
        if self.state != State::Open || self.read_only || self.pooled() {
            let n = self.execute(sql, params).await?;
            return self.commit().await.map(|()| n);
        }
        // The statement is prepared on this connection (a round trip only the first time):
        // a Parse failure reports here, with the transaction still open to roll back.
        let (stmt, opening) = self.ready(sql).await?;
        if opening.is_some() {
            // An open transaction on a connection that is not pooled sent its opening with
            // its first statement; there is nothing left to send in front of this one.
            return Err(Error::Invalid(
                "internal: an open transaction still had an opening to send".into(),
            ));
        }
        let Some(conn) = self.conn.take() else {
            return Err(Error::Invalid("transaction already ended".into()));
        };
        // `join` polls in order, and a request is sent on its future's first poll: the
        // statement is queued before the COMMIT on the connection.
        let (ran, committed) = futures_util::future::join(
            run_prepared(&conn.client, &stmt, params, Op::Count),
            conn.client.batch_execute("COMMIT"),
        )
        .await;
        let expired = conn.watch.expired.load(Ordering::Relaxed);
        let lost = |e: &tokio_postgres::Error| {
            if connection_lost(e) {
                conn.retire();
            }
        };
        // Counted like `commit`: committed, rolled back (the statement failed, so the
        // COMMIT rolled back), or not at all when the COMMIT itself failed.
        let (done, ended) = match (ran, committed) {
            (Ok(ran), Ok(())) => (ran.count(), Ok(())),
            (Err(e), _) => {
                lost(&e);
                (Err(Error::db(RUNNING)(e)), Err(Error::Aborted))
            }
            (Ok(_), Err(e)) => {
                lost(&e);
                let failed = Err(Error::db("committing")(e));
                (failed, Err(Error::Invalid(String::new())))
            }
        };
        count_end(true, &ended);
        if expired && done.is_err() {
            return Err(Error::TransactionDeadline(self.signer.deadline));
        }
        done
    }
}
