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
    /// Length of the window over which signups are counted against the quotas, in
    /// seconds.
    pub quota_window_secs: u64,
    /// Signups accepted from everyone together within the window (0: no cap); past it,
    /// signup answers 503 until the oldest counted signup leaves the window.
    pub max_signups: u32,
    /// Signups accepted from one client address (an IPv6 /64) within the window (0: no
    /// cap); past it, that client gets 429.
    pub max_signups_per_ip: u32,
}

impl SignupConfig {
    /// Refuses signup defaults that would make every signup fail: a placement that does
    /// not exist, a plan or region that is not a valid key, or a plan missing from a
    /// non-empty `[plans]`.
    pub fn validate(&self, cfg: &ControlConfig) -> Result<(), String> {
        self.placement
            .parse::<tenancy_core::Placement>()
            .map_err(|e| format!("signup.placement: {e}"))?;
        self.plan
            .parse::<tenancy_core::PlanKey>()
            .map_err(|e| format!("signup.plan: {e}"))?;
        if !cfg.plans.is_empty() && !cfg.plans.contains_key(&self.plan) {
            return Err(format!(
                "signup.plan: {:?} is not one of the configured plans ({})",
                self.plan,
                cfg.plans.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        self.region
            .parse::<tenancy_core::RegionId>()
            .map_err(|e| format!("signup.region: {e}"))?;
        Ok(())
    }
}

impl Default for SignupConfig {
    fn default() -> Self {
        SignupConfig {
            region: "eu-west".into(),
            plan: "free".into(),
            placement: "pooled".into(),
            quota_window_secs: 24 * 3600,
            max_signups: 1000,
            max_signups_per_ip: 5,
        }
    }
}

/// Token-bucket rate limit of one class of unauthenticated routes: per client address
/// and for everyone together. A rate of 0 turns that bucket off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Sustained requests per minute from one client address (an IPv6 /64).
    pub per_ip_per_minute: u32,
    /// Requests one client address may make in a burst.
    pub per_ip_burst: u32,
    /// Sustained requests per minute from everyone together.
    pub global_per_minute: u32,
    /// Requests everyone together may make in a burst.
    pub global_burst: u32,
}

/// Limits of the public surface: connection and request timeouts, and rate limits of
/// the routes that need no admin token. Every limit is on by default; 0 turns a timeout
/// off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time a client has to send a request's line and headers (also the idle time of a
    /// kept-alive connection), in milliseconds; past it the connection is closed.
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body, in milliseconds (then 408).
    pub body_timeout_ms: u64,
    /// Time a whole request may take, body and handler, in milliseconds (then 408).
    pub request_timeout_ms: u64,
    /// Connections served at once; past it, new connections wait in the listen backlog
    /// until one closes (0: no cap).
    pub max_connections: usize,
    /// Header carrying the client address set by a reverse proxy (`x-forwarded-for`,
    /// `x-real-ip`); read only on connections from `trusted_proxies`. Absent: the
    /// socket's peer address is the client.
    pub client_ip_header: Option<String>,
    /// Addresses (`10.0.0.7`) or networks (`10.0.0.0/8`) of the proxies whose
    /// `client_ip_header` is believed.
    pub trusted_proxies: Vec<String>,
    /// Client addresses whose buckets are kept; past it, idle buckets are dropped first,
    /// then the least recently used.
    pub max_tracked_ips: usize,
    /// `POST /v1/signup`.
    pub signup: RateConfig,
    /// `GET /v1/signup/availability`.
    pub availability: RateConfig,
    /// Every other route that needs no admin token (`/healthz`, `/openapi.json`, the
    /// billing webhook before its signature is checked).
    pub public: RateConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_read_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 4096,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            max_tracked_ips: 10_000,
            signup: RateConfig {
                per_ip_per_minute: 10,
                per_ip_burst: 5,
                global_per_minute: 120,
                global_burst: 30,
            },
            availability: RateConfig {
                per_ip_per_minute: 60,
                per_ip_burst: 20,
                global_per_minute: 3000,
                global_burst: 300,
            },
            public: RateConfig {
                per_ip_per_minute: 600,
                per_ip_burst: 100,
                global_per_minute: 30_000,
                global_burst: 1000,
            },
        }
    }
}

