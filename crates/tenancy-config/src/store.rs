//! The configuration store: every SQL statement of this crate.
//!
//! Writes happen in one transaction each: read the row as it was (for the change log),
//! validate against the other definitions, write, append a row to
//! `tenancy_catalog.config_changes` (who, when, why, before, after) whose version stamps
//! the written row, and `NOTIFY tenancy_config, '<kind>:<id>'`. PostgreSQL delivers the
//! notification only if the transaction commits, so a snapshot never hears of a change
//! that did not happen. Payloads carry ids only; listeners read the data themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use tenancy_conn::PgConfig;
use tenancy_core::{PlanKey, RegionId, TenantId};
use time::OffsetDateTime;
use tokio_postgres::{Client, Transaction};

use crate::dns::TxtResolver;
use crate::engine::{ConfigData, TenantData};
use crate::error::ConfigError;
use crate::model::{
    check_against, parse_hostname, validate_tags_and_custom, Branding, Domain, DomainState,
    EntitlementDef, EntitlementKey, EntitlementKind, EntitlementValue, Flag, FlagKey, LayerValues,
    ModelError, Override, OverrideTarget, Plan, RegionLayer, SettingDef, SettingKey,
    TenantAttributes,
};

/// The notification channel.
pub const CHANNEL: &str = "tenancy_config";

/// Who makes a change and why; recorded with every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChangeMeta {
    /// Who (a user, a service, an operator).
    pub actor: String,
    /// Why (free text; may be empty except for overrides).
    pub reason: String,
}

impl ChangeMeta {
    /// A change by `actor` for `reason`.
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> ChangeMeta {
        ChangeMeta {
            actor: actor.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let a = self.actor.trim();
        if a.is_empty() || a.len() > 200 {
            return Err(
                ModelError::Invalid("the actor of a change must be 1 to 200 bytes".into()).into(),
            );
        }
        if self.reason.len() > 2000 {
            return Err(ModelError::Invalid(
                "the reason of a change must be at most 2000 bytes".into(),
            )
            .into());
        }
        Ok(())
    }
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Version (strictly increasing).
    pub version: i64,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// What kind of thing (`flag`, `plan`, `override`, …).
    pub entity: String,
    /// Which one.
    pub entity_key: String,
    /// The tenant concerned, for tenant-level changes.
    pub tenant_id: Option<TenantId>,
    /// `put`, `delete`, `kill`, `unkill`, `verify`, `verify_failed`, `disable`.
    pub action: String,
    /// The value before.
    pub before: Option<Value>,
    /// The value after.
    pub after: Option<Value>,
}

/// Creates catalog connections for the store's pool.
#[derive(Debug)]
pub struct Manager {
    /// Where to connect, as which role (the owner role in a control plane).
    config: PgConfig,
}

impl managed::Manager for Manager {
    type Type = Client;
    type Error = tenancy_conn::ConnError;

    async fn create(&self) -> Result<Client, tenancy_conn::ConnError> {
        let (client, connection) = self.config.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "config store connection closed");
            }
        });
        Ok(client)
    }

    async fn recycle(&self, c: &mut Client, _: &Metrics) -> RecycleResult<tenancy_conn::ConnError> {
        if c.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        Ok(())
    }
}

/// The control plane's handle on the configuration tables: a small pool of catalog
/// connections and the write operations.
#[derive(Debug, Clone)]
pub struct Store {
    pool: managed::Pool<Manager>,
}

type Tx<'a> = Transaction<'a>;

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &Tx<'_>,
    meta: &ChangeMeta,
    entity: &str,
    key: &str,
    tenant: Option<TenantId>,
    action: &str,
    before: Option<Value>,
    after: Option<Value>,
    notify: &str,
) -> Result<i64, ConfigError> {
    let row = tx
        .query_one(
            "WITH c AS (
                 INSERT INTO tenancy_catalog.config_changes (actor, reason, entity, entity_key, tenant_id, action, before, after)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING version),
             n AS (SELECT pg_notify($9, $10))
             SELECT c.version FROM c, n",
            &[
                &meta.actor.trim(),
                &meta.reason,
                &entity,
                &key,
                &tenant.map(|t| t.as_uuid()),
                &action,
                &before,
                &after,
                &CHANNEL,
                &notify,
            ],
        )
        .await
        .map_err(ConfigError::db("recording a configuration change"))?;
    Ok(row.get(0))
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(ModelError::Invalid(msg.into()))
}

