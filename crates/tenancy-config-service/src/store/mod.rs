//! The configuration store: every statement that writes configuration, one module per
//! entity (entitlements, plan and region layers, flags, settings, tenant attributes and
//! branding, overrides, domains) and the change log.
//!
//! Every write goes through one helper, [`Store::write`]: it checks who and why, opens a
//! transaction, reads the row as it was (for the change log) after validating against the
//! other definitions, appends a [`ChangeRecord`] to `tenancy_catalog.config_changes` (who,
//! when, why, before, after) whose version stamps the written row, sends
//! `NOTIFY tenancy_config, '<kind>:<id>'`, writes, and commits. PostgreSQL delivers the
//! notification only if the transaction commits, so a snapshot never hears of a change
//! that did not happen. Payloads carry ids only; listeners read the data themselves.
//!
//! The writes that can change what the declared configuration rules find (tenant tags,
//! overrides, flags, plan and region layers) are checked in the same transaction
//! ([`crate::rules`]): the findings of the tenant concerned, or of the fleet, before and
//! after; a change that brings a finding severe enough is rolled back. Entitlements,
//! settings, branding and domains cannot change what the rules find and are not checked.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tenancy_config::engine::ConfigData;
use tenancy_config::model::ModelError;
use tenancy_config::ConfigError;
use tenancy_conn::{plain_pool, PgConfig, PlainConn, PlainPool};
use tenancy_core::TenantId;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

mod domains;
mod entitlements;
mod flags;
mod layers;
mod log;
mod overrides;
mod settings;
mod tenants;

use crate::rules::{self, RuleCheck};

pub use log::{Change, ChangeMeta};
pub(crate) use log::{ChangeRecord, Scope};
pub use tenancy_config::load::CHANNEL;

/// The control plane's handle on the configuration tables: a small pool of catalog
/// connections and the write operations.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PlainPool,
    rules: Option<RuleCheck>,
}

type Tx<'a> = Transaction<'a>;

/// Whose findings of the configuration rules a write can change.
#[derive(Debug, Clone)]
pub(crate) enum Reach {
    /// One tenant's (its tags, its overrides).
    Tenant(TenantId),
    /// Every tenant's, through one flag: only when the rules name the flag (a
    /// compliance or security flag, configured exclusions) or `excludes` (its own rules
    /// exclude regions) can the change bring a finding.
    Flag {
        /// The flag.
        key: String,
        /// Whether its rules, after the change, exclude a region.
        excludes: bool,
    },
    /// Every tenant's (a plan or region layer forcing any flag).
    Fleet,
}

impl Reach {
    fn tenant(&self) -> Option<TenantId> {
        match self {
            Reach::Tenant(t) => Some(*t),
            Reach::Flag { .. } | Reach::Fleet => None,
        }
    }

    /// Whether the change can bring a finding of `cfg`'s rules at all.
    fn matters(&self, cfg: &tenancy_insights::rules::RulesConfig) -> bool {
        match self {
            Reach::Flag { key, excludes } => *excludes || cfg.names_flag(key),
            Reach::Tenant(_) | Reach::Fleet => true,
        }
    }
}

impl Store {
    /// A store connecting with `config` (the catalog's owner role), at most `max_size`
    /// connections.
    /// Writes are checked against the default configuration rules
    /// ([`tenancy_insights::rules::RulesConfig::default`]); see [`Store::with_rules`].
    pub fn new(config: impl Into<PgConfig>, max_size: usize) -> Result<Store, ConfigError> {
        let pool = plain_pool(config, max_size, Duration::from_secs(10))
            .map_err(|e| ConfigError::Pool(e.to_string()))?;
        Ok(Store {
            pool,
            rules: Some(RuleCheck {
                config: Default::default(),
                sink: None,
            }),
        })
    }

    /// The same store checking writes against `rules` (`None`: no check).
    pub fn with_rules(mut self, rules: Option<RuleCheck>) -> Store {
        self.rules = rules;
        self
    }

    /// The rules writes are checked against.
    pub fn rules(&self) -> Option<&RuleCheck> {
        self.rules.as_ref()
    }

    /// The declared rules' findings over the whole fleet as committed (what a periodic
    /// check reports); `None` when the store checks no rule.
    pub async fn fleet_findings(
        &self,
    ) -> Result<Option<Vec<tenancy_insights::rules::Finding>>, ConfigError> {
        let Some(r) = &self.rules else {
            return Ok(None);
        };
        let c = self.conn().await?;
        Ok(Some(rules::findings(&*c, &r.config, None).await?))
    }

    async fn conn(&self) -> Result<PlainConn, ConfigError> {
        self.pool
            .get()
            .await
            .map_err(|e| ConfigError::Pool(e.to_string()))
    }

    /// Loads everything (what a snapshot is built from).
    pub async fn load_all(&self) -> Result<ConfigData, ConfigError> {
        let c = self.conn().await?;
        tenancy_config::load::load_all(&*c).await
    }

