//! Managing a tenant's roles and grants, each change with its audit event in the same
//! `TenantTx`.
//!
//! Every function takes the caller's [`Permissions`] and refuses unless they include
//! [`MANAGE_ACCESS`] and everything the change hands out; inputs are checked before any
//! statement runs, and a refusal after a statement leaves the rollback to the caller's
//! transaction (the request layer rolls back every error response), so nothing of a
//! refused call is ever stored.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::json;
use tenancy_audit::{Actor, ActorKind, Event};
use tenancy_axum::{SourceKind, Tenant};
use tenancy_sdk::TenantTx;

use crate::model::{permission_shape, role_shape};
use crate::{
    Access, AccessError, BuiltinRole, Permissions, MANAGE_ACCESS, MAX_PERMISSIONS, MAX_ROLE_LEN,
    MAX_SUBJECT_LEN,
};

/// Who makes a change: the actor and request of its audit events.
#[derive(Debug, Clone)]
pub struct By {
    /// The actor recorded.
    actor: Actor,
    /// The request that made the change, when there is one.
    request_id: Option<String>,
}

impl By {
    /// The caller of a request of `tenant` (an API key is recorded as one, with its id).
    pub fn tenant(tenant: &Tenant, request_id: Option<&tenancy_axum::RequestId>) -> By {
        let subject = tenant.subject().map(str::to_owned);
        let key_id = match (&subject, tenant.via().contains(&SourceKind::ApiKey)) {
            (Some(s), true) => s.strip_prefix("api_key:").map(str::to_owned),
            _ => None,
        };
        By {
            actor: Actor {
                kind: if key_id.is_some() {
                    ActorKind::ApiKey
                } else {
                    ActorKind::User
                },
                subject,
                key_id,
            },
            request_id: request_id.map(ToString::to_string),
        }
    }

    /// A platform administrator (`principal`) acting through the control plane.
    pub fn platform_admin(principal: &str, request_id: Option<&str>) -> By {
        By {
            actor: Actor::new(ActorKind::Admin, principal),
            request_id: request_id.map(str::to_owned),
        }
    }

    fn event(&self, action: &str, target: String) -> Event {
        let e = Event::new(self.actor.clone(), action).target(target);
        match &self.request_id {
            Some(id) => e.request_id(id.clone()),
            None => e,
        }
    }
}

/// A role as listed: built in or the tenant's own, with its permissions (sorted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// Its name.
    pub name: String,
    /// Whether it is one of the built-in roles.
    pub builtin: bool,
    /// What it grants.
    pub permissions: Vec<String>,
}

/// A role held by a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Who holds it.
    pub subject: String,
    /// The role.
    pub role: String,
}

/// A change of a tenant's access, as every management function takes it: the tenant's
/// transaction it is made in (and audited in), the application's model, what the caller
/// may do, and who is recorded as making it.
#[derive(Debug)]
pub struct Change<'a> {
    /// The tenant's transaction (runtime role, signed context).
    pub tx: &'a mut TenantTx,
    /// The application's model.
    pub access: &'a Access,
    /// The caller's permissions: the change is refused unless they include
    /// [`MANAGE_ACCESS`] and everything it hands out.
    pub caller: &'a Permissions,
    /// The actor and request of its audit events.
    pub by: &'a By,
}

impl<'a> Change<'a> {
    /// A change made in `tx` under `access`, by `by` with the permissions `caller`.
    pub fn new(
        tx: &'a mut TenantTx,
        access: &'a Access,
        caller: &'a Permissions,
        by: &'a By,
    ) -> Change<'a> {
        Change {
            tx,
            access,
            caller,
            by,
        }
    }

    /// Its parts, for the management functions.
    fn parts(self) -> (&'a mut TenantTx, &'a Access, &'a Permissions, &'a By) {
        (self.tx, self.access, self.caller, self.by)
    }
}

/// Refuses unless the caller may manage access.
fn manager(caller: &Permissions) -> Result<(), AccessError> {
    caller.require(MANAGE_ACCESS)
}

/// A subject as stored: 1 to [`MAX_SUBJECT_LEN`] bytes, no control characters (NUL
/// included).
fn subject<'a>(field: &str, s: &'a str) -> Result<&'a str, AccessError> {
    if s.is_empty() || s.len() > MAX_SUBJECT_LEN {
        return Err(AccessError::invalid(
            field,
            format!("must be 1 to {MAX_SUBJECT_LEN} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(AccessError::invalid(
            field,
            "must not contain control characters or NUL bytes",
        ));
    }
    Ok(s)
}

