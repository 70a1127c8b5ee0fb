//! What a compliance report says, section by section. Every value comes from a real
//! source (named on each section); times are RFC 3339 in UTC, days `YYYY-MM-DD`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The `format` of a signed report document.
pub const FORMAT: &str = "tenancy.report.v1";

/// A signed compliance report: the report and a detached Ed25519 signature over its
/// canonical serialization (see [`ReportSignature::signed_bytes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    /// Always `tenancy.report.v1`.
    #[schema(pattern = "^tenancy\\.report\\.v1$")]
    pub format: String,
    /// The report.
    pub report: Report,
    /// The signature over `report`.
    pub signature: ReportSignature,
}

/// A detached signature of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportSignature {
    /// Always `Ed25519`.
    #[schema(pattern = "^Ed25519$")]
    pub algorithm: String,
    /// The first 16 hex digits of the public key: the control plane's audit checkpoint
    /// signing key.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub key_id: String,
    /// The Ed25519 public key (hex), the one audit checkpoints are signed with.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub public_key: String,
    /// Which bytes are signed, in words: always the text of
    /// [`super::sign::SIGNED_BYTES`].
    pub signed_bytes: String,
    /// The signature (hex, 64 bytes).
    #[schema(pattern = "^[0-9a-f]{128}$")]
    pub value: String,
}

/// A tenant's compliance evidence at one moment (`ComplianceReport` in the OpenAPI
/// document, apart from the insights' `Report`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ComplianceReport)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// When the report was made.
    pub generated_at: String,
    /// What made it (`tenancy-control <version>`); the HTML page of a report is
    /// re-rendered byte for byte by the same version.
    pub generator: String,
    /// The tenant as the catalog has it now.
    pub tenant: TenantFacts,
    /// Where its data lived, and its moves (catalog: tenants, tenant moves).
    pub placement: PlacementSection,
    /// The regions its data may live in and whether it did.
    pub residency: ResidencySection,
    /// `tenancy check` of the database its rows are in, and the probe.
    pub isolation: IsolationSection,
    /// Its encryption keys.
    pub keys: KeySection,
    /// Its audit logs, verified.
    pub audit: AuditSection,
    /// Access anomalies the applications' detectors reported.
    pub anomalies: AnomalySection,
    /// How long its audit events are kept, and its legal hold.
    pub retention: RetentionSection,
    /// Exports, imports and moves recorded in the control plane's audit log.
    pub transfers: Vec<ControlEvent>,
    /// The tenant's exports (through the API or `tenancy tenants export`), oldest first,
    /// from their `tenant.export` events in the control log.
    pub exports: Vec<ExportView>,
}

/// One export of the tenant's rows, as its control-log event records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportView {
    /// When it was recorded (once the archive was complete).
    pub at: String,
    /// Who: actor kind and subject.
    pub actor: String,
    /// How it was asked for: `api` or `cli`.
    pub via: Option<String>,
    /// SHA-256 (hex) of the whole archive.
    pub sha256: Option<String>,
    /// The digest the archive's summary carries.
    pub digest: Option<String>,
    /// Rows of every table.
    pub rows: Option<u64>,
    /// Size of the archive in bytes.
    pub bytes: Option<u64>,
    /// The export's id.
    pub export_id: Option<String>,
    /// The request that asked for it.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
}

/// The tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantFacts {
    /// Its id.
    pub id: String,
    /// Its slug.
    pub slug: String,
    /// Its display name (the tenant chose it: escaped wherever it is shown).
    pub display_name: String,
    /// Its plan.
    pub plan: String,
    /// Its lifecycle state.
    pub state: String,
    /// When it was created.
    pub created_at: String,
}

/// Where a tenant's rows are. Open to other fields: a placement period flattens it beside
/// its own `from` and `until`, and the OpenAPI schema must allow them there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Location {
    /// `pooled`, `schema` or `dedicated`.
    pub placement: String,
    /// The region.
    pub region: String,
    /// The cluster's id.
    pub cluster_id: String,
    /// The cluster's name, when the catalog still has it.
    pub cluster: Option<String>,
}

