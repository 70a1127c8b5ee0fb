//! The pure evaluation engine: an immutable [`Snapshot`] of all configuration, compiled
//! for fast lookups, and the resolution of flags, entitlements and settings for a tenant
//! through the layers global → plan → region → tenant override, with [`Explanation`]s.
//!
//! No IO happens here: no database, no network, no clock. The caller passes `now` (used
//! only for override expiry), which keeps every evaluation deterministic and testable.
//!
//! Parts: `compile` prepares the snapshot's lookups, this module evaluates, and `explain`
//! walks the layers (one walker for flags, entitlements and settings) to say which decided.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tenancy_core::{PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

use crate::model::{
    Branding, Domain, DomainState, EntitlementDef, EntitlementKey, EntitlementValue, Flag, FlagKey,
    LayerValues, Override, Plan, RegionLayer, SettingDef, SettingKey, TenantAttributes, VariantKey,
};

mod compile;
mod explain;

use compile::{bucket_with_salt, CompiledServe, Map};
pub use compile::{rollout_bucket, CompiledFlag, TenantEntry};
pub use explain::{ExplainError, Explanation, LayerStep};

/// The raw, validated configuration a snapshot is built from (what the store loads).
#[derive(Debug, Clone, Default)]
pub struct ConfigData {
    /// Highest change version included.
    pub version: i64,
    /// Entitlement definitions (global layer).
    pub entitlements: Vec<EntitlementDef>,
    /// Plans (plan layer).
    pub plans: Vec<Plan>,
    /// Region layers.
    pub regions: Vec<RegionLayer>,
    /// Flags.
    pub flags: Vec<Flag>,
    /// Setting definitions (global layer).
    pub settings: Vec<SettingDef>,
    /// Tenants.
    pub tenants: Vec<TenantData>,
}

/// Everything configured for one tenant.
#[derive(Debug, Clone)]
pub struct TenantData {
    /// Targeting attributes.
    pub attributes: TenantAttributes,
    /// Overrides (expired ones included; they are skipped at evaluation time).
    pub overrides: Vec<Override>,
    /// Tenant-layer setting values.
    pub settings: BTreeMap<SettingKey, serde_json::Value>,
    /// Branding, if set.
    pub branding: Option<Branding>,
    /// Custom domains.
    pub domains: Vec<Domain>,
}

/// Which layer decided a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The global definition (entitlement/setting default, or a flag's rules).
    Global,
    /// The tenant's plan.
    Plan,
    /// The tenant's region.
    Region,
    /// A per-tenant override or tenant setting.
    Tenant,
}

/// Why a flag evaluated to its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FlagReason {
    /// The kill switch is on: the off variant, whatever else is configured.
    KillSwitch,
    /// An unexpired per-tenant override.
    Override,
    /// The tenant's region forces a variant.
    Region,
    /// The tenant's plan forces a variant.
    Plan,
    /// Rule `index` matched; `bucket` is the rollout bucket when it was a rollout.
    Rule {
        /// Position of the rule.
        index: usize,
        /// Rollout bucket (0..10,000), for rollouts.
        bucket: Option<u32>,
    },
    /// No rule matched: the default variant.
    Default,
    /// The tenant is not in the snapshot: the default variant.
    UnknownTenant,
}

impl FlagReason {
    /// The layer this reason belongs to.
    pub fn layer(&self) -> Layer {
        match self {
            FlagReason::Override => Layer::Tenant,
            FlagReason::Region => Layer::Region,
            FlagReason::Plan => Layer::Plan,
            _ => Layer::Global,
        }
    }
}

/// The result of evaluating a flag: borrowed from the snapshot, no allocation.
#[derive(Debug, Clone, Copy)]
pub struct FlagEvaluation<'a> {
    /// The variant served.
    pub variant: &'a VariantKey,
    /// Its value.
    pub value: &'a serde_json::Value,
    /// Why.
    pub reason: FlagReason,
}

impl FlagEvaluation<'_> {
    /// The value as a boolean (`false` for non-boolean values).
    pub fn enabled(&self) -> bool {
        self.value.as_bool().unwrap_or(false)
    }
}

/// A resolved entitlement or setting and the layer that decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub layer: Layer,
}

/// A limit check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit {key} is {limit}; {requested} requested")]
pub struct LimitExceeded {
    /// The limit's key.
    pub key: String,
    /// The limit.
    pub limit: u64,
    /// What the caller wanted to reach.
    pub requested: u64,
}

