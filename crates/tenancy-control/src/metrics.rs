//! `/metrics`: Prometheus text format, through the `metrics` facade and its Prometheus
//! exporter (installed as the process's recorder by [`install`]; other crates of the
//! process record into the same one with `metrics::counter!` and friends).
//!
//! Series (every label has a bounded set of values; no tenant id, no raw path):
//! - `tenancy_http_requests_total{method,route,status}` and
//!   `tenancy_http_request_duration_seconds{method,route}` (histogram): `route` is the
//!   matched route template with its parameters written `:name` (`/v1/tenants/:id`), or
//!   `unmatched`.
//! - `tenancy_workflow_steps_total{kind,outcome}` and
//!   `tenancy_workflow_step_duration_seconds{kind}` (histogram), from the provisioning
//!   engine; `tenancy_workflows_finished_total{kind,status}`.
//! - `tenancy_webhook_deliveries_total{outcome}`.
//! - `tenancy_migration_targets_total{kind,outcome}` (from `tenancy migrate` and the
//!   workers' app migrations).
//! - Read from the catalog when scraped (aggregates, bounded labels):
//!   `tenancy_tenants{state}`, `tenancy_migration_targets{kind,state="current"|"behind"|"failed"}`.
//! - Read when scraped: `tenancy_catalog_pool_connections{state="in_use"|"idle"|"max"}`,
//!   `tenancy_catalog_pool_waiting`, `tenancy_workers_alive`,
//!   `tenancy_config_snapshot_age_seconds`, `tenancy_config_snapshot_version`,
//!   `tenancy_config_listener_connected`, `tenancy_shutting_down`.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Histogram buckets of durations, in seconds (1 ms to 60 s).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later
/// calls return the same handle). `None` when another recorder was installed first: the
/// application then exports with its own.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    DURATION_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => {
                    describe();
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "another metrics recorder is installed; /metrics serves nothing");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "tenancy_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "tenancy_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and route template"
    );
    describe_gauge!(
        "tenancy_catalog_pool_connections",
        "Catalog pool connections: in_use, idle, max"
    );
    describe_gauge!(
        "tenancy_catalog_pool_waiting",
        "Requests waiting for a catalog connection"
    );
    describe_gauge!("tenancy_workers_alive", "Provisioning workers running");
    describe_gauge!(
        "tenancy_config_snapshot_age_seconds",
        Unit::Seconds,
        "Time since the configuration snapshot was last fully loaded"
    );
    describe_gauge!(
        "tenancy_config_snapshot_version",
        "Highest configuration change version in the snapshot"
    );
    describe_gauge!(
        "tenancy_config_listener_connected",
        "1 when the configuration LISTEN connection is up"
    );
    describe_counter!(
        "tenancy_anomalies_total",
        "Anomalies detected (access anomalies pushed by applications' detectors, configuration and provisioning rules' findings), by kind and severity"
    );
    describe_gauge!("tenancy_shutting_down", "1 once shutdown has begun");
    describe_gauge!("tenancy_tenants", "Tenants by lifecycle state");
    describe_gauge!(
        "tenancy_migration_targets",
        "App-migration targets by placement: at the fleet's version, behind it, or failed"
    );
}