/// One period of a tenant's placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementPeriod {
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// From (creation, or the switch of a move).
    pub from: String,
    /// Until (the next switch); absent for the current placement.
    pub until: Option<String>,
}

/// One move of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveView {
    /// The move workflow.
    pub workflow: String,
    /// `copying`, `switched`, `source_dropped` or `rolled_back`.
    pub status: String,
    /// Where the rows were.
    pub from: Location,
    /// Where they went.
    pub to: Location,
    /// When the move started.
    pub started_at: String,
    /// When the catalog switched to the new placement.
    pub switched_at: Option<String>,
    /// When the move ended (old copy dropped, or rolled back).
    pub finished_at: Option<String>,
}

/// Placement: now, over time, and the moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementSection {
    /// Where its rows are now.
    pub current: Location,
    /// Its tenant schema (schema placement).
    pub schema_name: Option<String>,
    /// Its database (dedicated placement).
    pub database_name: Option<String>,
    /// Every placement it had, oldest first.
    pub history: Vec<PlacementPeriod>,
    /// Every move, oldest first (at most 1000).
    pub moves: Vec<MoveView>,
}

/// The residency policy and how the placements kept to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResidencySection {
    /// The policy as set; absent: none is set, and the tenant's current region is the only
    /// one allowed.
    pub policy: Option<Vec<String>>,
    /// The regions its data may live in.
    pub allowed_regions: Vec<String>,
    /// Whether its current region is allowed.
    pub current_region_allowed: bool,
    /// Periods of its placement history in a region the policy does not allow (judged
    /// against today's policy).
    pub periods_outside: Vec<PlacementPeriod>,
}

/// A `tenancy check` finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindingView {
    /// The rule id.
    pub rule: String,
    /// `error`, `warning` or `info`.
    pub severity: String,
    /// The object.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// Isolation evidence of the database the tenant's rows are in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsolationSection {
    /// `checked`, or `unavailable` (then `unavailable_reason` says why).
    #[schema(pattern = "^(checked|unavailable)$")]
    pub status: String,
    /// Why the check could not run.
    pub unavailable_reason: Option<String>,
    /// The database checked.
    pub database: Option<String>,
    /// The role whose access was checked.
    pub runtime_role: Option<String>,
    /// The tenant context implementation (`native…` or `plpgsql`).
    pub context_impl: Option<String>,
    /// `server_version_num`.
    pub server_version: Option<i32>,
    /// Error findings of the static audit.
    pub errors: u32,
    /// Warning findings.
    pub warnings: u32,
    /// Info findings.
    pub info: u32,
    /// The static audit's findings, most severe first.
    pub findings: Vec<FindingView>,
    /// Whether the probe (cross-tenant access tried as the runtime role, rolled back) ran.
    pub probe_ran: bool,
    /// The probe's findings (empty: every cross-tenant attempt was refused).
    pub probe_findings: Vec<FindingView>,
}

/// A data key of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataKeyView {
    /// Its version.
    pub version: u32,
    /// The key-encryption key version it is wrapped under.
    pub kek_version: u32,
    /// When it was made (a version above 1 is a rotation).
    pub created_at: String,
}

/// The tenant's encryption keys (tenancy-keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    /// The key-encryption key: `live`, `missing`, `destroyed` (crypto-shredded), or
    /// `not_visible` (this control plane has no `report.key_dir`).
    #[schema(pattern = "^(live|missing|destroyed|not_visible)$")]
    pub kek: String,
    /// Its current version, when live.
    pub kek_version: Option<u32>,
    /// Whether the data keys could be read (`tenancy.data_keys` in its database).
    pub data_keys_readable: bool,
    /// Its data keys, oldest first; the last seals new values.
    pub data_keys: Vec<DataKeyView>,
    /// Key events of its own audit log (`keys.*`, e.g. `keys.shred`), latest 100.
    pub events: Vec<ControlEvent>,
}

