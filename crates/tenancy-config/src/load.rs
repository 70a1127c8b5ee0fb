//! Reading the configuration: every statement the client runs against the catalog, as
//! the configuration reader role. A full load of everything, one flag, or one tenant (the
//! targeted reloads a notification asks for). The control-plane store writes; this only
//! reads.

use std::collections::BTreeMap;

use serde_json::Value;
use tenancy_core::{PlanKey, RegionId, TenantId};
use tokio_postgres::GenericClient;

use crate::engine::{ConfigData, TenantData};
use crate::error::ConfigError;
use crate::model::{
    Branding, Domain, EntitlementDef, EntitlementKey, EntitlementKind, Flag, FlagKey, LayerValues,
    Override, OverrideTarget, Plan, RegionLayer, SettingDef, TenantAttributes,
};

/// The notification channel: every configuration write sends `<kind>:<id>` on it.
pub const CHANNEL: &str = "tenancy_config";

/// The columns of `tenancy_catalog.config_domains` that [`domain_from_row`] reads, in order.
pub const DOMAIN_COLUMNS: &str = "tenant_id, hostname, state, token, verified_at, last_error";

/// A custom domain from a row of [`DOMAIN_COLUMNS`].
pub fn domain_from_row(r: &tokio_postgres::Row) -> Result<Domain, ConfigError> {
    Ok(Domain {
        tenant_id: TenantId::from_uuid(r.get(0)).map_err(ConfigError::corrupt)?,
        hostname: r.get(1),
        state: r.get::<_, &str>(2).parse().map_err(ConfigError::corrupt)?,
        token: r.get(3),
        verified_at: r.get(4),
        last_error: r.get(5),
    })
}

fn layer_from(v: Value) -> Result<LayerValues, ConfigError> {
    serde_json::from_value(v).map_err(ConfigError::corrupt)
}

/// Loads every definition and every live tenant's configuration.
pub async fn load_all(c: &impl GenericClient) -> Result<ConfigData, ConfigError> {
    load_scoped(c, None).await
}

/// Loads every definition and the configuration of every live tenant, or of `only` (the
/// others are left out). With a transaction, what it sees includes its own writes.
pub async fn load_scoped(
    c: &impl GenericClient,
    only: Option<TenantId>,
) -> Result<ConfigData, ConfigError> {
    let (version, ents, plans, regions, flags, settings, tenants) = futures_util::try_join!(
        c.query_one("SELECT coalesce(max(version), 0) FROM tenancy_catalog.config_changes", &[]),
        c.query("SELECT key, kind, default_value, description FROM tenancy_catalog.config_entitlements", &[]),
        c.query("SELECT key, display_name, layer FROM tenancy_catalog.config_plans", &[]),
        c.query("SELECT region, layer FROM tenancy_catalog.config_regions", &[]),
        c.query("SELECT definition FROM tenancy_catalog.config_flags", &[]),
        c.query("SELECT key, schema, default_value, description FROM tenancy_catalog.config_setting_defs", &[]),
        load_tenants(c, only),
    )
    .map_err(ConfigError::db("loading the configuration"))?;
    let mut data = ConfigData {
        version: version.get(0),
        ..Default::default()
    };
    for r in &ents {
        let kind = EntitlementKind::from_stored(r.get(1));
        data.entitlements.push(EntitlementDef {
            key: r
                .get::<_, String>(0)
                .try_into()
                .map_err(ConfigError::corrupt)?,
            kind,
            default: serde_json::from_value(r.get(2)).map_err(ConfigError::corrupt)?,
            description: r.get(3),
        });
    }
    for r in &plans {
        data.plans.push(Plan {
            key: r
                .get::<_, String>(0)
                .parse::<PlanKey>()
                .map_err(ConfigError::corrupt)?,
            display_name: r.get(1),
            values: layer_from(r.get(2))?,
        });
    }
    for r in &regions {
        data.regions.push(RegionLayer {
            region: r
                .get::<_, String>(0)
                .parse::<RegionId>()
                .map_err(ConfigError::corrupt)?,
            values: layer_from(r.get(1))?,
        });
    }
    for r in &flags {
        data.flags
            .push(serde_json::from_value(r.get(0)).map_err(ConfigError::corrupt)?);
    }
    for r in &settings {
        data.settings.push(SettingDef {
            key: r
                .get::<_, String>(0)
                .try_into()
                .map_err(ConfigError::corrupt)?,
            schema: r.get(1),
            default: r.get(2),
            description: r.get(3),
        });
    }
    data.tenants = tenants?;
    Ok(data)
}

/// Loads one flag (`None` when it was deleted).
pub async fn load_flag(
    c: &impl GenericClient,
    key: &FlagKey,
) -> Result<Option<(Flag, i64)>, ConfigError> {
    let row = c
        .query_opt(
            "SELECT definition, version FROM tenancy_catalog.config_flags WHERE key = $1",
            &[&key.as_str()],
        )
        .await
        .map_err(ConfigError::db("loading a flag"))?;
    row.map(|r| {
        Ok((
            serde_json::from_value(r.get(0)).map_err(ConfigError::corrupt)?,
            r.get(1),
        ))
    })
    .transpose()
}

