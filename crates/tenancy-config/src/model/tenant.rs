//! What is configured per tenant: overrides, branding, custom domains, typed settings
//! and the attributes targeting rules look at.

use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenancy_core::{Placement, PlanKey, RegionId, TenantId};
use time::OffsetDateTime;

use super::{invalid, key_ok, EntitlementKey, FlagKey, ModelError, SettingKey};

/// What an override targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "key", rename_all = "snake_case")]
pub enum OverrideTarget {
    /// A flag; the value is a variant key (a JSON string).
    Flag(FlagKey),
    /// An entitlement; the value is an entitlement value.
    Entitlement(EntitlementKey),
}

/// A per-tenant override: the tenant layer, with a mandatory reason and an optional expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Tenant.
    pub tenant_id: TenantId,
    /// What is overridden.
    pub target: OverrideTarget,
    /// The value.
    pub value: serde_json::Value,
    /// Why (shown by `explain`, recorded in the change log).
    pub reason: String,
    /// When it stops applying; `None` means never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Who set it.
    pub created_by: String,
}

impl Override {
    /// Whether the override still applies at `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// A tenant's white-label branding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branding {
    /// Product name shown to the tenant's users.
    pub display_name: String,
    /// Main colour, `#rrggbb`.
    pub primary_color: String,
    /// Accent colour, `#rrggbb`.
    pub accent_color: String,
    /// Logo, an `https` URL.
    pub logo_url: Option<String>,
    /// Name on outgoing email.
    pub email_from_name: String,
    /// Address on outgoing email.
    pub email_from_address: String,
}

fn color_ok(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is a DNS hostname we accept for domains and email: lowercase labels of
/// a-z, 0-9 and '-', not starting or ending with '-', at least two labels, at most 253
/// bytes.
pub fn hostname_ok(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 || !s.contains('.') {
        return false;
    }
    s.split('.').all(tenancy_core::is_dns_label)
        && s.rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_lowercase()))
}

impl Branding {
    /// Checks every field; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<(), ModelError> {
        let name = self.display_name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "branding display_name must be 1 to 100 characters without control characters",
            ));
        }
        for (field, c) in [
            ("primary_color", &self.primary_color),
            ("accent_color", &self.accent_color),
        ] {
            if !color_ok(c) {
                return Err(invalid(format!(
                    "branding {field} {c:?} must be a hex colour like #1a2b3c"
                )));
            }
        }
        if let Some(logo) = &self.logo_url {
            let parsed = url::Url::parse(logo)
                .map_err(|_| invalid(format!("branding logo_url {logo:?} is not a valid URL")))?;
            let host_ok = parsed.host_str().is_some_and(|h| !h.is_empty());
            if parsed.scheme() != "https"
                || !host_ok
                || !parsed.username().is_empty()
                || parsed.password().is_some()
                || logo.len() > 2048
            {
                return Err(invalid(format!(
                    "branding logo_url {logo:?} must be an https URL with a host, without credentials, at most 2048 bytes"
                )));
            }
        }
        let from_name = self.email_from_name.trim();
        if from_name.is_empty()
            || from_name.chars().count() > 100
            || from_name
                .chars()
                .any(|c| c.is_control() || matches!(c, '<' | '>' | '"' | ','))
        {
            return Err(invalid(
                "branding email_from_name must be 1 to 100 characters without control characters or < > \" ,",
            ));
        }
        let addr = &self.email_from_address;
        let ok = addr.len() <= 254
            && addr.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && local.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
                    })
                    && !local.starts_with('.')
                    && !local.ends_with('.')
                    && !local.contains("..")
                    && hostname_ok(domain)
            });
        if !ok {
            return Err(invalid(format!(
                "branding email_from_address {addr:?} must be an address like billing@example.com (lowercase domain)"
            )));
        }
        Ok(())
    }
}

/// Where a custom domain is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Claimed; waiting for the TXT record.
    Pending,
    /// Ownership proven; requests to it resolve to the tenant.
    Verified,
    /// Verified once, now switched off (by the tenant or an operator).
    Disabled,
}

impl DomainState {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DomainState::Pending => "pending",
            DomainState::Verified => "verified",
            DomainState::Disabled => "disabled",
        }
    }
}

impl FromStr for DomainState {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s {
            "pending" => Ok(DomainState::Pending),
            "verified" => Ok(DomainState::Verified),
            "disabled" => Ok(DomainState::Disabled),
            _ => Err(invalid(format!(
                "domain state {s:?} is unknown; expected pending, verified or disabled"
            ))),
        }
    }
}