/// A route template as a label value: `/v1/tenants/{id}` is written `/v1/tenants/:id`
/// (braces inside label values are valid, but common text-format parsers stop at them).
pub fn route_label(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    let mut chars = route.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                out.push(':');
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    out.push(c);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Counts one answered request.
pub fn record_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let route = &route_label(route);
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("tenancy_http_requests_total", &labels).increment(1);
    metrics::histogram!(
        "tenancy_http_request_duration_seconds",
        "method" => method.to_owned(),
        "route" => route.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

/// Every tenant state (the catalog's CHECK).
const TENANT_STATES: &[&str] = &["provisioning", "active", "suspended", "deleting", "deleted"];

/// How long a scrape waits for the catalog's counts (the rest is served without them).
const CATALOG_TIMEOUT: Duration = Duration::from_secs(2);

/// Gauges read from the catalog when scraped: tenants by state, and migration targets
/// (tenants with their own storage, clusters' pooled tables) at the fleet's latest
/// version, behind it, or whose last migration failed. One aggregate query each; the
/// labels are the fixed sets of states and placements, whatever the number of tenants.
async fn catalog_gauges(state: &AppState) {
    let conn = match state.inner.catalog.get().await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %tenancy_conn::ErrorText(&e), "metrics: no catalog connection");
            return;
        }
    };
    match conn
        .query(
            "SELECT state::text, count(*) FROM tenancy_catalog.tenants GROUP BY 1",
            &[],
        )
        .await
    {
        Ok(rows) => {
            // A state without tenants is 0, not its last count.
            for st in TENANT_STATES {
                metrics::gauge!("tenancy_tenants", "state" => *st).set(0.0);
            }
            for r in rows {
                let (st, n): (String, i64) = (r.get(0), r.get(1));
                metrics::gauge!("tenancy_tenants", "state" => st).set(n as f64);
            }
        }
        Err(e) => {
            tracing::debug!(error = %tenancy_conn::pg_error_text(&e), "metrics: counting tenants")
        }
    }
    match conn
        .query(
            "WITH latest AS (SELECT coalesce(max(version), 0) AS v FROM tenancy_catalog.app_migrations)
             SELECT kind,
                    count(*) FILTER (WHERE error IS NULL AND version >= latest.v),
                    count(*) FILTER (WHERE error IS NULL AND version < latest.v),
                    count(*) FILTER (WHERE error IS NOT NULL)
               FROM tenancy_catalog.app_migration_targets, latest
              GROUP BY kind",
            &[],
        )
        .await
    {
        Ok(rows) => {
            for kind in ["pooled", "schema", "dedicated"] {
                for st in ["current", "behind", "failed"] {
                    metrics::gauge!("tenancy_migration_targets", "kind" => kind, "state" => st)
                        .set(0.0);
                }
            }
            for r in rows {
                let kind: String = r.get(0);
                for (i, st) in [(1, "current"), (2, "behind"), (3, "failed")] {
                    let n: i64 = r.get(i);
                    metrics::gauge!("tenancy_migration_targets", "kind" => kind.clone(), "state" => st)
                        .set(n as f64);
                }
            }
        }
        Err(e) => tracing::debug!(error = %tenancy_conn::pg_error_text(&e), "metrics: counting migration targets"),
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, body = String, content_type = "text/plain; version=0.0.4", description = "Prometheus text format"),
    (status = 404, body = crate::error::Problem, content_type = "application/problem+json", description = "This process exports no metrics itself (an application's own recorder does)"),
    (status = 429, body = crate::error::Problem, content_type = "application/problem+json", description = "Rate limit (limits.public)", headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))))]
pub async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = install() else {
        return (
            axum::http::StatusCode::NOT_FOUND,
            "metrics are exported by the application's own recorder\n",
        )
            .into_response();
    };
    let pool = state.inner.catalog.status();
    let in_use = pool.size.saturating_sub(pool.available);
    metrics::gauge!("tenancy_catalog_pool_connections", "state" => "in_use").set(in_use as f64);
    metrics::gauge!("tenancy_catalog_pool_connections", "state" => "idle")
        .set(pool.available as f64);
    metrics::gauge!("tenancy_catalog_pool_connections", "state" => "max").set(pool.max_size as f64);
    metrics::gauge!("tenancy_catalog_pool_waiting").set(pool.waiting as f64);
    metrics::gauge!("tenancy_workers_alive").set(state.health().workers_alive_count() as f64);
    metrics::gauge!("tenancy_shutting_down").set(f64::from(u8::from(state.health().draining())));
    if let Some(config) = state.config() {
        let s = config.client.status();
        metrics::gauge!("tenancy_config_snapshot_age_seconds").set(s.since_refresh.as_secs_f64());
        metrics::gauge!("tenancy_config_snapshot_version").set(s.version as f64);
        metrics::gauge!("tenancy_config_listener_connected").set(f64::from(u8::from(s.connected)));
    }
    if tokio::time::timeout(CATALOG_TIMEOUT, catalog_gauges(&state))
        .await
        .is_err()
    {
        tracing::warn!("metrics: the catalog counts did not come within the scrape's budget");
    }
    handle.run_upkeep();
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_labels_name_parameters_without_braces() {
        assert_eq!(
            super::route_label("/v1/tenants/{id}/suspend"),
            "/v1/tenants/:id/suspend"
        );
        assert_eq!(
            super::route_label("/v1/config/flags/{key}"),
            "/v1/config/flags/:key"
        );
        assert_eq!(super::route_label("/readyz"), "/readyz");
        assert_eq!(super::route_label("unmatched"), "unmatched");
    }
}
