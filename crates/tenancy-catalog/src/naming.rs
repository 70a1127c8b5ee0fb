//! Where a tenant's storage is on its cluster, derived from its id (so a re-run step
//! computes the same name), and the version marker a migrated schema carries. Shared by
//! provisioning, which creates the storage, and `tenancy migrate`, which migrates it.

use tenancy_core::TenantId;

/// Marker prefix of the comment on a migrated schema: `tenancy-app-version:<version>`.
pub const MARKER: &str = "tenancy-app-version:";

/// The schema of a schema-placement tenant.
pub fn schema_name_for(tenant: TenantId) -> String {
    format!("t_{}", tenant.as_uuid().simple())
}

/// The database of a dedicated tenant.
pub fn database_name_for(tenant: TenantId) -> String {
    format!("tenant_{}", tenant.as_uuid().simple())
}
