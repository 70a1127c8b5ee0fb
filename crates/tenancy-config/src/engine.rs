//! The pure evaluation engine: an immutable [`Snapshot`] of all configuration, compiled
//! for fast lookups, and the resolution of flags, entitlements and settings for a tenant
//! through the layers global → plan → region → tenant override, with [`Explanation`]s.
//!
//! No IO happens here: no database, no network, no clock. The caller passes `now` (used
//! only for override expiry), which keeps every evaluation deterministic and testable.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::Serialize;
use tenancy_core::{Placement, PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

use crate::model::{
    Branding, Condition, CustomOp, Domain, DomainState, EntitlementDef, EntitlementKey,
    EntitlementValue, Flag, FlagKey, Override, OverrideTarget, Plan, RegionLayer, Serve, SetOp,
    SettingDef, SettingKey, TagOp, TenantAttributes, TimeOp, VariantKey,
};

/// FxHash (rustc's hasher): a multiply-rotate per word, several times faster than SipHash
/// on the short keys looked up on every evaluation. Not DoS-resistant, which is fine here:
/// the keys are flag, plan and setting keys written by operators and tenant ids generated
/// by the catalog, never request-controlled strings.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// The maps of the snapshot.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

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

/// A tenant, compiled for lookups.
#[derive(Debug)]
pub struct TenantEntry {
    /// The loaded data.
    pub data: TenantData,
    /// Flag overrides by flag key, so the hot path does one lookup when there are any.
    flag_overrides: Map<FlagKey, Override>,
    /// Entitlement overrides by key.
    entitlement_overrides: Map<EntitlementKey, Override>,
}

impl TenantEntry {
    fn new(data: TenantData) -> TenantEntry {
        let mut flag_overrides = Map::default();
        let mut entitlement_overrides = Map::default();
        for o in &data.overrides {
            match &o.target {
                OverrideTarget::Flag(k) => {
                    flag_overrides.insert(k.clone(), o.clone());
                }
                OverrideTarget::Entitlement(k) => {
                    entitlement_overrides.insert(k.clone(), o.clone());
                }
            }
        }
        TenantEntry {
            data,
            flag_overrides,
            entitlement_overrides,
        }
    }
}

/// One custom-attribute test, with its operand prepared.
#[derive(Debug)]
enum CompiledCond {
    Tenant(bool, Vec<TenantId>),
    Plan(bool, Vec<PlanKey>),
    Region(bool, Vec<RegionId>),
    Placement(bool, [bool; 3]),
    Tags(TagOp, Vec<String>),
    CreatedBefore(OffsetDateTime),
    CreatedAtOrAfter(OffsetDateTime),
    Custom {
        name: String,
        op: CustomOp,
        value: serde_json::Value,
        number: f64,
    },
}

fn placement_index(p: Placement) -> usize {
    match p {
        Placement::Pooled => 0,
        Placement::Schema => 1,
        Placement::Dedicated => 2,
    }
}

fn compile_cond(c: &Condition) -> CompiledCond {
    let neg = |op: &SetOp| *op == SetOp::NotIn;
    match c {
        Condition::TenantId { op, values } => CompiledCond::Tenant(neg(op), values.clone()),
        Condition::Plan { op, values } => CompiledCond::Plan(neg(op), values.clone()),
        Condition::Region { op, values } => CompiledCond::Region(neg(op), values.clone()),
        Condition::Placement { op, values } => {
            let mut mask = [false; 3];
            for p in values {
                mask[placement_index(*p)] = true;
            }
            CompiledCond::Placement(neg(op), mask)
        }
        Condition::Tags { op, values } => CompiledCond::Tags(*op, values.clone()),
        Condition::CreatedAt { op, value } => match op {
            TimeOp::Before => CompiledCond::CreatedBefore(*value),
            TimeOp::After => CompiledCond::CreatedAtOrAfter(*value),
        },
        Condition::Custom { name, op, value } => CompiledCond::Custom {
            name: name.clone(),
            op: *op,
            value: value.clone(),
            number: value.as_f64().unwrap_or(f64::NAN),
        },
    }
}

fn json_eq_loose(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    // 3 and 3.0 are the same number to a person writing a rule.
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl CompiledCond {
    fn holds(&self, t: &TenantAttributes) -> bool {
        match self {
            CompiledCond::Tenant(neg, v) => v.contains(&t.id) != *neg,
            CompiledCond::Plan(neg, v) => v.contains(&t.plan) != *neg,
            CompiledCond::Region(neg, v) => v.contains(&t.region) != *neg,
            CompiledCond::Placement(neg, mask) => mask[placement_index(t.placement)] != *neg,
            CompiledCond::Tags(op, wanted) => {
                let has = |w: &String| t.tags.binary_search(w).is_ok();
                match op {
                    TagOp::AnyOf => wanted.iter().any(has),
                    TagOp::AllOf => wanted.iter().all(has),
                    TagOp::NoneOf => !wanted.iter().any(has),
                }
            }
            CompiledCond::CreatedBefore(at) => t.created_at < *at,
            CompiledCond::CreatedAtOrAfter(at) => t.created_at >= *at,
            CompiledCond::Custom {
                name,
                op,
                value,
                number,
            } => {
                let Some(actual) = t.custom.get(name) else {
                    return false;
                };
                match op {
                    CustomOp::Exists => true,
                    CustomOp::Eq => json_eq_loose(actual, value),
                    CustomOp::NotEq => !json_eq_loose(actual, value),
                    CustomOp::In => value
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| json_eq_loose(actual, v))),
                    CustomOp::NotIn => !value
                        .as_array()
                        .is_some_and(|vs| vs.iter().any(|v| json_eq_loose(actual, v))),
                    CustomOp::Gt => actual.as_f64().is_some_and(|a| a > *number),
                    CustomOp::Gte => actual.as_f64().is_some_and(|a| a >= *number),
                    CustomOp::Lt => actual.as_f64().is_some_and(|a| a < *number),
                    CustomOp::Lte => actual.as_f64().is_some_and(|a| a <= *number),
                    CustomOp::Contains => match (actual, value) {
                        (serde_json::Value::String(a), serde_json::Value::String(v)) => {
                            a.contains(v.as_str())
                        }
                        (serde_json::Value::Array(a), v) => a.iter().any(|x| json_eq_loose(x, v)),
                        _ => false,
                    },
                }
            }
        }
    }
}