/// A role name's shape.
fn role_name<'a>(field: &str, name: &'a str) -> Result<&'a str, AccessError> {
    if !role_shape(name) {
        return Err(AccessError::invalid(
            field,
            format!(
                "must start with a lowercase letter and have at most {MAX_ROLE_LEN} lowercase letters, digits, `_` and `-`"
            ),
        ));
    }
    Ok(name)
}

/// A custom role's name: well-formed and not built in.
fn custom_name<'a>(field: &str, name: &'a str) -> Result<&'a str, AccessError> {
    let name = role_name(field, name)?;
    if BuiltinRole::from_name(name).is_some() {
        return Err(AccessError::BuiltinRole {
            role: name.to_owned(),
        });
    }
    Ok(name)
}

/// Refuses (naming the first) unless the caller holds every permission of `perms`.
fn within<'a>(
    caller: &Permissions,
    perms: impl IntoIterator<Item = &'a String>,
) -> Result<(), AccessError> {
    for p in perms {
        caller.require(p)?;
    }
    Ok(())
}

/// A role's permission list: at most [`MAX_PERMISSIONS`], each declared (else the error
/// names it and its index in `field`), each held by the caller; sorted, without
/// duplicates.
fn permission_list(
    access: &Access,
    caller: &Permissions,
    field: &str,
    perms: &[String],
) -> Result<Vec<String>, AccessError> {
    if perms.len() > MAX_PERMISSIONS {
        return Err(AccessError::invalid(
            field,
            format!("at most {MAX_PERMISSIONS} permissions"),
        ));
    }
    let mut set = BTreeSet::new();
    for (i, p) in perms.iter().enumerate() {
        if !access.declares(p) {
            return Err(AccessError::UnknownPermission {
                field: format!("{field}[{i}]"),
                permission: p.clone(),
            });
        }
        set.insert(p.clone());
    }
    within(caller, &set)?;
    Ok(set.into_iter().collect())
}

/// Checks the scopes of an API key a caller is about to create: each must be a declared
/// permission (a wildcard is not one) that the caller holds, so a key never allows more
/// than its creator may do. Returns them sorted, without duplicates.
pub fn check_key_scopes(
    access: &Access,
    caller: &Permissions,
    scopes: &[String],
) -> Result<Vec<String>, AccessError> {
    for (i, s) in scopes.iter().enumerate() {
        if !permission_shape(s) || !access.declares(s) {
            return Err(AccessError::UnknownPermission {
                field: format!("scopes[{i}]"),
                permission: s.clone(),
            });
        }
    }
    permission_list(access, caller, "scopes", scopes)
}

/// Most items of one page of a list.
pub const MAX_PAGE: i64 = 200;
/// Items of a page when the caller asks for no number.
pub const DEFAULT_PAGE: i64 = 50;
/// Longest cursor, in bytes (a grant's: the subject in hex, `.`, the role).
pub const MAX_CURSOR_LEN: usize = 2 * MAX_SUBJECT_LEN + 1 + MAX_ROLE_LEN;

/// Which page of a list: after the cursor a previous page returned (`next_after`), at
/// most `limit` items. Built by [`PageRequest::parse`], which names the field it refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The cursor, still opaque (each list parses its own).
    after: Option<String>,
    /// 1 to [`MAX_PAGE`].
    limit: i64,
}

impl PageRequest {
    /// Checks `limit` (1 to [`MAX_PAGE`], default [`DEFAULT_PAGE`]) and the cursor's size;
    /// each list checks the cursor's shape.
    pub fn parse(after: Option<&str>, limit: Option<i64>) -> Result<PageRequest, AccessError> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AccessError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE}"),
            ));
        }
        if let Some(a) = after {
            if a.is_empty() || a.len() > MAX_CURSOR_LEN {
                return Err(bad_cursor());
            }
        }
        Ok(PageRequest {
            after: after.map(str::to_owned),
            limit,
        })
    }

    /// The most items of the page.
    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// The first page of the default size.
    pub fn first() -> PageRequest {
        PageRequest {
            after: None,
            limit: DEFAULT_PAGE,
        }
    }
}

/// One page of a list and the cursor of the next one (none after the last page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass it as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// The first `limit` of `items` (fetched one more than a page), with the cursor of
    /// the last one when there were more.
    fn cut(mut items: Vec<T>, limit: i64, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_after = if more { items.last().map(cursor) } else { None };
        Page { items, next_after }
    }
}

