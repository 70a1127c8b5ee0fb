//! Online moves of a tenant between placements, clusters and regions.
//!
//! The change capture is our own, not logical replication: a trigger on each of the
//! source's tenant tables (filtered on the tenant's `tenant_id`) writes each row change
//! to a change table in a schema of the move's own on the source. Logical replication
//! would need `wal_level = logical`, a publication and a subscription per move (the
//! subscription created by a superuser on the target), and it cannot apply into a pooled
//! target through the tenant's row-level security; triggers work on every PostgreSQL
//! the SDK supports, for every pair of placements, and the same trigger fences the
//! source at cutover.
//!
//! The source schema `tenancy_move_<move id>` holds:
//! - `fence`: one row, `open` or `moved`. Every captured write takes it `FOR SHARE`, so
//!   the cutover's `UPDATE … SET state = 'moved'` waits for every transaction that
//!   wrote (the drain) and holds every new writer until it commits; after that a write
//!   to the old placement fails with SQLSTATE 40001 instead of being lost. A cutover
//!   that dies before its commit releases the lock with its connection: the tenant
//!   keeps writing to the old placement.
//! - `changes`: `(seq, xid, tbl, op, old_row, new_row)`; rows as JSON without
//!   `tenant_id`. The snapshot copy records its `pg_snapshot`: changes of transactions
//!   visible in it are already in the copy and are skipped; the others are applied in
//!   `seq` order (upserts by primary key, deletes by primary key) and removed.
//! - `capture()`: the trigger function (SECURITY DEFINER, owned by the owner role).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tenancy_catalog::{
    self as catalog, ClusterRecord, Move, MoveEnd, MoveStatus, Tenant, Workflow,
};
use tenancy_conn::{quote_ident, quote_literal};
use tenancy_core::{Placement, RegionId, TenantState};
use tenancy_sdk::{PoolOptions, TenantPool, TenantTx};
use tenancy_transfer::format::{copy_unescape, RowChecksum};
use tokio_postgres::{Client, Transaction};

use super::{Outcome, Provisioner};
use crate::conn::{config_for, connect};
use crate::storage::{database_name_for, schema_name_for};
use crate::Error;

/// Where a tenant is to move: a `move` workflow's input, as the API and the CLI queue it
/// (built with [`MoveRequest::parse`], which checks every field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The placement to move to.
    pub to: Placement,
    /// The cluster (by name) to move to; default: the tenant's cluster when the region
    /// stays, else an accepting cluster of the new region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The region to move to; default: the named cluster's, else the tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
}

