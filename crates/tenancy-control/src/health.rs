//! Liveness and readiness.
//!
//! - `/livez` (and its alias `/healthz`): the process serves HTTP. No dependency is
//!   checked, so an orchestrator does not restart a healthy server because PostgreSQL is
//!   down.
//! - `/readyz`: the server can do its work: the catalog database answers (within
//!   [`CHECK_TIMEOUT`]), its migrations are the ones this binary needs, the tenant context
//!   functions are installed (the answer names the implementation: native or PL/pgSQL),
//!   and the provisioning workers run. `200` with every check, or `503` with a problem
//!   document (`code` `unavailable`) whose `checks` member says which failed. While the
//!   server shuts down it is not ready, so load balancers stop sending it requests
//!   before it stops accepting them.
//!
//! The answers name no tenant and carry no PostgreSQL message (that goes to the log).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tenancy_provision::Workers;

use crate::error::{problem_response, ProblemCode};
use crate::AppState;

/// How long `/readyz` waits for the catalog database.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` knows besides the catalog: the workers this process runs, and whether
/// it is shutting down.
#[derive(Debug, Default)]
pub struct Health {
    /// The provisioning workers (`None` when this process runs none, or after they were
    /// taken to be stopped).
    workers: Mutex<Option<Workers>>,
    /// Workflow workers started (0: this process runs none, which is not a failure).
    expected_workers: std::sync::atomic::AtomicUsize,
    /// Set when shutdown begins.
    draining: AtomicBool,
}

impl Health {
    /// Hands the running workers over (readiness counts the live ones).
    pub fn set_workers(&self, workers: Workers, count: usize) {
        self.expected_workers.store(count, Ordering::SeqCst);
        if let Ok(mut w) = self.workers.lock() {
            *w = Some(workers);
        }
    }

    /// Takes the workers back, to stop them.
    pub fn take_workers(&self) -> Option<Workers> {
        self.workers.lock().ok().and_then(|mut w| w.take())
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Workflow workers running now.
    pub fn workers_alive_count(&self) -> usize {
        self.workers
            .lock()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.alive()))
            .unwrap_or(0)
    }

    /// `(alive, expected)` workflow workers; `None` when this process runs none.
    fn workers_alive(&self) -> Option<(usize, usize)> {
        let expected = self.expected_workers.load(Ordering::SeqCst);
        if expected == 0 {
            return None;
        }
        Some((self.workers_alive_count(), expected))
    }
}

/// `GET /livez` and `GET /healthz`: the process serves HTTP.
#[utoipa::path(get, path = "/livez", tag = "meta", responses((status = 200, description = "The process serves HTTP (checks no dependency)"),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn livez() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: every dependency checked; 200, or 503 with a problem document.
#[utoipa::path(get, path = "/readyz", tag = "meta", responses((status = 200, description = "Ready: the catalog answers, its migrations are current, the context implementation is installed and the workers run"),
    (status = 503, body = crate::error::Problem, content_type = "application/problem+json", description = "Not ready (a dependency is down, or the server is shutting down); `checks` says which", headers(("Retry-After" = u64, description = "Seconds to wait before asking again"))),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    let mut fail = |checks: &mut serde_json::Map<String, serde_json::Value>,
                    name: &str,
                    v: serde_json::Value| {
        ready = false;
        checks.insert(name.to_owned(), v);
    };

    let health = state.health();
    if health.draining() {
        fail(
            &mut checks,
            "shutdown",
            json!({"ok": false, "detail": "shutting down"}),
        );
    }
    match tokio::time::timeout(CHECK_TIMEOUT, catalog_checks(&state)).await {
        Ok(Ok(c)) => {
            checks.insert("catalog".into(), json!({"ok": true}));
            let migrations_ok = c.migrations_at >= c.migrations_needed;
            let m = json!({
                "ok": migrations_ok,
                "at": c.migrations_at,
                "needed": c.migrations_needed,
            });
            if migrations_ok {
                checks.insert("migrations".into(), m);
            } else {
                fail(&mut checks, "migrations", m);
            }
            let installed = c.context != "not installed";
            let ctx = json!({"ok": installed, "implementation": c.context});
            if installed {
                checks.insert("context".into(), ctx);
            } else {
                fail(&mut checks, "context", ctx);
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the catalog database does not answer");
            fail(
                &mut checks,
                "catalog",
                json!({"ok": false, "detail": "the catalog database does not answer"}),
            );
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                "readiness: the catalog database did not answer in time"
            );
            fail(
                &mut checks,
                "catalog",
                json!({"ok": false, "detail": "the catalog database did not answer in time"}),
            );
        }
    }
    match health.workers_alive() {
        None => {
            checks.insert(
                "workers".into(),
                json!({"ok": true, "detail": "this process runs no workers"}),
            );
        }
        Some((alive, expected)) => {
            let w = json!({"ok": alive == expected, "alive": alive, "expected": expected});
            if alive == expected {
                checks.insert("workers".into(), w);
            } else {
                fail(&mut checks, "workers", w);
            }
        }
    }

    if ready {
        return Json(json!({"status": "ready", "checks": checks})).into_response();
    }
    let (code, status, title) = ProblemCode::Unavailable.parts();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, v)| v["ok"] == false)
        .map(|(k, _)| k.as_str())
        .collect();
    let body = json!({
        "type": format!("{}{code}", tenancy_problem::TYPE_PREFIX),
        "title": title,
        "status": status.as_u16(),
        "detail": format!("not ready: {}", failed.join(", ")),
        "code": code,
        "checks": checks,
    });
    let mut resp = problem_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// What `/readyz` reads from the catalog database.
struct CatalogChecks {
    migrations_at: i32,
    migrations_needed: i32,
    context: String,
}

async fn catalog_checks(state: &AppState) -> Result<CatalogChecks, String> {
    let conn = state
        .inner
        .catalog
        .get()
        .await
        .map_err(|e| tenancy_conn::error_text(&e))?;
    let at: i32 = conn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM tenancy_catalog.schema_migrations",
            &[],
        )
        .await
        .map_err(|e| tenancy_conn::pg_error_text(&e))?
        .get(0);
    let context = tenancy_sdk::bootstrap::describe_context_impl(&conn)
        .await
        .map_err(|e| tenancy_conn::error_text(&e))?;
    Ok(CatalogChecks {
        migrations_at: at,
        migrations_needed: tenancy_catalog::MIGRATIONS.last().map_or(0, |m| m.version),
        context,
    })
}
