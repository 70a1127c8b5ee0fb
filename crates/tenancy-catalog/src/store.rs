//! Catalog store: every SQL statement about regions, clusters and tenants.

use tenancy_core::{Placement, PlanKey, RegionId, Slug, TenantId, TenantState};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, Transaction};
use uuid::Uuid;

use crate::corrupt;
use crate::CatalogError;

/// A registered region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Region id.
    pub id: RegionId,
    /// Human-readable name.
    pub display_name: String,
}

/// Where a cluster's shared tenant database is (never how to log in): what the catalog
/// keeps about a cluster's address, for the owner's records and the runtime's routes alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLocation {
    /// Host name, IP address or Unix socket directory.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The shared tenant database.
    pub dbname: String,
}

/// A registered PostgreSQL cluster (its shared tenant database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    /// Cluster id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// Region the cluster is in; tenants of other regions can never be placed here.
    pub region: RegionId,
    /// Where its shared tenant database is.
    pub location: ClusterLocation,
    /// Maximum number of tenants the placement policy puts here.
    pub capacity: i32,
    /// Whether new tenants may be placed here.
    pub accepting: bool,
}

/// A cluster record reads as its location too (`cluster.dbname`, `cluster.host`).
impl std::ops::Deref for ClusterRecord {
    type Target = ClusterLocation;

    fn deref(&self) -> &ClusterLocation {
        &self.location
    }
}

/// A cluster to register.
#[derive(Debug, Clone)]
pub struct NewCluster {
    /// Unique name (`[a-z][a-z0-9_-]{0,62}`).
    pub name: String,
    /// Region.
    pub region: RegionId,
    /// Where its shared tenant database is.
    pub location: ClusterLocation,
    /// Capacity in tenants.
    pub capacity: i32,
}

/// A tenant as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Tenant id.
    pub id: TenantId,
    /// Slug.
    pub slug: Slug,
    /// Display name.
    pub display_name: String,
    /// Plan.
    pub plan: PlanKey,
    /// Region the tenant is pinned to.
    pub region: RegionId,
    /// Placement.
    pub placement: Placement,
    /// Cluster holding its data.
    pub cluster_id: Uuid,
    /// Lifecycle state.
    pub state: TenantState,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// The tenant's own schema in the region's shared database (schema placement), once
    /// provisioning has chosen it.
    pub schema_name: Option<String>,
    /// The tenant's own database on its cluster (dedicated placement), once provisioning
    /// has chosen it.
    pub database_name: Option<String>,
    /// Billing customer (Stripe `cus_…`) linked by provisioning, used to map billing events.
    pub billing_customer: Option<String>,
    /// A legal hold blocks the purge of a soft-deleted tenant.
    pub legal_hold: bool,
    /// When a soft-deleted tenant's data may be purged.
    pub purge_after: Option<OffsetDateTime>,
    /// The regions its data may live in (`None`: its current region only).
    pub residency: Option<Vec<RegionId>>,
}

/// A tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Optional id (a fresh one is generated when absent).
    pub id: Option<TenantId>,
    /// Slug.
    pub slug: Slug,
    /// Display name (1 to 200 characters).
    pub display_name: String,
    /// Plan.
    pub plan: PlanKey,
    /// Region to pin the tenant to.
    pub region: RegionId,
    /// Placement.
    pub placement: Placement,
}

/// One entry of a tenant's event log.
#[derive(Debug, Clone)]
pub struct TenantEvent {
    /// Position in the global log.
    pub seq: i64,
    /// What happened (`created`, `state_changed`, …).
    pub kind: String,
    /// State before, for state changes.
    pub from_state: Option<String>,
    /// State after, for state changes.
    pub to_state: Option<String>,
    /// Who did it.
    pub actor: String,
    /// Free-form details.
    pub detail: serde_json::Value,
    /// When.
    pub at: OffsetDateTime,
}

/// Starts a transaction on `client`.
pub(crate) async fn begin(client: &mut Client) -> Result<Transaction<'_>, CatalogError> {
    client
        .transaction()
        .await
        .map_err(CatalogError::db("starting a transaction"))
}

/// The columns [`tenant_from_row`] reads, in order.
pub const TENANT_COLUMNS: &str =
    "id, slug, display_name, plan, region, placement, cluster_id, state, created_at, updated_at, \
     schema_name, database_name, billing_customer, legal_hold, purge_after, residency";

