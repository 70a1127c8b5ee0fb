//! Integration tests of tenancy-config-service against real PostgreSQL: one binary, a
//! fresh database per test.

mod api;
mod domains;
mod rules;
// One harness for the tests of both configuration crates.
#[path = "../../../tenancy-config/tests/it/support.rs"]
#[allow(dead_code)]
mod support;
