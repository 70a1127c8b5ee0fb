//! What an application pushes to `tenancy serve`: one interval of one process's
//! recording for one cluster.

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;

use crate::sketch::{Sketch, SketchWire};

/// Most tenants one snapshot carries (the heaviest by database time).
pub const MAX_SNAPSHOT_TENANTS: usize = 256;

/// Longest interval a snapshot may cover (one hour, in ms).
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// The largest count a snapshot may carry: JSON's largest exactly representable integer
/// (2^53 - 1), the maximum the OpenAPI document states for every count.
pub(crate) const MAX_COUNT: u64 = 9_007_199_254_740_991;

/// The first field of `fields` over [`MAX_COUNT`], for the error.
fn over_max(fields: &[(&'static str, u64)]) -> Option<&'static str> {
    fields.iter().find(|(_, v)| *v > MAX_COUNT).map(|(f, _)| *f)
}

/// One interval of a process's recording for one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The process that recorded it (1 to 100 characters: letters, digits, `.`, `_`,
    /// `:`, `@`, `-`), e.g. `invoicing@host-3:1a2b3c4d`. With `sequence` it makes a
    /// snapshot unique, so pushing the same one twice counts it once.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 100)
    )]
    pub source: String,
    /// Increases with each snapshot of `source` (from 0); a snapshot whose sequence is
    /// not above the last one kept from its source is a duplicate and ignored.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub sequence: u64,
    /// The cluster the recorded pool is on (its catalog name).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[a-z][a-z0-9_-]*$", min_length = 1, max_length = 63)
    )]
    pub cluster: String,
    /// Milliseconds of recording this snapshot covers (1 to 3,600,000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600000))]
    pub interval_ms: u64,
    /// Everything recorded in the interval, every tenant included.
    pub totals: Counts,
    /// The heaviest tenants by database time, at most 256.
    #[cfg_attr(feature = "openapi", schema(max_items = 256))]
    pub tenants: Vec<TenantStats>,
}

/// Counts over a set of statements in an interval: every tenant's (a snapshot's
/// `totals`) or one tenant's (flattened into [`TenantStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Database time in µs: statements plus COMMIT/ROLLBACK round trips.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub db_us: u64,
    /// Statements run.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub statements: u64,
    /// Transactions ended.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub transactions: u64,
    /// Statements that failed (context refusals included).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub errors: u64,
    /// Statements whose tenant context the server refused.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub refusals: u64,
    /// Time spent waiting for a connection in `begin`, in µs.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub pool_wait_us: u64,
}

impl Counts {
    /// Adds `other` into these counts (saturating).
    pub(crate) fn add(&mut self, other: &Counts) {
        self.db_us = self.db_us.saturating_add(other.db_us);
        self.statements = self.statements.saturating_add(other.statements);
        self.transactions = self.transactions.saturating_add(other.transactions);
        self.errors = self.errors.saturating_add(other.errors);
        self.refusals = self.refusals.saturating_add(other.refusals);
        self.pool_wait_us = self.pool_wait_us.saturating_add(other.pool_wait_us);
    }

    /// Every count with its field name, for the checks.
    fn fields(&self) -> [(&'static str, u64); 6] {
        [
            ("db_us", self.db_us),
            ("statements", self.statements),
            ("transactions", self.transactions),
            ("errors", self.errors),
            ("refusals", self.refusals),
            ("pool_wait_us", self.pool_wait_us),
        ]
    }

    /// The first field that breaks a rule (a count over [`MAX_COUNT`], more refusals
    /// than errors, more errors than statements), with what it must be.
    fn invalid(&self) -> Option<(&'static str, String)> {
        if let Some(f) = over_max(&self.fields()) {
            return Some((f, format!("must be at most {MAX_COUNT}")));
        }
        if self.refusals > self.errors {
            return Some((
                "refusals",
                "must not exceed errors (a refusal is an error)".into(),
            ));
        }
        if self.errors > self.statements {
            return Some(("errors", "must not exceed statements".into()));
        }
        None
    }
}

/// One tenant's counts in an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantStats {
    /// The tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]
    pub tenant: TenantId,
    /// Its counts (`db_us` may be overestimated by at most `db_us_error`).
    #[serde(flatten)]
    pub counts: Counts,
    /// Bound on the overestimate of `db_us`: what the bounded top-N credited this tenant
    /// with when it took the place of a lighter one (0 when it was tracked from the
    /// interval's start). Its other counts start at that moment.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub db_us_error: u64,
    /// Rows returned (or affected).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub rows: u64,
    /// Statement latencies.
    pub latency: SketchWire,
}

/// One tenant's figures while they are added up (in a recorder's slot, or merged from
/// snapshots in a report): what [`TenantStats`] carries, with the sketch parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Its counts; `counts.db_us` includes `db_us_error`.
    pub(crate) counts: Counts,
    /// Bound on the overestimate of `counts.db_us`.
    pub(crate) db_us_error: u64,
    /// Rows returned (or affected).
    pub(crate) rows: u64,
    /// Statement latencies.
    pub(crate) latency: Sketch,
}

