//! Tenant moves: the residency policy, the cutover window the router waits on, the move
//! records (both regions) and the placement switch.

use std::time::Duration;

use tenancy_core::{Placement, RegionId, TenantId};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};
use uuid::Uuid;

use crate::{corrupt, CatalogError};

/// How far a move got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveStatus {
    /// Copying and catching up; the tenant is served from the old placement.
    Copying,
    /// The catalog names the new placement; the old copy waits for `drop_after`.
    Switched,
    /// The old copy was dropped.
    SourceDropped,
    /// Undone: the new copy was dropped, the tenant never left the old placement.
    RolledBack,
}

impl MoveStatus {
    /// The name stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStatus::Copying => "copying",
            MoveStatus::Switched => "switched",
            MoveStatus::SourceDropped => "source_dropped",
            MoveStatus::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Result<Self, CatalogError> {
        Ok(match s {
            "copying" => MoveStatus::Copying,
            "switched" => MoveStatus::Switched,
            "source_dropped" => MoveStatus::SourceDropped,
            "rolled_back" => MoveStatus::RolledBack,
            other => return Err(corrupt(format!("unknown move status {other:?}"))),
        })
    }
}

/// One end of a move: where a tenant's rows are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveEnd {
    /// Placement.
    pub placement: Placement,
    /// Cluster.
    pub cluster: Uuid,
    /// The cluster's region.
    pub region: RegionId,
    /// The tenant's schema (schema placement).
    pub schema: Option<String>,
    /// The tenant's database (dedicated placement).
    pub database: Option<String>,
}

/// A move, as recorded in `tenancy_catalog.tenant_moves`.
#[derive(Debug, Clone)]
pub struct Move {
    /// The move workflow.
    pub workflow: Uuid,
    /// The tenant.
    pub tenant: TenantId,
    /// Where the rows were.
    pub from: MoveEnd,
    /// Where they go.
    pub to: MoveEnd,
    /// The source snapshot the copy was taken at (`pg_snapshot` text), once taken.
    pub snapshot: Option<String>,
    /// How far it got.
    pub status: MoveStatus,
    /// When the catalog switched to the new placement.
    pub switched_at: Option<OffsetDateTime>,
    /// When the old copy may be dropped.
    pub drop_after: Option<OffsetDateTime>,
}

const MOVE_COLUMNS: &str = "workflow_id, tenant_id, from_placement, from_cluster, from_region, from_schema, from_database,
     to_placement, to_cluster, to_region, to_schema, to_database, snapshot, status, switched_at, drop_after";

/// One end's columns as statement parameters, in the order the move columns name them
/// (placement, cluster, region, schema, database).
struct EndParams<'a> {
    placement: &'static str,
    cluster: &'a Uuid,
    region: &'a str,
    schema: &'a Option<String>,
    database: &'a Option<String>,
}

impl<'a> EndParams<'a> {
    fn of(end: &'a MoveEnd) -> Self {
        EndParams {
            placement: end.placement.as_str(),
            cluster: &end.cluster,
            region: end.region.as_str(),
            schema: &end.schema,
            database: &end.database,
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.placement,
            self.cluster,
            &self.region,
            self.schema,
            self.database,
        ]
    }
}

fn end(row: &Row, at: usize) -> Result<MoveEnd, CatalogError> {
    Ok(MoveEnd {
        placement: row.get::<_, String>(at).parse().map_err(corrupt)?,
        cluster: row.get(at + 1),
        region: row.get::<_, String>(at + 2).parse().map_err(corrupt)?,
        schema: row.get(at + 3),
        database: row.get(at + 4),
    })
}

fn move_from_row(row: &Row) -> Result<Move, CatalogError> {
    Ok(Move {
        workflow: row.get(0),
        tenant: TenantId::from_uuid(row.get(1)).map_err(corrupt)?,
        from: end(row, 2)?,
        to: end(row, 7)?,
        snapshot: row.get(12),
        status: MoveStatus::parse(row.get(13))?,
        switched_at: row.get(14),
        drop_after: row.get(15),
    })
}

