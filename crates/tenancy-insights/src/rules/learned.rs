//! The learned detectors: provisioning and move steps against their own history, tenants
//! stuck in `provisioning`, and bursts of configuration changes against each actor's own
//! rate.
//!
//! Statistics, and why:
//! - durations (a step's, provisioning's) are skewed and their history holds the odd
//!   very slow run: the median and the median absolute deviation (scaled by 1.4826 to
//!   estimate a standard deviation) ignore those outliers where a mean and standard
//!   deviation would absorb them, and need no distribution. A step is slow when the median
//!   of its recent runs is [`LearnedOptions::z`] robust deviations above the history's
//!   median; a tenant is stuck when it has been provisioning longer than that past the
//!   median provisioning time (and at least [`LearnedOptions::stuck_floor_secs`]).
//! - failures and changes are counts: under the history's rate a count in the window is
//!   near-Poisson, and the Chernoff tail bound ([`crate::anomaly::poisson_tail`]) judges a
//!   step run ten times a day and one run ten thousand times on the same footing. The
//!   history's rate has a floor (a pseudo-count for failures, a prior rate for changes),
//!   so an empty history never makes a single event an anomaly.
//!
//! Each needs [`LearnedOptions::min_history`] past observations before it judges anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tenancy_core::TenantId;

use crate::anomaly::{poisson_tail, AnomalyKind, Evidence, Severity};

use super::Finding;

/// The learned detectors' history and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnedOptions {
    /// Days of history the baselines learn from (1 to 365). Default 14.
    pub history_days: u32,
    /// The recent window judged against the history, in seconds (60 to 604,800).
    /// Default 86,400 (one day).
    pub window_secs: u64,
    /// Past observations (runs of a step, finished provisionings) a baseline needs
    /// (1 to 10,000). Default 8.
    pub min_history: usize,
    /// Robust deviations above the median from which a duration is anomalous (above 0).
    /// Default 6.
    pub z: f64,
    /// Least time a tenant is provisioning before it can be stuck, in seconds. Default
    /// 600.
    pub stuck_floor_secs: f64,
    /// `-log10` of the tail probability from which a count is anomalous (above 0).
    /// Default 6 (one in a million).
    pub tail: f64,
    /// Least failures of a step in the window for a finding. Default 5.
    pub min_failures: u64,
    /// Least changes of one actor in one hour for a finding. Default 20.
    pub min_changes: u64,
    /// The least rate of changes per hour an actor's history is taken to have (above 0).
    /// Default 1.
    pub change_rate_floor: f64,
}

impl Default for LearnedOptions {
    fn default() -> Self {
        LearnedOptions {
            history_days: 14,
            window_secs: 86_400,
            min_history: 8,
            z: 6.0,
            stuck_floor_secs: 600.0,
            tail: 6.0,
            min_failures: 5,
            min_changes: 20,
            change_rate_floor: 1.0,
        }
    }
}

impl LearnedOptions {
    /// Checks every field; the error names the first one wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "insights.rules.learned.{name} must be a number above 0"
                ))
            }
        };
        if !(1..=365).contains(&self.history_days) {
            return Err("insights.rules.learned.history_days must be between 1 and 365".into());
        }
        if !(60..=604_800).contains(&self.window_secs) {
            return Err("insights.rules.learned.window_secs must be between 60 and 604800".into());
        }
        if !(1..=10_000).contains(&self.min_history) {
            return Err("insights.rules.learned.min_history must be between 1 and 10000".into());
        }
        positive("z", self.z)?;
        positive("tail", self.tail)?;
        positive("change_rate_floor", self.change_rate_floor)?;
        if !(self.stuck_floor_secs.is_finite() && self.stuck_floor_secs >= 0.0) {
            return Err("insights.rules.learned.stuck_floor_secs must be at least 0".into());
        }
        Ok(())
    }

    /// The start of the history (Unix seconds) for a check at `now`.
    pub fn history_start(&self, now: u64) -> u64 {
        now.saturating_sub(u64::from(self.history_days) * 86_400)
    }
}

