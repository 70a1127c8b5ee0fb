//! Definitions: entitlements, plans, region layers, flags (and their kill switch) and
//! setting definitions.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;
use tenancy_config::model::{
    EntitlementDef, EntitlementKey, Flag, FlagKey, Plan, RegionLayer, SettingDef, SettingKey,
};
use tenancy_core::{PlanKey, RegionId};

use super::{keyed_body, meta, parse, written, ApiResult, ConfigState, Problem, Written};

/// Creates or replaces an entitlement definition (body: `{"kind": "feature"|"limit", "default": …, "description": …}`).
#[utoipa::path(put, path = "/v1/config/entitlements/{key}", tag = "config",
    params(("key" = String, Path, description = "entitlement key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "EntitlementDef without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_entitlement(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, def) = keyed_body::<EntitlementKey, EntitlementDef>(
        &headers,
        "entitlement key",
        &key,
        "key",
        body,
    )?;
    Ok(written(s.store.put_entitlement(&def, &m).await?))
}

/// Creates or replaces a plan (body: `{"display_name", "entitlements", "settings", "flags"}`).
#[utoipa::path(put, path = "/v1/config/plans/{plan}", tag = "config",
    params(("plan" = String, Path, description = "plan key", pattern = "^[a-z][a-z0-9_-]*$", max_length = 40)),
    request_body(content = Object, description = "Plan without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_plan(
    State(s): State<ConfigState>,
    Path(plan): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, plan) = keyed_body::<PlanKey, Plan>(&headers, "plan", &plan, "key", body)?;
    Ok(written(s.store.put_plan(&plan, &m).await?))
}

/// Creates or replaces a region's layer (body: `{"entitlements", "settings", "flags"}`).
#[utoipa::path(put, path = "/v1/config/regions/{region}", tag = "config",
    params(("region" = String, Path, description = "region id", pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$", min_length = 2, max_length = 32)),
    request_body(content = Object, description = "LayerValues"),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_region(
    State(s): State<ConfigState>,
    Path(region): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, layer) =
        keyed_body::<RegionId, RegionLayer>(&headers, "region", &region, "region", body)?;
    Ok(written(s.store.put_region_layer(&layer, &m).await?))
}

/// Creates or replaces a flag (body: a Flag without key).
#[utoipa::path(put, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "Flag without key: kind, variants, default_variant, off_variant, killed, rules"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, flag) = keyed_body::<FlagKey, Flag>(&headers, "flag key", &key, "key", body)?;
    Ok(written(s.store.put_flag(&flag, &m).await?))
}

/// Reads a flag from the store.
#[utoipa::path(get, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
) -> ApiResult<Json<Flag>> {
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(s.store.get_flag(&key).await?))
}

/// Deletes a flag and its overrides.
#[utoipa::path(delete, path = "/v1/config/flags/{key}", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    Ok(written(s.store.delete_flag(&key, &m).await?))
}

/// Turns the kill switch on: the flag serves its off variant to everyone.
#[utoipa::path(post, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn kill_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    kill_switch(&s, &key, &headers, true).await
}

/// Turns the kill switch off.
#[utoipa::path(delete, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(("key" = String, Path, description = "flag key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn unkill_flag(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    kill_switch(&s, &key, &headers, false).await
}

async fn kill_switch(
    s: &ConfigState,
    key: &str,
    headers: &HeaderMap,
    killed: bool,
) -> ApiResult<Json<Written>> {
    let m = meta(headers)?;
    let key: FlagKey = parse("flag key", key)?;
    Ok(written(s.store.set_flag_killed(&key, killed, &m).await?))
}

/// Creates or replaces a typed setting (body: `{"schema": <JSON Schema>, "default": …, "description"}`).
#[utoipa::path(put, path = "/v1/config/settings/{key}", tag = "config",
    params(("key" = String, Path, description = "setting key", pattern = "^[a-z][a-z0-9_.-]*$", max_length = 64)),
    request_body(content = Object, description = "SettingDef without key"),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_setting_def(
    State(s): State<ConfigState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, def) =
        keyed_body::<SettingKey, SettingDef>(&headers, "setting key", &key, "key", body)?;
    Ok(written(s.store.put_setting_def(&def, &m).await?))
}
