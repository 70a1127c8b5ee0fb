//! The tenancy control plane: the HTTP API that takes tenants from signup (self-service,
//! billing webhook, admin call) to active and through their lifecycle.
//!
//! Main parts:
//! - [`router`]: a pure `fn(AppState) -> axum::Router` with every route, so tests call it
//!   without a socket; other crates add routes with [`router_with`] (or `.merge()`).
//!   With [`AppState::with_config`], the configuration service's routes
//!   (`tenancy-config`: plans, flags, overrides, branding, custom domains, evaluation) are
//!   mounted too, behind the same admin authentication ([`config_routes`]), and their
//!   paths are part of the one OpenAPI document ([`openapi`]).
//! - [`build`] / [`App`]: startup as a library API (`build(config) → App`, `app.port()`,
//!   `app.run_until_stopped()`); [`build_local`] builds it on [`LocalCluster`]s someone
//!   else started (the CLI's embedded default: one private cluster per region), which it
//!   reaches through `tenancy-conn` like any server and stops last.
//! - [`server`]: serving a router on a public socket (header and request deadlines, the
//!   peer address for rate limits, graceful stop); [`guard`]: what every request passes
//!   before its handler (per-address and global rate limits of the unauthenticated routes
//!   with `429` and `Retry-After`, the body read under a deadline, NUL refused in any
//!   field).
//! - [`error`]: the one HTTP error type, RFC 9457 problem documents with a stable code
//!   table; [`auth`]: admin bearer tokens stored as SHA-256 digests; [`idempotency`]:
//!   `Idempotency-Key` on every state-changing POST; [`stripe`] and `billing`: Stripe
//!   signature verification and event mapping; [`api`]: handlers and the OpenAPI 3.1
//!   document (utoipa), served at `/openapi.json`.
//!
//! - [`audit`]: the control plane's own audit log (every change it makes recorded in the
//!   catalog transaction of the change, through one helper) and the sealer task
//!   (seals and checkpoints every audit log, publishes checkpoints, purges logs past
//!   their plan's retention unless on legal hold); `GET /v1/tenants/{id}/audit` pages
//!   through a tenant's log.
//! - [`report`]: a tenant's compliance evidence report (placement history, residency,
//!   isolation check, keys, audit verification, anomalies, retention, transfers), signed
//!   with the audit key, as JSON or one self-contained HTML page;
//!   `GET /v1/tenants/{id}/report` serves it.
//! - [`transfer`]: exports of one tenant and their audit events (`tenant.export` in the
//!   control log and in the tenant's own log), shared with `tenancy tenants export`;
//!   `POST /v1/tenants/{id}/export` streams the archive (`api::transfer`).
//!
//! What it does not do: it runs no workflow step itself (the provisioning engine does,
//! on workers), it never touches tenant data other than the audit log
//! (`tenancy.audit_events`, which it reads, seals and purges as the owner role) and an
//! export's reading of the tenant's rows (in the tenant's own transaction, as the
//! runtime role, like the application), and it
//! never starts PostgreSQL (the private-cluster harness `tenancy-pg` is only a
//! dev-dependency).

pub mod api;
pub mod audit;
pub mod auth;
mod billing;
pub mod config;
pub mod console;
pub mod error;
pub mod guard;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod report;
pub mod rules;
pub mod server;
mod startup;
pub mod stripe;
pub mod telemetry;
pub mod transfer;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{get, post, put};
use secrecy::{ExposeSecret, SecretString};
use tenancy_config_service::ConfigState;
use tenancy_provision::{PgConn, PgPool, Provisioner};
use utoipa::OpenApi;

pub use config::{
    AccessModelConfig, ClusterConfig, ControlConfig, LimitsConfig, RateConfig, SignupConfig,
};
pub use error::{ApiError, Problem, ProblemCode};
pub use startup::{build, build_local, connect_catalog, App, LocalCluster, StopCluster};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Shared state of the handlers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<StateInner>,
}

