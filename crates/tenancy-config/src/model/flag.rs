//! Flags: variants, targeting conditions over tenant attributes, rules and rollouts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenancy_core::{Placement, PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

use super::{invalid, FlagKey, ModelError, VariantKey};

/// Membership test for a set condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOp {
    /// The attribute is one of the values.
    In,
    /// The attribute is none of the values.
    NotIn,
}

/// Test on a tenant's tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagOp {
    /// The tenant has at least one of the tags.
    AnyOf,
    /// The tenant has every one of the tags.
    AllOf,
    /// The tenant has none of the tags.
    NoneOf,
}

/// Test on a tenant's creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeOp {
    /// Created strictly before the instant.
    Before,
    /// Created at or after the instant.
    After,
}

/// Test on a custom attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CustomOp {
    /// Equal to the value (JSON equality).
    Eq,
    /// Present and not equal to the value.
    NotEq,
    /// Equal to one of the values (the value is an array).
    In,
    /// Present and equal to none of the values (the value is an array).
    NotIn,
    /// A number greater than the value.
    Gt,
    /// A number greater than or equal to the value.
    Gte,
    /// A number less than the value.
    Lt,
    /// A number less than or equal to the value.
    Lte,
    /// A string containing the value, or an array containing it.
    Contains,
    /// Present at all (the value is ignored).
    Exists,
}

/// One targeting condition over a tenant attribute. A rule matches when all its
/// conditions hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "attribute", rename_all = "snake_case")]
pub enum Condition {
    /// The tenant's id.
    TenantId {
        /// In or not in.
        op: SetOp,
        /// Tenant ids.
        values: Vec<TenantId>,
    },
    /// The tenant's plan.
    Plan {
        /// In or not in.
        op: SetOp,
        /// Plans.
        values: Vec<PlanKey>,
    },
    /// The tenant's region.
    Region {
        /// In or not in.
        op: SetOp,
        /// Regions.
        values: Vec<RegionId>,
    },
    /// The tenant's placement.
    Placement {
        /// In or not in.
        op: SetOp,
        /// Placements.
        values: Vec<Placement>,
    },
    /// The tenant's tags.
    Tags {
        /// Any, all or none of.
        op: TagOp,
        /// Tags.
        values: Vec<String>,
    },
    /// When the tenant was created.
    CreatedAt {
        /// Before or after.
        op: TimeOp,
        /// The instant (RFC 3339).
        #[serde(with = "time::serde::rfc3339")]
        value: OffsetDateTime,
    },
    /// A custom attribute of the tenant.
    Custom {
        /// Attribute name.
        name: String,
        /// Test.
        op: CustomOp,
        /// Operand.
        #[serde(default)]
        value: serde_json::Value,
    },
}

/// One share of a percentage rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedVariant {
    /// Variant served to this share.
    pub variant: VariantKey,
    /// Share in basis points (1/100 of a percent); the weights of a rollout sum to 10,000.
    pub weight: u32,
}

/// What a matching rule serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Serve {
    /// Always this variant.
    Variant {
        /// The variant.
        variant: VariantKey,
    },
    /// A percentage rollout: the tenant's bucket (a stable hash of flag key and tenant id,
    /// 0..10,000) picks the share.
    Rollout {
        /// Shares, in order; weights sum to 10,000.
        weights: Vec<WeightedVariant>,
    },
}

/// A targeting rule: when every condition holds (an empty list always holds), serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Optional label shown by `explain`.
    #[serde(default)]
    pub name: String,
    /// Conditions, all of which must hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// What to serve.
    pub serve: Serve,
}

/// Boolean or multivariate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// Exactly two variants, `on` (true) and `off` (false).
    Boolean,
    /// Any number of named variants with JSON values.
    Multivariate,
}