/// A tenant's custom domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Hostname, lowercase (`app.acme.com`).
    pub hostname: String,
    /// Lifecycle state.
    pub state: DomainState,
    /// The token the TXT record must carry.
    pub token: String,
    /// When ownership was last proven.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    /// Why the last check failed, if it did.
    pub last_error: Option<String>,
}

impl Domain {
    /// The DNS name that must hold the TXT record.
    pub fn challenge_name(&self) -> String {
        format!("_tenancy-challenge.{}", self.hostname)
    }

    /// The TXT record value that proves ownership.
    pub fn challenge_value(&self) -> String {
        format!("tenancy-domain-verification={}", self.token)
    }
}

/// Parses and normalises a custom hostname (lowercase, no trailing dot).
pub fn parse_hostname(s: &str) -> Result<String, ModelError> {
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if hostname_ok(&h) {
        Ok(h)
    } else {
        Err(invalid(format!(
            "hostname {s:?} is not a valid DNS name (labels of a-z, 0-9 and '-', at least two labels)"
        )))
    }
}

/// The definition of a typed setting: a JSON Schema and a global default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingDef {
    /// Key.
    pub key: SettingKey,
    /// JSON Schema every value of this setting must satisfy.
    pub schema: serde_json::Value,
    /// The global layer.
    pub default: serde_json::Value,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
}

/// The attributes of a tenant that targeting rules look at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantAttributes {
    /// Id (also the rollout key).
    pub id: TenantId,
    /// Plan (from the catalog).
    pub plan: PlanKey,
    /// Region (from the catalog).
    pub region: RegionId,
    /// Placement (from the catalog).
    pub placement: Placement,
    /// Creation time (from the catalog).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Free-form tags, sorted and deduplicated.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Custom attributes.
    #[serde(default)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// Checks tags and custom attributes a caller wants to set on a tenant.
pub fn validate_tags_and_custom(
    tags: &[String],
    custom: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), ModelError> {
    if tags.len() > 100 {
        return Err(invalid("at most 100 tags"));
    }
    for t in tags {
        if !key_ok(t) {
            return Err(invalid(format!(
                "tag {t:?} is not allowed: use 1 to 64 characters from a-z, 0-9, '_', '-' and '.', starting with a letter"
            )));
        }
    }
    if custom.len() > 100 {
        return Err(invalid("at most 100 custom attributes"));
    }
    for k in custom.keys() {
        if k.is_empty() || k.len() > 64 {
            return Err(invalid(format!(
                "custom attribute name {k:?} must be 1 to 64 bytes"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branding() -> Branding {
        Branding {
            display_name: "Acme Cloud".into(),
            primary_color: "#112233".into(),
            accent_color: "#abcdef".into(),
            logo_url: Some("https://cdn.acme.com/logo.svg".into()),
            email_from_name: "Acme Billing".into(),
            email_from_address: "billing@acme.com".into(),
        }
    }

    #[test]
    fn branding_is_validated_field_by_field() {
        assert!(branding().validate().is_ok());
        type Case = (fn(&mut Branding), &'static str);
        let cases: Vec<Case> = vec![
            (|b| b.display_name = "  ".into(), "display_name"),
            (|b| b.primary_color = "red".into(), "primary_color"),
            (|b| b.accent_color = "#12345g".into(), "accent_color"),
            (
                |b| b.logo_url = Some("http://acme.com/l.png".into()),
                "logo_url",
            ),
            (
                |b| b.logo_url = Some("https://u:p@acme.com/l.png".into()),
                "logo_url",
            ),
            (|b| b.logo_url = Some("not a url".into()), "logo_url"),
            (|b| b.email_from_name = "A <b>".into(), "email_from_name"),
            (
                |b| b.email_from_address = "billing".into(),
                "email_from_address",
            ),
            (
                |b| b.email_from_address = "a@localhost".into(),
                "email_from_address",
            ),
        ];
        for (mutate, field) in cases {
            let mut b = branding();
            mutate(&mut b);
            let err = b.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            parse_hostname("App.Acme.COM.").ok().as_deref(),
            Some("app.acme.com")
        );
        for bad in ["acme", "-a.com", "a..com", "a_b.com", "1.2.3.4", ""] {
            assert!(parse_hostname(bad).is_err(), "{bad}");
        }
    }
}