impl LimitsConfig {
    /// The trusted proxies, parsed.
    pub(crate) fn trusted_networks(&self) -> Result<Vec<crate::guard::Network>, String> {
        self.trusted_proxies
            .iter()
            .map(|p| p.parse::<crate::guard::Network>())
            .collect()
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        self.trusted_networks()?;
        if let Some(h) = &self.client_ip_header {
            axum::http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("limits.client_ip_header {h:?} is not a header name"))?;
            if self.trusted_proxies.is_empty() {
                return Err("limits.client_ip_header needs limits.trusted_proxies (the proxies whose header is believed)".into());
            }
        }
        for (name, r) in [
            ("signup", self.signup),
            ("availability", self.availability),
            ("public", self.public),
        ] {
            if (r.per_ip_per_minute > 0 && r.per_ip_burst == 0)
                || (r.global_per_minute > 0 && r.global_burst == 0)
            {
                return Err(format!(
                    "limits.{name}: a burst must be at least 1 where its rate is on"
                ));
            }
        }
        if self.max_tracked_ips == 0 {
            return Err("limits.max_tracked_ips must be at least 1".into());
        }
        Ok(())
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

/// A PostgreSQL cluster registered at start (with `database_url`): where tenants of a
/// region are placed. Created, or its connection info and capacity updated, on every
/// start; a cluster never moves to another region (its tenants are pinned there).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name (`[a-z][a-z0-9_-]{0,62}`).
    pub name: String,
    /// Region of its tenants (created when missing).
    pub region: tenancy_core::RegionId,
    /// Connection string without user or password (`host=… port=… dbname=…` or
    /// `postgresql://host:port/dbname`); instead of `host`, `port` and `dbname`.
    pub url: Option<String>,
    /// Host name, IP address or Unix socket directory.
    pub host: Option<String>,
    /// Port (default 5432).
    pub port: Option<u16>,
    /// The shared database of its pooled and schema tenants (bootstrapped with `tenancy
    /// bootstrap`).
    pub dbname: Option<String>,
    /// Tenants it takes.
    pub capacity: i32,
    /// Where applications reach it through a transaction-mode pooler (PgBouncer): host
    /// name or IP address, with `pooler_port`. Tenant pools in pooler mode connect there;
    /// `tenancy serve` itself always uses the direct address above (it needs sessions of
    /// its own). Without it the pooler address is removed.
    pub pooler_host: Option<String>,
    /// The pooler's port (with `pooler_host`).
    pub pooler_port: Option<u16>,
}

impl ClusterConfig {
    /// Host, port and database, from `url` or the separate fields.
    pub fn endpoint(&self) -> Result<(String, u16, String), String> {
        let what = format!("clusters.{}", self.name);
        if let Some(url) = &self.url {
            if self.host.is_some() || self.port.is_some() || self.dbname.is_some() {
                return Err(format!(
                    "{what}: give either url or host/port/dbname, not both"
                ));
            }
            let cfg: tokio_postgres::Config = url
                .parse()
                .map_err(|e| format!("{what}: url is not a PostgreSQL connection string: {e}"))?;
            if cfg.get_password().is_some() || cfg.get_user().is_some() {
                return Err(format!(
                    "{what}: url must not carry a user or password (tenancy logs in as its own roles; \
                     set owner_password, runtime_password and cluster_admin_password instead)"
                ));
            }
            let host = match cfg.get_hosts() {
                [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
                [tokio_postgres::config::Host::Unix(p)] => p.display().to_string(),
                _ => return Err(format!("{what}: url must name exactly one host")),
            };
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            let dbname = cfg
                .get_dbname()
                .ok_or_else(|| format!("{what}: url must name the database (dbname)"))?;
            return Ok((host, port, dbname.to_owned()));
        }
        let host = self
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{what}: host (or url) is required"))?;
        let dbname = self
            .dbname
            .clone()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("{what}: dbname (or url) is required"))?;
        Ok((host, self.port.unwrap_or(5432), dbname))
    }

