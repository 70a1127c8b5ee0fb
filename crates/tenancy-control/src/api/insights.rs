//! Per-tenant performance profiles: applications push the snapshots their SDK recorder
//! drained ([`tenancy_insights::Recorder`]); the server keeps the last window per cluster
//! in memory (bounded: [`tenancy_insights::WindowOptions`]) and answers the top tenants by
//! database time with their latency quantiles, error rates, shares of their cluster's
//! time and the noisy-neighbour flag.
//!
//! Nothing is stored in the catalog: after a restart the report fills again within one
//! push interval.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenancy_insights::{PushError, Pushed, Report, Snapshot};
use utoipa::{IntoParams, ToSchema};

use super::parse_body;
use crate::auth::Admin;
use crate::error::{ApiError, FieldError, Problem, ProblemCode};
use crate::AppState;

/// The noisy-neighbour threshold when a request names none: a tenant using at least
/// half of its cluster's database time while others use it too.
pub const DEFAULT_NOISY_SHARE: f64 = 0.5;

/// The `limit` parameter of a listing: 1 to 1000, `default` when absent.
fn limit_param(limit: Option<i64>, default: i64) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 1000"));
    }
    Ok(limit as usize)
}

/// What happened to a pushed snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotAccepted {
    /// `kept`, or `duplicate` when this source already pushed this sequence number (or
    /// a later one): it is not counted twice.
    #[schema(pattern = "^(kept|duplicate)$")]
    pub status: String,
}

/// Filter of the insights report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InsightsParams {
    /// Only this cluster (its catalog name).
    #[param(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 63)]
    pub cluster: Option<String>,
    /// Tenants to list, 1 to 1000 (default 20).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The share of a cluster's database time from which a tenant is flagged noisy,
    /// above 0 and at most 1 (default 0.5).
    #[param(exclusive_minimum = 0.0, maximum = 1.0)]
    pub noisy_share: Option<f64>,
}

/// Receives a snapshot of an application's per-tenant recording (what
/// `tenancy_insights::Recorder::take` returns), kept for the report's window.
#[utoipa::path(post, path = "/v1/insights/snapshots", tag = "insights", security(("admin" = [])),
    request_body = Snapshot,
    responses((status = 202, body = SnapshotAccepted, description = "Kept (or a duplicate, ignored)"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "Not JSON"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json", description = "Larger than 64 KiB (send fewer tenants: `Snapshot::to_json_within`)"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A field is invalid (`errors` names it)"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "The window holds the most clusters it may")))]
pub async fn push_snapshot(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SnapshotAccepted>), ApiError> {
    let (snapshot, _): (Snapshot, _) = parse_body(&headers, body)?;
    let status = match state.insights().push(snapshot, Instant::now()) {
        Ok(Pushed::Kept) => "kept",
        Ok(Pushed::Duplicate) => "duplicate",
        Err(PushError::Invalid(e)) => {
            return Err(ApiError {
                code: ProblemCode::ValidationFailed,
                detail: format!("the snapshot is invalid: {e}"),
                errors: vec![FieldError {
                    field: e.field,
                    message: e.message,
                }],
                retry_after: None,
            })
        }
        Err(e) => return Err(ApiError::new(ProblemCode::Unavailable, e.to_string())),
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(SnapshotAccepted {
            status: status.into(),
        }),
    ))
}

/// The tenants using the most database time over the last window, per cluster: their
/// p50/p99 statement latency, error rate, share of the cluster's time and whether that
/// share makes them a noisy neighbour.
#[utoipa::path(get, path = "/v1/insights/tenants", tag = "insights", security(("admin" = [])), params(InsightsParams),
    responses((status = 200, body = Report),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "A parameter is not of its type"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A parameter is out of range (`errors` names it)")))]
pub async fn tenants(
    _: Admin,
    State(state): State<AppState>,
    Query(p): Query<InsightsParams>,
) -> Result<Json<Report>, ApiError> {
    let limit = limit_param(p.limit, 20)?;
    let noisy_share = p.noisy_share.unwrap_or(DEFAULT_NOISY_SHARE);
    if !(noisy_share > 0.0 && noisy_share <= 1.0) {
        return Err(ApiError::field(
            "noisy_share",
            "must be above 0 and at most 1 (a share of the cluster's database time)",
        ));
    }
    if let Some(c) = &p.cluster {
        if !tenancy_insights::is_cluster_name(c) {
            return Err(ApiError::field(
                "cluster",
                "must be a cluster name: 1 to 63 characters a-z, 0-9, '_' or '-', starting with a letter",
            ));
        }
    }
    Ok(Json(state.insights().report(
        p.cluster.as_deref(),
        limit,
        noisy_share,
        Instant::now(),
    )))
}

/// What happened to a pushed batch of detections.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomaliesAccepted {
    /// Detections not seen before.
    #[schema(minimum = 0)]
    pub new: u64,
    /// Detections already kept from this source, updated.
    #[schema(minimum = 0)]
    pub updated: u64,
}

