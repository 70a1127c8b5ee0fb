//! A traffic generator with labelled attacks and benign anomalies, and the scoring of
//! detections against the labels: the evaluation harness of the detectors (and of any
//! other detector fed the same events).
//!
//! Tenants differ in size (2 to 1,000 requests in their busiest hour, log-uniform), time
//! zone, rhythm (office hours, always on, evenings, nightly batches), burstiness, 404
//! rate, page size and day-to-day swing; each has API keys used from their own networks
//! and user agents (which now and then change legitimately), users, and a few
//! consultants who work for several tenants from the start. Events are shaped as the
//! request layer records them: the credential is the request's subject (a key's or a
//! user's), rows are not seen (0), bytes are the body's length.
//!
//! Attacks start after the baseline, each on a tenant of its own, labelled with their
//! tenant and hours, and near normal behaviour ([`AttackKind`]): enumeration mixed into
//! the tenant's own 404s, token replay in bursts of three to six refused contexts, slow
//! exfiltration at two to three times the tenant's largest normal page, a credential
//! used in two to four other tenants with a few mismatches, a noisy neighbour at four
//! to seven times its busiest hour on a bursty tenant. Benign anomalies that must not
//! alarm ([`BenignKind`]) go to tenants that are not attacked: a marketing spike, a new
//! office network, daylight saving, steady growth.
//!
//! [`Batcher`] groups an hour's events into the requests the real-HTTP replay of
//! `tenancy-bench anomaly_eval` sends; [`run_with`] scores either form in process.
//!
//! Deterministic: the same options (seed included) give the same events.

use std::fmt;

use tenancy_core::TenantId;

use super::event::{AccessEvent, AccessKind, Fingerprint};

mod score;

pub use score::{evaluate, run, run_with, Evaluation, Run, StaticDetector};

/// A small, fast, seedable generator (SplitMix64): the traffic must be the same on every
/// platform and with every version of any random-number crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n ≥ 1).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Poisson(`lambda`): exact below 30, a rounded normal above.
    pub fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let mut k = 0u32;
            let mut p = 1.0;
            loop {
                p *= self.unit();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u32
    }

    fn fingerprint(&mut self) -> Fingerprint {
        Fingerprint::from_u64(self.next_u64())
    }
}

/// The attacks the generator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttackKind {
    /// Id lookups of which half or more miss (404), mixed into the tenant's own traffic,
    /// from a new client or from one of the tenant's own keys.
    Enumeration,
    /// A few requests whose context token the database refuses (three to six an hour,
    /// for one or two hours).
    TokenReplay,
    /// One to four pages an hour, two to three times the tenant's largest normal page
    /// (its 99.9th percentile), for one to two and a half days, with a normal key.
    SlowExfiltration,
    /// One of the tenant's API keys used in two to four tenants it never served, with a
    /// few tenant mismatches.
    CredentialSharing,
    /// The tenant's traffic jumps to five to eight times its busiest hour (and 50 to 150
    /// requests more), preferably on a tenant whose traffic is bursty anyway.
    NoisyNeighbour,
}

impl AttackKind {
    /// Every kind.
    pub const ALL: [AttackKind; 5] = [
        AttackKind::Enumeration,
        AttackKind::TokenReplay,
        AttackKind::SlowExfiltration,
        AttackKind::CredentialSharing,
        AttackKind::NoisyNeighbour,
    ];
}

impl fmt::Display for AttackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttackKind::Enumeration => "enumeration",
            AttackKind::TokenReplay => "token_replay",
            AttackKind::SlowExfiltration => "slow_exfiltration",
            AttackKind::CredentialSharing => "credential_sharing",
            AttackKind::NoisyNeighbour => "noisy_neighbour",
        })
    }
}

/// One injected attack: its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attack {
    /// What it is.
    pub kind: AttackKind,
    /// The tenant attacked (for credential sharing: the tenant whose user's credential
    /// is shared).
    pub tenant: TenantId,
    /// Its first hour (hours since the Unix epoch).
    pub first_hour: u64,
    /// Its last hour.
    pub last_hour: u64,
}

