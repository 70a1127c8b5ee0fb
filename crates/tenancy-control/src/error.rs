//! The control plane's HTTP error, rendered as the one problem document of tenancy
//! ([`tenancy_problem::Problem`], `application/problem+json`).
//!
//! Every problem has a stable `code` (also the last segment of its `type` URI,
//! `urn:tenancy:problem:<code>`); this crate's part of the code table is [`ProblemCode`]
//! (the common codes are [`tenancy_problem::COMMON`]). Internal details are logged here,
//! where the error is handled, and never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tenancy_catalog::CatalogError;
use tenancy_conn::DbError;
use tenancy_problem::ProblemType;

pub use tenancy_problem::{FieldError, Problem};

/// The problem codes of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemCode {
    /// 400: the request is malformed (not JSON, wrong types).
    BadRequest,
    /// 401: missing or wrong admin token.
    Unauthorized,
    /// 404: no such resource.
    NotFound,
    /// 409: the slug is taken.
    SlugTaken,
    /// 409: the resource is in a state that does not allow this.
    Conflict,
    /// 409: a request with this idempotency key is still executing; see `Retry-After`.
    IdempotencyInProgress,
    /// 400: this endpoint needs an `Idempotency-Key` header.
    IdempotencyKeyRequired,
    /// 422: the idempotency key was used with a different body.
    IdempotencyKeyReused,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 422: input failed validation; `errors` lists the fields.
    ValidationFailed,
    /// 400: the webhook signature is missing, malformed, wrong or too old.
    InvalidSignature,
    /// 503: no cluster of the region accepts tenants.
    NoCapacity,
    /// 415: the body must be JSON.
    UnsupportedMediaType,
    /// 408: the request (its body, or all of it) took longer than the configured limit.
    RequestTimeout,
    /// 429: too many requests from this client or from everyone; see `Retry-After`.
    TooManyRequests,
    /// 429: this client reached its signup quota; see `Retry-After`.
    SignupQuotaExceeded,
    /// 503: the signup quota of everyone together is reached; see `Retry-After`.
    SignupsPaused,
    /// 503: a dependency (the catalog database) is unreachable, or the server is not
    /// ready or is shutting down; retry later.
    Unavailable,
    /// 500: something failed on our side (details are in the server log).
    Internal,
}

/// 409: the slug is taken.
pub const SLUG_TAKEN: ProblemType = ProblemType::new("slug-taken", 409, "Slug already taken");
/// 409: a request with this Idempotency-Key is still executing.
pub const IDEMPOTENCY_IN_PROGRESS: ProblemType = ProblemType::new(
    "idempotency-in-progress",
    409,
    "A request with this Idempotency-Key is in progress",
);
/// 400: the Idempotency-Key header is missing.
pub const IDEMPOTENCY_KEY_REQUIRED: ProblemType = ProblemType::new(
    "idempotency-key-required",
    400,
    "Idempotency-Key header required",
);
/// 422: the Idempotency-Key was used with another request.
pub const IDEMPOTENCY_KEY_REUSED: ProblemType = ProblemType::new(
    "idempotency-key-reused",
    422,
    "Idempotency-Key reused with a different request",
);
/// 400: the webhook signature is not valid.
pub const INVALID_SIGNATURE: ProblemType =
    ProblemType::new("invalid-signature", 400, "Invalid webhook signature");
/// 503: no cluster of the region accepts tenants.
pub const NO_CAPACITY: ProblemType =
    ProblemType::new("no-capacity", 503, "No capacity in the region");
/// 429: this client's signup quota is reached.
pub const SIGNUP_QUOTA_EXCEEDED: ProblemType = ProblemType::new(
    "signup-quota-exceeded",
    429,
    "Signup quota of this client reached",
);
/// 503: the signup quota of everyone together is reached.
pub const SIGNUPS_PAUSED: ProblemType =
    ProblemType::new("signups-paused", 503, "Signups are paused");

