//! Findings as detections: one detection per finding for as long as it holds, so that a
//! periodic check updates the detection it opened rather than opening another.

use std::collections::HashMap;

use tenancy_core::TenantId;

use super::Finding;
use crate::anomaly::{AnomalyKind, Detection};

/// Most evidence entries a detection carries.
const MAX_EVIDENCE: usize = 16;

type Key = (AnomalyKind, Option<TenantId>, Option<String>);

/// The open detection of each finding (bounded by the findings of the last check).
#[derive(Debug, Default)]
pub struct Tracker {
    next_id: u64,
    open: HashMap<Key, (u64, u64)>,
}

/// What an update of a [`Tracker`] gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracked {
    /// Every finding of the update as a detection (new or extended).
    pub detections: Vec<Detection>,
    /// Of those, the ones opened by this update (the findings not open before).
    pub opened: Vec<Detection>,
    /// Detections closed (their finding no longer holds).
    pub closed: usize,
}

impl Tracker {
    /// No open detection; ids from 0.
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Open detections.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// The findings of a check of everything at `now` (Unix seconds): each opens a
    /// detection or extends its open one; an open detection whose finding is gone is
    /// closed (the same finding later opens a new one).
    pub fn update(&mut self, findings: &[Finding], now: u64) -> Tracked {
        let mut out = self.add(findings, now);
        let current: std::collections::HashSet<Key> = findings.iter().map(owned_key).collect();
        let before = self.open.len();
        self.open.retain(|k, _| current.contains(k));
        out.closed = before - self.open.len();
        out
    }

    /// Findings of a check of part of the fleet (one change) at `now`: each opens a
    /// detection or extends its open one; nothing is closed.
    pub fn add(&mut self, findings: &[Finding], now: u64) -> Tracked {
        let hour = now - now % 3600;
        let mut out = Tracked::default();
        for f in findings {
            let key = owned_key(f);
            let (id, first, new) = match self.open.get(&key) {
                Some(&(id, first)) => (id, first, false),
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.open.insert(key, (id, hour));
                    (id, hour, true)
                }
            };
            let d = Detection {
                id,
                tenant_id: f.tenant,
                subject: f.subject.clone(),
                kind: f.kind,
                first_hour: first,
                last_hour: hour.max(first),
                score: f.score,
                severity: f.severity,
                evidence: f.evidence.iter().take(MAX_EVIDENCE).cloned().collect(),
            };
            if new {
                out.opened.push(d.clone());
            }
            out.detections.push(d);
        }
        out
    }
}

fn owned_key(f: &Finding) -> Key {
    (f.kind, f.tenant, f.subject.clone())
}
