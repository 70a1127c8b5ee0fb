//! Plan and region layers: the entitlement values, setting values and forced flag
//! variants a plan or a region sets, checked against their definitions.

use tenancy_config::model::{LayerValues, Plan, RegionLayer};
use tenancy_config::ConfigError;
use tenancy_core::PlanKey;

use super::entitlements::entitlement_kinds;
use super::flags::stored_flag;
use super::settings::setting_def;
use super::{
    exec, invalid, not_found, row_json, to_json, valid, ChangeMeta, ChangeRecord, Reach, Scope,
    Store, Tx,
};
use crate::schema::{check_stored, compile_setting};

/// Checks a plan's or region's values against the definitions: a key without one is
/// `NotFound`, a value that does not fit its definition a `Conflict`.
async fn validate_layer(tx: &Tx<'_>, layer: &LayerValues) -> Result<(), ConfigError> {
    let kinds = entitlement_kinds(tx).await?;
    for (k, v) in &layer.entitlements {
        let kind = kinds
            .get(k.as_str())
            .ok_or_else(|| not_found("entitlement", k))?;
        if !v.fits(*kind) {
            return Err(ConfigError::Conflict(format!(
                "entitlement {k} is a {kind:?}; {} does not fit it",
                v.to_json()
            )));
        }
    }
    for (k, v) in &layer.settings {
        let def = setting_def(tx, k).await?;
        let validator = compile_setting(&def)?;
        check_stored(&validator, k, v)?;
    }
    for (k, variant) in &layer.flags {
        let flag = stored_flag(tx, k).await?;
        if !flag.variants.contains_key(variant) {
            return Err(ConfigError::Conflict(format!(
                "flag {k} has no variant {variant}"
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Creates or replaces a plan (its entitlements, settings and forced flags are checked
    /// against their definitions).
    pub async fn put_plan(&self, plan: &Plan, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        let name = plan.display_name.trim();
        let name_ok = !name.is_empty() && name.chars().count() <= 200;
        valid(
            meta,
            name_ok
                .then_some(())
                .ok_or_else(|| invalid("plan display_name must be 1 to 200 characters")),
        )?;
        let key = plan.key.as_str();
        let prepare = async |tx: &Tx<'_>| {
            validate_layer(tx, &plan.values).await?;
            let before = row_json(
                tx,
                "SELECT jsonb_build_object('key', key, 'display_name', display_name) || layer
                 FROM tenancy_catalog.config_plans WHERE key = $1 FOR UPDATE",
                &[&key],
                "reading a plan",
            )
            .await?;
            let change = ChangeRecord::new("plan", key, Scope::All, "put")
                .before(before)
                .after(Some(to_json(plan)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_plans (key, display_name, layer, version) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET display_name = EXCLUDED.display_name, layer = EXCLUDED.layer,
                     version = EXCLUDED.version, updated_at = now()",
                &[&key, &name, &to_json(&plan.values), &v],
                "writing a plan",
            )
            .await
        };
        let (v, ()) = self
            .checked_write(meta, "committing a plan", Reach::Fleet, prepare, apply)
            .await?;
        Ok(v)
    }

    /// A plan as stored (what [`Store::put_plan`] wrote last).
    pub async fn get_plan(&self, key: &PlanKey) -> Result<Plan, ConfigError> {
        let c = self.conn().await?;
        let row = c
            .query_opt(
                "SELECT jsonb_build_object('key', key, 'display_name', display_name) || layer
                 FROM tenancy_catalog.config_plans WHERE key = $1",
                &[&key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a plan"))?
            .ok_or_else(|| not_found("plan", key))?;
        serde_json::from_value(row.get(0)).map_err(ConfigError::corrupt)
    }

    /// Creates or replaces a region's layer.
    pub async fn put_region_layer(
        &self,
        layer: &RegionLayer,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let region = layer.region.as_str();
        let prepare = async |tx: &Tx<'_>| {
            let region_known = tx
                .query_opt(
                    "SELECT 1 FROM tenancy_catalog.regions WHERE id = $1",
                    &[&region],
                )
                .await
                .map_err(ConfigError::db("reading a region"))?
                .is_some();
            if !region_known {
                return Err(not_found("region", region));
            }
            validate_layer(tx, &layer.values).await?;
            let before = row_json(
                tx,
                "SELECT layer FROM tenancy_catalog.config_regions WHERE region = $1 FOR UPDATE",
                &[&region],
                "reading a region layer",
            )
            .await?;
            let change = ChangeRecord::new("region", region, Scope::All, "put")
                .before(before)
                .after(Some(to_json(&layer.values)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_regions (region, layer, version) VALUES ($1, $2, $3)
                 ON CONFLICT (region) DO UPDATE SET layer = EXCLUDED.layer, version = EXCLUDED.version, updated_at = now()",
                &[&region, &to_json(&layer.values), &v],
                "writing a region layer",
            )
            .await
        };
        let (v, ()) = self
            .checked_write(
                meta,
                "committing a region layer",
                Reach::Fleet,
                prepare,
                apply,
            )
            .await?;
        Ok(v)
    }
}