/// Benign anomalies the generator adds to tenants that are not attacked: none of them
/// may raise an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BenignKind {
    /// Six to twelve hours of daytime traffic at 1.8 to 2.3 times normal.
    MarketingSpike,
    /// From one day on, half the tenant's traffic comes from a new office network.
    NewOfficeNetwork,
    /// From one day on, the tenant's local clock runs an hour ahead (daylight saving).
    DaylightSaving,
    /// Traffic growing by 2–4 % a day for the whole simulation.
    Growing,
}

impl fmt::Display for BenignKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenignKind::MarketingSpike => "marketing_spike",
            BenignKind::NewOfficeNetwork => "new_office_network",
            BenignKind::DaylightSaving => "daylight_saving",
            BenignKind::Growing => "growing",
        })
    }
}

/// How the real-HTTP replay may send an event: an ordinary request of the tenant (an id
/// lookup that found its object, a page no larger than its 99.5th percentile), which may
/// be sent as one request standing for all of its kind in the hour, or anything else,
/// sent as a request of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An ordinary request: `bytes` is the tenant's median page for a page, its row for
    /// a lookup.
    Ordinary {
        /// The size a request standing for this one returns.
        bytes: u64,
    },
    /// Anything else: a 404, a larger page, a mismatch, a refused context, a request of
    /// an attack from a new client or in a tenant a credential never served.
    Single,
}

/// One generated event with what the replay needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labelled {
    /// The event.
    pub event: AccessEvent,
    /// How it may be replayed.
    pub shape: Shape,
    /// Whether an attack produced it.
    pub attack: bool,
}

/// Settings of a [`Simulation`].
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seed of every random choice.
    pub seed: u64,
    /// Tenants (at least 10).
    pub tenants: usize,
    /// Simulated days.
    pub days: u32,
    /// Days before any attack (the detectors' baseline).
    pub baseline_days: u32,
    /// Attacks of each kind, each on a tenant of its own.
    pub attacks_per_kind: usize,
    /// Tenants with each benign anomaly, each on a tenant that is not attacked (daylight
    /// saving: besides, every tenant in a zone that observes it).
    pub benign_per_kind: usize,
    /// The first simulated hour (hours since the Unix epoch).
    pub start_hour: u64,
    /// Only these kinds of attack (empty: all).
    pub kinds: Vec<AttackKind>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            seed: 1,
            tenants: 200,
            days: 30,
            baseline_days: 7,
            attacks_per_kind: 12,
            benign_per_kind: 12,
            // Monday 2026-01-05 00:00 UTC.
            start_hour: 1_767_571_200 / 3600,
            kinds: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Rhythm {
    Office,
    AlwaysOn,
    Evening,
    Batch,
}

