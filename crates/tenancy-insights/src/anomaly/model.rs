//! A tenant's baseline: what its baseline phase collects, the model built from it, and
//! the scoring of one closed hour against that model.

use super::detection::{AnomalyKind, Evidence};
use super::detector::Thresholds;

/// Hours in a week: the seasonal profile has one expected volume per hour of the week.
pub(super) const WEEK: usize = 168;
/// Log2 buckets of rows and bytes per request (up to 2^47).
pub(super) const BUCKETS: usize = 48;
/// Per-hour decay of the rate counters (a half-life of about six days).
pub(super) const DECAY: f64 = 0.995;
/// Weight of a new week's observation in an hour-of-week slot's expected volume.
pub(super) const SLOT_ALPHA: f32 = 0.25;

/// One hour of one tenant's signals.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct HourCounts {
    pub(super) requests: u32,
    pub(super) lookups: u32,
    pub(super) not_found: u32,
    pub(super) refusals: u32,
    pub(super) mismatches: u32,
    /// Requests above the tenant's heavy threshold (rows or bytes).
    pub(super) heavy: u32,
    /// Requests of the tenant's keys from a new network and agent at an unusual hour.
    pub(super) new_origin: u32,
    /// Most tenants one of the tenant's subjects reached for the first time in 24 hours.
    pub(super) new_tenants: u32,
}

/// What a tenant's baseline phase collects.
#[derive(Debug)]
pub(super) struct Learning {
    /// Requests in each hour so far.
    pub(super) requests: Vec<u32>,
    /// The index of the first hour (hours since the Unix epoch).
    pub(super) first_hour: u64,
    pub(super) rows: [u32; BUCKETS],
    pub(super) bytes: [u32; BUCKETS],
    pub(super) rates: Rates,
}

/// Decaying event counts: the tenant's own rates of 404s, refusals, mismatches and
/// heavy requests (an EWMA of counts, so a quiet hour weighs as much as a busy one
/// relative to its traffic).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Rates {
    pub(super) requests: f64,
    pub(super) lookups: f64,
    pub(super) not_found: f64,
    pub(super) refusals: f64,
    pub(super) mismatches: f64,
    pub(super) heavy: f64,
}

impl Rates {
    pub(super) fn add(&mut self, c: &HourCounts, decay: f64) {
        self.requests = self.requests * decay + f64::from(c.requests);
        self.lookups = self.lookups * decay + f64::from(c.lookups);
        self.not_found = self.not_found * decay + f64::from(c.not_found);
        self.refusals = self.refusals * decay + f64::from(c.refusals);
        self.mismatches = self.mismatches * decay + f64::from(c.mismatches);
        self.heavy = self.heavy * decay + f64::from(c.heavy);
    }

    /// 404s per id lookup, with a prior of one per hundred lookups' worth of evidence
    /// so a tenant with no 404 yet does not expect exactly none.
    pub(super) fn not_found_rate(&self) -> f64 {
        (self.not_found + 1.0) / (self.lookups + 100.0)
    }

    pub(super) fn refusal_rate(&self) -> f64 {
        (self.refusals + 0.5) / (self.requests + 1000.0)
    }

    pub(super) fn mismatch_rate(&self) -> f64 {
        (self.mismatches + 0.5) / (self.requests + 1000.0)
    }

    pub(super) fn heavy_rate(&self) -> f64 {
        (self.heavy + 0.1) / (self.requests + 100.0)
    }
}

/// A tenant's learned baseline.
#[derive(Debug)]
pub(super) struct Model {
    /// Expected requests per hour of the week (Monday 00:00 UTC first).
    pub(super) expected: Box<[f32; WEEK]>,
    /// Robust scale of the standardised residual `(x − e) / √(e + 1)`: 1.4826 × its MAD
    /// over the baseline, then an EWMA of winsorised absolute residuals.
    pub(super) scale: f32,
    pub(super) rates: Rates,
    /// Rows and bytes above which a request is heavy (the baseline's 99.9th percentile
    /// bucket's upper edge).
    pub(super) heavy_rows: u64,
    pub(super) heavy_bytes: u64,
    /// EWMA of heavy requests above their expected number, and of that expected number.
    pub(super) heavy_excess: f64,
    pub(super) heavy_expected: f64,
}

/// The hour of the week of an hour since the Unix epoch (a Thursday): Monday 00:00 UTC
/// is 0.
pub fn hour_of_week(hour: u64) -> usize {
    let day = hour / 24;
    (((day + 3) % 7) * 24 + hour % 24) as usize
}

