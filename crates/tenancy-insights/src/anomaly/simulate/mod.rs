//! A traffic generator with labelled attacks, and the scoring of detections against the
//! labels: the evaluation harness of the detectors (and of any other detector fed the
//! same events).
//!
//! Tenants differ in size (3 to 3,000 requests in their busiest hour, log-uniform), time
//! zone, rhythm (office hours, always on, evenings, nightly batches), 404 rate, rows per
//! request and day-to-day swing; each has API keys used from their own networks and user
//! agents (which now and then change legitimately), users, and a few consultants who work
//! for several tenants from the start. Attacks start after the baseline and are labelled
//! with their tenant and hours: enumeration (id lookups that mostly miss), token replay
//! (a captured token replayed from elsewhere, refused inside PostgreSQL), slow
//! exfiltration (a few oversized pages an hour for days), credential sharing across
//! tenants (one user's credential used in tenants it never served) and a sudden noisy
//! neighbour (ten to twenty-five times its busiest hour).
//!
//! Deterministic: the same options (seed included) give the same events.

use std::fmt;

use tenancy_core::TenantId;

use super::event::{AccessEvent, AccessKind, Fingerprint};

mod score;

pub use score::{evaluate, run, Evaluation, Run, StaticDetector};

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
    /// Id lookups that mostly miss (404), from a new client.
    Enumeration,
    /// A captured token replayed from a new client: refused inside PostgreSQL.
    TokenReplay,
    /// A few oversized pages an hour, for one to three days, with a normal key.
    SlowExfiltration,
    /// One user's credential used in tenants it never served, with tenant mismatches.
    CredentialSharing,
    /// The tenant's traffic jumps to 10–25 times its busiest hour.
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
    p_lookup: f64,
    p_not_found: f64,
    rows_median: f64,
    row_bytes: f64,
    p_refusal: f64,
    p_mismatch: f64,
    keys: Vec<Key>,
    users: Vec<Fingerprint>,
    /// Today's swing of the traffic and of the 404 rate.
    day_factor: f64,
    day_not_found: f64,
}

/// The generator: tenants, their traffic hour by hour, and the attacks injected.
#[derive(Debug)]
pub struct Simulation {
    opts: SimOptions,
    rng: Rng,
    tenants: Vec<SimTenant>,
    attacks: Vec<Attack>,
    /// Per attack: the attacker's network, agent and (credential sharing) the tenants
    /// the shared credential reaches.
    attackers: Vec<(Fingerprint, Fingerprint, Vec<usize>)>,
}