#[derive(Debug)]
enum CompiledServe {
    Variant(usize),
    /// (exclusive upper bucket bound, variant index), ascending.
    Rollout(Vec<(u32, usize)>),
}

#[derive(Debug)]
struct CompiledRule {
    conds: Vec<CompiledCond>,
    serve: CompiledServe,
}

/// A flag compiled for evaluation: variants by index, rules with prepared operands, the
/// rollout hash state after the flag key, and the variants plans and regions force.
#[derive(Debug)]
pub struct CompiledFlag {
    /// The definition, as stored.
    pub def: Flag,
    variants: Vec<(VariantKey, serde_json::Value)>,
    default_idx: usize,
    off_idx: usize,
    rules: Vec<CompiledRule>,
    /// FNV-1a state after hashing the flag key: the per-flag salt of the rollout hash.
    salt: u64,
    by_plan: Map<PlanKey, usize>,
    by_region: Map<RegionId, usize>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn salt_for(flag: &str) -> u64 {
    fnv(fnv(FNV_OFFSET, flag.as_bytes()), b":")
}

fn bucket_with_salt(salt: u64, tenant: TenantId) -> u32 {
    (mix(fnv(salt, tenant.as_uuid().as_bytes())) % 10_000) as u32
}

/// The rollout bucket (0..10,000) of `tenant` for `flag`: a stable hash of the flag key
/// and the tenant id, the same in every process, version and language that implements
/// it (FNV-1a 64 over `"<flag>:" ++ uuid bytes`, SplitMix64 finaliser, modulo 10,000).
pub fn rollout_bucket(flag: &str, tenant: TenantId) -> u32 {
    bucket_with_salt(salt_for(flag), tenant)
}

impl CompiledFlag {
    fn compile(def: Flag, plans: &[Arc<Plan>], regions: &[Arc<RegionLayer>]) -> CompiledFlag {
        let variants: Vec<(VariantKey, serde_json::Value)> = def
            .variants
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Validated definitions name only existing variants; 0 is a safe fallback for
        // data that bypassed validation.
        let idx = |k: &VariantKey| variants.iter().position(|(v, _)| v == k).unwrap_or(0);
        let rules = def
            .rules
            .iter()
            .map(|r| CompiledRule {
                conds: r.conditions.iter().map(compile_cond).collect(),
                serve: match &r.serve {
                    Serve::Variant { variant } => CompiledServe::Variant(idx(variant)),
                    Serve::Rollout { weights } => {
                        let mut upper = 0u32;
                        CompiledServe::Rollout(
                            weights
                                .iter()
                                .map(|w| {
                                    upper += w.weight;
                                    (upper, idx(&w.variant))
                                })
                                .collect(),
                        )
                    }
                },
            })
            .collect();
        let mut by_plan = Map::default();
        for p in plans {
            if let Some(v) = p.values.flags.get(&def.key) {
                if def.variants.contains_key(v) {
                    by_plan.insert(p.key.clone(), idx(v));
                }
            }
        }
        let mut by_region = Map::default();
        for r in regions {
            if let Some(v) = r.values.flags.get(&def.key) {
                if def.variants.contains_key(v) {
                    by_region.insert(r.region.clone(), idx(v));
                }
            }
        }
        CompiledFlag {
            default_idx: idx(&def.default_variant),
            off_idx: idx(&def.off_variant),
            salt: salt_for(def.key.as_str()),
            variants,
            rules,
            by_plan,
            by_region,
            def,
        }
    }
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

/// One layer looked at while resolving a value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerStep {
    /// Which layer.
    pub layer: Layer,
    /// What exactly (`plan pro`, `region eu-west`, `override`, `rule 2`).
    pub source: String,
    /// The value this layer sets, if it sets one.
    pub value: Option<serde_json::Value>,
    /// Extra facts: an override's reason and expiry, an expired override that was skipped.
    pub note: Option<String>,
}

/// How a value was resolved, for people and for the `explain` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `flag`, `entitlement` or `setting`.
    pub kind: &'static str,
    /// The key.
    pub key: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The resolved value.
    pub value: serde_json::Value,
    /// The layer that decided it.
    pub decided_by: Layer,
    /// One sentence saying why.
    pub detail: String,
    /// Every layer consulted, from global to tenant.
    pub layers: Vec<LayerStep>,
}