/// Records a move (idempotent: an existing record of the workflow is returned as it is).
pub async fn record_move<C: GenericClient>(
    client: &C,
    workflow: Uuid,
    tenant: TenantId,
    from: &MoveEnd,
    to: &MoveEnd,
) -> Result<Move, CatalogError> {
    client
        .execute(
            "INSERT INTO tenancy_catalog.tenant_moves
                 (workflow_id, tenant_id, from_placement, from_cluster, from_region, from_schema, from_database,
                  to_placement, to_cluster, to_region, to_schema, to_database)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (workflow_id) DO NOTHING",
            &[&workflow as &(dyn ToSql + Sync), &tenant.as_uuid()]
                .into_iter()
                .chain(EndParams::of(from).params())
                .chain(EndParams::of(to).params())
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(CatalogError::db("recording a move"))?;
    get_move(client, workflow)
        .await?
        .ok_or_else(|| CatalogError::Invalid(format!("move {workflow} was not recorded")))
}

/// The move of workflow `workflow`, if recorded.
pub async fn get_move<C: GenericClient>(
    client: &C,
    workflow: Uuid,
) -> Result<Option<Move>, CatalogError> {
    Ok(
        select_moves(client, "workflow_id = $1", &[&workflow], "reading a move")
            .await?
            .pop(),
    )
}

/// The moves `SELECT … WHERE {filter}` finds.
async fn select_moves<C: GenericClient>(
    client: &C,
    filter: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<Vec<Move>, CatalogError> {
    client
        .query(
            &format!("SELECT {MOVE_COLUMNS} FROM tenancy_catalog.tenant_moves WHERE {filter}"),
            params,
        )
        .await
        .map_err(CatalogError::db(what))?
        .iter()
        .map(move_from_row)
        .collect()
}

/// Records the source snapshot a move's copy was taken at.
pub async fn set_move_snapshot<C: GenericClient>(
    client: &C,
    workflow: Uuid,
    snapshot: &str,
) -> Result<(), CatalogError> {
    update_move(
        client,
        workflow,
        "snapshot = $2",
        &snapshot,
        "recording a move's snapshot",
    )
    .await
}

/// `UPDATE … SET {set} WHERE workflow_id = $1` on move `workflow`, `$2` = `value`.
async fn update_move<C: GenericClient>(
    client: &C,
    workflow: Uuid,
    set: &str,
    value: &(dyn ToSql + Sync),
    what: &'static str,
) -> Result<(), CatalogError> {
    client
        .execute(
            &format!("UPDATE tenancy_catalog.tenant_moves SET {set} WHERE workflow_id = $1"),
            &[&workflow, value],
        )
        .await
        .map_err(CatalogError::db(what))?;
    Ok(())
}

/// Ends a move: `RolledBack` (its new copy dropped) or `SourceDropped` (its old copy
/// dropped).
pub async fn finish_move<C: GenericClient>(
    client: &C,
    workflow: Uuid,
    status: MoveStatus,
) -> Result<(), CatalogError> {
    update_move(
        client,
        workflow,
        "status = $2, finished_at = now()",
        &status.as_str(),
        "finishing a move",
    )
    .await
}

/// Switched moves whose old copy is due to be dropped (at most `limit`).
pub async fn moves_to_drop<C: GenericClient>(
    client: &C,
    limit: i64,
) -> Result<Vec<Move>, CatalogError> {
    select_moves(client, DUE, &[&limit], "listing moves to drop").await
}

/// The filter of switched moves whose old copy is due, the longest due first.
const DUE: &str = "status = 'switched' AND drop_after <= now() ORDER BY drop_after LIMIT $1";

/// The regions tenant `id` may live in: its residency policy, or its current region when
/// it has none.
pub async fn residency<C: GenericClient>(
    client: &C,
    id: TenantId,
) -> Result<Vec<RegionId>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT coalesce(residency, ARRAY[region]) FROM tenancy_catalog.tenants WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading a tenant's residency"))?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))?;
    row.get::<_, Vec<String>>(0)
        .iter()
        .map(|r| r.parse().map_err(corrupt))
        .collect()
}

/// Sets tenant `id`'s residency policy (`None`: its current region only). Every region
/// must be registered, and the tenant's current region must be one of them.
pub async fn set_residency<C: GenericClient>(
    client: &C,
    id: TenantId,
    regions: Option<&[RegionId]>,
) -> Result<(), CatalogError> {
    let regions: Option<Vec<&str>> = regions.map(|rs| rs.iter().map(|r| r.as_str()).collect());
    if regions.as_ref().is_some_and(|r| r.is_empty()) {
        return Err(CatalogError::Invalid(
            "a residency policy names at least one region".into(),
        ));
    }
    let row = client
        .query_opt(
            "UPDATE tenancy_catalog.tenants t SET residency = $2, updated_at = now()
              WHERE t.id = $1
                AND ($2::text[] IS NULL OR t.region = ANY($2))
                AND ($2::text[] IS NULL OR NOT EXISTS (
                     SELECT 1 FROM unnest($2::text[]) r
                      WHERE NOT EXISTS (SELECT 1 FROM tenancy_catalog.regions g WHERE g.id = r)))
             RETURNING 1",
            &[&id.as_uuid(), &regions],
        )
        .await
        .map_err(CatalogError::db("setting a tenant's residency"))?;
    if row.is_none() {
        return Err(CatalogError::Invalid(format!(
            "tenant {id} does not exist, or the residency policy names an unregistered region or leaves out the tenant's current region"
        )));
    }
    Ok(())
}

/// Opens (`Some(wait)`: until now + `wait`) or closes (`None`) the cutover window of
/// move `workflow`, committed on its own (not in a transaction holding the tenant's row)
/// and announced on the catalog's change channel, so routers see it before the cutover
/// holds writes.
pub async fn set_cutover<C: GenericClient>(
    client: &C,
    workflow: Uuid,
    wait: Option<Duration>,
) -> Result<(), CatalogError> {
    let ms = wait.map(|w| w.as_millis().min(i64::MAX as u128) as i64);
    client
        .execute(
            "WITH m AS (
                 UPDATE tenancy_catalog.tenant_moves
                    SET cutover_until = CASE WHEN $2::bigint IS NULL THEN NULL
                                             ELSE clock_timestamp() + $2::bigint * interval '1 millisecond' END
                  WHERE workflow_id = $1
              RETURNING tenant_id)
             SELECT pg_notify('tenancy_catalog_changes', 'tenant:' || tenant_id::text) FROM m",
            &[&workflow, &ms],
        )
        .await
        .map_err(CatalogError::db("setting a move's cutover window"))?;
    Ok(())
}

