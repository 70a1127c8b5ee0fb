//! The registry: regions and clusters.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_catalog::NewCluster;
use tenancy_core::RegionId;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{check_text, parse_field, to_value, AdminPost};
use crate::auth::Admin;
use crate::error::{ApiError, Problem};
use crate::AppState;

/// A region.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionView {
    /// Region id.
    pub id: String,
    /// Name shown to people.
    pub display_name: String,
}

/// A region to register (or whose display name to change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionInput {
    /// 2-32 characters: a-z, 0-9, single '-'; starts with a letter.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub id: String,
    /// 1 to 50 characters, not only spaces, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 50
    )]
    pub display_name: String,
}

/// A cluster of a region.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// Cluster id.
    pub id: Uuid,
    /// Unique name.
    pub name: String,
    /// The region it belongs to (never changes).
    pub region: String,
    /// Host name, address or socket directory.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The shared tenant database.
    pub dbname: String,
    /// Most tenants the placement policy puts here.
    pub capacity: i32,
}

/// A cluster to register in a region (or whose connection settings to change).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterInput {
    /// Ignored (the server assigns cluster ids).
    #[serde(default)]
    pub id: Option<Uuid>,
    /// 1-63 characters: a-z, 0-9, '_' and '-'; starts with a letter. A cluster of the
    /// same name is updated.
    #[schema(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 63)]
    pub name: String,
    /// A registered region.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 2,
        max_length = 32
    )]
    pub region: String,
    /// Host name, address or socket directory (not only spaces, no control characters).
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 255
    )]
    pub host: String,
    /// TCP port.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// Database name (not only spaces, no control characters).
    #[schema(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$",
        min_length = 1,
        max_length = 63
    )]
    pub dbname: String,
    /// Tenants the cluster takes (at least 1).
    #[schema(minimum = 1, maximum = 2147483647)]
    pub capacity: i32,
}

/// Lists the regions.
#[utoipa::path(get, path = "/v1/regions", tag = "registry", security(("admin" = [])),
    responses((status = 200, body = [RegionView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_regions(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<RegionView>>, ApiError> {
    let conn = state.catalog().await?;
    let rs = tenancy_catalog::list_regions(&conn).await?;
    Ok(Json(rs.into_iter().map(region_view).collect()))
}

/// Registers a region, or changes its display name.
#[utoipa::path(post, path = "/v1/regions", tag = "registry", security(("admin" = [])), request_body = RegionInput,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key; same key and body replay the first response")),
    responses((status = 201, body = RegionView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn add_region(
    State(state): State<AppState>,
    post: AdminPost<RegionInput>,
) -> Result<Response, ApiError> {
    post.run(&state, "/v1/regions", |state, req| async move {
        let id: RegionId = parse_field("id", &req.id)?;
        check_text("display_name", &req.display_name, 50)?;
        let conn = state.catalog().await?;
        let r = tenancy_catalog::add_region(&conn, &id, &req.display_name).await?;
        Ok((StatusCode::CREATED, to_value(&region_view(r))))
    })
    .await
}

fn region_view(r: tenancy_catalog::Region) -> RegionView {
    RegionView {
        id: r.id.to_string(),
        display_name: r.display_name,
    }
}

fn cluster_view(c: tenancy_catalog::ClusterRecord) -> ClusterView {
    ClusterView {
        id: c.id,
        name: c.name,
        region: c.region.to_string(),
        host: c.location.host,
        port: c.location.port,
        dbname: c.location.dbname,
        capacity: c.capacity,
    }
}

/// Lists the clusters of every region.
#[utoipa::path(get, path = "/v1/clusters", tag = "registry", security(("admin" = [])),
    responses((status = 200, body = [ClusterView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list_clusters(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<ClusterView>>, ApiError> {
    let conn = state.catalog().await?;
    Ok(Json(
        tenancy_catalog::list_clusters(&conn)
            .await?
            .into_iter()
            .map(cluster_view)
            .collect(),
    ))
}

/// Registers a cluster in a region, or changes its connection settings.
#[utoipa::path(post, path = "/v1/clusters", tag = "registry", security(("admin" = [])), request_body = ClusterInput,
    params(("Idempotency-Key" = String, Header, description = "Client-chosen key")),
    responses((status = 201, body = ClusterView), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub async fn add_cluster(
    State(state): State<AppState>,
    post: AdminPost<ClusterInput>,
) -> Result<Response, ApiError> {
    post.run(&state, "/v1/clusters", |state, req| async move {
        let region: RegionId = parse_field("region", &req.region)?;
        check_text("host", &req.host, 255)?;
        check_text("dbname", &req.dbname, 63)?;
        if req.port == 0 {
            return Err(ApiError::field("port", "must be 1 to 65535"));
        }
        let conn = state.catalog().await?;
        let c = tenancy_catalog::add_cluster(
            &conn,
            &NewCluster {
                name: req.name.clone(),
                region,
                location: tenancy_catalog::ClusterLocation {
                    host: req.host.clone(),
                    port: req.port,
                    dbname: req.dbname.clone(),
                },
                capacity: req.capacity,
            },
        )
        .await?;
        Ok((StatusCode::CREATED, to_value(&cluster_view(c))))
    })
    .await
}
