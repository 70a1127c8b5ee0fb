//! A [`Detector`] shared by the threads of a process: the request layer and the SDK
//! record into it, a task closes hours and hands out what was detected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tenancy_core::TenantId;
use tenancy_sdk::{Observer, Outcome};

use super::detection::Detection;
use super::detector::{Detector, DetectorOptions, DetectorStats, OptionsError};
use super::event::{AccessEvent, AccessKind};

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A detector behind a lock, with a switch: while recording is off, recording costs one
/// atomic load. Set it on a pool as its [`Observer`] (`PoolOptions::observer`) to count
/// context refusals; give the request layer [`AnomalyFeed::record`].
#[derive(Debug)]
pub struct AnomalyFeed {
    detector: Mutex<Detector>,
    on: AtomicBool,
    /// Detections opened since the last [`AnomalyFeed::take_opened`], for delivery.
    opened: Mutex<Vec<Detection>>,
}

impl AnomalyFeed {
    /// A feed over a new detector, recording.
    pub fn new(opts: DetectorOptions) -> Result<Self, OptionsError> {
        Ok(AnomalyFeed {
            detector: Mutex::new(Detector::new(opts)?),
            on: AtomicBool::new(true),
            opened: Mutex::new(Vec::new()),
        })
    }

    /// Turns recording on or off.
    pub fn set_recording(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether recording is on.
    pub fn recording(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Detector) -> T) -> T {
        // A poisoned lock (a panic while held) leaves counts that are still usable.
        let mut d = match self.detector.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut d)
    }

    fn keep(&self, opened: Vec<Detection>) {
        if opened.is_empty() {
            return;
        }
        let mut o = match self.opened.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Bounded: a consumer that never takes loses the oldest.
        o.extend(opened);
        let excess = o.len().saturating_sub(1024);
        o.drain(..excess);
    }

    /// Records one event (nothing while recording is off).
    pub fn record(&self, e: &AccessEvent) {
        if !self.recording() {
            return;
        }
        let opened = self.with(|d| d.observe(e));
        self.keep(opened);
    }

    /// Closes the hours that ended by now.
    pub fn tick(&self) {
        let opened = self.with(|d| d.advance(unix_now()));
        self.keep(opened);
    }

    /// Closes the hours that ended by `now` (Unix seconds): [`AnomalyFeed::tick`] with a
    /// clock of the caller's (a replay of recorded or simulated traffic).
    pub fn advance(&self, now: u64) {
        let opened = self.with(|d| d.advance(now));
        self.keep(opened);
    }

    /// The detections opened since the last call.
    pub fn take_opened(&self) -> Vec<Detection> {
        let mut o = match self.opened.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        std::mem::take(&mut *o)
    }

    /// The detections kept, oldest first.
    pub fn detections(&self) -> Vec<Detection> {
        self.with(|d| d.detections().cloned().collect())
    }

    /// What the detector holds.
    pub fn stats(&self) -> DetectorStats {
        self.with(|d| d.stats())
    }
}

impl Observer for AnomalyFeed {
    fn statement(&self, tenant: TenantId, _elapsed: Duration, outcome: Outcome) {
        // Only refusals are signals here; every other statement returns at once.
        if matches!(outcome, Outcome::ContextRefused) {
            self.record(&AccessEvent::new(
                unix_now(),
                tenant,
                AccessKind::ContextRefused,
            ));
        }
    }

    fn transaction(&self, _: TenantId, _: Duration, _: Duration, _: bool) {}

    fn pool_wait(&self, _: TenantId, _: Duration, _: bool) {}
}
