//! A small multi-tenant invoicing SaaS, built only on the public tenancy SDK
//! (`tenancy-sdk`, `tenancy-axum`, `tenancy-jobs`, `tenancy-core`): customers, invoices with line items,
//! a report, and a background job that "sends" an invoice.
//!
//! Main parts:
//! - [`migrate`]: the app's own migrations (`migrations/*.sql`, run as the owner role):
//!   tables with composite keys `(tenant_id, id)` and composite foreign keys, made tenant
//!   tables with `tenancy.make_tenant_table`, and the tenancy job queue.
//! - [`router`]: the axum routes behind the tenancy layer; every handler gets its
//!   [`Tenant`](tenancy_axum::Tenant) and a [`Tx`](tenancy_axum::Tx), and never writes a
//!   `WHERE tenant_id = …`: row-level security does that.
//! - [`build`] → [`App`]: binds the port, builds the layer and the job worker;
//!   [`App::run_until_stopped`] serves until the shutdown future completes.
//! - [`DevIssuer`]: a development token issuer (HS256) so the demo and tests can call
//!   the API as a tenant, with the [`SCOPES`] a caller needs. A real deployment trusts
//!   its identity provider instead.
//! - Access control (`tenancy-access`): the app declares [`PERMISSIONS`]; viewers read,
//!   members also create invoices, owners and admins also manage API keys and roles.
//!   `POST /invoices` needs `invoices:create`, and `/api-keys` (issue, list, revoke)
//!   `api_keys:manage` (each a `RequirePermission` layer); `/access/…` is the tenant
//!   admins' management API. Keys are issued, listed and revoked in a transaction of the
//!   request's tenant on the catalog database, through the catalog's tenant key functions
//!   (the runtime role; the app holds no owner connection).
//!   Which JWT claim values mean which role is configured per issuer
//!   ([`AccessConfig::role_claims`]).
//!
//! Every route needs a credential (a JWT or an API key; a subdomain, custom domain or
//! `/t/<tenant>` only selects the tenant and must match it) except [`PUBLIC_ROUTES`].
//!
//! What it does not do: it never reads the catalog itself, never connects as the owner
//! at runtime, and has no tenant-specific code paths.

mod api;
mod send;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tenancy_axum::{Source, Tenancy};
use tenancy_core::{ContextKey, TenantId};
use tenancy_jobs::{JobSigner, Worker};
use tenancy_sdk::{ClusterCredentials, PgConfig, PoolOptions, Pooler, Router, RouterOptions};

pub use api::{access_model, router, PERMISSIONS, PUBLIC_ROUTES, SCOPES};
pub use tenancy_access::ClaimRoles;

/// The queue the app's jobs go to.
pub const QUEUE: &str = "invoicing";

/// The app's migrations, in order (after the tenancy job queue, audit log and access
/// tables).
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_invoicing",
    include_str!("../migrations/0001_invoicing.sql"),
)];

/// Applies the app's migrations (and installs the tenancy job queue). `owner` must be
/// connected as the owner role to the tenant database.
pub async fn migrate(owner: &mut tokio_postgres::Client) -> Result<()> {
    tenancy_jobs::install(owner)
        .await
        .context("installing the tenancy job queue")?;
    tenancy_audit::install(owner)
        .await
        .context("installing the tenancy audit log")?;
    tenancy_access::install(owner)
        .await
        .context("installing the tenancy access tables")?;
    owner
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS public.invoicing_migrations (
                 name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .context("creating the migration ledger")?;
    for (name, sql) in MIGRATIONS {
        let tx = owner.transaction().await.context("starting a migration")?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM public.invoicing_migrations WHERE name = $1 FOR UPDATE",
                &[name],
            )
            .await
            .context("reading the migration ledger")?
            .is_some();
        if !done {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("applying migration {name}"))?;
            tx.execute(
                "INSERT INTO public.invoicing_migrations (name) VALUES ($1)",
                &[name],
            )
            .await
            .context("recording a migration")?;
        }
        tx.commit().await.context("committing a migration")?;
    }
    Ok(())
}

/// A development HS256 token issuer: the JWT source trusts it, and
/// [`DevIssuer::token`] mints tokens for a tenant.
#[derive(Clone)]
pub struct DevIssuer {
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Shared secret (>= 32 bytes).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// The JWT issuer configuration that trusts this issuer.
    pub fn jwt_issuer(&self) -> Result<tenancy_axum::jwt::JwtIssuer> {
        Ok(
            tenancy_axum::jwt::JwtIssuer::new(&self.issuer, &self.audience)
                .key(tenancy_axum::jwt::JwtKey::hs256(&self.secret)?),
        )
    }

    /// How this issuer's tokens name roles: the `roles` claim, each built-in role by its
    /// own name.
    pub fn role_claims(&self) -> ClaimRoles {
        ["owner", "admin", "member", "viewer"]
            .into_iter()
            .fold(ClaimRoles::new(&self.issuer, "roles"), |m, r| m.map(r, r))
    }

    /// A token for `tenant` (claim `tenant_id`), subject `sub`, granting `scopes` (claim
    /// `scope`; [`SCOPES`] for full access, none for a token that may only identify
    /// itself), valid for `ttl`, for an owner of the tenant (claim `roles`).
    pub fn token(
        &self,
        tenant: TenantId,
        sub: &str,
        scopes: &[&str],
        ttl: Duration,
    ) -> Result<String> {
        self.token_as(tenant, sub, &["owner"], scopes, ttl)
    }