async fn tenant_exists(tx: &Tx<'_>, tenant: TenantId) -> Result<(), ConfigError> {
    let found = tx
        .query_opt(
            "SELECT 1 FROM tenancy_catalog.tenants WHERE id = $1 AND state <> 'deleted'",
            &[&tenant.as_uuid()],
        )
        .await
        .map_err(ConfigError::db("reading a tenant"))?
        .is_some();
    if found {
        Ok(())
    } else {
        Err(ConfigError::NotFound {
            kind: "tenant",
            key: tenant.to_string(),
        })
    }
}

async fn entitlement_kinds(tx: &Tx<'_>) -> Result<BTreeMap<String, EntitlementKind>, ConfigError> {
    let rows = tx
        .query(
            "SELECT key, kind FROM tenancy_catalog.config_entitlements",
            &[],
        )
        .await
        .map_err(ConfigError::db("reading entitlements"))?;
    rows.iter()
        .map(|r| {
            let kind = match r.get::<_, &str>(1) {
                "feature" => EntitlementKind::Feature,
                _ => EntitlementKind::Limit,
            };
            Ok((r.get::<_, String>(0), kind))
        })
        .collect()
}

async fn setting_def(tx: &Tx<'_>, key: &SettingKey) -> Result<SettingDef, ConfigError> {
    let row = tx
        .query_opt(
            "SELECT schema, default_value, description FROM tenancy_catalog.config_setting_defs WHERE key = $1",
            &[&key.as_str()],
        )
        .await
        .map_err(ConfigError::db("reading a setting definition"))?
        .ok_or_else(|| ConfigError::NotFound {
            kind: "setting",
            key: key.to_string(),
        })?;
    Ok(SettingDef {
        key: key.clone(),
        schema: row.get(0),
        default: row.get(1),
        description: row.get(2),
    })
}

async fn flag_variants(tx: &Tx<'_>, key: &FlagKey) -> Result<Flag, ConfigError> {
    let row = tx
        .query_opt(
            "SELECT definition FROM tenancy_catalog.config_flags WHERE key = $1",
            &[&key.as_str()],
        )
        .await
        .map_err(ConfigError::db("reading a flag"))?
        .ok_or_else(|| ConfigError::NotFound {
            kind: "flag",
            key: key.to_string(),
        })?;
    serde_json::from_value(row.get(0)).map_err(ConfigError::corrupt)
}

/// Checks a plan's or region's values against the definitions.
async fn validate_layer(tx: &Tx<'_>, layer: &LayerValues) -> Result<(), ConfigError> {
    let kinds = entitlement_kinds(tx).await?;
    for (k, v) in &layer.entitlements {
        let kind = kinds.get(k.as_str()).ok_or_else(|| ConfigError::NotFound {
            kind: "entitlement",
            key: k.to_string(),
        })?;
        if !v.fits(*kind) {
            return Err(invalid(format!(
                "entitlement {k} is a {kind:?}; {} does not fit it",
                v.to_json()
            )));
        }
    }
    for (k, v) in &layer.settings {
        let def = setting_def(tx, k).await?;
        let validator = def.compile()?;
        check_against(&validator, k, v)?;
    }
    for (k, variant) in &layer.flags {
        let flag = flag_variants(tx, k).await?;
        if !flag.variants.contains_key(variant) {
            return Err(invalid(format!("flag {k} has no variant {variant}")));
        }
    }
    Ok(())
}

fn random_token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn domain_from_row(r: &tokio_postgres::Row) -> Result<Domain, ConfigError> {
    Ok(Domain {
        tenant_id: TenantId::from_uuid(r.get(0)).map_err(ConfigError::corrupt)?,
        hostname: r.get(1),
        state: r.get::<_, &str>(2).parse().map_err(ConfigError::corrupt)?,
        token: r.get(3),
        verified_at: r.get(4),
        last_error: r.get(5),
    })
}

const DOMAIN_COLUMNS: &str = "tenant_id, hostname, state, token, verified_at, last_error";

