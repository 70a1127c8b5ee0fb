//! The detector: per-tenant and per-credential baselines learned from the first hours of
//! traffic, then each closed hour scored against them.

use std::collections::{HashMap, VecDeque};

use tenancy_core::TenantId;

use super::detection::{AnomalyKind, Detection, Severity};
use super::event::{AccessEvent, AccessKind, Fingerprint};
use super::model::{bucket, Flag, HourCounts, Learning, Model, Rates, BUCKETS, DECAY};

/// Most networks, user agents or tenants remembered per credential or subject.
const MAX_SET: usize = 16;
/// A tenant, credential or subject not seen for this many hours is forgotten.
const IDLE_HOURS: u64 = 24 * 35;

/// Thresholds of the detectors. Each detector's score is its statistic over its
/// threshold, so a detection always scores at least 1.
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Enumeration: the Poisson tail of the hour's 404s on id lookups, in `-log10 p`.
    pub not_found_tail: f64,
    /// Enumeration: fewest 404s in an hour that may be flagged.
    pub not_found_min: u32,
    /// Enumeration: the hour's 404s must also be this multiple of the expected (a
    /// tenant's own 404 rate swings from day to day more than a Poisson count).
    pub not_found_ratio: f64,
    /// Context refusals: the Poisson tail of the hour's refusals, in `-log10 p`.
    pub refusal_tail: f64,
    /// Context refusals and tenant mismatches: fewest in an hour that may be flagged.
    pub refusal_min: u32,
    /// Volume: robust z-score of the hour's requests against its hour of the week.
    pub volume_z: f64,
    /// Volume: the hour's requests must also exceed this multiple of the expected ...
    pub volume_ratio: f64,
    /// ... plus this many requests.
    pub volume_excess: f64,
    /// Exfiltration: weight of one hour in the EWMA of heavy requests above expected.
    pub heavy_alpha: f64,
    /// Exfiltration: the EWMA must exceed this many of its standard deviations ...
    pub heavy_sigmas: f64,
    /// ... and this many heavy requests per hour.
    pub heavy_min: f64,
    /// Cross-tenant: tenants a subject reached for the first time within 24 hours.
    pub new_tenants: u32,
    /// New origin: requests from a new network and agent at an unusual hour.
    pub new_origin_min: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            not_found_tail: 8.0,
            not_found_min: 5,
            not_found_ratio: 3.0,
            refusal_tail: 4.0,
            refusal_min: 3,
            volume_z: 8.0,
            volume_ratio: 3.5,
            volume_excess: 30.0,
            heavy_alpha: 1.0 / 12.0,
            heavy_sigmas: 6.0,
            heavy_min: 1.5,
            new_tenants: 2,
            new_origin_min: 5,
        }
    }
}

/// Settings of a [`Detector`].
#[derive(Debug, Clone)]
pub struct DetectorOptions {
    /// Hours of traffic each tenant, credential and subject is learned from before it
    /// is scored (1 to 8,760; a week, 168, learns every hour of the week once).
    pub baseline_hours: u32,
    /// Most tenants tracked; traffic of further tenants is counted as untracked.
    pub max_tenants: usize,
    /// Most credentials (API keys, tokens) tracked.
    pub max_credentials: usize,
    /// Most subjects tracked.
    pub max_subjects: usize,
    /// Most detections kept for listing (the oldest go first).
    pub max_detections: usize,
    /// A detector flagging a tenant again within this many hours extends its open
    /// detection rather than opening another.
    pub merge_hours: u32,
    /// The detectors' thresholds.
    pub thresholds: Thresholds,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            baseline_hours: 168,
            max_tenants: 100_000,
            max_credentials: 200_000,
            max_subjects: 500_000,
            max_detections: 1024,
            merge_hours: 6,
            thresholds: Thresholds::default(),
        }
    }
}

/// Why options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `baseline_hours` outside 1 to 8,760.
    #[error("baseline_hours must be between 1 and 8760, not {0}")]
    BaselineHours(u32),
    /// A capacity of zero.
    #[error("{0} must be at least 1")]
    Capacity(&'static str),
}

