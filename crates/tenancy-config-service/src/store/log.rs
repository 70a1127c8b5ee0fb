//! The change log: who makes a change and why ([`ChangeMeta`]), the record a write
//! appends ([`ChangeRecord`]) with the notification it sends, and reading the log back
//! ([`Change`]).

use serde::Serialize;
use serde_json::Value;
use tenancy_config::model::ModelError;
use tenancy_config::ConfigError;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::{invalid, Store, Tx, CHANNEL};

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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

/// Whom a change concerns, which is what its notification tells listeners to reload:
/// everything (definitions, plans and regions, deletions that reach many tenants), one
/// flag, or one tenant (whose id the change-log row carries).
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// Every snapshot reloads fully.
    All,
    /// One flag.
    Flag(String),
    /// One tenant.
    Tenant(TenantId),
}

impl Scope {
    /// The notification payload: `all`, `flag:<key>` or `tenant:<id>`.
    fn payload(&self) -> String {
        match self {
            Scope::All => "all".to_owned(),
            Scope::Flag(k) => format!("flag:{k}"),
            Scope::Tenant(t) => format!("tenant:{t}"),
        }
    }

    fn tenant(&self) -> Option<TenantId> {
        match self {
            Scope::Tenant(t) => Some(*t),
            Scope::All | Scope::Flag(_) => None,
        }
    }
}

/// One change as a write records it; recording gives it its version.
#[derive(Debug, Clone)]
pub(crate) struct ChangeRecord {
    /// What kind of thing (`flag`, `plan`, `override`, …).
    entity: &'static str,
    /// Which one.
    key: String,
    /// Whom it concerns (and so whom the notification names).
    scope: Scope,
    /// `put`, `delete`, `kill`, `unkill`, `verify`, `verify_failed`, `disable`.
    action: &'static str,
    /// The value before, if there was one.
    before: Option<Value>,
    /// The value after, if there is one.
    after: Option<Value>,
}

impl ChangeRecord {
    /// A change of `entity` `key` by `action`, concerning `scope`; no values yet.
    pub(crate) fn new(
        entity: &'static str,
        key: impl Into<String>,
        scope: Scope,
        action: &'static str,
    ) -> ChangeRecord {
        ChangeRecord {
            entity,
            key: key.into(),
            scope,
            action,
            before: None,
            after: None,
        }
    }

    /// With the value before.
    pub(crate) fn before(mut self, v: Option<Value>) -> ChangeRecord {
        self.before = v;
        self
    }

    /// With the value after.
    pub(crate) fn after(mut self, v: Option<Value>) -> ChangeRecord {
        self.after = v;
        self
    }

    /// Appends the change to `config_changes` and sends its notification, in `tx`;
    /// returns its version.
    pub(super) async fn record(&self, tx: &Tx<'_>, meta: &ChangeMeta) -> Result<i64, ConfigError> {
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
                    &self.entity,
                    &self.key,
                    &self.scope.tenant().map(|t| t.as_uuid()),
                    &self.action,
                    &self.before,
                    &self.after,
                    &CHANNEL,
                    &self.scope.payload(),
                ],
            )
            .await
            .map_err(ConfigError::db("recording a configuration change"))?;
        let version: i64 = row.get(0);
        self.audit(tx, meta, version).await?;
        Ok(version)
    }

    /// Records the change in the control plane's audit log (its tenant's chain, or the
    /// platform chain), in the same transaction: `config.<entity>.<action>` on
    /// `<entity>:<key>` by the change's actor, with digests of the values before and
    /// after and the change's version.
    async fn audit(&self, tx: &Tx<'_>, meta: &ChangeMeta, version: i64) -> Result<(), ConfigError> {
        use tenancy_audit::{Actor, ActorKind, Event};
        let actor = meta.actor.trim();
        let kind = match actor.split(':').next() {
            Some("admin") => ActorKind::Admin,
            Some("worker") => ActorKind::Worker,
            Some("api_key") => ActorKind::ApiKey,
            _ => ActorKind::User,
        };
        let mut e = Event::new(
            Actor::new(kind, actor),
            format!("config.{}.{}", self.entity, self.action),
        )
        .target(format!("{}:{}", self.entity, self.key))
        .after(serde_json::json!({
            "version": version,
            "digest": self.after.as_ref().map(tenancy_audit::digest),
        }));
        e.before = self.before.as_ref().map(tenancy_audit::digest);
        tenancy_audit::record_control(tx, self.scope.tenant().map(|t| t.as_uuid()), &e)
            .await
            .map_err(|e| match e {
                tenancy_audit::Error::Db { source, .. } => ConfigError::Db {
                    what: "recording the configuration change's audit event",
                    source,
                },
                other => invalid(format!("recording the audit event: {other}")),
            })
    }
}

impl Store {
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
