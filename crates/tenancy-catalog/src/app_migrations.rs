//! The ledger of the application's migrations across every target (`tenancy migrate`):
//! which app migrations were applied (and the checksum of their text), and per target
//! (a schema or dedicated tenant, or a cluster's pooled tables) the version it is known
//! to be at, when, how long it took and its last error.
//!
//! The engine lives in `tenancy-migrate`; provisioning writes the row of a new tenant.
//! The ledger is written after a target's own transaction commits, so it may lag behind
//! the target's version marker but never claims a version the target does not have.

use tenancy_core::{Placement, TenantId};
use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::corrupt;
use crate::CatalogError;

/// An app migration recorded as applied somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAppMigration {
    /// Version.
    pub version: i32,
    /// File name without extension, when it was first applied.
    pub name: String,
    /// SHA-256 (hex) of the text that was applied.
    pub checksum: String,
}

/// An app migration with its text, as the ledger records it for provisioning: a control
/// plane reads the migrations newer than the ones it loaded from here at each provision,
/// so a new tenant starts at the fleet's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMigrationSource {
    /// Version.
    pub version: i32,
    /// File name without extension.
    pub name: String,
    /// SHA-256 (hex) of `sql`.
    pub checksum: String,
    /// The SQL text; `None` for a migration recorded before the ledger kept texts.
    pub sql: Option<String>,
}

/// Something the app's migrations are applied to, with what the ledger knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationTarget {
    /// The tenant id (schema, dedicated) or the cluster id (pooled tables).
    pub target_id: Uuid,
    /// `Pooled` for a cluster's shared tables, else the tenant's placement.
    pub kind: Placement,
    /// The tenant (none for pooled tables).
    pub tenant_id: Option<TenantId>,
    /// The tenant's slug, or the cluster's name for pooled tables (for people).
    pub label: String,
    /// The cluster holding the target.
    pub cluster_id: Uuid,
    /// The tenant's schema (schema placement).
    pub schema_name: Option<String>,
    /// The tenant's database (dedicated placement).
    pub database_name: Option<String>,
    /// Version the ledger knows (0 when there is no row yet).
    pub version: i32,
    /// The last recorded failure, if any since the last success.
    pub error: Option<String>,
}

/// A target's full ledger row (the control plane's migration status).
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationStatus {
    /// Target id (the tenant's id).
    pub target_id: Uuid,
    /// Placement of the target.
    pub kind: Placement,
    /// Version the target is known to be at.
    pub version: i32,
    /// Checksum of that migration.
    pub checksum: Option<String>,
    /// When it reached that version.
    pub applied_at: Option<OffsetDateTime>,
    /// How long its last migration took.
    pub duration_ms: Option<f64>,
    /// The last failure since the last success.
    pub error: Option<String>,
    /// The version that failed.
    pub error_version: Option<i32>,
    /// When it failed.
    pub failed_at: Option<OffsetDateTime>,
    /// Last change of the row.
    pub updated_at: OffsetDateTime,
}

/// What happened to one target, to be written to the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerUpdate {
    /// Target id.
    pub target_id: Uuid,
    /// Kind of target.
    pub kind: Placement,
    /// Tenant (none for pooled tables).
    pub tenant_id: Option<TenantId>,
    /// Cluster.
    pub cluster_id: Uuid,
    /// The outcome.
    pub outcome: LedgerOutcome,
}

/// Outcome of one target.
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerOutcome {
    /// The target is at `version` (its marker says so, committed).
    At {
        /// Version reached.
        version: i32,
        /// Checksum of that migration.
        checksum: String,
        /// Time of the target's transaction; `None` when nothing had to be applied
        /// (the ledger only caught up with the marker).
        duration_ms: Option<f64>,
    },
    /// Migrating to `version` failed; the target is unchanged.
    Failed {
        /// The version that failed.
        version: i32,
        /// Why.
        error: String,
    },
}

