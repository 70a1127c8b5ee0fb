//! The change capture and the snapshot copy.

use futures_util::StreamExt;
use tenancy_catalog::{self as catalog, Move};
use tenancy_conn::{quote_ident, quote_literal};
use tenancy_transfer::format::copy_unescape;
use tokio_postgres::{Client, Transaction};

use super::{capture_schema, qualified};
use crate::engine::Provisioner;
use crate::Error;

/// Reads a COPY … TO STDOUT of one text column, calling `row` with each unescaped line.
pub(super) async fn copy_lines(
    client: &Client,
    sql: &str,
    what: &str,
    mut row: impl FnMut(Vec<u8>) -> Result<(), Error>,
) -> Result<(), Error> {
    let stream = client
        .copy_out(sql)
        .await
        .map_err(Error::db(what.to_owned()))?;
    futures_util::pin_mut!(stream);
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::db(what.to_owned()))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            row(copy_unescape(&pending[start..start + pos]))?;
            start += pos + 1;
        }
        pending.drain(..start);
    }
    Ok(())
}

impl Provisioner {
    /// The `capture` step: the capture schema, fence, change table, trigger function
    /// and triggers on the source, in one transaction (all or none). Creating a trigger
    /// waits for the table's open writers; a short lock timeout keeps other tenants of
    /// a pooled table from queueing behind it (the step is retried).
    pub(in crate::engine) async fn move_capture(&self, mv: &Move) -> Result<(), Error> {
        let (_, mut owner) = self.end_conn(&mv.from, false).await?;
        let s = quote_ident(&capture_schema(mv));
        let tables = Self::move_tables(&owner, &mv.from).await?;
        let tenant = quote_literal(&mv.tenant.to_string());
        let mut sql = format!(
            "SET LOCAL lock_timeout = '5s';
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.fence (
                 one boolean PRIMARY KEY DEFAULT true CHECK (one),
                 state text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'moved')));
             INSERT INTO {s}.fence DEFAULT VALUES ON CONFLICT DO NOTHING;
             CREATE TABLE IF NOT EXISTS {s}.changes (
                 seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                 tbl text NOT NULL,
                 op \"char\" NOT NULL,
                 old_row jsonb,
                 new_row jsonb);
             CREATE OR REPLACE FUNCTION {s}.capture() RETURNS trigger
             LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
             BEGIN
                 IF (SELECT f.state FROM {s}.fence f FOR SHARE) <> 'open' THEN
                     RAISE EXCEPTION 'tenancy: tenant % has moved to another placement; retry the transaction', {tenant}
                         USING ERRCODE = '40001';
                 END IF;
                 INSERT INTO {s}.changes (tbl, op, old_row, new_row)
                 VALUES (TG_ARGV[0], left(TG_OP, 1),
                         CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) - 'tenant_id' END,
                         CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) - 'tenant_id' END);
                 RETURN NULL;
             END
             $fn$;
             REVOKE ALL ON FUNCTION {s}.capture() FROM PUBLIC;"
        );
        let trigger = quote_ident(&capture_schema(mv));
        let trigger_d = quote_ident(&format!("{}_d", capture_schema(mv)));
        for t in &tables {
            let q = qualified(&mv.from, t);
            let label = quote_literal(&t.label());
            sql.push_str(&format!(
                "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE ON {q} FOR EACH ROW
                     WHEN (NEW.tenant_id = {tenant}) EXECUTE FUNCTION {s}.capture({label});
                 CREATE OR REPLACE TRIGGER {trigger_d} AFTER DELETE ON {q} FOR EACH ROW
                     WHEN (OLD.tenant_id = {tenant}) EXECUTE FUNCTION {s}.capture({label});"
            ));
        }
        let t = owner
            .transaction()
            .await
            .map_err(Error::db("starting the capture"))?;
        t.batch_execute(&sql)
            .await
            .map_err(Error::db("installing the change capture"))?;
        t.commit()
            .await
            .map_err(Error::db("committing the change capture"))?;
        Ok(())
    }

    /// The `snapshot` step: the tenant's rows of the source, read in one REPEATABLE
    /// READ transaction (as the cluster admin, `WHERE tenant_id = …`: consistent across
    /// tables, so foreign keys hold in the copy), loaded into the target in one
    /// transaction of the tenant's own (its context, row-level security forced) that
    /// first empties the target's tables (a re-run step starts over). The snapshot's
    /// `pg_snapshot` is recorded: catch-up skips the changes it already shows.
    pub(in crate::engine) async fn move_snapshot(
        &self,
        tx: &Transaction<'_>,
        mv: &Move,
    ) -> Result<(), Error> {
        let (_, src) = self.end_conn(&mv.from, true).await?;
        // Ended by closing the connection (it only reads).
        src.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(Error::db("starting the snapshot"))?;
        let snap: String = src
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(Error::db("reading the snapshot"))?
            .get(0);
        let tables = Self::move_tables(&src, &mv.from).await?;
        let pool = self.target_pool(&mv.to).await?;
        let mut target = self.target_tx(&pool, mv).await?;
        for t in tables.iter().rev() {
            let sql = format!("DELETE FROM {}", qualified(&mv.to, t));
            target.execute(sql.as_str(), &[]).await?;
        }
        for t in &tables {
            let sql = format!(
                "COPY (SELECT (to_jsonb(r) - 'tenant_id')::text FROM {} r WHERE r.tenant_id = {}) TO STDOUT",
                qualified(&mv.from, t),
                quote_literal(&mv.tenant.to_string())
            );
            let insert = t.upsert(&qualified(&mv.to, t));
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut bytes = 0usize;
            let mut batches: Vec<String> = Vec::new();
            copy_lines(&src, &sql, &format!("copying table {}", t.name), |row| {
                bytes += row.len();
                batch.push(row);
                if bytes >= 256 * 1024 {
                    batches.push(json_array(&batch));
                    batch.clear();
                    bytes = 0;
                }
                Ok(())
            })
            .await?;
            if !batch.is_empty() {
                batches.push(json_array(&batch));
            }
            for b in &batches {
                target.execute(insert.as_str(), &[&b.as_str()]).await?;
            }
        }
        target.commit().await?;
        drop(src);
        catalog::set_move_snapshot(tx, mv.workflow, &snap).await?;
        Ok(())
    }
}

/// A JSON array of rows given as JSON texts.
fn json_array(rows: &[Vec<u8>]) -> String {
    let mut s = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    s.push('[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&String::from_utf8_lossy(r));
    }
    s.push(']');
    s
}