    /// The one write path. Checks `meta`, opens a transaction, runs `prepare` (checks
    /// against the stored state, reads the row as it was; returns the change to record
    /// and what `apply` needs), records the change (its version), runs `apply` with that
    /// version (writes the row), and commits; `committing` names the write in errors.
    /// Returns the version and what `apply` returned. Any error rolls everything back,
    /// the notification included.
    async fn write<P, T>(
        &self,
        meta: &ChangeMeta,
        committing: &'static str,
        prepare: impl AsyncFnOnce(&Tx<'_>) -> Result<(ChangeRecord, P), ConfigError>,
        apply: impl AsyncFnOnce(&Tx<'_>, i64, P) -> Result<T, ConfigError>,
    ) -> Result<(i64, T), ConfigError> {
        self.write_in(meta, committing, None, prepare, apply).await
    }

    /// [`Store::write`] of a change that can alter what the configuration rules find
    /// for `reach`: the findings before and after the change are compared in its
    /// transaction; one it brings from the rules' `reject_from` severity on rolls it
    /// back ([`ConfigError::Rule`]), the others are warnings, logged and handed to the
    /// rules' sink once the change committed.
    async fn checked_write<P, T>(
        &self,
        meta: &ChangeMeta,
        committing: &'static str,
        reach: Reach,
        prepare: impl AsyncFnOnce(&Tx<'_>) -> Result<(ChangeRecord, P), ConfigError>,
        apply: impl AsyncFnOnce(&Tx<'_>, i64, P) -> Result<T, ConfigError>,
    ) -> Result<(i64, T), ConfigError> {
        self.write_in(meta, committing, Some(reach), prepare, apply)
            .await
    }

    async fn write_in<P, T>(
        &self,
        meta: &ChangeMeta,
        committing: &'static str,
        reach: Option<Reach>,
        prepare: impl AsyncFnOnce(&Tx<'_>) -> Result<(ChangeRecord, P), ConfigError>,
        apply: impl AsyncFnOnce(&Tx<'_>, i64, P) -> Result<T, ConfigError>,
    ) -> Result<(i64, T), ConfigError> {
        meta.validate()?;
        let check = reach
            .zip(self.rules.as_ref())
            .filter(|(r, rc)| r.matters(&rc.config));
        let mut c = self.conn().await?;
        let tx = c
            .transaction()
            .await
            .map_err(ConfigError::db("starting a transaction"))?;
        let before = match &check {
            Some((r, rc)) => rules::findings(&tx, &rc.config, r.tenant()).await?,
            None => Vec::new(),
        };
        let (change, prepared) = prepare(&tx).await?;
        let version = change.record(&tx, meta).await?;
        let out = apply(&tx, version, prepared).await?;
        let mut warnings = Vec::new();
        if let Some((r, rc)) = &check {
            let after = rules::findings(&tx, &rc.config, r.tenant()).await?;
            let brought = tenancy_insights::rules::brought(&before, &after);
            if let Some(f) = brought.iter().find(|f| rc.config.rejects(f)) {
                // Dropping the transaction rolls the change back, its record included.
                return Err(rules::refusal(f));
            }
            warnings = brought.into_iter().cloned().collect();
        }
        tx.commit().await.map_err(ConfigError::db(committing))?;
        if let (false, Some((_, rc))) = (warnings.is_empty(), &check) {
            for w in &warnings {
                tracing::warn!(rule = w.kind.as_str(), version, "{}", w.message);
            }
            if let Some(sink) = &rc.sink {
                sink(&warnings);
            }
        }
        Ok((version, out))
    }
}

/// Refuses invalid input before a connection is taken: the change's actor and reason
/// first, then the entity's own check (whose result it passes on).
fn valid<T>(
    meta: &ChangeMeta,
    entity: Result<T, impl Into<ConfigError>>,
) -> Result<T, ConfigError> {
    meta.validate()?;
    entity.map_err(Into::into)
}

/// Nothing more to write than the change itself (deletions, whose `prepare` removed the row).
async fn nothing(_: &Tx<'_>, _: i64, (): ()) -> Result<(), ConfigError> {
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(ModelError::Invalid(msg.into()))
}

fn not_found(kind: &'static str, key: impl ToString) -> ConfigError {
    ConfigError::NotFound {
        kind,
        key: key.to_string(),
    }
}

/// The row a statement returns as JSON (its first column), if it returns one: the value
/// before a change, read `FOR UPDATE` or returned by the `DELETE`.
async fn row_json(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<Option<Value>, ConfigError> {
    Ok(tx
        .query_opt(sql, params)
        .await
        .map_err(ConfigError::db(what))?
        .map(|r| r.get::<_, Value>(0)))
}

/// Runs a statement that writes one row.
async fn exec(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    what: &'static str,
) -> Result<(), ConfigError> {
    tx.execute(sql, params)
        .await
        .map_err(ConfigError::db(what))?;
    Ok(())
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
        Err(not_found("tenant", tenant))
    }
}