/// The app migrations recorded as applied, by version.
pub async fn recorded_app_migrations<C: GenericClient>(
    client: &C,
) -> Result<Vec<RecordedAppMigration>, CatalogError> {
    let rows = client
        .query(
            "SELECT version, name, checksum FROM tenancy_catalog.app_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(CatalogError::db("reading the app migrations ledger"))?;
    Ok(rows
        .iter()
        .map(|r| RecordedAppMigration {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
        })
        .collect())
}

/// The recorded app migrations newer than `version`, with their texts, by version. One
/// indexed query; empty when nothing newer was recorded (the usual case).
pub async fn app_migration_sources_after<C: GenericClient>(
    client: &C,
    version: i32,
) -> Result<Vec<AppMigrationSource>, CatalogError> {
    let rows = client
        .query(
            "SELECT version, name, checksum, sql FROM tenancy_catalog.app_migrations
              WHERE version > $1 ORDER BY version",
            &[&version],
        )
        .await
        .map_err(CatalogError::db("reading the app migrations ledger"))?;
    Ok(rows
        .iter()
        .map(|r| AppMigrationSource {
            version: r.get(0),
            name: r.get(1),
            checksum: r.get(2),
            sql: r.get(3),
        })
        .collect())
}

/// Records app migrations as applied, with their texts (first writer wins; a recorded
/// checksum never changes; a text missing from an older row is filled in when its
/// checksum matches).
pub async fn record_app_migration_sources<C: GenericClient>(
    client: &C,
    migrations: &[AppMigrationSource],
) -> Result<(), CatalogError> {
    if migrations.is_empty() {
        return Ok(());
    }
    let versions: Vec<i32> = migrations.iter().map(|m| m.version).collect();
    let names: Vec<&str> = migrations.iter().map(|m| m.name.as_str()).collect();
    let sums: Vec<&str> = migrations.iter().map(|m| m.checksum.as_str()).collect();
    let sqls: Vec<Option<&str>> = migrations.iter().map(|m| m.sql.as_deref()).collect();
    // Two statements rather than ON CONFLICT DO UPDATE, which would lock every existing
    // row even when it changes nothing: every provision records its migrations, and
    // concurrent provisions must not queue behind each other's ledger rows.
    client
        .execute(
            "INSERT INTO tenancy_catalog.app_migrations (version, name, checksum, sql)
             SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[])
             ON CONFLICT (version) DO NOTHING",
            &[&versions, &names, &sums, &sqls],
        )
        .await
        .map_err(CatalogError::db("recording app migrations"))?;
    client
        .execute(
            "UPDATE tenancy_catalog.app_migrations a SET sql = u.sql
               FROM unnest($1::int[], $2::text[], $3::text[]) AS u(version, checksum, sql)
              WHERE a.version = u.version AND a.sql IS NULL AND u.sql IS NOT NULL AND a.checksum = u.checksum",
            &[&versions, &sums, &sqls],
        )
        .await
        .map_err(CatalogError::db("recording app migration texts"))?;
    Ok(())
}

/// Every target, one row each: schema and dedicated tenants whose storage exists (active,
/// suspended, or soft-deleted and not yet purged) and the pooled tables of every cluster.
/// Tenants still provisioning are left to provisioning, which brings them to its latest
/// version and writes their row.
const TARGETS: &str = "
    SELECT t.id AS target_id, t.placement AS kind, t.id AS tenant_id, t.slug AS label, t.cluster_id,
           t.schema_name, t.database_name, coalesce(l.version, 0) AS version, l.error
      FROM tenancy_catalog.tenants t
      LEFT JOIN tenancy_catalog.app_migration_targets l ON l.target_id = t.id
     WHERE t.placement IN ('schema', 'dedicated') AND t.state IN ('active', 'suspended', 'deleting')
    UNION ALL
    SELECT c.id, 'pooled', NULL, c.name, c.id, NULL, NULL, coalesce(l.version, 0), l.error
      FROM tenancy_catalog.clusters c
      LEFT JOIN tenancy_catalog.app_migration_targets l ON l.target_id = c.id";