#[derive(Debug, Clone)]
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
    /// The configuration service (store, snapshot client, DNS), when it is mounted.
    config: Option<ConfigState>,
    /// Rate limits and the request guard (see [`guard`]).
    guard: Arc<guard::Guard>,
    /// The OpenAPI document (base plus merged extensions), kept typed so that
    /// [`AppState::with_config`] can merge into it.
    openapi_doc: OpenApiDoc,
    /// The same document, serialized once for `/openapi.json`.
    openapi: serde_json::Value,
    /// Workers and shutdown state, for `/readyz` (see [`health`]).
    health: Arc<health::Health>,
    /// Sessions of the operator console (see [`console`]).
    sessions: Arc<console::session::Sessions>,
    /// The audit sealer (tenant databases, checkpoints), when the app was built with it:
    /// `GET /v1/tenants/{id}/audit` reads tenant logs through it.
    audit: Option<audit::sealer::Sealer>,
    /// Its periodic task, stopped with the workers at shutdown.
    audit_task: Arc<std::sync::Mutex<Option<audit::sealer::SealerTask>>>,
    /// Per-tenant performance snapshots pushed by applications, for the last window
    /// (see [`api::insights`]).
    insights: Arc<tenancy_insights::Window>,
    /// Access anomalies pushed by applications' detectors, the latest 10,000 (see
    /// [`api::insights::anomalies`]).
    anomalies: Arc<std::sync::Mutex<tenancy_insights::anomaly::Board>>,
    /// The configuration and provisioning rules' periodic task (see [`rules`]).
    rules_task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Tenant transactions and the application's access model, for the platform
    /// administrators' management of tenants' roles and grants (see [`api::access`]);
    /// without it those routes answer 503.
    tenant_access: Option<api::access::TenantAccess>,
    /// What tenants' compliance reports read besides the catalog and the sealer (the
    /// context key for the isolation probe, the key directory; see [`report`]).
    report: report::Sources,
}

/// A typed OpenAPI document (utoipa's type has no `Debug` without a feature we leave off).
#[derive(Clone)]
struct OpenApiDoc(utoipa::openapi::OpenApi);

