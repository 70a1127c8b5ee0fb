//! Catch-up: the captured changes applied to the target.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tenancy_catalog::Move;
use tenancy_conn::quote_ident;
use tenancy_sdk::{TenantPool, TenantTx};
use tokio_postgres::Client;

use super::{capture_schema, qualified, MoveTable};
use crate::engine::Provisioner;
use crate::Error;

/// Rows of changes applied per round of catch-up.
pub(super) const CATCH_UP_BATCH: i64 = 2000;

impl Provisioner {
    /// The source's changes not in the move's snapshot, oldest first (at most `limit`),
    /// as `client` sees them.
    pub(super) async fn read_changes(
        mv: &Move,
        client: &Client,
        limit: Option<i64>,
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let s = quote_ident(&capture_schema(mv));
        let snap = mv.snapshot.clone().ok_or_else(|| {
            Error::NotPossible(format!("move {} has no snapshot yet", mv.workflow))
        })?;
        client
            .query(
                &format!(
                    "SELECT seq, tbl, op::text, old_row::text, new_row::text FROM {s}.changes
                      WHERE NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot) ORDER BY seq LIMIT $2"
                ),
                &[&snap, &limit],
            )
            .await
            .map_err(Error::db("reading changes"))
    }

    /// Applies changes (as [`Self::read_changes`] returns them) to the target in `seq`
    /// order in one tenant transaction, noting the keys they touch, and removes them from
    /// the source's change table.
    pub(super) async fn apply_changes(
        &self,
        mv: &Move,
        source: &Client,
        tables: &[MoveTable],
        pool: &TenantPool,
        rows: &[tokio_postgres::Row],
        touched: &mut Touched,
    ) -> Result<(), Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut target = self.target_tx(pool, mv).await?;
        let mut seqs: Vec<i64> = Vec::with_capacity(rows.len());
        // Consecutive row operations of one kind on one table with distinct keys go in
        // one statement: their order does not matter among themselves.
        let mut batch = Batch::default();
        for r in rows {
            seqs.push(r.get(0));
            let tbl: String = r.get(1);
            let t = tables
                .iter()
                .position(|t| t.label() == tbl)
                .ok_or_else(|| {
                    Error::NotPossible(format!(
                        "a change of table {tbl}, which is not a tenant table"
                    ))
                })?;
            let op: String = r.get(2);
            let old: Option<String> = r.get(3);
            let new: Option<String> = r.get(4);
            let new_key = new.as_deref().and_then(|n| key_of(&tables[t], n));
            if let Some(old) = old.filter(|_| op != "I") {
                // An update that keeps the key is an upsert; one that changes it, or a
                // delete, removes the old key first.
                let old_key = key_of(&tables[t], &old);
                if op == "D" || new_key != old_key {
                    batch
                        .push(&mut target, mv, tables, t, false, old, old_key.clone())
                        .await?;
                }
                touched.note(&tables[t], old_key);
            }
            if let Some(new) = new {
                batch
                    .push(&mut target, mv, tables, t, true, new, new_key.clone())
                    .await?;
                touched.note(&tables[t], new_key);
            }
        }
        batch.flush(&mut target, mv, tables).await?;
        target.commit().await?;
        let s = quote_ident(&capture_schema(mv));
        source
            .execute(
                &format!("DELETE FROM {s}.changes WHERE seq = ANY($1)"),
                &[&seqs],
            )
            .await
            .map_err(Error::db("removing applied changes"))?;
        Ok(())
    }

    /// One round of catch-up: the source's visible changes not in the snapshot (at most
    /// [`CATCH_UP_BATCH`]), applied to the target and removed from the change table.
    /// With `clear_seen`, the changes the snapshot shows (already in the copy, never
    /// applied) are removed first; without, they stay until a later round (the held
    /// window skips that statement: nothing it removes matters there). Returns how many
    /// were applied.
    pub(super) async fn catch_up_round(
        &self,
        mv: &Move,
        source: &Client,
        tables: &[MoveTable],
        pool: &TenantPool,
        touched: &mut Touched,
        clear_seen: bool,
    ) -> Result<usize, Error> {
        if clear_seen {
            let s = quote_ident(&capture_schema(mv));
            source
                .execute(
                    &format!(
                        "DELETE FROM {s}.changes WHERE pg_visible_in_snapshot(xid, $1::text::pg_snapshot)"
                    ),
                    &[&mv.snapshot],
                )
                .await
                .map_err(Error::db("skipping changes in the snapshot"))?;
        }
        let rows = Self::read_changes(mv, source, Some(CATCH_UP_BATCH)).await?;
        self.apply_changes(mv, source, tables, pool, &rows, touched)
            .await?;
        Ok(rows.len())
    }

    /// The `catch_up` step: rounds of catch-up until a round finds little left (the
    /// cutover's final catch-up is then short), or for at most 30 s.
    pub(in crate::engine) async fn move_catch_up(&self, mv: &Move) -> Result<(), Error> {
        let (_, source) = self.end_conn(&mv.from, false).await?;
        let tables = Self::move_tables(&source, &mv.from).await?;
        let pool = self.target_pool(&mv.to).await?;
        let started = Instant::now();
        loop {
            let n = self
                .catch_up_round(mv, &source, &tables, &pool, &mut Touched::default(), true)
                .await?;
            if n < CATCH_UP_BATCH as usize / 4 || started.elapsed() > Duration::from_secs(30) {
                return Ok(());
            }
        }
    }
}

