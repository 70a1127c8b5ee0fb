//! A tenant's configuration: targeting attributes, overrides, branding, setting values
//! and custom domains.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_config::model::{Branding, Domain, Override, OverrideTarget, SettingKey};
use tenancy_core::TenantId;
use time::OffsetDateTime;

use super::params::{DomainPath, OverridePath, TenantKeyPath, TenantPath};
use super::{
    bad, checked, parse, tenant_write, written, ApiResult, ConfigState, Problem, ProblemCode,
    Written,
};

#[derive(Debug, Deserialize)]
struct AttributesBody {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    custom: serde_json::Map<String, Value>,
}

/// Sets a tenant's tags and custom attributes (body: `{"tags": [...], "custom": {...}}`).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/attributes", tag = "config",
    params(TenantPath),
    request_body(content = super::bodies::AttributesBody),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_attributes(
    State(s): State<ConfigState>,
    Path(TenantPath { tenant }): Path<TenantPath>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let ((m, tenant), body) = (
        tenant_write(&headers, &tenant)?,
        checked::<AttributesBody>("AttributesBody", body)?,
    );
    Ok(written(
        s.store
            .put_tenant_attributes(tenant, &body.tags, &body.custom, &m)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
struct OverrideBody {
    value: Value,
    reason: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

fn target(kind: &str, key: &str) -> ApiResult<OverrideTarget> {
    match kind {
        "flag" => Ok(OverrideTarget::Flag(parse("flag key", key)?)),
        "entitlement" => Ok(OverrideTarget::Entitlement(parse("entitlement key", key)?)),
        _ => Err(bad(format!(
            "override kind {kind:?} is unknown; expected flag or entitlement"
        ))),
    }
}

/// Sets a per-tenant override (body: `{"value", "reason", "expires_at"?}`; a flag
/// override's value is a variant key).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/overrides/{kind}/{key}", tag = "config",
    params(OverridePath),
    request_body(content = super::bodies::OverrideBody),
    responses((status = 200, body = Written), (status = 404, description = "No such tenant, or no such definition", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The value does not fit the stored definition", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_override(
    State(s): State<ConfigState>,
    Path(OverridePath { tenant, kind, key }): Path<OverridePath>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, tenant) = tenant_write(&headers, &tenant)?;
    let target = target(&kind, &key)?;
    let body: OverrideBody = checked("OverrideBody", body)?;
    let o = Override {
        tenant_id: tenant,
        target,
        value: body.value,
        reason: body.reason,
        expires_at: body.expires_at,
        created_by: m.actor.clone(),
    };
    Ok(written(s.store.put_override(&o, &m).await?))
}

/// Removes a per-tenant override.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/overrides/{kind}/{key}", tag = "config",
    params(OverridePath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_override(
    State(s): State<ConfigState>,
    Path(OverridePath { tenant, kind, key }): Path<OverridePath>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let (m, tenant) = tenant_write(&headers, &tenant)?;
    let target = target(&kind, &key)?;
    Ok(written(s.store.delete_override(tenant, &target, &m).await?))
}

/// Sets a tenant's white-label branding (validated).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/branding", tag = "config",
    params(TenantPath),
    request_body(content = super::bodies::BrandingBody),
    responses((status = 200, body = Written), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_branding(
    State(s): State<ConfigState>,
    Path(TenantPath { tenant }): Path<TenantPath>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let ((m, tenant), b) = (
        tenant_write(&headers, &tenant)?,
        checked::<Branding>("BrandingBody", body)?,
    );
    Ok(written(s.store.put_branding(tenant, &b, &m).await?))
}

/// A tenant's branding, from the snapshot.
#[utoipa::path(get, path = "/v1/config/tenants/{tenant}/branding", tag = "config",
    params(TenantPath),
    responses((status = 200, body = Object), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_branding(
    State(s): State<ConfigState>,
    Path(TenantPath { tenant }): Path<TenantPath>,
) -> ApiResult<Json<Branding>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    s.client
        .snapshot()
        .branding(tenant)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            Problem::new(
                ProblemCode::NotFound,
                "this tenant has no branding".to_owned(),
            )
            .into()
        })
}

/// Sets a tenant's value of a typed setting (body: the JSON value; validated against the schema).
#[utoipa::path(put, path = "/v1/config/tenants/{tenant}/settings/{key}", tag = "config",
    params(TenantKeyPath),
    request_body(content = super::bodies::JsonValue, description = "The value, valid under the setting's JSON Schema (409 when it is not)"),
    responses((status = 200, body = Written), (status = 404, description = "No such tenant, or no such definition", body = Problem, content_type = "application/problem+json"), (status = 409, description = "The value does not fit the stored definition", body = Problem, content_type = "application/problem+json"), (status = 422, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn put_tenant_setting(
    State(s): State<ConfigState>,
    Path(TenantKeyPath { tenant, key }): Path<TenantKeyPath>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Written>> {
    let (m, tenant) = tenant_write(&headers, &tenant)?;
    let key: SettingKey = parse("setting key", &key)?;
    super::bodies::check("JsonValue", &body)?;
    Ok(written(
        s.store.put_tenant_setting(tenant, &key, &body, &m).await?,
    ))
}

/// Removes a tenant's value of a setting.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/settings/{key}", tag = "config",
    params(TenantKeyPath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn delete_tenant_setting(
    State(s): State<ConfigState>,
    Path(TenantKeyPath { tenant, key }): Path<TenantKeyPath>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let (m, tenant) = tenant_write(&headers, &tenant)?;
    let key: SettingKey = parse("setting key", &key)?;
    Ok(written(
        s.store.delete_tenant_setting(tenant, &key, &m).await?,
    ))
}

/// A tenant's custom domains.
#[utoipa::path(get, path = "/v1/config/tenants/{tenant}/domains", tag = "config",
    params(TenantPath),
    responses((status = 200, body = Object)))]
pub(super) async fn list_domains(
    State(s): State<ConfigState>,
    Path(TenantPath { tenant }): Path<TenantPath>,
) -> ApiResult<Json<Value>> {
    let tenant: TenantId = parse("tenant id", &tenant)?;
    let domains = s.store.list_domains(tenant).await?;
    let items: Vec<Value> = domains.iter().map(domain_json).collect();
    Ok(Json(json!({ "domains": items })))
}

fn domain_json(d: &Domain) -> Value {
    json!({
        "hostname": d.hostname,
        "state": d.state,
        "verified_at": d.verified_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
        "last_error": d.last_error,
        "challenge": { "type": "TXT", "name": d.challenge_name(), "value": d.challenge_value() },
    })
}

/// A domain operation answering the domain as it is after it: who and why, the tenant
/// and hostname of the path, then `$call` (with `$s`, `$tenant`, `$host` and `$m` bound).
macro_rules! domain_action {
    ($(#[$doc:meta])* $name:ident, $method:ident, $path:literal, $status:literal,
     |$s:ident, $tenant:ident, $host:ident, $m:ident| $call:expr) => {
        $(#[$doc])*
        #[utoipa::path($method, path = $path, tag = "config", params(DomainPath),
            responses((status = 200, body = Object),
                (status = $status, body = Problem, content_type = "application/problem+json")))]
        pub(super) async fn $name(
            State($s): State<ConfigState>,
            Path(DomainPath { tenant, hostname: $host }): Path<DomainPath>,
            headers: HeaderMap,
        ) -> ApiResult<Json<Value>> {
            let ($m, $tenant) = tenant_write(&headers, &tenant)?;
            let d = $call.await?;
            Ok(Json(domain_json(&d)))
        }
    };
}

domain_action!(
    /// Claims a custom domain (state `pending`); the answer says which TXT record to
    /// publish.
    add_domain, put, "/v1/config/tenants/{tenant}/domains/{hostname}", 422,
    |s, tenant, hostname, m| s.store.add_domain(tenant, &hostname, &m)
);

domain_action!(
    /// Checks the domain's TXT record; verified on success, the failure recorded otherwise.
    verify_domain, post, "/v1/config/tenants/{tenant}/domains/{hostname}/verify", 409,
    |s, tenant, hostname, m| s.store.verify_domain(tenant, &hostname, s.resolver.as_ref(), &m)
);

domain_action!(
    /// Switches a domain off.
    disable_domain, post, "/v1/config/tenants/{tenant}/domains/{hostname}/disable", 404,
    |s, tenant, hostname, m| s.store.disable_domain(tenant, &hostname, &m)
);

/// Removes a domain claim.
#[utoipa::path(delete, path = "/v1/config/tenants/{tenant}/domains/{hostname}", tag = "config",
    params(DomainPath),
    responses((status = 200, body = Written), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn remove_domain(
    State(s): State<ConfigState>,
    Path(DomainPath { tenant, hostname }): Path<DomainPath>,
    headers: HeaderMap,
) -> ApiResult<Json<Written>> {
    let (m, tenant) = tenant_write(&headers, &tenant)?;
    Ok(written(s.store.remove_domain(tenant, &hostname, &m).await?))
}