/// Builds a [`Tenant`] from a row selected with [`TENANT_COLUMNS`].
pub fn tenant_from_row(row: &Row) -> Result<Tenant, CatalogError> {
    Ok(Tenant {
        id: TenantId::from_uuid(row.get(0)).map_err(corrupt)?,
        slug: row.get::<_, String>(1).parse().map_err(corrupt)?,
        display_name: row.get(2),
        plan: row.get::<_, String>(3).parse().map_err(corrupt)?,
        region: row.get::<_, String>(4).parse().map_err(corrupt)?,
        placement: row.get::<_, String>(5).parse().map_err(corrupt)?,
        cluster_id: row.get(6),
        state: row.get::<_, String>(7).parse().map_err(corrupt)?,
        created_at: row.get(8),
        updated_at: row.get(9),
        schema_name: row.get(10),
        database_name: row.get(11),
        billing_customer: row.get(12),
        legal_hold: row.get(13),
        purge_after: row.get(14),
        residency: row
            .get::<_, Option<Vec<String>>>(15)
            .map(|rs| rs.iter().map(|r| r.parse().map_err(corrupt)).collect())
            .transpose()?,
    })
}

fn cluster_from_row(row: &Row) -> Result<ClusterRecord, CatalogError> {
    Ok(ClusterRecord {
        id: row.get(0),
        name: row.get(1),
        region: row.get::<_, String>(2).parse().map_err(corrupt)?,
        location: cluster_location(row)?,
        capacity: row.get(6),
        accepting: row.get(7),
    })
}

/// The address columns of a cluster row (`host, port, dbname` at positions 3 to 5, after
/// `id, name, region`), as every cluster query and lookup returns them.
pub(crate) fn cluster_location(row: &Row) -> Result<ClusterLocation, CatalogError> {
    Ok(ClusterLocation {
        host: row.get(3),
        port: u16::try_from(row.get::<_, i32>(4)).map_err(corrupt)?,
        dbname: row.get(5),
    })
}

/// Registers a region, or updates its display name.
pub async fn add_region(
    client: &Client,
    id: &RegionId,
    display_name: &str,
) -> Result<Region, CatalogError> {
    if display_name.trim().is_empty() || display_name.len() > 200 {
        return Err(CatalogError::Invalid(
            "region display name must be 1 to 200 characters".into(),
        ));
    }
    client
        .execute(
            "INSERT INTO tenancy_catalog.regions (id, display_name) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET display_name = EXCLUDED.display_name",
            &[&id.as_str(), &display_name],
        )
        .await
        .map_err(CatalogError::db("registering a region"))?;
    Ok(Region {
        id: id.clone(),
        display_name: display_name.to_owned(),
    })
}

/// Lists the regions.
pub async fn list_regions(client: &Client) -> Result<Vec<Region>, CatalogError> {
    let rows = client
        .query(
            "SELECT id, display_name FROM tenancy_catalog.regions ORDER BY id",
            &[],
        )
        .await
        .map_err(CatalogError::db("listing regions"))?;
    rows.iter()
        .map(|r| {
            Ok(Region {
                id: r.get::<_, String>(0).parse().map_err(corrupt)?,
                display_name: r.get(1),
            })
        })
        .collect()
}

/// Registers a cluster in a region, or updates its connection info (matched by name).
pub async fn add_cluster(client: &Client, c: &NewCluster) -> Result<ClusterRecord, CatalogError> {
    let name_ok = !c.name.is_empty()
        && c.name.len() <= 63
        && c.name.as_bytes()[0].is_ascii_lowercase()
        && c.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !name_ok {
        return Err(CatalogError::Invalid(format!(
            "cluster name {:?} is not allowed: use 1 to 63 characters from a-z, 0-9, '_' and '-', starting with a letter",
            c.name
        )));
    }
    if c.capacity <= 0 {
        return Err(CatalogError::Invalid(
            "cluster capacity must be a positive number of tenants".into(),
        ));
    }
    let row = client
        .query_opt(
            "INSERT INTO tenancy_catalog.clusters (id, name, region, host, port, dbname, capacity)
             SELECT $1, $2, r.id, $4, $5, $6, $7 FROM tenancy_catalog.regions r WHERE r.id = $3
             ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, port = EXCLUDED.port,
                 dbname = EXCLUDED.dbname, capacity = EXCLUDED.capacity
             RETURNING id, name, region, host, port, dbname, capacity, accepting",
            &[
                &Uuid::new_v4(),
                &c.name,
                &c.region.as_str(),
                &c.location.host,
                &i32::from(c.location.port),
                &c.location.dbname,
                &c.capacity,
            ],
        )
        .await
        .map_err(CatalogError::db("registering a cluster"))?;
    match row {
        Some(row) => cluster_from_row(&row),
        None => Err(CatalogError::UnknownRegion(c.region.to_string())),
    }
}