impl Tally {
    /// Adds one snapshot's figures for the tenant (`latency` is `stats.latency`, parsed).
    pub(crate) fn add(&mut self, stats: &TenantStats, latency: &Sketch) {
        self.counts.add(&stats.counts);
        self.db_us_error = self.db_us_error.saturating_add(stats.db_us_error);
        self.rows = self.rows.saturating_add(stats.rows);
        self.latency.merge(latency);
    }

    /// Database time in µs that is surely this tenant's: `counts.db_us` less the bound
    /// on its overestimate.
    pub(crate) fn tracked_us(&self) -> u64 {
        self.counts.db_us.saturating_sub(self.db_us_error)
    }

    /// The figures as a snapshot carries them.
    pub(crate) fn to_stats(&self, tenant: TenantId) -> TenantStats {
        TenantStats {
            tenant,
            counts: self.counts,
            db_us_error: self.db_us_error,
            rows: self.rows,
            latency: self.latency.to_wire(),
        }
    }
}

/// Why a snapshot was refused: the field and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
#[non_exhaustive]
pub struct SnapshotError {
    /// The field (JSON path).
    pub field: String,
    /// What is wrong and what it must be.
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SnapshotError {
    SnapshotError {
        field: field.into(),
        message: message.into(),
    }
}

/// Whether `name` is a cluster name as the catalog has them (`^[a-z][a-z0-9_-]*$`, 1 to
/// 63 characters).
pub fn is_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Whether `source` is a source name (`^[A-Za-z0-9._:@-]{1,100}$`).
pub(crate) fn is_source_name(source: &str) -> bool {
    !source.is_empty()
        && source.len() <= 100
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:@".contains(&b))
}

impl Snapshot {
    /// Checks every field; returns the tenants' sketches, parsed.
    pub fn check(&self) -> Result<Vec<Sketch>, SnapshotError> {
        if !is_source_name(&self.source) {
            return Err(err(
                "source",
                "must be 1 to 100 characters: letters, digits, '.', '_', ':', '@' or '-'",
            ));
        }
        if !is_cluster_name(&self.cluster) {
            return Err(err(
                "cluster",
                "must be a cluster name: 1 to 63 characters a-z, 0-9, '_' or '-', starting with a letter",
            ));
        }
        if self.interval_ms == 0 || self.interval_ms > MAX_INTERVAL_MS {
            return Err(err(
                "interval_ms",
                format!("must be 1 to {MAX_INTERVAL_MS}"),
            ));
        }
        if self.tenants.len() > MAX_SNAPSHOT_TENANTS {
            return Err(err(
                "tenants",
                format!(
                    "has {} entries; send at most {MAX_SNAPSHOT_TENANTS} (the heaviest)",
                    self.tenants.len()
                ),
            ));
        }
        if self.sequence > MAX_COUNT {
            return Err(err("sequence", format!("must be at most {MAX_COUNT}")));
        }
        if let Some((f, message)) = self.totals.invalid() {
            return Err(err(format!("totals.{f}"), message));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.tenants.len());
        let mut sketches = Vec::with_capacity(self.tenants.len());
        for (i, s) in self.tenants.iter().enumerate() {
            let at = |f: &str| format!("tenants[{i}].{f}");
            if !seen.insert(s.tenant) {
                return Err(err(at("tenant"), "appears twice in this snapshot"));
            }
            if let Some((f, message)) = s.counts.invalid() {
                return Err(err(at(f), message));
            }
            if let Some(f) = over_max(&[("db_us_error", s.db_us_error), ("rows", s.rows)]) {
                return Err(err(at(f), format!("must be at most {MAX_COUNT}")));
            }
            if s.db_us_error > s.counts.db_us {
                return Err(err(at("db_us_error"), "must not exceed db_us"));
            }
            let sketch = Sketch::from_wire(&s.latency).map_err(|m| err(at("latency"), m))?;
            if sketch.count() > s.counts.statements {
                return Err(err(at("latency"), "counts more latencies than statements"));
            }
            sketches.push(sketch);
        }
        Ok(sketches)
    }

    /// This snapshot as JSON of at most `limit` bytes: the lightest tenants are left out
    /// until it fits (the totals still count them). `None` when even no tenant is too
    /// large (a `source` or `cluster` of absurd length).
    pub fn to_json_within(&self, limit: usize) -> Option<Vec<u8>> {
        let mut s = self.clone();
        loop {
            let json = serde_json::to_vec(&s).ok()?;
            if json.len() <= limit {
                return Some(json);
            }
            if s.tenants.is_empty() {
                return None;
            }
            // Tenants are sorted heaviest first; drop a share of the tail at a time.
            let keep = s.tenants.len() * limit / json.len();
            s.tenants.truncate(keep.min(s.tenants.len() - 1));
        }
    }
}
