//! Tenant-scoped access control on top of the tenancy request layer.
//!
//! Inside each tenant, subjects (a JWT `sub`, an API key as `api_key:<key id>`, an
//! application session's subject) hold roles, and roles are sets of the permissions the
//! application declares.
//!
//! Main parts:
//! - [`AccessModel`] → [`Access`]: the declared permissions (`invoices:create`, …, and
//!   always [`MANAGE_ACCESS`]), what the built-in roles hold ([`BuiltinRole`]: owner and
//!   admin hold every permission, member and viewer what the model says), and, per trusted
//!   JWT issuer, which claim values mean which role ([`ClaimRoles`]).
//! - Storage: `tenancy.access_roles` (a tenant's custom roles) and `tenancy.access_grants`
//!   (subject → role), tenant tables in the tenant's database made with the SDK's
//!   `tenancy.make_tenant_table`, so they work for every placement and the runtime role
//!   only ever sees its own tenant's rows ([`install`], [`ACCESS_SQL`]).
//! - Resolution ([`Access::resolve`]): one statement in the request's own `TenantTx`
//!   reads the caller's stored grants and the custom roles among them and those its JWT
//!   maps to; an API key also holds its scopes that are declared permissions. The result,
//!   [`Permissions`], is computed at most once per request (kept in the request's
//!   extensions) and answers checks without allocating.
//! - For axum: the [`Permissions`] extractor (put the [`Access`] in the request
//!   extensions with `axum::Extension`), and [`RequirePermission`], a tower layer built by
//!   [`Access::require`] that refuses with 403 `permission-denied` naming the permission
//!   before the handler runs.
//! - Management ([`create_role`], [`update_role`], [`delete_role`], [`grant`],
//!   [`revoke`], [`get_role`], [`check_key_scopes`], and the paged [`list_roles`] and
//!   [`list_grants`]: a [`PageRequest`] in, a [`Page`] with its `next_after` cursor
//!   out): each change takes one [`Change`] (the tenant's transaction, the model, the
//!   caller's permissions, the actor); every input checked with an error naming the field; every change recorded as an audit event
//!   (`tenancy_audit::record`) in the same `TenantTx`, so the event exists exactly when
//!   the change committed. Nobody hands out more than they hold: a role's permissions,
//!   a granted role and an API key's scopes must be within the caller's own permissions,
//!   only an owner grants or revokes `owner`, and the last owner cannot be revoked.
//!   [`api::router`] serves them over HTTP to the tenant's own admins; handlers that
//!   manage something take one [`Manager`] (model, tenant, permissions, actor,
//!   transaction).
//!
//! What it does not do: it does not authenticate (the request layer does), does not
//! issue API keys (the catalog does; [`check_key_scopes`] is the check before), does not
//! cache permissions across requests (a revoked grant is effective at the next request),
//! and never reads another tenant's roles or grants.

pub mod api;
mod error;
mod guard;
mod model;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use error::{AccessError, ModelError};
pub use guard::{Manager, RequirePermission, RequirePermissionService};
pub use model::{
    AccessModel, BuiltinRole, ClaimRoles, MANAGE_ACCESS, MAX_PERMISSIONS, MAX_PERMISSION_LEN,
    MAX_ROLE_LEN, MAX_SUBJECT_LEN,
};
pub use store::{
    check_key_scopes, create_role, delete_role, get_role, grant, list_grants, list_roles, revoke,
    update_role, By, Change, Grant, Page, PageRequest, Role, DEFAULT_PAGE, MAX_CURSOR_LEN,
    MAX_PAGE,
};

/// How the request layer names an API key as a subject (`api_key:<key id>`).
const API_KEY_SUBJECT: &str = "api_key:";

/// The SQL that creates the access tables; run it as the owner role on each tenant
/// database after the tenancy runtime (and the audit table, `tenancy_audit::install`),
/// e.g. with [`install`].
pub const ACCESS_SQL: &str = include_str!("../sql/access.sql");

/// Installs (or updates) the access tables. `owner` must be connected as the owner role
/// to the tenant database. Idempotent.
pub async fn install(owner: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    owner.batch_execute(ACCESS_SQL).await
}

/// The checked access model of an application. Cloning it is cheap (one shared body).
#[derive(Debug, Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every permission the application declares ([`MANAGE_ACCESS`] included).
    declared: BTreeSet<String>,
    /// What the built-in `member` role holds.
    member: BTreeSet<String>,
    /// What the built-in `viewer` role holds.
    viewer: BTreeSet<String>,
    /// Claim mappings by exact issuer.
    issuers: BTreeMap<String, ClaimRoles>,
}

impl Access {
    /// Whether the application declares `permission`.
    pub fn declares(&self, permission: &str) -> bool {
        self.inner.declared.contains(permission)
    }

    /// Every declared permission, sorted.
    pub fn declared(&self) -> impl Iterator<Item = &str> {
        self.inner.declared.iter().map(String::as_str)
    }

    /// The permissions of a built-in role.
    pub fn builtin_permissions(&self, role: BuiltinRole) -> &BTreeSet<String> {
        match role {
            BuiltinRole::Owner | BuiltinRole::Admin => &self.inner.declared,
            BuiltinRole::Member => &self.inner.member,
            BuiltinRole::Viewer => &self.inner.viewer,
        }
    }

