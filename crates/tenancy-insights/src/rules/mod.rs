//! Configuration and provisioning anomalies: rules declared in configuration over the
//! catalog and the configuration service, and learned detectors over provisioning history
//! and the configuration change log. Pure functions over facts a caller gathers (the
//! configuration service on each write, `tenancy serve` for the whole fleet); nothing
//! here reads a database.
//!
//! Declared rules ([`check`], configured by [`RulesConfig`], each with a [`Severity`]):
//! - `compliance_missing`: a tenant in a region that requires a compliance flag
//!   ([`RulesConfig::region_compliance`], EU → `gdpr` by default) without it — a boolean
//!   flag that is on for the tenant, or a tag of that name;
//! - `outside_residency`: a tenant placed in a region its residency does not list;
//! - `dedicated_on_pooled`: a tenant of a dedicated plan ([`RulesConfig::dedicated_plans`])
//!   on pooled placement;
//! - `security_override`: a per-tenant override serving the off variant of a security
//!   flag ([`RulesConfig::security_flags`]);
//! - `rollout_region`: a flag serving a variant other than its default and off variants to
//!   a tenant in a region it excludes — by a `region not_in` condition of one of its own
//!   rules, or by [`RulesConfig::rollout_exclusions`].
//!
//! Learned detectors ([`learned`]): step durations against their median and MAD, step
//! failure rates and configuration-change rates against their history (a Poisson tail
//! bound), tenants in `provisioning` far longer than provisioning takes.
//!
//! A [`Finding`] becomes a [`Detection`](crate::anomaly::Detection) of the same feed as
//! the access anomalies through a [`Tracker`], which keeps one detection open per
//! finding for as long as it holds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tenancy_core::{Placement, TenantId};

use crate::anomaly::{AnomalyKind, Evidence, Severity};

pub mod learned;
mod tracker;

pub use learned::{ChangeFact, LearnedOptions, StepRun};
pub use tracker::{Tracked, Tracker};

/// The `[insights.rules]` section: the declared rules, their severities, the learned
/// detectors' thresholds and how often `tenancy serve` checks the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    /// From this severity on, the configuration service refuses a change that brings a
    /// finding of a declared rule (below it, the change is made and the finding is a
    /// warning). Default `high`.
    pub reject_from: Severity,
    /// Region → the compliance flags its tenants need. A key names a region or a prefix of
    /// region ids (`eu` matches `eu` and `eu-west`). Default `eu = ["gdpr"]`.
    pub region_compliance: BTreeMap<String, Vec<String>>,
    /// Plans whose tenants must not share a pooled database. Default `["dedicated"]`.
    pub dedicated_plans: Vec<String>,
    /// Flags that turn a security feature on: an override serving their off variant is a
    /// finding. Default `mfa_required`, `sso_required`, `audit_log`, `ip_allowlist`.
    pub security_flags: Vec<String>,
    /// Flag → regions (or region prefixes) it must not reach, besides the regions its own
    /// rules exclude with a `region not_in` condition.
    pub rollout_exclusions: BTreeMap<String, Vec<String>>,
    /// Each declared rule's severity.
    pub severity: RuleSeverities,
    /// Rules and detectors turned off (by kind name, `dedicated_on_pooled`, …).
    pub disabled: Vec<AnomalyKind>,
    /// The learned detectors' history and thresholds.
    pub learned: LearnedOptions,
    /// Seconds between two checks of the whole fleet by `tenancy serve` (10 to 86,400).
    /// Default 300.
    pub interval_secs: u64,
    /// Most findings one fleet check reports (the most severe first). Default 1,000.
    pub max_findings: usize,
}

/// The severity of each declared rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleSeverities {
    /// Default `high`.
    pub compliance_missing: Severity,
    /// Default `critical`.
    pub outside_residency: Severity,
    /// Default `medium`.
    pub dedicated_on_pooled: Severity,
    /// Default `high`.
    pub security_override: Severity,
    /// Default `high`.
    pub rollout_region: Severity,
}

