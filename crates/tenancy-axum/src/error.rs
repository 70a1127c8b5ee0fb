//! The request layer's HTTP error, rendered as the one problem document of tenancy
//! ([`tenancy_problem::Problem`], RFC 9457 `application/problem+json`).
//!
//! Every variant has a stable `code` (also the last part of its `type` URI) and status; the
//! table is [`ProblemType::ALL`]. Bodies never carry internal details (those are logged
//! where the error is turned into a response) and never say whether some *other* tenant
//! exists: a mismatch between sources is a 403 whatever the other source named, and an
//! id of another tenant's row is the same 404 as an id that exists nowhere.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};

/// Prefix of every problem `type` URI (the one scheme of tenancy).
pub use tenancy_problem::TYPE_PREFIX as PROBLEM_TYPE_PREFIX;

/// The problem types of the request layer: its part of the one code table of tenancy
/// ([`tenancy_problem`]); the codes it shares with every surface (`not-found`,
/// `validation`, …) are the common ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemType {
    /// The request carries no credential (a host name or path alone names a tenant but
    /// does not authenticate the caller).
    Unauthenticated,
    /// A credential was presented but is not valid (bad signature, expired, revoked, …).
    InvalidCredentials,
    /// Two sources of the request name different tenants.
    TenantMismatch,
    /// The tenant named by the request does not exist.
    TenantNotFound,
    /// The tenant is suspended.
    TenantSuspended,
    /// The tenant is still being provisioned.
    TenantProvisioning,
    /// The tenant is deleted or being deleted.
    TenantDeleted,
    /// The credential lacks a scope the operation needs.
    InsufficientScope,
    /// The caller's roles do not include a permission the operation needs.
    PermissionDenied,
    /// The resource does not exist (for this tenant).
    NotFound,
    /// The request is malformed.
    BadRequest,
    /// The request is well-formed but its content is invalid.
    Validation,
    /// The request conflicts with the current state (duplicate, concurrent change).
    Conflict,
    /// A dependency (database pool) is temporarily unavailable.
    Unavailable,
    /// Something failed on our side; details are in the logs.
    Internal,
}

/// 401: the credential is not valid.
pub(crate) const INVALID_CREDENTIALS: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new("invalid-credentials", 401, "The credential is not valid");
/// 403: the request names more than one tenant.
pub(crate) const TENANT_MISMATCH: tenancy_problem::ProblemType = tenancy_problem::ProblemType::new(
    "tenant-mismatch",
    403,
    "The request names more than one tenant",
);
/// 404: the tenant does not exist.
pub(crate) const TENANT_NOT_FOUND: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new("tenant-not-found", 404, "Tenant not found");
/// 403: the tenant is suspended.
pub(crate) const TENANT_SUSPENDED: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new("tenant-suspended", 403, "The tenant is suspended");
/// 409: the tenant is still being provisioned.
pub(crate) const TENANT_PROVISIONING: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new(
        "tenant-provisioning",
        409,
        "The tenant is still being provisioned",
    );
/// 410: the tenant is deleted.
pub(crate) const TENANT_DELETED: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new("tenant-deleted", 410, "The tenant has been deleted");
/// 403: the credential lacks a scope.
pub(crate) const INSUFFICIENT_SCOPE: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new(
        "insufficient-scope",
        403,
        "The credential does not allow this operation",
    );
/// 403: the caller's roles lack a permission.
pub(crate) const PERMISSION_DENIED: tenancy_problem::ProblemType =
    tenancy_problem::ProblemType::new(
        "permission-denied",
        403,
        "The caller's roles do not allow this operation",
    );