fn target_from_row(r: &Row) -> Result<MigrationTarget, CatalogError> {
    Ok(MigrationTarget {
        target_id: r.get(0),
        kind: r.get::<_, String>(1).parse().map_err(corrupt)?,
        tenant_id: r
            .get::<_, Option<Uuid>>(2)
            .map(TenantId::from_uuid)
            .transpose()
            .map_err(corrupt)?,
        label: r.get(3),
        cluster_id: r.get(4),
        schema_name: r.get(5),
        database_name: r.get(6),
        version: r.get(7),
        error: r.get(8),
    })
}

/// The targets whose ledger version is below `latest` (pooled tables first, then
/// tenants in id order), and how many targets there are in all. One catalog query:
/// a run with nothing to do answers from here without connecting to any target.
pub async fn targets_below<C: GenericClient>(
    client: &C,
    latest: i32,
) -> Result<(Vec<MigrationTarget>, i64), CatalogError> {
    let rows = client
        .query(
            &format!(
                "WITH x AS ({TARGETS})
                 SELECT *, count(*) OVER () FROM x WHERE version < $1
                 UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*) FROM x
                 ORDER BY 1 NULLS FIRST"
            ),
            &[&latest],
        )
        .await
        .map_err(CatalogError::db("listing migration targets"))?;
    let mut total = 0;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        match r.get::<_, Option<Uuid>>(0) {
            None => total = r.get(9),
            Some(_) => out.push(target_from_row(r)?),
        }
    }
    out.sort_by_key(|t| (t.kind != Placement::Pooled, t.target_id));
    Ok((out, total))
}

/// Every target (drift checks, status listings), pooled tables first.
pub async fn all_targets<C: GenericClient>(
    client: &C,
) -> Result<Vec<MigrationTarget>, CatalogError> {
    let rows = client
        .query(&format!("{TARGETS} ORDER BY 1"), &[])
        .await
        .map_err(CatalogError::db("listing migration targets"))?;
    let mut out = rows
        .iter()
        .map(target_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by_key(|t| (t.kind != Placement::Pooled, t.target_id));
    Ok(out)
}

/// Writes outcomes to the ledger in one statement. A success never lowers a recorded
/// version (targets only move forward) and clears the last error; a failure keeps the
/// version and records the error.
pub async fn write_ledger<C: GenericClient>(
    client: &C,
    updates: &[LedgerUpdate],
) -> Result<(), CatalogError> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut tenants: Vec<Option<Uuid>> = Vec::new();
    let mut clusters = Vec::new();
    let mut ok = Vec::new();
    let mut versions = Vec::new();
    let mut sums: Vec<Option<&str>> = Vec::new();
    let mut durations: Vec<Option<f64>> = Vec::new();
    let mut errors: Vec<Option<&str>> = Vec::new();
    for u in updates {
        ids.push(u.target_id);
        kinds.push(u.kind.as_str());
        tenants.push(u.tenant_id.map(|t| t.as_uuid()));
        clusters.push(u.cluster_id);
        match &u.outcome {
            LedgerOutcome::At {
                version,
                checksum,
                duration_ms,
            } => {
                ok.push(true);
                versions.push(*version);
                sums.push(Some(checksum.as_str()));
                durations.push(*duration_ms);
                errors.push(None);
            }
            LedgerOutcome::Failed { version, error } => {
                ok.push(false);
                versions.push(*version);
                sums.push(None);
                durations.push(None);
                errors.push(Some(error.as_str()));
            }
        }
    }
    client
        .execute(
            "INSERT INTO tenancy_catalog.app_migration_targets AS l
                    (target_id, kind, tenant_id, cluster_id, version, checksum, applied_at, duration_ms,
                     error, error_version, failed_at)
             SELECT u.id, u.kind, u.tenant, u.cluster,
                    CASE WHEN u.ok THEN u.version ELSE 0 END,
                    u.sum, CASE WHEN u.ok THEN now() END, u.ms,
                    u.err, CASE WHEN u.ok THEN NULL ELSE u.version END, CASE WHEN u.ok THEN NULL ELSE now() END
               FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::bool[], $6::int[],
                           $7::text[], $8::float8[], $9::text[])
                    AS u(id, kind, tenant, cluster, ok, version, sum, ms, err)
             ON CONFLICT (target_id) DO UPDATE SET
                    version = CASE WHEN excluded.error IS NULL THEN greatest(l.version, excluded.version) ELSE l.version END,
                    checksum = CASE WHEN excluded.error IS NULL AND excluded.version >= l.version THEN excluded.checksum ELSE l.checksum END,
                    applied_at = CASE WHEN excluded.error IS NULL AND excluded.version > l.version THEN now() ELSE l.applied_at END,
                    duration_ms = coalesce(excluded.duration_ms, l.duration_ms),
                    error = excluded.error,
                    error_version = excluded.error_version,
                    failed_at = excluded.failed_at,
                    updated_at = now()",
            &[
                &ids, &kinds, &tenants, &clusters, &ok, &versions, &sums, &durations, &errors,
            ],
        )
        .await
        .map_err(CatalogError::db("writing the migration ledger"))?;
    Ok(())
}

