//! Provisioning settings: the app's migrations, plans, webhook receivers, retries.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;

pub use tenancy_catalog::{AppMigration, AppMigrations};

/// An HTTP receiver of signed webhooks (Standard Webhooks).
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Name (stable; registrations are recorded per receiver name).
    pub name: String,
    /// `http://` URL the webhooks are POSTed to.
    pub url: String,
    /// `whsec_<base64>` signing secret.
    pub secret: SecretString,
}

/// Settings of the provisioning engine.
#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    /// The application's tenant-table migrations.
    pub app_migrations: AppMigrations,
    /// Settings seeded per plan (`plan → key → value`).
    pub plans: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    /// Third-party systems every new tenant is registered with (a provisioning step).
    pub registration_receivers: Vec<Receiver>,
    /// Receivers of lifecycle events (`tenant.activated`, `tenant.suspended`, …).
    pub event_receivers: Vec<Receiver>,
    /// How long a soft-deleted tenant is kept before its data is purged.
    pub retention: Duration,
    /// Attempts of a step before the workflow gives up (and compensates).
    pub max_attempts: i32,
    /// First retry delay; doubled per attempt.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts of an outbox delivery before it is marked dead.
    pub outbox_max_attempts: i32,
    /// Timeout of one webhook request.
    pub webhook_timeout: Duration,
    /// How often idle workers look for due work (they are also woken on enqueue).
    pub poll_interval: Duration,
    /// Pre-created storage per cluster, claimed at signup and refilled in the background.
    pub warm_pool: WarmPool,
    /// Online moves: the cutover's bounds and how long the old copy is kept.
    pub moves: MoveSettings,
}

/// Settings of online moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoveSettings {
    /// How long the cutover window is announced for: routers hold new transactions of the
    /// tenant at most this long (their own `cutover_wait` bounds them too).
    pub cutover_wait: Duration,
    /// How long the cutover waits for the tenant's open writing transactions on the old
    /// placement to finish (the drain); past it the cutover gives up and is retried.
    pub drain_timeout: Duration,
    /// How long the old copy is kept after the switch before it is dropped.
    pub keep_source: Duration,
}

impl Default for MoveSettings {
    fn default() -> Self {
        MoveSettings {
            cutover_wait: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
            keep_source: Duration::from_secs(24 * 3600),
        }
    }
}

/// Size of the warm pool of each cluster: spare schemas (in the shared database) and
/// spare databases, created at the app's latest version with no tenant, claimed by the
/// storage step of schema and dedicated tenants (which fall back to creating storage
/// when none is available) and refilled by a task started with the workers. 0 disables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmPool {
    /// Spare schemas per cluster.
    pub schemas: usize,
    /// Spare databases per cluster.
    pub databases: usize,
}

impl WarmPool {
    /// No warm pool: every tenant's storage is created at signup.
    pub const DISABLED: WarmPool = WarmPool {
        schemas: 0,
        databases: 0,
    };

    /// Whether anything is kept warm.
    pub fn enabled(&self) -> bool {
        self.schemas > 0 || self.databases > 0
    }
}

impl Default for WarmPool {
    fn default() -> Self {
        WarmPool {
            schemas: 4,
            databases: 4,
        }
    }
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        ProvisionConfig {
            app_migrations: AppMigrations::default(),
            plans: BTreeMap::new(),
            registration_receivers: Vec::new(),
            event_receivers: Vec::new(),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_attempts: 5,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            outbox_max_attempts: 8,
            webhook_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(500),
            warm_pool: WarmPool::default(),
            moves: MoveSettings::default(),
        }
    }
}

impl ProvisionConfig {
    /// Retry delay after `attempts` failed attempts: exponential with ±25 % jitter.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempts.clamp(0, 16) as u32);
        let capped = exp.min(self.backoff_max);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        capped.mul_f64(jitter)
    }
}
