//! Integration tests of the audit log against real clusters (one per test process).

mod support;

mod append;
mod chain;
mod purge;
mod record;
mod schema;
