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

use super::params::{KeyPath, PlanPath, RegionPath};
use super::{keyed_body, meta, parse, written, ApiResult, ConfigState, Problem, Written};

/// A `PUT` of a definition named by the path: the handler reads the key of the path as
/// `$key` (reported as `$what`), checks the body against the schema `$schema`, sets the key
/// as the body's `$field`, reads it as `$def` and writes it with the store's `$write`.
macro_rules! put_definition {
    ($(#[$doc:meta])* $name:ident, $path:literal, $params:ident { $param:ident }, $key:ty, $what:literal,
     $field:literal, $schema:ident, $def:ty, $write:ident, $refs:literal) => {
        $(#[$doc])*
        #[utoipa::path(put, path = $path, tag = "config", params($params),
            request_body(content = super::bodies::$schema),
            responses((status = 200, body = Written),
                (status = 404, description = $refs, body = Problem, content_type = "application/problem+json"),
                (status = 409, description = "Conflicts with a stored definition", body = Problem, content_type = "application/problem+json"),
                (status = 422, body = Problem, content_type = "application/problem+json")))]
        pub(super) async fn $name(
            State(s): State<ConfigState>,
            Path($params { $param }): Path<$params>,
            headers: HeaderMap,
            Json(body): Json<Value>,
        ) -> ApiResult<Json<Written>> {
            let (m, def) =
                keyed_body::<$key, $def>(&headers, $what, &$param, $field, stringify!($schema), body)?;
            Ok(written(s.store.$write(&def, &m).await?))
        }
    };
}

put_definition!(
    /// Creates or replaces an entitlement definition: a feature (`{"kind": "feature",
    /// "default": true}`) or a limit (`{"kind": "limit", "default": 5}`, `null` for
    /// unlimited). Its kind cannot change (409).
    put_entitlement, "/v1/config/entitlements/{key}", KeyPath { key }, EntitlementKey,
    "entitlement key", "key", EntitlementBody, EntitlementDef, put_entitlement,
    "Not found"
);

put_definition!(
    /// Creates or replaces a plan (`{"display_name", "entitlements", "settings", "flags"}`).
    /// Every key it names must be defined (404), and every value must fit its definition
    /// (409).
    put_plan, "/v1/config/plans/{plan}", PlanPath { plan }, PlanKey, "plan", "key", PlanBody, Plan,
    put_plan, "An entitlement, setting or flag the plan names is not defined"
);

put_definition!(
    /// Creates or replaces a region's layer (`{"entitlements", "settings", "flags"}`). The
    /// region must be registered and every key it names defined (404); every value must
    /// fit its definition (409).
    put_region, "/v1/config/regions/{region}", RegionPath { region }, RegionId, "region", "region",
    RegionBody, RegionLayer, put_region_layer,
    "The region, or an entitlement, setting or flag the layer names, does not exist"
);

put_definition!(
    /// Creates or replaces a flag. Its default and off variants and the variants its rules
    /// serve must be among its variants, and each rollout's weights sum to 10000 (422).
    put_flag, "/v1/config/flags/{key}", KeyPath { key }, FlagKey, "flag key", "key", FlagBody,
    Flag, put_flag, "Not found"
);

put_definition!(
    /// Creates or replaces a typed setting (`{"schema": <JSON Schema>, "default": …,
    /// "description"}`): the schema must be a valid JSON Schema and the default satisfy it
    /// (422); a new schema must accept every value tenants have (409).
    put_setting_def, "/v1/config/settings/{key}", KeyPath { key }, SettingKey, "setting key",
    "key", SettingDefBody, SettingDef, put_setting_def, "Not found"
);

/// Reads a flag from the store.
#[utoipa::path(get, path = "/v1/config/flags/{key}", tag = "config",
    params(KeyPath),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_flag(
    State(s): State<ConfigState>,
    Path(KeyPath { key }): Path<KeyPath>,
) -> ApiResult<Json<Flag>> {
    let key: FlagKey = parse("flag key", &key)?;
    Ok(Json(s.store.get_flag(&key).await?))
}

/// Deletes a flag and its overrides.
#[utoipa::path(delete, path = "/v1/config/flags/{key}", tag = "config",
    params(KeyPath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_flag(
    State(s): State<ConfigState>,
    Path(KeyPath { key }): Path<KeyPath>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let m = meta(&headers)?;
    let key: FlagKey = parse("flag key", &key)?;
    Ok(written(s.store.delete_flag(&key, &m).await?))
}

/// Turns the kill switch on: the flag serves its off variant to everyone.
#[utoipa::path(post, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(KeyPath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn kill_flag(
    State(s): State<ConfigState>,
    Path(KeyPath { key }): Path<KeyPath>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    kill_switch(&s, &key, &headers, true).await
}

/// Turns the kill switch off.
#[utoipa::path(delete, path = "/v1/config/flags/{key}/kill", tag = "config",
    params(KeyPath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn unkill_flag(
    State(s): State<ConfigState>,
    Path(KeyPath { key }): Path<KeyPath>,
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