impl Rhythm {
    /// Share of the busiest hour's traffic at `local_hour` on `weekday` (0 = Monday).
    fn shape(self, local_hour: u64, weekday: u64) -> f64 {
        let weekend = weekday >= 5;
        match self {
            Rhythm::Office => {
                let day = match local_hour {
                    8..=17 => 1.0,
                    7 | 18 => 0.5,
                    19..=21 => 0.15,
                    _ => 0.03,
                };
                if weekend {
                    day * 0.08
                } else {
                    day
                }
            }
            Rhythm::AlwaysOn => {
                let phase = (local_hour as f64 - 14.0) / 24.0 * 2.0 * std::f64::consts::PI;
                (0.7 + 0.3 * phase.cos()) * if weekend { 0.9 } else { 1.0 }
            }
            Rhythm::Evening => {
                let day = match local_hour {
                    18..=22 => 1.0,
                    12..=17 => 0.45,
                    7..=11 => 0.25,
                    23 => 0.5,
                    _ => 0.06,
                };
                day * if weekend { 1.1 } else { 0.9 }
            }
            Rhythm::Batch => match local_hour {
                1..=3 => 1.0,
                _ => 0.12,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Key {
    /// The key's subject (`api_key:<id>`): requests with the key carry it.
    id: Fingerprint,
    networks: Vec<Fingerprint>,
    agents: Vec<Fingerprint>,
}

#[derive(Debug, Clone)]
struct SimTenant {
    id: TenantId,
    peak: f64,
    tz: i64,
    rhythm: Rhythm,
    /// Bursty: now and then an hour at up to 2.2 times its normal.
    bursty: bool,
    p_lookup: f64,
    p_not_found: f64,
    rows_median: f64,
    /// Bytes per row: a page of `r` rows is `r × (row_bytes + 1)` bytes.
    row_bytes: u64,
    p_refusal: f64,
    p_mismatch: f64,
    keys: Vec<Key>,
    users: Vec<Fingerprint>,
    /// Today's swing of the traffic and of the 404 rate.
    day_factor: f64,
    day_not_found: f64,
    /// Benign anomalies: daily growth, the day daylight saving starts, the marketing
    /// spike (first hour, hours, factor), the day a new office network starts.
    growth: f64,
    dst_day: Option<u64>,
    marketing: Option<(u64, u64, f64)>,
    office: Option<(u64, Fingerprint)>,
}

impl SimTenant {
    /// Rows of the largest page of this many normal ones: the 99.9th percentile.
    fn rows_p999(&self) -> f64 {
        self.rows_median * (0.9f64 * 3.09).exp()
    }

    /// Pages up to this many rows are ordinary (the 99.5th percentile).
    fn rows_ordinary(&self) -> u64 {
        (self.rows_median * (0.9f64 * 2.576).exp()).floor() as u64
    }

    fn page_bytes(&self, rows: u64) -> u64 {
        rows * (self.row_bytes + 1)
    }
}

/// Most rows of one page (the replay seeds this many rows per tenant).
pub const MAX_ROWS: u64 = 2_000;

/// The generator: tenants, their traffic hour by hour, and the attacks injected.
#[derive(Debug)]
pub struct Simulation {
    opts: SimOptions,
    rng: Rng,
    tenants: Vec<SimTenant>,
    attacks: Vec<Attack>,
    /// Per attack: the attacker's network, agent, whether it uses the tenant's own key,
    /// and (credential sharing) the tenants the shared credential reaches.
    attackers: Vec<(Fingerprint, Fingerprint, bool, Vec<usize>)>,
    benign: Vec<(BenignKind, TenantId)>,
}

impl Simulation {
    /// Builds the tenants and plans the attacks and the benign anomalies.
    pub fn new(opts: SimOptions) -> Self {
        let mut rng = Rng::new(opts.seed);
        let n = opts.tenants.max(10);
        let mut tenants: Vec<SimTenant> = (0..n)
            .map(|_| {
                let peak = (2f64.ln() + rng.unit() * (500f64).ln()).exp();
                let keys = (0..1 + rng.below(4))
                    .map(|_| Key {
                        id: rng.fingerprint(),
                        networks: (0..1 + rng.below(3)).map(|_| rng.fingerprint()).collect(),
                        agents: (0..1 + rng.below(2)).map(|_| rng.fingerprint()).collect(),
                    })
                    .collect();
                let users = (0..2 + rng.below(40)).map(|_| rng.fingerprint()).collect();
                let tz = rng.below(21) as i64 - 10;
                SimTenant {
                    id: TenantId::from_uuid(uuid::Uuid::from_u64_pair(
                        rng.next_u64() | 1,
                        rng.next_u64(),
                    ))
                    .unwrap_or_else(|_| TenantId::new_random()),
                    peak,
                    tz,
                    rhythm: match rng.below(4) {
                        0 => Rhythm::Office,
                        1 => Rhythm::AlwaysOn,
                        2 => Rhythm::Evening,
                        _ => Rhythm::Batch,
                    },
                    bursty: rng.unit() < 0.3,
                    p_lookup: rng.range(0.3, 0.8),
                    p_not_found: rng.range(0.003, 0.03),
                    rows_median: rng.range(1.0, 20.0),
                    row_bytes: 40 + rng.below(360) as u64,
                    p_refusal: if rng.unit() < 0.5 { 2e-5 } else { 0.0 },
                    p_mismatch: if rng.unit() < 0.3 { 1e-5 } else { 0.0 },
                    keys,
                    users,
                    day_factor: 1.0,
                    day_not_found: 1.0,
                    growth: 0.0,
                    dst_day: None,
                    marketing: None,
                    office: None,
                }
            })
            .collect();
        // Consultants: users of two or three tenants from the start.
        for _ in 0..n / 10 {
            let c = rng.fingerprint();
            for _ in 0..2 + rng.below(2) {
                let t = rng.below(n);
                tenants[t].users.push(c);
            }
        }
        // Zones west of UTC+3 observe daylight saving: an hour ahead from day 18 on.
        let dst = u64::from(opts.baseline_days) + 11;
        for t in &mut tenants {
            if (-8..=2).contains(&t.tz) && (t.tz % 2 == 0) {
                t.dst_day = Some(dst);
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        // Noisy neighbours go to bursty tenants first.
        let kinds = if opts.kinds.is_empty() {
            AttackKind::ALL.to_vec()
        } else {
            opts.kinds.clone()
        };
        let first = opts.start_hour + u64::from(opts.baseline_days) * 24 + 12;
        let last = opts.start_hour + u64::from(opts.days) * 24 - 80;
        let mut attacks = Vec::new();
        let mut attackers = Vec::new();
        let mut taken = vec![false; n];
        for kind in kinds {
            for _ in 0..opts.attacks_per_kind {
                let pick = if kind == AttackKind::NoisyNeighbour {
                    order
                        .iter()
                        .copied()
                        .find(|&i| !taken[i] && tenants[i].bursty)
                        .or_else(|| order.iter().copied().find(|&i| !taken[i]))
                } else {
                    order
                        .iter()
                        .copied()
                        .find(|&i| !taken[i] && !tenants[i].bursty)
                        .or_else(|| order.iter().copied().find(|&i| !taken[i]))
                };
                let Some(t) = pick else { break };
                taken[t] = true;
                let hours = match kind {
                    AttackKind::Enumeration => 2 + rng.below(5),
                    AttackKind::TokenReplay => 1 + rng.below(2),
                    AttackKind::SlowExfiltration => 24 + rng.below(37),
                    AttackKind::CredentialSharing => 6 + rng.below(13),
                    AttackKind::NoisyNeighbour => 2 + rng.below(5),
                } as u64;
                let start = first + rng.below(last.saturating_sub(first).max(1) as usize) as u64;
                let reach = (0..2 + rng.below(3))
                    .map(|_| loop {
                        let o = rng.below(n);
                        if o != t {
                            break o;
                        }
                    })
                    .collect();
                attacks.push(Attack {
                    kind,
                    tenant: tenants[t].id,
                    first_hour: start,
                    last_hour: start + hours - 1,
                });
                let insider = rng.unit() < 0.5;
                attackers.push((rng.fingerprint(), rng.fingerprint(), insider, reach));
            }
        }
        // Benign anomalies on tenants not attacked.
        let mut benign = Vec::new();
        let mut free = order
            .iter()
            .copied()
            .filter(|&i| !taken[i] && !tenants[i].bursty)
            .collect::<Vec<_>>()
            .into_iter()
            .cycle();
        let from = u64::from(opts.baseline_days) + 1;
        let span = u64::from(opts.days).saturating_sub(from + 2).max(1) as usize;
        for kind in [
            BenignKind::MarketingSpike,
            BenignKind::NewOfficeNetwork,
            BenignKind::DaylightSaving,
            BenignKind::Growing,
        ] {
            for _ in 0..opts.benign_per_kind {
                let Some(i) = free.next() else { break };
                let day = from + rng.below(span) as u64;
                let t = &mut tenants[i];
                match kind {
                    BenignKind::MarketingSpike => {
                        // From 10:00 local time.
                        let h = opts.start_hour + day * 24;
                        let h = (h as i64 + 10 - t.tz) as u64;
                        t.marketing = Some((h, 6 + rng.below(7) as u64, rng.range(1.8, 2.3)));
                    }
                    BenignKind::NewOfficeNetwork => t.office = Some((day, rng.fingerprint())),
                    BenignKind::DaylightSaving => t.dst_day = Some(day),
                    BenignKind::Growing => t.growth = rng.range(0.02, 0.04),
                }
                benign.push((kind, t.id));
            }
        }
        Simulation {
            opts,
            rng,
            tenants,
            attacks,
            attackers,
            benign,
        }
    }

    /// The injected attacks.
    pub fn attacks(&self) -> &[Attack] {
        &self.attacks
    }

    /// The benign anomalies planned (daylight saving besides on every tenant of a zone
    /// that observes it).
    pub fn benign(&self) -> &[(BenignKind, TenantId)] {
        &self.benign
    }

    /// The simulated tenants' ids.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|t| t.id).collect()
    }

    /// Per tenant: its id and the bytes of one of its rows (a page of `r` rows is
    /// `r × (bytes + 1)` bytes, rows joined by a newline).
    pub fn row_sizes(&self) -> Vec<(TenantId, u64)> {
        self.tenants.iter().map(|t| (t.id, t.row_bytes)).collect()
    }

    /// The simulated hours (hours since the Unix epoch).
    pub fn hours(&self) -> std::ops::Range<u64> {
        self.opts.start_hour..self.opts.start_hour + u64::from(self.opts.days) * 24
    }

    /// Tenant-weeks after the baseline: what false alarms are counted per.
    pub fn scored_tenant_weeks(&self) -> f64 {
        self.tenants.len() as f64
            * f64::from(self.opts.days - self.opts.baseline_days.min(self.opts.days))
            / 7.0
    }

    /// Appends the events of `hour` (every tenant's traffic and the attacks under way)
    /// to `out`.
    pub fn hour(&mut self, hour: u64, out: &mut Vec<AccessEvent>) {
        let mut l = Vec::new();
        self.labelled_hour(hour, &mut l);
        out.extend(l.into_iter().map(|l| l.event));
    }

    /// [`Simulation::hour`] with each event's [`Shape`] and whether an attack made it.
    pub fn labelled_hour(&mut self, hour: u64, out: &mut Vec<Labelled>) {
        let new_day = hour % 24 == 0 || hour == self.opts.start_hour;
        for i in 0..self.tenants.len() {
            if new_day {
                let rng = &mut self.rng;
                let t = &mut self.tenants[i];
                t.day_factor = (0.15 * rng.normal()).exp();
                t.day_not_found = (0.3 * rng.normal()).exp();
                // Now and then a key moves to a new network or a new client version.
                for k in &mut t.keys {
                    if rng.unit() < 0.03 {
                        k.networks.push(rng.fingerprint());
                    }
                    if rng.unit() < 0.02 {
                        k.agents.push(rng.fingerprint());
                    }
                }
            }
            self.normal_hour(i, hour, 1.0, false, out);
        }
        for a in 0..self.attacks.len() {
            let at = self.attacks[a];
            if hour < at.first_hour || hour > at.last_hour {
                continue;
            }
            self.attack_hour(a, hour, out);
        }
    }

    /// The tenant's traffic of `hour`, its rhythm, swings and benign anomalies applied,
    /// times `extra`.
    fn lambda(&mut self, i: usize, hour: u64) -> f64 {
        let start = self.opts.start_hour;
        let t = &self.tenants[i];
        let day = (hour - start) / 24;
        let shift = i64::from(t.dst_day.is_some_and(|d| day >= d));
        let lt = hour as i64 + t.tz + shift;
        let local = lt.rem_euclid(24) as u64;
        let weekday = (lt.div_euclid(24) + 3).rem_euclid(7) as u64;
        let mut lambda = t.peak * t.rhythm.shape(local, weekday) * t.day_factor;
        lambda *= (1.0 + t.growth).powf((hour - start) as f64 / 24.0);
        if let Some((h, n, f)) = t.marketing {
            if hour >= h && hour < h + n {
                lambda *= f;
            }
        }
        if t.bursty && self.rng.unit() < 0.04 {
            lambda *= self.rng.range(1.5, 2.2);
        }
        lambda
    }

    fn normal_hour(
        &mut self,
        i: usize,
        hour: u64,
        extra: f64,
        attack: bool,
        out: &mut Vec<Labelled>,
    ) {
        let lambda = self.lambda(i, hour) * extra;
        let n = self.rng.poisson(lambda);
        let day = (hour - self.opts.start_hour) / 24;
        for _ in 0..n {
            let t = &self.tenants[i];
            let rng = &mut self.rng;
            let at = hour * 3600 + rng.below(3600) as u64;
            // The first key carries most of the traffic; users a third of it.
            let k = &t.keys[rng.below(t.keys.len()).min(rng.below(t.keys.len()))];
            let subject = if rng.unit() < 0.3 {
                t.users[rng.below(t.users.len()).min(rng.below(t.users.len()))]
            } else {
                k.id
            };
            let network = match t.office {
                Some((d, net)) if day >= d && rng.unit() < 0.5 => net,
                _ => k.networks[rng.below(k.networks.len())],
            };
            let lookup = rng.unit() < t.p_lookup;
            let miss = lookup && rng.unit() < t.p_not_found * t.day_not_found;
            let rows = if lookup {
                u64::from(!miss)
            } else {
                ((t.rows_median * (0.9 * rng.normal()).exp()).round() as u64).clamp(1, MAX_ROWS)
            };
            let (bytes, shape) = if miss {
                (0, Shape::Single)
            } else if lookup {
                (t.row_bytes, Shape::Ordinary { bytes: t.row_bytes })
            } else if rows <= t.rows_ordinary() {
                let median = (t.rows_median.round() as u64).max(1);
                (
                    t.page_bytes(rows),
                    Shape::Ordinary {
                        bytes: t.page_bytes(median),
                    },
                )
            } else {
                (t.page_bytes(rows), Shape::Single)
            };
            let mut e = AccessEvent {
                at,
                tenant: t.id,
                credential: Some(subject),
                subject: Some(subject),
                network: Some(network),
                agent: Some(k.agents[rng.below(k.agents.len())]),
                kind: AccessKind::Response {
                    status: if miss { 404 } else { 200 },
                    id_lookup: lookup,
                    rows: 0,
                    bytes,
                },
            };
            if rng.unit() < t.p_mismatch {
                e.kind = AccessKind::TenantMismatch;
                out.push(Labelled {
                    event: e,
                    shape: Shape::Single,
                    attack,
                });
                continue;
            }
            if rng.unit() < t.p_refusal {
                e.kind = AccessKind::ContextRefused;
                out.push(Labelled {
                    event: e,
                    shape: Shape::Single,
                    attack,
                });
                continue;
            }
            out.push(Labelled {
                event: e,
                shape,
                attack,
            });
        }
    }

    fn attack_hour(&mut self, a: usize, hour: u64, out: &mut Vec<Labelled>) {
        let at = self.attacks[a];
        let Some(i) = self.tenants.iter().position(|t| t.id == at.tenant) else {
            return;
        };
        let (network, agent, insider, reach) = self.attackers[a].clone();
        let t = self.tenants[i].clone();
        let k = &t.keys[0];
        let (subject, network, agent) = if insider {
            (k.id, k.networks[0], k.agents[0])
        } else {
            (t.users[0], network, agent)
        };
        let base = AccessEvent {
            at: hour * 3600,
            tenant: t.id,
            credential: Some(subject),
            subject: Some(subject),
            network: Some(network),
            agent: Some(agent),
            kind: AccessKind::ContextRefused,
        };
        let single = |event| Labelled {
            event,
            shape: Shape::Single,
            attack: true,
        };
        let rng = &mut self.rng;
        match at.kind {
            AttackKind::Enumeration => {
                let rate = 10.0 + rng.range(0.0, 30.0) + 0.05 * t.peak;
                let miss_share = rng.range(0.5, 0.85);
                for _ in 0..rng.poisson(rate) {
                    let miss = rng.unit() < miss_share;
                    let event = AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        kind: AccessKind::Response {
                            status: if miss { 404 } else { 200 },
                            id_lookup: true,
                            rows: 0,
                            bytes: if miss { 0 } else { t.row_bytes },
                        },
                        ..base
                    };
                    out.push(if miss || !insider {
                        single(event)
                    } else {
                        Labelled {
                            event,
                            shape: Shape::Ordinary { bytes: t.row_bytes },
                            attack: true,
                        }
                    });
                }
            }
            AttackKind::TokenReplay => {
                for _ in 0..3 + rng.below(4) {
                    out.push(single(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        ..base
                    }));
                }
            }
            AttackKind::SlowExfiltration => {
                for _ in 0..1 + rng.below(4) {
                    let rows = ((t.rows_p999() * rng.range(2.0, 3.0)) as u64).clamp(1, MAX_ROWS);
                    out.push(single(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        subject: Some(k.id),
                        credential: Some(k.id),
                        network: Some(k.networks[0]),
                        agent: Some(k.agents[0]),
                        kind: AccessKind::Response {
                            status: 200,
                            id_lookup: false,
                            rows: 0,
                            bytes: t.page_bytes(rows),
                        },
                        ..base
                    }));
                }
            }
            AttackKind::CredentialSharing => {
                // One of the tenant's API keys: one tenant more every few hours, and now
                // and then a request with it that names another tenant.
                let user = k.id;
                let step = ((hour - at.first_hour) / 3) as usize;
                for &o in reach.iter().take(step + 1) {
                    let other = &self.tenants[o];
                    for _ in 0..1 + rng.below(2) {
                        out.push(single(AccessEvent {
                            at: hour * 3600 + rng.below(3600) as u64,
                            tenant: other.id,
                            credential: Some(user),
                            subject: Some(user),
                            kind: AccessKind::Response {
                                status: 200,
                                id_lookup: true,
                                rows: 0,
                                bytes: other.row_bytes,
                            },
                            ..base
                        }));
                    }
                }
                for _ in 0..rng.below(3) {
                    out.push(single(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        credential: Some(user),
                        subject: Some(user),
                        kind: AccessKind::TenantMismatch,
                        ..base
                    }));
                }
            }
            AttackKind::NoisyNeighbour => {
                let lambda = self.lambda(i, hour);
                let target = self.rng.range(5.0, 8.0) * t.peak + self.rng.range(50.0, 150.0);
                let f = target / lambda.max(1e-9) - 1.0;
                self.normal_hour(i, hour, f.max(0.0), true, out);
            }
        }
    }
}

/// One request of the real-HTTP replay: an event and how many generated requests it
/// stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// The request, as the layer records it (a refused context: as the SDK's observer
    /// records it).
    pub event: AccessEvent,
    /// Generated requests it stands for (1 for anything but ordinary requests and the
    /// tenant's own 404s).
    pub weight: u32,
    /// Whether an attack produced it.
    pub attack: bool,
}