/// `-log10` of the Chernoff bound on a Poisson(`mu`) variable reaching `x`: a tail
/// probability that needs no special functions and is never below the exact one.
pub fn poisson_tail(x: f64, mu: f64) -> f64 {
    if x <= mu || mu <= 0.0 {
        return 0.0;
    }
    (x * (x / mu).ln() - x + mu) / std::f64::consts::LN_10
}

pub(super) fn bucket(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).min(BUCKETS - 1)
}

/// The smallest value above the `q` quantile bucket of `hist`: values at or above it
/// are heavy.
pub(super) fn heavy_edge(hist: &[u32; BUCKETS], q: f64) -> u64 {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    let allowed = ((1.0 - q) * total as f64).floor() as u64;
    let mut above = 0u64;
    for b in (0..BUCKETS).rev() {
        above += u64::from(hist[b]);
        if above > allowed {
            // Bucket b holds values below 2^b.
            return 1u64 << b.min(62);
        }
    }
    1
}

pub(super) fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Learning {
    /// The model the baseline supports. Each hour of the week expects half what it saw
    /// (the mean over the baseline's weeks) and half the median of the same hour of the
    /// day over the baseline's days: one week alone gives one sample per hour of the
    /// week, the median of the days steadies it. The residual scale is the MAD of the
    /// baseline's own standardised residuals, so a bursty tenant is judged against its
    /// own burstiness.
    pub(super) fn model(&self) -> Model {
        let mut sum = [0f32; WEEK];
        let mut n = [0u32; WEEK];
        let mut by_hour: Vec<Vec<f32>> = vec![Vec::new(); 24];
        for (i, &x) in self.requests.iter().enumerate() {
            let h = self.first_hour + i as u64;
            let s = hour_of_week(h);
            sum[s] += x as f32;
            n[s] += 1;
            by_hour[(h % 24) as usize].push(x as f32);
        }
        let day_median: Vec<f32> = by_hour.iter_mut().map(|v| median(v)).collect();
        let mut expected = Box::new([0f32; WEEK]);
        for s in 0..WEEK {
            let m = day_median[s % 24];
            expected[s] = if n[s] > 0 {
                0.5 * sum[s] / n[s] as f32 + 0.5 * m
            } else {
                m
            };
        }
        let mut resid: Vec<f32> = self
            .requests
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let e = expected[hour_of_week(self.first_hour + i as u64)];
                (x as f32 - e) / (e + 1.0).sqrt()
            })
            .collect();
        let med = median(&mut resid);
        let mut dev: Vec<f32> = resid.iter().map(|r| (r - med).abs()).collect();
        let scale = (1.4826 * median(&mut dev)).max(1.0);
        let heavy_rows = heavy_edge(&self.rows, 0.999);
        let heavy_bytes = heavy_edge(&self.bytes, 0.999);
        let mut rates = self.rates;
        let above = |hist: &[u32; BUCKETS], edge: u64| -> f64 {
            hist[bucket(edge)..].iter().map(|&c| f64::from(c)).sum()
        };
        rates.heavy = above(&self.rows, heavy_rows).max(above(&self.bytes, heavy_bytes));
        Model {
            expected,
            scale,
            rates,
            heavy_rows,
            heavy_bytes,
            heavy_excess: 0.0,
            heavy_expected: 0.0,
        }
    }
}

/// A flag raised by one detector for one closed hour.
pub(super) struct Flag {
    pub(super) kind: AnomalyKind,
    pub(super) score: f64,
    pub(super) evidence: Vec<Evidence>,
}

pub(super) fn ev(signal: &str, baseline: f64, observed: f64) -> Evidence {
    Evidence {
        signal: signal.to_owned(),
        baseline: (baseline * 1000.0).round() / 1000.0,
        observed: (observed * 1000.0).round() / 1000.0,
    }
}

