//! The cutover: the held window, the fence and the catalog switch.

use std::time::{Duration, Instant};

use tenancy_catalog::{self as catalog, Move, MoveStatus, Tenant, Workflow};
use tenancy_conn::{quote_ident, quote_literal};
use tokio_postgres::Transaction;

use super::catch_up::{Touched, CATCH_UP_BATCH};
use super::{capture_schema, qualified, MoveTable};
use crate::engine::Provisioner;
use crate::Error;

impl Provisioner {
    /// The `cutover` step. Catches up and verifies every table in full while the tenant
    /// keeps writing, catches up again, then opens the move's cutover window (routers
    /// wait), fences the source (waiting, at most the configured drain time, for the
    /// transactions that wrote), catches up for the last time, verifies the rows changed
    /// since the full verification, commits the fence (`moved`: later writes to the old
    /// placement fail), raises the target's sequences and switches the catalog (the
    /// step's transaction). A failure before the fence commits rolls the fence back and
    /// closes the window: the tenant goes on from the old placement. A verification
    /// mismatch fails the move for good (it is rolled back); a drain timeout is retried.
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
        let s = quote_ident(&capture_schema(&mv));
        let (_, source) = self.end_conn(&mv.from, false).await?;
        let (_, mut fence) = self.end_conn(&mv.from, false).await?;
        let (_, admin) = self.end_conn(&mv.from, true).await?;
        let tables = Self::move_tables(&source, &mv.from).await?;
        let pool = self.target_pool(&mv.to).await?;
        // The bulk first, while writes still flow.
        let mut touched = Touched::default();
        while self
            .catch_up_round(&mv, &source, &tables, &pool, &mut touched)
            .await?
            >= CATCH_UP_BATCH as usize
        {}
        let mut diff = self
            .move_verify_at_snapshot(&mv, &source, &admin, &tables, &pool, None)
            .await?;
        // What was written during each comparison, caught up and compared again, until
        // little is left for the held window (bounded: writers faster than the catch-up
        // still get their cutover, only a longer one).
        let started = Instant::now();
        let mut rounds = 0u32;
        while diff.is_none() {
            rounds += 1;
            touched = Touched::default();
            while self
                .catch_up_round(&mv, &source, &tables, &pool, &mut touched)
                .await?
                >= CATCH_UP_BATCH as usize
                && started.elapsed() < Duration::from_secs(10)
            {}
            diff = self
                .move_verify_at_snapshot(&mv, &source, &admin, &tables, &pool, Some(&mut touched))
                .await?;
            if touched.len() <= CATCH_UP_BATCH as usize / 4
                || started.elapsed() > Duration::from_secs(10)
            {
                break;
            }
        }
        let mut timing = serde_json::Map::new();
        let ms = |d: Duration| serde_json::json!((d.as_secs_f64() * 1e4).round() / 10.0);
        timing.insert("before_hold_ms".into(), ms(step_started.elapsed()));
        timing.insert("before_hold_rounds".into(), rounds.into());
        timing.insert("before_hold_last_rows".into(), touched.len().into());
        touched = Touched::default();
        let opening = Instant::now();
        if diff.is_none() {
            let conn = self.catalog_conn().await?;
            catalog::set_cutover(&*conn, mv.workflow, Some(settings.cutover_wait)).await?;
        }
        let held = Instant::now();
        timing.insert("window_opening_ms".into(), ms(opening.elapsed()));
        timing.insert(
            "held_at_unix_ms".into(),
            serde_json::json!(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0)),
        );
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
            while self
                .catch_up_round(&mv, &source, &tables, &pool, &mut touched)
                .await?
                > 0
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
            f.commit()
                .await
                .map_err(Error::db("committing the fence"))?;
            timing.insert("fenced_ms".into(), ms(held.elapsed()));
            Ok(None)
        }
        .await;
        match result {
            Ok(None) => {}
            Ok(Some(diff)) => {
                let conn = self.catalog_conn().await?;
                catalog::set_cutover(&*conn, mv.workflow, None).await?;
                return Err(Error::NotPossible(format!(
                    "verification failed, the move is undone and the tenant stays where it was: {diff}"
                )));
            }
            Err(e) => {
                drop(fence);
                if let Ok(conn) = self.catalog_conn().await {
                    let _ = catalog::set_cutover(&*conn, mv.workflow, None).await;
                }
                return Err(e);
            }
        }
        self.move_raise_sequences(&mv, &tables).await?;
        // Until the step's transaction commits: the catalog switch is the last of it.
        timing.insert("switching_ms".into(), ms(held.elapsed()));
        let app = self.fleet_app(tx).await?;
        timing.insert("switch_read_app_ms".into(), ms(held.elapsed()));
        catalog::switch_placement(
            tx,
            &mv,
            &wf.actor,
            settings.keep_source,
            serde_json::Value::Object(timing),
        )
        .await?;
        let mut moved = tenant.clone();
        moved.placement = mv.to.placement;
        moved.cluster_id = mv.to.cluster;
        moved.schema_name = mv.to.schema.clone();
        moved.database_name = mv.to.database.clone();
        catalog::record_provisioned(tx, &moved, &app.sources()).await?;
        tracing::info!(tenant_id = %mv.tenant, from = %mv.from.placement, to = %mv.to.placement,
            from_region = %mv.from.region, to_region = %mv.to.region, "tenant moved");
        Ok(())
    }

    /// Raises the target's identity and serial sequences past the moved keys (as the
    /// owner; only ever raises: pooled tables share their sequences).
    async fn move_raise_sequences(&self, mv: &Move, tables: &[MoveTable]) -> Result<(), Error> {
        let (_, owner) = self.end_conn(&mv.to, false).await?;
        let (_, admin) = self.end_conn(&mv.to, true).await?;
        for t in tables {
            let q = qualified(&mv.to, t);
            for c in &t.columns {
                let seq: Option<String> = owner
                    .query_one("SELECT pg_get_serial_sequence($1, $2)", &[&q, c])
                    .await
                    .map_err(Error::db("finding sequences"))?
                    .get(0);
                let Some(seq) = seq else { continue };
                let max: Option<i64> = admin
                    .query_one(
                        &format!(
                            "SELECT max({})::bigint FROM {q} WHERE tenant_id = $1",
                            quote_ident(c)
                        ),
                        &[&mv.tenant.as_uuid()],
                    )
                    .await
                    .map_err(Error::db("reading the largest key"))?
                    .get(0);
                let Some(max) = max else { continue };
                owner
                    .execute(
                        "SELECT setval(s.seq, $2) FROM (SELECT $1::text::regclass AS seq) s, pg_sequences p
                          WHERE (quote_ident(p.schemaname) || '.' || quote_ident(p.sequencename))::regclass = s.seq
                            AND coalesce(p.last_value, 0) < $2",
                        &[&seq, &max],
                    )
                    .await
                    .map_err(Error::db(format!("raising sequence {seq}")))?;
            }
        }
        Ok(())
    }
}