/// A field of a move request that does not parse: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MoveRequestError {
    /// The field (`to`, `cluster`, `region`).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl MoveRequest {
    /// Checks and builds a request: `to` one of `pooled`, `schema`, `dedicated`; `cluster`
    /// a cluster name (`^[a-z][a-z0-9_-]{0,62}$`); `region` a region id.
    pub fn parse(
        to: &str,
        cluster: Option<&str>,
        region: Option<&str>,
    ) -> Result<MoveRequest, MoveRequestError> {
        let to = to.parse::<Placement>().map_err(|_| MoveRequestError {
            field: "to",
            message: "must be pooled, schema or dedicated".into(),
        })?;
        let cluster_ok = |c: &str| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_lowercase()
                && b.iter().all(|x| {
                    x.is_ascii_lowercase() || x.is_ascii_digit() || *x == b'_' || *x == b'-'
                })
        };
        if let Some(c) = cluster.filter(|c| !cluster_ok(c)) {
            return Err(MoveRequestError {
                field: "cluster",
                message: format!(
                    "{c:?} is not a cluster name: 1 to 63 characters from a-z, 0-9, '_' and '-', starting with a letter"
                ),
            });
        }
        let region = region
            .map(|r| {
                r.parse::<RegionId>().map_err(|e| MoveRequestError {
                    field: "region",
                    message: e.to_string(),
                })
            })
            .transpose()?;
        Ok(MoveRequest {
            to,
            cluster: cluster.map(str::to_owned),
            region,
        })
    }

    /// The workflow input.
    pub fn input(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Rows of changes applied per round of catch-up.
const CATCH_UP_BATCH: i64 = 2000;

/// A tenant table of the source, as the move copies it.
#[derive(Debug, Clone)]
struct MoveTable {
    /// Its schema in the shared layout (pooled and dedicated ends): its own schema when
    /// the source is pooled or dedicated, `public` when the source is a tenant schema.
    schema: String,
    /// Its name (the same in the source and the target: the same migrations made them).
    name: String,
    /// Columns other than `tenant_id` that take values (generated columns left out).
    columns: Vec<String>,
    /// Its primary key's columns other than `tenant_id`.
    key: Vec<String>,
    /// Its primary key's columns (the upsert's conflict target; `tenant_id` among them
    /// in pooled tables, filled by the tenant's context).
    conflict: Vec<String>,
}

impl MoveTable {
    /// How the change capture names the table (`schema.name` in the shared layout).
    fn label(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    fn cols(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The upsert of a JSON array of rows (`$1`) into `qualified`.
    fn upsert(&self, qualified: &str) -> String {
        let cols = self.cols();
        let set = self
            .columns
            .iter()
            .filter(|c| !self.key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect::<Vec<_>>();
        let conflict = self
            .conflict
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let action = if set.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", set.join(", "))
        };
        format!(
            "INSERT INTO {qualified} ({cols}) OVERRIDING SYSTEM VALUE
             SELECT {cols} FROM jsonb_populate_recordset(NULL::{qualified}, $1::text::jsonb)
             ON CONFLICT ({conflict}) {action}"
        )
    }

    /// The delete of the rows whose keys a JSON array (`$1`) holds.
    fn delete(&self, qualified: &str) -> String {
        let key = self
            .key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "DELETE FROM {qualified} WHERE ({key}) IN
               (SELECT {key} FROM jsonb_populate_recordset(NULL::{qualified}, $1::text::jsonb))"
        )
    }
}

/// The schema of a move's capture objects on the source.
fn capture_schema(mv: &Move) -> String {
    format!("tenancy_move_{}", mv.workflow.simple())
}

/// The tenant's own schema when `end` is a schema placement (`None`: the tenant tables
/// are in the shared layout's schemas).
fn tenant_schema(end: &MoveEnd) -> Option<&str> {
    match end.placement {
        Placement::Schema => Some(end.schema.as_deref().unwrap_or("public")),
        Placement::Pooled | Placement::Dedicated => None,
    }
}

/// Table `t` at one end: in the tenant's schema (schema placement), else in its own
/// schema of the shared layout.
fn qualified(end: &MoveEnd, t: &MoveTable) -> String {
    let schema = tenant_schema(end).unwrap_or(&t.schema);
    format!("{}.{}", quote_ident(schema), quote_ident(&t.name))
}

/// Reads a COPY … TO STDOUT of one text column, calling `row` with each unescaped line.
async fn copy_lines(
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
    /// The `residency` step: refuses a target region outside the tenant's residency
    /// policy, chooses the target cluster and names, and records the move. Nothing is
    /// created or copied yet.
    pub(super) async fn move_plan(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
        tenant: &Tenant,
    ) -> Result<Outcome, Error> {
        if catalog::get_move(tx, wf.id).await?.is_some() {
            return Ok(Outcome::Next);
        }
        if tenant.state != TenantState::Active {
            return Ok(Outcome::Cancel(format!(
                "only an active tenant can be moved; this one is {}",
                tenant.state
            )));
        }
        let input: MoveRequest = serde_json::from_value(wf.input.clone()).map_err(|e| {
            Error::NotPossible(format!(
                "workflow {} has an unreadable move input: {e}",
                wf.id
            ))
        })?;
        let clusters = {
            let conn = self.catalog_conn().await?;
            catalog::list_clusters(&conn).await?
        };
        let named =
            match &input.cluster {
                Some(name) => Some(clusters.iter().find(|c| &c.name == name).ok_or_else(|| {
                    Error::NotPossible(format!("cluster {name:?} does not exist"))
                })?),
                None => None,
            };
        let region = input
            .region
            .clone()
            .or_else(|| named.map(|c| c.region.clone()))
            .unwrap_or_else(|| tenant.region.clone());
        let allowed = catalog::residency(tx, tenant.id).await?;
        if !allowed.contains(&region) {
            let list: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            return Err(Error::NotPossible(format!(
                "region {region} is outside tenant {}'s residency policy ({}); nothing was copied",
                tenant.id,
                list.join(", ")
            )));
        }
        let cluster = match named {
            Some(c) if c.region != region => {
                return Err(Error::NotPossible(format!(
                    "cluster {} is in region {}, not {region}",
                    c.name, c.region
                )))
            }
            Some(c) => c.clone(),
            None if region == tenant.region => self.cluster(tenant.cluster_id).await?,
            None => clusters
                .iter()
                .find(|c| c.region == region && c.accepting)
                .cloned()
                .ok_or_else(|| {
                    Error::NotPossible(format!("no cluster in region {region} accepts tenants"))
                })?,
        };
        if input.to == tenant.placement && cluster.id == tenant.cluster_id {
            return Ok(Outcome::Cancel(format!(
                "tenant {} is already {} on cluster {}",
                tenant.id, tenant.placement, cluster.name
            )));
        }
        let from = MoveEnd {
            placement: tenant.placement,
            cluster: tenant.cluster_id,
            region: tenant.region.clone(),
            schema: tenant.schema_name.clone(),
            database: tenant.database_name.clone(),
        };
        // The usual names, unless the source (kept for a while after the move) has them
        // on the same cluster.
        let pick = |base: String, current: &Option<String>| {
            if cluster.id == tenant.cluster_id && current.as_deref() == Some(base.as_str()) {
                format!("{base}_b")
            } else {
                base
            }
        };
        let (schema, database) = match input.to {
            Placement::Pooled => (None, None),
            Placement::Schema => (
                Some(pick(schema_name_for(tenant.id), &tenant.schema_name)),
                None,
            ),
            Placement::Dedicated => (
                None,
                Some(pick(database_name_for(tenant.id), &tenant.database_name)),
            ),
        };
        let to = MoveEnd {
            placement: input.to,
            cluster: cluster.id,
            region,
            schema,
            database,
        };
        catalog::record_move(tx, wf.id, tenant.id, &from, &to).await?;
        Ok(Outcome::Next)
    }

    /// The move of workflow `wf`, as planned by its `residency` step.
    pub(super) async fn the_move(
        &self,
        tx: &Transaction<'_>,
        wf: &Workflow,
    ) -> Result<Move, Error> {
        catalog::get_move(tx, wf.id)
            .await?
            .ok_or_else(|| Error::NotPossible(format!("move {} was never planned", wf.id)))
    }

    /// The `prepare` step: the target's storage at the fleet's app version (the same
    /// code as provisioning's storage step).
    pub(super) async fn move_prepare(
        &self,
        tx: &Transaction<'_>,
        mv: &Move,
        tenant: &Tenant,
    ) -> Result<(), Error> {
        let app = self.fleet_app(tx).await?;
        let mut target = tenant.clone();
        target.placement = mv.to.placement;
        target.cluster_id = mv.to.cluster;
        target.region = mv.to.region.clone();
        target.schema_name = mv.to.schema.clone();
        target.database_name = mv.to.database.clone();
        self.create_storage(&target, &app).await
    }

    /// A connection to one end's database as the owner (`admin`: the cluster admin).
    async fn end_conn(&self, end: &MoveEnd, admin: bool) -> Result<(ClusterRecord, Client), Error> {
        let cluster = self.cluster(end.cluster).await?;
        let db = match end.placement {
            Placement::Dedicated => end.database.clone().unwrap_or_default(),
            _ => cluster.dbname.clone(),
        };
        let access = &self.inner.access;
        let login = if admin { &access.admin } else { &access.owner };
        let client = connect(&config_for(&cluster, login, &db, &access.tls)).await?;
        Ok((cluster, client))
    }

    /// A runtime-role pool on the target's database, for the tenant's own transactions.
    async fn target_pool(&self, end: &MoveEnd) -> Result<TenantPool, Error> {
        let cluster = self.cluster(end.cluster).await?;
        let db = match end.placement {
            Placement::Dedicated => end.database.clone().unwrap_or_default(),
            _ => cluster.dbname.clone(),
        };
        Ok(TenantPool::new(
            config_for(
                &cluster,
                &self.inner.access.runtime,
                &db,
                &self.inner.access.tls,
            ),
            self.inner.key.clone(),
            PoolOptions {
                max_size: 1,
                transaction_deadline: Duration::ZERO,
                statement_timeout: Duration::ZERO,
                ..Default::default()
            },
        )?)
    }

    async fn target_tx(&self, pool: &TenantPool, mv: &Move) -> Result<TenantTx, Error> {
        Ok(match (&mv.to.placement, &mv.to.schema) {
            (Placement::Schema, Some(s)) => pool.begin_in_schema(mv.tenant, s).await?,
            _ => pool.begin(mv.tenant).await?,
        })
    }

    /// The tenant tables of one end (row-level security forced, a `tenant_id` column,
    /// not a partition), referenced tables first, with their columns and primary keys:
    /// those of the tenant's schema (schema placement), else those of every schema of the
    /// shared layout (not the system's, not tenancy's own, not a schema tenant's).
    async fn move_tables<C: tokio_postgres::GenericClient>(
        client: &C,
        end: &MoveEnd,
    ) -> Result<Vec<MoveTable>, Error> {
        let rows = client
            .query(
                "SELECT c.oid::bigint, CASE WHEN $1::text IS NULL THEN n.nspname::text ELSE 'public' END,
                        c.relname::text,
                        ARRAY(SELECT a.attname::text FROM pg_attribute a
                               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                 AND a.attgenerated = '' AND a.attname <> 'tenant_id' ORDER BY a.attnum),
                        ARRAY(SELECT a.attname::text FROM pg_constraint k
                                JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
                               WHERE k.conrelid = c.oid AND k.contype = 'p' AND a.attname <> 'tenant_id'
                               ORDER BY a.attnum),
                        ARRAY(SELECT a.attname::text FROM pg_constraint k
                                JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY(k.conkey)
                               WHERE k.conrelid = c.oid AND k.contype = 'p' ORDER BY a.attnum)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE CASE WHEN $1::text IS NULL
                             THEN n.nspname !~ '^(pg_|information_schema$|tenancy)'
                                  AND n.nspname !~ '^t_[0-9a-f]{32}(_b)?$'
                             ELSE n.nspname = $1 END
                    AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                    AND c.relrowsecurity AND c.relforcerowsecurity
                    AND EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)",
                &[&tenant_schema(end)],
            )
            .await
            .map_err(Error::db("listing tenant tables"))?;
        let oids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let fks = client
            .query(tenancy_transfer::FOREIGN_KEYS_SQL, &[&oids])
            .await
            .map_err(Error::db("reading foreign keys"))?;
        let mut out = Vec::with_capacity(rows.len());
        for oid in tenancy_transfer::foreign_key_order(&oids, &fks) {
            let Some(r) = rows.iter().find(|r| r.get::<_, i64>(0) == oid) else {
                continue;
            };
            let t = MoveTable {
                schema: r.get(1),
                name: r.get(2),
                columns: r.get(3),
                key: r.get(4),
                conflict: r.get(5),
            };
            if t.key.is_empty() {
                return Err(Error::NotPossible(format!(
                    "table {} has no primary key besides tenant_id: a move applies changes by primary key",
                    t.name
                )));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The `capture` step: the capture schema, fence, change table, trigger function
    /// and triggers on the source, in one transaction (all or none). Creating a trigger
    /// waits for the table's open writers; a short lock timeout keeps other tenants of
    /// a pooled table from queueing behind it (the step is retried).
    pub(super) async fn move_capture(&self, mv: &Move) -> Result<(), Error> {
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
    pub(super) async fn move_snapshot(&self, tx: &Transaction<'_>, mv: &Move) -> Result<(), Error> {
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

    /// The source's changes not in the move's snapshot, oldest first (at most `limit`),
    /// as `client` sees them.
    async fn read_changes(
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
    async fn apply_changes(
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
    /// [`CATCH_UP_BATCH`]), applied to the target and removed from the change table
    /// (those the snapshot shows are removed without applying). Returns how many were
    /// applied.
    async fn catch_up_round(
        &self,
        mv: &Move,
        source: &Client,
        tables: &[MoveTable],
        pool: &TenantPool,
        touched: &mut Touched,
    ) -> Result<usize, Error> {
        let s = quote_ident(&capture_schema(mv));
        // Changes the snapshot already shows: in the copy, nothing to apply.
        source
            .execute(
                &format!(
                    "DELETE FROM {s}.changes WHERE pg_visible_in_snapshot(xid, $1::text::pg_snapshot)"
                ),
                &[&mv.snapshot],
            )
            .await
            .map_err(Error::db("skipping changes in the snapshot"))?;
        let rows = Self::read_changes(mv, source, Some(CATCH_UP_BATCH)).await?;
        self.apply_changes(mv, source, tables, pool, &rows, touched)
            .await?;
        Ok(rows.len())
    }

    /// The `catch_up` step: rounds of catch-up until a round finds little left (the
    /// cutover's final catch-up is then short), or for at most 30 s.
    pub(super) async fn move_catch_up(&self, mv: &Move) -> Result<(), Error> {
        let (_, source) = self.end_conn(&mv.from, false).await?;
        let tables = Self::move_tables(&source, &mv.from).await?;
        let pool = self.target_pool(&mv.to).await?;
        let started = Instant::now();
        loop {
            let n = self
                .catch_up_round(mv, &source, &tables, &pool, &mut Touched::default())
                .await?;
            if n < CATCH_UP_BATCH as usize / 4 || started.elapsed() > Duration::from_secs(30) {
                return Ok(());
            }
        }
    }

    /// Counts and checksums of the tenant's rows on both ends, table by table: the source
    /// as the admin (`WHERE tenant_id = …`), the target through the tenant's own
    /// transaction; every row (`only` `None`), or only the rows of the keys `only` lists.
    /// The first difference, in words.
    async fn move_verify(
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
                    let a = source_admin
                        .query(
                            &format!("{} AND r.tenant_id = {tenant}", pick(&src)),
                            &[&keys],
                        )
                        .await
                        .map_err(Error::db(format!("verifying table {}", t.name)))?;
                    let b = target.query(pick(&dst).as_str(), &[&keys]).await?;
                    (row_checksum(&a), row_checksum(&b))
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
    async fn move_verify_at_snapshot(
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

    /// The `cutover` step. Catches up and verifies every table in full while the tenant
    /// keeps writing, catches up again, then opens the move's cutover window (routers
    /// wait), fences the source (waiting, at most the configured drain time, for the
    /// transactions that wrote), catches up for the last time, verifies the rows changed
    /// since the full verification, commits the fence (`moved`: later writes to the old
    /// placement fail), raises the target's sequences and switches the catalog (the
    /// step's transaction). A failure before the fence commits rolls the fence back and
    /// closes the window: the tenant goes on from the old placement. A verification
    /// mismatch fails the move for good (it is rolled back); a drain timeout is retried.
    pub(super) async fn move_cutover(
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
        while diff.is_none() {
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
        touched = Touched::default();
        if diff.is_none() {
            let conn = self.catalog_conn().await?;
            catalog::set_cutover(&*conn, mv.workflow, Some(settings.cutover_wait)).await?;
        }
        let held = Instant::now();
        let mut timing = serde_json::Map::new();
        let ms = |d: Duration| serde_json::json!((d.as_secs_f64() * 1e4).round() / 10.0);
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
        let app = self.fleet_app(tx).await?;
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

    /// Compensation of a move that failed for good: the capture removed from the source
    /// (which lifts a fence), the cutover window closed, the target's storage dropped
    /// (a pooled target: the tenant's rows there), the move marked rolled back. Nothing
    /// happens to a move that already switched.
    pub(super) async fn move_roll_back(
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
struct Touched(HashMap<String, BTreeSet<String>>);

impl Touched {
    fn note(&mut self, t: &MoveTable, key: Option<String>) {
        if let Some(k) = key {
            self.0.entry(t.label()).or_default().insert(k);
        }
    }

    /// The keys of table `t` as a JSON array of objects, if any were touched.
    fn keys(&self, t: &MoveTable) -> Option<String> {
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

    fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
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
