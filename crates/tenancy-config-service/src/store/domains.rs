//! Custom domains: claim (`pending`, with a token to publish in DNS), TXT verification,
//! disabling and removal. The request layer reads verified rows only.

use rand::RngCore;
use tenancy_config::load::{domain_from_row, DOMAIN_COLUMNS};
use tenancy_config::model::{parse_hostname, Domain, DomainState};
use tenancy_config::ConfigError;
use tenancy_core::TenantId;

use super::{
    exec, not_found, nothing, tenant_exists, to_json, valid, ChangeMeta, ChangeRecord, Scope,
    Store, Tx,
};
use crate::dns::TxtResolver;

fn random_token() -> String {
    let mut bytes = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A change of one of `tenant`'s domains.
fn domain_change(tenant: TenantId, hostname: &str, action: &'static str) -> ChangeRecord {
    ChangeRecord::new("domain", hostname, Scope::Tenant(tenant), action)
}

/// Runs `sql` (which returns [`DOMAIN_COLUMNS`]) with `tenant` and `hostname` as `$1`
/// and `$2`; the domain it returns, `NotFound` when none.
async fn domain_row(
    tx: &Tx<'_>,
    sql: &str,
    tenant: TenantId,
    hostname: &str,
    what: &'static str,
) -> Result<Domain, ConfigError> {
    let row = tx
        .query_opt(sql, &[&tenant.as_uuid(), &hostname])
        .await
        .map_err(ConfigError::db(what))?
        .ok_or_else(|| not_found("domain", hostname))?;
    domain_from_row(&row)
}

impl Store {
    /// Claims a custom domain for a tenant: state `pending`, with a fresh token to publish
    /// in DNS. Claiming again returns the existing claim.
    pub async fn add_domain(
        &self,
        tenant: TenantId,
        host: &str,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        let hostname = valid(meta, parse_hostname(host))?;
        {
            let mut c = self.conn().await?;
            let tx = c
                .transaction()
                .await
                .map_err(ConfigError::db("starting a transaction"))?;
            tenant_exists(&tx, tenant).await?;
            let existing = domain_row(
                &tx,
                &format!("SELECT {DOMAIN_COLUMNS} FROM tenancy_catalog.config_domains WHERE tenant_id = $1 AND hostname = $2"),
                tenant,
                &hostname,
                "reading a domain",
            )
            .await;
            match existing {
                Ok(d) => return Ok(d),
                Err(ConfigError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let d = Domain {
            tenant_id: tenant,
            hostname: hostname.clone(),
            state: DomainState::Pending,
            token: random_token(),
            verified_at: None,
            last_error: None,
        };
        let prepare = async |tx: &Tx<'_>| {
            tenant_exists(tx, tenant).await?;
            let change = domain_change(tenant, &hostname, "put").after(Some(to_json(&d)));
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| {
            exec(
                tx,
                "INSERT INTO tenancy_catalog.config_domains (tenant_id, hostname, token, version) VALUES ($1, $2, $3, $4)",
                &[&tenant.as_uuid(), &hostname, &d.token, &v],
                "claiming a domain",
            )
            .await
        };
        self.write(meta, "committing a domain claim", prepare, apply)
            .await?;
        Ok(d)
    }

    /// A tenant's domains.
    pub async fn list_domains(&self, tenant: TenantId) -> Result<Vec<Domain>, ConfigError> {
        let c = self.conn().await?;
        let rows = c
            .query(
                &format!("SELECT {DOMAIN_COLUMNS} FROM tenancy_catalog.config_domains WHERE tenant_id = $1 ORDER BY hostname"),
                &[&tenant.as_uuid()],
            )
            .await
            .map_err(ConfigError::db("listing domains"))?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Checks a pending (or disabled) domain's TXT record through `resolver`; on success
    /// the domain becomes `verified`, on failure it stays as it was and records why.
    pub async fn verify_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        resolver: &dyn TxtResolver,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        let hostname = valid(meta, parse_hostname(hostname))?;
        let current = self
            .list_domains(tenant)
            .await?
            .into_iter()
            .find(|d| d.hostname == hostname)
            .ok_or_else(|| not_found("domain", &hostname))?;
        if current.state == DomainState::Verified {
            return Ok(current);
        }
        // The DNS lookup happens outside any transaction: it can take seconds.
        let expected = current.challenge_value();
        let outcome = match resolver.txt(&current.challenge_name()).await {
            Ok(records) if records.iter().any(|r| r.trim() == expected) => Ok(()),
            Ok(records) => Err(format!(
                "no TXT record {:?} at {} (found {} record(s))",
                expected,
                current.challenge_name(),
                records.len()
            )),
            Err(e) => Err(format!(
                "DNS lookup of {} failed: {e}",
                current.challenge_name()
            )),
        };
        let prepare = async |tx: &Tx<'_>| {
            let change = match &outcome {
                Ok(()) => {
                    let taken = tx
                        .query_opt(
                            "SELECT tenant_id FROM tenancy_catalog.config_domains WHERE hostname = $1 AND state = 'verified' AND tenant_id <> $2",
                            &[&hostname, &tenant.as_uuid()],
                        )
                        .await
                        .map_err(ConfigError::db("checking a domain"))?
                        .is_some();
                    if taken {
                        return Err(ConfigError::Conflict(format!(
                            "{hostname} is already verified by another tenant"
                        )));
                    }
                    domain_change(tenant, &hostname, "verify").before(Some(to_json(&current)))
                }
                Err(why) => domain_change(tenant, &hostname, "verify_failed")
                    .after(Some(serde_json::Value::String(why.clone()))),
            };
            Ok((change, ()))
        };
        let apply = async |tx: &Tx<'_>, v: i64, ()| match &outcome {
            Ok(()) => {
                let row = tx
                    .query_one(
                        &format!(
                            "UPDATE tenancy_catalog.config_domains SET state = 'verified', verified_at = now(), last_checked_at = now(),
                                 last_error = NULL, version = $3 WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"
                        ),
                        &[&tenant.as_uuid(), &hostname, &v],
                    )
                    .await
                    .map_err(ConfigError::db("verifying a domain"))?;
                domain_from_row(&row)
            }
            Err(why) => {
                let row = tx
                    .query_one(
                        &format!(
                            "UPDATE tenancy_catalog.config_domains SET last_checked_at = now(), last_error = $3, version = $4
                             WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"
                        ),
                        &[&tenant.as_uuid(), &hostname, why, &v],
                    )
                    .await
                    .map_err(ConfigError::db("recording a failed domain check"))?;
                domain_from_row(&row)
            }
        };
        let (_, d) = self
            .write(meta, "committing a domain check", prepare, apply)
            .await?;
        Ok(d)
    }

    /// Switches a verified domain off (it no longer resolves to the tenant).
    pub async fn disable_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        meta: &ChangeMeta,
    ) -> Result<Domain, ConfigError> {
        let hostname = valid(meta, parse_hostname(hostname))?;
        let prepare = async |tx: &Tx<'_>| {
            let d = domain_row(
                tx,
                &format!(
                    "UPDATE tenancy_catalog.config_domains SET state = 'disabled' WHERE tenant_id = $1 AND hostname = $2
                     RETURNING {DOMAIN_COLUMNS}"
                ),
                tenant,
                &hostname,
                "disabling a domain",
            )
            .await?;
            let change = domain_change(tenant, &hostname, "disable").after(Some(to_json(&d)));
            Ok((change, d))
        };
        let apply = async |tx: &Tx<'_>, v: i64, d: Domain| {
            exec(
                tx,
                "UPDATE tenancy_catalog.config_domains SET version = $3 WHERE tenant_id = $1 AND hostname = $2",
                &[&tenant.as_uuid(), &hostname, &v],
                "disabling a domain",
            )
            .await?;
            Ok(d)
        };
        let (_, d) = self
            .write(meta, "committing a domain change", prepare, apply)
            .await?;
        Ok(d)
    }

    /// Removes a domain claim.
    pub async fn remove_domain(
        &self,
        tenant: TenantId,
        hostname: &str,
        meta: &ChangeMeta,
    ) -> Result<i64, ConfigError> {
        let hostname = valid(meta, parse_hostname(hostname))?;
        let prepare = async |tx: &Tx<'_>| {
            let d = domain_row(
                tx,
                &format!("DELETE FROM tenancy_catalog.config_domains WHERE tenant_id = $1 AND hostname = $2 RETURNING {DOMAIN_COLUMNS}"),
                tenant,
                &hostname,
                "removing a domain",
            )
            .await?;
            let change = domain_change(tenant, &hostname, "delete").before(Some(to_json(&d)));
            Ok((change, ()))
        };
        let (v, ()) = self
            .write(meta, "committing a domain removal", prepare, nothing)
            .await?;
        Ok(v)
    }
}