/// Registers (`Some`) or removes (`None`) the address (host, port) where applications
/// reach cluster `name` through a transaction-mode pooler such as PgBouncer. The control
/// plane keeps using the cluster's direct address.
pub async fn set_cluster_pooler(
    client: &Client,
    name: &str,
    pooler: Option<(&str, u16)>,
) -> Result<(), CatalogError> {
    if let Some((host, port)) = pooler {
        if host.is_empty() || port == 0 {
            return Err(CatalogError::Invalid(format!(
                "cluster {name:?}: the pooler address needs a host and a port from 1 to 65535"
            )));
        }
    }
    let (host, port) = match pooler {
        Some((h, p)) => (Some(h), Some(i32::from(p))),
        None => (None, None),
    };
    let n = client
        .execute(
            "UPDATE tenancy_catalog.clusters SET pooler_host = $2, pooler_port = $3 WHERE name = $1",
            &[&name, &host, &port],
        )
        .await
        .map_err(CatalogError::db("registering a cluster's pooler address"))?;
    if n == 0 {
        return Err(CatalogError::Invalid(format!("no cluster named {name:?}")));
    }
    Ok(())
}

/// Reads a cluster.
pub async fn get_cluster(client: &Client, id: Uuid) -> Result<ClusterRecord, CatalogError> {
    let row = client
        .query_opt(
            "SELECT id, name, region, host, port, dbname, capacity, accepting FROM tenancy_catalog.clusters WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(CatalogError::db("reading a cluster"))?;
    match row {
        Some(row) => cluster_from_row(&row),
        None => Err(CatalogError::ClusterNotFound(id.to_string())),
    }
}

/// Lists the clusters.
pub async fn list_clusters(client: &Client) -> Result<Vec<ClusterRecord>, CatalogError> {
    let rows = client
        .query(
            "SELECT id, name, region, host, port, dbname, capacity, accepting FROM tenancy_catalog.clusters ORDER BY name",
            &[],
        )
        .await
        .map_err(CatalogError::db("listing clusters"))?;
    rows.iter().map(cluster_from_row).collect()
}

/// Creates a tenant in state `provisioning`, pinned to its region and placed on the
/// least-loaded accepting cluster there, and records a `created` event, in one
/// transaction.
pub async fn create_tenant(
    client: &mut Client,
    t: &NewTenant,
    actor: &str,
) -> Result<Tenant, CatalogError> {
    let tx = begin(client).await?;
    let tenant = create_tenant_in(&tx, t, actor).await?;
    tx.commit()
        .await
        .map_err(CatalogError::db("committing a new tenant"))?;
    Ok(tenant)
}

/// [`create_tenant`] inside the caller's transaction, so provisioning can record the
/// tenant and its workflow atomically.
pub async fn create_tenant_in(
    tx: &Transaction<'_>,
    t: &NewTenant,
    actor: &str,
) -> Result<Tenant, CatalogError> {
    let name = t.display_name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(CatalogError::Invalid(
            "display name must be 1 to 200 characters".into(),
        ));
    }
    let region_exists = tx
        .query_opt(
            "SELECT 1 FROM tenancy_catalog.regions WHERE id = $1",
            &[&t.region.as_str()],
        )
        .await
        .map_err(CatalogError::db("reading a region"))?
        .is_some();
    if !region_exists {
        return Err(CatalogError::UnknownRegion(t.region.to_string()));
    }
    // Least loaded relative to capacity; FOR UPDATE of the cluster row serialises
    // concurrent placements on the same cluster so capacity is respected.
    let cluster = tx
        .query_opt(
            "SELECT c.id FROM tenancy_catalog.clusters c
             WHERE c.region = $1 AND c.accepting
               AND (SELECT count(*) FROM tenancy_catalog.tenants t WHERE t.cluster_id = c.id AND t.state <> 'deleted') < c.capacity
             ORDER BY (SELECT count(*) FROM tenancy_catalog.tenants t WHERE t.cluster_id = c.id AND t.state <> 'deleted')::float8 / c.capacity, c.name
             LIMIT 1 FOR UPDATE OF c",
            &[&t.region.as_str()],
        )
        .await
        .map_err(CatalogError::db("choosing a cluster"))?;
    let Some(cluster) = cluster else {
        return Err(CatalogError::NoCapacity(t.region.to_string()));
    };
    let cluster_id: Uuid = cluster.get(0);
    let id = t.id.unwrap_or_else(TenantId::new_random);
    let row = tx
        .query_opt(
            &format!(
                "INSERT INTO tenancy_catalog.tenants (id, slug, display_name, plan, region, placement, cluster_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (slug) WHERE {HOLDS_SLUG} DO NOTHING RETURNING {TENANT_COLUMNS}"
            ),
            &[&id.as_uuid(), &t.slug.as_str(), &name, &t.plan.as_str(), &t.region.as_str(), &t.placement.as_str(), &cluster_id],
        )
        .await
        .map_err(CatalogError::db("inserting a tenant"))?;
    let Some(row) = row else {
        return Err(CatalogError::SlugTaken(t.slug.to_string()));
    };
    let tenant = tenant_from_row(&row)?;
    tx.execute(
        "INSERT INTO tenancy_catalog.tenant_events (tenant_id, kind, to_state, actor, detail)
         VALUES ($1, 'created', 'provisioning', $2, $3)",
        &[
            &id.as_uuid(),
            &actor,
            &serde_json::json!({"slug": t.slug.as_str(), "plan": t.plan.as_str(), "region": t.region.as_str(), "placement": t.placement.as_str(), "cluster_id": cluster_id}),
        ],
    )
    .await
    .map_err(CatalogError::db("recording a tenant event"))?;
    Ok(tenant)
}

