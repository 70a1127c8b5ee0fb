//! Fault injection for tests: a step made to crash or fail at a chosen phase. Public with
//! the `fault-injection` feature only.
#![cfg_attr(not(feature = "fault-injection"), allow(unreachable_pub))]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// When a fault fires relative to the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPhase {
    /// Before the step does anything.
    BeforeStep,
    /// After the step's effects on the tenant cluster (and webhooks), before its catalog
    /// transaction commits: the hardest place to crash.
    AfterEffects,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker dies: its catalog transaction is abandoned, its connection closed and
    /// the worker task ends (restart workers to continue).
    Crash,
    /// The step fails and is retried like any failure.
    Fail,
}

/// Armed faults by (step, phase), with how many times each still fires.
type FaultTable = HashMap<(String, FaultPhase), (Fault, u32)>;

/// Fault injection for tests: `(step, phase) → (fault, remaining count)`.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultTable>>,
}

#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
impl Faults {
    /// Makes step `step` hit `fault` at `phase` the next `times` times it runs.
    pub fn inject(&self, step: &str, phase: FaultPhase, fault: Fault, times: u32) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert((step.to_owned(), phase), (fault, times));
        }
    }

    /// Removes every fault.
    pub fn clear(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.clear();
        }
    }

    pub(super) fn take(&self, step: &str, phase: FaultPhase) -> Option<Fault> {
        let mut m = self.inner.lock().ok()?;
        let key = (step.to_owned(), phase);
        let (fault, left) = m.get_mut(&key)?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            m.remove(&key);
        }
        Some(fault)
    }
}