/// One tracked tenant.
#[derive(Debug)]
struct TenantState {
    last_seen: u64,
    cur: HourCounts,
    learning: Option<Box<Learning>>,
    model: Option<Box<Model>>,
    /// Per detector: the last flagged hour and the id of its open detection.
    open: [Option<(u64, u64)>; AnomalyKind::ACCESS.len()],
}

/// A bounded set of fingerprints with the hour each joined.
#[derive(Debug, Default)]
struct Seen(Vec<(Fingerprint, u64)>);

impl Seen {
    /// Whether `f` is new (absent, or added this hour); adds it, forgetting the oldest
    /// when full.
    fn note(&mut self, f: Fingerprint, hour: u64) -> bool {
        if let Some((_, added)) = self.0.iter().find(|(g, _)| *g == f) {
            return *added == hour;
        }
        if self.0.len() >= MAX_SET {
            if let Some(i) = (0..self.0.len()).min_by_key(|&i| self.0[i].1) {
                self.0.swap_remove(i);
            }
        }
        self.0.push((f, hour));
        true
    }
}

/// One tracked credential.
#[derive(Debug)]
struct CredentialState {
    first_hour: u64,
    last_seen: u64,
    networks: Seen,
    agents: Seen,
    /// Hours of the day (UTC) the credential was used in.
    hours: u32,
    /// The hour an hour of the day was last added to `hours`.
    hours_changed: u64,
}

/// One tracked subject.
#[derive(Debug)]
struct SubjectState {
    first_hour: u64,
    last_seen: u64,
    /// The first tenant it was seen with: cross-tenant detections are reported there.
    home: TenantId,
    /// Tenants it used.
    known: Vec<TenantId>,
    /// Tenants it reached after its baseline, with the hour.
    new: Vec<(TenantId, u64)>,
}

/// Counts of what the detector holds and what it could not track.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorStats {
    /// Tenants tracked.
    pub tenants: usize,
    /// Tenants past their baseline.
    pub scored_tenants: usize,
    /// Credentials tracked.
    pub credentials: usize,
    /// Subjects tracked.
    pub subjects: usize,
    /// Events of tenants that could not be tracked (the detector was full).
    pub untracked_events: u64,
    /// Events older than the hour being collected, counted into it.
    pub late_events: u64,
}

/// Learns per-tenant and per-credential baselines and scores every closed hour.
/// Feed it events in time order ([`Detector::observe`]); hours close when an event of a
/// later hour arrives or on [`Detector::advance`].
#[derive(Debug)]
pub struct Detector {
    opts: DetectorOptions,
    /// The hour being collected (hours since the Unix epoch).
    hour: Option<u64>,
    tenants: HashMap<TenantId, TenantState>,
    credentials: HashMap<Fingerprint, CredentialState>,
    subjects: HashMap<Fingerprint, SubjectState>,
    /// The latest detections, oldest first.
    detections: VecDeque<Detection>,
    next_id: u64,
    stats: DetectorStats,
}

impl Detector {
    /// A detector with `opts`, checked.
    pub fn new(opts: DetectorOptions) -> Result<Self, OptionsError> {
        if !(1..=8760).contains(&opts.baseline_hours) {
            return Err(OptionsError::BaselineHours(opts.baseline_hours));
        }
        for (name, v) in [
            ("max_tenants", opts.max_tenants),
            ("max_credentials", opts.max_credentials),
            ("max_subjects", opts.max_subjects),
            ("max_detections", opts.max_detections),
        ] {
            if v == 0 {
                return Err(OptionsError::Capacity(name));
            }
        }
        Ok(Detector {
            opts,
            hour: None,
            tenants: HashMap::new(),
            credentials: HashMap::new(),
            subjects: HashMap::new(),
            detections: VecDeque::new(),
            next_id: 0,
            stats: DetectorStats::default(),
        })
    }

    /// What the detector holds now.
    pub fn stats(&self) -> DetectorStats {
        DetectorStats {
            tenants: self.tenants.len(),
            scored_tenants: self.tenants.values().filter(|t| t.model.is_some()).count(),
            credentials: self.credentials.len(),
            subjects: self.subjects.len(),
            ..self.stats
        }
    }

