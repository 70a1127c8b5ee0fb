//! End-to-end tests of the invoicing example over real HTTP: every tenant source, every
//! rejection rule, cross-tenant attempts through every endpoint, jobs, JWT attacks,
//! single-tenant databases imported as tenants, the
//! request transaction, request ids and trace context. Each test runs the app on its own
//! fresh database; the app connects only as the runtime role.

mod access;
mod anonymous;
mod bad_input;
mod isolation;
mod job_attacks;
mod jobs;
mod jwt_attacks;
mod legacy_import;
mod observability;
mod pgbouncer;
mod public;
mod resolvers;
mod rules;
mod support;
mod transactions;
