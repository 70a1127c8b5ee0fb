//! The cutover: the held window, the fence and the catalog switch.
//!
//! Everything that does not depend on the last writes happens before the window opens:
//! the bulk of the catch-up and the full verification, rounds of catch-up and comparison
//! of what changed meanwhile, every connection the window uses (source, fence, target,
//! the target's owner and admin for its sequences, the catalog), the target's sequences
//! found, and the target announced so routers open connections to it. Inside the window:
//! the drain, the last catch-up (the fence stops new changes, so no round re-reads an
//! empty change table), the comparison of the rows it touched, the sequences raised, the
//! catalog's statements (uncommitted), then the fence's commit; the step's transaction
//! commits right after and routers are woken by its notification.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tenancy_catalog::{self as catalog, Move, MoveStatus, Tenant, Workflow};
use tenancy_conn::{quote_ident, quote_literal};
use tokio_postgres::{Client, Transaction};

use super::catch_up::{Touched, CATCH_UP_BATCH};
use super::{capture_schema, qualified, MoveTable};
use crate::engine::Provisioner;
use crate::{AppMigrations, Error};

/// Rows changed since the last comparison below which the cutover stops comparing
/// before the window and opens it: the window then catches up and compares about as
/// many.
const HELD_ROWS: usize = 50;

/// How long the cutover keeps catching up and comparing before the window (writers
/// faster than the catch-up still get their cutover, only a longer one).
const BEFORE_HOLD_LIMIT: Duration = Duration::from_secs(10);

/// One sequence of the target behind a column of a moved table.
#[derive(Debug)]
struct TargetSequence {
    /// The sequence (`schema.name`, as `pg_get_serial_sequence` gives it).
    sequence: String,
    /// The table, qualified at the target.
    table: String,
    /// The column it fills.
    column: String,
}

/// The target's connections for raising its sequences, opened before the window, and its
/// sequences.
struct Sequences {
    owner: Client,
    admin: Client,
    found: Vec<TargetSequence>,
}