impl Default for RuleSeverities {
    fn default() -> Self {
        RuleSeverities {
            compliance_missing: Severity::High,
            outside_residency: Severity::Critical,
            dedicated_on_pooled: Severity::Medium,
            security_override: Severity::High,
            rollout_region: Severity::High,
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            reject_from: Severity::High,
            region_compliance: BTreeMap::from([("eu".to_owned(), vec!["gdpr".to_owned()])]),
            dedicated_plans: vec!["dedicated".into()],
            security_flags: ["mfa_required", "sso_required", "audit_log", "ip_allowlist"]
                .map(String::from)
                .to_vec(),
            rollout_exclusions: BTreeMap::new(),
            severity: RuleSeverities::default(),
            disabled: Vec::new(),
            learned: LearnedOptions::default(),
            interval_secs: 300,
            max_findings: 1000,
        }
    }
}

/// A region id, prefix or flag key as the rules accept them: 1 to 64 characters a-z,
/// 0-9, `_` or `-`, starting with a letter or digit.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !s.starts_with(['-', '_'])
}

impl RulesConfig {
    /// Checks every field; the error names the first one wrong.
    pub fn validate(&self) -> Result<(), String> {
        let names = |what: &str, v: &[String]| {
            v.iter().try_for_each(|n| {
                if is_name(n) {
                    Ok(())
                } else {
                    Err(format!(
                        "insights.rules.{what}: {n:?} must be 1 to 64 characters a-z, 0-9, '_' or '-'"
                    ))
                }
            })
        };
        for (region, flags) in &self.region_compliance {
            names("region_compliance", std::slice::from_ref(region))?;
            names(&format!("region_compliance.{region}"), flags)?;
        }
        for (flag, regions) in &self.rollout_exclusions {
            names("rollout_exclusions", std::slice::from_ref(flag))?;
            names(&format!("rollout_exclusions.{flag}"), regions)?;
        }
        names("dedicated_plans", &self.dedicated_plans)?;
        names("security_flags", &self.security_flags)?;
        if let Some(k) = self
            .disabled
            .iter()
            .find(|k| !AnomalyKind::RULES.contains(k))
        {
            return Err(format!(
                "insights.rules.disabled: {} is an access detector, not a rule",
                k.as_str()
            ));
        }
        if !(10..=86_400).contains(&self.interval_secs) {
            return Err("insights.rules.interval_secs must be between 10 and 86400".into());
        }
        if !(1..=100_000).contains(&self.max_findings) {
            return Err("insights.rules.max_findings must be between 1 and 100000".into());
        }
        self.learned.validate()
    }

    /// Whether the rule or detector `kind` is on.
    pub fn enabled(&self, kind: AnomalyKind) -> bool {
        !self.disabled.contains(&kind)
    }

    /// The severity of a finding of the declared rule `kind` (`None` for another kind).
    pub fn severity_of(&self, kind: AnomalyKind) -> Option<Severity> {
        let s = &self.severity;
        Some(match kind {
            AnomalyKind::ComplianceMissing => s.compliance_missing,
            AnomalyKind::OutsideResidency => s.outside_residency,
            AnomalyKind::DedicatedOnPooled => s.dedicated_on_pooled,
            AnomalyKind::SecurityOverride => s.security_override,
            AnomalyKind::RolloutRegion => s.rollout_region,
            _ => return None,
        })
    }

    /// Whether the declared rules name flag `key`: a compliance flag of some region, a
    /// security flag, or a flag with configured exclusions (a change of any other flag
    /// can bring a finding only if its own rules exclude a region).
    pub fn names_flag(&self, key: &str) -> bool {
        self.security_flags.iter().any(|f| f == key)
            || self.rollout_exclusions.contains_key(key)
            || self.region_compliance.values().flatten().any(|f| f == key)
    }

    /// Whether a finding refuses the change that brought it.
    pub fn rejects(&self, f: &Finding) -> bool {
        f.severity >= self.reject_from
    }

