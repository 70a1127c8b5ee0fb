//! Integration tests of tenancy-config against real PostgreSQL: one binary, a fresh
//! database per test; configuration is written through the control plane's store and
//! routes (`tenancy-config-service`).

mod guard;
mod outage;
mod process;
mod sdk;
// The harness of both configuration crates' tests (the service's include it too); each
// uses part of it.
#[allow(dead_code)]
mod support;
