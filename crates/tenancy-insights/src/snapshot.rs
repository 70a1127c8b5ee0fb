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
    pub totals: Totals,
    /// The heaviest tenants by database time, at most 256.
    #[cfg_attr(feature = "openapi", schema(max_items = 256))]
    pub tenants: Vec<TenantStats>,
}

/// Counts over every tenant of an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Totals {
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

/// One tenant's counts in an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantStats {
    /// The tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"))]
    pub tenant: TenantId,
    /// Database time in µs (may be overestimated by at most `db_us_error`).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub db_us: u64,
    /// Bound on the overestimate of `db_us`: what the bounded top-N credited this tenant
    /// with when it took the place of a lighter one (0 when it was tracked from the
    /// interval's start). Its other counts start at that moment.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub db_us_error: u64,
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
    /// Rows returned (or affected).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9007199254740991_i64)
    )]
    pub rows: u64,
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
    /// Statement latencies.
    pub latency: SketchWire,
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
        let t = &self.totals;
        if let Some(f) = over_max(&[
            ("db_us", t.db_us),
            ("statements", t.statements),
            ("transactions", t.transactions),
            ("errors", t.errors),
            ("refusals", t.refusals),
            ("pool_wait_us", t.pool_wait_us),
        ]) {
            return Err(err(
                format!("totals.{f}"),
                format!("must be at most {MAX_COUNT}"),
            ));
        }
        if t.refusals > t.errors {
            return Err(err(
                "totals.refusals",
                "must not exceed totals.errors (a refusal is an error)",
            ));
        }
        if t.errors > t.statements {
            return Err(err("totals.errors", "must not exceed totals.statements"));
        }
        let mut seen = std::collections::HashSet::with_capacity(self.tenants.len());
        let mut sketches = Vec::with_capacity(self.tenants.len());
        for (i, s) in self.tenants.iter().enumerate() {
            let at = |f: &str| format!("tenants[{i}].{f}");
            if !seen.insert(s.tenant) {
                return Err(err(at("tenant"), "appears twice in this snapshot"));
            }
            if let Some(f) = over_max(&[
                ("db_us", s.db_us),
                ("db_us_error", s.db_us_error),
                ("statements", s.statements),
                ("transactions", s.transactions),
                ("rows", s.rows),
                ("errors", s.errors),
                ("refusals", s.refusals),
                ("pool_wait_us", s.pool_wait_us),
            ]) {
                return Err(err(at(f), format!("must be at most {MAX_COUNT}")));
            }
            if s.db_us_error > s.db_us {
                return Err(err(at("db_us_error"), "must not exceed db_us"));
            }
            if s.refusals > s.errors {
                return Err(err(at("refusals"), "must not exceed errors"));
            }
            if s.errors > s.statements {
                return Err(err(at("errors"), "must not exceed statements"));
            }
            let sketch = Sketch::from_wire(&s.latency).map_err(|m| err(at("latency"), m))?;
            if sketch.count() > s.statements {
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