/// The ledger row of a cluster's pooled tables, if it has one.
pub async fn pooled_migration_status<C: GenericClient>(
    client: &C,
    cluster: Uuid,
) -> Result<Option<MigrationStatus>, CatalogError> {
    migration_status(client, cluster).await
}

/// The ledger row of a (schema or dedicated) tenant, if it has one.
pub async fn tenant_migration_status<C: GenericClient>(
    client: &C,
    tenant: TenantId,
) -> Result<Option<MigrationStatus>, CatalogError> {
    migration_status(client, tenant.as_uuid()).await
}

async fn migration_status<C: GenericClient>(
    client: &C,
    target: Uuid,
) -> Result<Option<MigrationStatus>, CatalogError> {
    let row = client
        .query_opt(
            "SELECT target_id, kind, version, checksum, applied_at, duration_ms, error, error_version,
                    failed_at, updated_at
               FROM tenancy_catalog.app_migration_targets WHERE target_id = $1",
            &[&target],
        )
        .await
        .map_err(CatalogError::db("reading a migration status"))?;
    row.map(|r| {
        Ok(MigrationStatus {
            target_id: r.get(0),
            kind: r.get::<_, String>(1).parse().map_err(corrupt)?,
            version: r.get(2),
            checksum: r.get(3),
            applied_at: r.get(4),
            duration_ms: r.get(5),
            error: r.get(6),
            error_version: r.get(7),
            failed_at: r.get(8),
            updated_at: r.get(9),
        })
    })
    .transpose()
}

/// Records, in the provisioning step's transaction, that a new tenant's storage (or, for
/// a pooled tenant, its cluster's pooled tables) is at the version of the last of
/// `applied`, and that those migrations (with their texts) have been applied.
pub async fn record_provisioned<C: GenericClient>(
    client: &C,
    tenant: &crate::Tenant,
    applied: &[AppMigrationSource],
) -> Result<(), CatalogError> {
    let Some(last) = applied.last() else {
        return Ok(());
    };
    record_app_migration_sources(client, applied).await?;
    let (target_id, tenant_id) = match tenant.placement {
        Placement::Pooled => (tenant.cluster_id, None),
        _ => (tenant.id.as_uuid(), Some(tenant.id)),
    };
    write_ledger(
        client,
        &[LedgerUpdate {
            target_id,
            kind: tenant.placement,
            tenant_id,
            cluster_id: tenant.cluster_id,
            outcome: LedgerOutcome::At {
                version: last.version,
                checksum: last.checksum.clone(),
                duration_ms: None,
            },
        }],
    )
    .await
}