/// A signed checkpoint, summarized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSummary {
    /// The chain position it covers.
    pub chain_pos: i64,
    /// The hash there (hex).
    pub head_hash: String,
    /// When it was signed.
    pub signed_at: String,
    /// The key that signed it (hex).
    pub public_key: String,
}

/// One audit chain, verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainView {
    /// `intact`, `tampered`, `empty` (no events) or `unavailable`.
    #[schema(pattern = "^(intact|tampered|empty|unavailable)$")]
    pub status: String,
    /// Sealed events checked.
    pub sealed: u64,
    /// Events not sealed yet.
    pub unsealed: u64,
    /// The head position that verified.
    pub head: i64,
    /// The purge anchor it was verified from (0: from the first event).
    pub base: i64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// The first problem found, or why it could not be read.
    pub problem: Option<String>,
    /// The latest checkpoint.
    pub last_checkpoint: Option<CheckpointSummary>,
}

/// Audit events of one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayCount {
    /// The day (UTC).
    pub day: String,
    /// Events of the tenant's own log.
    pub tenant: u64,
    /// Events of the control plane's log about it.
    pub control: u64,
}

/// The tenant's audit logs (tenancy-audit: verification against the signed checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// The only key checkpoints were trusted from (hex).
    pub trusted_key: String,
    /// Its application events (in its database).
    pub tenant_log: ChainView,
    /// The control plane's changes concerning it (in the catalog).
    pub control_log: ChainView,
    /// Events per day over the last 30 days, oldest first.
    pub per_day: Vec<DayCount>,
}

/// One signal of an anomaly against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceView {
    /// The signal.
    pub signal: String,
    /// What the baseline expected (3 decimals).
    pub baseline: f64,
    /// What was observed (3 decimals).
    pub observed: f64,
}

/// An access anomaly and its resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyView {
    /// The process whose detector found it.
    pub source: String,
    /// Its id in that detector.
    pub id: u64,
    /// Which detector fired.
    pub kind: String,
    /// `low`, `medium`, `high` or `critical`.
    pub severity: String,
    /// Its highest score (3 decimals).
    pub score: f64,
    /// The first flagged hour.
    pub first_hour: String,
    /// The last flagged hour.
    pub last_hour: String,
    /// `open` (flagged in the current or the previous hour) or `ended`.
    #[schema(pattern = "^(open|ended)$")]
    pub resolution: String,
    /// When it ended: the end of its last flagged hour.
    pub ended_at: Option<String>,
    /// The signals of its highest-scoring hour.
    pub evidence: Vec<EvidenceView>,
}

/// Anomalies of one week.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeekCount {
    /// The Monday the week starts (UTC).
    pub week: String,
    /// Anomalies whose first flagged hour is in the week.
    pub count: u64,
}

/// Access anomalies (tenancy-insights anomaly feed, as pushed to this control plane).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalySection {
    /// The anomalies, latest first (at most 1000).
    pub items: Vec<AnomalyView>,
    /// Open ones.
    pub open: u64,
    /// Per week over the last 12 weeks, oldest first.
    pub per_week: Vec<WeekCount>,
}

/// A purge anchor: the signed point an audit chain was cut at after retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnchorView {
    /// `tenant` or `control`.
    pub log: String,
    /// The last purged position.
    pub chain_pos: i64,
    /// When it was signed.
    pub signed_at: String,
}

/// Retention and legal hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Days its audit events are kept (by its plan); absent: forever.
    pub audit_retention_days: Option<u64>,
    /// Whether a legal hold stops every purge.
    pub legal_hold: bool,
    /// When a deleted tenant's data may be purged.
    pub purge_after: Option<String>,
    /// The purges of its audit logs so far.
    pub anchors: Vec<AnchorView>,
}

/// An event of an audit log, as a report lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ControlEvent {
    /// When.
    pub at: String,
    /// What (`tenant.export`, `keys.shred`, …).
    pub action: String,
    /// Who: actor kind and subject.
    pub actor: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// On what.
    pub target: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
}
