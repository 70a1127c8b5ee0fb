//! The server side: pushed snapshots kept for a window, per cluster, in bounded memory,
//! and merged into the per-tenant report.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tenancy_core::TenantId;

use crate::sketch::Sketch;
use crate::snapshot::{Counts, Snapshot, SnapshotError, Tally};

/// Limits of a [`Window`].
#[derive(Debug, Clone)]
pub struct WindowOptions {
    /// How far back a report looks: snapshots received longer ago are dropped.
    pub window: Duration,
    /// Most clusters kept (a snapshot for another one is refused while full).
    pub max_clusters: usize,
    /// Most snapshots kept per cluster (the oldest goes first).
    pub max_snapshots_per_cluster: usize,
    /// Most sources whose last sequence number is remembered (to drop a snapshot pushed
    /// twice); the one heard from longest ago is forgotten first.
    pub max_sources: usize,
}

impl Default for WindowOptions {
    fn default() -> Self {
        WindowOptions {
            window: Duration::from_secs(60),
            max_clusters: 256,
            max_snapshots_per_cluster: 1024,
            max_sources: 4096,
        }
    }
}

/// What [`Window::push`] did with a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Kept.
    Kept,
    /// Already had it (the same source pushed this sequence number or a later one).
    Duplicate,
}

/// Why [`Window::push`] refused a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] SnapshotError),
    /// The window already holds the most clusters it may.
    #[error("the insights window already holds snapshots of {0} clusters; wait for older ones to expire")]
    Full(usize),
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    snapshot: Snapshot,
    sketches: Vec<Sketch>,
}

#[derive(Debug, Default)]
struct Inner {
    clusters: BTreeMap<String, VecDeque<Entry>>,
    /// Last sequence number and when it arrived, per source.
    sources: HashMap<String, (u64, Instant)>,
}

/// The snapshots of the last window, per cluster.
#[derive(Debug)]
pub struct Window {
    opts: WindowOptions,
    inner: Mutex<Inner>,
}

/// One tenant in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantReport {
    /// The tenant.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub tenant: TenantId,
    /// The cluster it used.
    pub cluster: String,
    /// Database time in the window, in milliseconds (statements plus COMMIT/ROLLBACK).
    pub db_time_ms: f64,
    /// Bound on the overestimate of `db_time_ms` (see `db_us_error` of a snapshot).
    pub db_time_error_ms: f64,
    /// Its share of the cluster's database time in the window (0 to 1).
    pub share: f64,
    /// Median statement latency in ms (within 1 %); null without statements.
    pub p50_ms: Option<f64>,
    /// 99th percentile statement latency in ms (within 1 %); null without statements.
    pub p99_ms: Option<f64>,
    /// Statements run.
    pub statements: u64,
    /// Transactions ended.
    pub transactions: u64,
    /// Rows returned or affected.
    pub rows: u64,
    /// Failed statements (context refusals included).
    pub errors: u64,
    /// Statements whose tenant context the server refused.
    pub refusals: u64,
    /// Failed statements over statements (0 without statements).
    pub error_rate: f64,
    /// Time spent waiting for a connection, in ms.
    pub pool_wait_ms: f64,
    /// Its share of the cluster's time is at least the report's `noisy_share` while
    /// other tenants used the cluster too.
    pub noisy: bool,
}

/// One cluster in a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterReport {
    /// The cluster.
    pub cluster: String,
    /// Database time of every tenant in the window, in ms.
    pub db_time_ms: f64,
    /// Statements run.
    pub statements: u64,
    /// Transactions ended.
    pub transactions: u64,
    /// Failed statements (context refusals included).
    pub errors: u64,
    /// Statements whose tenant context the server refused.
    pub refusals: u64,
    /// Failed statements over statements (0 without statements).
    pub error_rate: f64,
    /// Processes that pushed snapshots in the window.
    pub sources: u64,
    /// Snapshots in the window.
    pub snapshots: u64,
    /// Tenants flagged noisy.
    pub noisy_tenants: u64,
}

/// Top tenants by database time over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    /// Seconds the report looks back.
    pub window_seconds: u64,
    /// The share of a cluster's time from which a tenant is flagged noisy.
    pub noisy_share: f64,
    /// Every cluster with snapshots in the window (or the one asked for).
    pub clusters: Vec<ClusterReport>,
    /// The tenants using the most database time, heaviest first.
    pub tenants: Vec<TenantReport>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn rate(errors: u64, statements: u64) -> f64 {
    if statements == 0 {
        0.0
    } else {
        errors as f64 / statements as f64
    }
}