fn bad_cursor() -> AccessError {
    AccessError::invalid("after", "is not a cursor this list returned")
}

/// The cursor after a grant: the subject in lowercase hex (any text, so it cannot
/// contain the separator), `.`, the role.
fn grant_cursor(g: &Grant) -> String {
    let hex: String = g.subject.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{}", g.role)
}

/// The (subject, role) a grant cursor names.
fn parse_grant_cursor(c: &str) -> Result<(String, String), AccessError> {
    let (hex, role) = c.split_once('.').ok_or_else(bad_cursor)?;
    if hex.is_empty() || hex.len() % 2 != 0 || !role_shape(role) {
        return Err(bad_cursor());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .filter(|d| {
                    d.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad_cursor)?;
    // Any well-formed cursor is a position in the list, even one no page returned: hex of
    // bytes that are not UTF-8 stands for the text they decode to with replacements, and
    // NULs are dropped (PostgreSQL text holds none, so no subject has one).
    let subject = String::from_utf8_lossy(&bytes).replace('\0', "");
    Ok((subject, role.to_owned()))
}

/// A built-in role as listed.
fn builtin_role(access: &Access, b: BuiltinRole) -> Role {
    Role {
        name: b.as_str().to_owned(),
        builtin: true,
        permissions: access.builtin_permissions(b).iter().cloned().collect(),
    }
}

/// A custom role as listed: the permissions the model still declares.
fn custom_role(access: &Access, name: String, mut permissions: Vec<String>) -> Role {
    permissions.retain(|p| access.declares(p));
    Role {
        name,
        builtin: false,
        permissions,
    }
}

/// One page of the tenant's roles: the built-in ones (in their fixed order), then its
/// own, by name. The cursor is the last role's name.
pub async fn list_roles(
    tx: &mut TenantTx,
    access: &Access,
    page: &PageRequest,
) -> Result<Page<Role>, AccessError> {
    let after = page
        .after
        .as_deref()
        .map(|a| role_name("after", a).map_err(|_| bad_cursor()))
        .transpose()?;
    // Built-in roles after the cursor, and the name custom roles start after.
    let (builtins, custom_after): (Vec<BuiltinRole>, &str) = match after {
        None => (BuiltinRole::ALL.to_vec(), ""),
        Some(a) => match BuiltinRole::ALL.iter().position(|b| b.as_str() == a) {
            Some(i) => (BuiltinRole::ALL[i + 1..].to_vec(), ""),
            None => (Vec::new(), a),
        },
    };
    let mut out: Vec<Role> = builtins
        .into_iter()
        .map(|b| builtin_role(access, b))
        .collect();
    let want = (page.limit + 1 - out.len() as i64).max(0);
    let rows = tx
        .query(
            "SELECT name, permissions FROM tenancy.access_roles WHERE name > $1
              ORDER BY name LIMIT $2",
            &[&custom_after, &want],
        )
        .await?;
    out.extend(
        rows.into_iter()
            .map(|r| custom_role(access, r.get(0), r.get(1))),
    );
    Ok(Page::cut(out, page.limit, |r| r.name.clone()))
}

/// The role `name` of the tenant, built in or its own.
pub async fn get_role(tx: &mut TenantTx, access: &Access, name: &str) -> Result<Role, AccessError> {
    let name = role_name("name", name)?;
    if let Some(b) = BuiltinRole::from_name(name) {
        return Ok(builtin_role(access, b));
    }
    tx.query_opt(
        "SELECT name, permissions FROM tenancy.access_roles WHERE name = $1",
        &[&name],
    )
    .await?
    .map(|r| custom_role(access, r.get(0), r.get(1)))
    .ok_or_else(|| AccessError::UnknownRole {
        role: name.to_owned(),
    })
}

/// One page of the tenant's grants, by subject then role (the cursor names the last
/// grant, so a page starts where the previous one ended whatever changed meanwhile).
pub async fn list_grants(
    tx: &mut TenantTx,
    page: &PageRequest,
) -> Result<Page<Grant>, AccessError> {
    let (subject, role) = match page.after.as_deref() {
        Some(c) => parse_grant_cursor(c)?,
        None => (String::new(), String::new()),
    };
    let rows = tx
        .query(
            "SELECT subject, role FROM tenancy.access_grants
              WHERE (subject, role) > ($1, $2) ORDER BY subject, role LIMIT $3",
            &[&subject, &role, &(page.limit + 1)],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| Grant {
            subject: r.get(0),
            role: r.get(1),
        })
        .collect();
    Ok(Page::cut(items, page.limit, grant_cursor))
}

/// A write of a custom role, checked: the change's parts (transaction, access model,
/// caller's permissions, audit actor), then the role's name and permissions as the caller
/// wrote them.
type RoleWrite<'a, 'n> = (
    &'a mut TenantTx,
    &'a Access,
    &'a Permissions,
    &'a By,
    &'n str,
    Vec<String>,
);

/// A custom role's name and permissions as a caller writes them, checked: the caller may
/// manage access, the name is well-formed and not built in, and the permission list is
/// one the caller may hand out (sorted, without duplicates).
fn role_input<'a, 'n>(
    change: Change<'a>,
    name: &'n str,
    permissions: &[String],
) -> Result<RoleWrite<'a, 'n>, AccessError> {
    let (tx, access, caller, by) = change.parts();
    manager(caller)?;
    let name = custom_name("name", name)?;
    let perms = permission_list(access, caller, "permissions", permissions)?;
    Ok((tx, access, caller, by, name, perms))
}

/// Creates the custom role `name` with `permissions` (each declared and held by the
/// caller). A name taken by a built-in role is refused; one the tenant already has is a
/// conflict. Audited as `access.role.create`.
pub async fn create_role(
    change: Change<'_>,
    name: &str,
    permissions: &[String],
) -> Result<Role, AccessError> {
    let (tx, access, _, by, name, perms) = role_input(change, name, permissions)?;
    let created = tx
        .execute(
            "INSERT INTO tenancy.access_roles (name, permissions) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            &[&name, &perms],
        )
        .await?;
    if created == 0 {
        return Err(AccessError::Conflict(format!(
            "role {name:?} already exists; change it instead"
        )));
    }
    tenancy_audit::record(
        tx,
        &by.event("access.role.create", format!("role:{name}"))
            .after(json!({ "permissions": perms })),
    )
    .await?;
    Ok(custom_role(access, name.to_owned(), perms))
}

/// The permissions of the custom role `name`, locked against concurrent changes
/// (`FOR UPDATE` to change it, `FOR SHARE` to grant it).
async fn locked_role(
    tx: &mut TenantTx,
    name: &str,
    exclusive: bool,
) -> Result<Vec<String>, AccessError> {
    let sql = if exclusive {
        "SELECT permissions FROM tenancy.access_roles WHERE name = $1 FOR UPDATE"
    } else {
        "SELECT permissions FROM tenancy.access_roles WHERE name = $1 FOR SHARE"
    };
    tx.query_opt(sql, &[&name])
        .await?
        .map(|r| r.get(0))
        .ok_or_else(|| AccessError::UnknownRole {
            role: name.to_owned(),
        })
}

/// The declared permissions of the custom role `name`, locked for a change of it; refused
/// unless the caller holds every one of them.
async fn role_to_change(
    tx: &mut TenantTx,
    access: &Access,
    caller: &Permissions,
    name: &str,
) -> Result<Vec<String>, AccessError> {
    let mut before = locked_role(tx, name, true).await?;
    before.retain(|p| access.declares(p));
    within(caller, &before)?;
    Ok(before)
}

/// Replaces the permissions of the custom role `name`. The caller must hold both what the
/// role had and what it gets. Audited as `access.role.update` with both lists.
pub async fn update_role(
    change: Change<'_>,
    name: &str,
    permissions: &[String],
) -> Result<Role, AccessError> {
    let (tx, access, caller, by, name, perms) = role_input(change, name, permissions)?;
    let before = role_to_change(tx, access, caller, name).await?;
    tx.execute(
        "UPDATE tenancy.access_roles SET permissions = $2, updated_at = now() WHERE name = $1",
        &[&name, &perms],
    )
    .await?;
    tenancy_audit::record(
        tx,
        &by.event("access.role.update", format!("role:{name}"))
            .before(json!({ "permissions": before }))
            .after(json!({ "permissions": perms })),
    )
    .await?;
    Ok(custom_role(access, name.to_owned(), perms))
}

/// Deletes the custom role `name` and every grant of it (each audited as
/// `access.revoke`, the role as `access.role.delete`). The caller must hold what the
/// role grants.
pub async fn delete_role(change: Change<'_>, name: &str) -> Result<(), AccessError> {
    let (tx, access, caller, by) = change.parts();
    manager(caller)?;
    let name = custom_name("name", name)?;
    let before = role_to_change(tx, access, caller, name).await?;
    let revoked = tx
        .query(
            "DELETE FROM tenancy.access_grants WHERE role = $1 RETURNING subject",
            &[&name],
        )
        .await?;
    for r in revoked {
        let subject: String = r.get(0);
        tenancy_audit::record(
            tx,
            &by.event("access.revoke", format!("subject:{subject}"))
                .before(json!({ "role": name })),
        )
        .await?;
    }
    tx.execute("DELETE FROM tenancy.access_roles WHERE name = $1", &[&name])
        .await?;
    tenancy_audit::record(
        tx,
        &by.event("access.role.delete", format!("role:{name}"))
            .before(json!({ "permissions": before })),
    )
    .await?;
    Ok(())
}

/// What granting or revoking `role` requires of the caller: an owner for `owner`, and
/// every permission the role grants. `exclusive` locks a custom role for a change of it.
async fn may_hand_out(
    tx: &mut TenantTx,
    access: &Access,
    caller: &Permissions,
    role: &str,
) -> Result<(), AccessError> {
    match BuiltinRole::from_name(role) {
        Some(BuiltinRole::Owner) if !caller.is_owner() => Err(AccessError::Denied {
            permission: "owner".into(),
        }),
        Some(b) => within(caller, access.builtin_permissions(b)),
        None => {
            let mut perms = locked_role(tx, role, false).await?;
            perms.retain(|p| access.declares(p));
            within(caller, &perms)
        }
    }
}

/// The subject and role of a grant or revocation, checked: the caller may manage access,
/// both are well-formed, and the caller may hand the role out (a custom role is locked
/// against concurrent changes).
async fn grant_input<'a>(
    tx: &mut TenantTx,
    access: &Access,
    caller: &Permissions,
    subject_name: &'a str,
    role: &'a str,
) -> Result<(&'a str, &'a str), AccessError> {
    manager(caller)?;
    let who = subject("subject", subject_name)?;
    let role = role_name("role", role)?;
    may_hand_out(tx, access, caller, role).await?;
    Ok((who, role))
}

/// Grants `role` (built in or the tenant's own) to `subject`. The caller must hold every
/// permission of the role, and be an owner to grant `owner`. Returns whether the grant is
/// new (one already held is left as it is, and records nothing). Audited as
/// `access.grant`.
pub async fn grant(
    change: Change<'_>,
    subject_name: &str,
    role: &str,
) -> Result<bool, AccessError> {
    let (tx, access, caller, by) = change.parts();
    let (who, role) = grant_input(tx, access, caller, subject_name, role).await?;
    let n = tx
        .execute(
            "INSERT INTO tenancy.access_grants (subject, role) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&who, &role],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    tenancy_audit::record(
        tx,
        &by.event("access.grant", format!("subject:{who}"))
            .after(json!({ "role": role })),
    )
    .await?;
    Ok(true)
}

/// Revokes `role` from `subject`. The caller must hold every permission of the role, and
/// be an owner to revoke `owner`; the tenant's last owner is never revoked. Audited as
/// `access.revoke`.
pub async fn revoke(change: Change<'_>, subject_name: &str, role: &str) -> Result<(), AccessError> {
    let (tx, access, caller, by) = change.parts();
    let (who, role) = grant_input(tx, access, caller, subject_name, role).await?;
    if role == BuiltinRole::Owner.as_str() {
        // Locked, so two concurrent revocations cannot each leave the other owner.
        let owners = tx
            .query(
                "SELECT subject FROM tenancy.access_grants WHERE role = 'owner' FOR UPDATE",
                &[],
            )
            .await?;
        let others = owners.iter().filter(|r| r.get::<_, &str>(0) != who).count();
        if others == 0 && owners.len() == 1 {
            return Err(AccessError::Conflict(
                "the last owner cannot be revoked; grant owner to another subject first".into(),
            ));
        }
    }
    let n = tx
        .execute(
            "DELETE FROM tenancy.access_grants WHERE subject = $1 AND role = $2",
            &[&who, &role],
        )
        .await?;
    if n == 0 {
        return Err(AccessError::NoSuchGrant);
    }
    tenancy_audit::record(
        tx,
        &by.event("access.revoke", format!("subject:{who}"))
            .before(json!({ "role": role })),
    )
    .await?;
    Ok(())
}
