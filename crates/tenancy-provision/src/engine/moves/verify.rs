//! Verification: counts and order-independent checksums of both ends.

use tenancy_catalog::Move;
use tenancy_conn::{quote_ident, quote_literal};
use tenancy_sdk::TenantPool;
use tenancy_transfer::format::RowChecksum;
use tokio_postgres::Client;

use super::catch_up::Touched;
use super::copy::copy_lines;
use super::{qualified, MoveTable};
use crate::engine::Provisioner;
use crate::Error;

impl Provisioner {
    /// Counts and checksums of the tenant's rows on both ends, table by table: the source
    /// as the admin (`WHERE tenant_id = …`), the target through the tenant's own
    /// transaction; every row (`only` `None`), or only the rows of the keys `only` lists.
    /// The first difference, in words.
    pub(super) async fn move_verify(
        &self,
        mv: &Move,
        source_admin: &Client,
        tables: &[MoveTable],
        pool: &TenantPool,
        only: Option<&Touched>,
    ) -> Result<Option<String>, Error> {
        let mut target = self.target_tx(pool, mv).await?;
        let tenant = quote_literal(&mv.tenant.to_string());
        for t in tables {
            let (src, dst) = (qualified(&mv.from, t), qualified(&mv.to, t));
            let (a, b) = match only {
                None => {
                    let what = format!("verifying table {}", t.name);
                    let a = copy_checksum(
                        source_admin,
                        &format!(
                            "COPY (SELECT (to_jsonb(r) - 'tenant_id')::text FROM {src} r WHERE r.tenant_id = {tenant}) TO STDOUT"
                        ),
                        &what,
                    )
                    .await?;
                    let b = copy_checksum(
                        target.client().await?,
                        &format!("COPY (SELECT (to_jsonb(r) - 'tenant_id')::text FROM {dst} r) TO STDOUT"),
                        &what,
                    )
                    .await?;
                    (a, b)
                }
                Some(touched) => {
                    let Some(keys) = touched.keys(t) else {
                        continue;
                    };
                    let pick = |q: &str| {
                        format!(
                            "SELECT (to_jsonb(r) - 'tenant_id')::text FROM {q} r
                              WHERE ({}) IN (SELECT {} FROM jsonb_populate_recordset(NULL::{q}, $1::text::jsonb))",
                            t.key.iter().map(|c| format!("r.{}", quote_ident(c))).collect::<Vec<_>>().join(", "),
                            t.key.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "),
                        )
                    };
                    // Both ends at once: they are different connections.
                    let (src_sql, dst_sql) = (
                        format!("{} AND r.tenant_id = {tenant}", pick(&src)),
                        pick(&dst),
                    );
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&keys];
                    let (a, b) = tokio::join!(
                        source_admin.query(src_sql.as_str(), &params),
                        target.query(dst_sql.as_str(), &params)
                    );
                    let a = a.map_err(Error::db(format!("verifying table {}", t.name)))?;
                    (row_checksum(&a), row_checksum(&b?))
                }
            };
            if a.rows != b.rows || a.hex() != b.hex() {
                let _ = target.rollback().await;
                return Ok(Some(format!(
                    "table {}: the source holds {} rows (checksum {}), the target {} rows (checksum {})",
                    t.name,
                    a.rows,
                    a.hex(),
                    b.rows,
                    b.hex()
                )));
            }
        }
        target.rollback().await?;
        Ok(None)
    }

    /// Brings the target to the source's state at one snapshot (the changes that snapshot
    /// shows, applied) and compares, while the tenant keeps writing: every row of every
    /// table (`since` `None`), or only the rows of the keys `since` holds (the rows
    /// changed since the last comparison; the changes applied here are added to it).
    pub(super) async fn move_verify_at_snapshot(
        &self,
        mv: &Move,
        source: &Client,
        source_admin: &Client,
        tables: &[MoveTable],
        pool: &TenantPool,
        since: Option<&mut Touched>,
    ) -> Result<Option<String>, Error> {
        source_admin
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(Error::db("starting the verification snapshot"))?;
        let result = async {
            let rows = Self::read_changes(mv, source_admin, None).await?;
            match since {
                None => {
                    self.apply_changes(mv, source, tables, pool, &rows, &mut Touched::default())
                        .await?;
                    self.move_verify(mv, source_admin, tables, pool, None).await
                }
                Some(touched) => {
                    self.apply_changes(mv, source, tables, pool, &rows, touched)
                        .await?;
                    self.move_verify(mv, source_admin, tables, pool, Some(touched))
                        .await
                }
            }
        }
        .await;
        source_admin
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::db("ending the verification snapshot"))?;
        result
    }
}

/// The checksum of rows of one text column.
fn row_checksum(rows: &[tokio_postgres::Row]) -> RowChecksum {
    let mut c = RowChecksum::default();
    for r in rows {
        c.add(r.get::<_, &str>(0).as_bytes());
    }
    c
}

/// The checksum of the lines a COPY … TO STDOUT of one text column returns.
async fn copy_checksum(client: &Client, sql: &str, what: &str) -> Result<RowChecksum, Error> {
    let mut c = RowChecksum::default();
    copy_lines(client, sql, what, |row| {
        c.add(&row);
        Ok(())
    })
    .await?;
    Ok(c)
}
