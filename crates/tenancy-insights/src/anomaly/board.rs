//! The server side: detections applications push (a [`DetectionBatch`] of what their
//! [`super::AnomalyFeed`] opened or extended), checked, kept bounded, and listed newest
//! first.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;

use super::detection::{AnomalyKind, Detection, Severity};
use crate::snapshot::{is_source_name, SnapshotError};

/// Most detections one batch carries.
pub const MAX_BATCH: usize = 256;
/// Most evidence entries one detection carries.
pub(crate) const MAX_EVIDENCE: usize = 16;
/// JSON's largest exactly representable integer: the largest id or hour accepted.
const MAX_INT: u64 = 9_007_199_254_740_991;

/// What an application pushes: detections of its detector, new or extended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DetectionBatch {
    /// The process whose detector found them (1 to 100 characters: letters, digits,
    /// `.`, `_`, `:`, `@`, `-`); with a detection's id it names the detection, so pushing
    /// one again updates it.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9._:@-]+$", min_length = 1, max_length = 100)
    )]
    pub source: String,
    /// At most 256 detections.
    #[cfg_attr(feature = "openapi", schema(max_items = 256))]
    pub detections: Vec<Detection>,
}

/// A kept detection with the process that found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Anomaly {
    /// The process whose detector found it.
    pub source: String,
    /// The detection.
    pub detection: Detection,
}

/// What a push changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pushed {
    /// Each detection not seen before, as kept.
    pub new: Vec<Anomaly>,
    /// Detections updated (the same source and id pushed again).
    pub updated: usize,
}

/// Which detections a listing returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only this kind.
    pub kind: Option<AnomalyKind>,
    /// Only this severity or higher.
    pub min_severity: Option<Severity>,
    /// Only those whose last hour starts at or after this time (Unix seconds).
    pub since: Option<u64>,
}

/// Whether `s` is a detection's subject: `what:name`, 3 to 200 characters, `what` of
/// a-z and `_`, `name` of visible ASCII.
pub fn is_subject(s: &str) -> bool {
    let Some((what, name)) = s.split_once(':') else {
        return false;
    };
    (3..=200).contains(&s.len())
        && !what.is_empty()
        && what.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic())
}

fn finite(field: String, v: f64) -> Result<(), SnapshotError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(SnapshotError {
            field,
            message: "must be a finite number".into(),
        })
    }
}

fn bad(field: String, message: &str) -> SnapshotError {
    SnapshotError {
        field,
        message: message.into(),
    }
}

impl DetectionBatch {
    /// Checks every field: the first one wrong, named by its JSON path.
    pub fn check(&self) -> Result<(), SnapshotError> {
        if !is_source_name(&self.source) {
            return Err(bad(
                "source".into(),
                "must be 1 to 100 characters: letters, digits, '.', '_', ':', '@' or '-'",
            ));
        }
        if self.detections.len() > MAX_BATCH {
            return Err(bad("detections".into(), "must hold at most 256 detections"));
        }
        for (i, d) in self.detections.iter().enumerate() {
            let at = |f: &str| format!("detections[{i}].{f}");
            for (f, v) in [
                ("id", d.id),
                ("first_hour", d.first_hour),
                ("last_hour", d.last_hour),
            ] {
                if v > MAX_INT {
                    return Err(bad(at(f), "must be at most 9007199254740991"));
                }
            }
            if d.last_hour < d.first_hour {
                return Err(bad(at("last_hour"), "must not be before first_hour"));
            }
            if let Some(s) = &d.subject {
                if !is_subject(s) {
                    return Err(bad(
                        at("subject"),
                        "must be 3 to 200 characters: a-z or '_', then ':', then visible ASCII",
                    ));
                }
            }
            finite(at("score"), d.score)?;
            if d.score < 0.0 {
                return Err(bad(at("score"), "must be at least 0"));
            }
            if d.evidence.len() > MAX_EVIDENCE {
                return Err(bad(at("evidence"), "must hold at most 16 entries"));
            }
            for (j, e) in d.evidence.iter().enumerate() {
                let ok = !e.signal.is_empty()
                    && e.signal.len() <= 64
                    && e.signal
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if !ok {
                    return Err(bad(
                        at(&format!("evidence[{j}].signal")),
                        "must be 1 to 64 characters a-z, 0-9 or '_'",
                    ));
                }
                finite(at(&format!("evidence[{j}].baseline")), e.baseline)?;
                finite(at(&format!("evidence[{j}].observed")), e.observed)?;
            }
        }
        Ok(())
    }
}

/// The detections pushed to a server, the latest [`Board::new`]'s `capacity`.
#[derive(Debug)]
pub struct Board {
    capacity: usize,
    kept: VecDeque<Anomaly>,
}

impl Board {
    /// A board keeping at most `capacity` detections (at least 1).
    pub fn new(capacity: usize) -> Self {
        Board {
            capacity: capacity.max(1),
            kept: VecDeque::new(),
        }
    }

    /// Checks and keeps a batch (all of it or, when a field is wrong, none).
    pub fn push(&mut self, batch: DetectionBatch) -> Result<Pushed, SnapshotError> {
        batch.check()?;
        let mut out = Pushed::default();
        for d in batch.detections {
            let same = self
                .kept
                .iter_mut()
                .rev()
                .find(|a| a.detection.id == d.id && a.source == batch.source);
            match same {
                Some(a) => {
                    a.detection = d;
                    out.updated += 1;
                }
                None => {
                    if self.kept.len() >= self.capacity {
                        self.kept.pop_front();
                    }
                    let a = Anomaly {
                        source: batch.source.clone(),
                        detection: d,
                    };
                    out.new.push(a.clone());
                    self.kept.push_back(a);
                }
            }
        }
        Ok(out)
    }

    /// The kept detections `filter` selects, the latest first (by last hour, then by
    /// arrival), at most `limit`.
    pub fn list(&self, filter: &Filter, limit: usize) -> Vec<Anomaly> {
        let mut v: Vec<&Anomaly> = self
            .kept
            .iter()
            .filter(|a| {
                let d = &a.detection;
                filter.tenant.is_none_or(|t| d.tenant_id == Some(t))
                    && filter.kind.is_none_or(|k| d.kind == k)
                    && filter.min_severity.is_none_or(|s| d.severity >= s)
                    && filter.since.is_none_or(|s| d.last_hour >= s)
            })
            .collect();
        v.reverse();
        v.sort_by_key(|a| std::cmp::Reverse(a.detection.last_hour));
        v.into_iter().take(limit).cloned().collect()
    }
}
