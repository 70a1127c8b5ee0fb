//! Integration tests of tenancy-config against real PostgreSQL: one binary, a fresh
//! database per test.

mod api;
mod domains;
mod guard;
mod outage;
mod process;
mod sdk;
mod support;