/// A feature flag definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Key.
    pub key: FlagKey,
    /// Boolean or multivariate.
    pub kind: FlagKind,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
    /// Variants and their values.
    pub variants: BTreeMap<VariantKey, serde_json::Value>,
    /// Served when no rule matches.
    pub default_variant: VariantKey,
    /// Served when the kill switch is on, whatever the rules and overrides say.
    pub off_variant: VariantKey,
    /// The kill switch.
    #[serde(default)]
    pub killed: bool,
    /// Targeting rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl Flag {
    /// A boolean flag with variants `on`/`off`, default `off`, no rules.
    pub fn boolean(key: FlagKey) -> Flag {
        let on: VariantKey = VariantKey("on".into());
        let off: VariantKey = VariantKey("off".into());
        Flag {
            key,
            kind: FlagKind::Boolean,
            description: String::new(),
            variants: BTreeMap::from([
                (on, serde_json::Value::Bool(true)),
                (off.clone(), serde_json::Value::Bool(false)),
            ]),
            default_variant: off.clone(),
            off_variant: off,
            killed: false,
            rules: Vec::new(),
        }
    }

    /// Checks the definition: variants exist, weights sum to 10,000, a boolean flag has
    /// exactly `on: true` and `off: false`, custom conditions have usable operands.
    pub fn validate(&self) -> Result<(), ModelError> {
        let k = &self.key;
        if self.variants.is_empty() {
            return Err(invalid(format!("flag {k}: needs at least one variant")));
        }
        if self.kind == FlagKind::Boolean {
            let ok = self.variants.len() == 2
                && self.variants.get("on") == Some(&serde_json::Value::Bool(true))
                && self.variants.get("off") == Some(&serde_json::Value::Bool(false));
            if !ok {
                return Err(invalid(format!(
                    "flag {k}: a boolean flag has exactly the variants \"on\": true and \"off\": false"
                )));
            }
        }
        let known = |v: &VariantKey, what: &str| {
            if self.variants.contains_key(v) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "flag {k}: {what} names variant {v:?}, which is not defined"
                )))
            }
        };
        known(&self.default_variant, "default_variant")?;
        known(&self.off_variant, "off_variant")?;
        if self.description.len() > 2000 {
            return Err(invalid(format!(
                "flag {k}: description is longer than 2000 bytes"
            )));
        }
        if self.rules.len() > 200 {
            return Err(invalid(format!("flag {k}: more than 200 rules")));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            match &rule.serve {
                Serve::Variant { variant } => known(variant, &format!("rule {i}"))?,
                Serve::Rollout { weights } => {
                    if weights.is_empty() {
                        return Err(invalid(format!("flag {k}: rule {i} has an empty rollout")));
                    }
                    let mut sum = 0u64;
                    for w in weights {
                        known(&w.variant, &format!("rule {i}"))?;
                        sum += u64::from(w.weight);
                    }
                    if sum != 10_000 {
                        return Err(invalid(format!(
                            "flag {k}: rule {i}'s rollout weights sum to {sum}; they must sum to 10000 (basis points)"
                        )));
                    }
                }
            }
            for c in &rule.conditions {
                if let Condition::Custom { name, op, value } = c {
                    if name.is_empty() || name.len() > 64 {
                        return Err(invalid(format!(
                            "flag {k}: rule {i}: custom attribute names are 1 to 64 bytes"
                        )));
                    }
                    let ok = match op {
                        CustomOp::In | CustomOp::NotIn => value.is_array(),
                        CustomOp::Gt | CustomOp::Gte | CustomOp::Lt | CustomOp::Lte => {
                            value.is_number()
                        }
                        CustomOp::Contains => !value.is_null(),
                        CustomOp::Eq | CustomOp::NotEq | CustomOp::Exists => true,
                    };
                    if !ok {
                        return Err(invalid(format!(
                            "flag {k}: rule {i}: operator {op:?} on {name:?} needs {}",
                            match op {
                                CustomOp::In | CustomOp::NotIn => "an array value",
                                CustomOp::Contains => "a value",
                                _ => "a number value",
                            }
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_validation_catches_inconsistencies() {
        let key: FlagKey = "f".parse().expect("key");
        let mut f = Flag::boolean(key.clone());
        assert!(f.validate().is_ok());
        f.default_variant = "blue".parse().expect("variant");
        assert!(f.validate().is_err());
        let mut f = Flag::boolean(key.clone());
        f.rules.push(Rule {
            name: String::new(),
            conditions: vec![],
            serve: Serve::Rollout {
                weights: vec![WeightedVariant {
                    variant: "on".parse().expect("variant"),
                    weight: 5000,
                }],
            },
        });
        assert!(f.validate().expect_err("sum").to_string().contains("10000"));
        let mut f = Flag::boolean(key);
        f.variants
            .insert("maybe".parse().expect("v"), serde_json::json!(1));
        assert!(f.validate().is_err());
    }
}