    /// The compliance flags a tenant in `region` needs.
    pub fn required_compliance(&self, region: &str) -> BTreeSet<&str> {
        self.region_compliance
            .iter()
            .filter(|(r, _)| region_matches(r, region))
            .flat_map(|(_, flags)| flags.iter().map(String::as_str))
            .collect()
    }

    /// Whether `flag` must not reach `region` (by its own rules or by configuration).
    pub fn excludes(&self, flag: &FlagFacts, region: &str) -> bool {
        flag.excluded_regions
            .iter()
            .chain(self.rollout_exclusions.get(&flag.key).into_iter().flatten())
            .any(|r| region_matches(r, region))
    }
}

/// Whether the rule's `pattern` (a region id or a prefix of ids) covers `region`: equal,
/// or `region` starts with `pattern` and `-`.
pub fn region_matches(pattern: &str, region: &str) -> bool {
    region == pattern
        || region
            .strip_prefix(pattern)
            .is_some_and(|rest| rest.starts_with('-'))
}

/// What the rules need to know of one live tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantFacts {
    /// The tenant.
    pub tenant: TenantId,
    /// Its plan.
    pub plan: String,
    /// Its region.
    pub region: String,
    /// Its placement.
    pub placement: Placement,
    /// The regions its data may live in (`None`: no residency policy).
    pub residency: Option<Vec<String>>,
    /// The compliance flags it has: its tags and the required compliance flags that are
    /// on for it.
    pub compliance: BTreeSet<String>,
    /// Its overrides of security flags.
    pub overrides: Vec<OverrideFact>,
    /// The variants served to it of the flags that exclude its region.
    pub served: Vec<ServedFact>,
}

/// A per-tenant override of a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideFact {
    /// The flag.
    pub flag: String,
    /// The variant the override serves.
    pub variant: String,
    /// Whether that variant is the flag's off variant (or `false`).
    pub turns_off: bool,
}

/// A flag's variant as served to a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedFact {
    /// The flag.
    pub flag: String,
    /// The variant served.
    pub variant: String,
    /// Whether it is neither the flag's default nor its off variant: the tenant is
    /// reached by a rule, a rollout, a layer or an override.
    pub reached: bool,
}

/// What the rules need to know of one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagFacts {
    /// The flag's key.
    pub key: String,
    /// The regions its own rules exclude (`region not_in` conditions).
    pub excluded_regions: Vec<String>,
}

/// One rule's or detector's finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Which rule or detector.
    pub kind: AnomalyKind,
    /// The tenant, when it is about one.
    pub tenant: Option<TenantId>,
    /// What else it is about (`flag:gdpr`, `step:create_schema`, `actor:…`).
    pub subject: Option<String>,
    /// How urgent.
    pub severity: Severity,
    /// The statistic over its threshold (1 for a declared rule).
    pub score: f64,
    /// What is wrong, for people (names the rule).
    pub message: String,
    /// The signals against their baselines.
    pub evidence: Vec<Evidence>,
}

impl Finding {
    /// What identifies the finding from one check to the next.
    pub fn key(&self) -> (AnomalyKind, Option<TenantId>, Option<&str>) {
        (self.kind, self.tenant, self.subject.as_deref())
    }

    /// A declared rule's finding: the rule's severity, score 1, and as evidence the
    /// property the rule expects (1) against what the tenant has (0).
    fn declared(
        cfg: &RulesConfig,
        kind: AnomalyKind,
        tenant: TenantId,
        subject: String,
        message: String,
    ) -> Finding {
        let signal = match kind {
            AnomalyKind::ComplianceMissing => "compliance_flag_present",
            AnomalyKind::OutsideResidency => "placed_in_residency",
            AnomalyKind::DedicatedOnPooled => "dedicated_placement",
            AnomalyKind::SecurityOverride => "security_feature_on",
            _ => "excluded_region_unreached",
        };
        Finding {
            kind,
            tenant: Some(tenant),
            subject: Some(subject),
            severity: cfg.severity_of(kind).unwrap_or(Severity::Medium),
            score: 1.0,
            message: format!("rule {}: {message}", kind.as_str()),
            evidence: vec![Evidence {
                signal: signal.into(),
                baseline: 1.0,
                observed: 0.0,
            }],
        }
    }
}

