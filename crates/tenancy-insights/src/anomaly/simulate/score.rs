//! Scoring alerts against the labels, the static-threshold detector compared with, and
//! a whole evaluation run.

use tenancy_core::TenantId;

use super::{Attack, AttackKind, Batcher, Simulation};
use crate::anomaly::{AccessEvent, AccessKind, Fingerprint};

/// How a set of alerts scores against the labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Alerts that fall on an attacked tenant during its attack (or within a day after).
    pub true_alerts: usize,
    /// Alerts that do not.
    pub false_alerts: usize,
    /// Attacks with at least one alert.
    pub detected: usize,
    /// Attacks.
    pub attacks: usize,
    /// True alerts over all alerts (1 with no alert).
    pub precision: f64,
    /// Detected attacks over attacks.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// False alerts per tenant-week after the baseline.
    pub false_alarms_per_tenant_week: f64,
    /// Per attack kind: (kind, detected, attacks).
    pub by_kind: Vec<(AttackKind, usize, usize)>,
}

/// Scores alerts — `(tenant, hour)`: the tenant and the first hour an alert names —
/// against `attacks`. An alert is true when it names an attacked tenant in the hours of
/// its attack or the 24 after (an EWMA needs some hours to rise).
pub fn evaluate(alerts: &[(TenantId, u64)], attacks: &[Attack], tenant_weeks: f64) -> Evaluation {
    let hits = |a: &Attack, (t, h): &(TenantId, u64)| {
        *t == a.tenant && *h >= a.first_hour && *h <= a.last_hour + 24
    };
    let true_alerts = alerts
        .iter()
        .filter(|al| attacks.iter().any(|a| hits(a, al)))
        .count();
    let false_alerts = alerts.len() - true_alerts;
    let found: Vec<bool> = attacks
        .iter()
        .map(|a| alerts.iter().any(|al| hits(a, al)))
        .collect();
    let detected = found.iter().filter(|f| **f).count();
    let precision = if alerts.is_empty() {
        1.0
    } else {
        true_alerts as f64 / alerts.len() as f64
    };
    let recall = if attacks.is_empty() {
        1.0
    } else {
        detected as f64 / attacks.len() as f64
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let by_kind = AttackKind::ALL
        .iter()
        .map(|k| {
            let of: Vec<usize> = (0..attacks.len())
                .filter(|&i| attacks[i].kind == *k)
                .collect();
            (*k, of.iter().filter(|&&i| found[i]).count(), of.len())
        })
        .collect();
    Evaluation {
        true_alerts,
        false_alerts,
        detected,
        attacks: attacks.len(),
        precision,
        recall,
        f1,
        false_alarms_per_tenant_week: if tenant_weeks > 0.0 {
            false_alerts as f64 / tenant_weeks
        } else {
            0.0
        },
        by_kind,
    }
}

/// The comparison detector: fixed thresholds on the same signals, the same for every
/// tenant (what a static alerting rule set does). Per tenant and hour: requests, 404s on
/// id lookups, context refusals, tenant mismatches, requests over a fixed row count,
/// tenants per subject in a day; alerts of one tenant and rule within six hours are one.
#[derive(Debug)]
pub struct StaticDetector {
    hour: Option<u64>,
    counts: std::collections::HashMap<TenantId, [u32; 5]>,
    /// Per subject: its first tenant and the tenants it used in the current day.
    subjects: std::collections::HashMap<Fingerprint, (TenantId, u64, Vec<TenantId>)>,
    last: std::collections::HashMap<(TenantId, usize), u64>,
    alerts: Vec<(TenantId, u64)>,
}

impl StaticDetector {
    /// Requests per hour above which a tenant is noisy.
    pub const REQUESTS: u32 = 2000;
    /// 404s on id lookups per hour.
    pub const NOT_FOUND: u32 = 25;
    /// Context refusals or tenant mismatches per hour.
    pub const REFUSALS: u32 = 3;
    /// Rows above which a request is heavy.
    pub const HEAVY_ROWS: u64 = 2000;
    /// Bytes above which a request is heavy (the request layer records bytes, not rows).
    pub const HEAVY_BYTES: u64 = 256 * 1024;
    /// Heavy requests per hour that alert.
    pub const HEAVY: u32 = 3;
    /// Tenants a subject uses in one day.
    pub const TENANTS_PER_DAY: usize = 4;

    /// A detector with no alert yet.
    pub fn new() -> Self {
        StaticDetector {
            hour: None,
            counts: Default::default(),
            subjects: Default::default(),
            last: Default::default(),
            alerts: Vec::new(),
        }
    }

    /// Counts one event (events in time order).
    pub fn observe(&mut self, e: &AccessEvent) {
        let hour = e.at / 3600;
        self.advance(hour);
        let c = self.counts.entry(e.tenant).or_default();
        let AccessKind::Response {
            status,
            id_lookup,
            rows,
            bytes,
        } = e.kind
        else {
            match e.kind {
                AccessKind::ContextRefused => c[2] += 1,
                AccessKind::TenantMismatch => c[3] += 1,
                AccessKind::Response { .. } => {}
            }
            return;
        };
        c[0] += 1;
        if id_lookup && status == 404 {
            c[1] += 1;
        }
        if rows > Self::HEAVY_ROWS || bytes > Self::HEAVY_BYTES {
            c[4] += 1;
        }
        if let (Some(s), true) = (e.subject, status < 400) {
            let day = hour / 24;
            let st = self
                .subjects
                .entry(s)
                .or_insert((e.tenant, day, Vec::new()));
            if st.1 != day {
                st.1 = day;
                st.2.clear();
            }
            if !st.2.contains(&e.tenant) {
                st.2.push(e.tenant);
                if st.2.len() >= Self::TENANTS_PER_DAY {
                    let home = st.0;
                    self.alert(home, 5, hour);
                }
            }
        }
    }

    /// Closes the hours before `hour`.
    pub fn advance(&mut self, hour: u64) {
        let Some(h) = self.hour else {
            self.hour = Some(hour);
            return;
        };
        if hour <= h {
            return;
        }
        let counts = std::mem::take(&mut self.counts);
        for (t, c) in counts {
            let rules = [
                c[0] > Self::REQUESTS,
                c[1] > Self::NOT_FOUND,
                c[2] >= Self::REFUSALS,
                c[3] >= Self::REFUSALS,
                c[4] >= Self::HEAVY,
            ];
            for (r, hit) in rules.into_iter().enumerate() {
                if hit {
                    self.alert(t, r, h);
                }
            }
        }
        self.hour = Some(hour);
    }

    fn alert(&mut self, tenant: TenantId, rule: usize, hour: u64) {
        match self.last.insert((tenant, rule), hour) {
            Some(prev) if hour <= prev + 6 => {}
            _ => self.alerts.push((tenant, hour)),
        }
    }

    /// The alerts so far: tenant and first hour.
    pub fn alerts(&self) -> &[(TenantId, u64)] {
        &self.alerts
    }
}

impl Default for StaticDetector {
    fn default() -> Self {
        Self::new()
    }
}

/// The results of one evaluation run: ours and the static detector on the same events.
#[derive(Debug, Clone)]
pub struct Run {
    /// The detector's evaluation.
    pub ours: Evaluation,
    /// The static detector's evaluation.
    pub baseline: Evaluation,
    /// Events generated.
    pub events: u64,
    /// Requests the real-HTTP replay sends for them (= `events` unbatched).
    pub requests: u64,
    /// Tenants simulated.
    pub tenants: usize,
    /// The detector's detections.
    pub detections: Vec<crate::anomaly::Detection>,
}

/// Generates the traffic of `sim` hour by hour and feeds every event to a detector with
/// `opts` and to the static detector; scores both.
pub fn run(
    sim: &mut Simulation,
    opts: crate::anomaly::DetectorOptions,
) -> Result<Run, crate::anomaly::OptionsError> {
    run_with(sim, opts, false)
}

/// [`run`]; with `batched`, the events go in as the real-HTTP replay sends them
/// ([`Batcher`]: a request standing for its batch observed once per request it stands
/// for), so the figures are what the replay should measure.
pub fn run_with(
    sim: &mut Simulation,
    opts: crate::anomaly::DetectorOptions,
    batched: bool,
) -> Result<Run, crate::anomaly::OptionsError> {
    let mut ours = crate::anomaly::Detector::new(opts)?;
    let mut baseline = StaticDetector::new();
    let mut detections = Vec::new();
    let mut events = 0u64;
    let mut requests = 0u64;
    let mut buf = Vec::new();
    let mut batcher = Batcher::default();
    for hour in sim.hours() {
        buf.clear();
        sim.labelled_hour(hour, &mut buf);
        // Events of one hour in time order across tenants.
        buf.sort_by_key(|l| l.event.at);
        events += buf.len() as u64;
        let feed: Vec<(AccessEvent, u32)> = if batched {
            batcher
                .batches(&buf)
                .into_iter()
                .map(|b| (b.event, b.weight))
                .collect()
        } else {
            buf.iter().map(|l| (l.event, 1)).collect()
        };
        requests += feed.len() as u64;
        for (e, w) in &feed {
            for _ in 0..*w {
                detections.extend(ours.observe(e));
                baseline.observe(e);
            }
        }
    }
    let end = sim.hours().end;
    detections.extend(ours.advance(end * 3600));
    baseline.advance(end);
    let alerts: Vec<(TenantId, u64)> = detections
        .iter()
        .filter_map(|d| Some((d.tenant_id?, d.first_hour / 3600)))
        .collect();
    let weeks = sim.scored_tenant_weeks();
    Ok(Run {
        ours: evaluate(&alerts, sim.attacks(), weeks),
        baseline: evaluate(baseline.alerts(), sim.attacks(), weeks),
        events,
        requests,
        tenants: sim.tenants.len(),
        detections,
    })
}
