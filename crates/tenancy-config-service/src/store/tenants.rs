//! What a tenant sets about itself: targeting attributes (tags, custom) and branding.

use serde_json::Value;
use tenancy_config::model::{validate_tags_and_custom, Branding};
use tenancy_config::ConfigError;
use tenancy_core::TenantId;

use super::{
    exec, row_json, tenant_exists, to_json, valid, ChangeMeta, ChangeRecord, Reach, Scope, Store,
    Tx,
};

impl Store {
    /// Sets a tenant's tags and custom attributes (the catalog holds plan, region,
    /// placement and creation time).
    pub async fn put_tenant_attributes(
        &self,
        tenant: TenantId,
        tags: &[String],
        custom: &serde_json::Map<String, Value>,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        valid(meta, validate_tags_and_custom(tags, custom))?;
        let mut tags = tags.to_vec();
        tags.sort();
        tags.dedup();
        let custom = Value::Object(custom.clone());
        let prepare = async |tx: &Tx<'_>| {
            tenant_exists(tx, tenant).await?;
            let before = row_json(
                tx,
                "SELECT jsonb_build_object('tags', to_jsonb(tags), 'custom', custom)
                 FROM tenancy_catalog.config_tenant_attributes WHERE tenant_id = $1 FOR UPDATE",
                &[&tenant.as_uuid()],
                "reading tenant attributes",
            )
            .await?;
            let after = serde_json::json!({"tags": tags, "custom": custom});
            let change = ChangeRecord::new(
                "attributes",
                tenant.to_string(),
                Scope::Tenant(tenant),
                "put",
            )
            .before(before)
            .after(Some(after));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_tenant_attributes (tenant_id, tags, custom, version) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant_id) DO UPDATE SET tags = EXCLUDED.tags, custom = EXCLUDED.custom,
                     version = EXCLUDED.version, updated_at = now()",
                &[&tenant.as_uuid(), &tags, &custom, &v],
                "writing tenant attributes",
            )
            .await
        };
        let (v, ()) = self
            .checked_write(
                meta,
                "committing tenant attributes",
                Reach::Tenant(tenant),
                prepare,
                apply,
            )
            .await?;
        Ok(v)
    }

    /// Sets a tenant's branding (validated).
    pub async fn put_branding(
        &self,
        tenant: TenantId,
        b: &Branding,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        valid(meta, b.validate())?;
        let prepare = async |tx: &Tx<'_>| {
            tenant_exists(tx, tenant).await?;
            let before = row_json(
                tx,
                "SELECT to_jsonb(b) - 'tenant_id' - 'version' - 'updated_at' FROM tenancy_catalog.config_branding b WHERE tenant_id = $1 FOR UPDATE",
                &[&tenant.as_uuid()],
                "reading branding",
            )
            .await?;
            let change =
                ChangeRecord::new("branding", tenant.to_string(), Scope::Tenant(tenant), "put")
                    .before(before)
                    .after(Some(to_json(b)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_branding (tenant_id, display_name, primary_color, accent_color, logo_url, email_from_name, email_from_address, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name, primary_color = EXCLUDED.primary_color,
                     accent_color = EXCLUDED.accent_color, logo_url = EXCLUDED.logo_url, email_from_name = EXCLUDED.email_from_name,
                     email_from_address = EXCLUDED.email_from_address, version = EXCLUDED.version, updated_at = now()",
                &[&tenant.as_uuid(), &b.display_name.trim(), &b.primary_color, &b.accent_color, &b.logo_url, &b.email_from_name.trim(), &b.email_from_address, &v],
                "writing branding",
            )
            .await
        };
        let (v, ()) = self
            .write(meta, "committing branding", prepare, apply)
            .await?;
        Ok(v)
    }
}