impl ProblemCode {
    /// Every code, for the documentation table and tests.
    pub const ALL: &'static [ProblemCode] = &[
        ProblemCode::BadRequest,
        ProblemCode::Unauthorized,
        ProblemCode::NotFound,
        ProblemCode::SlugTaken,
        ProblemCode::Conflict,
        ProblemCode::IdempotencyInProgress,
        ProblemCode::IdempotencyKeyRequired,
        ProblemCode::IdempotencyKeyReused,
        ProblemCode::PayloadTooLarge,
        ProblemCode::ValidationFailed,
        ProblemCode::InvalidSignature,
        ProblemCode::NoCapacity,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::RequestTimeout,
        ProblemCode::TooManyRequests,
        ProblemCode::SignupQuotaExceeded,
        ProblemCode::SignupsPaused,
        ProblemCode::Unavailable,
        ProblemCode::Internal,
    ];

    /// This crate's part of the code table (for [`tenancy_problem::check_table`]).
    pub fn table() -> Vec<ProblemType> {
        Self::ALL.iter().map(|c| c.problem_type()).collect()
    }

    /// The problem type (code, status, title).
    pub fn problem_type(&self) -> ProblemType {
        use ProblemCode::*;
        match self {
            BadRequest => tenancy_problem::BAD_REQUEST,
            Unauthorized => tenancy_problem::UNAUTHENTICATED,
            NotFound => tenancy_problem::NOT_FOUND,
            SlugTaken => SLUG_TAKEN,
            Conflict => tenancy_problem::CONFLICT,
            IdempotencyInProgress => IDEMPOTENCY_IN_PROGRESS,
            IdempotencyKeyRequired => IDEMPOTENCY_KEY_REQUIRED,
            IdempotencyKeyReused => IDEMPOTENCY_KEY_REUSED,
            PayloadTooLarge => tenancy_problem::PAYLOAD_TOO_LARGE,
            ValidationFailed => tenancy_problem::VALIDATION,
            InvalidSignature => INVALID_SIGNATURE,
            NoCapacity => NO_CAPACITY,
            UnsupportedMediaType => tenancy_problem::UNSUPPORTED_MEDIA_TYPE,
            RequestTimeout => tenancy_problem::REQUEST_TIMEOUT,
            TooManyRequests => tenancy_problem::TOO_MANY_REQUESTS,
            SignupQuotaExceeded => SIGNUP_QUOTA_EXCEEDED,
            SignupsPaused => SIGNUPS_PAUSED,
            Unavailable => tenancy_problem::UNAVAILABLE,
            Internal => tenancy_problem::INTERNAL,
        }
    }

    /// `(code, status, title)`.
    pub fn parts(&self) -> (&'static str, StatusCode, &'static str) {
        let t = self.problem_type();
        (t.code, t.status_code(), t.title)
    }
}

impl From<ProblemCode> for ProblemType {
    fn from(c: ProblemCode) -> ProblemType {
        c.problem_type()
    }
}

/// The control plane's error.
#[derive(Debug)]
pub struct ApiError {
    /// Which problem.
    pub code: ProblemCode,
    /// Safe-to-show explanation.
    pub detail: String,
    /// Field errors.
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A problem with a detail.
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        ApiError {
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// The same problem with a `Retry-After` of `wait` (whole seconds, at least 1).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(crate::guard::retry_after_secs(wait));
        self
    }

    /// A rate limit refused the request.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        ApiError::new(
            ProblemCode::TooManyRequests,
            "too many requests; retry after the number of seconds in Retry-After",
        )
        .retry_after(wait)
    }

    /// A validation problem about one field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            code: ProblemCode::ValidationFailed,
            detail: format!("{field}: {message}"),
            errors: vec![FieldError {
                field: field.to_owned(),
                message,
            }],
            retry_after: None,
        }
    }

    /// An internal error: logged with its cause (and its causes; PostgreSQL's message,
    /// SQLSTATE, detail and hint spelled out), returned without it.
    pub fn internal(what: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %tenancy_conn::ErrorText(cause), "{what}");
        ApiError::new(
            ProblemCode::Internal,
            "an internal error occurred; it has been logged",
        )
    }

    /// A dependency is down (the catalog database): logged with its cause, returned as a
    /// 503 without it.
    pub fn unavailable(what: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %tenancy_conn::ErrorText(cause), "{what}");
        ApiError::new(
            ProblemCode::Unavailable,
            "a service this request needs is unavailable; retry later",
        )
        .retry_after(std::time::Duration::from_secs(5))
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        Problem::new(self.code.problem_type(), Some(self.detail.clone()))
            .with_errors(self.errors.clone())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.parts().1
    }
}

