//! Entitlements in the axum layer.
//!
//! - [`RequireFeatureLayer`]: a tower layer that answers `403 application/problem+json`
//!   (`urn:tenancy:problem:feature-not-entitled`) when the request's tenant lacks a
//!   feature, before the handler runs.
//! - [`TenantConfig`]: an extractor giving a handler the tenant's configuration (one
//!   snapshot, consistent for the whole request), for numeric limits and flags.
//!
//! The tenant comes from the request extension [`TenantId`], which the tenant-resolution
//! layer (`tenancy-axum`) inserts; without it the request is refused (fail closed).
//!
//! The problem types it answers with ([`FEATURE_NOT_ENTITLED`], [`LIMIT_EXCEEDED`],
//! [`TENANT_REQUIRED`]) are part of tenancy's one code table.

use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use http::request::Parts;
use http::Request;
use tenancy_core::TenantId;
use time::OffsetDateTime;
use tower_layer::Layer;
use tower_service::Service;

pub use tenancy_problem::Problem;
use tenancy_problem::ProblemType;

use crate::client::ConfigClient;
use crate::engine::Snapshot;

/// 403: the tenant's plan does not include the feature.
pub const FEATURE_NOT_ENTITLED: ProblemType = ProblemType::new(
    "feature-not-entitled",
    403,
    "The tenant's plan does not include this feature",
);
/// 403: the tenant reached a limit of its plan.
pub const LIMIT_EXCEEDED: ProblemType = ProblemType::new(
    "limit-exceeded",
    403,
    "The tenant reached a limit of its plan",
);
/// 401: no tenant could be determined for the request.
pub const TENANT_REQUIRED: ProblemType = ProblemType::new(
    "tenant-required",
    401,
    "No tenant could be determined for this request",
);

/// Refuses requests whose tenant does not have `feature`.
#[derive(Debug, Clone)]
pub struct RequireFeatureLayer {
    client: ConfigClient,
    feature: Arc<str>,
}

impl RequireFeatureLayer {
    /// Requires `feature` (an entitlement key) of every request's tenant.
    pub fn new(client: ConfigClient, feature: &str) -> RequireFeatureLayer {
        RequireFeatureLayer {
            client,
            feature: Arc::from(feature),
        }
    }
}

impl<S> Layer<S> for RequireFeatureLayer {
    type Service = RequireFeature<S>;
    fn layer(&self, inner: S) -> RequireFeature<S> {
        RequireFeature {
            inner,
            client: self.client.clone(),
            feature: Arc::clone(&self.feature),
        }
    }
}

/// The service of [`RequireFeatureLayer`].
#[derive(Debug, Clone)]
pub struct RequireFeature<S> {
    inner: S,
    client: ConfigClient,
    feature: Arc<str>,
}

fn not_entitled(feature: &str) -> Problem {
    Problem::new(
        FEATURE_NOT_ENTITLED,
        format!("the tenant's plan does not include the feature {feature:?}"),
    )
}

fn no_tenant() -> Problem {
    Problem::new(
        TENANT_REQUIRED,
        "this route needs a tenant; none was resolved for the request".to_owned(),
    )
}

impl<S, B> Service<Request<B>> for RequireFeature<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(tenant) = req.extensions().get::<TenantId>().copied() else {
            return Either::Left(ready(Ok(no_tenant().into_response())));
        };
        if self.client.has_feature(tenant, &self.feature) {
            Either::Right(self.inner.call(req))
        } else {
            Either::Left(ready(Ok(not_entitled(&self.feature).into_response())))
        }
    }
}

/// The request tenant's configuration: one snapshot for the whole request.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The tenant.
    pub tenant: TenantId,
    /// The snapshot read when the request was extracted.
    pub snapshot: Arc<Snapshot>,
    /// When the request was extracted (override expiry is judged at this instant).
    pub now: OffsetDateTime,
}

impl TenantConfig {
    /// Whether the tenant has a feature.
    pub fn has_feature(&self, key: &str) -> bool {
        self.snapshot.has_feature(self.tenant, key, self.now)
    }

    /// `Ok` when the tenant has a feature, else the 403 problem to return.
    pub fn require_feature(&self, key: &str) -> Result<(), Problem> {
        if self.has_feature(key) {
            Ok(())
        } else {
            Err(not_entitled(key))
        }
    }

    /// The tenant's limit (`None` = unlimited; unknown limits are 0).
    pub fn limit(&self, key: &str) -> Option<u64> {
        self.snapshot.limit(self.tenant, key, self.now)
    }

    /// `Ok` when reaching `requested` stays within the limit, else the 403 problem.
    pub fn check_limit(&self, key: &str, requested: u64) -> Result<(), Problem> {
        self.snapshot
            .check_limit(self.tenant, key, requested, self.now)
            .map_err(|e| Problem::new(LIMIT_EXCEEDED, e.to_string()))
    }

    /// Whether a flag is on.
    pub fn is_enabled(&self, flag: &str) -> bool {
        self.snapshot.is_enabled(self.tenant, flag, self.now)
    }

    /// A setting's value.
    pub fn setting(&self, key: &str) -> Option<&serde_json::Value> {
        self.snapshot.setting(self.tenant, key).map(|r| r.value)
    }
}

impl<S> FromRequestParts<S> for TenantConfig
where
    ConfigClient: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let tenant = parts
            .extensions
            .get::<TenantId>()
            .copied()
            .ok_or_else(no_tenant)?;
        let client = ConfigClient::from_ref(state);
        Ok(TenantConfig {
            tenant,
            snapshot: arc_swap::Guard::into_inner(client.snapshot()),
            now: OffsetDateTime::now_utc(),
        })
    }
}