    /// [`DevIssuer::token`] for a caller holding `roles` (claim `roles`).
    pub fn token_as(
        &self,
        tenant: TenantId,
        sub: &str,
        roles: &[&str],
        scopes: &[&str],
        ttl: Duration,
    ) -> Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("reading the clock")?
            .as_secs();
        let claims = serde_json::json!({
            "iss": self.issuer, "aud": self.audience, "sub": sub,
            "tenant_id": tenant.to_string(), "iat": now, "exp": now + ttl.as_secs(),
            "scope": scopes.join(" "), "roles": roles.join(" "),
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .context("signing a development token")
    }
}

/// Everything the app needs to start.
#[derive(Debug)]
pub struct Config {
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Runtime-role connection to the catalog database (also used by the router). Its TLS
    /// settings (`sslmode`, `sslrootcert`, client certificate) are also how tenant
    /// clusters are reached.
    pub catalog: PgConfig,
    /// Worker-role (`tenancy_worker`) connection to the tenant database holding the job
    /// queue, for claiming and finishing jobs (the runtime role cannot); the jobs
    /// themselves run in tenant transactions of the runtime role.
    pub queue_db: PgConfig,
    /// Runtime-role login on tenant clusters (the catalog says where they are, not how to
    /// log in).
    pub credentials: ClusterCredentials,
    /// Signs tenant contexts (installed in the tenant databases).
    pub context_key: ContextKey,
    /// Signs job envelopes.
    pub job_key: [u8; 32],
    /// Tenant sources, in order (at least one credential: JWT, API key, …).
    pub sources: Vec<Source>,
    /// Whether to run the job worker in this process.
    pub run_worker: bool,
    /// How tenant connections reach the clusters the catalog names: directly, or through
    /// a transaction-mode pooler such as PgBouncer (the catalog and the job queue
    /// connections stay direct: they LISTEN and hold sessions).
    pub pooler: Pooler,
    /// Roles from JWT claims.
    pub access: AccessConfig,
}

/// The app's access-control settings.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Per trusted issuer, which claim values mean which role (an issuer without one
    /// gives roles only through stored grants).
    pub role_claims: Vec<ClaimRoles>,
}

/// State shared by the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The tenancy layer's state (for `spawn_with_tenant` work and `begin`).
    pub tenancy: Tenancy,
    /// Signs the jobs handlers enqueue.
    pub jobs: JobSigner,
    /// The app's access model (permissions, built-in roles, claim mappings).
    pub access: tenancy_access::Access,
    /// Transactions of a tenant on the catalog database (runtime role, signed context):
    /// the API key routes issue, list and revoke the keys of the request's tenant through
    /// the catalog's tenant key functions, which act on the context's tenant only. The
    /// app holds no owner connection.
    pub keys: tenancy_sdk::TenantPool,
}

/// A built, bound, not yet running app.
#[derive(Debug)]
pub struct App {
    /// The bound listener.
    listener: tokio::net::TcpListener,
    /// Routes with the tenancy layer.
    routes: axum::Router,
    /// The job worker, when enabled.
    worker: Option<Worker<Tenancy>>,
    /// Shared state.
    state: AppState,
}

/// Builds the app: router, tenancy layer, worker; binds the port.
pub async fn build(config: Config) -> Result<App> {
    let keys = tenancy_sdk::TenantPool::new(
        config.catalog.clone(),
        config.context_key.clone(),
        PoolOptions {
            max_size: 4,
            ..Default::default()
        },
    )
    .context("building the catalog pool of the API key routes")?;
    let router = Router::new(
        config.catalog.clone(),
        config.context_key,
        config.credentials,
        RouterOptions {
            pool: PoolOptions {
                pooler: config.pooler,
                ..Default::default()
            },
            cluster_tls: config.catalog.tls().clone(),
            ..Default::default()
        },
    )
    .context("building the tenant router")?;
    let mut b = Tenancy::builder(router, config.catalog);
    for s in config.sources {
        b = b.source(s);
    }
    for p in PUBLIC_ROUTES {
        b = b.public(*p);
    }
    let tenancy = b.build().context("building the tenancy layer")?;
    let jobs = JobSigner::new(config.job_key);
    let access = access_model(config.access.role_claims).context("building the access model")?;
    let state = AppState {
        tenancy: tenancy.clone(),
        jobs: jobs.clone(),
        access,
        keys,
    };
    let worker = if config.run_worker {
        Some(
            Worker::new(tenancy, config.queue_db, jobs)
                .context("building the job worker")?
                .queue(QUEUE)
                .poll_interval(Duration::from_millis(50))
                .register(send::KIND, send::send_invoice),
        )
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    Ok(App {
        listener,
        routes: router_with_state(state.clone())?,
        worker,
        state,
    })
}

fn router_with_state(state: AppState) -> Result<axum::Router> {
    api::router(state).context("building the routes")
}

impl App {
    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP (and runs the worker) until `shutdown` completes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let worker = self.worker.map(|w| {
            let mut rx = stop_rx.clone();
            tokio::spawn(w.run(async move {
                let _ = rx.wait_for(|s| *s).await;
            }))
        });
        let mut rx = stop_rx;
        let served = axum::serve(self.listener, self.routes)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = rx.wait_for(|s| *s) => {}
                }
            })
            .await
            .context("serving HTTP");
        let _ = stop_tx.send(true);
        if let Some(w) = worker {
            let _ = w.await;
        }
        served
    }
}
