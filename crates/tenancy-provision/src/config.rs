//! Provisioning settings: the app's migrations, plans, webhook receivers, retries.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;

use crate::Error;

/// One migration of the application's tenant tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMigration {
    /// Version, strictly increasing.
    pub version: i32,
    /// File name without extension.
    pub name: String,
    /// SQL, run with `search_path` set to the tenant's schema (or `public`).
    pub sql: String,
}

impl AppMigration {
    /// SHA-256 (hex) of the SQL text: what the migration ledger records, so a file
    /// changed after it was applied is refused.
    pub fn checksum(&self) -> String {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(self.sql.as_bytes()))
    }
}

/// The application's migrations, in version order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppMigrations {
    /// Sorted by version, versions unique.
    migrations: Vec<AppMigration>,
}

impl AppMigrations {
    /// Builds the list from migrations in any order; refuses duplicate versions.
    pub fn new(mut migrations: Vec<AppMigration>) -> Result<Self, Error> {
        migrations.sort_by_key(|m| m.version);
        for w in migrations.windows(2) {
            if w[0].version == w[1].version {
                return Err(Error::Config(format!(
                    "two app migrations share version {}",
                    w[0].version
                )));
            }
        }
        Ok(AppMigrations { migrations })
    }

    /// Reads `NNNN_name.sql` files from a directory.
    pub fn from_dir(dir: &Path) -> Result<Self, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::Config(format!("reading app migrations in {}: {e}", dir.display()))
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| Error::Config(format!("reading {}: {e}", dir.display())))?
                .path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".sql"))
            else {
                continue;
            };
            let version: i32 = stem
                .split('_')
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "app migration {} must be named NNNN_name.sql",
                        path.display()
                    ))
                })?;
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
            out.push(AppMigration {
                version,
                name: stem.to_owned(),
                sql,
            });
        }
        Self::new(out)
    }

    /// The latest version (0 when there are none).
    pub fn latest(&self) -> i32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// Every migration, in version order.
    pub fn all(&self) -> &[AppMigration] {
        &self.migrations
    }

    /// The migrations with their texts, as the ledger records them for provisioning.
    pub fn sources(&self) -> Vec<tenancy_catalog::AppMigrationSource> {
        self.migrations
            .iter()
            .map(|m| tenancy_catalog::AppMigrationSource {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum(),
                sql: Some(m.sql.clone()),
            })
            .collect()
    }

    /// These migrations followed by the fleet's newer ones (`newer`: what the catalog's
    /// ledger recorded after [`AppMigrations::latest`], see
    /// `tenancy_catalog::app_migration_sources_after`). Refuses a recorded migration
    /// without its text or whose text does not match its checksum: a tenant provisioned
    /// without it would be behind the fleet.
    pub fn with_fleet(&self, newer: &[tenancy_catalog::AppMigrationSource]) -> Result<Self, Error> {
        let mut out = self.migrations.clone();
        for r in newer.iter().filter(|r| r.version > self.latest()) {
            let Some(sql) = &r.sql else {
                return Err(Error::Config(format!(
                    "the fleet is at app migration {} ({}), recorded without its text (by an older tenancy migrate), and \
                     this control plane loaded migrations up to version {}: restart tenancy serve with \
                     app_migrations_dir holding version {} (provisioning then records the text for every \
                     control plane)",
                    r.version,
                    r.name,
                    self.latest(),
                    r.version
                )));
            };
            let m = AppMigration {
                version: r.version,
                name: r.name.clone(),
                sql: sql.clone(),
            };
            if m.checksum() != r.checksum {
                return Err(Error::Config(format!(
                    "the catalog's text of app migration {} ({}) does not match its checksum {}",
                    r.version, r.name, r.checksum
                )));
            }
            out.push(m);
        }
        Self::new(out)
    }

    /// Migrations newer than `version`.
    pub fn after(&self, version: i32) -> impl Iterator<Item = &AppMigration> {
        self.migrations.iter().filter(move |m| m.version > version)
    }

    /// A generated application of `tables` tenant tables (a chain of composite foreign
    /// keys, an index each), as one migration; used by tests and the benchmark.
    pub fn generated(tables: usize) -> Self {
        let mut sql = String::new();
        for i in 0..tables {
            sql.push_str(&format!(
                "CREATE TABLE t{i:02} (\n    tenant_id uuid NOT NULL,\n    id bigint GENERATED ALWAYS AS IDENTITY,\n    name text NOT NULL,\n    amount numeric(12,2) NOT NULL DEFAULT 0,\n    created_at timestamptz NOT NULL DEFAULT now(),\n"
            ));
            if i > 0 {
                sql.push_str(&format!("    parent_id bigint,\n    FOREIGN KEY (tenant_id, parent_id) REFERENCES t{:02} (tenant_id, id),\n", i - 1));
            }
            sql.push_str(&format!(
                "    PRIMARY KEY (tenant_id, id)\n);\nCREATE INDEX ON t{i:02} (tenant_id, name);\n"
            ));
        }
        AppMigrations {
            migrations: vec![AppMigration {
                version: 1,
                name: format!("0001_generated_{tables}_tables"),
                sql,
            }],
        }
    }
}

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