/// All configuration, immutable and compiled: what the SDK swaps atomically.
#[derive(Debug, Default)]
pub struct Snapshot {
    version: i64,
    entitlements: Map<EntitlementKey, EntitlementDef>,
    plans: Map<PlanKey, Arc<Plan>>,
    regions: Map<RegionId, Arc<RegionLayer>>,
    flags: Map<FlagKey, Arc<CompiledFlag>>,
    settings: Map<SettingKey, Arc<SettingDef>>,
    tenants: Map<TenantId, Arc<TenantEntry>>,
    /// Verified custom domains → tenant.
    domains: Map<String, TenantId>,
}

impl Snapshot {
    /// Builds a snapshot from loaded data.
    pub fn build(data: ConfigData) -> Snapshot {
        let plans: Vec<Arc<Plan>> = data.plans.into_iter().map(Arc::new).collect();
        let regions: Vec<Arc<RegionLayer>> = data.regions.into_iter().map(Arc::new).collect();
        let flags = data
            .flags
            .into_iter()
            .map(|f| {
                (
                    f.key.clone(),
                    Arc::new(CompiledFlag::compile(f, &plans, &regions)),
                )
            })
            .collect();
        let mut snap = Snapshot {
            version: data.version,
            entitlements: data
                .entitlements
                .into_iter()
                .map(|e| (e.key.clone(), e))
                .collect(),
            plans: plans
                .iter()
                .map(|p| (p.key.clone(), Arc::clone(p)))
                .collect(),
            regions: regions
                .iter()
                .map(|r| (r.region.clone(), Arc::clone(r)))
                .collect(),
            flags,
            settings: data
                .settings
                .into_iter()
                .map(|s| (s.key.clone(), Arc::new(s)))
                .collect(),
            tenants: Map::default(),
            domains: Map::default(),
        };
        for t in data.tenants {
            snap.insert_tenant(t);
        }
        snap
    }

    fn insert_tenant(&mut self, mut t: TenantData) {
        t.attributes.tags.sort();
        t.attributes.tags.dedup();
        let id = t.attributes.id;
        for d in &t.domains {
            if d.state == DomainState::Verified {
                self.domains.insert(d.hostname.clone(), id);
            }
        }
        self.tenants.insert(id, Arc::new(TenantEntry::new(t)));
    }

    fn remove_tenant(&mut self, id: TenantId) {
        if let Some(old) = self.tenants.remove(&id) {
            for d in &old.data.domains {
                if self.domains.get(&d.hostname) == Some(&id) {
                    self.domains.remove(&d.hostname);
                }
            }
        }
    }

    /// A copy with one tenant replaced (or removed when `data` is `None`); everything
    /// else is shared. Used for targeted invalidation.
    pub fn with_tenant(&self, id: TenantId, data: Option<TenantData>, version: i64) -> Snapshot {
        let mut next = self.shallow_clone();
        next.remove_tenant(id);
        if let Some(d) = data {
            next.insert_tenant(d);
        }
        next.version = next.version.max(version);
        next
    }

    /// A copy with one flag replaced (or removed when `flag` is `None`).
    pub fn with_flag(&self, key: &FlagKey, flag: Option<Flag>, version: i64) -> Snapshot {
        let mut next = self.shallow_clone();
        next.flags.remove(key);
        if let Some(f) = flag {
            let plans: Vec<Arc<Plan>> = self.plans.values().cloned().collect();
            let regions: Vec<Arc<RegionLayer>> = self.regions.values().cloned().collect();
            next.flags.insert(
                f.key.clone(),
                Arc::new(CompiledFlag::compile(f, &plans, &regions)),
            );
        }
        next.version = next.version.max(version);
        next
    }

