//! Idempotency keys: the same key with the same body returns the first response; the
//! same key with another body is refused with 422; a key still executing gives 409 with
//! `Retry-After`. A request runs to its end and its answer is stored even when its client
//! goes away meanwhile, so the retry of an interrupted request gets the answer of the
//! first execution, never a second execution (such as `slug-taken` for its own tenant).

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tenancy_catalog::IdempotencyBegin;

use crate::error::{problem_response, ApiError, ProblemCode};
use crate::AppState;

/// A reservation older than this whose request never finished (the process stopped while
/// running it) is taken over.
const STALE: Duration = Duration::from_secs(60);

/// `Retry-After` of a request whose key is still executing: requests take well under a
/// second, so the first answer is usually there by then.
const IN_PROGRESS_RETRY: Duration = Duration::from_secs(1);

/// Reads the `Idempotency-Key` header (1 to 255 visible ASCII characters).
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| {
        ApiError::new(
            ProblemCode::BadRequest,
            "Idempotency-Key must be visible ASCII",
        )
    })?;
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::new(
            ProblemCode::BadRequest,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(s.to_owned()))
}

/// Hash of the request: method, path and the JSON body in canonical form (sorted keys),
/// so formatting differences do not count as a different body.
pub fn request_hash(scope: &str, body: &serde_json::Value) -> String {
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(scope.as_bytes());
    h.update([0]);
    h.update(&canonical);
    hex::encode(h.finalize())
}

/// Runs `f` (given the state) at most once per (scope, key). Responses below 500 are
/// stored and replayed; a 5xx or 429 releases the key so the client can retry. `f` runs
/// in a task of its own: dropping this future (the client closed the connection) does
/// not stop it, so its answer is stored for the retry.
pub async fn run<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    scope: String,
    body: &serde_json::Value,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(AppState) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>> + Send + 'static,
{
    let Some(key) = key_from(headers)? else {
        return Err(ApiError::new(
            ProblemCode::IdempotencyKeyRequired,
            "send an Idempotency-Key header (e.g. a UUID) with every POST that changes state",
        ));
    };
    let hash = request_hash(&scope, body);
    // From the reservation of the key to the storing of the answer, in a task of its own.
    let task_state = state.clone();
    let (task_scope, task_key) = (scope.clone(), key.clone());
    let task =
        tokio::spawn(async move { execute(&task_state, &task_scope, &task_key, &hash, f).await });
    match task.await {
        Ok(answer) => answer,
        Err(e) => {
            // The request panicked: nothing is stored, so a retry runs it again.
            let conn = state.catalog().await?;
            tenancy_catalog::idempotency_abandon(&conn, &scope, &key).await?;
            Err(ApiError::internal("running an idempotent request", &e))
        }
    }
}

/// Reserves the key, runs `f` when the key is new, and stores its answer.
async fn execute<F, Fut>(
    state: &AppState,
    scope: &str,
    key: &str,
    hash: &str,
    f: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(AppState) -> Fut,
    Fut: Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let conn = state.catalog().await?;
    match tenancy_catalog::idempotency_begin(&conn, scope, key, hash, STALE).await? {
        IdempotencyBegin::New => {}
        IdempotencyBegin::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut resp = if status.is_success() {
                (status, axum::Json(body)).into_response()
            } else {
                problem_response(status, &body)
            };
            resp.headers_mut().insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return Ok(resp);
        }
        IdempotencyBegin::Mismatch => {
            return Err(ApiError::new(
                ProblemCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used with a different request body",
            ))
        }
        IdempotencyBegin::InProgress => {
            return Err(ApiError::new(
                ProblemCode::IdempotencyInProgress,
                "a request with this Idempotency-Key is still being processed; retry after the number of seconds in Retry-After",
            )
            .retry_after(IN_PROGRESS_RETRY))
        }
    }
    drop(conn);
    let result = f(state.clone()).await;
    finish(state, scope, key, result).await
}

/// Stores the answer of a request (or releases its key) and returns it.
async fn finish(
    state: &AppState,
    scope: &str,
    key: &str,
    result: Result<(StatusCode, serde_json::Value), ApiError>,
) -> Result<Response, ApiError> {
    let conn = state.catalog().await?;
    match result {
        Ok((status, value)) => {
            tenancy_catalog::idempotency_complete(&conn, scope, key, status.as_u16(), &value)
                .await?;
            Ok((status, axum::Json(value)).into_response())
        }
        // A refusal to retry later (a rate or quota limit) is not the request's answer.
        Err(e) if e.status().is_server_error() || e.status() == StatusCode::TOO_MANY_REQUESTS => {
            tenancy_catalog::idempotency_abandon(&conn, scope, key).await?;
            Err(e)
        }
        Err(e) => {
            let problem = serde_json::to_value(e.problem()).unwrap_or_default();
            tenancy_catalog::idempotency_complete(&conn, scope, key, e.status().as_u16(), &problem)
                .await?;
            Err(e)
        }
    }
}
