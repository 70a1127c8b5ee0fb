//! `tenancy keys …`: show and rotate one tenant's encryption keys (its key-encryption
//! keys in the local key directory, its data keys in the tenant database).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use secrecy::{ExposeSecret, SecretString};
use tenancy_core::{ContextKey, KeyId, TenantId};
use tenancy_keys::{KekState, Keyring, LocalKeyProvider};
use tenancy_sdk::{PoolOptions, TenantPool};

/// Arguments of `tenancy keys`.
#[derive(clap::Args, Debug)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

/// Where the keys are and how to reach the tenant's database.
#[derive(clap::Args, Debug)]
struct Access {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// The tenant database, as the runtime role (tenancy_app): data keys are read and
    /// written inside the tenant's own transaction, under row-level security.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<SecretString>,
    /// The directory of key-encryption key files (mode 0700).
    #[arg(long, env = "TENANCY_KEY_DIR")]
    key_dir: PathBuf,
    /// Id of the context key (context_key_id of `tenancy serve`).
    #[arg(long, default_value = "k1")]
    context_key_id: String,
    /// The context key (64 hex digits).
    #[arg(long, env = "TENANCY_CONTEXT_KEY_HEX", hide_env_values = true)]
    context_key_hex: Option<SecretString>,
}

#[derive(clap::Subcommand, Debug)]
enum KeysCommand {
    /// Show the tenant's key-encryption key state and its data-key versions. Exit 0:
    /// shown; 2: could not run.
    Status {
        #[command(flatten)]
        access: Access,
    },
    /// Add a data-key version for new writes (older values still open); with --kek,
    /// instead add a key-encryption key version and rewrap every data key under it
    /// (sealed rows untouched). Exit 0: rotated; 2: could not run.
    Rotate {
        #[command(flatten)]
        access: Access,
        /// Rotate the key-encryption key instead of the data key.
        #[arg(long)]
        kek: bool,
    },
}

/// Runs the subcommand; returns the exit code.
pub(crate) async fn run(args: KeysArgs) -> u8 {
    let r = match args.command {
        KeysCommand::Status { access } => status(access).await,
        KeysCommand::Rotate { access, kek } => rotate(access, kek).await,
    };
    match r {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            2
        }
    }
}

/// The tenant, a pool on its database and a keyring on the key directory.
fn open(access: &Access) -> Result<(TenantId, TenantPool, Keyring<LocalKeyProvider>)> {
    let tenant = access
        .tenant
        .parse::<TenantId>()
        .with_context(|| format!("--tenant {:?} is not a tenant id (a UUID)", access.tenant))?;
    let url = access
        .database_url
        .as_ref()
        .context("no database: pass --database-url or set DATABASE_URL")?;
    let kid: KeyId = access
        .context_key_id
        .parse()
        .with_context(|| format!("--context-key-id {:?}", access.context_key_id))?;
    let hex = access
        .context_key_hex
        .as_ref()
        .context("no context key: pass --context-key-hex or set TENANCY_CONTEXT_KEY_HEX")?;
    let key = ContextKey::from_hex(kid, hex.expose_secret()).context("the context key")?;
    let pg =
        tenancy_conn::PgConfig::parse(url.expose_secret()).context("parsing the database URL")?;
    let pool = TenantPool::new(
        pg,
        key,
        PoolOptions {
            max_size: 1,
            ..PoolOptions::default()
        },
    )
    .context("the tenant pool")?;
    let provider = LocalKeyProvider::open(&access.key_dir)?;
    Ok((tenant, pool, Keyring::new(Arc::new(provider))))
}

async fn status(access: Access) -> Result<String> {
    let (tenant, pool, ring) = open(&access)?;
    let s = ring.status(&pool, tenant).await?;
    let kek = match s.kek {
        KekState::Missing => "none".to_owned(),
        KekState::Live { current } => format!("version {current}"),
        KekState::Destroyed => "DESTROYED (crypto-shredded)".to_owned(),
    };
    let mut out = format!("tenant {tenant}\nkey-encryption key: {kek}\n");
    match s.data_keys.last() {
        None => out.push_str("data keys: none"),
        Some(cur) => {
            out.push_str(&format!(
                "data keys: {} (current: version {})",
                s.data_keys.len(),
                cur.version
            ));
            for k in &s.data_keys {
                out.push_str(&format!(
                    "\n  version {}  wrapped under KEK {}  created {}",
                    k.version, k.kek_version, k.created_at
                ));
            }
        }
    }
    Ok(out)
}

async fn rotate(access: Access, kek: bool) -> Result<String> {
    let (tenant, pool, ring) = open(&access)?;
    if kek {
        let (version, n) = ring.rotate_kek(&pool, tenant).await?;
        Ok(format!(
            "tenant {tenant}: key-encryption key version {version}; {n} data keys rewrapped"
        ))
    } else {
        let version = ring.rotate_data_key(&pool, tenant).await?;
        Ok(format!(
            "tenant {tenant}: data key version {version} now seals new values"
        ))
    }
}
