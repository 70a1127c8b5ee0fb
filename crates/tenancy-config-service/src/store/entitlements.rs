//! Entitlement definitions: the global layer of features and limits.

use std::collections::BTreeMap;

use serde_json::Value;
use tenancy_config::model::{EntitlementDef, EntitlementKind};
use tenancy_config::ConfigError;

use super::{exec, row_json, to_json, valid, ChangeMeta, ChangeRecord, Scope, Store, Tx};

/// Every entitlement's kind, by key (what plans, regions and overrides are checked
/// against).
pub(super) async fn entitlement_kinds(
    tx: &Tx<'_>,
) -> Result<BTreeMap<String, EntitlementKind>, ConfigError> {
    let rows = tx
        .query(
            "SELECT key, kind FROM tenancy_catalog.config_entitlements",
            &[],
        )
        .await
        .map_err(ConfigError::db("reading entitlements"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                EntitlementKind::from_stored(r.get(1)),
            )
        })
        .collect())
}

impl Store {
    /// Creates or replaces an entitlement definition.
    pub async fn put_entitlement(
        &self,
        def: &EntitlementDef,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        valid(meta, def.validate())?;
        let key = def.key.as_str();
        let kind = def.kind.as_str();
        let prepare = async |tx: &Tx<'_>| {
            let before = row_json(
                tx,
                "SELECT jsonb_build_object('key', key, 'kind', kind, 'default', default_value, 'description', description)
                 FROM tenancy_catalog.config_entitlements WHERE key = $1 FOR UPDATE",
                &[&key],
                "reading an entitlement",
            )
            .await?;
            if let Some(b) = &before {
                if b.get("kind").and_then(Value::as_str) != Some(kind) {
                    return Err(ConfigError::Conflict(format!(
                        "entitlement {key} exists with another kind; kinds cannot change (plans and overrides rely on them)"
                    )));
                }
            }
            let change = ChangeRecord::new("entitlement", key, Scope::All, "put")
                .before(before)
                .after(Some(to_json(def)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_entitlements (key, kind, default_value, description, version)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET default_value = EXCLUDED.default_value,
                     description = EXCLUDED.description, version = EXCLUDED.version, updated_at = now()",
                &[&key, &kind, &def.default.to_json(), &def.description, &v],
                "writing an entitlement",
            )
            .await
        };
        let (v, ()) = self
            .write(meta, "committing an entitlement", prepare, apply)
            .await?;
        Ok(v)
    }
}
