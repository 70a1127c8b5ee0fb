//! The tenancy control plane: the HTTP API that takes tenants from signup (self-service,
//! billing webhook, admin call) to active and through their lifecycle.
//!
//! Main parts:
//! - [`router`]: a pure `fn(AppState) -> axum::Router` with every route, so tests call it
//!   without a socket; other crates add routes with [`router_with`] (or `.merge()`).
//! - [`build`] / [`App`]: startup as a library API (`build(config) → App`, `app.port()`,
//!   `app.run_until_stopped()`), including the embedded default (private clusters, one
//!   per region) when no database is configured.
//! - [`error`]: the one HTTP error type, RFC 9457 problem documents with a stable code
//!   table; [`auth`]: admin bearer tokens stored as SHA-256 digests; [`idempotency`]:
//!   `Idempotency-Key` on every state-changing POST; [`stripe`] and `billing`: Stripe
//!   signature verification and event mapping; [`api`]: handlers and the OpenAPI 3.1
//!   document (utoipa), served at `/openapi.json`.
//!
//! What it does not do: it runs no workflow step itself (the provisioning engine does,
//! on workers), and it never touches tenant data.

pub mod api;
pub mod auth;
mod billing;
pub mod config;
pub mod error;
pub mod idempotency;
mod startup;
pub mod stripe;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use tenancy_provision::{PgConn, PgPool, Provisioner};
use utoipa::OpenApi;

pub use config::{ControlConfig, SignupConfig};
pub use error::{ApiError, Problem, ProblemCode};
pub use startup::{build, App};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    /// Catalog connections as the owner role.
    catalog: PgPool,
    /// Queues and runs workflows.
    provisioner: Provisioner,
    /// SHA-256 digests of the admin tokens.
    admin_digests: Vec<[u8; 32]>,
    /// Stripe endpoint signing secret, when billing webhooks are enabled.
    stripe_secret: Option<SecretString>,
    /// Accepted clock skew of Stripe signatures.
    stripe_tolerance: Duration,
    /// Defaults of self-service signups.
    signup: SignupConfig,
    /// The OpenAPI document (base plus merged extensions).
    openapi: serde_json::Value,
}

impl AppState {
    /// Builds the state.
    pub fn new(
        catalog: PgPool,
        provisioner: Provisioner,
        admin_digests: Vec<[u8; 32]>,
        stripe_secret: Option<SecretString>,
        signup: SignupConfig,
    ) -> Self {
        Self::with_openapi(
            catalog,
            provisioner,
            admin_digests,
            stripe_secret,
            signup,
            api::ApiDoc::openapi(),
        )
    }

    /// Builds the state with an OpenAPI document that includes other crates' routes.
    pub fn with_openapi(
        catalog: PgPool,
        provisioner: Provisioner,
        admin_digests: Vec<[u8; 32]>,
        stripe_secret: Option<SecretString>,
        signup: SignupConfig,
        openapi: utoipa::openapi::OpenApi,
    ) -> Self {
        AppState {
            inner: Arc::new(StateInner {
                catalog,
                provisioner,
                admin_digests,
                stripe_secret,
                stripe_tolerance: Duration::from_secs(300),
                signup,
                openapi: serde_json::to_value(openapi).unwrap_or_default(),
            }),
        }
    }

    /// A catalog connection.
    pub async fn catalog(&self) -> Result<PgConn, ApiError> {
        self.inner
            .catalog
            .get()
            .await
            .map_err(|e| ApiError::internal("catalog connection", &e))
    }

    /// The provisioning engine.
    pub fn provisioner(&self) -> &Provisioner {
        &self.inner.provisioner
    }

    pub(crate) fn admin_digests(&self) -> &[[u8; 32]] {
        &self.inner.admin_digests
    }

    pub(crate) fn stripe_secret(&self) -> Option<String> {
        self.inner
            .stripe_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
    }

    pub(crate) fn stripe_tolerance(&self) -> Duration {
        self.inner.stripe_tolerance
    }

    pub(crate) fn signup(&self) -> &SignupConfig {
        &self.inner.signup
    }

    pub(crate) fn openapi(&self) -> serde_json::Value {
        self.inner.openapi.clone()
    }
}

/// The OpenAPI document of this crate's routes (merge other crates' documents into it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api::ApiDoc::openapi()
}

/// Every control-plane route.
pub fn router(state: AppState) -> axum::Router {
    router_with(state, axum::Router::new())
}

/// Every control-plane route plus `extra` (another crate's routes, already given their
/// state); the body limit, request span and problem fallback apply to all of them.
pub fn router_with(state: AppState, extra: axum::Router) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(api::healthz))
        .route("/openapi.json", get(api::openapi_json))
        .route("/v1/regions", get(api::list_regions).post(api::add_region))
        .route(
            "/v1/clusters",
            get(api::list_clusters).post(api::add_cluster),
        )
        .route(
            "/v1/tenants",
            get(api::list_tenants).post(api::create_tenant),
        )
        .route("/v1/tenants/{id}", get(api::get_tenant))
        .route("/v1/tenants/{id}/workflows", get(api::tenant_workflows))
        .route("/v1/tenants/{id}/suspend", post(api::suspend))
        .route("/v1/tenants/{id}/resume", post(api::resume))
        .route("/v1/tenants/{id}/delete", post(api::delete))
        .route("/v1/tenants/{id}/plan", post(api::change_plan))
        .route("/v1/tenants/{id}/legal-hold", post(api::legal_hold))
        .route("/v1/workflows/{id}", get(api::get_workflow))
        .route("/v1/webhook-deliveries", get(api::deliveries))
        .route("/v1/signup/availability", get(api::availability))
        .route("/v1/signup", post(api::signup))
        .route("/v1/billing/stripe", post(api::stripe_webhook))
        .with_state(state)
        .merge(extra)
        .fallback(|| async { ApiError::new(ProblemCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_span))
}

/// Runs every request in a span (method, path); handlers add the tenant when they know it.
async fn request_span(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), tenant_id = tracing::field::Empty);
    next.run(req).instrument(span).await
}
