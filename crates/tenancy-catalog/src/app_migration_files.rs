//! The application's migrations as files (`NNNN_name.sql`): what `tenancy migrate`
//! applies to every target and provisioning applies to a new tenant's storage, checked
//! against the ledger ([`crate::AppMigrationSource`]) by checksum.

use std::path::Path;

/// A set of app migrations that cannot be used: two with one version, a file that
/// cannot be read or is not named `NNNN_name.sql`, or a fleet migration recorded
/// without its text or with a text that does not match its checksum.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AppMigrationsError(
    /// What is wrong, naming the file or version.
    pub String,
);

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
    pub fn new(mut migrations: Vec<AppMigration>) -> Result<Self, AppMigrationsError> {
        migrations.sort_by_key(|m| m.version);
        for w in migrations.windows(2) {
            if w[0].version == w[1].version {
                return Err(AppMigrationsError(format!(
                    "two app migrations share version {}",
                    w[0].version
                )));
            }
        }
        Ok(AppMigrations { migrations })
    }

    /// Reads `NNNN_name.sql` files from a directory.
    pub fn from_dir(dir: &Path) -> Result<Self, AppMigrationsError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            AppMigrationsError(format!("reading app migrations in {}: {e}", dir.display()))
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| AppMigrationsError(format!("reading {}: {e}", dir.display())))?
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
                    AppMigrationsError(format!(
                        "app migration {} must be named NNNN_name.sql",
                        path.display()
                    ))
                })?;
            let sql = std::fs::read_to_string(&path)
                .map_err(|e| AppMigrationsError(format!("reading {}: {e}", path.display())))?;
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
    pub fn sources(&self) -> Vec<crate::AppMigrationSource> {
        self.migrations
            .iter()
            .map(|m| crate::AppMigrationSource {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum(),
                sql: Some(m.sql.clone()),
            })
            .collect()
    }

    /// These migrations followed by the fleet's newer ones (`newer`: what the catalog's
    /// ledger recorded after [`AppMigrations::latest`], see
    /// `crate::app_migration_sources_after`). Refuses a recorded migration
    /// without its text or whose text does not match its checksum: a tenant provisioned
    /// without it would be behind the fleet.
    pub fn with_fleet(
        &self,
        newer: &[crate::AppMigrationSource],
    ) -> Result<Self, AppMigrationsError> {
        let mut out = self.migrations.clone();
        for r in newer.iter().filter(|r| r.version > self.latest()) {
            let Some(sql) = &r.sql else {
                return Err(AppMigrationsError(format!(
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
                return Err(AppMigrationsError(format!(
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
