//! The configuration data model: keys, entitlements, plans, region layers, flags with
//! targeting rules, overrides, branding, domains and settings, each validated when built
//! or deserialized, so the engine and the store only ever see well-formed values.
//!
//! [`flag`] holds the targeting model, [`tenant`] what is configured per tenant; both are
//! re-exported here.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

mod flag;
mod tenant;

pub use flag::*;
pub use tenant::*;

use serde::{Deserialize, Serialize};
use tenancy_core::{PlanKey, RegionId};

/// Why a configuration value was refused. Messages say what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A key (flag, entitlement, setting, variant) breaks the key rules.
    #[error("{kind} key {value:?} is not allowed: use 1 to 64 characters from a-z, 0-9, '_', '-' and '.', starting with a letter")]
    Key {
        /// What the key names (flag, entitlement, setting, variant).
        kind: &'static str,
        /// The key given.
        value: String,
    },
    /// A value or definition is inconsistent; the message says how.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ModelError {
    ModelError::Invalid(msg.into())
}

fn key_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || b == b'.'
        })
}

macro_rules! key_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The key text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, ModelError> {
                if key_ok(s) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(ModelError::Key { kind: $kind, value: s.to_owned() })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = ModelError;
            fn try_from(s: String) -> Result<Self, ModelError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(k: $name) -> String {
                k.0
            }
        }

        // Lets maps keyed by this type be queried with a `&str` without allocating.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

key_newtype!(
    /// The key of a feature flag (`new-billing`, `search.v2`).
    FlagKey,
    "flag"
);
key_newtype!(
    /// The key of an entitlement: a boolean feature (`sso`) or a numeric limit (`seats`).
    EntitlementKey,
    "entitlement"
);
key_newtype!(
    /// The key of a typed tenant setting (`locale`, `invoice.footer`).
    SettingKey,
    "setting"
);
key_newtype!(
    /// The key of one variant of a flag (`on`, `off`, `blue`).
    VariantKey,
    "variant"
);

/// Whether an entitlement is a feature (on/off) or a numeric limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementKind {
    /// On or off (`sso`, `audit-log`).
    Feature,
    /// A number of something (`seats`, `projects`); `null` means unlimited.
    Limit,
}

impl EntitlementKind {
    /// The name the catalog stores.
    pub fn as_str(&self) -> &'static str {
        match self {
            EntitlementKind::Feature => "feature",
            EntitlementKind::Limit => "limit",
        }
    }

    /// From the name the catalog stores (its check constraint allows only the two).
    pub fn from_stored(s: &str) -> EntitlementKind {
        if s == "feature" {
            EntitlementKind::Feature
        } else {
            EntitlementKind::Limit
        }
    }
}

/// The value of an entitlement at some layer: `true`/`false` for a feature, a
/// non-negative integer or `null` (unlimited) for a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EntitlementValue {
    /// A feature's value.
    Enabled(bool),
    /// A limit's value.
    Limit(u64),
    /// A limit without bound (`null` in JSON).
    Unlimited,
}

impl EntitlementValue {
    /// Whether this value fits an entitlement of `kind`.
    pub fn fits(&self, kind: EntitlementKind) -> bool {
        matches!(
            (kind, self),
            (EntitlementKind::Feature, EntitlementValue::Enabled(_))
                | (
                    EntitlementKind::Limit,
                    EntitlementValue::Limit(_) | EntitlementValue::Unlimited
                )
        )
    }

    /// Whether the entitlement grants access at all: a feature that is on, or a limit
    /// above zero.
    pub fn grants(&self) -> bool {
        match self {
            EntitlementValue::Enabled(b) => *b,
            EntitlementValue::Limit(n) => *n > 0,
            EntitlementValue::Unlimited => true,
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            EntitlementValue::Enabled(b) => serde_json::Value::Bool(*b),
            EntitlementValue::Limit(n) => serde_json::Value::from(*n),
            EntitlementValue::Unlimited => serde_json::Value::Null,
        }
    }
}

/// The definition of an entitlement, with its global default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitlementDef {
    /// Key.
    pub key: EntitlementKey,
    /// Feature or limit.
    pub kind: EntitlementKind,
    /// The global layer: what a tenant gets when no plan, region or override says otherwise.
    pub default: EntitlementValue,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
}

impl EntitlementDef {
    /// Checks that the default fits the kind.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !self.default.fits(self.kind) {
            return Err(invalid(format!(
                "entitlement {}: default {} does not fit kind {:?} (a feature takes true/false, a limit a non-negative integer or null for unlimited)",
                self.key,
                self.default.to_json(),
                self.kind
            )));
        }
        Ok(())
    }
}

/// Values one layer (a plan or a region) sets for entitlements, settings and flags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerValues {
    /// Entitlement values at this layer.
    #[serde(default)]
    pub entitlements: BTreeMap<EntitlementKey, EntitlementValue>,
    /// Setting values at this layer (validated against each setting's schema).
    #[serde(default)]
    pub settings: BTreeMap<SettingKey, serde_json::Value>,
    /// Flag variants forced at this layer, ahead of the flag's own rules.
    #[serde(default)]
    pub flags: BTreeMap<FlagKey, VariantKey>,
}

/// A plan: a named bundle of entitlements (and setting defaults, forced flag variants).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Key (the `plan` of a catalog tenant).
    pub key: PlanKey,
    /// Human-readable name.
    pub display_name: String,
    /// The plan layer.
    #[serde(flatten)]
    pub values: LayerValues,
}

/// A region's layer, applied after the plan's (data-residency rules, regional defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionLayer {
    /// Region.
    pub region: RegionId,
    /// The region layer.
    #[serde(flatten)]
    pub values: LayerValues,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_table() {
        for ok in ["a", "new-billing", "search.v2", "seats_max"] {
            assert!(ok.parse::<FlagKey>().is_ok(), "{ok}");
        }
        for bad in ["", "A", "1x", "x y", &"x".repeat(65)] {
            assert!(bad.parse::<FlagKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn entitlement_values_round_trip_json() {
        for (json, v) in [
            ("true", EntitlementValue::Enabled(true)),
            ("5", EntitlementValue::Limit(5)),
            ("null", EntitlementValue::Unlimited),
        ] {
            let parsed: EntitlementValue = serde_json::from_str(json).expect(json);
            assert_eq!(parsed, v);
            assert_eq!(serde_json::to_string(&v).expect("ser"), json);
        }
        assert!(serde_json::from_str::<EntitlementValue>("-1").is_err());
        assert!(EntitlementValue::Limit(0).fits(EntitlementKind::Limit));
        assert!(!EntitlementValue::Limit(0).fits(EntitlementKind::Feature));
    }
}