impl Simulation {
    /// Builds the tenants and plans the attacks.
    pub fn new(opts: SimOptions) -> Self {
        let mut rng = Rng::new(opts.seed);
        let n = opts.tenants.max(10);
        let mut tenants: Vec<SimTenant> = (0..n)
            .map(|_| {
                let peak = (3f64.ln() + rng.unit() * (1000f64).ln()).exp();
                let keys = (0..1 + rng.below(4))
                    .map(|_| Key {
                        id: rng.fingerprint(),
                        networks: (0..1 + rng.below(3)).map(|_| rng.fingerprint()).collect(),
                        agents: (0..1 + rng.below(2)).map(|_| rng.fingerprint()).collect(),
                    })
                    .collect();
                let users = (0..2 + rng.below(40)).map(|_| rng.fingerprint()).collect();
                SimTenant {
                    id: TenantId::from_uuid(uuid::Uuid::from_u64_pair(
                        rng.next_u64() | 1,
                        rng.next_u64(),
                    ))
                    .unwrap_or_else(|_| TenantId::new_random()),
                    peak,
                    tz: rng.below(21) as i64 - 10,
                    rhythm: match rng.below(4) {
                        0 => Rhythm::Office,
                        1 => Rhythm::AlwaysOn,
                        2 => Rhythm::Evening,
                        _ => Rhythm::Batch,
                    },
                    p_lookup: rng.range(0.3, 0.8),
                    p_not_found: rng.range(0.003, 0.03),
                    rows_median: rng.range(1.0, 40.0),
                    row_bytes: rng.range(100.0, 2000.0),
                    p_refusal: if rng.unit() < 0.5 { 2e-5 } else { 0.0 },
                    p_mismatch: if rng.unit() < 0.3 { 1e-5 } else { 0.0 },
                    keys,
                    users,
                    day_factor: 1.0,
                    day_not_found: 1.0,
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
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let kinds = if opts.kinds.is_empty() {
            AttackKind::ALL.to_vec()
        } else {
            opts.kinds.clone()
        };
        let first = opts.start_hour + u64::from(opts.baseline_days) * 24 + 12;
        let last = opts.start_hour + u64::from(opts.days) * 24 - 80;
        let mut attacks = Vec::new();
        let mut attackers = Vec::new();
        let mut next = order.into_iter();
        'plan: for kind in kinds {
            for _ in 0..opts.attacks_per_kind {
                let Some(t) = next.next() else { break 'plan };
                let hours = match kind {
                    AttackKind::Enumeration => 2 + rng.below(5),
                    AttackKind::TokenReplay => 1 + rng.below(3),
                    AttackKind::SlowExfiltration => 24 + rng.below(37),
                    AttackKind::CredentialSharing => 6 + rng.below(13),
                    AttackKind::NoisyNeighbour => 2 + rng.below(5),
                } as u64;
                let start = first + rng.below(last.saturating_sub(first).max(1) as usize) as u64;
                let reach = (0..3 + rng.below(4))
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
                attackers.push((rng.fingerprint(), rng.fingerprint(), reach));
            }
        }
        Simulation {
            opts,
            rng,
            tenants,
            attacks,
            attackers,
        }
    }

    /// The injected attacks.
    pub fn attacks(&self) -> &[Attack] {
        &self.attacks
    }

    /// The simulated tenants' ids.
    pub fn tenant_ids(&self) -> Vec<TenantId> {
        self.tenants.iter().map(|t| t.id).collect()
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
    /// to `out`, in time order within each tenant.
    pub fn hour(&mut self, hour: u64, out: &mut Vec<AccessEvent>) {
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
            self.normal_hour(i, hour, out);
        }
        for a in 0..self.attacks.len() {
            let at = self.attacks[a];
            if hour < at.first_hour || hour > at.last_hour {
                continue;
            }
            self.attack_hour(a, hour, out);
        }
    }

    fn normal_hour(&mut self, i: usize, hour: u64, out: &mut Vec<AccessEvent>) {
        let t = &self.tenants[i];
        let local = (hour as i64 + t.tz).rem_euclid(24 * 7) as u64;
        let weekday = ((hour as i64 + t.tz).div_euclid(24) + 3).rem_euclid(7) as u64;
        let lambda = t.peak * t.rhythm.shape(local % 24, weekday) * t.day_factor;
        let n = self.rng.poisson(lambda);
        for _ in 0..n {
            let t = &self.tenants[i];
            let rng = &mut self.rng;
            let at = hour * 3600 + rng.below(3600) as u64;
            // The first key and the first users carry most of the traffic.
            let k = &t.keys[rng.below(t.keys.len()).min(rng.below(t.keys.len()))];
            let user = t.users[rng.below(t.users.len()).min(rng.below(t.users.len()))];
            let lookup = rng.unit() < t.p_lookup;
            let status = if lookup && rng.unit() < t.p_not_found * t.day_not_found {
                404
            } else {
                200
            };
            let rows = if status == 404 {
                0
            } else {
                (t.rows_median * (0.9 * rng.normal()).exp()).round() as u64
            };
            let bytes = 200 + (rows as f64 * t.row_bytes * rng.range(0.8, 1.2)) as u64;
            let mut e = AccessEvent {
                at,
                tenant: t.id,
                credential: Some(k.id),
                subject: Some(user),
                network: Some(k.networks[rng.below(k.networks.len())]),
                agent: Some(k.agents[rng.below(k.agents.len())]),
                kind: AccessKind::Response {
                    status,
                    id_lookup: lookup,
                    rows,
                    bytes,
                },
            };
            if rng.unit() < t.p_mismatch {
                e.kind = AccessKind::TenantMismatch;
                out.push(e);
                continue;
            }
            out.push(e);
            if rng.unit() < t.p_refusal {
                out.push(AccessEvent {
                    kind: AccessKind::ContextRefused,
                    ..e
                });
            }
        }
    }

    fn attack_hour(&mut self, a: usize, hour: u64, out: &mut Vec<AccessEvent>) {
        let at = self.attacks[a];
        let Some(i) = self.tenants.iter().position(|t| t.id == at.tenant) else {
            return;
        };
        let (network, agent, reach) = self.attackers[a].clone();
        let t = self.tenants[i].clone();
        let key = t.keys[0].id;
        let user = t.users[0];
        let rng = &mut self.rng;
        let base = AccessEvent {
            at: hour * 3600,
            tenant: t.id,
            credential: Some(key),
            subject: Some(user),
            network: Some(network),
            agent: Some(agent),
            kind: AccessKind::ContextRefused,
        };
        let response = |status, lookup, rows: u64| AccessKind::Response {
            status,
            id_lookup: lookup,
            rows,
            bytes: 200 + (rows as f64 * t.row_bytes) as u64,
        };
        match at.kind {
            AttackKind::Enumeration => {
                let rate = 30.0 + rng.range(0.0, 90.0) + 0.05 * t.peak;
                for _ in 0..rng.poisson(rate) {
                    let miss = rng.unit() < 0.85;
                    out.push(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        kind: response(if miss { 404 } else { 200 }, true, u64::from(!miss)),
                        ..base
                    });
                }
            }
            AttackKind::TokenReplay => {
                for _ in 0..10 + rng.below(21) {
                    let e = AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        ..base
                    };
                    if rng.unit() < 0.5 {
                        out.push(e);
                        out.push(AccessEvent {
                            kind: response(500, false, 0),
                            ..e
                        });
                    } else {
                        out.push(AccessEvent {
                            kind: response(200, false, t.rows_median as u64),
                            ..e
                        });
                    }
                }
            }
            AttackKind::SlowExfiltration => {
                let k = &t.keys[0];
                for _ in 0..3 + rng.below(4) {
                    let rows = (t.rows_median * rng.range(150.0, 400.0)) as u64;
                    out.push(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        network: Some(k.networks[0]),
                        agent: Some(k.agents[0]),
                        kind: response(200, false, rows),
                        ..base
                    });
                }
            }
            AttackKind::CredentialSharing => {
                // One tenant more every few hours, and requests with the home tenant's
                // credential that name another tenant.
                let step = ((hour - at.first_hour) / 3) as usize;
                for &o in reach.iter().take(step + 1) {
                    out.push(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        tenant: self.tenants[o].id,
                        credential: None,
                        kind: response(200, false, 3),
                        ..base
                    });
                }
                let rng = &mut self.rng;
                for _ in 0..rng.below(3) {
                    out.push(AccessEvent {
                        at: hour * 3600 + rng.below(3600) as u64,
                        kind: AccessKind::TenantMismatch,
                        ..base
                    });
                }
            }
            AttackKind::NoisyNeighbour => {
                let lambda = (10.0 + rng.unit() * 15.0) * t.peak + 100.0;
                self.noisy(i, hour, lambda, out);
            }
        }
    }

    /// Poisson(`lambda`) extra requests of tenant `i`, like its normal ones.
    fn noisy(&mut self, i: usize, hour: u64, lambda: f64, out: &mut Vec<AccessEvent>) {
        let t = &self.tenants[i];
        let n = self.rng.poisson(lambda);
        for _ in 0..n {
            let rng = &mut self.rng;
            let k = &t.keys[rng.below(t.keys.len())];
            let rows = (t.rows_median * (0.9 * rng.normal()).exp()).round() as u64;
            out.push(AccessEvent {
                at: hour * 3600 + rng.below(3600) as u64,
                tenant: t.id,
                credential: Some(k.id),
                subject: Some(t.users[rng.below(t.users.len())]),
                network: Some(k.networks[0]),
                agent: Some(k.agents[0]),
                kind: AccessKind::Response {
                    status: 200,
                    id_lookup: false,
                    rows,
                    bytes: 200 + (rows as f64 * t.row_bytes) as u64,
                },
            });
        }
    }
}
