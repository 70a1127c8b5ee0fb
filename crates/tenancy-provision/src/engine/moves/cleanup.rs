//! Undoing a move, and dropping the old copy of a switched one.

use tenancy_catalog::{self as catalog, Move, MoveEnd, MoveStatus, Workflow};
use tenancy_conn::quote_ident;
use tenancy_core::Placement;
use tokio_postgres::Transaction;

use super::capture_schema;
use crate::conn::{config_for, connect};
use crate::engine::Provisioner;
use crate::Error;

impl Provisioner {
    /// Compensation of a move that failed for good: the capture removed from the source
    /// (which lifts a fence), the cutover window closed, the target's storage dropped
    /// (a pooled target: the tenant's rows there), the move marked rolled back. Nothing
    /// happens to a move that already switched.
    pub(in crate::engine) async fn move_roll_back(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
    ) -> Result<(), Error> {
        let Some(mv) = catalog::get_move(tx, wf.id).await? else {
            return Ok(());
        };
        if mv.status != MoveStatus::Copying {
            return Ok(());
        }
        catalog::set_cutover(tx, mv.workflow, None).await?;
        self.drop_capture(&mv).await?;
        self.drop_end(&mv, &mv.to).await?;
        catalog::finish_move(tx, mv.workflow, MoveStatus::RolledBack).await?;
        Ok(())
    }

    async fn drop_capture(&self, mv: &Move) -> Result<(), Error> {
        let (_, owner) = self.end_conn(&mv.from, false).await?;
        owner
            .batch_execute(&format!(
                "SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&capture_schema(mv))
            ))
            .await
            .map_err(Error::db("removing the change capture"))
    }

    /// Drops one end's copy of the tenant: its schema, its database, or its rows in the
    /// shared tables.
    async fn drop_end(&self, mv: &Move, end: &MoveEnd) -> Result<(), Error> {
        let cluster = self.cluster(end.cluster).await?;
        match end.placement {
            Placement::Pooled => {
                let pool = self.runtime_pool(&cluster)?;
                crate::storage::purge_pooled_rows(&pool, mv.tenant).await?;
            }
            Placement::Schema => {
                if let Some(schema) = &end.schema {
                    let (_, owner) = self.end_conn(end, false).await?;
                    crate::storage::drop_schema(&owner, schema).await?;
                }
            }
            Placement::Dedicated => {
                if let Some(db) = &end.database {
                    let admin = connect(&config_for(
                        &cluster,
                        &self.inner.access.admin,
                        "postgres",
                        &self.inner.access.tls,
                    ))
                    .await?;
                    crate::storage::drop_database(&admin, db).await?;
                }
            }
        }
        Ok(())
    }

    /// Drops the old copies of moves switched longer ago than the configured keep time:
    /// the capture (and its fence) then the old schema, database or pooled rows. A copy
    /// the tenant lives in again (moved back since) is left alone. Returns how many
    /// moves were finished.
    pub async fn drop_moved_sources(&self) -> Result<usize, Error> {
        let conn = self.catalog_conn().await?;
        let due = catalog::moves_to_drop(&*conn, 100).await?;
        let mut done = 0;
        for mv in due {
            let t = catalog::get_tenant(&conn, mv.tenant).await?;
            let live = t.cluster_id == mv.from.cluster
                && t.placement == mv.from.placement
                && t.schema_name == mv.from.schema
                && t.database_name == mv.from.database;
            self.drop_capture(&mv).await?;
            if !live {
                self.drop_end(&mv, &mv.from).await?;
            }
            catalog::finish_move(&*conn, mv.workflow, MoveStatus::SourceDropped).await?;
            done += 1;
        }
        Ok(done)
    }
}
