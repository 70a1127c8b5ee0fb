//! The application's access model: the permissions it declares, what the built-in roles
//! hold, and how each trusted JWT issuer's claims map to roles.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::error::ModelError;

/// The permission that allows managing roles and grants of one's own tenant. Every model
/// declares it; owner and admin hold it.
pub const MANAGE_ACCESS: &str = "access:manage";

/// Longest permission name, in bytes.
pub const MAX_PERMISSION_LEN: usize = 64;
/// Most permissions one model declares (and so one role holds).
pub const MAX_PERMISSIONS: usize = 256;
/// Longest role name, in bytes.
pub const MAX_ROLE_LEN: usize = 64;
/// Longest subject, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;

/// The roles every tenant has. They are defined by the model, never stored, and cannot be
/// created, changed or deleted through the management functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltinRole {
    /// Every permission; the only role that may grant or revoke `owner`.
    Owner,
    /// Every permission.
    Admin,
    /// The permissions the model gives members.
    Member,
    /// The permissions the model gives viewers.
    Viewer,
}

impl BuiltinRole {
    /// Every built-in role.
    pub const ALL: [BuiltinRole; 4] = [
        BuiltinRole::Owner,
        BuiltinRole::Admin,
        BuiltinRole::Member,
        BuiltinRole::Viewer,
    ];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Admin => "admin",
            BuiltinRole::Member => "member",
            BuiltinRole::Viewer => "viewer",
        }
    }

    /// The built-in role called `name`, if any.
    pub fn from_name(name: &str) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for BuiltinRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `p` has the shape of a permission: lowercase words of letters, digits and `_`,
/// at least two joined by `:` (`invoices:create`), at most [`MAX_PERMISSION_LEN`] bytes.
pub(crate) fn permission_shape(p: &str) -> bool {
    p.len() <= MAX_PERMISSION_LEN
        && p.split(':').count() >= 2
        && p.split(':').all(|w| {
            w.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// Whether `name` has the shape of a role name: a lowercase letter, then lowercase letters,
/// digits, `_` and `-`, at most [`MAX_ROLE_LEN`] bytes (the table checks the same).
pub(crate) fn role_shape(name: &str) -> bool {
    name.len() <= MAX_ROLE_LEN
        && name.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// How one issuer's tokens name roles: the claim that carries them (a string of
/// space-separated values or an array of strings) and which value means which role. A
/// value without a mapping means nothing, and so does the same claim from another issuer.
#[derive(Debug, Clone)]
pub struct ClaimRoles {
    /// The exact `iss`.
    issuer: String,
    /// The claim's name (`roles`, `groups`, …).
    claim: String,
    /// Claim value → role name (built-in or a tenant's custom role).
    map: BTreeMap<String, String>,
}

impl ClaimRoles {
    /// Tokens of `issuer` carry roles in `claim`.
    pub fn new(issuer: impl Into<String>, claim: impl Into<String>) -> Self {
        ClaimRoles {
            issuer: issuer.into(),
            claim: claim.into(),
            map: BTreeMap::new(),
        }
    }

    /// The claim value `value` means the role `role`.
    pub fn map(mut self, value: impl Into<String>, role: impl Into<String>) -> Self {
        self.map.insert(value.into(), role.into());
        self
    }
}

/// The application's access model, checked once at startup (see [`AccessModel::build`]).
#[derive(Debug, Clone, Default)]
pub struct AccessModel {
    permissions: Vec<String>,
    member: Vec<String>,
    viewer: Vec<String>,
    issuers: Vec<ClaimRoles>,
}

impl AccessModel {
    /// An empty model (it declares [`MANAGE_ACCESS`] only).
    pub fn new() -> Self {
        AccessModel::default()
    }

    /// Declares permissions.
    pub fn permissions<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.permissions.extend(names.into_iter().map(Into::into));
        self
    }

    /// What the built-in `member` role holds.
    pub fn member<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.member.extend(names.into_iter().map(Into::into));
        self
    }

    /// What the built-in `viewer` role holds.
    pub fn viewer<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.viewer.extend(names.into_iter().map(Into::into));
        self
    }

    /// Maps one issuer's role claim (one mapping per issuer).
    pub fn issuer(mut self, roles: ClaimRoles) -> Self {
        self.issuers.push(roles);
        self
    }

    /// Checks the model: every name well-formed, the built-in roles and the claim
    /// mappings use declared permissions and well-formed role names, one mapping per
    /// issuer.
    pub fn build(self) -> Result<crate::Access, ModelError> {
        let mut declared = BTreeSet::new();
        declared.insert(MANAGE_ACCESS.to_owned());
        for p in self.permissions {
            if !permission_shape(&p) {
                return Err(ModelError(format!(
                    "permission {p:?} must be lowercase words of letters, digits and `_` joined by `:` (e.g. \"invoices:create\"), at most {MAX_PERMISSION_LEN} bytes"
                )));
            }
            declared.insert(p);
        }
        if declared.len() > MAX_PERMISSIONS {
            return Err(ModelError(format!(
                "the model declares {} permissions; at most {MAX_PERMISSIONS}",
                declared.len()
            )));
        }
        let set = |role: &str, names: Vec<String>| -> Result<BTreeSet<String>, ModelError> {
            names
                .into_iter()
                .map(|p| {
                    if declared.contains(&p) {
                        Ok(p)
                    } else {
                        Err(ModelError(format!(
                            "the built-in role {role} holds {p:?}, which the model does not declare"
                        )))
                    }
                })
                .collect()
        };
        let member = set("member", self.member)?;
        let viewer = set("viewer", self.viewer)?;
        let mut issuers = BTreeMap::new();
        for i in self.issuers {
            for role in i.map.values() {
                if !role_shape(role) {
                    return Err(ModelError(format!(
                        "the claim mapping of issuer {:?} names {role:?}, which is not a role name",
                        i.issuer
                    )));
                }
            }
            if issuers.contains_key(&i.issuer) {
                return Err(ModelError(format!(
                    "issuer {:?} has more than one claim mapping",
                    i.issuer
                )));
            }
            issuers.insert(i.issuer.clone(), i);
        }
        Ok(crate::Access {
            inner: Arc::new(crate::Inner {
                declared,
                member,
                viewer,
                issuers,
            }),
        })
    }
}

/// The roles `issuer`'s claims name, per `mapping`: values of the claim (a string of
/// space-separated values or an array of strings) that have a mapping.
pub(crate) fn claim_roles(mapping: &ClaimRoles, claim: Option<&serde_json::Value>) -> Vec<String> {
    let values: Vec<&str> = match claim {
        Some(serde_json::Value::String(s)) => s.split_ascii_whitespace().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .filter_map(|v| mapping.map.get(v).cloned())
        .collect()
}

impl ClaimRoles {
    /// The claim's name.
    pub(crate) fn claim(&self) -> &str {
        &self.claim
    }
}