impl Provisioner {
    /// The `cutover` step. Catches up and verifies every table in full while the tenant
    /// keeps writing, catches up and compares the rows changed meanwhile until few are
    /// left, then opens the move's cutover window (routers wait), fences the source
    /// (waiting, at most the configured drain time, for the transactions that wrote),
    /// catches up for the last time, verifies the rows changed since the last comparison,
    /// raises the target's sequences, writes the catalog switch into the step's
    /// transaction and commits the fence (`moved`: later writes to the old placement
    /// fail); the step's transaction commits next. A failure before the fence commits
    /// rolls the fence back and closes the window: the tenant goes on from the old
    /// placement. A verification mismatch fails the move for good (it is rolled back); a
    /// drain timeout is retried.
    pub(in crate::engine) async fn move_cutover(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
    ) -> Result<(), Error> {
        let mv = self.the_move(tx, wf).await?;
        if mv.status != MoveStatus::Copying {
            return Ok(());
        }
        let settings = self.inner.cfg.moves;
        let step_started = Instant::now();
        let catalog_conn = self.catalog_conn().await?;
        // Routers open connections to the target while the comparisons below run.
        catalog::announce_move_target(&*catalog_conn, mv.workflow).await?;
        let s = quote_ident(&capture_schema(&mv));
        let (_, source) = self.end_conn(&mv.from, false).await?;
        let (_, mut fence) = self.end_conn(&mv.from, false).await?;
        let (_, admin) = self.end_conn(&mv.from, true).await?;
        let tables = Self::move_tables(&source, &mv.from).await?;
        let pool = self.target_pool(&mv.to).await?;
        let sequences = self.target_sequences(&mv, &tables).await?;
        let app = self.fleet_app(tx).await?;
        // The bulk first, while writes still flow.
        let mut touched = Touched::default();
        while self
            .catch_up_round(&mv, &source, &tables, &pool, &mut touched, true)
            .await?
            >= CATCH_UP_BATCH as usize
        {}
        let mut diff = self
            .move_verify_at_snapshot(&mv, &source, &admin, &tables, &pool, None)
            .await?;
        // What was written during each comparison, caught up and compared again, until
        // little is left for the held window, or a round leaves no fewer than the one
        // before (the writers' pace: more rounds would not shorten the window).
        let started = Instant::now();
        let mut rounds = 0u32;
        let mut before = usize::MAX;
        while diff.is_none() {
            rounds += 1;
            touched = Touched::default();
            while self
                .catch_up_round(&mv, &source, &tables, &pool, &mut touched, true)
                .await?
                >= CATCH_UP_BATCH as usize
                && started.elapsed() < BEFORE_HOLD_LIMIT
            {}
            diff = self
                .move_verify_at_snapshot(&mv, &source, &admin, &tables, &pool, Some(&mut touched))
                .await?;
            if touched.len() <= HELD_ROWS
                || touched.len() >= before
                || started.elapsed() > BEFORE_HOLD_LIMIT
            {
                break;
            }
            before = touched.len();
        }
        let mut timing = serde_json::Map::new();
        let ms = |d: Duration| serde_json::json!((d.as_secs_f64() * 1e4).round() / 10.0);
        timing.insert("before_hold_ms".into(), ms(step_started.elapsed()));
        timing.insert("before_hold_rounds".into(), rounds.into());
        timing.insert("before_hold_last_rows".into(), touched.len().into());
        touched = Touched::default();
        let opening = Instant::now();
        if diff.is_none() {
            catalog::set_cutover(&*catalog_conn, mv.workflow, Some(settings.cutover_wait)).await?;
        }
        let held = Instant::now();
        timing.insert("window_opening_ms".into(), ms(opening.elapsed()));
        timing.insert(
            "held_at_unix_ms".into(),
            serde_json::json!(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)),
        );
        // Set once the switch is in the step's transaction, which then holds the move's
        // row: the window cannot be closed from another connection until it ends.
        let mut switch_written = false;
        let result: Result<Option<String>, Error> = async {
            if let Some(diff) = diff.take() {
                return Ok(Some(diff));
            }
            let f = fence
                .transaction()
                .await
                .map_err(Error::db("starting the fence"))?;
            f.batch_execute(&format!(
                "SET LOCAL lock_timeout = {}; UPDATE {s}.fence SET state = 'moved'",
                quote_literal(&format!("{}ms", settings.drain_timeout.as_millis().max(1)))
            ))
            .await
            .map_err(Error::db("fencing the source (draining its writers)"))?;
            timing.insert("drained_ms".into(), ms(held.elapsed()));
            // The fence holds every writer: the change table only shrinks from here, and
            // a round that finds fewer than a batch found the last of it.
            while self
                .catch_up_round(&mv, &source, &tables, &pool, &mut touched, false)
                .await?
                >= CATCH_UP_BATCH as usize
            {}
            timing.insert("caught_up_ms".into(), ms(held.elapsed()));
            timing.insert("caught_up_rows".into(), touched.len().into());
            if let Some(diff) = self
                .move_verify(&mv, &admin, &tables, &pool, Some(&touched))
                .await?
            {
                f.rollback().await.map_err(Error::db("lifting the fence"))?;
                return Ok(Some(diff));
            }
            timing.insert("verified_ms".into(), ms(held.elapsed()));
            timing.insert("verified_rows".into(), touched.len().into());
            self.raise_sequences(&mv, &sequences).await?;
            timing.insert("sequences_ms".into(), ms(held.elapsed()));
            // The catalog's switch, uncommitted: it commits with the step, after the
            // fence; a failure before then drops it with the step's transaction.
            timing.insert("switching_ms".into(), ms(held.elapsed()));
            switch_written = true;
            self.switch_catalog(tx, wf, &mv, tenant, &app, std::mem::take(&mut timing))
                .await?;
            f.commit()
                .await
                .map_err(Error::db("committing the fence"))?;
            Ok(None)
        }
        .await;
        match result {
            Ok(None) => {}
            Ok(Some(diff)) => {
                catalog::set_cutover(&*catalog_conn, mv.workflow, None).await?;
                return Err(Error::NotPossible(format!(
                    "verification failed, the move is undone and the tenant stays where it was: {diff}"
                )));
            }
            Err(e) => {
                drop(fence);
                if switch_written {
                    // The window ends at its deadline; the step is retried.
                    tracing::warn!(tenant_id = %mv.tenant, error = %e,
                        "the cutover failed after the catalog switch was written; its window ends at its deadline");
                } else {
                    let _ = catalog::set_cutover(&*catalog_conn, mv.workflow, None).await;
                }
                return Err(e);
            }
        }
        tracing::info!(tenant_id = %mv.tenant, from = %mv.from.placement, to = %mv.to.placement,
            from_region = %mv.from.region, to_region = %mv.to.region, "tenant moved");
        Ok(())
    }

    /// The catalog's part of the switch, in the step's transaction: the tenant pointed at
    /// the new placement (its window closed, a `moved` event with `timing`), and the
    /// storage it is provisioned with recorded.
    async fn switch_catalog(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        mv: &Move,
        tenant: &Tenant,
        app: &AppMigrations,
        timing: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        catalog::switch_placement(
            tx,
            mv,
            &wf.actor,
            self.inner.cfg.moves.keep_source,
            serde_json::Value::Object(timing),
        )
        .await?;
        let mut moved = tenant.clone();
        moved.placement = mv.to.placement;
        moved.cluster_id = mv.to.cluster;
        moved.schema_name = mv.to.schema.clone();
        moved.database_name = mv.to.database.clone();
        catalog::record_provisioned(tx, &moved, &app.sources()).await?;
        Ok(())
    }

    /// The target's identity and serial sequences behind the moved tables' columns (one
    /// query), with the connections that raise them.
    async fn target_sequences(&self, mv: &Move, tables: &[MoveTable]) -> Result<Sequences, Error> {
        let (_, owner) = self.end_conn(&mv.to, false).await?;
        let (_, admin) = self.end_conn(&mv.to, true).await?;
        let (mut names, mut columns) = (Vec::new(), Vec::new());
        for t in tables {
            for c in &t.columns {
                names.push(qualified(&mv.to, t));
                columns.push(c.clone());
            }
        }
        let found = owner
            .query(
                "SELECT t, c, pg_get_serial_sequence(t, c) FROM unnest($1::text[], $2::text[]) AS x(t, c)
                  WHERE pg_get_serial_sequence(t, c) IS NOT NULL",
                &[&names, &columns],
            )
            .await
            .map_err(Error::db("finding sequences"))?
            .iter()
            .map(|r| TargetSequence {
                table: r.get(0),
                column: r.get(1),
                sequence: r.get(2),
            })
            .collect();
        Ok(Sequences {
            owner,
            admin,
            found,
        })
    }

    /// Raises the target's sequences past the moved keys: the largest keys read in one
    /// query as the admin, the sequences raised in one as the owner (only ever raised:
    /// pooled tables share their sequences).
    async fn raise_sequences(&self, mv: &Move, seqs: &Sequences) -> Result<(), Error> {
        if seqs.found.is_empty() {
            return Ok(());
        }
        let max_sql = seqs
            .found
            .iter()
            .map(|s| {
                format!(
                    "(SELECT max({})::bigint FROM {} WHERE tenant_id = $1)",
                    quote_ident(&s.column),
                    s.table
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let maxes: Vec<Option<i64>> = seqs
            .admin
            .query_one(
                &format!("SELECT ARRAY[{max_sql}]::bigint[]"),
                &[&mv.tenant.as_uuid()],
            )
            .await
            .map_err(Error::db("reading the largest keys"))?
            .get(0);
        let names: Vec<&str> = seqs.found.iter().map(|s| s.sequence.as_str()).collect();
        seqs.owner
            .execute(
                "SELECT setval(s.seq, x.m) FROM unnest($1::text[], $2::bigint[]) AS x(name, m),
                        LATERAL (SELECT x.name::regclass AS seq) s, pg_sequences p
                  WHERE x.m IS NOT NULL
                    AND (quote_ident(p.schemaname) || '.' || quote_ident(p.sequencename))::regclass = s.seq
                    AND coalesce(p.last_value, 0) < x.m",
                &[&names, &maxes],
            )
            .await
            .map_err(Error::db("raising sequences"))?;
        Ok(())
    }
}