    /// The pooler's address (`pooler_host`, `pooler_port`), if one is declared.
    pub fn pooler(&self) -> Result<Option<(&str, u16)>, String> {
        match (self.pooler_host.as_deref(), self.pooler_port) {
            (None, None) => Ok(None),
            (Some(h), Some(p)) if !h.is_empty() && p != 0 => Ok(Some((h, p))),
            _ => Err(format!(
                "clusters.{}: give pooler_host and pooler_port together (a host name or address, and a port from 1 to 65535)",
                self.name
            )),
        }
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self.name.as_bytes()[0].is_ascii_lowercase()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(format!(
                "clusters: name {:?} is not allowed: use 1 to 63 characters from a-z, 0-9, '_' and '-', starting with a letter",
                self.name
            ));
        }
        if self.capacity <= 0 {
            return Err(format!(
                "clusters.{}: capacity must be a positive number of tenants",
                self.name
            ));
        }
        if self.port == Some(0) {
            return Err(format!("clusters.{}: port must not be 0", self.name));
        }
        self.pooler()?;
        self.endpoint().map(|_| ())
    }
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
    /// Display names of regions (`region id → name`); with `database_url`, these regions
    /// are registered at start even without a cluster.
    pub region_names: BTreeMap<String, String>,
    /// With `database_url`: the clusters (and their regions) registered at start.
    pub clusters: Vec<ClusterConfig>,
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
    /// Timeouts and rate limits of the public surface.
    pub limits: LimitsConfig,
    /// The embedded default's data directory: its clusters (one subdirectory per region),
    /// context key and admin token digest are kept there across restarts. Absent: all of
    /// it is in temporary directories deleted on exit. Not allowed with `database_url`.
    pub data_dir: Option<PathBuf>,
    /// On SIGTERM or SIGINT, time given to requests in flight and workflow steps under
    /// way to finish, in seconds; past it, what is left is cut and the server exits.
    pub shutdown_grace_secs: u64,
    /// The audit logs: sealer interval, signing key, checkpoint publication, retention.
    pub audit: crate::audit::AuditConfig,
    /// The application's access model, for the platform administrators' management of
    /// tenants' roles and grants (`/v1/tenants/{id}/access/…`).
    pub access: AccessModelConfig,
    /// Monitoring: the configuration and provisioning rules.
    pub insights: InsightsConfig,
    /// Tenants' compliance reports: where the applications' key files are.
    pub report: crate::report::ReportConfig,
}

/// The `[insights]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InsightsConfig {
    /// `[insights.rules]`: the declared configuration rules (checked on every
    /// configuration write and, with the learned detectors, periodically over the fleet),
    /// their severities and thresholds (`tenancy_insights::rules::RulesConfig`).
    pub rules: tenancy_insights::rules::RulesConfig,
}

/// The `[access]` section: the permissions the application declares and what its
/// built-in `member` and `viewer` roles hold, as its `tenancy_access::AccessModel` says
/// (owner and admin hold every permission; `access:manage` is always declared). The
/// control plane checks custom roles and grants against it exactly as the application
/// does; left empty, it knows `access:manage` only, and platform administrators can still
/// list, grant and revoke the built-in roles.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessModelConfig {
    /// Every permission the application declares (`invoices:create`, …).
    pub permissions: Vec<String>,
    /// What the built-in `member` role holds.
    pub member: Vec<String>,
    /// What the built-in `viewer` role holds.
    pub viewer: Vec<String>,
}