/// The declared rules' findings over `tenants` (and the `flags` that exclude regions),
/// in tenant order then rule order.
pub fn check(cfg: &RulesConfig, tenants: &[TenantFacts], flags: &[FlagFacts]) -> Vec<Finding> {
    let flags: BTreeMap<&str, &FlagFacts> = flags.iter().map(|f| (f.key.as_str(), f)).collect();
    let mut out = Vec::new();
    for t in tenants {
        check_tenant(cfg, t, &flags, &mut out);
    }
    out
}

fn check_tenant(
    cfg: &RulesConfig,
    t: &TenantFacts,
    flags: &BTreeMap<&str, &FlagFacts>,
    out: &mut Vec<Finding>,
) {
    let id = t.tenant;
    let region = t.region.as_str();
    // (rule, subject, what is wrong)
    let mut hits: Vec<(AnomalyKind, String, String)> = Vec::new();
    for flag in cfg.required_compliance(region) {
        if !t.compliance.contains(flag) {
            let why = format!("tenant {id} in region {region} needs compliance flag {flag}, which is neither on for it nor one of its tags");
            hits.push((AnomalyKind::ComplianceMissing, format!("flag:{flag}"), why));
        }
    }
    if let Some(allowed) = t
        .residency
        .as_ref()
        .filter(|a| !a.iter().any(|r| r == region))
    {
        let why = format!(
            "tenant {id} is placed in region {region}, outside its residency ({})",
            allowed.join(", ")
        );
        hits.push((
            AnomalyKind::OutsideResidency,
            format!("region:{region}"),
            why,
        ));
    }
    if t.placement == Placement::Pooled && cfg.dedicated_plans.contains(&t.plan) {
        let why = format!(
            "tenant {id} of dedicated plan {} is on pooled placement",
            t.plan
        );
        hits.push((
            AnomalyKind::DedicatedOnPooled,
            format!("plan:{}", t.plan),
            why,
        ));
    }
    for o in &t.overrides {
        if o.turns_off && cfg.security_flags.contains(&o.flag) {
            let why = format!("tenant {id} has an override serving {:?} of security flag {}, which turns the feature off", o.variant, o.flag);
            hits.push((
                AnomalyKind::SecurityOverride,
                format!("flag:{}", o.flag),
                why,
            ));
        }
    }
    for s in t.served.iter().filter(|s| s.reached) {
        let excluded = match flags.get(s.flag.as_str()) {
            Some(f) => cfg.excludes(f, region),
            None => cfg
                .rollout_exclusions
                .get(&s.flag)
                .is_some_and(|rs| rs.iter().any(|r| region_matches(r, region))),
        };
        if excluded {
            let why = format!(
                "flag {} serves {:?} to tenant {id} in region {region}, which the flag excludes",
                s.flag, s.variant
            );
            hits.push((AnomalyKind::RolloutRegion, format!("flag:{}", s.flag), why));
        }
    }
    for (kind, subject, why) in hits {
        if cfg.enabled(kind) {
            out.push(Finding::declared(cfg, kind, id, subject, why));
        }
    }
}

/// The findings of `after` that `before` does not have (by [`Finding::key`]): what a
/// change brought.
pub fn brought<'a>(before: &[Finding], after: &'a [Finding]) -> Vec<&'a Finding> {
    let old: BTreeSet<_> = before.iter().map(Finding::key).collect();
    after.iter().filter(|f| !old.contains(&f.key())).collect()
}

/// `findings`, the most severe (then highest-scoring) first, at most `max`.
pub fn most_severe(mut findings: Vec<Finding>, max: usize) -> Vec<Finding> {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.score.total_cmp(&a.score))
    });
    findings.truncate(max);
    findings
}

#[cfg(test)]
mod tests;
