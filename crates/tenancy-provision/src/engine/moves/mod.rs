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

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenancy_catalog::{self as catalog, ClusterRecord, Move, MoveEnd, Tenant, Workflow};
use tenancy_conn::quote_ident;
use tenancy_core::{Placement, RegionId, TenantState};
use tenancy_sdk::{PoolOptions, TenantPool, TenantTx};
use tokio_postgres::{Client, Transaction};

use super::{Outcome, Provisioner};
use crate::conn::{config_for, connect};
use crate::storage::{database_name_for, schema_name_for};
use crate::Error;

mod catch_up;
mod cleanup;
mod copy;
mod cutover;
mod verify;

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
}
