//! Integration tests of `tenancy check` against real PostgreSQL databases.

mod cli;
mod corpus;
mod good;
mod probe;
mod rules;
mod session;
mod support;
