//! `invoicing`: serves the example app against an existing tenancy deployment.
//!
//! The easy way to see it is `tenancy demo --serve`, which starts PostgreSQL, creates
//! tenants and serves this app. This binary is for running it against your own
//! databases; configuration comes from the environment:
//! `INVOICING_DATABASE_URL` (runtime role, catalog and tenant database),
//! `TENANCY_CONTEXT_KEY` (`<kid>:<64 hex>`), `INVOICING_JWT_SECRET` (>= 32 bytes),
//! `INVOICING_JOB_KEY` (64 hex), optional `INVOICING_WORKER_DATABASE_URL` (the same
//! database as the worker role `tenancy_worker`; runs the job worker in this process),
//! `INVOICING_LISTEN` (default 127.0.0.1:8080) and `INVOICING_BASE_DOMAIN` (lets
//! `<slug>.<base domain>` and verified custom domains select the tenant; every request
//! still needs a JWT or an API key of that tenant).

use anyhow::{Context, Result};
use tenancy_axum::jwt::{JwtConfig, TenantClaim};
use tenancy_axum::Source;
use tenancy_core::ContextKey;
use tenancy_sdk::ClusterCredentials;

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .with_context(|| format!("{name} is not set (see `invoicing --help` in the source docs)"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let db: tokio_postgres::Config = env("INVOICING_DATABASE_URL")?
        .parse()
        .context("parsing INVOICING_DATABASE_URL")?;
    let key_text = env("TENANCY_CONTEXT_KEY")?;
    let (kid, hex) = key_text
        .split_once(':')
        .context("TENANCY_CONTEXT_KEY must be <kid>:<64 hex digits>")?;
    let context_key = ContextKey::from_hex(kid.parse()?, hex)?;
    let job_key: [u8; 32] = tenancy_core_hex(&env("INVOICING_JOB_KEY")?)?;
    let dev = invoicing::DevIssuer {
        issuer: "invoicing-dev".into(),
        audience: "invoicing".into(),
        secret: env("INVOICING_JWT_SECRET")?.into_bytes(),
    };
    let mut sources = vec![Source::jwt(
        JwtConfig::new(TenantClaim::Id("tenant_id".into())).issuer(dev.jwt_issuer()?),
    )];
    if let Ok(base) = std::env::var("INVOICING_BASE_DOMAIN") {
        sources.push(Source::subdomain(base));
        sources.push(Source::custom_domain());
    }
    sources.push(Source::api_key());
    let user = db.get_user().unwrap_or("tenancy_app").to_owned();
    // Jobs are claimed as the worker role; without its login this process only serves.
    let worker_db: Option<tokio_postgres::Config> =
        match std::env::var("INVOICING_WORKER_DATABASE_URL") {
            Ok(url) => Some(
                url.parse()
                    .context("parsing INVOICING_WORKER_DATABASE_URL")?,
            ),
            Err(_) => None,
        };
    let run_worker = worker_db.is_some();
    let app = invoicing::build(invoicing::Config {
        listen: std::env::var("INVOICING_LISTEN")
            .unwrap_or_else(|_| "127.0.0.1:8080".into())
            .parse()
            .context("parsing INVOICING_LISTEN")?,
        catalog: db.clone(),
        queue_db: worker_db.unwrap_or_else(|| db.clone()),
        credentials: ClusterCredentials {
            user,
            password: None,
        },
        context_key,
        job_key,
        sources,
        run_worker,
        // `transaction` when the clusters the catalog names are reached through PgBouncer
        // in transaction mode.
        pooler: match std::env::var("TENANCY_POOLER") {
            Ok(p) => p.parse().context("parsing TENANCY_POOLER")?,
            Err(_) => tenancy_sdk::Pooler::Direct,
        },
    })
    .await?;
    tracing::info!(port = app.port(), "invoicing listening");
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

fn tenancy_core_hex(s: &str) -> Result<[u8; 32]> {
    let mut out = [0u8; 32];
    let s = s.trim();
    anyhow::ensure!(s.len() == 64, "INVOICING_JOB_KEY must be 64 hex digits");
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .context("INVOICING_JOB_KEY must be hex")?;
    }
    Ok(out)
}
