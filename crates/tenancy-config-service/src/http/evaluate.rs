//! Reading: the change log, the snapshot's freshness, evaluation for services in other
//! languages and explanations.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::params::TenantPath;
use super::{bad, parse, ApiResult, ConfigState, Problem, ProblemCode};

#[derive(Debug, Deserialize)]
pub(super) struct ChangesQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
    tenant: Option<String>,
}

/// The change log: who changed what, when and why, with before and after.
#[utoipa::path(get, path = "/v1/config/changes", tag = "config",
    params(("after" = Option<i64>, Query, description = "versions after this"), ("limit" = Option<i64>, Query, description = "1 to 1000, default 100", minimum = 1, maximum = 1000), ("tenant" = Option<String>, Query, description = "only this tenant's (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")),
    responses((status = 200, body = Object)))]
pub(super) async fn changes(
    State(s): State<ConfigState>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    let tenant = q
        .tenant
        .as_deref()
        .map(|t| parse::<TenantId>("tenant id", t))
        .transpose()?;
    let items = s
        .store
        .changes(q.after, q.limit.unwrap_or(100), tenant)
        .await?;
    Ok(Json(json!({ "changes": items })))
}

/// The evaluating process's snapshot freshness.
#[utoipa::path(get, path = "/v1/config/status", tag = "config", responses((status = 200, body = Object)))]
pub(super) async fn status(State(s): State<ConfigState>) -> Json<Value> {
    let st = s.client.status();
    Json(json!({
        "version": st.version,
        "connected": st.connected,
        "stale": st.stale,
        "since_refresh_ms": u64::try_from(st.since_refresh.as_millis()).unwrap_or(u64::MAX),
        "last_error": st.last_error,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct EvaluateQuery {
    /// Comma-separated flag keys; all flags when absent.
    flags: Option<String>,
}

/// Evaluates a tenant's flags, entitlements and settings in this process (for services
/// in other languages). `stale` says whether the snapshot may be out of date.
#[utoipa::path(get, path = "/v1/evaluate/{tenant}", tag = "config",
    params(TenantPath, ("flags" = Option<String>, Query, description = "comma-separated flag keys (an unknown key is answered as not found)", pattern = "^[^\\u0000]*$")),
    responses((status = 200, body = Object)))]
pub(super) async fn evaluate(
    State(s): State<ConfigState>,
    Path(TenantPath { tenant }): Path<TenantPath>,
    Query(q): Query<EvaluateQuery>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let snap = s.client.snapshot();
    let now = OffsetDateTime::now_utc();
    let keys: Vec<String> = match &q.flags {
        Some(list) => list
            .split(',')
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect(),
        None => snap.flag_keys().iter().map(|k| k.to_string()).collect(),
    };
    let mut flags = serde_json::Map::new();
    for k in keys {
        let v = match snap.flag(tenant, &k, now) {
            Some(e) => json!({ "variant": e.variant, "value": e.value, "reason": e.reason }),
            None => json!({ "error": "flag_not_found" }),
        };
        flags.insert(k, v);
    }
    let mut entitlements = serde_json::Map::new();
    for k in snap.entitlement_keys() {
        if let Some(r) = snap.entitlement(tenant, k.as_str(), now) {
            entitlements.insert(k.to_string(), json!({ "value": r.value, "layer": r.layer }));
        }
    }
    let mut settings = serde_json::Map::new();
    for k in snap.setting_keys() {
        if let Some(r) = snap.setting(tenant, k.as_str()) {
            settings.insert(k.to_string(), json!({ "value": r.value, "layer": r.layer }));
        }
    }
    let st = s.client.status();
    Ok(Json(json!({
        "tenant_id": tenant,
        "version": snap.version(),
        "stale": st.stale,
        "flags": flags,
        "entitlements": entitlements,
        "settings": settings,
        "branding": snap.branding(tenant),
    })))
}

/// Explains which layer decided a flag, entitlement or setting for a tenant.
#[utoipa::path(get, path = "/v1/evaluate/{tenant}/explain/{kind}/{key}", tag = "config",
    params(("tenant" = String, Path, description = "tenant id (a UUID, not the nil one)", pattern = "^(?!00000000-0000-0000-0000-000000000000$)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"), ("kind" = String, Path, description = "flag, entitlement or setting", pattern = "^(flag|entitlement|setting)$"), ("key" = String, Path, description = "key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn explain(
    State(s): State<ConfigState>,
    Path((tenant, kind, key)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    if !matches!(kind.as_str(), "flag" | "entitlement" | "setting") {
        return Err(bad(format!(
            "kind {kind:?} is unknown; expected flag, entitlement or setting"
        )));
    }
    match s.client.explain(&kind, tenant, &key) {
        Ok(e) => Ok(Json(serde_json::to_value(e).unwrap_or(Value::Null))),
        // The one way an explanation fails: no such key.
        Err(e) => Err(Problem::new(ProblemCode::NotFound, e.to_string()).into()),
    }
}
