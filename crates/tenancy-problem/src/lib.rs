//! The one problem document of tenancy (RFC 9457 `application/problem+json`), shared by
//! the control plane, the configuration service, the request layer and the example app.
//!
//! - One `type` URI scheme: `urn:tenancy:problem:<code>` ([`TYPE_PREFIX`]).
//! - One code table: a [`ProblemType`] is a code with its status and title. The codes
//!   every HTTP surface can answer with are here ([`COMMON`]); each crate adds its own
//!   (`slug-taken`, `tenant-suspended`, …) as [`ProblemType`] constants and lists them, so
//!   that a test can check that no code means two things ([`check_table`]).
//! - One body: [`Problem`] (`type`, `title`, `status`, `code`, `detail`, `errors`).
//! - What axum answers by itself (an extractor's rejection of a JSON body, a query string
//!   or a path; the body limit's 413; a 404 or 405 of the router) is plain text; the
//!   [`normalize`] middleware turns every error response that is not yet a problem
//!   document into one, keeping its status and headers (`Allow` of a 405).
//! - [`request_id`]: the request id of a call (`X-Request-Id`: the client's when sane,
//!   else a new one) and the `request_id` member it adds to every problem document.
//! - [`openapi::document_errors`] adds to an OpenAPI document the error responses every
//!   operation can give, from its shape (parameters, body, security).
//!
//! What it does not do: it maps no crate's errors (each crate turns its errors into its
//! codes, and logs their causes where it handles them); it never puts the body of a 5xx
//! it replaces into the problem (that text is logged instead).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod openapi;
pub mod request_id;

/// Prefix of every problem `type` URI.
pub const TYPE_PREFIX: &str = "urn:tenancy:problem:";

/// The media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem type: stable code, HTTP status and fixed title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemType {
    /// The stable code (last segment of the `type` URI).
    pub code: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// A short, fixed title.
    pub title: &'static str,
}

impl ProblemType {
    /// A problem type (for the constants of each crate's table).
    pub const fn new(code: &'static str, status: u16, title: &'static str) -> Self {
        ProblemType {
            code,
            status,
            title,
        }
    }

    /// The `type` URI (`urn:tenancy:problem:<code>`).
    pub fn uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.code)
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem type an error status means when nothing more specific is known.
    pub fn for_status(status: StatusCode) -> ProblemType {
        match status.as_u16() {
            400 => BAD_REQUEST,
            401 => UNAUTHENTICATED,
            403 => FORBIDDEN,
            404 => NOT_FOUND,
            405 => METHOD_NOT_ALLOWED,
            408 => REQUEST_TIMEOUT,
            409 => CONFLICT,
            413 => PAYLOAD_TOO_LARGE,
            415 => UNSUPPORTED_MEDIA_TYPE,
            422 => VALIDATION,
            429 => TOO_MANY_REQUESTS,
            503 => UNAVAILABLE,
            s if s >= 500 => INTERNAL,
            _ => BAD_REQUEST,
        }
    }
}

/// 400: the request is malformed (not JSON, a bad query string or header).
pub const BAD_REQUEST: ProblemType = ProblemType::new("bad-request", 400, "Malformed request");
/// 401: no credential, or one that is not valid.
pub const UNAUTHENTICATED: ProblemType =
    ProblemType::new("unauthenticated", 401, "Authentication required");
/// 403: the caller may not do this.
pub const FORBIDDEN: ProblemType = ProblemType::new("forbidden", 403, "Forbidden");
/// 404: no such resource or route.
pub const NOT_FOUND: ProblemType = ProblemType::new("not-found", 404, "Not found");
/// 405: the route exists but not with this method (see `Allow`).
pub const METHOD_NOT_ALLOWED: ProblemType =
    ProblemType::new("method-not-allowed", 405, "Method not allowed");
/// 408: the request took longer than the server's limit.
pub const REQUEST_TIMEOUT: ProblemType =
    ProblemType::new("request-timeout", 408, "Request took too long");
/// 409: the request conflicts with the current state.
pub const CONFLICT: ProblemType =
    ProblemType::new("conflict", 409, "Not possible in the current state");
/// 413: the body is larger than the server accepts.
pub const PAYLOAD_TOO_LARGE: ProblemType =
    ProblemType::new("payload-too-large", 413, "Request body too large");
/// 415: the body is not in a media type the route accepts.
pub const UNSUPPORTED_MEDIA_TYPE: ProblemType =
    ProblemType::new("unsupported-media-type", 415, "Unsupported media type");
/// 422: the request is well-formed but its content is invalid; `errors` names fields.
pub const VALIDATION: ProblemType = ProblemType::new("validation", 422, "Validation failed");
/// 429: too many requests; see `Retry-After`.
pub const TOO_MANY_REQUESTS: ProblemType =
    ProblemType::new("too-many-requests", 429, "Too many requests");
/// 500: something failed on the server's side (details are in its log, never here).
pub const INTERNAL: ProblemType = ProblemType::new("internal", 500, "Internal error");
/// 503: a dependency is temporarily unavailable.
pub const UNAVAILABLE: ProblemType =
    ProblemType::new("unavailable", 503, "Service temporarily unavailable");

/// The codes every HTTP surface of tenancy can answer with.
pub const COMMON: &[ProblemType] = &[
    BAD_REQUEST,
    UNAUTHENTICATED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    REQUEST_TIMEOUT,
    CONFLICT,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION,
    TOO_MANY_REQUESTS,
    INTERNAL,
    UNAVAILABLE,
];

