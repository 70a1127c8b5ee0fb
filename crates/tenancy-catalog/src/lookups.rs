//! Catalog lookups of the runtime role: one tenant by a key the caller already holds, and
//! the cluster its route names.
//!
//! The runtime role reads no catalog table (migration `0006_runtime_lookups`): it calls
//! `SECURITY DEFINER` functions that return at most one row, with only what the request
//! layer and the SDK router need to resolve a tenant and open its transaction. A
//! [`TenantRoute`] therefore has no display name, plan or billing link; operators read
//! the full [`crate::Tenant`] as the owner role ([`crate::get_tenant`]).

use tenancy_core::{Placement, RegionId, Slug, TenantId, TenantState};
use tokio_postgres::{Client, Row};
use uuid::Uuid;

use crate::corrupt;
use crate::store::{cluster_location, ClusterLocation};
use crate::CatalogError;

/// What resolving and opening one tenant needs: who it is, its state, and where its data
/// lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoute {
    /// Tenant id.
    pub id: TenantId,
    /// Slug (what path prefixes and subdomains name).
    pub slug: Slug,
    /// Region the tenant is pinned to (the router refuses a cluster of another region).
    pub region: RegionId,
    /// Placement: which database and schema its transactions open in.
    pub placement: Placement,
    /// Cluster holding its data.
    pub cluster_id: Uuid,
    /// Lifecycle state (only active tenants reach their data).
    pub state: TenantState,
    /// Its own schema in the region's shared database (schema placement).
    pub schema_name: Option<String>,
    /// Its own database on its cluster (dedicated placement).
    pub database_name: Option<String>,
    /// A move's cutover holds the tenant's writes now: the router waits (bounded) for it
    /// to end before opening a transaction, then reads the route again.
    pub cutover: bool,
}

/// Where a cluster's databases are (never how to log in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRoute {
    /// Cluster id.
    pub id: Uuid,
    /// Unique name (for error messages).
    pub name: String,
    /// Region the cluster is in.
    pub region: RegionId,
    /// Where its shared tenant database is (the direct address).
    pub location: ClusterLocation,
    /// Where applications reach it through a transaction-mode pooler (host, port), when
    /// one is registered ([`set_cluster_pooler`](crate::set_cluster_pooler)); `location`
    /// stays the direct address.
    pub pooler: Option<(String, u16)>,
}

/// A cluster route reads as its direct location too (`cluster.dbname`, `cluster.host`).
impl std::ops::Deref for ClusterRoute {
    type Target = ClusterLocation;

    fn deref(&self) -> &ClusterLocation {
        &self.location
    }
}

/// The columns of `tenancy_catalog.tenant_route*`, in order.
const ROUTE_COLUMNS: &str =
    "id, slug, region, placement, cluster_id, state, schema_name, database_name, cutover";

fn route_from_row(row: &Row) -> Result<TenantRoute, CatalogError> {
    Ok(TenantRoute {
        id: TenantId::from_uuid(row.get(0)).map_err(corrupt)?,
        slug: row.get::<_, String>(1).parse().map_err(corrupt)?,
        region: row.get::<_, String>(2).parse().map_err(corrupt)?,
        placement: row.get::<_, String>(3).parse().map_err(corrupt)?,
        cluster_id: row.get(4),
        state: row.get::<_, String>(5).parse().map_err(corrupt)?,
        schema_name: row.get(6),
        database_name: row.get(7),
        cutover: row.get(8),
    })
}

/// The route of the tenant with this id, `None` when there is none.
pub async fn tenant_route(
    client: &Client,
    id: TenantId,
) -> Result<Option<TenantRoute>, CatalogError> {
    let row = client
        .query_opt(
            &format!("SELECT {ROUTE_COLUMNS} FROM tenancy_catalog.tenant_route($1)"),
            &[&id.as_uuid()],
        )
        .await
        .map_err(CatalogError::db("looking up a tenant"))?;
    row.as_ref().map(route_from_row).transpose()
}

/// The route of the tenant with this slug, `None` when there is none.
pub async fn tenant_route_by_slug(
    client: &Client,
    slug: &Slug,
) -> Result<Option<TenantRoute>, CatalogError> {
    let row = client
        .query_opt(
            &format!("SELECT {ROUTE_COLUMNS} FROM tenancy_catalog.tenant_route_by_slug($1)"),
            &[&slug.as_str()],
        )
        .await
        .map_err(CatalogError::db("looking up a tenant by slug"))?;
    row.as_ref().map(route_from_row).transpose()
}

/// Where the cluster with this id is (the id comes from a [`TenantRoute`]).
pub async fn cluster_route(client: &Client, id: Uuid) -> Result<ClusterRoute, CatalogError> {
    let row = client
        .query_opt(
            "SELECT id, name, region, host, port, dbname, pooler_host, pooler_port
               FROM tenancy_catalog.cluster_route($1)",
            &[&id],
        )
        .await
        .map_err(CatalogError::db("looking up a cluster"))?
        .ok_or_else(|| CatalogError::ClusterNotFound(id.to_string()))?;
    let pooler = match (
        row.get::<_, Option<String>>(6),
        row.get::<_, Option<i32>>(7),
    ) {
        (Some(host), Some(port)) => Some((host, u16::try_from(port).map_err(corrupt)?)),
        _ => None,
    };
    Ok(ClusterRoute {
        id: row.get(0),
        name: row.get(1),
        region: row.get::<_, String>(2).parse().map_err(corrupt)?,
        location: cluster_location(&row)?,
        pooler,
    })
}
