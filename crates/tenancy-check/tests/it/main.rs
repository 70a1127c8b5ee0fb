//! Integration tests of `tenancy check` against real PostgreSQL databases.

mod cli;
mod corpus;
mod definer;
mod good;
mod probe;
mod rules;
mod session;
mod styles;
mod support;