/// Checks that the tables of several crates (and [`COMMON`]) form one table: every code
/// is kebab-case and means one status and title wherever it appears. Returns what is
/// wrong.
pub fn check_table(tables: &[&[ProblemType]]) -> Result<(), String> {
    let mut seen: std::collections::BTreeMap<&str, ProblemType> = Default::default();
    for t in std::iter::once(COMMON).chain(tables.iter().copied()) {
        for p in t {
            if p.code.is_empty()
                || !p
                    .code
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(format!("code {:?} is not kebab-case", p.code));
            }
            let is_error = StatusCode::from_u16(p.status)
                .is_ok_and(|s| s.is_client_error() || s.is_server_error());
            if !is_error {
                return Err(format!(
                    "code {:?} has status {}, not an error",
                    p.code, p.status
                ));
            }
            match seen.get(p.code) {
                Some(q) if q != p => {
                    return Err(format!("code {:?} means both {q:?} and {p:?}", p.code))
                }
                _ => {
                    seen.insert(p.code, *p);
                }
            }
        }
    }
    Ok(())
}

/// One invalid field of a `validation` problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field (`slug`, `display_name`, `variants/on`).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// An RFC 9457 problem document. Its code and title come from the code table, so they
/// are static: a problem is built and sent, never read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// URI of the problem type (`urn:tenancy:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Explanation of this occurrence, safe to show (never internal details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The invalid fields, for `validation`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// A problem of type `t` (a [`ProblemType`] or a crate's code that converts into
    /// one) with an optional detail.
    pub fn new(t: impl Into<ProblemType>, detail: impl Into<Option<String>>) -> Problem {
        let t = t.into();
        Problem {
            type_: t.uri(),
            title: t.title,
            status: t.status,
            code: t.code,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    /// The same problem with these field errors.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = errors;
        self
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (self.status_code(), body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        resp
    }
}

/// Largest body of an error response [`normalize`] reads to keep as the detail.
const MAX_DETAIL_BODY: usize = 4096;

/// Middleware (`axum::middleware::from_fn(tenancy_problem::normalize)`): every error
/// response (4xx, 5xx) that is not already `application/problem+json` becomes a problem
/// document of the type its status means, with the same status and headers. The plain
/// text of a 4xx (axum's rejection message, such as "Failed to deserialize query string:
/// missing field `slug`") is kept as the detail; a 5xx's text is logged, not shown.
pub async fn normalize(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    to_problem(resp).await
}

/// What [`normalize`] does to one response.
pub async fn to_problem(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(CONTENT_TYPE));
    if is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL_BODY)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let t = ProblemType::for_status(status);
    let detail = if status.is_server_error() {
        if !text.is_empty() {
            tracing::error!(status = status.as_u16(), body = %text, "error response without a problem document");
        }
        None
    } else if text.is_empty() {
        None
    } else {
        Some(text)
    };
    let mut problem = Problem::new(t, detail);
    // Keep the status as answered (a 4xx without its own code in the table keeps it).
    problem.status = status.as_u16();
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_table_is_one_table_and_a_clash_is_found() {
        assert_eq!(check_table(&[]), Ok(()));
        const CLASH: ProblemType = ProblemType::new("not-found", 410, "Gone");
        assert!(check_table(&[&[CLASH]]).is_err());
        const BAD: ProblemType = ProblemType::new("Not_Found", 404, "x");
        assert!(check_table(&[&[BAD]]).is_err());
        const OK: ProblemType = ProblemType::new("slug-taken", 409, "Slug already taken");
        assert_eq!(check_table(&[&[OK], &[OK]]), Ok(()));
    }

    #[test]
    fn every_common_status_maps_back_to_its_type() {
        for t in COMMON {
            assert_eq!(ProblemType::for_status(t.status_code()), *t, "{t:?}");
        }
    }

    #[tokio::test]
    async fn plain_text_errors_become_problems_and_others_pass() {
        use axum::body::to_bytes;
        let plain = (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET,HEAD")],
            "",
        )
            .into_response();
        let r = to_problem(plain).await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        assert_eq!(r.headers()[header::ALLOW], "GET,HEAD");
        let p: serde_json::Value =
            serde_json::from_slice(&to_bytes(r.into_body(), 4096).await.expect("body"))
                .expect("problem");
        assert_eq!(p["type"], "urn:tenancy:problem:method-not-allowed");
        assert_eq!(p["status"], 405);
        assert!(p.get("detail").is_none(), "{p}");

        let rejection = (
            StatusCode::BAD_REQUEST,
            "Failed to deserialize query string",
        )
            .into_response();
        let r = to_problem(rejection).await;
        let p: serde_json::Value =
            serde_json::from_slice(&to_bytes(r.into_body(), 4096).await.expect("body"))
                .expect("problem");
        assert_eq!(p["code"], "bad-request");
        assert_eq!(p["detail"], "Failed to deserialize query string");

        let secret = (StatusCode::INTERNAL_SERVER_ERROR, "db password wrong").into_response();
        let r = to_problem(secret).await;
        let p: serde_json::Value =
            serde_json::from_slice(&to_bytes(r.into_body(), 4096).await.expect("body"))
                .expect("problem");
        assert_eq!(p["code"], "internal");
        assert!(p.get("detail").is_none(), "the 5xx text is not shown: {p}");

        let ok = (StatusCode::OK, "fine").into_response();
        let r = to_problem(ok).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            &to_bytes(r.into_body(), 64).await.expect("body")[..],
            b"fine"
        );
    }
}
