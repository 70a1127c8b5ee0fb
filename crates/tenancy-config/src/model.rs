//! The configuration data model: keys, entitlements, plans, region layers, flags with
//! targeting rules, overrides, branding, domains and settings, each validated when built
//! or deserialized, so the engine and the store only ever see well-formed values.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::{Placement, PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

/// Why a configuration value was refused. Messages say what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A key (flag, entitlement, setting, variant) breaks the key rules.
    #[error("{kind} key {value:?} is not allowed: use 1 to 64 characters from a-z, 0-9, '_', '-' and '.', starting with a letter")]
    Key { kind: &'static str, value: String },
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

/// What an override targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum OverrideTarget {
    /// A flag; the value is a variant key (a JSON string).
    Flag(FlagKey),
    /// An entitlement; the value is an entitlement value.
    Entitlement(EntitlementKey),
}

/// A per-tenant override: the tenant layer, with a mandatory reason and an optional expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Tenant.
    pub tenant_id: TenantId,
    /// What is overridden.
    pub target: OverrideTarget,
    /// The value.
    pub value: serde_json::Value,
    /// Why (shown by `explain`, recorded in the change log).
    pub reason: String,
    /// When it stops applying; `None` means never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Who set it.
    pub created_by: String,
}

impl Override {
    /// Whether the override still applies at `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// A tenant's white-label branding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branding {
    /// Product name shown to the tenant's users.
    pub display_name: String,
    /// Main colour, `#rrggbb`.
    pub primary_color: String,
    /// Accent colour, `#rrggbb`.
    pub accent_color: String,
    /// Logo, an `https` URL.
    pub logo_url: Option<String>,
    /// Name on outgoing email.
    pub email_from_name: String,
    /// Address on outgoing email.
    pub email_from_address: String,
}

fn color_ok(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a DNS hostname we accept for domains and email: lowercase labels of
/// a-z, 0-9 and '-', not starting or ending with '-', at least two labels, at most 253
/// bytes.
pub fn hostname_ok(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 || !s.contains('.') {
        return false;
    }
    s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && s
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_lowercase()))
}

impl Branding {
    /// Checks every field; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<(), ModelError> {
        let name = self.display_name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "branding display_name must be 1 to 100 characters without control characters",
            ));
        }
        for (field, c) in [
            ("primary_color", &self.primary_color),
            ("accent_color", &self.accent_color),
        ] {
            if !color_ok(c) {
                return Err(invalid(format!(
                    "branding {field} {c:?} must be a hex colour like #1a2b3c"
                )));
            }
        }
        if let Some(logo) = &self.logo_url {
            let parsed = url::Url::parse(logo)
                .map_err(|_| invalid(format!("branding logo_url {logo:?} is not a valid URL")))?;
            let host_ok = parsed.host_str().is_some_and(|h| !h.is_empty());
            if parsed.scheme() != "https"
                || !host_ok
                || !parsed.username().is_empty()
                || parsed.password().is_some()
                || logo.len() > 2048
            {
                return Err(invalid(format!(
                    "branding logo_url {logo:?} must be an https URL with a host, without credentials, at most 2048 bytes"
                )));
            }
        }
        let from_name = self.email_from_name.trim();
        if from_name.is_empty()
            || from_name.chars().count() > 100
            || from_name
                .chars()
                .any(|c| c.is_control() || matches!(c, '<' | '>' | '"' | ','))
        {
            return Err(invalid(
                "branding email_from_name must be 1 to 100 characters without control characters or < > \" ,",
            ));
        }
        let addr = &self.email_from_address;
        let ok = addr.len() <= 254
            && addr.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && local.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
                    })
                    && !local.starts_with('.')
                    && !local.ends_with('.')
                    && !local.contains("..")
                    && hostname_ok(domain)
            });
        if !ok {
            return Err(invalid(format!(
                "branding email_from_address {addr:?} must be an address like billing@example.com (lowercase domain)"
            )));
        }
        Ok(())
    }
}

/// Where a custom domain is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Claimed; waiting for the TXT record.
    Pending,
    /// Ownership proven; requests to it resolve to the tenant.
    Verified,
    /// Verified once, now switched off (by the tenant or an operator).
    Disabled,
}

impl DomainState {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::Verified => "verified",
            DomainState::Disabled => "disabled",
        }
    }
}

impl FromStr for DomainState {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "pending" => Ok(DomainState::Pending),
            "verified" => Ok(DomainState::Verified),
            "disabled" => Ok(DomainState::Disabled),
            _ => Err(invalid(format!(
                "domain state {s:?} is unknown; expected pending, verified or disabled"
            ))),
        }
    }
}

/// A tenant's custom domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Hostname, lowercase (`app.acme.com`).
    pub hostname: String,
    /// Lifecycle state.
    pub state: DomainState,
    /// The token the TXT record must carry.
    pub token: String,
    /// When ownership was last proven.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// Why the last check failed, if it did.
    pub last_error: Option<String>,
}

impl Domain {
    /// The DNS name that must hold the TXT record.
    pub fn challenge_name(&self) -> String {
        format!("_tenancy-challenge.{}", self.hostname)
    }

    /// The TXT record value that proves ownership.
    pub fn challenge_value(&self) -> String {
        format!("tenancy-domain-verification={}", self.token)
    }
}