/// Detections, the latest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyList {
    /// At most `limit`.
    pub anomalies: Vec<tenancy_insights::anomaly::Anomaly>,
}

/// Filter of the detections listed.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnomalyParams {
    /// Only this tenant's.
    pub tenant: Option<uuid::Uuid>,
    /// Only this detector's or rule's.
    #[param(
        pattern = "^(enumeration|context_refusal|tenant_mismatch|exfiltration|cross_tenant|volume|new_origin|compliance_missing|outside_residency|dedicated_on_pooled|security_override|rollout_region|stuck_provisioning|step_failures|step_duration|change_burst)$"
    )]
    pub kind: Option<String>,
    /// Only this severity or higher.
    #[param(pattern = "^(low|medium|high|critical)$")]
    pub severity: Option<String>,
    /// Only detections whose last flagged hour starts at or after this time (Unix
    /// seconds).
    #[param(minimum = 0, maximum = 9007199254740991_i64)]
    pub since: Option<i64>,
    /// Detections to list, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Receives detections of an application's anomaly detector
/// (`tenancy_insights::anomaly::AnomalyFeed::take_opened`, or its kept detections again to
/// update them), counted in `tenancy_anomalies_total{kind,severity}`; each new one is
/// delivered to the event receivers as an `anomaly.detected` webhook.
#[utoipa::path(post, path = "/v1/insights/anomalies", tag = "insights", security(("admin" = [])),
    request_body = tenancy_insights::anomaly::DetectionBatch,
    responses((status = 202, body = AnomaliesAccepted, description = "Kept"),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "Not JSON"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json", description = "Larger than 64 KiB"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A field is invalid (`errors` names it)")))]
pub async fn push_anomalies(
    _: Admin,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AnomaliesAccepted>), ApiError> {
    let (batch, _): (tenancy_insights::anomaly::DetectionBatch, _) = parse_body(&headers, body)?;
    let pushed = crate::rules::report(&state, batch)
        .await
        .map_err(|e| ApiError {
            code: ProblemCode::ValidationFailed,
            detail: format!("the batch is invalid: {}", e.message),
            errors: vec![FieldError {
                field: e.field,
                message: e.message,
            }],
            retry_after: None,
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AnomaliesAccepted {
            new: pushed.new.len() as u64,
            updated: pushed.updated as u64,
        }),
    ))
}

/// Access anomalies the applications' detectors found and the configuration and
/// provisioning rules' findings (source `rules`), the latest first: tenant, kind, subject,
/// flagged hours, score, severity and evidence (signal, baseline, observed).
#[utoipa::path(get, path = "/v1/insights/anomalies", tag = "insights", security(("admin" = [])), params(AnomalyParams),
    responses((status = 200, body = AnomalyList),
        (status = 400, body = Problem, content_type = "application/problem+json", description = "A parameter is not of its type"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "A parameter is out of range (`errors` names it)")))]
pub async fn anomalies(
    _: Admin,
    State(state): State<AppState>,
    Query(p): Query<AnomalyParams>,
) -> Result<Json<AnomalyList>, ApiError> {
    use tenancy_insights::anomaly::{AnomalyKind, Filter, Severity};
    let limit = limit_param(p.limit, 100)?;
    let tenant = p
        .tenant
        .map(tenancy_core::TenantId::from_uuid)
        .transpose()
        .map_err(|e| ApiError::field("tenant", e.to_string()))?;
    let kind = match p.kind.as_deref() {
        None => None,
        Some(k) => Some(AnomalyKind::parse(k).ok_or_else(|| {
            ApiError::field(
                "kind",
                format!(
                    "must be one of: {}",
                    AnomalyKind::ALL.map(AnomalyKind::as_str).join(", ")
                ),
            )
        })?),
    };
    let min_severity =
        match p.severity.as_deref() {
            None => None,
            Some(s) => Some(Severity::parse(s).ok_or_else(|| {
                ApiError::field("severity", "must be low, medium, high or critical")
            })?),
        };
    let since = match p.since {
        None => None,
        Some(s) if (0..=9_007_199_254_740_991).contains(&s) => Some(s as u64),
        Some(_) => {
            return Err(ApiError::field(
                "since",
                "must be between 0 and 9007199254740991 (Unix seconds)",
            ))
        }
    };
    let filter = Filter {
        tenant,
        kind,
        min_severity,
        since,
    };
    Ok(Json(AnomalyList {
        anomalies: state.anomalies(&filter, limit),
    }))
}