impl ProblemType {
    /// Every problem type, for documentation and tests.
    pub const ALL: &'static [ProblemType] = &[
        ProblemType::Unauthenticated,
        ProblemType::InvalidCredentials,
        ProblemType::TenantMismatch,
        ProblemType::TenantNotFound,
        ProblemType::TenantSuspended,
        ProblemType::TenantProvisioning,
        ProblemType::TenantDeleted,
        ProblemType::InsufficientScope,
        ProblemType::PermissionDenied,
        ProblemType::NotFound,
        ProblemType::BadRequest,
        ProblemType::Validation,
        ProblemType::Conflict,
        ProblemType::Unavailable,
        ProblemType::Internal,
    ];

    /// The entry of the one code table.
    pub fn entry(self) -> tenancy_problem::ProblemType {
        match self {
            ProblemType::Unauthenticated => tenancy_problem::UNAUTHENTICATED,
            ProblemType::InvalidCredentials => INVALID_CREDENTIALS,
            ProblemType::TenantMismatch => TENANT_MISMATCH,
            ProblemType::TenantNotFound => TENANT_NOT_FOUND,
            ProblemType::TenantSuspended => TENANT_SUSPENDED,
            ProblemType::TenantProvisioning => TENANT_PROVISIONING,
            ProblemType::TenantDeleted => TENANT_DELETED,
            ProblemType::InsufficientScope => INSUFFICIENT_SCOPE,
            ProblemType::PermissionDenied => PERMISSION_DENIED,
            ProblemType::NotFound => tenancy_problem::NOT_FOUND,
            ProblemType::BadRequest => tenancy_problem::BAD_REQUEST,
            ProblemType::Validation => tenancy_problem::VALIDATION,
            ProblemType::Conflict => tenancy_problem::CONFLICT,
            ProblemType::Unavailable => tenancy_problem::UNAVAILABLE,
            ProblemType::Internal => tenancy_problem::INTERNAL,
        }
    }

    /// This crate's part of the code table (for [`tenancy_problem::check_table`]).
    pub fn table() -> Vec<tenancy_problem::ProblemType> {
        Self::ALL.iter().map(|t| t.entry()).collect()
    }

    /// The stable code (`tenant-suspended`, …).
    pub fn code(self) -> &'static str {
        self.entry().code
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        self.entry().status_code()
    }

    /// A short, fixed title.
    pub fn title(self) -> &'static str {
        self.entry().title
    }

    /// The `type` URI.
    pub fn uri(self) -> String {
        self.entry().uri()
    }
}