impl AccessModelConfig {
    /// The checked model (the error names the permission and what is wrong with it).
    pub fn build(&self) -> Result<tenancy_access::Access, String> {
        tenancy_access::AccessModel::new()
            .permissions(self.permissions.iter().cloned())
            .member(self.member.iter().cloned())
            .viewer(self.viewer.iter().cloned())
            .build()
            .map_err(|e| format!("access: {e}"))
    }
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
            region_names: BTreeMap::new(),
            clusters: Vec::new(),
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
            limits: LimitsConfig::default(),
            data_dir: None,
            shutdown_grace_secs: 30,
            audit: crate::audit::AuditConfig::default(),
            access: AccessModelConfig::default(),
            insights: InsightsConfig::default(),
            report: crate::report::ReportConfig::default(),
        }
    }
}

impl ControlConfig {
    /// Checks the data directory and the shutdown grace period (also after a command
    /// line changed them).
    pub fn validate_runtime(&self) -> Result<(), String> {
        if self.data_dir.is_some() && self.database_url.is_some() {
            return Err(
                "data_dir keeps the embedded default's private clusters; with database_url the \
                 data is in that database: remove one of them"
                    .into(),
            );
        }
        if self.shutdown_grace_secs > 3600 {
            return Err("shutdown_grace_secs must be at most 3600".into());
        }
        self.audit.validate()
    }

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
        if let Some(v) = get("TENANCY_DATA_DIR").filter(|v| !v.is_empty()) {
            cfg.data_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TENANCY_SHUTDOWN_GRACE_SECS") {
            cfg.shutdown_grace_secs = v.parse().map_err(|_| {
                format!("TENANCY_SHUTDOWN_GRACE_SECS={v:?} is not a number of seconds")
            })?;
        }
        if let Some(v) = get("TENANCY_CONTEXT_KEY_ID") {
            cfg.context_key_id = v;
        }
        if let Some(v) = get("TENANCY_CLUSTER_ADMIN_USER") {
            cfg.cluster_admin_user = v;
        }
        for (var, slot) in [
            (
                "TENANCY_CLUSTER_ADMIN_PASSWORD",
                &mut cfg.cluster_admin_password,
            ),
            ("TENANCY_OWNER_PASSWORD", &mut cfg.owner_password),
            ("TENANCY_RUNTIME_PASSWORD", &mut cfg.runtime_password),
            (
                "TENANCY_CONFIG_READER_PASSWORD",
                &mut cfg.config_reader_password,
            ),
        ] {
            if let Some(v) = get(var) {
                *slot = Some(SecretString::from(v));
            }
        }
        if cfg.workers == 0 || cfg.workers > 64 {
            return Err("workers must be between 1 and 64".into());
        }
        if cfg.regions.is_empty() {
            return Err("at least one region must be configured".into());
        }
        cfg.signup.validate(&cfg)?;
        for d in &cfg.admin_token_sha256 {
            crate::auth::parse_digest(d)?;
        }
        cfg.limits.validate()?;
        cfg.access.build()?;
        cfg.insights.rules.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for c in &cfg.clusters {
            c.validate()?;
            if !names.insert(c.name.as_str()) {
                return Err(format!("clusters: {:?} is declared twice", c.name));
            }
        }
        for (id, name) in &cfg.region_names {
            id.parse::<tenancy_core::RegionId>()
                .map_err(|e| format!("region_names: {id:?}: {e}"))?;
            if name.trim().is_empty() || name.len() > 200 {
                return Err(format!(
                    "region_names.{id}: a display name is 1 to 200 characters"
                ));
            }
        }
        cfg.validate_runtime()?;
        if !cfg.clusters.is_empty() && cfg.database_url.is_none() {
            return Err(
                "clusters are registered only with database_url (without it, the embedded default \
                        starts one private cluster per region in `regions`)"
                    .into(),
            );
        }
        Ok(cfg)
    }
}
