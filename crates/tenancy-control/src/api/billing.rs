//! Stripe billing webhooks.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, Problem, ProblemCode};
use crate::{stripe, AppState};

/// Result of a billing webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingOutcome {
    /// Always true: the event was read and its signature verified.
    pub received: bool,
    /// The event id was already processed.
    pub duplicate: bool,
    /// What it caused (`provision`, `suspend`, …, or `ignored: <why>`).
    pub outcome: String,
    /// The workflow it queued, if any.
    pub workflow_id: Option<Uuid>,
}

/// Receives a Stripe webhook (signature checked) and queues what it causes: provision, suspend, resume, change of plan or delete.
#[utoipa::path(post, path = "/v1/billing/stripe", tag = "billing",
    request_body(content = Object, description = "The Stripe event, as Stripe sends it (its signature covers the exact bytes)"),
    params(("Stripe-Signature" = String, Header, description = "t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.payload\">", min_length = 1)),
    responses((status = 200, body = BillingOutcome), (status = 400, body = Problem, content_type = "application/problem+json", description = "The signature is missing, malformed, wrong or too old (`invalid-signature`), or the event is not JSON"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "Billing webhooks are not configured (no Stripe signing secret)"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body.map_err(|_| {
        ApiError::new(
            ProblemCode::PayloadTooLarge,
            "the request body is larger than 64 KiB",
        )
    })?;
    let Some(header) = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    else {
        return Err(ApiError::new(
            ProblemCode::InvalidSignature,
            "the Stripe-Signature header is missing",
        ));
    };
    let Some(secret) = state.stripe_secret() else {
        return Err(ApiError::new(
            ProblemCode::NotFound,
            "billing webhooks are not configured",
        ));
    };
    stripe::verify(
        &secret,
        header,
        &bytes,
        tenancy_provision::webhook::unix_now(),
        state.stripe_tolerance(),
    )
    .map_err(|e| ApiError::new(ProblemCode::InvalidSignature, e.to_string()))?;
    let event: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ProblemCode::BadRequest,
            format!("the event is not JSON: {e}"),
        )
    })?;
    let outcome = crate::billing::handle(&state, &event).await?;
    Ok((StatusCode::OK, Json(outcome)).into_response())
}