/// Why an explanation could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// No flag, entitlement or setting with that key.
    #[error("no {kind} named {key:?}")]
    UnknownKey {
        /// What was looked for.
        kind: &'static str,
        /// Its key.
        key: String,
    },
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
        let attrs = &t.data.attributes;
        if let Some(v) = self
            .regions
            .get(&attrs.region)
            .and_then(|r| r.values.entitlements.get(key))
            .filter(|v| v.fits(def.kind))
        {
            return Some(Resolved {
                value: *v,
                layer: Layer::Region,
            });
        }
        if let Some(v) = self
            .plans
            .get(&attrs.plan)
            .and_then(|p| p.values.entitlements.get(key))
            .filter(|v| v.fits(def.kind))
        {
            return Some(Resolved {
                value: *v,
                layer: Layer::Plan,
            });
        }
        Some(Resolved {
            value: def.default,
            layer: Layer::Global,
        })
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
    pub fn setting(&self, tenant: TenantId, key: &str) -> Option<Resolved<&serde_json::Value>> {
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
        let attrs = &t.data.attributes;
        if let Some(v) = self
            .regions
            .get(&attrs.region)
            .and_then(|r| r.values.settings.get(key))
        {
            return Some(Resolved {
                value: v,
                layer: Layer::Region,
            });
        }
        if let Some(v) = self
            .plans
            .get(&attrs.plan)
            .and_then(|p| p.values.settings.get(key))
        {
            return Some(Resolved {
                value: v,
                layer: Layer::Plan,
            });
        }
        Some(Resolved {
            value: &def.default,
            layer: Layer::Global,
        })
    }

    /// Explains how a flag resolves for a tenant.
    pub fn explain_flag(
        &self,
        tenant: TenantId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Explanation, ExplainError> {
        let f = self
            .flags
            .get(key)
            .ok_or_else(|| ExplainError::UnknownKey {
                kind: "flag",
                key: key.to_owned(),
            })?;
        let (idx, reason) = self.flag_index(f, tenant, now);
        let (variant, value) = &f.variants[idx];
        let t = self.tenants.get(&tenant);
        let mut layers = Vec::new();
        let rule_source = match reason {
            FlagReason::Rule { index, .. } => {
                let name = &f.def.rules[index].name;
                if name.is_empty() {
                    format!("rule {index}")
                } else {
                    format!("rule {index} ({name})")
                }
            }
            _ => "rules".to_owned(),
        };
        layers.push(LayerStep {
            layer: Layer::Global,
            source: if f.def.killed {
                "kill switch".to_owned()
            } else {
                rule_source.clone()
            },
            value: match reason {
                FlagReason::KillSwitch
                | FlagReason::Rule { .. }
                | FlagReason::Default
                | FlagReason::UnknownTenant => Some(serde_json::json!(variant.as_str())),
                _ => None,
            },
            note: match reason {
                FlagReason::Rule {
                    bucket: Some(b), ..
                } => Some(format!("rollout bucket {b} of 10000")),
                _ => None,
            },
        });
        if let Some(t) = t {
            let attrs = &t.data.attributes;
            layers.push(LayerStep {
                layer: Layer::Plan,
                source: format!("plan {}", attrs.plan),
                value: f
                    .by_plan
                    .get(&attrs.plan)
                    .map(|i| serde_json::json!(f.variants[*i].0.as_str())),
                note: None,
            });
            layers.push(LayerStep {
                layer: Layer::Region,
                source: format!("region {}", attrs.region),
                value: f
                    .by_region
                    .get(&attrs.region)
                    .map(|i| serde_json::json!(f.variants[*i].0.as_str())),
                note: None,
            });
            let o = t.flag_overrides.get(key);
            layers.push(override_step(o, now));
        }
        let detail = match reason {
            FlagReason::KillSwitch => format!(
                "the kill switch of {key} is on, so it serves its off variant {variant:?} to everyone"
            ),
            FlagReason::Override => format!("a tenant override serves {variant:?}"),
            FlagReason::Region => format!("the tenant's region forces {variant:?}"),
            FlagReason::Plan => format!("the tenant's plan forces {variant:?}"),
            FlagReason::Rule { bucket: None, .. } => {
                format!("{rule_source} matched and serves {variant:?}")
            }
            FlagReason::Rule {
                bucket: Some(b), ..
            } => format!(
                "{rule_source} matched; its rollout puts bucket {b} in the share of {variant:?}"
            ),
            FlagReason::Default => format!("no rule matched; the default variant {variant:?}"),
            FlagReason::UnknownTenant => format!(
                "the tenant is not in the configuration snapshot; the default variant {variant:?}"
            ),
        };
        Ok(Explanation {
            kind: "flag",
            key: key.to_owned(),
            tenant_id: tenant,
            value: value.clone(),
            decided_by: reason.layer(),
            detail,
            layers,
        })
    }

    /// Explains how an entitlement resolves for a tenant.
    pub fn explain_entitlement(
        &self,
        tenant: TenantId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Explanation, ExplainError> {
        let unknown = || ExplainError::UnknownKey {
            kind: "entitlement",
            key: key.to_owned(),
        };
        let def = self.entitlements.get(key).ok_or_else(unknown)?;
        let r = self.entitlement(tenant, key, now).ok_or_else(unknown)?;
        let mut layers = vec![LayerStep {
            layer: Layer::Global,
            source: "default".into(),
            value: Some(def.default.to_json()),
            note: None,
        }];
        if let Some(t) = self.tenants.get(&tenant) {
            let attrs = &t.data.attributes;
            layers.push(LayerStep {
                layer: Layer::Plan,
                source: format!("plan {}", attrs.plan),
                value: self
                    .plans
                    .get(&attrs.plan)
                    .and_then(|p| p.values.entitlements.get(key))
                    .map(|v| v.to_json()),
                note: None,
            });
            layers.push(LayerStep {
                layer: Layer::Region,
                source: format!("region {}", attrs.region),
                value: self
                    .regions
                    .get(&attrs.region)
                    .and_then(|p| p.values.entitlements.get(key))
                    .map(|v| v.to_json()),
                note: None,
            });
            layers.push(override_step(t.entitlement_overrides.get(key), now));
        }
        Ok(Explanation {
            kind: "entitlement",
            key: key.to_owned(),
            tenant_id: tenant,
            value: r.value.to_json(),
            decided_by: r.layer,
            detail: format!("decided by the {} layer", layer_name(r.layer)),
            layers,
        })
    }

    /// Explains how a setting resolves for a tenant.
    pub fn explain_setting(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Explanation, ExplainError> {
        let unknown = || ExplainError::UnknownKey {
            kind: "setting",
            key: key.to_owned(),
        };
        let def = self.settings.get(key).ok_or_else(unknown)?;
        let r = self.setting(tenant, key).ok_or_else(unknown)?;
        let mut layers = vec![LayerStep {
            layer: Layer::Global,
            source: "default".into(),
            value: Some(def.default.clone()),
            note: None,
        }];
        if let Some(t) = self.tenants.get(&tenant) {
            let attrs = &t.data.attributes;
            layers.push(LayerStep {
                layer: Layer::Plan,
                source: format!("plan {}", attrs.plan),
                value: self
                    .plans
                    .get(&attrs.plan)
                    .and_then(|p| p.values.settings.get(key))
                    .cloned(),
                note: None,
            });
            layers.push(LayerStep {
                layer: Layer::Region,
                source: format!("region {}", attrs.region),
                value: self
                    .regions
                    .get(&attrs.region)
                    .and_then(|p| p.values.settings.get(key))
                    .cloned(),
                note: None,
            });
            layers.push(LayerStep {
                layer: Layer::Tenant,
                source: "tenant setting".into(),
                value: t.data.settings.get(key).cloned(),
                note: None,
            });
        }
        Ok(Explanation {
            kind: "setting",
            key: key.to_owned(),
            tenant_id: tenant,
            value: r.value.clone(),
            decided_by: r.layer,
            detail: format!("decided by the {} layer", layer_name(r.layer)),
            layers,
        })
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Global => "global",
        Layer::Plan => "plan",
        Layer::Region => "region",
        Layer::Tenant => "tenant",
    }
}

fn override_step(o: Option<&Override>, now: OffsetDateTime) -> LayerStep {
    let fmt_time = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    match o {
        None => LayerStep {
            layer: Layer::Tenant,
            source: "override".into(),
            value: None,
            note: None,
        },
        Some(o) if o.active_at(now) => LayerStep {
            layer: Layer::Tenant,
            source: "override".into(),
            value: Some(o.value.clone()),
            note: Some(match o.expires_at {
                Some(e) => format!(
                    "set by {} because {:?}; expires {}",
                    o.created_by,
                    o.reason,
                    fmt_time(e)
                ),
                None => format!("set by {} because {:?}; no expiry", o.created_by, o.reason),
            }),
        },
        Some(o) => LayerStep {
            layer: Layer::Tenant,
            source: "override".into(),
            value: None,
            note: Some(format!(
                "an override ({:?}) expired at {} and is ignored",
                o.reason,
                o.expires_at.map(fmt_time).unwrap_or_default()
            )),
        },
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