/// The primary key of a row given as JSON text, as a JSON object of the key columns (to
/// see whether an update changed it, and to find the row again).
fn key_of(t: &MoveTable, row: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(row).ok()?;
    let key: serde_json::Map<String, serde_json::Value> = t
        .key
        .iter()
        .map(|k| {
            (
                k.clone(),
                v.get(k).cloned().unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    serde_json::to_string(&key).ok()
}

/// Row operations of one kind (upserts or deletes) on one table with distinct keys,
/// waiting to be applied in one statement.
#[derive(Debug, Default)]
struct Batch {
    /// The table (index into the move's tables) and whether the rows are upserted.
    what: Option<(usize, bool)>,
    rows: Vec<String>,
    keys: BTreeSet<String>,
}

impl Batch {
    /// Adds a row operation, applying what is batched first when it cannot join.
    #[allow(clippy::too_many_arguments)]
    async fn push(
        &mut self,
        target: &mut TenantTx,
        mv: &Move,
        tables: &[MoveTable],
        table: usize,
        upsert: bool,
        row: String,
        key: Option<String>,
    ) -> Result<(), Error> {
        let joins = self.what == Some((table, upsert))
            && key.as_ref().is_some_and(|k| !self.keys.contains(k))
            && self.rows.len() < CATCH_UP_BATCH as usize;
        if !joins {
            self.flush(target, mv, tables).await?;
            self.what = Some((table, upsert));
        }
        self.rows.push(row);
        if let Some(k) = key {
            self.keys.insert(k);
        }
        Ok(())
    }

    /// Applies what is batched.
    async fn flush(
        &mut self,
        target: &mut TenantTx,
        mv: &Move,
        tables: &[MoveTable],
    ) -> Result<(), Error> {
        let Some((table, upsert)) = self.what.take() else {
            return Ok(());
        };
        let t = &tables[table];
        let q = qualified(&mv.to, t);
        let sql = if upsert { t.upsert(&q) } else { t.delete(&q) };
        let arr = format!("[{}]", self.rows.join(","));
        target.execute(sql.as_str(), &[&arr.as_str()]).await?;
        self.rows.clear();
        self.keys.clear();
        Ok(())
    }
}

/// The keys, table by table, of the rows that changes applied since a point touched.
#[derive(Debug, Default)]
pub(super) struct Touched(HashMap<String, BTreeSet<String>>);

impl Touched {
    pub(super) fn note(&mut self, t: &MoveTable, key: Option<String>) {
        if let Some(k) = key {
            self.0.entry(t.label()).or_default().insert(k);
        }
    }

    /// The keys of table `t` as a JSON array of objects, if any were touched.
    pub(super) fn keys(&self, t: &MoveTable) -> Option<String> {
        let keys = self.0.get(&t.label())?;
        let mut s = String::from("[");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
        }
        s.push(']');
        Some(s)
    }

    pub(super) fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }
}
