//! Control-plane configuration: typed, layered (TOML file, then `TENANCY_…` environment),
//! secrets in `SecretString`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Defaults of self-service signups.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignupConfig {
    /// Region of a signup that names none.
    pub region: String,
    /// Plan of a new signup.
    pub plan: String,
    /// Placement of a new signup (`pooled` or `schema`).
    pub placement: String,
}

impl Default for SignupConfig {
    fn default() -> Self {
        SignupConfig {
            region: "eu-west".into(),
            plan: "free".into(),
            placement: "pooled".into(),
        }
    }
}

/// A webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Stable name.
    pub name: String,
    /// `http://` URL.
    pub url: String,
    /// `whsec_<base64>` signing secret.
    pub secret: SecretString,
}

/// Everything `tenancy serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks one).
    pub listen: String,
    /// Catalog database (owner role). Absent: the embedded default (private clusters).
    pub database_url: Option<SecretString>,
    /// SHA-256 digests of admin tokens (`sha256:<hex>`). Absent: a token is generated and
    /// printed once at startup.
    pub admin_token_sha256: Vec<String>,
    /// Stripe endpoint signing secret; absent disables the billing webhook.
    pub stripe_webhook_secret: Option<SecretString>,
    /// Provisioning workers in this process.
    pub workers: usize,
    /// Context key id.
    pub context_key_id: String,
    /// Context key (64 hex digits); required with `database_url`, generated otherwise.
    pub context_key_hex: Option<SecretString>,
    /// Regions of the embedded default (one private cluster each).
    pub regions: Vec<String>,
    /// Superuser (or CREATEDB) login on tenant clusters.
    pub cluster_admin_user: String,
    /// Its password.
    pub cluster_admin_password: Option<SecretString>,
    /// Owner-role password on tenant clusters.
    pub owner_password: Option<SecretString>,
    /// Runtime-role password on tenant clusters.
    pub runtime_password: Option<SecretString>,
    /// Password of the configuration reader (`tenancy_config_reader`) on the catalog, with
    /// `database_url`: the configuration snapshot reads as that role, never as the owner.
    pub config_reader_password: Option<SecretString>,
    /// Signup defaults.
    pub signup: SignupConfig,
    /// Directory of the app's `NNNN_name.sql` migrations.
    pub app_migrations_dir: Option<PathBuf>,
    /// Without a migrations directory: a generated app of this many tables (demo).
    pub generated_app_tables: usize,
    /// Settings seeded per plan.
    pub plans: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Third-party registration receivers.
    pub registration_receivers: Vec<ReceiverConfig>,
    /// Lifecycle event receivers.
    pub event_receivers: Vec<ReceiverConfig>,
    /// Days a soft-deleted tenant is kept before the purge.
    pub retention_days: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            admin_token_sha256: Vec::new(),
            stripe_webhook_secret: None,
            workers: 2,
            context_key_id: "k1".into(),
            context_key_hex: None,
            regions: vec!["eu-west".into()],
            cluster_admin_user: "postgres".into(),
            cluster_admin_password: None,
            owner_password: None,
            runtime_password: None,
            config_reader_password: None,
            signup: SignupConfig::default(),
            app_migrations_dir: None,
            generated_app_tables: 3,
            plans: BTreeMap::new(),
            registration_receivers: Vec::new(),
            event_receivers: Vec::new(),
            retention_days: 30,
        }
    }
}

impl ControlConfig {
    /// Loads the file (if any), then applies the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    /// [`ControlConfig::load`] with an explicit environment (tests).
    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Self, String> {
        let mut cfg = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| format!("reading {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
            }
            None => ControlConfig::default(),
        };
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let list = |v: String| -> Vec<String> {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        if let Some(v) = get("TENANCY_LISTEN") {
            cfg.listen = v;
        }
        if let Some(v) = get("TENANCY_DATABASE_URL").or_else(|| get("DATABASE_URL")) {
            cfg.database_url = Some(SecretString::from(v));
        }
        if let Some(v) = get("TENANCY_ADMIN_TOKEN_SHA256") {
            cfg.admin_token_sha256 = list(v);
        }
        if let Some(v) = get("TENANCY_STRIPE_WEBHOOK_SECRET") {
            cfg.stripe_webhook_secret = Some(SecretString::from(v));
        }
        if let Some(v) = get("TENANCY_WORKERS") {
            cfg.workers = v
                .parse()
                .map_err(|_| format!("TENANCY_WORKERS={v:?} is not a number"))?;
        }
        if let Some(v) = get("TENANCY_CONTEXT_KEY_HEX") {
            cfg.context_key_hex = Some(SecretString::from(v));
        }
        if let Some(v) = get("TENANCY_REGIONS") {
            cfg.regions = list(v);
        }
        if let Some(v) = get("TENANCY_APP_MIGRATIONS_DIR") {
            cfg.app_migrations_dir = Some(PathBuf::from(v));
        }
        if cfg.workers == 0 || cfg.workers > 64 {
            return Err("workers must be between 1 and 64".into());
        }
        if cfg.regions.is_empty() {
            return Err("at least one region must be configured".into());
        }
        for d in &cfg.admin_token_sha256 {
            crate::auth::parse_digest(d)?;
        }
        Ok(cfg)
    }
}