impl std::fmt::Debug for OpenApiDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenApi { .. }")
    }
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
                config: None,
                guard: Arc::new(default_guard()),
                openapi: serde_json::to_value(&openapi).unwrap_or_default(),
                openapi_doc: OpenApiDoc(openapi),
                health: Arc::new(health::Health::default()),
                sessions: Arc::new(console::session::Sessions::default()),
                audit: None,
                audit_task: Arc::default(),
                insights: Arc::new(tenancy_insights::Window::new(Default::default())),
                anomalies: Arc::new(std::sync::Mutex::new(
                    tenancy_insights::anomaly::Board::new(10_000),
                )),
                rules_task: Arc::default(),
                tenant_access: None,
                report: report::Sources::default(),
            }),
        }
    }

    /// The same state with the configuration service mounted: [`router`] then serves its
    /// routes behind admin authentication, and the OpenAPI document gains their paths.
    pub fn with_config(self, config: ConfigState) -> Self {
        let mut inner = (*self.inner).clone();
        inner.openapi_doc.0.merge(config_openapi());
        inner.openapi = serde_json::to_value(&inner.openapi_doc.0).unwrap_or_default();
        inner.config = Some(config);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The same state with the audit sealer (its task is started separately, see
    /// [`AppState::set_audit_task`]).
    pub fn with_audit(self, sealer: audit::sealer::Sealer) -> Self {
        let mut inner = (*self.inner).clone();
        inner.audit = Some(sealer);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The same state with tenant transactions and the access model: the
    /// `/v1/tenants/{id}/access/…` routes then manage tenants' roles and grants.
    pub fn with_tenant_access(self, access: api::access::TenantAccess) -> Self {
        let mut inner = (*self.inner).clone();
        inner.tenant_access = Some(access);
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// The same state with these sources of tenants' compliance reports.
    pub fn with_report_sources(self, sources: report::Sources) -> Self {
        let mut inner = (*self.inner).clone();
        inner.report = sources;
        AppState {
            inner: Arc::new(inner),
        }
    }

    /// What tenants' compliance reports read besides the catalog and the sealer.
    pub fn report_sources(&self) -> &report::Sources {
        &self.inner.report
    }

    /// Tenant transactions and the access model, when the state has them.
    pub fn tenant_access(&self) -> Option<&api::access::TenantAccess> {
        self.inner.tenant_access.as_ref()
    }

    /// The per-tenant performance snapshots of the last window.
    pub fn insights(&self) -> &tenancy_insights::Window {
        &self.inner.insights
    }

    /// Checks and keeps a batch of detections (without counting them or queueing their
    /// events: [`rules::report`] does both).
    pub fn keep_anomalies(
        &self,
        batch: tenancy_insights::anomaly::DetectionBatch,
    ) -> Result<tenancy_insights::anomaly::Pushed, tenancy_insights::SnapshotError> {
        let mut b = match self.inner.anomalies.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        b.push(batch)
    }

    /// The kept detections `filter` selects, the latest first.
    pub fn anomalies(
        &self,
        filter: &tenancy_insights::anomaly::Filter,
        limit: usize,
    ) -> Vec<tenancy_insights::anomaly::Anomaly> {
        let b = match self.inner.anomalies.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        b.list(filter, limit)
    }

    /// The audit sealer, when there is one.
    pub fn audit(&self) -> Option<&audit::sealer::Sealer> {
        self.inner.audit.as_ref()
    }

    /// Keeps the sealer's periodic task, to stop it at shutdown.
    pub fn set_audit_task(&self, task: Option<audit::sealer::SealerTask>) {
        if let Ok(mut t) = self.inner.audit_task.lock() {
            *t = task;
        }
    }

    /// Keeps the configuration and provisioning rules' periodic task, to stop it at
    /// shutdown.
    pub fn set_rules_task(&self, task: Option<tokio::task::JoinHandle<()>>) {
        if let Ok(mut t) = self.inner.rules_task.lock() {
            *t = task;
        }
    }

    /// Stops the rules' periodic task, if there is one.
    pub fn stop_rules_task(&self) {
        if let Some(t) = self.inner.rules_task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }

    /// Takes the sealer's task (to stop it).
    pub fn take_audit_task(&self) -> Option<audit::sealer::SealerTask> {
        self.inner.audit_task.lock().ok().and_then(|mut t| t.take())
    }

    /// The same state with these timeouts and rate limits (the defaults otherwise).
    pub fn with_limits(self, limits: &LimitsConfig) -> Result<Self, String> {
        let mut inner = (*self.inner).clone();
        inner.guard = Arc::new(guard::Guard::new(limits)?);
        Ok(AppState {
            inner: Arc::new(inner),
        })
    }

    /// The configuration service, when it is mounted.
    pub fn config(&self) -> Option<&ConfigState> {
        self.inner.config.as_ref()
    }

    /// A catalog connection; when none can be had (the database is down or refuses
    /// sessions), a 503 problem.
    pub async fn catalog(&self) -> Result<PgConn, ApiError> {
        self.inner
            .catalog
            .get()
            .await
            .map_err(|e| ApiError::unavailable("catalog connection", &e))
    }

    /// Workers and shutdown state, for readiness.
    pub fn health(&self) -> &health::Health {
        &self.inner.health
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

    pub(crate) fn sessions(&self) -> &console::session::Sessions {
        &self.inner.sessions
    }

    pub(crate) fn openapi(&self) -> serde_json::Value {
        self.inner.openapi.clone()
    }
}

/// The guard of the default limits (no trusted proxies, nothing to parse).
fn default_guard() -> guard::Guard {
    guard::Guard::from_parts(&LimitsConfig::default(), None, Vec::new())
}

/// The OpenAPI document of the control plane as `tenancy serve` serves it: this crate's
/// routes and the configuration service's (merge other crates' documents into it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api::ApiDoc::openapi();
    doc.merge(config_openapi());
    doc
}

/// The configuration service's OpenAPI paths as mounted here: every operation needs the
/// admin bearer token and may answer 401 with this crate's problem document.
fn config_openapi() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::SecurityRequirement;
    let mut doc = tenancy_config_service::http::ConfigApiDoc::openapi();
    for item in doc.paths.paths.values_mut() {
        for op in tenancy_problem::openapi::operations_mut(item) {
            op.security = Some(vec![SecurityRequirement::new(
                "admin",
                Vec::<String>::new(),
            )]);
            op.responses
                .responses
                .entry("401".to_owned())
                .or_insert_with(|| {
                    tenancy_problem::openapi::problem_response("Missing or invalid admin token")
                });
        }
    }
    doc
}

/// The configuration service's routes behind admin authentication. A write records who
/// made it: the `x-tenancy-actor` header when the caller sends one, else the admin
/// token's principal (`admin:<first 8 hex digits of its digest>`).
pub fn config_routes(state: &AppState, config: ConfigState) -> axum::Router {
    tenancy_config_service::routes(config).route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        admin_for_config,
    ))
}

