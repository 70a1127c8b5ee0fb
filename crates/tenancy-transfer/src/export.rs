//! Export: a tenant's rows into an archive, streamed.

use futures_util::StreamExt;
use tenancy_catalog::Tenant;
use tenancy_core::{Placement, TenantId};
use tenancy_sdk::Router;
use tokio::io::AsyncWrite;
use tokio_postgres::Client;

use crate::format::{
    copy_unescape, AppVersion, ArchiveWriter, Header, MigrationRef, RowChecksum, Source,
    TableSummary, FORMAT_VERSION, ROWS_FRAME_TARGET, ROW_FORMAT, SESSION_SETTINGS,
};
use crate::{tables, Error, Progress};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportSummary {
    /// The archive's header.
    pub header: Header,
    /// Each table's count and checksum.
    pub tables: Vec<TableSummary>,
    /// Bytes written.
    pub bytes: u64,
    /// The digest the archive's summary carries (SHA-256, hex, of every byte before the
    /// summary frame; the reader checks it).
    pub digest: String,
    /// SHA-256 (hex) of the whole archive as written, what `sha256sum` prints for the
    /// file.
    pub sha256: String,
}

impl ExportSummary {
    /// Rows of every table.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "exported tenant {} ({}, {}) at app version {}: {} tables, {} rows, {} bytes",
            self.header.source.slug,
            self.header.source.tenant,
            self.header.source.placement,
            self.header.app.version,
            self.tables.len(),
            self.rows(),
            self.bytes
        )?;
        write!(f, "{}", crate::Tables(&self.tables))?;
        writeln!(f, "sha256 {}", self.sha256)
    }
}

/// The app version of the tenant's storage (its cluster's pooled tables, or its own schema
/// or database) and the recorded migrations up to it.
pub(crate) async fn app_version(catalog: &Client, t: &Tenant) -> Result<AppVersion, Error> {
    let status = match t.placement {
        Placement::Pooled => {
            tenancy_catalog::pooled_migration_status(catalog, t.cluster_id).await?
        }
        Placement::Schema | Placement::Dedicated => {
            tenancy_catalog::tenant_migration_status(catalog, t.id).await?
        }
    };
    let version = status.map(|s| s.version).unwrap_or(0);
    let migrations = tenancy_catalog::recorded_app_migrations(catalog)
        .await?
        .into_iter()
        .filter(|m| m.version <= version)
        .map(|m| MigrationRef {
            version: m.version,
            name: m.name,
            checksum: m.checksum,
        })
        .collect();
    Ok(AppVersion {
        version,
        migrations,
    })
}

/// Writes every tenant table's rows of `tenant` to `out` as an archive.
///
/// The rows are read in one transaction of the tenant's own (`router.begin`: the runtime
/// role, the signed context, row-level security forced), so the database decides which
/// rows are the tenant's: the export holds no filter of its own that could be wrong, and
/// in the shared tables of a pooled placement it cannot see another tenant's rows. Each
/// table streams out of `COPY (SELECT …) TO STDOUT` into frames of about 256 KiB; memory
/// does not grow with the tenant. `catalog` is an owner connection to the catalog (the
/// tenant's record and the app's migration ledger).
///
/// The transaction is READ COMMITTED (the SDK opens no other level), so each table is a
/// consistent snapshot but two tables may be read at different moments while the tenant
/// keeps writing; suspend its writers for an archive consistent across tables.
pub async fn export<W: AsyncWrite + Unpin>(
    router: &Router,
    catalog: &Client,
    tenant: TenantId,
    out: W,
    progress: &dyn Progress,
) -> Result<ExportSummary, Error> {
    let plan = ExportPlan::read(catalog, tenant).await?;
    export_planned(router, plan, out, progress).await
}

/// What an export reads from the catalog before it opens the tenant's transaction: the
/// tenant's record and the app version of its storage. Reading it first lets a caller
/// give its catalog connection back before the rows stream (an export holds no catalog
/// connection while it runs).
#[derive(Debug, Clone)]
pub struct ExportPlan {
    tenant: Tenant,
    app: AppVersion,
}

impl ExportPlan {
    /// Reads the tenant's record and its app version. `catalog` is an owner connection
    /// to the catalog.
    pub async fn read(catalog: &Client, tenant: TenantId) -> Result<ExportPlan, Error> {
        let t = tenancy_catalog::get_tenant(catalog, tenant).await?;
        let app = app_version(catalog, &t).await?;
        Ok(ExportPlan { tenant: t, app })
    }

    /// The tenant's record as read.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }
}

/// [`export`] of a tenant whose catalog facts were read already ([`ExportPlan::read`]).
pub async fn export_planned<W: AsyncWrite + Unpin>(
    router: &Router,
    plan: ExportPlan,
    out: W,
    progress: &dyn Progress,
) -> Result<ExportSummary, Error> {
    let ExportPlan { tenant: t, app } = plan;
    let tenant = t.id;
    let mut tx = router.begin(tenant).await?;
    tx.batch_execute(SESSION_SETTINGS).await?;
    let tables = tables::tenant_tables(&mut tx).await?;
    let header = Header {
        format_version: FORMAT_VERSION,
        source: Source {
            tenant: t.id.to_string(),
            slug: t.slug.to_string(),
            placement: t.placement.to_string(),
            region: t.region.to_string(),
        },
        exported_at: now_rfc3339(),
        app,
        row_format: ROW_FORMAT.to_owned(),
        tables: tables.iter().map(|t| t.def.clone()).collect(),
    };
    let mut w = ArchiveWriter::start(out, &header).await?;
    let mut sums = Vec::with_capacity(tables.len());
    for table in &tables {
        let name = &table.def.name;
        progress.table(name);
        w.json(b'T', &serde_json::json!({ "table": name })).await?;
        let sql = format!(
            "COPY (SELECT (to_jsonb(r) - 'tenant_id')::text FROM {} r) TO STDOUT",
            table.qualified
        );
        let client = tx.client().await?;
        let stream = client
            .copy_out(sql.as_str())
            .await
            .map_err(Error::db(format!("reading table {name}")))?;
        futures_util::pin_mut!(stream);
        let mut sum = RowChecksum::default();
        // Bytes of a row split across two COPY messages, and the frame being filled.
        let mut pending: Vec<u8> = Vec::new();
        let mut batch: Vec<u8> = Vec::with_capacity(ROWS_FRAME_TARGET + 4096);
        let mut batch_rows = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(Error::db(format!("reading table {name}")))?;
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
                let row = copy_unescape(&pending[start..start + pos]);
                start += pos + 1;
                sum.add(&row);
                batch.extend_from_slice(&row);
                batch.push(b'\n');
                batch_rows += 1;
                if batch.len() >= ROWS_FRAME_TARGET {
                    w.frame(b'R', &batch).await?;
                    batch.clear();
                    progress.rows(batch_rows);
                    batch_rows = 0;
                }
            }
            pending.drain(..start);
        }
        if !pending.is_empty() {
            return Err(Error::Refused(format!(
                "the COPY output of table {name} ended inside a row"
            )));
        }
        if !batch.is_empty() {
            w.frame(b'R', &batch).await?;
            progress.rows(batch_rows);
        }
        let s = sum.summary(name);
        w.json(b'E', &s).await?;
        sums.push(s);
    }
    let (_, written) = w.finish_written(sums.clone()).await?;
    progress.bytes(written.bytes);
    // Nothing was written; ending without a commit says so.
    tx.rollback().await?;
    Ok(ExportSummary {
        header,
        tables: sums,
        bytes: written.bytes,
        digest: written.digest,
        sha256: written.sha256,
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