    fn shallow_clone(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            entitlements: self.entitlements.clone(),
            plans: self.plans.clone(),
            regions: self.regions.clone(),
            flags: self.flags.clone(),
            settings: self.settings.clone(),
            tenants: self.tenants.clone(),
            domains: self.domains.clone(),
        }
    }

    /// The highest change version this snapshot includes.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Flag keys, sorted.
    pub fn flag_keys(&self) -> Vec<&FlagKey> {
        let mut v: Vec<&FlagKey> = self.flags.keys().collect();
        v.sort();
        v
    }

    /// The keys of every plan.
    pub fn plan_keys(&self) -> Vec<&PlanKey> {
        self.plans.keys().collect()
    }

    /// Entitlement keys, sorted.
    pub fn entitlement_keys(&self) -> Vec<&EntitlementKey> {
        let mut v: Vec<&EntitlementKey> = self.entitlements.keys().collect();
        v.sort();
        v
    }

    /// Setting keys, sorted.
    pub fn setting_keys(&self) -> Vec<&SettingKey> {
        let mut v: Vec<&SettingKey> = self.settings.keys().collect();
        v.sort();
        v
    }

    /// A plan as this snapshot holds it.
    pub fn plan_def(&self, key: &PlanKey) -> Option<&Plan> {
        self.plans.get(key).map(|p| &**p)
    }

    /// An entitlement's definition.
    pub fn entitlement_def(&self, key: &str) -> Option<&EntitlementDef> {
        self.entitlements.get(key)
    }

    /// A flag's definition.
    pub fn flag_def(&self, key: &str) -> Option<&Flag> {
        self.flags.get(key).map(|f| &f.def)
    }

    /// A tenant's configuration, if the tenant is known.
    pub fn tenant(&self, id: TenantId) -> Option<&TenantData> {
        self.tenants.get(&id).map(|t| &t.data)
    }

    /// The tenant that owns a verified custom domain.
    pub fn tenant_for_domain(&self, hostname: &str) -> Option<TenantId> {
        self.domains.get(hostname).copied()
    }

    /// A tenant's branding.
    pub fn branding(&self, id: TenantId) -> Option<&Branding> {
        self.tenant(id).and_then(|t| t.branding.as_ref())
    }

    /// Evaluates a flag for a tenant; `None` when there is no such flag.
    ///
    /// Order: kill switch → tenant override (unexpired at `now`) → region → plan →
    /// the flag's rules (first match) → default variant.
    #[inline]
    pub fn flag(
        &self,
        tenant: TenantId,
        key: &str,
        now: OffsetDateTime,
    ) -> Option<FlagEvaluation<'_>> {
        let f = self.flags.get(key)?;
        let (idx, reason) = self.flag_index(f, tenant, now);
        let (variant, value) = &f.variants[idx];
        Some(FlagEvaluation {
            variant,
            value,
            reason,
        })
    }

    /// Whether a flag is on (its value is `true`) for a tenant; `false` for an unknown
    /// flag.
    #[inline]
    pub fn is_enabled(&self, tenant: TenantId, key: &str, now: OffsetDateTime) -> bool {
        self.flag(tenant, key, now).is_some_and(|e| e.enabled())
    }

    fn flag_index(
        &self,
        f: &CompiledFlag,
        tenant: TenantId,
        now: OffsetDateTime,
    ) -> (usize, FlagReason) {
        if f.def.killed {
            return (f.off_idx, FlagReason::KillSwitch);
        }
        let Some(t) = self.tenants.get(&tenant) else {
            return (f.default_idx, FlagReason::UnknownTenant);
        };
        if !t.flag_overrides.is_empty() {
            if let Some(o) = t.flag_overrides.get(&f.def.key) {
                if o.active_at(now) {
                    if let Some(i) = o
                        .value
                        .as_str()
                        .and_then(|v| f.variants.iter().position(|(k, _)| k.as_str() == v))
                    {
                        return (i, FlagReason::Override);
                    }
                }
            }
        }
        let attrs = &t.data.attributes;
        if !f.by_region.is_empty() {
            if let Some(i) = f.by_region.get(&attrs.region) {
                return (*i, FlagReason::Region);
            }
        }
        if !f.by_plan.is_empty() {
            if let Some(i) = f.by_plan.get(&attrs.plan) {
                return (*i, FlagReason::Plan);
            }
        }
        for (index, rule) in f.rules.iter().enumerate() {
            if rule.conds.iter().all(|c| c.holds(attrs)) {
                return match &rule.serve {
                    CompiledServe::Variant(i) => (
                        *i,
                        FlagReason::Rule {
                            index,
                            bucket: None,
                        },
                    ),
                    CompiledServe::Rollout(shares) => {
                        let b = bucket_with_salt(f.salt, tenant);
                        let i = shares
                            .iter()
                            .find(|(upper, _)| b < *upper)
                            .map_or(f.default_idx, |(_, i)| *i);
                        (
                            i,
                            FlagReason::Rule {
                                index,
                                bucket: Some(b),
                            },
                        )
                    }
                };
            }
        }
        (f.default_idx, FlagReason::Default)
    }

    /// What the tenant's region layer sets with `at`, else what its plan layer sets: the
    /// two layers between the tenant's own values and the global default.
    #[inline]
    fn region_or_plan<'s, T>(
        &'s self,
        attrs: &TenantAttributes,
        at: impl Fn(&'s LayerValues) -> Option<T>,
    ) -> Option<Resolved<T>> {
        let layer = |values: Option<&'s LayerValues>, layer| {
            values.and_then(&at).map(|value| Resolved { value, layer })
        };
        layer(
            self.regions.get(&attrs.region).map(|r| &r.values),
            Layer::Region,
        )
        .or_else(|| layer(self.plans.get(&attrs.plan).map(|p| &p.values), Layer::Plan))
    }

    /// Resolves an entitlement: tenant override (unexpired) → region → plan → global
    /// default. `None` when there is no such entitlement.
    pub fn entitlement(
        &self,
        tenant: TenantId,
        key: &str,
        now: OffsetDateTime,
    ) -> Option<Resolved<EntitlementValue>> {
        let def = self.entitlements.get(key)?;
        let Some(t) = self.tenants.get(&tenant) else {
            return Some(Resolved {
                value: def.default,
                layer: Layer::Global,
            });
        };
        if let Some(o) = t.entitlement_overrides.get(key) {
            if o.active_at(now) {
                if let Ok(v) = serde_json::from_value::<EntitlementValue>(o.value.clone()) {
                    if v.fits(def.kind) {
                        return Some(Resolved {
                            value: v,
                            layer: Layer::Tenant,
                        });
                    }
                }
            }
        }
        let at = |values: &LayerValues| {
            values
                .entitlements
                .get(key)
                .copied()
                .filter(|v| v.fits(def.kind))
        };
        Some(
            self.region_or_plan(&t.data.attributes, at)
                .unwrap_or(Resolved {
                    value: def.default,
                    layer: Layer::Global,
                }),
        )
    }

    /// Whether the tenant has a feature (a feature that is on, or a limit above zero);
    /// `false` for an unknown entitlement.
    pub fn has_feature(&self, tenant: TenantId, key: &str, now: OffsetDateTime) -> bool {
        self.entitlement(tenant, key, now)
            .is_some_and(|r| r.value.grants())
    }

    /// The tenant's limit: `Some(n)`, or `None` for unlimited. An unknown limit is 0:
    /// failing closed.
    pub fn limit(&self, tenant: TenantId, key: &str, now: OffsetDateTime) -> Option<u64> {
        match self.entitlement(tenant, key, now).map(|r| r.value) {
            Some(EntitlementValue::Limit(n)) => Some(n),
            Some(EntitlementValue::Unlimited) => None,
            Some(EntitlementValue::Enabled(_)) | None => Some(0),
        }
    }

    /// Checks that `requested` (the usage the caller is about to reach) is within the
    /// tenant's limit.
    pub fn check_limit(
        &self,
        tenant: TenantId,
        key: &str,
        requested: u64,
        now: OffsetDateTime,
    ) -> Result<(), LimitExceeded> {
        match self.limit(tenant, key, now) {
            Some(limit) if requested > limit => Err(LimitExceeded {
                key: key.to_owned(),
                limit,
                requested,
            }),
            _ => Ok(()),
        }
    }

    /// Resolves a setting: tenant value → region → plan → global default. `None` when
    /// there is no such setting.
    pub fn setting<'s>(
        &'s self,
        tenant: TenantId,
        key: &str,
    ) -> Option<Resolved<&'s serde_json::Value>> {
        let def = self.settings.get(key)?;
        let Some(t) = self.tenants.get(&tenant) else {
            return Some(Resolved {
                value: &def.default,
                layer: Layer::Global,
            });
        };
        if let Some(v) = t.data.settings.get(key) {
            return Some(Resolved {
                value: v,
                layer: Layer::Tenant,
            });
        }
        let at = |values: &'s LayerValues| values.settings.get(key);
        Some(
            self.region_or_plan(&t.data.attributes, at)
                .unwrap_or(Resolved {
                    value: &def.default,
                    layer: Layer::Global,
                }),
        )
    }
}

#[cfg(test)]
mod tests;
