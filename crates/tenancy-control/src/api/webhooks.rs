//! Outbound webhook deliveries.

use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Admin;
use crate::error::{ApiError, Problem};
use crate::AppState;

/// One webhook delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` sent (the same for every attempt of one message).
    pub webhook_id: String,
    /// The receiver's name.
    pub receiver: String,
    /// The tenant the message is about.
    pub tenant_id: Option<Uuid>,
    /// The event type (`tenant.activated`, …).
    pub event_type: String,
    /// Attempt number, from 1.
    pub attempt: i32,
    /// The receiver's HTTP status, when it answered.
    pub http_status: Option<i32>,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
    /// Duration of the attempt in milliseconds.
    pub ms: f64,
}

/// Delivery log filter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// Only this tenant's deliveries.
    pub tenant: Option<Uuid>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// Lists webhook delivery attempts, newest first.
#[utoipa::path(get, path = "/v1/webhook-deliveries", tag = "webhooks", security(("admin" = [])), params(DeliveryParams),
    responses((status = 200, body = [DeliveryView]), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Query(p): Query<DeliveryParams>,
) -> Result<Json<Vec<DeliveryView>>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 500"));
    }
    let tenant = p
        .tenant
        .map(TenantId::from_uuid)
        .transpose()
        .map_err(|e| ApiError::field("tenant", e.to_string()))?;
    let conn = state.catalog().await?;
    let log = tenancy_catalog::deliveries(&conn, tenant, limit).await?;
    Ok(Json(
        log.into_iter()
            .map(|d| DeliveryView {
                webhook_id: d.webhook_id,
                receiver: d.receiver,
                tenant_id: d.tenant_id.map(|t| t.as_uuid()),
                event_type: d.event_type,
                attempt: d.attempt,
                http_status: d.http_status,
                error: d.error,
                ms: d.ms,
            })
            .collect(),
    ))
}