    /// The detections kept, oldest first.
    pub fn detections(&self) -> impl Iterator<Item = &Detection> {
        self.detections.iter()
    }

    /// Counts one event into its hour; closes the hours before it first (returning the
    /// detections they opened). An event older than the hour being collected counts
    /// into that hour.
    pub fn observe(&mut self, e: &AccessEvent) -> Vec<Detection> {
        let hour = e.at / 3600;
        let opened = self.advance(e.at);
        let cur = self.hour.unwrap_or(hour);
        if hour < cur {
            self.stats.late_events += 1;
        }
        let hour = cur;
        if !self.tenants.contains_key(&e.tenant) && self.tenants.len() >= self.opts.max_tenants {
            self.stats.untracked_events += 1;
            return opened;
        }
        let baseline = self.opts.baseline_hours as usize;
        let t = self.tenants.entry(e.tenant).or_insert_with(|| TenantState {
            last_seen: hour,
            cur: HourCounts::default(),
            learning: Some(Box::new(Learning {
                requests: Vec::with_capacity(baseline),
                first_hour: hour,
                rows: [0; BUCKETS],
                bytes: [0; BUCKETS],
                rates: Rates::default(),
            })),
            model: None,
            open: [None; AnomalyKind::ACCESS.len()],
        });
        t.last_seen = hour;
        match e.kind {
            AccessKind::Response {
                status,
                id_lookup,
                rows,
                bytes,
            } => {
                t.cur.requests += 1;
                if id_lookup {
                    t.cur.lookups += 1;
                    if status == 404 {
                        t.cur.not_found += 1;
                    }
                }
                if let Some(l) = &mut t.learning {
                    l.rows[bucket(rows)] += 1;
                    l.bytes[bucket(bytes)] += 1;
                } else if let Some(m) = &t.model {
                    if rows >= m.heavy_rows || bytes >= m.heavy_bytes {
                        t.cur.heavy += 1;
                    }
                }
            }
            AccessKind::TenantMismatch => t.cur.mismatches += 1,
            AccessKind::ContextRefused => t.cur.refusals += 1,
        }
        if let Some(k) = e.credential {
            if self.note_credential(k, e, hour) {
                if let Some(t) = self.tenants.get_mut(&e.tenant) {
                    t.cur.new_origin += 1;
                }
            }
        }
        if let (Some(s), AccessKind::Response { status, .. }) = (e.subject, e.kind) {
            if status < 400 {
                self.note_subject(s, e.tenant, hour);
            }
        }
        opened
    }

    /// Whether the credential's request comes from a network and agent it never used,
    /// at an hour of the day it is never used (after its baseline); learns all three.
    fn note_credential(&mut self, k: Fingerprint, e: &AccessEvent, hour: u64) -> bool {
        let full = self.credentials.len() >= self.opts.max_credentials;
        let c = match self.credentials.get_mut(&k) {
            Some(c) => c,
            None if full => return false,
            None => self.credentials.entry(k).or_insert(CredentialState {
                first_hour: hour,
                last_seen: hour,
                networks: Seen::default(),
                agents: Seen::default(),
                hours: 0,
                hours_changed: hour,
            }),
        };
        c.last_seen = hour;
        let scored = hour >= c.first_hour + u64::from(self.opts.baseline_hours);
        let new_network = e.network.is_some_and(|n| c.networks.note(n, hour));
        let new_agent = e.agent.is_some_and(|a| c.agents.note(a, hour));
        let bit = 1u32 << (hour % 24);
        if c.hours & bit == 0 {
            c.hours |= bit;
            c.hours_changed = hour;
        }
        let unusual = c.hours_changed == hour;
        scored && new_network && new_agent && unusual
    }