/// Whether the lifecycle allows going from `from` to `to`.
pub fn transition_allowed(from: TenantState, to: TenantState) -> bool {
    use TenantState::*;
    matches!(
        (from, to),
        (Provisioning, Active)
            | (Provisioning, Deleting)
            | (Active, Suspended)
            | (Active, Deleting)
            | (Suspended, Active)
            | (Suspended, Deleting)
            | (Deleting, Deleted)
            | (Deleting, Active)
    )
}

/// Moves a tenant to state `to` if the lifecycle allows it, recording an event; setting
/// the state it already has is a no-op (idempotent).
pub async fn set_state(
    client: &mut Client,
    id: TenantId,
    to: TenantState,
    actor: &str,
    reason: &str,
) -> Result<Tenant, CatalogError> {
    let tx = begin(client).await?;
    let tenant = set_state_in(&tx, id, to, actor, reason).await?;
    tx.commit()
        .await
        .map_err(CatalogError::db("committing a state change"))?;
    Ok(tenant)
}

/// [`set_state`] inside the caller's transaction, so a workflow step can change the state
/// and advance itself atomically.
pub async fn set_state_in(
    tx: &Transaction<'_>,
    id: TenantId,
    to: TenantState,
    actor: &str,
    reason: &str,
) -> Result<Tenant, CatalogError> {
    let row = tx
        .query_opt(
            "SELECT state FROM tenancy_catalog.tenants WHERE id = $1 FOR UPDATE",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading a tenant"))?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))?;
    let from: TenantState = row.get::<_, String>(0).parse().map_err(corrupt)?;
    if from != to {
        if !transition_allowed(from, to) {
            return Err(CatalogError::InvalidTransition {
                tenant: id.to_string(),
                from: from.to_string(),
                to: to.to_string(),
            });
        }
        tx.execute(
            "UPDATE tenancy_catalog.tenants SET state = $2, updated_at = now(), state_changed_at = now() WHERE id = $1",
            &[&id.as_uuid(), &to.as_str()],
        )
        .await
        .map_err(CatalogError::db("changing a tenant's state"))?;
        tx.execute(
            "INSERT INTO tenancy_catalog.tenant_events (tenant_id, kind, from_state, to_state, actor, detail)
             VALUES ($1, 'state_changed', $2, $3, $4, $5)",
            &[&id.as_uuid(), &from.as_str(), &to.as_str(), &actor, &serde_json::json!({ "reason": reason })],
        )
        .await
        .map_err(CatalogError::db("recording a tenant event"))?;
    }
    tenant_where(tx, "id = $1", &id.as_uuid())
        .await?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))
}