/// What PostgreSQL refuses about a value rather than about us: a character it cannot
/// store (NUL in text or `jsonb`), a number out of range, a value too long, a CHECK. Input
/// validation refuses these first; this is the net for what it cannot see, so that such
/// input is a 422, never a 500.
fn input_refused_by_database(e: &tokio_postgres::Error) -> Option<ApiError> {
    use tokio_postgres::error::SqlState;
    let db = e.as_db_error()?;
    let what = match db.code() {
        c if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *c == SqlState::UNTRANSLATABLE_CHARACTER
            || *c == SqlState::NONSTANDARD_USE_OF_ESCAPE_CHARACTER =>
        {
            "contains a character that cannot be stored (such as NUL)"
        }
        c if *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
            || *c == SqlState::DATETIME_FIELD_OVERFLOW
            || *c == SqlState::INTERVAL_FIELD_OVERFLOW =>
        {
            "is out of the range that can be stored"
        }
        c if *c == SqlState::STRING_DATA_RIGHT_TRUNCATION => "is too long",
        c if *c == SqlState::CHECK_VIOLATION => "is not an allowed value",
        _ => return None,
    };
    // A column CHECK is named `<table>_<column>_check` by PostgreSQL: name the column.
    let from_constraint = db.constraint().map(|c| {
        db.table()
            .and_then(|t| c.strip_prefix(t)?.strip_prefix('_'))
            .and_then(|c| c.strip_suffix("_check"))
            .unwrap_or(c)
    });
    let field = db.column().or(from_constraint).unwrap_or("body").to_owned();
    tracing::info!(error = %e, "input refused by the database");
    Some(ApiError::field(&field, format!("the value {what}")))
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        if let CatalogError::Db { source, .. } = &e {
            if let Some(refused) = input_refused_by_database(source) {
                return refused;
            }
        }
        match e {
            CatalogError::SlugTaken(s) => ApiError::new(
                ProblemCode::SlugTaken,
                format!("slug {s:?} is already taken; choose another"),
            ),
            CatalogError::UnknownRegion(_) => ApiError::field("region", e.to_string()),
            CatalogError::NoCapacity(_) => ApiError::new(ProblemCode::NoCapacity, e.to_string()),
            CatalogError::TenantNotFound(_) | CatalogError::ClusterNotFound(_) => {
                ApiError::new(ProblemCode::NotFound, e.to_string())
            }
            CatalogError::InvalidTransition { .. } => {
                ApiError::new(ProblemCode::Conflict, e.to_string())
            }
            CatalogError::Invalid(msg) => ApiError::new(ProblemCode::ValidationFailed, msg),
            CatalogError::Db { ref source, .. } if connection_lost(source) => {
                ApiError::unavailable("catalog call failed", &e)
            }
            other => ApiError::internal("catalog call failed", &other),
        }
    }
}

impl From<tenancy_provision::Error> for ApiError {
    fn from(e: tenancy_provision::Error) -> Self {
        if let tenancy_provision::Error::Db(DbError::Query { source, .. }) = &e {
            if let Some(refused) = input_refused_by_database(source) {
                return refused;
            }
        }
        match e {
            tenancy_provision::Error::Catalog(c) => c.into(),
            tenancy_provision::Error::NotPossible(m) => ApiError::new(ProblemCode::Conflict, m),
            tenancy_provision::Error::Db(DbError::Query { ref source, .. })
                if connection_lost(source) =>
            {
                ApiError::unavailable("provisioning call failed", &e)
            }
            tenancy_provision::Error::Db(DbError::Connect { .. }) => {
                ApiError::unavailable("provisioning call failed", &e)
            }
            other => ApiError::internal("provisioning call failed", &other),
        }
    }
}

/// Whether a database call failed because the server went away or refuses sessions
/// (closed connection, SQLSTATE class 08, shutdown or startup in progress) rather than
/// because of the statement: the request may succeed later, so it is a 503, not a 500.
pub(crate) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // Not an answer of the server: I/O on the socket.
        None => std::error::Error::source(e).is_some_and(|c| c.is::<std::io::Error>()),
    }
}

/// Renders a problem document with its status and content type.
pub fn problem_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(body.clone())).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_value(self.problem()).unwrap_or_default();
        let mut resp = problem_response(self.status(), &body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == ProblemCode::Unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tenancy\""),
            );
        }
        resp
    }
}