impl Model {
    /// Scores one closed hour and learns from it (what was flagged is not learned).
    pub(super) fn score(&mut self, hour: u64, c: &HourCounts, t: &Thresholds) -> Vec<Flag> {
        let mut flags = Vec::new();
        let x = f64::from(c.requests);

        // Volume against the hour of the week, and against the hours either side of it:
        // a tenant whose clock moved an hour (daylight saving, a shifted schedule) is
        // not a noisy neighbour.
        let slot = hour_of_week(hour);
        let e = f64::from(self.expected[slot]);
        let near = [(slot + WEEK - 1) % WEEK, slot, (slot + 1) % WEEK]
            .iter()
            .map(|&s| f64::from(self.expected[s]))
            .fold(e, f64::max);
        let sd = (near + 1.0).sqrt();
        let z = (x - near) / sd / f64::from(self.scale);
        let volume = z >= t.volume_z && x >= t.volume_ratio * near + t.volume_excess;
        if volume {
            flags.push(Flag {
                kind: AnomalyKind::Volume,
                score: z / t.volume_z,
                evidence: vec![ev("requests_per_hour", near, x)],
            });
        } else {
            let sd = (e + 1.0).sqrt();
            let capped = x.min(e + 3.0 * f64::from(self.scale) * sd);
            self.expected[slot] = (e + f64::from(SLOT_ALPHA) * (capped - e)) as f32;
            let r = ((capped - e) / sd).abs() as f32;
            self.scale = (0.99 * self.scale + 0.01 * 1.2533 * r).max(1.0);
        }

        // Rare events against the tenant's own rate per request.
        let mut learn = *c;
        // (kind, signal, observed, expected, tail threshold, fewest, least ratio)
        let rare = [
            (
                AnomalyKind::Enumeration,
                "not_found_per_hour",
                c.not_found,
                f64::from(c.lookups) * self.rates.not_found_rate(),
                t.not_found_tail,
                t.not_found_min,
                t.not_found_ratio,
            ),
            (
                AnomalyKind::ContextRefusal,
                "refusals_per_hour",
                c.refusals,
                x.max(1.0) * self.rates.refusal_rate(),
                t.refusal_tail,
                t.refusal_min,
                1.0,
            ),
            (
                AnomalyKind::TenantMismatch,
                "tenant_mismatches_per_hour",
                c.mismatches,
                x.max(1.0) * self.rates.mismatch_rate(),
                t.refusal_tail,
                t.refusal_min,
                1.0,
            ),
        ];
        for (kind, signal, n, mu, tail, min, ratio) in rare {
            let mu = mu.max(0.05);
            let s = poisson_tail(f64::from(n), mu);
            if n >= min && s >= tail && f64::from(n) >= ratio * mu {
                flags.push(Flag {
                    kind,
                    score: s / tail,
                    evidence: vec![ev(signal, mu, f64::from(n))],
                });
                match kind {
                    AnomalyKind::Enumeration => learn.not_found = 0,
                    AnomalyKind::ContextRefusal => learn.refusals = 0,
                    _ => learn.mismatches = 0,
                }
            }
        }

        // Heavy requests: a slow exfiltration adds a few per hour for days, too few for
        // any one hour to stand out, so their excess is averaged (EWMA) first.
        let mu = x * self.rates.heavy_rate();
        let a = t.heavy_alpha;
        self.heavy_excess = (1.0 - a) * self.heavy_excess + a * (f64::from(c.heavy) - mu);
        self.heavy_expected = (1.0 - a) * self.heavy_expected + a * mu;
        let sd = (a / (2.0 - a) * (self.heavy_expected + 0.05)).sqrt();
        let limit = (t.heavy_sigmas * sd).max(t.heavy_min);
        if self.heavy_excess >= limit {
            flags.push(Flag {
                kind: AnomalyKind::Exfiltration,
                score: self.heavy_excess / limit,
                evidence: vec![
                    ev(
                        "heavy_requests_ewma",
                        self.heavy_expected,
                        self.heavy_expected + self.heavy_excess,
                    ),
                    ev(
                        "heavy_rows_threshold",
                        self.heavy_rows as f64,
                        self.heavy_rows as f64,
                    ),
                ],
            });
            learn.heavy = 0;
        }
        self.rates.add(&learn, DECAY);

        if c.new_tenants >= t.new_tenants {
            flags.push(Flag {
                kind: AnomalyKind::CrossTenant,
                score: f64::from(c.new_tenants) / f64::from(t.new_tenants),
                evidence: vec![ev("new_tenants_24h", 0.0, f64::from(c.new_tenants))],
            });
        }
        if c.new_origin >= t.new_origin_min {
            flags.push(Flag {
                kind: AnomalyKind::NewOrigin,
                score: f64::from(c.new_origin) / f64::from(t.new_origin_min),
                evidence: vec![ev("new_origin_requests", 0.0, f64::from(c.new_origin))],
            });
        }
        flags
    }
}