/// One run of a provisioning or move step (`tenancy_catalog.workflow_steps`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepRun {
    /// The step's name.
    pub step: String,
    /// When it ended (Unix seconds).
    pub at: u64,
    /// Whether it failed (`failed` or `retry`).
    pub failed: bool,
    /// How long it took, in milliseconds.
    pub ms: f64,
}

/// One configuration change (`tenancy_catalog.config_changes`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeFact {
    /// Who made it.
    pub actor: String,
    /// When (Unix seconds).
    pub at: u64,
    /// The tenant it concerns, for tenant-level changes.
    pub tenant: Option<TenantId>,
}

/// The median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median and the scaled median absolute deviation (an estimate of the standard
/// deviation robust to outliers) of `v`, the deviation at least `floor`.
pub fn median_mad(v: &[f64], floor: f64) -> Option<(f64, f64)> {
    let mut v = v.to_vec();
    let m = median(&mut v)?;
    let mut dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut dev).unwrap_or(0.0) * 1.4826;
    Some((m, mad.max(floor)))
}

/// A name as the `name` part of a subject: visible ASCII, others replaced by `_`, at
/// most 180 bytes.
pub(crate) fn subject(what: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(180)
        .collect();
    let clean = if clean.is_empty() { "_".into() } else { clean };
    format!("{what}:{clean}")
}

fn learned(
    kind: AnomalyKind,
    tenant: Option<TenantId>,
    subject: String,
    score: f64,
    message: String,
    evidence: Vec<Evidence>,
) -> Finding {
    Finding {
        kind,
        tenant,
        subject: Some(subject),
        severity: Severity::of(kind, score),
        score,
        message: format!("detector {}: {message}", kind.as_str()),
        evidence,
    }
}

fn ev(signal: &str, baseline: f64, observed: f64) -> Evidence {
    Evidence {
        signal: signal.into(),
        baseline,
        observed,
    }
}

/// Steps failing more often, or running slower, in the window ending at `now` than over
/// the history before it. `runs` may hold anything; only the history is read.
pub fn step_anomalies(runs: &[StepRun], now: u64, o: &LearnedOptions) -> Vec<Finding> {
    let start = o.history_start(now);
    let window = now.saturating_sub(o.window_secs);
    #[derive(Default)]
    struct Acc {
        past_runs: u64,
        past_failures: u64,
        past_ms: Vec<f64>,
        runs: u64,
        failures: u64,
        ms: Vec<f64>,
    }
    let mut by_step: BTreeMap<&str, Acc> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.at >= start && r.at <= now) {
        let a = by_step.entry(&r.step).or_default();
        let recent = r.at >= window;
        let (n, f, ms) = if recent {
            (&mut a.runs, &mut a.failures, &mut a.ms)
        } else {
            (&mut a.past_runs, &mut a.past_failures, &mut a.past_ms)
        };
        *n += 1;
        if r.failed {
            *f += 1;
        } else if r.ms.is_finite() && r.ms >= 0.0 {
            ms.push(r.ms);
        }
    }
    let mut out = Vec::new();
    for (step, a) in by_step {
        if (a.past_runs as usize) < o.min_history {
            continue;
        }
        // The history's failure rate with one pseudo-failure in two pseudo-runs: a step
        // that never failed is not taken to never fail.
        let rate = (a.past_failures as f64 + 1.0) / (a.past_runs as f64 + 2.0);
        let expected = rate * a.runs as f64;
        let tail = poisson_tail(a.failures as f64, expected);
        if a.failures >= o.min_failures && tail >= o.tail {
            out.push(learned(
                AnomalyKind::StepFailures,
                None,
                subject("step", step),
                tail / o.tail,
                format!(
                    "step {step} failed {} times in {} runs over the last {} s, against {expected:.2} expected at its rate of {rate:.4}",
                    a.failures, a.runs, o.window_secs
                ),
                vec![
                    ev("failures_in_window", expected, a.failures as f64),
                    ev("failure_rate", rate, a.failures as f64 / a.runs.max(1) as f64),
                ],
            ));
        }
        if a.past_ms.len() < o.min_history || a.ms.len() < 3 {
            continue;
        }
        let Some((m, d)) = median_mad(&a.past_ms, 1.0) else {
            continue;
        };
        // The deviation is at least a twentieth of the median: a step of very steady
        // duration is not flagged for a few milliseconds more.
        let d = d.max(m / 20.0);
        let mut recent = a.ms.clone();
        let r = median(&mut recent).unwrap_or(m);
        let z = (r - m) / d;
        if z >= o.z {
            out.push(learned(
                AnomalyKind::StepDuration,
                None,
                subject("step", step),
                z / o.z,
                format!(
                    "step {step} took a median {r:.0} ms over its last {} runs, against a median of {m:.0} ms (deviation {d:.0} ms)",
                    a.ms.len()
                ),
                vec![
                    ev("median_ms", m, r),
                    ev("robust_z", o.z, z),
                ],
            ));
        }
    }
    out
}

