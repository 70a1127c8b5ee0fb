//! The in-process side: a [`tenancy_sdk::Observer`] aggregating per tenant in bounded
//! memory, drained into [`Snapshot`]s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tenancy_core::TenantId;
use tenancy_sdk::{Observer, Outcome};

use crate::snapshot::{Counts, Tally, MAX_SNAPSHOT_TENANTS};
use crate::Snapshot;

/// Number of independently locked shards (a power of two): concurrent statements of
/// different tenants rarely wait for one another.
const SHARDS: usize = 16;

/// Settings of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// The cluster the observed pool is on (its catalog name); snapshots carry it.
    pub cluster: String,
    /// This process's name in snapshots (e.g. the application's name); a random suffix
    /// is added so two processes or two runs never share one.
    pub source: String,
    /// Most tenants tracked at once (rounded up to a multiple of 16). Any tenant with
    /// more than `1 / capacity` of an interval's database time is always among them.
    pub capacity: usize,
    /// Most tenants one snapshot carries (the heaviest; at most 256).
    pub snapshot_tenants: usize,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            cluster: "main".into(),
            source: "app".into(),
            capacity: 1024,
            snapshot_tenants: 64,
        }
    }
}

/// One tracked tenant.
#[derive(Debug, Clone)]
struct Slot {
    tenant: TenantId,
    /// Its figures; `tally.counts.db_us` (database time in µs, including what it
    /// inherited, `tally.db_us_error`) is the space-saving weight.
    tally: Tally,
}

impl Slot {
    fn new(tenant: TenantId, inherited: u64) -> Self {
        let mut tally = Tally::default();
        tally.counts.db_us = inherited;
        tally.db_us_error = inherited;
        Slot { tenant, tally }
    }

    fn weight(&self) -> u64 {
        self.tally.counts.db_us
    }
}

/// A space-saving summary over part of the tenants: at most `cap` slots; a tenant not
/// tracked takes the place of the lightest one and inherits its weight, so the weight
/// of a tracked tenant overestimates its true time by at most what it inherited, and a
/// tenant heavier than the shard's total over `cap` is never evicted.
#[derive(Debug, Default)]
struct Shard {
    slots: Vec<Slot>,
    index: HashMap<TenantId, usize>,
    totals: Counts,
    cap: usize,
}

impl Shard {
    fn with_capacity(cap: usize) -> Self {
        Shard {
            slots: Vec::with_capacity(cap),
            index: HashMap::with_capacity(cap),
            totals: Counts::default(),
            cap,
        }
    }

    fn slot(&mut self, tenant: TenantId) -> &mut Slot {
        let i = match self.index.get(&tenant) {
            Some(&i) => i,
            None if self.slots.len() < self.cap => {
                self.slots.push(Slot::new(tenant, 0));
                self.index.insert(tenant, self.slots.len() - 1);
                self.slots.len() - 1
            }
            None => {
                let (i, min) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.weight())
                    .map(|(i, s)| (i, s.weight()))
                    .unwrap_or((0, 0));
                let old = self.slots[i].tenant;
                self.index.remove(&old);
                self.slots[i] = Slot::new(tenant, min);
                self.index.insert(tenant, i);
                i
            }
        };
        &mut self.slots[i]
    }

    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.slots.iter().map(|s| s.tally.latency.heap_bytes()).sum::<usize>()
            // A hashbrown table: a key, a value and a control byte per bucket; buckets
            // are at most twice the capacity.
            + self.index.capacity()
                * 2
                * (std::mem::size_of::<(TenantId, usize)>() + 1)
    }
}

/// Aggregates per-tenant timings from the SDK; set it on a pool as its observer and
/// call [`Recorder::take`] every interval to get what to push.
#[derive(Debug)]
pub struct Recorder {
    cluster: String,
    source: String,
    shard_cap: usize,
    snapshot_tenants: usize,
    shards: Box<[Mutex<Shard>]>,
    /// The start of the interval the next snapshot covers.
    since: Mutex<Instant>,
    sequence: AtomicU64,
}

