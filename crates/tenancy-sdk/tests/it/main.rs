//! Integration tests of the SDK against a real private PostgreSQL cluster. Every test gets
//! a fresh database cloned from a migrated template; tenant data is only ever reached as
//! the runtime role `tenancy_app`, never as a superuser or owner.

mod context;
mod context_leaks;
mod hostile_session;
mod isolation;
mod lifecycle;
mod logging;
mod pgbouncer;
mod residual;
mod router;
mod session_context;
mod splice;
mod support;
mod tls;
