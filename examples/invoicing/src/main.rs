//! `invoicing`: serves the example app against an existing tenancy deployment.
//!
//! The easy way to see it is `tenancy-demo --serve`, which starts PostgreSQL, creates
//! tenants and serves this app. This binary is for running it against your own
//! databases; configuration comes from the environment:
//! `INVOICING_DATABASE_URL` (runtime role `tenancy_app`, catalog and tenant database; its
//! password is also the runtime role's login on the clusters the catalog names, and its
//! TLS settings how they are reached), `TENANCY_CONTEXT_KEY` (`<kid>:<64 hex>`),
//! `INVOICING_JWT_SECRET` (>= 32 bytes), `INVOICING_JOB_KEY` (64 hex), optional
//! `INVOICING_OWNER_DATABASE_URL` (the same database as `tenancy_owner`: applies the app's
//! migrations at start; the app never keeps it), optional `INVOICING_WORKER_DATABASE_URL` (the same database as
//! the worker role `tenancy_worker`; runs the job worker in this process),
//! `TENANCY_POOLER` (`transaction` when the clusters the catalog names are reached through
//! PgBouncer in transaction mode), `INVOICING_LISTEN` (default 127.0.0.1:8080) and
//! `INVOICING_BASE_DOMAIN` (lets `<slug>.<base domain>` and verified custom domains select
//! the tenant; every request still needs a JWT or an API key of that tenant).
//!
//! Database URLs are libpq-style, URL or keyword form, with libpq's TLS settings
//! (`sslmode=verify-full&sslrootcert=/path/ca.pem`, `sslcert`/`sslkey`).
//!
//! `invoicing token <tenant id>` prints a development token for that tenant (HS256, signed
//! with `INVOICING_JWT_SECRET`, valid one hour, with the app's scopes) and exits.

use anyhow::{Context, Result};
use tenancy_axum::jwt::{JwtConfig, TenantClaim};
use tenancy_axum::Source;
use tenancy_core::ContextKey;
use tenancy_sdk::{ClusterCredentials, PgConfig};

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
    if let Some(cmd) = std::env::args().nth(1) {
        return match (cmd.as_str(), std::env::args().nth(2)) {
            ("token", Some(tenant)) => print_token(&tenant),
            _ => anyhow::bail!(
                "unknown arguments: `invoicing` serves (configured by the environment), `invoicing token <tenant id>` prints a development token"
            ),
        };
    }
    let db = database_url("INVOICING_DATABASE_URL")?;
    let key_text = env("TENANCY_CONTEXT_KEY")?;
    let (kid, hex) = key_text
        .split_once(':')
        .context("TENANCY_CONTEXT_KEY must be <kid>:<64 hex digits>")?;
    let context_key = ContextKey::from_hex(kid.parse()?, hex)?;
    let job_key: [u8; 32] = tenancy_core_hex(&env("INVOICING_JOB_KEY")?)?;
    let dev = dev_issuer()?;
    let mut sources = vec![Source::jwt(
        JwtConfig::new(TenantClaim::Id("tenant_id".into())).issuer(dev.jwt_issuer()?),
    )];
    if let Ok(base) = std::env::var("INVOICING_BASE_DOMAIN") {
        sources.push(Source::subdomain(base));
        sources.push(Source::custom_domain());
    }
    sources.push(Source::api_key());
    let user = db.pg().get_user().unwrap_or("tenancy_app").to_owned();
    let password = db
        .pg()
        .get_password()
        .map(|p| String::from_utf8(p.to_vec()))
        .transpose()
        .context("the password in INVOICING_DATABASE_URL must be UTF-8")?;
    if let Ok(url) = std::env::var("INVOICING_OWNER_DATABASE_URL") {
        let owner = database_url_from("INVOICING_OWNER_DATABASE_URL", &url)?;
        let (mut client, conn) = owner
            .connect_raw()
            .await
            .context("connecting with INVOICING_OWNER_DATABASE_URL")?;
        let conn = tokio::spawn(conn);
        invoicing::migrate(&mut client)
            .await
            .context("applying the app's migrations (INVOICING_OWNER_DATABASE_URL)")?;
        drop(client);
        let _ = conn.await;
        tracing::info!("the app's migrations are applied");
    }
    // Jobs are claimed as the worker role; without its login this process only serves.
    let worker_db = match std::env::var("INVOICING_WORKER_DATABASE_URL") {
        Ok(url) => Some(database_url_from("INVOICING_WORKER_DATABASE_URL", &url)?),
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
        credentials: ClusterCredentials { user, password },
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
        access: invoicing::AccessConfig {
            role_claims: vec![dev.role_claims()],
        },
    })
    .await?;
    tracing::info!(port = app.port(), "invoicing listening");
    app.run_until_stopped(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// The connection settings in environment variable `name`.
fn database_url(name: &str) -> Result<PgConfig> {
    database_url_from(name, &env(name)?)
}

fn database_url_from(name: &str, url: &str) -> Result<PgConfig> {
    PgConfig::parse(url).with_context(|| format!("parsing {name}"))
}

/// The development token issuer the JWT source trusts (`INVOICING_JWT_SECRET`).
fn dev_issuer() -> Result<invoicing::DevIssuer> {
    Ok(invoicing::DevIssuer {
        issuer: "invoicing-dev".into(),
        audience: "invoicing".into(),
        secret: env("INVOICING_JWT_SECRET")?.into_bytes(),
    })
}

/// `invoicing token <tenant id>`: a development token for the tenant, on stdout.
fn print_token(tenant: &str) -> Result<()> {
    let tenant: tenancy_core::TenantId = tenant
        .parse()
        .context("the tenant id must be a UUID (lowercase, hyphenated)")?;
    let token = dev_issuer()?.token(
        tenant,
        "invoicing-cli",
        invoicing::SCOPES,
        std::time::Duration::from_secs(3600),
    )?;
    println!("{token}");
    Ok(())
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
