//! Per-tenant overrides of flags and entitlements: the tenant layer, with a reason and
//! an optional expiry.

use tenancy_config::model::{EntitlementValue, Override, OverrideTarget};
use tenancy_config::ConfigError;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::entitlements::entitlement_kinds;
use super::flags::stored_flag;
use super::{
    exec, invalid, not_found, nothing, row_json, tenant_exists, to_json, valid, ChangeMeta,
    ChangeRecord, Reach, Scope, Store, Tx,
};

/// How the catalog names an override's target: its kind and key.
fn kind_and_key(target: &OverrideTarget) -> (&'static str, &str) {
    match target {
        OverrideTarget::Flag(k) => ("flag", k.as_str()),
        OverrideTarget::Entitlement(k) => ("entitlement", k.as_str()),
    }
}

/// Checks that an override's value fits its target: a variant of the flag, or a value of
/// the entitlement's kind (a `Conflict` with the stored definition otherwise).
async fn check_target(tx: &Tx<'_>, o: &Override) -> Result<(), ConfigError> {
    match &o.target {
        OverrideTarget::Flag(k) => {
            let flag = stored_flag(tx, k).await?;
            let ok = o
                .value
                .as_str()
                .is_some_and(|v| flag.variants.keys().any(|k| k.as_str() == v));
            if !ok {
                return Err(ConfigError::Conflict(format!(
                    "an override of flag {k} names one of its variants ({})",
                    flag.variants
                        .keys()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        OverrideTarget::Entitlement(k) => {
            let kinds = entitlement_kinds(tx).await?;
            let kind = kinds
                .get(k.as_str())
                .ok_or_else(|| not_found("entitlement", k))?;
            let v: EntitlementValue = serde_json::from_value(o.value.clone()).map_err(|_| {
                ConfigError::Conflict(format!(
                    "override of entitlement {k}: {} is not an entitlement value",
                    o.value
                ))
            })?;
            if !v.fits(*kind) {
                return Err(ConfigError::Conflict(format!(
                    "override of entitlement {k}: {} does not fit a {kind:?}",
                    o.value
                )));
            }
        }
    }
    Ok(())
}

/// A change of `tenant`'s override of `kind` `key`.
fn override_change(tenant: TenantId, kind: &str, key: &str, action: &'static str) -> ChangeRecord {
    ChangeRecord::new(
        "override",
        format!("{kind}:{key}"),
        Scope::Tenant(tenant),
        action,
    )
}

impl Store {
    /// Sets a per-tenant override (reason required, expiry optional).
    pub async fn put_override(&self, o: &Override, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        let reason = o.reason.trim();
        let checked = if reason.is_empty() || reason.len() > 2000 {
            Err(invalid("an override needs a reason (1 to 2000 bytes)"))
        } else if o.expires_at.is_some_and(|e| e <= OffsetDateTime::now_utc()) {
            Err(invalid("an override's expires_at must be in the future"))
        } else {
            Ok(())
        };
        valid(meta, checked)?;
        let (kind, key) = kind_and_key(&o.target);
        let tenant = o.tenant_id;
        let prepare = async |tx: &Tx<'_>| {
            tenant_exists(tx, tenant).await?;
            check_target(tx, o).await?;
            let before = row_json(
                tx,
                "SELECT jsonb_build_object('value', value, 'reason', reason, 'expires_at', expires_at, 'created_by', created_by)
                 FROM tenancy_catalog.config_overrides WHERE tenant_id = $1 AND kind = $2 AND key = $3 FOR UPDATE",
                &[&tenant.as_uuid(), &kind, &key],
                "reading an override",
            )
            .await?;
            let change = override_change(tenant, kind, key, "put")
                .before(before)
                .after(Some(to_json(o)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_overrides (tenant_id, kind, key, value, reason, expires_at, created_by, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, kind, key) DO UPDATE SET value = EXCLUDED.value, reason = EXCLUDED.reason,
                     expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by, version = EXCLUDED.version, updated_at = now()",
                &[&tenant.as_uuid(), &kind, &key, &o.value, &reason, &o.expires_at, &meta.actor.trim(), &v],
                "writing an override",
            )
            .await
        };
        let (v, ()) = self
            .checked_write(
                meta,
                "committing an override",
                Reach::Tenant(tenant),
                prepare,
                apply,
            )
            .await?;
        Ok(v)
    }

    /// Removes a per-tenant override.
    pub async fn delete_override(
        &self,
        tenant: TenantId,
        target: &OverrideTarget,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let (kind, key) = kind_and_key(target);
        let prepare = async |tx: &Tx<'_>| {
            let before = row_json(
                tx,
                "DELETE FROM tenancy_catalog.config_overrides WHERE tenant_id = $1 AND kind = $2 AND key = $3
                 RETURNING jsonb_build_object('value', value, 'reason', reason, 'expires_at', expires_at, 'created_by', created_by)",
                &[&tenant.as_uuid(), &kind, &key],
                "deleting an override",
            )
            .await?
            .ok_or_else(|| not_found("override", format!("{kind}:{key}")))?;
            let change = override_change(tenant, kind, key, "delete").before(Some(before));
            Ok((change, ()))
        };
        let (v, ()) = self
            .checked_write(
                meta,
                "committing an override deletion",
                Reach::Tenant(tenant),
                prepare,
                nothing,
            )
            .await?;
        Ok(v)
    }
}