/// Groups generated events into the requests the real-HTTP replay sends, hour by hour.
///
/// Per tenant and hour, its ordinary id lookups, its ordinary pages and its own 404s
/// each become one request carrying their count (with the first one's client, at the
/// tenant's median page for pages), the same for an attack's ordinary requests. Every
/// other event is a request of its own: a larger page, a mismatch, a refused context, an
/// attack's 404, page or request in another tenant, and any request whose subject is new
/// to its tenant, or whose network or user agent is new to its subject — so the detector
/// meets every tenant, credential, network and agent the generated traffic has, when it
/// first appears.
#[derive(Debug, Default)]
pub struct Batcher {
    subjects: std::collections::HashSet<(TenantId, Fingerprint)>,
    networks: std::collections::HashSet<(Fingerprint, Fingerprint)>,
    agents: std::collections::HashSet<(Fingerprint, Fingerprint)>,
}

impl Batcher {
    /// The requests for one hour's `events` (in time order).
    pub fn batches(&mut self, events: &[Labelled]) -> Vec<Batch> {
        use std::collections::HashMap;
        let mut out: Vec<Batch> = Vec::new();
        let mut at: HashMap<(TenantId, u8, bool), usize> = HashMap::new();
        for l in events {
            let e = l.event;
            let mut new = false;
            if let Some(s) = e.subject {
                new |= self.subjects.insert((e.tenant, s));
                if let Some(n) = e.network {
                    new |= self.networks.insert((s, n));
                }
                if let Some(a) = e.agent {
                    new |= self.agents.insert((s, a));
                }
            }
            let class = match (l.shape, e.kind) {
                _ if new => None,
                (
                    Shape::Ordinary { bytes },
                    AccessKind::Response {
                        id_lookup, status, ..
                    },
                ) => Some((
                    u8::from(id_lookup),
                    AccessKind::Response {
                        status,
                        id_lookup,
                        rows: 0,
                        bytes,
                    },
                )),
                (_, AccessKind::Response { status: 404, .. }) if !l.attack => Some((2, e.kind)),
                _ => None,
            };
            match class {
                Some((c, kind)) => {
                    let key = (e.tenant, c, l.attack);
                    match at.get(&key) {
                        Some(&i) => out[i].weight += 1,
                        None => {
                            at.insert(key, out.len());
                            out.push(Batch {
                                event: AccessEvent { kind, ..e },
                                weight: 1,
                                attack: l.attack,
                            });
                        }
                    }
                }
                None => out.push(Batch {
                    event: e,
                    weight: 1,
                    attack: l.attack,
                }),
            }
        }
        out
    }
}