/// Announces move `workflow`'s target on the catalog's change channel, committed on its
/// own: `moving:<cluster>:<database>` (the database empty when the target is the
/// cluster's shared one), so routers open connections to it before the cutover holds the
/// tenant's writes.
pub async fn announce_move_target<C: GenericClient>(
    client: &C,
    workflow: Uuid,
) -> Result<(), CatalogError> {
    client
        .execute(
            "SELECT pg_notify('tenancy_catalog_changes',
                              'moving:' || to_cluster::text || ':'
                              || coalesce(CASE WHEN to_placement = 'dedicated' THEN to_database END, ''))
               FROM tenancy_catalog.tenant_moves WHERE workflow_id = $1",
            &[&workflow],
        )
        .await
        .map_err(CatalogError::db("announcing a move's target"))?;
    Ok(())
}

/// Points tenant `id` at the move's new placement, closes its cutover window, marks the
/// move switched (the old copy dropped after `keep`) and records a `moved` event with
/// both placements and regions and `cutover` (how the held window went, as the engine
/// measured it), in the caller's transaction.
pub async fn switch_placement(
    tx: &Transaction<'_>,
    mv: &Move,
    actor: &str,
    keep: Duration,
    cutover: serde_json::Value,
) -> Result<(), CatalogError> {
    let to = &mv.to;
    tx.execute(
        "UPDATE tenancy_catalog.tenants
            SET placement = $2, cluster_id = $3, region = $4, schema_name = $5, database_name = $6,
                updated_at = now()
          WHERE id = $1",
        &[&mv.tenant.as_uuid() as &(dyn ToSql + Sync)]
            .into_iter()
            .chain(EndParams::of(to).params())
            .collect::<Vec<_>>(),
    )
    .await
    .map_err(CatalogError::db("switching a tenant's placement"))?;
    let keep_ms = keep.as_millis().min(i64::MAX as u128) as i64;
    tx.execute(
        "UPDATE tenancy_catalog.tenant_moves
            SET status = 'switched', switched_at = now(), cutover_until = NULL,
                drop_after = now() + $2::bigint * interval '1 millisecond'
          WHERE workflow_id = $1 AND status = 'copying'",
        &[&mv.workflow, &keep_ms],
    )
    .await
    .map_err(CatalogError::db("marking a move switched"))?;
    let detail = serde_json::json!({
        "workflow": mv.workflow.to_string(),
        "from": { "placement": mv.from.placement.as_str(), "cluster": mv.from.cluster.to_string(), "region": mv.from.region.as_str() },
        "to": { "placement": to.placement.as_str(), "cluster": to.cluster.to_string(), "region": to.region.as_str() },
        "cutover": cutover,
    });
    tx.execute(
        "INSERT INTO tenancy_catalog.tenant_events (tenant_id, kind, actor, detail)
         VALUES ($1, 'moved', $2, $3)",
        &[&mv.tenant.as_uuid(), &actor, &detail],
    )
    .await
    .map_err(CatalogError::db("recording a tenant event"))?;
    Ok(())
}

/// A move with its times, as a tenant's history lists it.
#[derive(Debug, Clone)]
pub struct MoveRecord {
    /// The move.
    pub record: Move,
    /// When the move workflow recorded it.
    pub started_at: OffsetDateTime,
    /// When it ended (the old copy dropped, or rolled back).
    pub finished_at: Option<OffsetDateTime>,
}

/// Every move of tenant `id`, oldest first (at most `limit`).
pub async fn tenant_moves<C: GenericClient>(
    client: &C,
    id: TenantId,
    limit: i64,
) -> Result<Vec<MoveRecord>, CatalogError> {
    client
        .query(
            &format!(
                "SELECT {MOVE_COLUMNS}, started_at, finished_at FROM tenancy_catalog.tenant_moves
                  WHERE tenant_id = $1 ORDER BY started_at, workflow_id LIMIT $2"
            ),
            &[&id.as_uuid(), &limit],
        )
        .await
        .map_err(CatalogError::db("listing a tenant's moves"))?
        .iter()
        .map(|row| {
            Ok(MoveRecord {
                record: move_from_row(row)?,
                started_at: row.get(16),
                finished_at: row.get(17),
            })
        })
        .collect()
}
