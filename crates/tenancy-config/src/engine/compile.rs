//! Compiling configuration for evaluation: the snapshot's hash maps, each tenant's
//! overrides by key, targeting conditions with prepared operands, and flags with their
//! variants by index, rollout salt and the variants plans and regions force.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tenancy_core::{Placement, PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

use super::TenantData;
use crate::model::{
    Condition, CustomOp, EntitlementKey, Flag, FlagKey, Override, OverrideTarget, Plan,
    RegionLayer, Serve, SetOp, TagOp, TenantAttributes, TimeOp, VariantKey,
};

/// FxHash (rustc's hasher): a multiply-rotate per word, several times faster than SipHash
/// on the short keys looked up on every evaluation. Not DoS-resistant, which is fine here:
/// the keys are flag, plan and setting keys written by operators and tenant ids generated
/// by the catalog, never request-controlled strings.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FxHasher {
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
pub(super) type Map<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A tenant, compiled for lookups.
#[derive(Debug)]
pub struct TenantEntry {
    /// The loaded data.
    pub data: TenantData,
    /// Flag overrides by flag key, so the hot path does one lookup when there are any.
    pub(super) flag_overrides: Map<FlagKey, Override>,
    /// Entitlement overrides by key.
    pub(super) entitlement_overrides: Map<EntitlementKey, Override>,
}

impl TenantEntry {
    pub(super) fn new(data: TenantData) -> TenantEntry {
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
pub(super) enum CompiledCond {
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
    pub(super) fn holds(&self, t: &TenantAttributes) -> bool {
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
pub(super) enum CompiledServe {
    Variant(usize),
    /// (exclusive upper bucket bound, variant index), ascending.
    Rollout(Vec<(u32, usize)>),
}

#[derive(Debug)]
pub(super) struct CompiledRule {
    pub(super) conds: Vec<CompiledCond>,
    pub(super) serve: CompiledServe,
}

/// A flag compiled for evaluation: variants by index, rules with prepared operands, the
/// rollout hash state after the flag key, and the variants plans and regions force.
#[derive(Debug)]
pub struct CompiledFlag {
    /// The definition, as stored.
    pub def: Flag,
    pub(super) variants: Vec<(VariantKey, serde_json::Value)>,
    pub(super) default_idx: usize,
    pub(super) off_idx: usize,
    pub(super) rules: Vec<CompiledRule>,
    /// FNV-1a state after hashing the flag key: the per-flag salt of the rollout hash.
    pub(super) salt: u64,
    pub(super) by_plan: Map<PlanKey, usize>,
    pub(super) by_region: Map<RegionId, usize>,
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

pub(super) fn bucket_with_salt(salt: u64, tenant: TenantId) -> u32 {
    (mix(fnv(salt, tenant.as_uuid().as_bytes())) % 10_000) as u32
}

/// The rollout bucket (0..10,000) of `tenant` for `flag`: a stable hash of the flag key
/// and the tenant id, the same in every process, version and language that implements
/// it (FNV-1a 64 over `"<flag>:" ++ uuid bytes`, SplitMix64 finaliser, modulo 10,000).
pub fn rollout_bucket(flag: &str, tenant: TenantId) -> u32 {
    bucket_with_salt(salt_for(flag), tenant)
}

impl CompiledFlag {
    pub(super) fn compile(
        def: Flag,
        plans: &[Arc<Plan>],
        regions: &[Arc<RegionLayer>],
    ) -> CompiledFlag {
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