/// Loads one tenant's configuration (`None` when it is gone or deleted).
pub async fn load_tenant(
    c: &impl GenericClient,
    id: TenantId,
) -> Result<Option<TenantData>, ConfigError> {
    let mut v = load_tenants(c, Some(id))
        .await
        .map_err(ConfigError::db("loading a tenant's configuration"))??;
    Ok(v.pop())
}

/// The tenants' rows, attributes, overrides, settings, branding and domains: one query per
/// table, pipelined. The outer error is the driver's, the inner a parse failure.
async fn load_tenants(
    c: &impl GenericClient,
    only: Option<TenantId>,
) -> Result<Result<Vec<TenantData>, ConfigError>, tokio_postgres::Error> {
    let only = only.map(|t| t.as_uuid());
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&only];
    let domains_sql = format!(
        "SELECT {DOMAIN_COLUMNS} FROM tenancy_catalog.config_domains WHERE $1::uuid IS NULL OR tenant_id = $1"
    );
    let (tenants, overrides, settings, branding, domains) = futures_util::try_join!(
        c.query(
            "SELECT t.id, t.plan, t.region, t.placement, t.created_at, coalesce(a.tags, '{}'), coalesce(a.custom, '{}')
             FROM tenancy_catalog.tenants t LEFT JOIN tenancy_catalog.config_tenant_attributes a ON a.tenant_id = t.id
             WHERE t.state <> 'deleted' AND ($1::uuid IS NULL OR t.id = $1)",
            &params,
        ),
        c.query(
            "SELECT tenant_id, kind, key, value, reason, expires_at, created_by FROM tenancy_catalog.config_overrides
             WHERE $1::uuid IS NULL OR tenant_id = $1",
            &params,
        ),
        c.query(
            "SELECT tenant_id, key, value FROM tenancy_catalog.config_tenant_settings WHERE $1::uuid IS NULL OR tenant_id = $1",
            &params,
        ),
        c.query(
            "SELECT tenant_id, display_name, primary_color, accent_color, logo_url, email_from_name, email_from_address
             FROM tenancy_catalog.config_branding WHERE $1::uuid IS NULL OR tenant_id = $1",
            &params,
        ),
        c.query(
            &domains_sql,
            &params,
        ),
    )?;
    Ok(assemble_tenants(
        tenants, overrides, settings, branding, domains,
    ))
}

fn assemble_tenants(
    tenants: Vec<tokio_postgres::Row>,
    overrides: Vec<tokio_postgres::Row>,
    settings: Vec<tokio_postgres::Row>,
    branding: Vec<tokio_postgres::Row>,
    domains: Vec<tokio_postgres::Row>,
) -> Result<Vec<TenantData>, ConfigError> {
    let mut by_id: BTreeMap<uuid::Uuid, TenantData> = BTreeMap::new();
    for r in &tenants {
        let id: uuid::Uuid = r.get(0);
        let custom = match r.get::<_, Value>(6) {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        by_id.insert(
            id,
            TenantData {
                attributes: TenantAttributes {
                    id: TenantId::from_uuid(id).map_err(ConfigError::corrupt)?,
                    plan: r
                        .get::<_, String>(1)
                        .parse()
                        .map_err(ConfigError::corrupt)?,
                    region: r
                        .get::<_, String>(2)
                        .parse()
                        .map_err(ConfigError::corrupt)?,
                    placement: r
                        .get::<_, String>(3)
                        .parse()
                        .map_err(ConfigError::corrupt)?,
                    created_at: r.get(4),
                    tags: r.get(5),
                    custom,
                },
                overrides: Vec::new(),
                settings: BTreeMap::new(),
                branding: None,
                domains: Vec::new(),
            },
        );
    }
    for r in &overrides {
        let Some(t) = by_id.get_mut(&r.get::<_, uuid::Uuid>(0)) else {
            continue;
        };
        let key: String = r.get(2);
        let target = match r.get::<_, &str>(1) {
            "flag" => OverrideTarget::Flag(key.try_into().map_err(ConfigError::corrupt)?),
            _ => OverrideTarget::Entitlement(
                key.parse::<EntitlementKey>()
                    .map_err(ConfigError::corrupt)?,
            ),
        };
        t.overrides.push(Override {
            tenant_id: t.attributes.id,
            target,
            value: r.get(3),
            reason: r.get(4),
            expires_at: r.get(5),
            created_by: r.get(6),
        });
    }
    for r in &settings {
        let Some(t) = by_id.get_mut(&r.get::<_, uuid::Uuid>(0)) else {
            continue;
        };
        t.settings.insert(
            r.get::<_, String>(1)
                .try_into()
                .map_err(ConfigError::corrupt)?,
            r.get(2),
        );
    }
    for r in &branding {
        let Some(t) = by_id.get_mut(&r.get::<_, uuid::Uuid>(0)) else {
            continue;
        };
        t.branding = Some(Branding {
            display_name: r.get(1),
            primary_color: r.get(2),
            accent_color: r.get(3),
            logo_url: r.get(4),
            email_from_name: r.get(5),
            email_from_address: r.get(6),
        });
    }
    for r in &domains {
        let d = domain_from_row(r)?;
        if let Some(t) = by_id.get_mut(&d.tenant_id.as_uuid()) {
            t.domains.push(d);
        }
    }
    Ok(by_id.into_values().collect())
}
