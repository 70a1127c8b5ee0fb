//! `GET /v1/tenants/{id}/report`: a tenant's compliance evidence report, signed, as JSON
//! (`format=json`, the default) or as one self-contained HTML page (`format=html`).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::tenant_ref;
use crate::auth::Admin;
use crate::error::{ApiError, Problem};
use crate::report::model as m;
use crate::report::{self, SignedReport};
use crate::AppState;

/// The representation of a report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// `json` (the signed document; default) or `html` (a page for people that embeds it).
    #[param(pattern = "^(json|html)$")]
    pub format: Option<String>,
}

/// What the page forbids a browser to load: anything (its style is inline).
const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// A tenant's compliance evidence, signed with the control plane's audit checkpoint key:
/// placement and region history, residency, isolation check and probe, keys, audit chain
/// verification and last checkpoint, access anomalies, retention and legal hold,
/// exports and moves.
#[utoipa::path(get, path = "/v1/tenants/{id}/report", tag = "tenants", security(("admin" = [])),
    params(("id" = String, Path, description = "Tenant id (UUID) or slug", pattern = "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-z][a-z0-9]*(-[a-z0-9]+)*)$", min_length = 3, max_length = 40), ReportParams),
    responses(
        (status = 200, description = "The signed report (JSON), or its HTML page", content(
            (SignedReport = "application/json"),
            (String = "text/html"),
        )),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json", description = "An unknown format"),
        (status = 503, body = Problem, content_type = "application/problem+json", description = "The catalog cannot be reached, or this control plane has no signing key")))]
pub async fn tenant_report(
    _: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let html = match p.format.as_deref() {
        None | Some("json") => false,
        Some("html") => true,
        Some(_) => return Err(ApiError::field("format", "must be json or html")),
    };
    let id = tenant_ref(&state, &id).await?;
    let body = report::collect(&state, id).await?;
    let sealer = state.audit().ok_or_else(|| {
        ApiError::new(
            crate::error::ProblemCode::Unavailable,
            "this control plane signs no reports (it has no audit signing key)",
        )
    })?;
    let signed = report::sign(body, sealer.signer());
    if html {
        Ok((
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            ],
            report::html::render(&signed),
        )
            .into_response())
    } else {
        Ok(Json(signed).into_response())
    }
}

/// The report's path and schemas, merged into the control plane's document (before its
/// error responses are completed).
#[derive(utoipa::OpenApi, Debug)]
#[openapi(
    paths(tenant_report),
    components(schemas(
        SignedReport,
        m::ReportSignature,
        m::Report,
        m::TenantFacts,
        m::Location,
        m::PlacementPeriod,
        m::MoveView,
        m::PlacementSection,
        m::ResidencySection,
        m::FindingView,
        m::IsolationSection,
        m::DataKeyView,
        m::KeySection,
        m::CheckpointSummary,
        m::ChainView,
        m::DayCount,
        m::AuditSection,
        m::EvidenceView,
        m::AnomalyView,
        m::WeekCount,
        m::AnomalySection,
        m::AnchorView,
        m::RetentionSection,
        m::ControlEvent,
        m::ExportView
    ))
)]
pub struct ReportDoc;

impl utoipa::Modify for ReportDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::OpenApi as _;
        openapi.merge(ReportDoc::openapi());
    }
}
