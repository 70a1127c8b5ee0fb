//! Exports of one tenant and their audit trail, shared by `POST /v1/tenants/{id}/export`
//! (`api::transfer`) and `tenancy tenants export`.
//!
//! An export is recorded once it is complete, as `tenant.export` in two logs: the control
//! log (the catalog, in the tenant's chain), which the compliance report lists, and the
//! tenant's own audit log (its database, through a transaction of the tenant), which is
//! the tenant's record of who took its data. Both events carry the same facts ([`ExportFacts`]:
//! the archive's digests, its size, each table's rows and checksum) in `after`, in clear:
//! they describe the archive, not the tenant's data. An export that failed or that the
//! client did not take to its end is not recorded.
//!
//! It does not write archives (`tenancy-transfer` does) and does not decide who may
//! export (the API's admin authentication and the CLI's database login do).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenancy_audit::{Event, Outcome};
use tenancy_core::TenantId;
use tenancy_sdk::{PoolOptions, Router};
use tokio_postgres::Client;

use crate::audit::Who;

/// The action of an export's audit events.
pub const EXPORT_ACTION: &str = "tenant.export";

/// Exports that may run at once per database through the control plane (the connections
/// of the export pools, see [`export_pool_options`]).
pub const MAX_EXPORTS: usize = 4;

/// How long an export waits for one of the [`MAX_EXPORTS`] connections before it is
/// refused as busy.
pub const EXPORT_WAIT: Duration = Duration::from_secs(2);

/// The pool settings of exports, from those of the control plane's tenant transactions:
/// an export is one transaction as long as the tenant is large (no transaction deadline,
/// no statement timeout), and at most [`MAX_EXPORTS`] run at once per database.
pub fn export_pool_options(base: &PoolOptions) -> PoolOptions {
    PoolOptions {
        max_size: MAX_EXPORTS,
        wait_timeout: EXPORT_WAIT,
        transaction_deadline: Duration::ZERO,
        statement_timeout: Duration::ZERO,
        ..base.clone()
    }
}

/// One table of an export: its rows and their order-independent checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedTable {
    /// The table.
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// The checksum of its rows, as the archive's summary states it (32 hex digits).
    pub checksum: String,
}

/// What an export produced, as its audit events record it (`after`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFacts {
    /// The export's id (the `Tenancy-Export-Id` header of the API's answer).
    pub export_id: String,
    /// How it was asked for: `api` or `cli`.
    pub via: String,
    /// SHA-256 (hex) of the whole archive, what `sha256sum` prints for the file.
    pub sha256: String,
    /// The digest the archive's summary carries (SHA-256 of every byte before it).
    pub digest: String,
    /// Size of the archive in bytes.
    pub bytes: u64,
    /// Rows of every table.
    pub rows: u64,
    /// The app version of the tenant's storage.
    pub app_version: i32,
    /// Each table's rows and checksum.
    pub tables: Vec<ExportedTable>,
}

impl ExportFacts {
    /// The facts of a finished export.
    pub fn new(
        export_id: uuid::Uuid,
        via: &str,
        summary: &tenancy_transfer::ExportSummary,
    ) -> ExportFacts {
        ExportFacts {
            export_id: export_id.to_string(),
            via: via.to_owned(),
            sha256: summary.sha256.clone(),
            digest: summary.digest.clone(),
            bytes: summary.bytes,
            rows: summary.rows(),
            app_version: summary.header.app.version,
            tables: summary
                .tables
                .iter()
                .map(|t| ExportedTable {
                    table: t.table.clone(),
                    rows: t.rows,
                    checksum: t.checksum.clone(),
                })
                .collect(),
        }
    }
}

/// The audit event of an export of `tenant` by `who`.
pub fn export_event(tenant: TenantId, who: &Who, facts: &ExportFacts) -> Event {
    let mut e = Event::new(who.actor.clone(), EXPORT_ACTION).target(format!("tenant:{tenant}"));
    e.after = Some(serde_json::to_value(facts).unwrap_or_default());
    e.request_id = who.origin.request_id.clone();
    e.trace_id = who.origin.trace_id.clone();
    e.client_addr = who.origin.client;
    e.outcome = Outcome::Success;
    e
}

/// Creates the audit table in a tenant database where it is missing (a database made
/// before the audit log, or one no sealer has visited yet). `owner` is connected as the
/// owner role to the tenant's database.
pub async fn ensure_audit_table(owner: &Client) -> Result<(), tenancy_audit::Error> {
    let has: bool = owner
        .query_one(
            "SELECT to_regclass('tenancy.audit_events') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|source| tenancy_audit::Error::Db {
            what: "looking for the audit table",
            source,
        })?
        .get(0);
    if !has {
        tenancy_audit::install(owner)
            .await
            .map_err(|source| tenancy_audit::Error::Db {
                what: "installing the audit table",
                source,
            })?;
    }
    Ok(())
}

/// Records a finished export of `tenant` by `who`: in the control log (`catalog`, an
/// owner connection to the catalog, in a transaction of its own), then in the tenant's
/// own audit log through a transaction of the tenant (`router`: runtime role, signed
/// context; the tenant's database must have the audit table, see
/// [`ensure_audit_table`]). Two databases, so two commits: if the second fails the
/// error says so and the control log keeps the first.
pub async fn record_export(
    catalog: &mut Client,
    router: &Router,
    tenant: TenantId,
    who: &Who,
    facts: &ExportFacts,
) -> Result<(), tenancy_audit::Error> {
    let event = export_event(tenant, who, facts);
    let db = |what: &'static str| move |source| tenancy_audit::Error::Db { what, source };
    let tx = catalog
        .transaction()
        .await
        .map_err(db("starting a catalog transaction"))?;
    tenancy_audit::record_control(&tx, Some(tenant.as_uuid()), &event).await?;
    tx.commit()
        .await
        .map_err(db("committing an export's control-log event"))?;
    let tx = router.begin(tenant).await?;
    tenancy_audit::record_and_commit(tx, &event).await
}