impl Store {
    /// A store connecting with `config` (the catalog's owner role), at most `max_size`
    /// connections.
    pub fn new(config: impl Into<PgConfig>, max_size: usize) -> Result<Store, ConfigError> {
        let pool = managed::Pool::builder(Manager {
            config: config.into(),
        })
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| ConfigError::Pool(e.to_string()))?;
        Ok(Store { pool })
    }

    async fn conn(&self) -> Result<managed::Object<Manager>, ConfigError> {
        self.pool
            .get()
            .await
            .map_err(|e| ConfigError::Pool(e.to_string()))
    }

    /// Loads everything (what a snapshot is built from).
    pub async fn load_all(&self) -> Result<ConfigData, ConfigError> {
        let c = self.conn().await?;
        load_all(&c).await
    }

    /// Creates or replaces an entitlement definition.
    pub async fn put_entitlement(
        &self,
        def: &EntitlementDef,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        def.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "SELECT jsonb_build_object('key', key, 'kind', kind, 'default', default_value, 'description', description)
                 FROM tenancy_catalog.config_entitlements WHERE key = $1 FOR UPDATE",
                &[&def.key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading an entitlement"))?
            .map(|r| r.get::<_, Value>(0));
        if let Some(b) = &before {
            if b.get("kind").and_then(Value::as_str) != Some(kind_str(def.kind)) {
                return Err(ConfigError::Conflict(format!(
                    "entitlement {} exists with another kind; kinds cannot change (plans and overrides rely on them)",
                    def.key
                )));
            }
        }
        let v = record(
            &tx,
            meta,
            "entitlement",
            def.key.as_str(),
            None,
            "put",
            before,
            Some(to_json(def)),
            "all",
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_entitlements (key, kind, default_value, description, version)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET default_value = EXCLUDED.default_value,
                 description = EXCLUDED.description, version = EXCLUDED.version, updated_at = now()",
            &[&def.key.as_str(), &kind_str(def.kind), &def.default.to_json(), &def.description, &v],
        )
        .await
        .map_err(ConfigError::db("writing an entitlement"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing an entitlement"))?;
        Ok(v)
    }

    /// Creates or replaces a plan (its entitlements, settings and forced flags are checked
    /// against their definitions).
    pub async fn put_plan(&self, plan: &Plan, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        meta.validate()?;
        let name = plan.display_name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("plan display_name must be 1 to 200 characters"));
        }
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        validate_layer(&tx, &plan.values).await?;
        let before = tx
            .query_opt(
                "SELECT jsonb_build_object('key', key, 'display_name', display_name) || layer
                 FROM tenancy_catalog.config_plans WHERE key = $1 FOR UPDATE",
                &[&plan.key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a plan"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "plan",
            plan.key.as_str(),
            None,
            "put",
            before,
            Some(to_json(plan)),
            "all",
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_plans (key, display_name, layer, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET display_name = EXCLUDED.display_name, layer = EXCLUDED.layer,
                 version = EXCLUDED.version, updated_at = now()",
            &[&plan.key.as_str(), &name, &to_json(&plan.values), &v],
        )
        .await
        .map_err(ConfigError::db("writing a plan"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a plan"))?;
        Ok(v)
    }

    /// Creates or replaces a region's layer.
    pub async fn put_region_layer(
        &self,
        layer: &RegionLayer,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let region_known = tx
            .query_opt(
                "SELECT 1 FROM tenancy_catalog.regions WHERE id = $1",
                &[&layer.region.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a region"))?
            .is_some();
        if !region_known {
            return Err(ConfigError::NotFound {
                kind: "region",
                key: layer.region.to_string(),
            });
        }
        validate_layer(&tx, &layer.values).await?;
        let before = tx
            .query_opt(
                "SELECT layer FROM tenancy_catalog.config_regions WHERE region = $1 FOR UPDATE",
                &[&layer.region.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a region layer"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "region",
            layer.region.as_str(),
            None,
            "put",
            before,
            Some(to_json(&layer.values)),
            "all",
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_regions (region, layer, version) VALUES ($1, $2, $3)
             ON CONFLICT (region) DO UPDATE SET layer = EXCLUDED.layer, version = EXCLUDED.version, updated_at = now()",
            &[&layer.region.as_str(), &to_json(&layer.values), &v],
        )
        .await
        .map_err(ConfigError::db("writing a region layer"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a region layer"))?;
        Ok(v)
    }

    /// Creates or replaces a flag.
    pub async fn put_flag(&self, flag: &Flag, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        meta.validate()?;
        flag.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "SELECT definition FROM tenancy_catalog.config_flags WHERE key = $1 FOR UPDATE",
                &[&flag.key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a flag"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "flag",
            flag.key.as_str(),
            None,
            "put",
            before,
            Some(to_json(flag)),
            &format!("flag:{}", flag.key),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_flags (key, definition, version) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET definition = EXCLUDED.definition, version = EXCLUDED.version, updated_at = now()",
            &[&flag.key.as_str(), &to_json(flag), &v],
        )
        .await
        .map_err(ConfigError::db("writing a flag"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a flag"))?;
        Ok(v)
    }

    /// Turns a flag's kill switch on or off.
    pub async fn set_flag_killed(
        &self,
        key: &FlagKey,
        killed: bool,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "SELECT definition FROM tenancy_catalog.config_flags WHERE key = $1 FOR UPDATE",
                &[&key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a flag"))?
            .map(|r| r.get::<_, Value>(0))
            .ok_or_else(|| ConfigError::NotFound {
                kind: "flag",
                key: key.to_string(),
            })?;
        let mut after = before.clone();
        if let Some(obj) = after.as_object_mut() {
            obj.insert("killed".into(), Value::Bool(killed));
        }
        let action = if killed { "kill" } else { "unkill" };
        let v = record(
            &tx,
            meta,
            "flag",
            key.as_str(),
            None,
            action,
            Some(before),
            Some(after.clone()),
            &format!("flag:{key}"),
        )
        .await?;
        tx.execute(
            "UPDATE tenancy_catalog.config_flags SET definition = $2, version = $3, updated_at = now() WHERE key = $1",
            &[&key.as_str(), &after, &v],
        )
        .await
        .map_err(ConfigError::db("writing a flag"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a kill switch"))?;
        Ok(v)
    }

    /// Deletes a flag (and the overrides that name it).
    pub async fn delete_flag(&self, key: &FlagKey, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        meta.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "DELETE FROM tenancy_catalog.config_flags WHERE key = $1 RETURNING definition",
                &[&key.as_str()],
            )
            .await
            .map_err(ConfigError::db("deleting a flag"))?
            .map(|r| r.get::<_, Value>(0))
            .ok_or_else(|| ConfigError::NotFound {
                kind: "flag",
                key: key.to_string(),
            })?;
        tx.execute(
            "DELETE FROM tenancy_catalog.config_overrides WHERE kind = 'flag' AND key = $1",
            &[&key.as_str()],
        )
        .await
        .map_err(ConfigError::db("deleting a flag's overrides"))?;
        // Overrides of many tenants may have gone: a full reload is the simple, correct answer.
        let v = record(
            &tx,
            meta,
            "flag",
            key.as_str(),
            None,
            "delete",
            Some(before),
            None,
            "all",
        )
        .await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a flag deletion"))?;
        Ok(v)
    }

    /// Reads a flag.
    pub async fn get_flag(&self, key: &FlagKey) -> Result<Flag, ConfigError> {
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let f = flag_variants(&tx, key).await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("reading a flag"))?;
        Ok(f)
    }

    /// Creates or replaces a setting definition.
    pub async fn put_setting_def(
        &self,
        def: &SettingDef,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let validator = def.compile()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        // A new schema must still accept every value already stored for the setting.
        let rows = tx
            .query(
                "SELECT tenant_id::text, value FROM tenancy_catalog.config_tenant_settings WHERE key = $1",
                &[&def.key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading tenant settings"))?;
        for r in &rows {
            let value: Value = r.get(1);
            if check_against(&validator, &def.key, &value).is_err() {
                return Err(ConfigError::Conflict(format!(
                    "the new schema of setting {} refuses the value tenant {} has; change that value first",
                    def.key,
                    r.get::<_, String>(0)
                )));
            }
        }
        let before = tx
            .query_opt(
                "SELECT jsonb_build_object('key', key, 'schema', schema, 'default', default_value, 'description', description)
                 FROM tenancy_catalog.config_setting_defs WHERE key = $1 FOR UPDATE",
                &[&def.key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a setting definition"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "setting",
            def.key.as_str(),
            None,
            "put",
            before,
            Some(to_json(def)),
            "all",
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_setting_defs (key, schema, default_value, description, version)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key) DO UPDATE SET schema = EXCLUDED.schema, default_value = EXCLUDED.default_value,
                 description = EXCLUDED.description, version = EXCLUDED.version, updated_at = now()",
            &[&def.key.as_str(), &def.schema, &def.default, &def.description, &v],
        )
        .await
        .map_err(ConfigError::db("writing a setting definition"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a setting definition"))?;
        Ok(v)
    }

    /// Sets a tenant's tags and custom attributes (the catalog holds plan, region,
    /// placement and creation time).
    pub async fn put_tenant_attributes(
        &self,
        tenant: TenantId,
        tags: &[String],
        custom: &serde_json::Map<String, Value>,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        validate_tags_and_custom(tags, custom)?;
        let mut tags = tags.to_vec();
        tags.sort();
        tags.dedup();
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        tenant_exists(&tx, tenant).await?;
        let before = tx
            .query_opt(
                "SELECT jsonb_build_object('tags', to_jsonb(tags), 'custom', custom)
                 FROM tenancy_catalog.config_tenant_attributes WHERE tenant_id = $1 FOR UPDATE",
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(ConfigError::db("reading tenant attributes"))?
            .map(|r| r.get::<_, Value>(0));
        let custom = Value::Object(custom.clone());
        let after = serde_json::json!({"tags": tags, "custom": custom});
        let v = record(
            &tx,
            meta,
            "attributes",
            &tenant.to_string(),
            Some(tenant),
            "put",
            before,
            Some(after),
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_tenant_attributes (tenant_id, tags, custom, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE SET tags = EXCLUDED.tags, custom = EXCLUDED.custom,
                 version = EXCLUDED.version, updated_at = now()",
            &[&tenant.as_uuid(), &tags, &custom, &v],
        )
        .await
        .map_err(ConfigError::db("writing tenant attributes"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing tenant attributes"))?;
        Ok(v)
    }

    /// Sets a per-tenant override (reason required, expiry optional).
    pub async fn put_override(&self, o: &Override, meta: &ChangeMeta) -> Result<i64, ConfigError> {
        meta.validate()?;
        let reason = o.reason.trim();
        if reason.is_empty() || reason.len() > 2000 {
            return Err(invalid("an override needs a reason (1 to 2000 bytes)"));
        }
        if let Some(e) = o.expires_at {
            if e <= OffsetDateTime::now_utc() {
                return Err(invalid("an override's expires_at must be in the future"));
            }
        }
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        tenant_exists(&tx, o.tenant_id).await?;
        let (kind, key) = match &o.target {
            OverrideTarget::Flag(k) => {
                let flag = flag_variants(&tx, k).await?;
                let ok = o
                    .value
                    .as_str()
                    .is_some_and(|v| flag.variants.keys().any(|k| k.as_str() == v));
                if !ok {
                    return Err(invalid(format!(
                        "an override of flag {k} names one of its variants ({})",
                        flag.variants
                            .keys()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                ("flag", k.as_str())
            }
            OverrideTarget::Entitlement(k) => {
                let kinds = entitlement_kinds(&tx).await?;
                let kind = kinds.get(k.as_str()).ok_or_else(|| ConfigError::NotFound {
                    kind: "entitlement",
                    key: k.to_string(),
                })?;
                let v: EntitlementValue =
                    serde_json::from_value(o.value.clone()).map_err(|_| {
                        invalid(format!(
                            "override of entitlement {k}: {} is not an entitlement value",
                            o.value
                        ))
                    })?;
                if !v.fits(*kind) {
                    return Err(invalid(format!(
                        "override of entitlement {k}: {} does not fit a {kind:?}",
                        o.value
                    )));
                }
                ("entitlement", k.as_str())
            }
        };
        let before = tx
            .query_opt(
                "SELECT jsonb_build_object('value', value, 'reason', reason, 'expires_at', expires_at, 'created_by', created_by)
                 FROM tenancy_catalog.config_overrides WHERE tenant_id = $1 AND kind = $2 AND key = $3 FOR UPDATE",
                &[&o.tenant_id.as_uuid(), &kind, &key],
            )
            .await
            .map_err(ConfigError::db("reading an override"))?
            .map(|r| r.get::<_, Value>(0));
        let entity_key = format!("{kind}:{key}");
        let v = record(
            &tx,
            meta,
            "override",
            &entity_key,
            Some(o.tenant_id),
            "put",
            before,
            Some(to_json(o)),
            &format!("tenant:{}", o.tenant_id),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_overrides (tenant_id, kind, key, value, reason, expires_at, created_by, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, kind, key) DO UPDATE SET value = EXCLUDED.value, reason = EXCLUDED.reason,
                 expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by, version = EXCLUDED.version, updated_at = now()",
            &[&o.tenant_id.as_uuid(), &kind, &key, &o.value, &reason, &o.expires_at, &meta.actor.trim(), &v],
        )
        .await
        .map_err(ConfigError::db("writing an override"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing an override"))?;
        Ok(v)
    }

    /// Removes a per-tenant override.
    pub async fn delete_override(
        &self,
        tenant: TenantId,
        target: &OverrideTarget,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let (kind, key) = match target {
            OverrideTarget::Flag(k) => ("flag", k.as_str()),
            OverrideTarget::Entitlement(k) => ("entitlement", k.as_str()),
        };
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "DELETE FROM tenancy_catalog.config_overrides WHERE tenant_id = $1 AND kind = $2 AND key = $3
                 RETURNING jsonb_build_object('value', value, 'reason', reason, 'expires_at', expires_at, 'created_by', created_by)",
                &[&tenant.as_uuid(), &kind, &key],
            )
            .await
            .map_err(ConfigError::db("deleting an override"))?
            .map(|r| r.get::<_, Value>(0))
            .ok_or_else(|| ConfigError::NotFound { kind: "override", key: format!("{kind}:{key}") })?;
        let v = record(
            &tx,
            meta,
            "override",
            &format!("{kind}:{key}"),
            Some(tenant),
            "delete",
            Some(before),
            None,
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing an override deletion"))?;
        Ok(v)
    }

    /// Sets a tenant's branding (validated).
    pub async fn put_branding(
        &self,
        tenant: TenantId,
        b: &Branding,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        b.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        tenant_exists(&tx, tenant).await?;
        let before = tx
            .query_opt(
                "SELECT to_jsonb(b) - 'tenant_id' - 'version' - 'updated_at' FROM tenancy_catalog.config_branding b WHERE tenant_id = $1 FOR UPDATE",
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(ConfigError::db("reading branding"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "branding",
            &tenant.to_string(),
            Some(tenant),
            "put",
            before,
            Some(to_json(b)),
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_branding (tenant_id, display_name, primary_color, accent_color, logo_url, email_from_name, email_from_address, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id) DO UPDATE SET display_name = EXCLUDED.display_name, primary_color = EXCLUDED.primary_color,
                 accent_color = EXCLUDED.accent_color, logo_url = EXCLUDED.logo_url, email_from_name = EXCLUDED.email_from_name,
                 email_from_address = EXCLUDED.email_from_address, version = EXCLUDED.version, updated_at = now()",
            &[&tenant.as_uuid(), &b.display_name.trim(), &b.primary_color, &b.accent_color, &b.logo_url, &b.email_from_name.trim(), &b.email_from_address, &v],
        )
        .await
        .map_err(ConfigError::db("writing branding"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing branding"))?;
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
        meta.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        tenant_exists(&tx, tenant).await?;
        let def = setting_def(&tx, key).await?;
        let validator = def.compile()?;
        check_against(&validator, key, value)?;
        let before = tx
            .query_opt(
                "SELECT value FROM tenancy_catalog.config_tenant_settings WHERE tenant_id = $1 AND key = $2 FOR UPDATE",
                &[&tenant.as_uuid(), &key.as_str()],
            )
            .await
            .map_err(ConfigError::db("reading a tenant setting"))?
            .map(|r| r.get::<_, Value>(0));
        let v = record(
            &tx,
            meta,
            "tenant_setting",
            key.as_str(),
            Some(tenant),
            "put",
            before,
            Some(value.clone()),
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_tenant_settings (tenant_id, key, value, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version, updated_at = now()",
            &[&tenant.as_uuid(), &key.as_str(), value, &v],
        )
        .await
        .map_err(ConfigError::db("writing a tenant setting"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a tenant setting"))?;
        Ok(v)
    }

    /// Removes a tenant's value of a setting (the plan, region or default applies again).
    pub async fn delete_tenant_setting(
        &self,
        tenant: TenantId,
        key: &SettingKey,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = tx
            .query_opt(
                "DELETE FROM tenancy_catalog.config_tenant_settings WHERE tenant_id = $1 AND key = $2 RETURNING value",
                &[&tenant.as_uuid(), &key.as_str()],
            )
            .await
            .map_err(ConfigError::db("deleting a tenant setting"))?
            .map(|r| r.get::<_, Value>(0))
            .ok_or_else(|| ConfigError::NotFound { kind: "tenant setting", key: key.to_string() })?;
        let v = record(
            &tx,
            meta,
            "tenant_setting",
            key.as_str(),
            Some(tenant),
            "delete",
            Some(before),
            None,
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a tenant setting deletion"))?;
        Ok(v)
    }

    /// Claims a custom domain for a tenant: state `pending`, with a fresh token to publish
    /// in DNS. Claiming again returns the existing claim.
    pub async fn add_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        meta.validate()?;
        let hostname = parse_hostname(hostname)?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        tenant_exists(&tx, tenant).await?;
        let existing = tx
            .query_opt(
                &format!("SELECT {DOMAIN_COLUMNS} FROM tenancy_catalog.config_domains WHERE tenant_id = $1 AND hostname = $2"),
                &[&tenant.as_uuid(), &hostname],
            )
            .await
            .map_err(ConfigError::db("reading a domain"))?;
        if let Some(row) = existing {
            return domain_from_row(&row);
        }
        let token = random_token();
        let d = Domain {
            tenant_id: tenant,
            hostname: hostname.clone(),
            state: DomainState::Pending,
            token: token.clone(),
            verified_at: None,
            last_error: None,
        };
        let v = record(
            &tx,
            meta,
            "domain",
            &hostname,
            Some(tenant),
            "put",
            None,
            Some(to_json(&d)),
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.execute(
            "INSERT INTO tenancy_catalog.config_domains (tenant_id, hostname, token, version) VALUES ($1, $2, $3, $4)",
            &[&tenant.as_uuid(), &hostname, &token, &v],
        )
        .await
        .map_err(ConfigError::db("claiming a domain"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a domain claim"))?;
        Ok(d)
    }

    /// A tenant's domains.
    pub async fn list_domains(&self, tenant: TenantId) -> Result<Vec<Domain>, ConfigError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {DOMAIN_COLUMNS} FROM tenancy_catalog.config_domains WHERE tenant_id = $1 ORDER BY hostname"),
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(ConfigError::db("listing domains"))?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Checks a pending (or disabled) domain's TXT record through `resolver`; on success
    /// the domain becomes `verified`, on failure it stays as it was and records why.
    pub async fn verify_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        resolver: &dyn TxtResolver,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        meta.validate()?;
        let hostname = parse_hostname(hostname)?;
        let current = self
            .list_domains(tenant)
            .await?
            .into_iter()
            .find(|d| d.hostname == hostname)
            .ok_or_else(|| ConfigError::NotFound {
                kind: "domain",
                key: hostname.clone(),
            })?;
        if current.state == DomainState::Verified {
            return Ok(current);
        }
        // The DNS lookup happens outside any transaction: it can take seconds.
        let expected = current.challenge_value();
        let outcome = match resolver.txt(&current.challenge_name()).await {
            Ok(records) if records.iter().any(|r| r.trim() == expected) => Ok(()),
            Ok(records) => Err(format!(
                "no TXT record {:?} at {} (found {} record(s))",
                expected,
                current.challenge_name(),
                records.len()
            )),
            Err(e) => Err(format!(
                "DNS lookup of {} failed: {e}",
                current.challenge_name()
            )),
        };
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let row = match &outcome {
            Ok(()) => {
                let taken = tx
                    .query_opt(
                        "SELECT tenant_id FROM tenancy_catalog.config_domains WHERE hostname = $1 AND state = 'verified' AND tenant_id <> $2",
                        &[&hostname, &tenant.as_uuid()],
                    )
                    .await
                    .map_err(ConfigError::db("checking a domain"))?
                    .is_some();
                if taken {
                    return Err(ConfigError::Conflict(format!(
                        "{hostname} is already verified by another tenant"
                    )));
                }
                let v = record(
                    &tx,
                    meta,
                    "domain",
                    &hostname,
                    Some(tenant),
                    "verify",
                    Some(to_json(&current)),
                    None,
                    &format!("tenant:{tenant}"),
                )
                .await?;
                tx.query_one(
                    &format!(
                        "UPDATE tenancy_catalog.config_domains SET state = 'verified', verified_at = now(), last_checked_at = now(),
                             last_error = NULL, version = $3 WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"
                    ),
                    &[&tenant.as_uuid(), &hostname, &v],
                )
                .await
                .map_err(ConfigError::db("verifying a domain"))?
            }
            Err(why) => {
                let v = record(
                    &tx,
                    meta,
                    "domain",
                    &hostname,
                    Some(tenant),
                    "verify_failed",
                    None,
                    Some(Value::String(why.clone())),
                    &format!("tenant:{tenant}"),
                )
                .await?;
                tx.query_one(
                    &format!(
                        "UPDATE tenancy_catalog.config_domains SET last_checked_at = now(), last_error = $3, version = $4
                         WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"
                    ),
                    &[&tenant.as_uuid(), &hostname, why, &v],
                )
                .await
                .map_err(ConfigError::db("recording a failed domain check"))?
            }
        };
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a domain check"))?;
        domain_from_row(&row)
    }

    /// Switches a verified domain off (it no longer resolves to the tenant).
    pub async fn disable_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        meta.validate()?;
        let hostname = parse_hostname(hostname)?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let row = tx
            .query_opt(
                &format!(
                    "UPDATE tenancy_catalog.config_domains SET state = 'disabled' WHERE tenant_id = $1 AND hostname = $2
                     RETURNING {DOMAIN_COLUMNS}"
                ),
                &[&tenant.as_uuid(), &hostname],
            )
            .await
            .map_err(ConfigError::db("disabling a domain"))?
            .ok_or_else(|| ConfigError::NotFound { kind: "domain", key: hostname.clone() })?;
        let d = domain_from_row(&row)?;
        let v = record(
            &tx,
            meta,
            "domain",
            &hostname,
            Some(tenant),
            "disable",
            None,
            Some(to_json(&d)),
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.execute(
            "UPDATE tenancy_catalog.config_domains SET version = $3 WHERE tenant_id = $1 AND hostname = $2",
            &[&tenant.as_uuid(), &hostname, &v],
        )
        .await
        .map_err(ConfigError::db("disabling a domain"))?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a domain change"))?;
        Ok(d)
    }

    /// Removes a domain claim.
    pub async fn remove_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        meta.validate()?;
        let hostname = parse_hostname(hostname)?;
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let row = tx
            .query_opt(
                &format!("DELETE FROM tenancy_catalog.config_domains WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"),
                &[&tenant.as_uuid(), &hostname],
            )
            .await
            .map_err(ConfigError::db("removing a domain"))?
            .ok_or_else(|| ConfigError::NotFound { kind: "domain", key: hostname.clone() })?;
        let d = domain_from_row(&row)?;
        let v = record(
            &tx,
            meta,
            "domain",
            &hostname,
            Some(tenant),
            "delete",
            Some(to_json(&d)),
            None,
            &format!("tenant:{tenant}"),
        )
        .await?;
        tx.commit()
            .await
            .map_err(ConfigError::db("committing a domain removal"))?;
        Ok(v)
    }

    /// The change log, oldest first, after `after`, at most `limit` (1 to 1000) entries;
    /// only one tenant's when `tenant` is given.
    pub async fn changes(
        &self,
        after: i64,
        limit: i64,
        tenant: Option<TenantId>,
    ) -> Result<Vec<Change>, ConfigError> {
        if !(1..=1000).contains(&limit) {
            return Err(invalid("limit must be between 1 and 1000"));
        }
        let c = self.conn().await?;
        let rows = c
            .query(
                "SELECT version, at, actor, reason, entity, entity_key, tenant_id, action, before, after
                 FROM tenancy_catalog.config_changes
                 WHERE version > $1 AND ($3::uuid IS NULL OR tenant_id = $3)
                 ORDER BY version LIMIT $2",
                &[&after, &limit, &tenant.map(|t| t.as_uuid())],
            )
            .await
            .map_err(ConfigError::db("reading the change log"))?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    version: r.get(0),
                    at: r.get(1),
                    actor: r.get(2),
                    reason: r.get(3),
                    entity: r.get(4),
                    entity_key: r.get(5),
                    tenant_id: r
                        .get::<_, Option<uuid::Uuid>>(6)
                        .map(TenantId::from_uuid)
                        .transpose()
                        .map_err(ConfigError::corrupt)?,
                    action: r.get(7),
                    before: r.get(8),
                    after: r.get(9),
                })
            })
            .collect()
    }
}

fn kind_str(k: EntitlementKind) -> &'static str {
    match k {
        EntitlementKind::Feature => "feature",
        EntitlementKind::Limit => "limit",
    }
}

fn layer_from(v: Value) -> Result<LayerValues, ConfigError> {
    serde_json::from_value(v).map_err(ConfigError::corrupt)
}

/// Loads every definition and every live tenant's configuration.
pub async fn load_all(c: &Client) -> Result<ConfigData, ConfigError> {
    let (version, ents, plans, regions, flags, settings, tenants) = futures_util::try_join!(
        c.query_one("SELECT coalesce(max(version), 0) FROM tenancy_catalog.config_changes", &[]),
        c.query("SELECT key, kind, default_value, description FROM tenancy_catalog.config_entitlements", &[]),
        c.query("SELECT key, display_name, layer FROM tenancy_catalog.config_plans", &[]),
        c.query("SELECT region, layer FROM tenancy_catalog.config_regions", &[]),
        c.query("SELECT definition FROM tenancy_catalog.config_flags", &[]),
        c.query("SELECT key, schema, default_value, description FROM tenancy_catalog.config_setting_defs", &[]),
        load_tenants(c, None),
    )
    .map_err(ConfigError::db("loading the configuration"))?;
    let mut data = ConfigData {
        version: version.get(0),
        ..Default::default()
    };
    for r in &ents {
        let kind = if r.get::<_, &str>(1) == "feature" {
            EntitlementKind::Feature
        } else {
            EntitlementKind::Limit
        };
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
pub async fn load_flag(c: &Client, key: &FlagKey) -> Result<Option<(Flag, i64)>, ConfigError> {
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
pub async fn load_tenant(c: &Client, id: TenantId) -> Result<Option<TenantData>, ConfigError> {
    let mut v = load_tenants(c, Some(id))
        .await
        .map_err(ConfigError::db("loading a tenant's configuration"))??;
    Ok(v.pop())
}

/// The tenants' rows, attributes, overrides, settings, branding and domains: one query per
/// table, pipelined. The outer error is the driver's, the inner a parse failure.
async fn load_tenants(
    c: &Client,
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
