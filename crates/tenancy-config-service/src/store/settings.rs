//! Typed settings: definitions (JSON Schema and default) and tenants' values.

use serde_json::Value;
use tenancy_config::model::{SettingDef, SettingKey};
use tenancy_config::ConfigError;
use tenancy_core::TenantId;

use super::{
    exec, not_found, nothing, row_json, tenant_exists, to_json, valid, ChangeMeta, ChangeRecord,
    Scope, Store, Tx,
};
use crate::schema::{check_against, check_stored, compile_setting};

/// A setting's definition (`NotFound` when there is none).
pub(super) async fn setting_def(tx: &Tx<'_>, key: &SettingKey) -> Result<SettingDef, ConfigError> {
    let row = tx
        .query_opt(
            "SELECT schema, default_value, description FROM tenancy_catalog.config_setting_defs WHERE key = $1",
            &[&key.as_str()],
        )
        .await
        .map_err(ConfigError::db("reading a setting definition"))?
        .ok_or_else(|| not_found("setting", key))?;
    Ok(SettingDef {
        key: key.clone(),
        schema: row.get(0),
        default: row.get(1),
        description: row.get(2),
    })
}

/// A change of `tenant`'s value of setting `key`.
fn tenant_setting_change(tenant: TenantId, key: &SettingKey, action: &'static str) -> ChangeRecord {
    ChangeRecord::new(
        "tenant_setting",
        key.as_str(),
        Scope::Tenant(tenant),
        action,
    )
}

impl Store {
    /// Creates or replaces a setting definition.
    pub async fn put_setting_def(
        &self,
        def: &SettingDef,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let validator = valid(meta, compile_setting(def))?;
        let key = def.key.as_str();
        let prepare = async |tx: &Tx<'_>| {
            // A new schema must still accept every value already stored for the setting.
            let rows = tx
                .query(
                    "SELECT tenant_id::text, value FROM tenancy_catalog.config_tenant_settings WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(ConfigError::db("reading tenant settings"))?;
            for r in &rows {
                let value: Value = r.get(1);
                if check_against(&validator, &def.key, &value).is_err() {
                    return Err(ConfigError::Conflict(format!(
                        "the new schema of setting {key} refuses the value tenant {} has; change that value first",
                        r.get::<_, String>(0)
                    )));
                }
            }
            let before = row_json(
                tx,
                "SELECT jsonb_build_object('key', key, 'schema', schema, 'default', default_value, 'description', description)
                 FROM tenancy_catalog.config_setting_defs WHERE key = $1 FOR UPDATE",
                &[&key],
                "reading a setting definition",
            )
            .await?;
            let change = ChangeRecord::new("setting", key, Scope::All, "put")
                .after(Some(to_json(def)))
                .before(before);
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_setting_defs (key, schema, default_value, description, version)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET schema = EXCLUDED.schema, default_value = EXCLUDED.default_value,
                     description = EXCLUDED.description, version = EXCLUDED.version, updated_at = now()",
                &[&key, &def.schema, &def.default, &def.description, &v],
                "writing a setting definition",
            )
            .await
        };
        let (v, ()) = self
            .write(meta, "committing a setting definition", prepare, apply)
            .await?;
        Ok(v)
    }

    /// Sets a tenant's value of a setting (validated against the setting's JSON Schema).
    pub async fn put_tenant_setting(
        &self,
        tenant: TenantId,
        key: &SettingKey,
        value: &Value,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let prepare = async |tx: &Tx<'_>| {
            tenant_exists(tx, tenant).await?;
            let def = setting_def(tx, key).await?;
            let validator = compile_setting(&def)?;
            check_stored(&validator, key, value)?;
            let before = row_json(
                tx,
                "SELECT value FROM tenancy_catalog.config_tenant_settings WHERE tenant_id = $1 AND key = $2 FOR UPDATE",
                &[&tenant.as_uuid(), &key.as_str()],
                "reading a tenant setting",
            )
            .await?;
            let change = tenant_setting_change(tenant, key, "put")
                .before(before)
                .after(Some(value.clone()));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_tenant_settings (tenant_id, key, value, version) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, updated_at = now()",
                &[&tenant.as_uuid(), &key.as_str(), value, &v],
                "writing a tenant setting",
            )
            .await
        };
        let (v, ()) = self
            .write(meta, "committing a tenant setting", prepare, apply)
            .await?;
        Ok(v)
    }

    /// Removes a tenant's value of a setting (the plan, region or default applies again).
    pub async fn delete_tenant_setting(
        &self,
        tenant: TenantId,
        key: &SettingKey,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let prepare = async |tx: &Tx<'_>| {
            let before = row_json(
                tx,
                "DELETE FROM tenancy_catalog.config_tenant_settings WHERE tenant_id = $1 AND key = $2 RETURNING value",
                &[&tenant.as_uuid(), &key.as_str()],
                "deleting a tenant setting",
            )
            .await?
            .ok_or_else(|| not_found("tenant setting", key))?;
            let change = tenant_setting_change(tenant, key, "delete").before(Some(before));
            Ok((change, ()))
        };
        let (v, ()) = self
            .write(
                meta,
                "committing a tenant setting deletion",
                prepare,
                nothing,
            )
            .await?;
        Ok(v)
    }
}