/// Tenants provisioning far longer than provisioning usually takes: `provisioning` holds
/// each tenant in `provisioning` with the seconds since it started, `finished` the
/// durations (seconds) of the provisionings that succeeded over the history.
pub fn stuck_provisioning(
    provisioning: &[(TenantId, f64)],
    finished: &[f64],
    o: &LearnedOptions,
) -> Vec<Finding> {
    if finished.len() < o.min_history {
        return Vec::new();
    }
    let Some((m, d)) = median_mad(finished, 1.0) else {
        return Vec::new();
    };
    let d = d.max(m / 20.0);
    let limit = (m + o.z * d).max(o.stuck_floor_secs);
    provisioning
        .iter()
        .filter(|(_, age)| age.is_finite() && *age > limit)
        .map(|(t, age)| {
            learned(
                AnomalyKind::StuckProvisioning,
                Some(*t),
                "state:provisioning".into(),
                age / limit,
                format!(
                    "tenant {t} has been provisioning for {age:.0} s; provisioning takes a median {m:.0} s (deviation {d:.0} s), the limit is {limit:.0} s"
                ),
                vec![ev("provisioning_seconds", m, *age), ev("limit_seconds", limit, *age)],
            )
        })
        .collect()
}

/// Actors whose configuration changes in the last hour before `now` are far above their
/// own hourly rate over the history before it.
pub fn change_bursts(changes: &[ChangeFact], now: u64, o: &LearnedOptions) -> Vec<Finding> {
    let start = o.history_start(now);
    let hour = now.saturating_sub(3600);
    #[derive(Default)]
    struct Acc {
        first: Option<u64>,
        past: u64,
        recent: u64,
        tenants: BTreeMap<Option<TenantId>, u64>,
    }
    let mut by_actor: BTreeMap<&str, Acc> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.at >= start && c.at <= now) {
        let a = by_actor.entry(&c.actor).or_default();
        a.first = Some(a.first.map_or(c.at, |f| f.min(c.at)));
        if c.at >= hour {
            a.recent += 1;
            *a.tenants.entry(c.tenant).or_default() += 1;
        } else {
            a.past += 1;
        }
    }
    let mut out = Vec::new();
    for (actor, a) in by_actor {
        // The hours of history the actor had: from its first change (or the history's
        // start) to the window, at least one.
        let since = a.first.unwrap_or(start).max(start);
        let hours = (hour.saturating_sub(since) as f64 / 3600.0).max(1.0);
        let rate = (a.past as f64 / hours).max(o.change_rate_floor);
        let tail = poisson_tail(a.recent as f64, rate);
        if a.recent < o.min_changes || tail < o.tail {
            continue;
        }
        // The tenant, when every change of the burst concerns the same one.
        let tenant = match a.tenants.keys().collect::<Vec<_>>().as_slice() {
            [Some(t)] => Some(*t),
            _ => None,
        };
        out.push(learned(
            AnomalyKind::ChangeBurst,
            tenant,
            subject("actor", actor),
            tail / o.tail,
            format!(
                "{actor} made {} configuration changes in the last hour, against {rate:.2} an hour over its history",
                a.recent
            ),
            vec![ev("changes_per_hour", rate, a.recent as f64)],
        ));
    }
    out
}
