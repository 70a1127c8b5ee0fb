//! The declared configuration rules ([`tenancy_insights::rules`]) over the stored
//! configuration and the catalog: the facts they need, gathered in one transaction, and
//! the check every write runs before it commits.
//!
//! A write is checked against what it brings: the findings of the tenant it concerns (or
//! of every tenant, for a change of definitions, plans, regions or flags) after the change
//! that were not there before it. One from [`RulesConfig::reject_from`] on refuses the
//! change (nothing is stored; the error names the rule); one below it is a warning: the
//! change is made, the warning logged and handed to the store's [`FindingSink`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tenancy_config::engine::{ConfigData, Snapshot};
use tenancy_config::model::{Condition, Flag, OverrideTarget, SetOp};
use tenancy_config::ConfigError;
use tenancy_core::TenantId;
use tenancy_insights::rules::{
    self, Finding, FlagFacts, OverrideFact, RulesConfig, ServedFact, TenantFacts,
};
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

/// Where the findings a write brought go once it committed (warnings, as the change was
/// made): `tenancy serve` puts them in its anomaly feed.
pub type FindingSink = Arc<dyn Fn(&[Finding]) + Send + Sync>;

/// The rules a store checks on every write, and where the warnings go.
#[derive(Clone)]
pub struct RuleCheck {
    /// The rules.
    pub config: Arc<RulesConfig>,
    /// Where warnings go (besides the log).
    pub sink: Option<FindingSink>,
}

impl std::fmt::Debug for RuleCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleCheck")
            .field("config", &self.config)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

/// A change refused by a rule: the rule's name and what is wrong.
pub fn refusal(f: &Finding) -> ConfigError {
    ConfigError::Rule {
        rule: f.kind.as_str(),
        message: f.message.clone(),
    }
}

/// Whether a flag's own rules exclude a region (a `region not_in` condition).
pub fn excludes_regions(flag: &Flag) -> bool {
    !excluded_regions(flag).is_empty()
}

/// The regions a flag's own rules exclude: the values of its `region not_in` conditions.
fn excluded_regions(flag: &Flag) -> Vec<String> {
    let mut out: Vec<String> = flag
        .rules
        .iter()
        .flat_map(|r| &r.conditions)
        .filter_map(|c| match c {
            Condition::Region {
                op: SetOp::NotIn,
                values,
            } => Some(values.iter().map(|v| v.as_str().to_owned())),
            _ => None,
        })
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The facts of the declared rules from the configuration `data` and each tenant's
/// residency, evaluated at `now`.
pub fn facts(
    cfg: &RulesConfig,
    data: ConfigData,
    residency: &BTreeMap<TenantId, Vec<String>>,
    now: OffsetDateTime,
) -> (Vec<TenantFacts>, Vec<FlagFacts>) {
    let ids: Vec<TenantId> = data.tenants.iter().map(|t| t.attributes.id).collect();
    let flags: Vec<FlagFacts> = data
        .flags
        .iter()
        .map(|f| FlagFacts {
            key: f.key.as_str().to_owned(),
            excluded_regions: excluded_regions(f),
        })
        .collect();
    let snap = Snapshot::build(data);
    let mut tenants = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(t) = snap.tenant(id) else { continue };
        let a = &t.attributes;
        let region = a.region.as_str();
        let mut compliance: BTreeSet<String> = a.tags.iter().cloned().collect();
        for flag in cfg.required_compliance(region) {
            if snap.is_enabled(id, flag, now) {
                compliance.insert(flag.to_owned());
            }
        }
        let overrides = t
            .overrides
            .iter()
            .filter(|o| o.active_at(now))
            .filter_map(|o| match &o.target {
                OverrideTarget::Flag(k) if cfg.security_flags.iter().any(|s| s == k.as_str()) => {
                    let variant = o.value.as_str().unwrap_or_default().to_owned();
                    let def = snap.flag_def(k.as_str())?;
                    let turns_off = def.off_variant.as_str() == variant
                        || def.variants.get(variant.as_str())
                            == Some(&serde_json::Value::Bool(false));
                    Some(OverrideFact {
                        flag: k.as_str().to_owned(),
                        variant,
                        turns_off,
                    })
                }
                _ => None,
            })
            .collect();
        let served = flags
            .iter()
            .filter(|f| cfg.excludes(f, region))
            .filter_map(|f| {
                let def = snap.flag_def(&f.key)?;
                let e = snap.flag(id, &f.key, now)?;
                Some(ServedFact {
                    flag: f.key.clone(),
                    variant: e.variant.as_str().to_owned(),
                    reached: *e.variant != def.default_variant && *e.variant != def.off_variant,
                })
            })
            .collect();
        tenants.push(TenantFacts {
            tenant: id,
            plan: a.plan.as_str().to_owned(),
            region: region.to_owned(),
            placement: a.placement,
            residency: residency.get(&id).cloned(),
            compliance,
            overrides,
            served,
        });
    }
    (tenants, flags)
}

/// The declared rules' findings over every live tenant, or over `only`, as `c` sees the
/// configuration and the catalog (inside a transaction: with its writes).
pub async fn findings(
    c: &impl GenericClient,
    cfg: &RulesConfig,
    only: Option<TenantId>,
) -> Result<Vec<Finding>, ConfigError> {
    let data = tenancy_config::load::load_scoped(c, only).await?;
    let rows = c
        .query(
            "SELECT id, residency FROM tenancy_catalog.tenants
             WHERE state <> 'deleted' AND residency IS NOT NULL AND ($1::uuid IS NULL OR id = $1)",
            &[&only.map(|t| t.as_uuid())],
        )
        .await
        .map_err(ConfigError::db("reading tenants' residency"))?;
    let mut residency = BTreeMap::new();
    for r in rows {
        let id = TenantId::from_uuid(r.get(0)).map_err(ConfigError::corrupt)?;
        residency.insert(id, r.get::<_, Vec<String>>(1));
    }
    let (tenants, flags) = facts(cfg, data, &residency, OffsetDateTime::now_utc());
    Ok(rules::check(cfg, &tenants, &flags))
}