impl Window {
    /// An empty window.
    pub fn new(opts: WindowOptions) -> Self {
        Window {
            opts,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.opts.window
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        let window = self.opts.window;
        let old = |at: Instant| now.saturating_duration_since(at) > window;
        inner.clusters.retain(|_, q| {
            while q.front().is_some_and(|e| old(e.at)) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// Checks and keeps a snapshot received at `now`.
    pub fn push(&self, snapshot: Snapshot, now: Instant) -> Result<Pushed, PushError> {
        let sketches = snapshot.check()?;
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if let Some((last, _)) = inner.sources.get(&snapshot.source) {
            if snapshot.sequence <= *last {
                return Ok(Pushed::Duplicate);
            }
        }
        if !inner.clusters.contains_key(&snapshot.cluster)
            && inner.clusters.len() >= self.opts.max_clusters
        {
            return Err(PushError::Full(self.opts.max_clusters));
        }
        if !inner.sources.contains_key(&snapshot.source)
            && inner.sources.len() >= self.opts.max_sources
        {
            let oldest = inner
                .sources
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(s, _)| s.clone());
            if let Some(s) = oldest {
                inner.sources.remove(&s);
            }
        }
        inner
            .sources
            .insert(snapshot.source.clone(), (snapshot.sequence, now));
        let cap = self.opts.max_snapshots_per_cluster.max(1);
        let q = inner.clusters.entry(snapshot.cluster.clone()).or_default();
        while q.len() >= cap {
            q.pop_front();
        }
        q.push_back(Entry {
            at: now,
            snapshot,
            sketches,
        });
        Ok(Pushed::Kept)
    }

    /// The report at `now`: clusters (only `cluster` when given), and the `limit`
    /// heaviest tenants, flagged noisy from `noisy_share` of their cluster's time.
    pub fn report(
        &self,
        cluster: Option<&str>,
        limit: usize,
        noisy_share: f64,
        now: Instant,
    ) -> Report {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let mut clusters = Vec::new();
        let mut tenants = Vec::new();
        for (name, q) in &inner.clusters {
            if cluster.is_some_and(|c| c != name) {
                continue;
            }
            let mut totals = Counts::default();
            let mut sums: HashMap<TenantId, Tally> = HashMap::new();
            let mut sources = std::collections::HashSet::new();
            for e in q {
                sources.insert(e.snapshot.source.as_str());
                totals.add(&e.snapshot.totals);
                for (s, sketch) in e.snapshot.tenants.iter().zip(&e.sketches) {
                    sums.entry(s.tenant).or_default().add(s, sketch);
                }
            }
            // The cluster's time is at least what its tenants account for (a snapshot's
            // tenant figures may overestimate theirs).
            let tracked: u64 = sums
                .values()
                .fold(0u64, |a, m| a.saturating_add(m.tracked_us()));
            let cluster_us = totals.db_us.max(tracked);
            let mut noisy_tenants = 0;
            for (tenant, m) in sums {
                let share = if cluster_us == 0 {
                    0.0
                } else {
                    (m.tracked_us() as f64 / cluster_us as f64).min(1.0)
                };
                let others = cluster_us.saturating_sub(m.tracked_us()) > 0;
                let noisy = others && share >= noisy_share;
                noisy_tenants += u64::from(noisy);
                let c = &m.counts;
                tenants.push(TenantReport {
                    tenant,
                    cluster: name.clone(),
                    db_time_ms: ms(c.db_us),
                    db_time_error_ms: ms(m.db_us_error),
                    share,
                    p50_ms: m.latency.quantile(0.5).map(|v| v / 1000.0),
                    p99_ms: m.latency.quantile(0.99).map(|v| v / 1000.0),
                    statements: c.statements,
                    transactions: c.transactions,
                    rows: m.rows,
                    errors: c.errors,
                    refusals: c.refusals,
                    error_rate: rate(c.errors, c.statements),
                    pool_wait_ms: ms(c.pool_wait_us),
                    noisy,
                });
            }
            clusters.push(ClusterReport {
                cluster: name.clone(),
                db_time_ms: ms(cluster_us),
                statements: totals.statements,
                transactions: totals.transactions,
                errors: totals.errors,
                refusals: totals.refusals,
                error_rate: rate(totals.errors, totals.statements),
                sources: sources.len() as u64,
                snapshots: q.len() as u64,
                noisy_tenants,
            });
        }
        tenants.sort_by(|a, b| {
            b.db_time_ms
                .total_cmp(&a.db_time_ms)
                .then(a.tenant.cmp(&b.tenant))
        });
        tenants.truncate(limit);
        Report {
            window_seconds: self.opts.window.as_secs(),
            noisy_share,
            clusters,
            tenants,
        }
    }
}
