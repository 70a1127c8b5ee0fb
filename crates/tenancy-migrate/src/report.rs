//! What a migration run is asked to do (`Options`), what it plans (`Plan`, `Wave`), what it
//! reports as it goes (`Event`) and at the end (`Summary`, `TargetReport`).

use std::time::Duration;

use tenancy_catalog::MigrationTarget;
use tenancy_core::Placement;
use uuid::Uuid;

use crate::Error;

/// How a run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections per cluster working at once (each may pipeline several targets).
    pub concurrency: usize,
    /// Targets in flight per connection: their transactions are pipelined (sent without
    /// waiting for the previous answer), each still its own transaction.
    pub pipeline: usize,
    /// Targets a connection migrates before it is replaced: a backend caches the catalog
    /// entries of every schema it touches, so a long-lived one grows without bound.
    pub recycle_after: usize,
    /// `lock_timeout` of migration sessions: a migration waiting this long for a lock
    /// (e.g. behind a long transaction of the application) fails instead of queueing
    /// every later query on that table behind it.
    pub lock_timeout: Duration,
    /// `statement_timeout` of migration sessions (one target's whole transaction is one
    /// statement message, so this bounds a target).
    pub statement_timeout: Duration,
    /// Tenants migrated first, on their own; if any fails, the run stops there.
    pub canary: usize,
    /// The run stops taking new targets after this many failures (targets in flight
    /// finish). At least 1.
    pub max_failures: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 4,
            pipeline: 16,
            recycle_after: 500,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(300),
            canary: 0,
            max_failures: 10,
        }
    }
}

impl Options {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Options(what.to_owned()));
        if !(1..=256).contains(&self.concurrency) {
            return bad("--concurrency must be between 1 and 256 connections per cluster");
        }
        if !(1..=1024).contains(&self.pipeline) {
            return bad("--pipeline must be between 1 and 1024 targets per connection");
        }
        if self.recycle_after == 0 {
            return bad("--recycle-after must be at least 1 target per connection");
        }
        if self.max_failures == 0 {
            return bad("--max-failures must be at least 1");
        }
        if self.lock_timeout.is_zero() || self.statement_timeout.is_zero() {
            return bad(
                "--lock-timeout and --statement-timeout must be positive (0 would mean no limit)",
            );
        }
        Ok(())
    }
}

/// One wave of a plan.
#[derive(Debug, Clone)]
pub struct Wave {
    /// `canary` or `rest`.
    pub name: &'static str,
    /// Its targets, pooled tables first.
    pub targets: Vec<MigrationTarget>,
}

/// What a run would do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The newest migration's version.
    pub latest: i32,
    /// Every target in the catalog.
    pub total_targets: usize,
    /// Targets behind `latest`, in waves.
    pub waves: Vec<Wave>,
}

impl Plan {
    /// Targets to migrate.
    pub fn pending(&self) -> usize {
        self.waves.iter().map(|w| w.targets.len()).sum()
    }
}

/// What happened to one target.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its transaction committed: it is at the latest version.
    Migrated,
    /// Its marker already said the latest version (a run that crashed before writing
    /// the ledger, or provisioning); only the ledger moved.
    CaughtUp,
    /// It failed and is unchanged; the error is in the ledger.
    Failed(String),
}

/// The report of one target.
#[derive(Debug, Clone)]
pub struct TargetReport {
    /// Tenant or cluster id.
    pub target_id: Uuid,
    /// Slug or cluster name.
    pub label: String,
    /// Kind of target.
    pub kind: Placement,
    /// Version before.
    pub from: i32,
    /// Version aimed at.
    pub to: i32,
    /// What happened.
    pub outcome: Outcome,
    /// Time from sending its transaction to its answer.
    pub duration: Duration,
}

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A canary target failed; the rest was not started.
    CanaryFailed,
    /// `max_failures` was reached.
    MaxFailures(usize),
    /// The run was interrupted (a signal): targets in flight finished, the rest was not
    /// started.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::CanaryFailed => f.write_str("a canary target failed"),
            StopReason::MaxFailures(n) => write!(f, "{n} failures (--max-failures)"),
            StopReason::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Progress of a run, as it happens.
#[derive(Debug, Clone)]
pub enum Event {
    /// A wave starts.
    Wave {
        /// `canary` or `rest`.
        name: &'static str,
        /// Its size.
        targets: usize,
    },
    /// A target is done.
    Target(TargetReport),
    /// The run stops early.
    Stopped(StopReason),
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The newest migration's version.
    pub latest: i32,
    /// Every target in the catalog.
    pub targets: usize,
    /// Already at `latest` according to the ledger (not contacted).
    pub skipped: usize,
    /// Migrated now.
    pub migrated: usize,
    /// Found already migrated (ledger caught up).
    pub caught_up: usize,
    /// Failed.
    pub failed: usize,
    /// Planned but not started because the run stopped.
    pub not_run: usize,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// Wall time of the run (with planning when it came from `Migrator::run`).
    pub elapsed: Duration,
    /// Slowest target transaction.
    pub slowest: Duration,
    /// The failed targets.
    pub failures: Vec<TargetReport>,
}

impl Summary {
    /// Whether every target is at the latest version.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.not_run == 0 && self.stopped.is_none()
    }
}