/// Authenticates an admin before a configuration route runs, and fills in the actor.
async fn admin_for_config(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    let (mut parts, body) = req.into_parts();
    let admin = match auth::Admin::from_request_parts(&mut parts, &state).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let has_actor = parts
        .headers
        .get(ACTOR_HEADER)
        .is_some_and(|v| v.to_str().is_ok_and(|v| !v.trim().is_empty()));
    if !has_actor {
        // The principal is hex, so the header value is always valid.
        if let Ok(v) = HeaderValue::from_str(&format!("admin:{}", admin.principal)) {
            parts.headers.insert(ACTOR_HEADER, v);
        }
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// Header in which the configuration service expects the author of a change.
const ACTOR_HEADER: &str = "x-tenancy-actor";

/// Every control-plane route (and the configuration service's, when the state has it).
pub fn router(state: AppState) -> axum::Router {
    router_with(state, axum::Router::new())
}

/// Every control-plane route plus `extra` (another crate's routes, already given their
/// state); the body limit, the guard (rate limits of unauthenticated routes, body
/// deadline, NUL refusal: [`guard`]), request span and problem fallback apply to all of
/// them. The operator [`console`]'s HTML pages are mounted too, outside the problem
/// normalization (their errors are pages) and outside the OpenAPI document.
pub fn router_with(state: AppState, extra: axum::Router) -> axum::Router {
    let extra = match state.config() {
        Some(config) => extra.merge(config_routes(&state, config.clone())),
        None => extra,
    };
    let guard_state = state.inner.guard.clone();
    metrics::install();
    axum::Router::new()
        .route("/livez", get(health::livez))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics_text))
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
        .route("/v1/tenants/{id}/migrations", get(api::tenant_migrations))
        .route("/v1/tenants/{id}/suspend", post(api::suspend))
        .route("/v1/tenants/{id}/resume", post(api::resume))
        .route("/v1/tenants/{id}/delete", post(api::delete))
        .route("/v1/tenants/{id}/plan", post(api::change_plan))
        .route("/v1/tenants/{id}/move", post(api::move_tenant))
        .route("/v1/tenants/{id}/legal-hold", post(api::legal_hold))
        .route("/v1/tenants/{id}/residency", put(api::set_residency))
        .route("/v1/tenants/{id}/audit", get(api::audit::tenant_audit))
        .route("/v1/tenants/{id}/report", get(api::report::tenant_report))
        .route(
            "/v1/tenants/{id}/export",
            post(api::transfer::export_tenant),
        )
        .route(
            "/v1/tenants/{id}/access/roles",
            get(api::access::list_roles).post(api::access::create_role),
        )
        .route(
            "/v1/tenants/{id}/access/roles/{name}",
            get(api::access::get_role).delete(api::access::delete_role),
        )
        .route(
            "/v1/tenants/{id}/access/grants",
            get(api::access::list_grants).post(api::access::grant),
        )
        .route(
            "/v1/tenants/{id}/access/revocations",
            post(api::access::revoke),
        )
        .route("/v1/tenants/{id}/api-keys", get(api::access::list_keys))
        .route(
            "/v1/tenants/{id}/api-keys/{key_id}/revoke",
            post(api::access::revoke_key),
        )
        .route("/v1/workflows/{id}", get(api::get_workflow))
        .route("/v1/webhook-deliveries", get(api::deliveries))
        .route("/v1/insights/snapshots", post(api::insights::push_snapshot))
        .route("/v1/insights/tenants", get(api::insights::tenants))
        .route(
            "/v1/insights/anomalies",
            get(api::insights::anomalies).post(api::insights::push_anomalies),
        )
        .route("/v1/signup/availability", get(api::availability))
        .route("/v1/signup", post(api::signup))
        .route("/v1/billing/stripe", post(api::stripe_webhook))
        .with_state(state.clone())
        .merge(extra)
        .fallback(|| async { ApiError::new(ProblemCode::NotFound, "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            guard_state.clone(),
            guard::guard,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(tenancy_problem::normalize))
        .merge(
            console::routes(state)
                .layer(axum::middleware::from_fn_with_state(
                    guard_state,
                    guard::guard,
                ))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
        // Outermost: the request span, id and access line see the final answer (a
        // problem document once `normalize` has made one), and add the request id to it.
        .layer(axum::middleware::from_fn(telemetry::observe))
}