fn shard_of(tenant: TenantId) -> usize {
    let u = tenant.as_uuid().as_u128();
    ((u ^ (u >> 64)) as usize) & (SHARDS - 1)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Recorder {
    /// A recorder for one pool.
    pub fn new(opts: RecorderOptions) -> Self {
        let shard_cap = opts.capacity.div_ceil(SHARDS).max(1);
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Recorder {
            cluster: opts.cluster,
            source: format!("{}:{}", opts.source, &suffix[..8]),
            shard_cap,
            snapshot_tenants: opts.snapshot_tenants.min(MAX_SNAPSHOT_TENANTS),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::with_capacity(shard_cap)))
                .collect(),
            since: Mutex::new(Instant::now()),
            sequence: AtomicU64::new(0),
        }
    }

    /// This recorder's source name (with its random suffix).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Most tenants tracked at once.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Tenants tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.slots.len()).unwrap_or(0))
            .sum()
    }

    /// Bytes the recorder holds on the heap now (slots, sketches, indexes).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.heap_bytes()).unwrap_or(0))
            .sum()
    }

    fn with_shard(&self, tenant: TenantId, f: impl FnOnce(&mut Shard)) {
        // A poisoned shard (a panic while it was held) is still consistent enough to
        // count into: every update is a few additions.
        let mut shard = match self.shards[shard_of(tenant)].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut shard);
    }

    /// Drains what was recorded since the last call into a snapshot: the totals of every
    /// tenant and the heaviest tenants by database time.
    pub fn take(&self) -> Snapshot {
        let now = Instant::now();
        let since = {
            let mut s = match self.since.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            std::mem::replace(&mut *s, now)
        };
        let mut totals = Counts::default();
        let mut slots = Vec::new();
        for shard in self.shards.iter() {
            let drained = {
                let mut g = match shard.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                std::mem::replace(&mut *g, Shard::with_capacity(self.shard_cap))
            };
            totals.add(&drained.totals);
            slots.extend(drained.slots);
        }
        slots.sort_by_key(|s| std::cmp::Reverse(s.weight()));
        slots.truncate(self.snapshot_tenants);
        let interval_ms = u64::try_from(now.duration_since(since).as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, crate::snapshot::MAX_INTERVAL_MS);
        Snapshot {
            source: self.source.clone(),
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            cluster: self.cluster.clone(),
            interval_ms,
            totals,
            tenants: slots
                .into_iter()
                .map(|s| s.tally.to_stats(s.tenant))
                .collect(),
        }
    }
}

impl Observer for Recorder {
    fn statement(&self, tenant: TenantId, elapsed: Duration, outcome: Outcome) {
        let us = micros(elapsed);
        let (rows, error, refused) = match outcome {
            Outcome::Ok { rows } => (rows, 0, 0),
            Outcome::ContextRefused => (0, 1, 1),
            _ => (0, 1, 0),
        };
        self.with_shard(tenant, |shard| {
            let t = &mut shard.totals;
            t.db_us = t.db_us.saturating_add(us);
            t.statements += 1;
            t.errors += error;
            t.refusals += refused;
            let s = &mut shard.slot(tenant).tally;
            s.counts.db_us = s.counts.db_us.saturating_add(us);
            s.counts.statements += 1;
            s.counts.errors += error;
            s.counts.refusals += refused;
            s.rows = s.rows.saturating_add(rows);
            s.latency.add(elapsed.as_secs_f64() * 1e6);
        });
    }

    fn transaction(&self, tenant: TenantId, _elapsed: Duration, end: Duration, _committed: bool) {
        let us = micros(end);
        self.with_shard(tenant, |shard| {
            shard.totals.db_us = shard.totals.db_us.saturating_add(us);
            shard.totals.transactions += 1;
            let s = &mut shard.slot(tenant).tally.counts;
            s.db_us = s.db_us.saturating_add(us);
            s.transactions += 1;
        });
    }

    fn pool_wait(&self, tenant: TenantId, waited: Duration, _got: bool) {
        let us = micros(waited);
        self.with_shard(tenant, |shard| {
            shard.totals.pool_wait_us = shard.totals.pool_wait_us.saturating_add(us);
            // Waiting is not database time: it never makes a tenant tracked.
            if let Some(&i) = shard.index.get(&tenant) {
                let s = &mut shard.slots[i].tally.counts;
                s.pool_wait_us = s.pool_wait_us.saturating_add(us);
            }
        });
    }
}