    /// A [`RequirePermission`] layer for `permission`; refused at startup when the model
    /// does not declare it (a misspelt permission would otherwise deny everyone).
    pub fn require(&self, permission: &str) -> Result<RequirePermission, ModelError> {
        if !self.declares(permission) {
            return Err(ModelError(format!(
                "RequirePermission names {permission:?}, which the model does not declare"
            )));
        }
        Ok(RequirePermission::new(self.clone(), permission))
    }

    /// The roles `tenant`'s JWT maps to under its issuer's mapping (none without a JWT or
    /// a mapping for its issuer).
    fn mapped_roles(&self, tenant: &tenancy_axum::Tenant) -> Vec<String> {
        let Some(mapping) = tenant
            .jwt_issuer()
            .and_then(|iss| self.inner.issuers.get(iss))
        else {
            return Vec::new();
        };
        model::claim_roles(mapping, tenant.jwt_claim(mapping.claim()))
    }

    /// The permissions of the caller of `tenant`, read in `tx` (a transaction of that
    /// tenant): the roles granted to its subject, the roles its JWT's claims map to under
    /// its issuer's mapping, and for an API key its scopes that are declared permissions.
    /// Permissions a custom role lists that the model no longer declares grant nothing; a
    /// role name that is neither built in nor a custom role of this tenant grants nothing;
    /// grants to `api_key:<id>` count only when that API key authenticated the request.
    pub async fn resolve(
        &self,
        tx: &mut tenancy_sdk::TenantTx,
        tenant: &tenancy_axum::Tenant,
    ) -> Result<Permissions, AccessError> {
        let mapped = self.mapped_roles(tenant);
        let by_key = tenant.via().contains(&tenancy_axum::SourceKind::ApiKey);
        // `api_key:<id>` names an API key only when the key itself authenticated the
        // request: a token whose `sub` merely spells it gets no grant of that key.
        let subject = tenant
            .subject()
            .filter(|s| by_key || !s.starts_with(API_KEY_SUBJECT));
        let mut roles: BTreeSet<String> = BTreeSet::new();
        let mut granted: BTreeSet<String> = BTreeSet::new();
        if subject.is_some() || !mapped.is_empty() {
            let rows = tx
                .query(
                    "WITH held(role) AS (
                         SELECT role FROM tenancy.access_grants WHERE subject = $1
                         UNION SELECT unnest($2::text[]))
                     SELECT h.role, r.permissions
                       FROM held h LEFT JOIN tenancy.access_roles r ON r.name = h.role",
                    &[&subject, &mapped],
                )
                .await?;
            for row in rows {
                let role: String = row.get(0);
                let custom: Option<Vec<String>> = row.get(1);
                if let Some(b) = BuiltinRole::from_name(&role) {
                    granted.extend(self.builtin_permissions(b).iter().cloned());
                    roles.insert(role);
                } else if let Some(perms) = custom {
                    granted.extend(perms.into_iter().filter(|p| self.declares(p)));
                    roles.insert(role);
                }
            }
        }
        if by_key {
            granted.extend(tenant.scopes().iter().filter(|s| self.declares(s)).cloned());
        }
        Ok(Permissions {
            inner: Arc::new(PermInner {
                owner: roles.contains(BuiltinRole::Owner.as_str()),
                roles: roles.into_iter().collect(),
                granted,
            }),
        })
    }
}

/// What the caller of a request may do in its tenant: its roles and the permissions they
/// (and, for an API key, its scopes) grant. Extract it in a handler with
/// `perms: Permissions`; it is resolved at most once per request. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    inner: Arc<PermInner>,
}

#[derive(Debug, PartialEq, Eq)]
struct PermInner {
    /// The roles held (built-in and custom), sorted.
    roles: Vec<String>,
    /// Every permission granted.
    granted: BTreeSet<String>,
    /// Whether `owner` is among the roles (only owners grant or revoke it).
    owner: bool,
}

impl Permissions {
    /// Every permission of `access`, as an owner: for platform administrators acting on a
    /// tenant through the control plane, and for tests.
    pub fn all(access: &Access) -> Permissions {
        Permissions {
            inner: Arc::new(PermInner {
                roles: vec![BuiltinRole::Owner.as_str().to_owned()],
                granted: access.inner.declared.clone(),
                owner: true,
            }),
        }
    }

    /// Whether `permission` is granted.
    pub fn has(&self, permission: &str) -> bool {
        self.inner.granted.contains(permission)
    }

    /// Refuses (403 `permission-denied`, naming it) unless `permission` is granted.
    pub fn require(&self, permission: &str) -> Result<(), AccessError> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(AccessError::Denied {
                permission: permission.to_owned(),
            })
        }
    }

    /// The roles held, sorted.
    pub fn roles(&self) -> &[String] {
        &self.inner.roles
    }

    /// The permissions granted, sorted.
    pub fn granted(&self) -> impl Iterator<Item = &str> {
        self.inner.granted.iter().map(String::as_str)
    }

    /// Whether the caller holds the built-in `owner` role.
    pub fn is_owner(&self) -> bool {
        self.inner.owner
    }
}
