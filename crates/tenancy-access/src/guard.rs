//! The axum side: the [`Permissions`] extractor and the [`RequirePermission`] layer.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::request::Parts;
use tenancy_axum::{HttpError, RequestId, Tenant, Tx};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Access, By, Change, Permissions};

/// The permissions of the request's caller: from the request's extensions when a guard
/// (or an earlier extractor) resolved them already, else resolved now in the request's
/// own transaction and kept there for the rest of the request.
async fn resolve_once(parts: &mut Parts, access: &Access) -> Result<Permissions, HttpError> {
    if let Some(p) = parts.extensions.get::<Permissions>() {
        return Ok(p.clone());
    }
    let tenant = Tenant::from_request_parts(parts, &()).await?;
    let mut tx = Tx::from_request_parts(parts, &()).await?;
    let perms = access.resolve(&mut tx, &tenant).await?;
    // Handed back before the handler extracts it (the same transaction).
    drop(tx);
    parts.extensions.insert(perms.clone());
    Ok(perms)
}

impl<S: Send + Sync> FromRequestParts<S> for Permissions {
    type Rejection = HttpError;

    /// Needs the [`Access`] in the request extensions (`axum::Extension(access)` on the
    /// router, or a [`RequirePermission`] in front), behind the tenancy layer.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        let Some(access) = parts.extensions.get::<Access>().cloned() else {
            return Err(HttpError::internal(
                "the Permissions extractor needs the Access in the request extensions",
            ));
        };
        resolve_once(parts, &access).await
    }
}

/// A tower layer that lets a request through to the wrapped service only when its caller
/// holds one permission; otherwise it answers 403 `permission-denied` naming the
/// permission, and the handler never runs (its transaction, opened to read the caller's
/// roles, rolls back). Build it with [`Access::require`], which refuses an undeclared
/// permission at startup. It also puts the [`Access`] in the request extensions, so the
/// handler can extract [`Permissions`] without resolving them again.
#[derive(Debug, Clone)]
pub struct RequirePermission {
    /// The model (for resolution).
    access: Access,
    /// The permission required.
    permission: Arc<str>,
}

impl RequirePermission {
    pub(crate) fn new(access: Access, permission: &str) -> Self {
        RequirePermission {
            access,
            permission: Arc::from(permission),
        }
    }

    /// The permission it requires.
    pub fn permission(&self) -> &str {
        &self.permission
    }
}

impl<S> Layer<S> for RequirePermission {
    type Service = RequirePermissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequirePermissionService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The service built by [`RequirePermission`].
#[derive(Debug, Clone)]
pub struct RequirePermissionService<S> {
    /// The guarded service.
    inner: S,
    /// What it requires.
    guard: RequirePermission,
}

impl<S> Service<Request> for RequirePermissionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            if parts.extensions.get::<Access>().is_none() {
                parts.extensions.insert(guard.access.clone());
            }
            let perms = match resolve_once(&mut parts, &guard.access).await {
                Ok(p) => p,
                Err(e) => return Ok(e.into_response()),
            };
            if let Err(e) = perms.require(&guard.permission) {
                tracing::debug!(permission = %guard.permission, "permission denied");
                return Ok(e.into_response());
            }
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// What a handler that manages something of its tenant needs, in one extractor: the
/// [`Access`] model, the caller's [`Tenant`] and [`Permissions`], who it is for audit
/// events ([`By`]), and the request's transaction. It checks no permission itself: call
/// [`Manager::require`] (the management functions check theirs).
#[derive(Debug)]
pub struct Manager {
    /// The application's model (from the request extensions).
    pub access: Access,
    /// The caller's tenant.
    pub tenant: Tenant,
    /// What the caller may do (resolved at most once per request).
    pub perms: Permissions,
    /// The actor and request of the audit events of its changes.
    pub by: By,
    /// The request's transaction.
    pub tx: Tx,
}

impl Manager {
    /// Refuses (403 `permission-denied`, naming it) unless the caller holds `permission`.
    pub fn require(&self, permission: &str) -> Result<(), HttpError> {
        Ok(self.perms.require(permission)?)
    }

    /// The caller's change of its tenant's access, in the request's transaction: what
    /// the management functions take.
    pub fn change(&mut self) -> Change<'_> {
        Change::new(&mut self.tx, &self.access, &self.perms, &self.by)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Manager {
    type Rejection = HttpError;

    /// Needs what [`Permissions`] needs (the [`Access`] in the request extensions, behind
    /// the tenancy layer).
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        let perms = Permissions::from_request_parts(parts, state).await?;
        let Some(access) = parts.extensions.get::<Access>().cloned() else {
            return Err(HttpError::internal(
                "the Manager extractor needs the Access in the request extensions",
            ));
        };
        let tenant = Tenant::from_request_parts(parts, state).await?;
        let by = By::tenant(&tenant, parts.extensions.get::<RequestId>());
        let tx = Tx::from_request_parts(parts, state).await?;
        Ok(Manager {
            access,
            tenant,
            perms,
            by,
            tx,
        })
    }
}