/// An HTTP error. Convert it into a response (it implements [`IntoResponse`]) or return
/// it from a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request carries no credential.
    #[error("no credential in the request")]
    Unauthenticated,
    /// A credential was presented and refused; `reason` is shown to the caller (it says
    /// what is wrong with *their* credential, e.g. "expired").
    #[error("invalid credentials: {reason}")]
    InvalidCredentials {
        /// What is wrong, safe to show.
        reason: String,
    },
    /// Sources disagree about the tenant.
    #[error("sources name different tenants")]
    TenantMismatch,
    /// Unknown tenant.
    #[error("tenant not found")]
    TenantNotFound,
    /// Suspended tenant.
    #[error("tenant suspended")]
    TenantSuspended,
    /// Tenant not yet active.
    #[error("tenant provisioning")]
    TenantProvisioning,
    /// Tenant deleted or being deleted.
    #[error("tenant deleted")]
    TenantDeleted,
    /// The credential lacks `scope`.
    #[error("missing scope {scope}")]
    InsufficientScope {
        /// The scope that is needed.
        scope: String,
    },
    /// The caller's roles lack `permission`.
    #[error("missing permission {permission}")]
    PermissionDenied {
        /// The permission that is needed.
        permission: String,
    },
    /// A resource is not there (for this tenant).
    #[error("{what} not found")]
    NotFound {
        /// What was looked for ("invoice").
        what: String,
    },
    /// Malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Invalid content.
    #[error("invalid input: {0}")]
    Validation(String),
    /// Conflict with the current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Temporarily unavailable; the cause is logged.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Internal failure; the cause is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError {
    /// The problem type of this error.
    pub fn problem_type(&self) -> ProblemType {
        match self {
            HttpError::Unauthenticated => ProblemType::Unauthenticated,
            HttpError::InvalidCredentials { .. } => ProblemType::InvalidCredentials,
            HttpError::TenantMismatch => ProblemType::TenantMismatch,
            HttpError::TenantNotFound => ProblemType::TenantNotFound,
            HttpError::TenantSuspended => ProblemType::TenantSuspended,
            HttpError::TenantProvisioning => ProblemType::TenantProvisioning,
            HttpError::TenantDeleted => ProblemType::TenantDeleted,
            HttpError::InsufficientScope { .. } => ProblemType::InsufficientScope,
            HttpError::PermissionDenied { .. } => ProblemType::PermissionDenied,
            HttpError::NotFound { .. } => ProblemType::NotFound,
            HttpError::BadRequest(_) => ProblemType::BadRequest,
            HttpError::Validation(_) => ProblemType::Validation,
            HttpError::Conflict(_) => ProblemType::Conflict,
            HttpError::Unavailable(_) => ProblemType::Unavailable,
            HttpError::Internal(_) => ProblemType::Internal,
        }
    }

    /// A not-found error for `what`.
    pub fn not_found(what: impl Into<String>) -> Self {
        HttpError::NotFound { what: what.into() }
    }

    /// An internal error from anything displayable (logged when rendered).
    pub fn internal(e: impl std::fmt::Display) -> Self {
        HttpError::Internal(e.to_string())
    }

    /// The `detail` shown to the caller: only what the caller already knows or may know.
    fn detail(&self) -> Option<String> {
        match self {
            HttpError::Unauthenticated => Some("send a bearer token or an API key".into()),
            HttpError::InvalidCredentials { reason } => Some(reason.clone()),
            HttpError::InsufficientScope { scope } => {
                Some(format!("this operation needs the scope {scope:?}"))
            }
            HttpError::PermissionDenied { permission } => Some(format!(
                "this operation needs the permission {permission:?}, which none of the caller's roles grants"
            )),
            HttpError::NotFound { what } => Some(format!("{what} not found")),
            HttpError::BadRequest(d) | HttpError::Validation(d) | HttpError::Conflict(d) => {
                Some(d.clone())
            }
            HttpError::TenantProvisioning => Some("retry in a few seconds".into()),
            _ => None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let pt = self.problem_type();
        // Log where the error is handled (turned into a response), not where it arose.
        match &self {
            HttpError::Internal(cause) => {
                tracing::error!(code = pt.code(), %cause, "request failed")
            }
            HttpError::Unavailable(cause) => {
                tracing::warn!(code = pt.code(), %cause, "request failed")
            }
            other => tracing::debug!(code = pt.code(), error = %other, "request refused"),
        }
        let mut resp = tenancy_problem::Problem::new(pt.entry(), self.detail()).into_response();
        if pt == ProblemType::Unauthenticated || pt == ProblemType::InvalidCredentials {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if pt == ProblemType::TenantProvisioning || pt == ProblemType::Unavailable {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

impl From<tenancy_sdk::Error> for HttpError {
    fn from(e: tenancy_sdk::Error) -> Self {
        use tokio_postgres::error::SqlState;
        match &e {
            tenancy_sdk::Error::NotActive { state, .. } => match state.as_str() {
                "suspended" => HttpError::TenantSuspended,
                "provisioning" => HttpError::TenantProvisioning,
                _ => HttpError::TenantDeleted,
            },
            tenancy_sdk::Error::Pool(_) => HttpError::Unavailable(e.to_string()),
            _ => match e.sqlstate() {
                Some(s) if *s == SqlState::UNIQUE_VIOLATION => {
                    HttpError::Conflict("a record with these values already exists".into())
                }
                Some(s) if *s == SqlState::T_R_SERIALIZATION_FAILURE => {
                    HttpError::Conflict("concurrent change; retry".into())
                }
                Some(s)
                    if *s == SqlState::CHECK_VIOLATION || *s == SqlState::NOT_NULL_VIOLATION =>
                {
                    HttpError::Validation("a value is out of range or missing".into())
                }
                // Input the database cannot store or compute with (a NUL byte in text, a
                // number out of range, text too long) is the caller's, not a server
                // failure. Handlers should check their fields first, to name the field.
                Some(s)
                    if *s == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                        || *s == SqlState::NUMERIC_VALUE_OUT_OF_RANGE
                        || *s == SqlState::STRING_DATA_RIGHT_TRUNCATION =>
                {
                    HttpError::Validation(
                        "a value cannot be stored (out of range or not valid text)".into(),
                    )
                }
                _ => HttpError::Internal(e.to_string()),
            },
        }
    }
}

/// Configuration errors (building resolvers, reading key files).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key could not be read or parsed.
    #[error("{what}: {detail}")]
    Key {
        /// Which key.
        what: String,
        /// Why.
        detail: String,
    },
    /// Something else is inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The SDK refused something (pool settings).
    #[error(transparent)]
    Sdk(#[from] tenancy_sdk::Error),
}
