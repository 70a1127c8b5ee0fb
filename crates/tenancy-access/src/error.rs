//! Errors: a model refused at startup, and what a management call or a check refuses.

use tenancy_axum::HttpError;

/// The application's access model is inconsistent (a startup error; the message names
/// the permission, role or issuer and what is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access model: {0}")]
pub struct ModelError(pub(crate) String);

/// Why an access check or a management call was refused. Nothing of a refused call is
/// stored (every change runs in the caller's transaction, which rolls back on an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The caller lacks `permission` (403 `permission-denied`).
    #[error("the caller lacks the permission {permission:?}")]
    Denied {
        /// The permission that is needed.
        permission: String,
    },
    /// `field` names a permission the application does not declare (422).
    #[error("{field}: unknown permission {permission:?}")]
    UnknownPermission {
        /// Where it was given.
        field: String,
        /// The unknown name.
        permission: String,
    },
    /// No role of that name exists in this tenant (404).
    #[error("role {role:?} not found")]
    UnknownRole {
        /// The name given.
        role: String,
    },
    /// Built-in roles cannot be created, changed or deleted (422).
    #[error("role {role:?} is built in and cannot be created, changed or deleted")]
    BuiltinRole {
        /// The built-in role named.
        role: String,
    },
    /// `field` is malformed (422); `reason` says how to fix it.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The change conflicts with the tenant's state (409).
    #[error("{0}")]
    Conflict(String),
    /// A grant that does not exist (404).
    #[error("grant not found")]
    NoSuchGrant,
    /// A database statement failed.
    #[error(transparent)]
    Db(#[from] tenancy_sdk::Error),
    /// The audit event could not be recorded (the change is not stored either).
    #[error(transparent)]
    Audit(#[from] tenancy_audit::Error),
    /// The request-layer extractors refused (no tenant, no transaction).
    #[error(transparent)]
    Http(#[from] HttpError),
}

impl AccessError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AccessError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<AccessError> for HttpError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Denied { permission } => HttpError::PermissionDenied { permission },
            e @ (AccessError::UnknownPermission { .. }
            | AccessError::BuiltinRole { .. }
            | AccessError::Invalid { .. }) => HttpError::Validation(e.to_string()),
            AccessError::UnknownRole { role } => HttpError::not_found(format!("role {role:?}")),
            AccessError::NoSuchGrant => HttpError::not_found("grant"),
            AccessError::Conflict(d) => HttpError::Conflict(d),
            AccessError::Db(e) => HttpError::from(e),
            AccessError::Audit(tenancy_audit::Error::Tx(e)) => HttpError::from(e),
            AccessError::Audit(e) => HttpError::internal(e),
            AccessError::Http(e) => e,
        }
    }
}

impl axum::response::IntoResponse for AccessError {
    fn into_response(self) -> axum::response::Response {
        HttpError::from(self).into_response()
    }
}
