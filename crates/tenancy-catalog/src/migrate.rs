use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::CatalogError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version number, strictly increasing.
    pub version: i32,
    /// File name without extension.
    pub name: &'static str,
    /// The SQL text.
    pub sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The columns and table constraints of an audit event table (`sql/audit_event_columns.sql`):
/// the control plane's log (`tenancy_catalog.audit_log`, migration `0011_audit`) and every
/// tenant database's `tenancy.audit_events` (tenancy-audit) share them, so one hash
/// function and one sealer serve both. Migrations hold the marker
/// [`AUDIT_EVENT_COLUMNS_MARKER`] where the build puts them.
pub const AUDIT_EVENT_COLUMNS: &str = include_str!("../sql/audit_event_columns.sql");

/// The line that stands for [`AUDIT_EVENT_COLUMNS`] in a `CREATE TABLE` of an SQL file.
pub const AUDIT_EVENT_COLUMNS_MARKER: &str = "{{audit_event_columns}}";

/// Migration `0011_audit` as applied (its columns in place): the catalog's audit tables.
/// Idempotent; tenancy-audit runs it on catalogs whose audit tables predate it.
pub const AUDIT_MIGRATION_SQL: &str =
    include_str!(concat!(env!("OUT_DIR"), "/migrations/0011_audit.sql"));

fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Applies every migration not yet applied, each in its own transaction, and returns the
/// versions applied now. Must run as the owner role. Serialised by an advisory lock so two
/// processes starting at once do not race.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, CatalogError> {
    migrate_with(client, MIGRATIONS).await
}

pub(crate) async fn migrate_with(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, CatalogError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS tenancy_catalog;
             CREATE TABLE IF NOT EXISTS tenancy_catalog.schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 duration_ms double precision NOT NULL
             );",
        )
        .await
        .map_err(CatalogError::db("creating the catalog migration ledger"))?;
    let mut applied_now = Vec::new();
    for m in migrations {
        let tx = client
            .transaction()
            .await
            .map_err(CatalogError::db("starting a migration transaction"))?;
        tx.execute("SELECT pg_advisory_xact_lock(7361626)", &[])
            .await
            .map_err(CatalogError::db("locking the catalog ledger"))?;
        let row = tx
            .query_opt(
                "SELECT checksum FROM tenancy_catalog.schema_migrations WHERE version = $1",
                &[&m.version],
            )
            .await
            .map_err(CatalogError::db("reading the catalog ledger"))?;
        let sum = checksum(m.sql);
        if let Some(row) = row {
            let applied: String = row.get(0);
            if applied != sum {
                return Err(CatalogError::ChecksumMismatch {
                    version: m.version,
                    name: m.name.into(),
                    applied,
                    current: sum,
                });
            }
            continue;
        }
        let started = std::time::Instant::now();
        tx.batch_execute(m.sql)
            .await
            .map_err(CatalogError::db("applying a catalog migration"))?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tx.execute(
            "INSERT INTO tenancy_catalog.schema_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            &[&m.version, &m.name, &sum, &ms],
        )
        .await
        .map_err(CatalogError::db("recording a catalog migration"))?;
        tx.commit()
            .await
            .map_err(CatalogError::db("committing a catalog migration"))?;
        tracing::info!(
            version = m.version,
            name = m.name,
            ms,
            "catalog migration applied"
        );
        applied_now.push(m.version);
    }
    Ok(applied_now)
}

#[doc(hidden)]
pub async fn migrate_for_tests(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<Vec<i32>, CatalogError> {
    migrate_with(client, migrations).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Released migrations are embedded byte for byte (their applied checksums must never
    /// change); only a migration with a marker is expanded, and no marker is left behind.
    #[test]
    fn migrations_are_embedded_as_written_except_for_their_markers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for m in MIGRATIONS {
            let file = std::fs::read_to_string(dir.join(format!("{}.sql", m.name)))
                .expect("migration file");
            assert!(!m.sql.contains("{{"), "{}: a marker was left", m.name);
            if file.contains(AUDIT_EVENT_COLUMNS_MARKER) {
                assert_eq!(
                    m.sql,
                    file.replace(AUDIT_EVENT_COLUMNS_MARKER, AUDIT_EVENT_COLUMNS.trim_end()),
                    "{}",
                    m.name
                );
            } else {
                assert_eq!(m.sql, file, "{} is not embedded as written", m.name);
            }
        }
        let audit = MIGRATIONS
            .iter()
            .find(|m| m.name == "0011_audit")
            .expect("0011_audit");
        assert_eq!(audit.sql, AUDIT_MIGRATION_SQL);
        assert!(AUDIT_MIGRATION_SQL.contains(AUDIT_EVENT_COLUMNS.trim_end()));
    }
}
