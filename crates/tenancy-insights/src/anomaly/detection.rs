//! What the detector reports: a [`Detection`] with its score, severity and evidence.

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;

/// Which detector or rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// 404s on id lookups far above the tenant's own rate (enumeration of ids).
    Enumeration,
    /// Tenant contexts refused inside PostgreSQL above the tenant's own rate (a forged
    /// or replayed token, often SQL injection).
    ContextRefusal,
    /// `tenant-mismatch` 403s with the tenant's credentials above its own rate.
    TenantMismatch,
    /// A sustained excess of requests returning more rows or bytes than the tenant's
    /// normal largest (bulk or slow exfiltration).
    Exfiltration,
    /// A subject of the tenant reaching tenants it never used before (a credential
    /// shared across tenants).
    CrossTenant,
    /// Requests far above the tenant's volume for this hour of the week (a sudden
    /// noisy neighbour, or a scripted client).
    Volume,
    /// Requests of a key from a network and user agent it never used, at an hour it is
    /// never used.
    NewOrigin,
    /// Rule: a tenant in a region that requires a compliance flag (EU → `gdpr`) without
    /// it.
    ComplianceMissing,
    /// Rule: a tenant placed in a region outside its residency.
    OutsideResidency,
    /// Rule: a tenant of a dedicated plan on pooled placement.
    DedicatedOnPooled,
    /// Rule: a per-tenant override that turns a security feature off.
    SecurityOverride,
    /// Rule: a flag serving a rollout to a tenant in a region the flag excludes.
    RolloutRegion,
    /// Learned: a tenant in `provisioning` far longer than provisioning usually takes.
    StuckProvisioning,
    /// Learned: a provisioning or move step failing far more often than it used to.
    StepFailures,
    /// Learned: a provisioning or move step taking far longer than it used to.
    StepDuration,
    /// Learned: an actor making far more configuration changes than it usually does.
    ChangeBurst,
}

impl AnomalyKind {
    /// Every kind: the access detector's, then the rules'.
    pub const ALL: [AnomalyKind; 16] = [
        AnomalyKind::Enumeration,
        AnomalyKind::ContextRefusal,
        AnomalyKind::TenantMismatch,
        AnomalyKind::Exfiltration,
        AnomalyKind::CrossTenant,
        AnomalyKind::Volume,
        AnomalyKind::NewOrigin,
        AnomalyKind::ComplianceMissing,
        AnomalyKind::OutsideResidency,
        AnomalyKind::DedicatedOnPooled,
        AnomalyKind::SecurityOverride,
        AnomalyKind::RolloutRegion,
        AnomalyKind::StuckProvisioning,
        AnomalyKind::StepFailures,
        AnomalyKind::StepDuration,
        AnomalyKind::ChangeBurst,
    ];

    /// The kinds of the access detector ([`super::Detector`]), in the order reports
    /// list them.
    pub const ACCESS: &'static [AnomalyKind] = AnomalyKind::ALL.split_at(7).0;

    /// The kinds of the configuration and provisioning checks ([`crate::rules`]): the
    /// declared rules, then the learned detectors.
    pub const RULES: &'static [AnomalyKind] = AnomalyKind::ALL.split_at(7).1;

    /// The snake_case name (as in JSON and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Enumeration => "enumeration",
            AnomalyKind::ContextRefusal => "context_refusal",
            AnomalyKind::TenantMismatch => "tenant_mismatch",
            AnomalyKind::Exfiltration => "exfiltration",
            AnomalyKind::CrossTenant => "cross_tenant",
            AnomalyKind::Volume => "volume",
            AnomalyKind::NewOrigin => "new_origin",
            AnomalyKind::ComplianceMissing => "compliance_missing",
            AnomalyKind::OutsideResidency => "outside_residency",
            AnomalyKind::DedicatedOnPooled => "dedicated_on_pooled",
            AnomalyKind::SecurityOverride => "security_override",
            AnomalyKind::RolloutRegion => "rollout_region",
            AnomalyKind::StuckProvisioning => "stuck_provisioning",
            AnomalyKind::StepFailures => "step_failures",
            AnomalyKind::StepDuration => "step_duration",
            AnomalyKind::ChangeBurst => "change_burst",
        }
    }

    /// The kind named `s` (its snake_case name).
    pub fn parse(s: &str) -> Option<Self> {
        AnomalyKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The least severity a detection of this kind has: a refused context or a
    /// credential in another tenant is never benign.
    fn floor(self) -> Severity {
        match self {
            AnomalyKind::ContextRefusal | AnomalyKind::CrossTenant => Severity::High,
            AnomalyKind::Enumeration | AnomalyKind::TenantMismatch | AnomalyKind::Exfiltration => {
                Severity::Medium
            }
            AnomalyKind::Volume
            | AnomalyKind::NewOrigin
            | AnomalyKind::ComplianceMissing
            | AnomalyKind::OutsideResidency
            | AnomalyKind::DedicatedOnPooled
            | AnomalyKind::SecurityOverride
            | AnomalyKind::RolloutRegion
            | AnomalyKind::StuckProvisioning
            | AnomalyKind::StepFailures
            | AnomalyKind::StepDuration
            | AnomalyKind::ChangeBurst => Severity::Low,
        }
    }
}

/// How urgent a detection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Look today.
    Medium,
    /// Look now.
    High,
    /// Far past every threshold.
    Critical,
}

impl Severity {
    /// The severity of a detection of `kind` with `score` (its statistic over its
    /// threshold, so at least 1).
    pub fn of(kind: AnomalyKind, score: f64) -> Self {
        let by_score = if score >= 4.0 {
            Severity::Critical
        } else if score >= 2.0 {
            Severity::High
        } else if score >= 1.3 {
            Severity::Medium
        } else {
            Severity::Low
        };
        by_score.max(kind.floor())
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One signal's part in a detection: what was seen against what the baseline expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The signal (`not_found_per_hour`, `refusals_per_hour`, `heavy_requests_ewma`,
    /// `requests_per_hour`, `new_tenants_24h`, `new_origin_requests`, …).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z0-9_]+$", min_length = 1, max_length = 64)
    )]
    pub signal: String,
    /// What the tenant's (or credential's) baseline expected.
    pub baseline: f64,
    /// What was observed.
    pub observed: f64,
}

/// An anomaly: one tenant, one detector, from its first flagged hour to its last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// Increases with each detection of one detector (from 0).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub id: u64,
    /// The tenant; absent for a finding about the fleet (a provisioning step, an actor's
    /// configuration changes).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    /// What the finding is about besides the tenant, as `what:name` (`flag:mfa`,
    /// `step:create_schema`, `actor:ops@example.com`, `region:eu-west`); absent for
    /// access anomalies.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z_]+:[\\x21-\\x7e]+$", min_length = 3, max_length = 200)
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Which detector or rule fired.
    pub kind: AnomalyKind,
    /// The start of the first flagged hour (Unix seconds).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub first_hour: u64,
    /// The start of the last flagged hour (Unix seconds; not before `first_hour`).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub last_hour: u64,
    /// The highest score over the flagged hours: the detector's statistic over its
    /// threshold (at least 1).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0))]
    pub score: f64,
    /// How urgent, from the score and the kind.
    pub severity: Severity,
    /// The signals of the highest-scoring hour against their baselines (at most 16).
    #[cfg_attr(feature = "openapi", schema(max_items = 16))]
    pub evidence: Vec<Evidence>,
}