/// Reads the tenant matching `filter` (SQL after `WHERE`, with `$1` bound to `param`),
/// through a client or a transaction.
pub(crate) async fn tenant_where<C: GenericClient>(
    client: &C,
    filter: &str,
    param: &(dyn ToSql + Sync),
) -> Result<Option<Tenant>, CatalogError> {
    let row = client
        .query_opt(
            &format!("SELECT {TENANT_COLUMNS} FROM tenancy_catalog.tenants WHERE {filter}"),
            &[param],
        )
        .await
        .map_err(CatalogError::db("reading a tenant"))?;
    row.as_ref().map(tenant_from_row).transpose()
}

/// Reads a tenant by id.
pub async fn get_tenant(client: &Client, id: TenantId) -> Result<Tenant, CatalogError> {
    tenant_where(client, "id = $1", &id.as_uuid())
        .await?
        .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))
}

/// Whether a tenant holds its slug: every tenant but one whose provisioning failed for good
/// (`deleted` with `failure` set), whose slug is free again (the partial unique index
/// `tenants_slug_key` has the same predicate).
const HOLDS_SLUG: &str = "(state <> 'deleted' OR failure IS NULL)";

/// Reads a tenant by slug: the one holding it, else the latest whose provisioning failed
/// with it.
pub async fn get_tenant_by_slug(client: &Client, slug: &Slug) -> Result<Tenant, CatalogError> {
    tenant_where(
        client,
        &format!("slug = $1 ORDER BY {HOLDS_SLUG} DESC, created_at DESC LIMIT 1"),
        &slug.as_str(),
    )
    .await?
    .ok_or_else(|| CatalogError::TenantNotFound(slug.to_string()))
}

/// Whether a tenant holds `slug` (a new tenant cannot take it).
pub async fn slug_taken(client: &Client, slug: &Slug) -> Result<bool, CatalogError> {
    client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM tenancy_catalog.tenants WHERE slug = $1 AND {HOLDS_SLUG})"
            ),
            &[&slug.as_str()],
        )
        .await
        .map(|r| r.get(0))
        .map_err(CatalogError::db("checking a slug"))
}

/// Lists tenants ordered by slug, `limit` slugs at a time, starting after `after` (keyset
/// pagination). A slug freed by a failed provisioning can name several tenants; they come
/// on the same page (so a page may hold a few more than `limit` tenants), the failed ones
/// first.
pub async fn list_tenants(
    client: &Client,
    after: Option<&Slug>,
    limit: i64,
) -> Result<Vec<Tenant>, CatalogError> {
    if !(1..=1000).contains(&limit) {
        return Err(CatalogError::Invalid(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let rows = client
        .query(
            &format!(
                "SELECT {TENANT_COLUMNS} FROM tenancy_catalog.tenants \
                  WHERE slug IN (SELECT DISTINCT slug FROM tenancy_catalog.tenants \
                                  WHERE ($1::text IS NULL OR slug > $1) ORDER BY slug LIMIT $2) \
                  ORDER BY slug, {HOLDS_SLUG}, created_at"
            ),
            &[&after.map(|s| s.as_str()), &limit],
        )
        .await
        .map_err(CatalogError::db("listing tenants"))?;
    rows.iter().map(tenant_from_row).collect()
}

/// A tenant's events, oldest first.
pub async fn tenant_events(
    client: &Client,
    id: TenantId,
) -> Result<Vec<TenantEvent>, CatalogError> {
    let rows = client
        .query(
            "SELECT seq, kind, from_state, to_state, actor, detail, at FROM tenancy_catalog.tenant_events
             WHERE tenant_id = $1 ORDER BY seq",
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("reading tenant events"))?;
    Ok(rows
        .iter()
        .map(|r| TenantEvent {
            seq: r.get(0),
            kind: r.get(1),
            from_state: r.get(2),
            to_state: r.get(3),
            actor: r.get(4),
            detail: r.get(5),
            at: r.get(6),
        })
        .collect())
}
