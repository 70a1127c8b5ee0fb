//! Explanations: which layer decided a flag, entitlement or setting for a tenant, and
//! what every layer on the way says. One walker goes global → plan → region → tenant for
//! all three kinds.

use serde::Serialize;
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::{CompiledFlag, FlagReason, Layer, Snapshot, TenantEntry};
use crate::model::{LayerValues, Override};

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

impl Snapshot {
    /// Explains how a flag resolves for a tenant.
    pub fn explain_flag(
        &self,
        tenant: TenantId,
        key: &str,
        now: OffsetDateTime,
    ) -> Result<Explanation, ExplainError> {
        let f = self.flags.get(key).ok_or_else(|| unknown("flag", key))?;
        let (idx, reason) = self.flag_index(f, tenant, now);
        let (variant, value) = &f.variants[idx];
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
        let global = LayerStep {
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
        };
        let layers = self.walk_layers(
            tenant,
            global,
            |values| forced_variant(f, values),
            |t| override_step(t.flag_overrides.get(key), now),
        );
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
        let def = self
            .entitlements
            .get(key)
            .ok_or_else(|| unknown("entitlement", key))?;
        let r = self
            .entitlement(tenant, key, now)
            .ok_or_else(|| unknown("entitlement", key))?;
        let layers = self.walk_layers(
            tenant,
            default_step(def.default.to_json()),
            |values| values.entitlements.get(key).map(|v| v.to_json()),
            |t| override_step(t.entitlement_overrides.get(key), now),
        );
        Ok(decided(
            "entitlement",
            key,
            tenant,
            r.value.to_json(),
            r.layer,
            layers,
        ))
    }

    /// Explains how a setting resolves for a tenant.
    pub fn explain_setting(
        &self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Explanation, ExplainError> {
        let def = self
            .settings
            .get(key)
            .ok_or_else(|| unknown("setting", key))?;
        let r = self
            .setting(tenant, key)
            .ok_or_else(|| unknown("setting", key))?;
        let layers = self.walk_layers(
            tenant,
            default_step(def.default.clone()),
            |values| values.settings.get(key).cloned(),
            |t| LayerStep {
                layer: Layer::Tenant,
                source: "tenant setting".into(),
                value: t.data.settings.get(key).cloned(),
                note: None,
            },
        );
        Ok(decided(
            "setting",
            key,
            tenant,
            r.value.clone(),
            r.layer,
            layers,
        ))
    }

    /// The layers of one key for one tenant, global → plan → region → tenant: `global`
    /// as given, the value `at` reads from the tenant's plan layer and from its region
    /// layer, and the tenant's own step as `tenant_step` makes it. A tenant the snapshot
    /// does not know has the global layer only.
    fn walk_layers(
        &self,
        tenant: TenantId,
        global: LayerStep,
        at: impl Fn(&LayerValues) -> Option<serde_json::Value>,
        tenant_step: impl FnOnce(&TenantEntry) -> LayerStep,
    ) -> Vec<LayerStep> {
        let mut layers = vec![global];
        let Some(t) = self.tenants.get(&tenant) else {
            return layers;
        };
        let attrs = &t.data.attributes;
        layers.push(LayerStep {
            layer: Layer::Plan,
            source: format!("plan {}", attrs.plan),
            value: self.plans.get(&attrs.plan).and_then(|p| at(&p.values)),
            note: None,
        });
        layers.push(LayerStep {
            layer: Layer::Region,
            source: format!("region {}", attrs.region),
            value: self.regions.get(&attrs.region).and_then(|r| at(&r.values)),
            note: None,
        });
        layers.push(tenant_step(t));
        layers
    }
}

fn unknown(kind: &'static str, key: &str) -> ExplainError {
    ExplainError::UnknownKey {
        kind,
        key: key.to_owned(),
    }
}

/// The variant a plan or region layer forces for a flag, if it names one the flag has.
fn forced_variant(f: &CompiledFlag, values: &LayerValues) -> Option<serde_json::Value> {
    values
        .flags
        .get(&f.def.key)
        .filter(|v| f.def.variants.contains_key(*v))
        .map(|v| serde_json::json!(v.as_str()))
}

/// The global layer of an entitlement or setting: its default.
fn default_step(value: serde_json::Value) -> LayerStep {
    LayerStep {
        layer: Layer::Global,
        source: "default".into(),
        value: Some(value),
        note: None,
    }
}

/// The explanation of a value resolved through the layers.
fn decided(
    kind: &'static str,
    key: &str,
    tenant: TenantId,
    value: serde_json::Value,
    layer: Layer,
    layers: Vec<LayerStep>,
) -> Explanation {
    Explanation {
        kind,
        key: key.to_owned(),
        tenant_id: tenant,
        value,
        decided_by: layer,
        detail: format!("decided by the {} layer", layer_name(layer)),
        layers,
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
