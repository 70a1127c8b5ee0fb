//! Integration tests of `tenancy migrate` on a real private cluster: every placement,
//! the no-op run without touching targets, failure isolation and the failure limit, a
//! run killed half-way and resumed, checksum refusal, drift detection, and provisioning
//! after a migration.

mod fleet;
mod runs;
mod support;
