//! The tenant's API keys: issue (with scopes the caller holds), list a page, revoke.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy_access::Permissions;
use tenancy_axum::{api_key, Body, HttpError, RequestId, Tenant};
use time::format_description::well_known::Rfc3339;

use super::{invalid, text, ApiResult};
use crate::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewApiKey {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
}

/// Issues an API key of the caller's tenant (behind `RequirePermission` for
/// `api_keys:manage`). Its scopes must be permissions the caller holds: one more is
/// refused (403 naming it), an undeclared one too (422 naming it). The key is shown once.
/// It is stored in a transaction of the tenant on the catalog database, through the
/// catalog's function that takes the tenant from that transaction's signed context and
/// records the issue (`api_key.issue`, by the caller) in the control log in that
/// transaction.
pub(super) async fn create_api_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    perms: Permissions,
    request_id: Option<Extension<RequestId>>,
    Body(k): Body<NewApiKey>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = text("name", &k.name, 1, 100)?;
    let scopes = tenancy_access::check_key_scopes(&state.access, &perms, &k.scopes)?;
    let held: Vec<String> = perms.granted().map(str::to_owned).collect();
    let by = api_key::KeyActor::of(&tenant, request_id.as_deref());
    let mut tx = state.keys.begin(tenant.id()).await?;
    let (rec, key) = api_key::issue_tenant_api_key(&mut tx, &by, name, &scopes, &held).await?;
    tx.commit().await?;
    let mut view = key_view(&rec);
    view["key"] = json!(key.expose());
    Ok((StatusCode::CREATED, Json(view)))
}

/// A key as the API shows it: never its secret or its hash.
fn key_view(k: &api_key::ApiKeyRecord) -> Value {
    let ts = |t: time::OffsetDateTime| t.format(&Rfc3339).ok();
    json!({
        "key_id": k.key_id,
        "name": k.name,
        "scopes": k.scopes,
        "created_at": ts(k.created_at),
        "revoked_at": k.revoked_at.and_then(ts),
        "last_used_at": k.last_used_at.and_then(ts),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyPage {
    after: Option<String>,
    limit: Option<i64>,
}

/// One page of the caller's tenant's API keys, newest first, revoked ones included
/// (behind `RequirePermission` for `api_keys:manage`): `{"items", "next_after"}`; pass
/// `next_after` as `after` for the next page (`limit` 1 to 200, default 50).
pub(super) async fn list_api_keys(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    Query(q): Query<KeyPage>,
) -> ApiResult<Json<Value>> {
    let page = tenancy_access::PageRequest::parse(q.after.as_deref(), q.limit)?;
    let after = q
        .after
        .as_deref()
        .map(|c| {
            api_key::parse_api_key_cursor(c)
                .ok_or_else(|| invalid("after", "is not a cursor this list returned"))
        })
        .transpose()?;
    let mut tx = state.keys.begin(tenant.id()).await?;
    let mut keys = api_key::tenant_api_keys(&mut tx, after.as_ref(), page.limit() + 1).await?;
    tx.commit().await?;
    let more = keys.len() as i64 > page.limit();
    keys.truncate(page.limit() as usize);
    let next_after = if more {
        keys.last().map(api_key::api_key_cursor)
    } else {
        None
    };
    Ok(Json(json!({
        "items": keys.iter().map(key_view).collect::<Vec<_>>(),
        "next_after": next_after,
    })))
}

/// Revokes an API key of the caller's tenant (behind `RequirePermission` for
/// `api_keys:manage`): 200 with the key, 404 for a key the tenant does not have (another
/// tenant's key included, which stays as it is). Revoking a revoked key changes nothing.
/// The revocation and its `api_key.revoke` event in the control log commit together.
pub(super) async fn revoke_api_key(
    axum::extract::State(state): axum::extract::State<AppState>,
    tenant: Tenant,
    request_id: Option<Extension<RequestId>>,
    Path(key_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let well_formed = key_id.len() == 16
        && key_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(HttpError::not_found("API key"));
    }
    let mut tx = state.keys.begin(tenant.id()).await?;
    let by = api_key::KeyActor::of(&tenant, request_id.as_deref());
    let revoked = api_key::revoke_tenant_api_key(&mut tx, &by, &key_id).await?;
    tx.commit().await?;
    // This process stops accepting the key now, not when the catalog's notification
    // arrives.
    state.tenancy.forget_api_key(&key_id);
    revoked
        .map(|k| Json(key_view(&k)))
        .ok_or_else(|| HttpError::not_found("API key"))
}