/// Parses and normalises a custom hostname (lowercase, no trailing dot).
pub fn parse_hostname(s: &str) -> Result<String, ModelError> {
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if hostname_ok(&h) {
        Ok(h)
    } else {
        Err(invalid(format!(
            "hostname {s:?} is not a valid DNS name (labels of a-z, 0-9 and '-', at least two labels)"
        )))
    }
}

/// The definition of a typed setting: a JSON Schema and a global default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingDef {
    /// Key.
    pub key: SettingKey,
    /// JSON Schema every value of this setting must satisfy.
    pub schema: serde_json::Value,
    /// The global layer.
    pub default: serde_json::Value,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
}

impl SettingDef {
    /// Compiles the schema; refuses an invalid schema or a default that breaks it.
    pub fn compile(&self) -> Result<jsonschema::Validator, ModelError> {
        let v = jsonschema::validator_for(&self.schema).map_err(|e| {
            invalid(format!(
                "setting {}: schema is not a valid JSON Schema: {e}",
                self.key
            ))
        })?;
        check_against(&v, &self.key, &self.default)?;
        Ok(v)
    }
}

/// Checks `value` against a compiled setting schema.
pub fn check_against(
    v: &jsonschema::Validator,
    key: &SettingKey,
    value: &serde_json::Value,
) -> Result<(), ModelError> {
    let errors: Vec<String> = v
        .iter_errors(value)
        .take(5)
        .map(|e| format!("{} (at {})", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!(
            "setting {key}: value does not match its schema: {}",
            errors.join("; ")
        )))
    }
}

/// The attributes of a tenant that targeting rules look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantAttributes {
    /// Id (also the rollout key).
    pub id: TenantId,
    /// Plan (from the catalog).
    pub plan: PlanKey,
    /// Region (from the catalog).
    pub region: RegionId,
    /// Placement (from the catalog).
    pub placement: Placement,
    /// Creation time (from the catalog).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Free-form tags, sorted and deduplicated.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Custom attributes.
    #[serde(default)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// Checks tags and custom attributes a caller wants to set on a tenant.
pub fn validate_tags_and_custom(
    tags: &[String],
    custom: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ModelError> {
    if tags.len() > 100 {
        return Err(invalid("at most 100 tags"));
    }
    for t in tags {
        if !key_ok(t) {
            return Err(invalid(format!(
                "tag {t:?} is not allowed: use 1 to 64 characters from a-z, 0-9, '_', '-' and '.', starting with a letter"
            )));
        }
    }
    if custom.len() > 100 {
        return Err(invalid("at most 100 custom attributes"));
    }
    for k in custom.keys() {
        if k.is_empty() || k.len() > 64 {
            return Err(invalid(format!(
                "custom attribute name {k:?} must be 1 to 64 bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branding() -> Branding {
        Branding {
            display_name: "Acme Cloud".into(),
            primary_color: "#112233".into(),
            accent_color: "#abcdef".into(),
            logo_url: Some("https://cdn.acme.com/logo.svg".into()),
            email_from_name: "Acme Billing".into(),
            email_from_address: "billing@acme.com".into(),
        }
    }

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
    fn branding_is_validated_field_by_field() {
        assert!(branding().validate().is_ok());
        type Case = (fn(&mut Branding), &'static str);
        let cases: Vec<Case> = vec![
            (|b| b.display_name = "  ".into(), "display_name"),
            (|b| b.primary_color = "red".into(), "primary_color"),
            (|b| b.accent_color = "#12345g".into(), "accent_color"),
            (
                |b| b.logo_url = Some("http://acme.com/l.png".into()),
                "logo_url",
            ),
            (
                |b| b.logo_url = Some("https://u:p@acme.com/l.png".into()),
                "logo_url",
            ),
            (|b| b.logo_url = Some("not a url".into()), "logo_url"),
            (|b| b.email_from_name = "A <b>".into(), "email_from_name"),
            (
                |b| b.email_from_address = "billing".into(),
                "email_from_address",
            ),
            (
                |b| b.email_from_address = "a@localhost".into(),
                "email_from_address",
            ),
        ];
        for (mutate, field) in cases {
            let mut b = branding();
            mutate(&mut b);
            let err = b.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            parse_hostname("App.Acme.COM.").ok().as_deref(),
            Some("app.acme.com")
        );
        for bad in ["acme", "-a.com", "a..com", "a_b.com", "1.2.3.4", ""] {
            assert!(parse_hostname(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn setting_schema_is_enforced() {
        let def = SettingDef {
            key: "locale".parse().expect("key"),
            schema: serde_json::json!({"type": "string", "enum": ["en", "fr"]}),
            default: serde_json::json!("en"),
            description: String::new(),
        };
        let v = def.compile().expect("compiles");
        assert!(check_against(&v, &def.key, &serde_json::json!("fr")).is_ok());
        assert!(check_against(&v, &def.key, &serde_json::json!("de")).is_err());
        let bad_default = SettingDef {
            default: serde_json::json!(3),
            ..def.clone()
        };
        assert!(bad_default.compile().is_err());
        let bad_schema = SettingDef {
            schema: serde_json::json!({"type": 12}),
            ..def
        };
        assert!(bad_schema.compile().is_err());
    }
}
