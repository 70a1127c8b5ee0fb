//! Liveness and the OpenAPI document.

use axum::extract::State;
use axum::Json;
use serde_json::json;

use super::known_plans;
use crate::error::{ApiError, Problem};
use crate::AppState;

/// Liveness, kept for compatibility (`/livez` and `/readyz` are the health checks).
#[utoipa::path(get, path = "/healthz", tag = "meta", responses((status = 200, description = "Alive"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "This document"),
    (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn openapi_json(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut doc = state.openapi();
    // Without the catalog the document is still served, without the list of regions.
    let regions = match state.catalog().await {
        Ok(conn) => tenancy_catalog::list_regions(&conn)
            .await
            .map(|rs| {
                rs.into_iter()
                    .map(|r| r.id.to_string())
                    .collect::<Vec<String>>()
            })
            .map_err(|e| tracing::warn!(error = %e, "listing regions for the OpenAPI document"))
            .ok(),
        Err(_) => None,
    };
    refine_document(&mut doc, regions.as_deref(), &known_plans(&state));
    Ok(Json(doc))
}

/// What the served document says beyond the static one: the regions and plans a request
/// may name now (as enums of the fields that name them), and the reserved words a slug
/// may not be. Regions and plans are only ever added, so a value listed stays valid.
fn refine_document(
    doc: &mut serde_json::Value,
    regions: Option<&[String]>,
    plans: &std::collections::BTreeSet<String>,
) {
    let reserved: Vec<&str> = tenancy_core::ids::RESERVED_SLUGS.to_vec();
    let schemas = &mut doc["components"]["schemas"];
    let mut fields: Vec<(&str, &str, serde_json::Value)> = vec![
        ("CreateTenant", "slug", json!({"not": {"enum": reserved}})),
        ("Signup", "slug", json!({"not": {"enum": reserved}})),
        ("CreateTenant", "plan", json!({"enum": plans})),
        ("ChangePlan", "plan", json!({"enum": plans})),
    ];
    if let Some(regions) = regions {
        for schema in ["CreateTenant", "Signup", "ClusterInput"] {
            fields.push((schema, "region", json!({ "enum": regions })));
        }
    }
    for (schema, field, extra) in fields {
        let Some(prop) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(field))
            .and_then(|f| f.as_object_mut())
        else {
            continue;
        };
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                prop.insert(k.clone(), v.clone());
            }
        }
    }
}