    /// Learns that subject `s` used `tenant`; after its baseline, a tenant it never used
    /// counts towards its home tenant's cross-tenant signal.
    fn note_subject(&mut self, s: Fingerprint, tenant: TenantId, hour: u64) {
        let full = self.subjects.len() >= self.opts.max_subjects;
        let st = match self.subjects.get_mut(&s) {
            Some(st) => st,
            None if full => return,
            None => self.subjects.entry(s).or_insert(SubjectState {
                first_hour: hour,
                last_seen: hour,
                home: tenant,
                known: vec![tenant],
                new: Vec::new(),
            }),
        };
        st.last_seen = hour;
        if st.known.contains(&tenant) {
            return;
        }
        if st.known.len() >= MAX_SET {
            st.known.remove(1);
        }
        st.known.push(tenant);
        if hour < st.first_hour + u64::from(self.opts.baseline_hours) {
            return;
        }
        st.new.retain(|(_, h)| *h + 24 > hour);
        if st.new.len() >= MAX_SET {
            st.new.remove(0);
        }
        st.new.push((tenant, hour));
        let n = st.new.len() as u32;
        let home = st.home;
        if let Some(t) = self.tenants.get_mut(&home) {
            t.cur.new_tenants = t.cur.new_tenants.max(n);
        }
    }

    /// Closes every hour that ended by `now` (Unix seconds) and returns the detections
    /// they opened.
    pub fn advance(&mut self, now: u64) -> Vec<Detection> {
        let target = now / 3600;
        let mut opened = Vec::new();
        let Some(mut h) = self.hour else {
            self.hour = Some(target);
            return opened;
        };
        // A gap longer than the idle limit closes only its last hours: every tenant
        // would be forgotten anyway.
        if target > h + IDLE_HOURS {
            h = target - IDLE_HOURS;
        }
        while h < target {
            self.close(h, &mut opened);
            h += 1;
        }
        self.hour = Some(h);
        opened
    }

    /// Scores hour `h` of every tenant.
    fn close(&mut self, h: u64, opened: &mut Vec<Detection>) {
        let baseline = self.opts.baseline_hours as usize;
        let mut flagged: Vec<(TenantId, Flag)> = Vec::new();
        self.tenants.retain(|_, t| t.last_seen + IDLE_HOURS > h);
        self.credentials.retain(|_, c| c.last_seen + IDLE_HOURS > h);
        self.subjects.retain(|_, s| s.last_seen + IDLE_HOURS > h);
        for (id, t) in self.tenants.iter_mut() {
            let c = std::mem::take(&mut t.cur);
            if let Some(l) = &mut t.learning {
                l.requests.push(c.requests);
                l.rates.add(&c, DECAY);
                if l.requests.len() >= baseline {
                    t.model = Some(Box::new(l.model()));
                    t.learning = None;
                }
                continue;
            }
            if let Some(m) = &mut t.model {
                for f in m.score(h, &c, &self.opts.thresholds) {
                    flagged.push((*id, f));
                }
            }
        }
        for (tenant, f) in flagged {
            self.flag(tenant, h, f, opened);
        }
    }

    /// Opens a detection, or extends the tenant's open one of the same kind.
    fn flag(&mut self, tenant: TenantId, h: u64, f: Flag, opened: &mut Vec<Detection>) {
        let k = AnomalyKind::ACCESS
            .iter()
            .position(|k| *k == f.kind)
            .unwrap_or(0);
        let merge = u64::from(self.opts.merge_hours);
        let Some(t) = self.tenants.get_mut(&tenant) else {
            return;
        };
        if let Some((last, id)) = t.open[k] {
            if h <= last + merge {
                t.open[k] = Some((h, id));
                if let Some(d) = self.detections.iter_mut().rev().find(|d| d.id == id) {
                    d.last_hour = h * 3600;
                    if f.score > d.score {
                        d.score = f.score;
                        d.severity = Severity::of(f.kind, f.score);
                        d.evidence = f.evidence;
                    }
                }
                return;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        t.open[k] = Some((h, id));
        let d = Detection {
            id,
            tenant_id: Some(tenant),
            subject: None,
            kind: f.kind,
            first_hour: h * 3600,
            last_hour: h * 3600,
            score: f.score,
            severity: Severity::of(f.kind, f.score),
            evidence: f.evidence,
        };
        if self.detections.len() >= self.opts.max_detections {
            self.detections.pop_front();
        }
        self.detections.push_back(d.clone());
        opened.push(d);
    }
}
