//! Findings, reports, errors and the rule catalogue.

use serde::Serialize;

/// How bad a finding is (see the severity contract in the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Hygiene.
    Info,
    /// Isolation fails if something else also goes wrong; existence oracles; performance traps.
    Warning,
    /// The runtime role can read or write another tenant's rows with ordinary SQL.
    Error,
}

impl Severity {
    /// `error`, `warning` or `info`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem found in the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `rls-not-forced`.
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// `schema.name` of the object, or a role or database name.
    pub object: String,
    /// What is wrong and why it matters.
    pub message: String,
    /// SQL that fixes it.
    pub fix: String,
}

impl Finding {
    /// Builds a finding.
    pub fn new(
        rule: &str,
        severity: Severity,
        object: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            rule: rule.to_owned(),
            severity,
            object: object.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// Counts per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Number of `error` findings.
    pub errors: usize,
    /// Number of `warning` findings.
    pub warnings: usize,
    /// Number of `info` findings.
    pub info: usize,
}

/// The result of an audit (and, optionally, a probe).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every finding, most severe first.
    pub findings: Vec<Finding>,
    /// Name of the audited database.
    pub database: String,
    /// The role whose access was audited.
    pub runtime_role: String,
    /// Whether the database is tenancy-managed (schema `tenancy` with `current_tenant_id()` and role `tenancy_app`).
    pub tenancy_managed: bool,
    /// `server_version_num` of the server.
    pub server_version: i32,
    /// Which implementation of tenancy's signed context the database runs: `native`
    /// (C functions of the tenancy_context extension or library) or `plpgsql`; `None`
    /// when it has none (not tenancy-managed).
    pub context_impl: Option<String>,
    /// The tenant tables found (`schema.table`).
    pub tenant_tables: Vec<String>,
}

impl Report {
    /// Counts per severity.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.findings {
            match f.severity {
                Severity::Error => s.errors += 1,
                Severity::Warning => s.warnings += 1,
                Severity::Info => s.info += 1,
            }
        }
        s
    }

    /// Whether any finding has severity `error`.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Findings of `rule` on `object`.
    pub fn find(&self, rule: &str, object: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.rule == rule && f.object == object)
            .collect()
    }

    /// Sorts (most severe first, then object, then rule) and removes exact duplicates.
    pub fn normalize(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.object.cmp(&b.object))
                .then_with(|| a.rule.cmp(&b.rule))
                .then_with(|| a.message.cmp(&b.message))
        });
        self.findings
            .dedup_by(|a, b| a.rule == b.rule && a.object == b.object && a.message == b.message);
    }
}

/// Why the check could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The connection string does not parse.
    #[error("--database-url is not a valid connection string ({0}); use a libpq string such as `host=localhost port=5432 user=app dbname=app` or a URL such as `postgres://app@localhost:5432/app`")]
    BadUrl(String),
    /// The server could not be reached or refused the login.
    #[error("cannot connect to the database: {0}; check that the server is running, that host, port and database name are right, and that the role may log in (pg_hba.conf, password)")]
    Connect(String),
    /// The runtime role does not exist.
    #[error("runtime role {0:?} does not exist in this cluster; pass --runtime-role with the role your application connects as")]
    NoSuchRole(String),
    /// The context key is malformed.
    #[error(
        "--context-key / TENANCY_CONTEXT_KEY must look like KID:HEX (e.g. k1:<64 hex digits>): {0}"
    )]
    BadKey(String),
    /// A command-line option has an unusable value.
    #[error("{0}")]
    BadOption(String),
    /// A catalogue query failed.
    #[error("query failed while {what}: {}; the connecting role needs to read the system catalogues (connect as the database owner or a superuser)", tenancy_conn::pg_error_text(source))]
    Sql {
        /// What was being done.
        what: String,
        /// The database error.
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Static description of a rule, for SARIF and documentation.
#[derive(Debug, Clone, Copy)]
pub struct RuleInfo {
    /// Stable id.
    pub id: &'static str,
    /// Usual severity (some rules vary with context).
    pub severity: Severity,
    /// One-line description.
    pub title: &'static str,
}

/// Every rule this crate can report.
pub const RULES: &[RuleInfo] = &[
    RuleInfo { id: "catalog-readable", severity: Severity::Error, title: "Table holding tenant rows outside RLS (control catalog) readable by the runtime role" },
    RuleInfo { id: "rls-disabled", severity: Severity::Error, title: "Tenant table without row-level security" },
    RuleInfo { id: "rls-not-forced", severity: Severity::Error, title: "Row-level security not forced; the table owner bypasses it" },
    RuleInfo { id: "no-policy", severity: Severity::Info, title: "RLS enabled but no policy applies to the runtime role (deny-all)" },
    RuleInfo { id: "policy-always-true", severity: Severity::Error, title: "Policy predicate is always true" },
    RuleInfo { id: "policy-or-widened", severity: Severity::Error, title: "Policy predicate widened with OR" },
    RuleInfo { id: "policy-fail-open", severity: Severity::Error, title: "Policy predicate fails open when the context is unset (IS NULL OR ...)" },
    RuleInfo { id: "policy-no-tenant-column", severity: Severity::Error, title: "Policy predicate does not reference the tenant column" },
    RuleInfo { id: "policy-tenant-unbound", severity: Severity::Error, title: "Policy predicate mentions the tenant key but never compares it with the caller's context" },
    RuleInfo { id: "policy-user-controlled", severity: Severity::Error, title: "Policy takes identity from user-editable metadata (user_metadata)" },
    RuleInfo { id: "policy-role-identity", severity: Severity::Error, title: "Policy identifies the caller by current_user/session_user under a shared runtime role" },
    RuleInfo { id: "policy-insert-no-check", severity: Severity::Info, title: "INSERT policy without WITH CHECK (admits no row on its own)" },
    RuleInfo { id: "shared-table-undeclared", severity: Severity::Warning, title: "Table with rows reachable by the runtime role has no tenant key and is not declared shared" },
    RuleInfo { id: "assumable-role-bypasses-rls", severity: Severity::Error, title: "Runtime role can SET ROLE to a superuser or BYPASSRLS role" },
    RuleInfo { id: "login-role-bypassrls", severity: Severity::Warning, title: "Another login role with BYPASSRLS can read tenant tables" },
    RuleInfo { id: "security-definer-search-path", severity: Severity::Warning, title: "SECURITY DEFINER function executable by the runtime role with a mutable search_path" },
    RuleInfo { id: "policy-other-role-widened", severity: Severity::Warning, title: "Permissive policy for another role widens access across tenants" },
    RuleInfo { id: "with-check-true", severity: Severity::Error, title: "Write policy with WITH CHECK (true)" },
    RuleInfo { id: "policy-unsigned-context", severity: Severity::Warning, title: "Policies read an unsigned context setting with current_setting() (once per database)" },
    RuleInfo { id: "policy-initplan", severity: Severity::Info, title: "Context function not wrapped in (SELECT ...): evaluated per row" },
    RuleInfo { id: "policy-volatile-function", severity: Severity::Warning, title: "Policy calls a VOLATILE function" },
    RuleInfo { id: "runtime-role-superuser", severity: Severity::Error, title: "Runtime role is a superuser" },
    RuleInfo { id: "runtime-role-bypassrls", severity: Severity::Error, title: "Runtime role has BYPASSRLS" },
    RuleInfo { id: "runtime-role-owner", severity: Severity::Error, title: "Runtime role owns a tenant table" },
    RuleInfo { id: "runtime-role-member-of-owner", severity: Severity::Error, title: "Runtime role is a member of a tenant table's owner role" },
    RuleInfo { id: "view-bypasses-rls", severity: Severity::Error, title: "View the runtime role can read reaches tenant rows as a role that sees every tenant (owner, definer function, chain of views)" },
    RuleInfo { id: "matview-tenant-data", severity: Severity::Error, title: "Materialized view over tenant tables readable by the runtime role" },
    RuleInfo { id: "foreign-table-readable", severity: Severity::Warning, title: "Foreign table readable by the runtime role, directly or through views (no RLS)" },
    RuleInfo { id: "security-definer-function", severity: Severity::Warning, title: "SECURITY DEFINER function executable by the runtime role" },
    RuleInfo { id: "security-definer-ignores-context", severity: Severity::Error, title: "SECURITY DEFINER function executable by the runtime role touches tenant tables without referring to the tenant context" },
    RuleInfo { id: "trigger-security-definer", severity: Severity::Warning, title: "Trigger on a tenant table runs a SECURITY DEFINER function" },
    RuleInfo { id: "unique-without-tenant", severity: Severity::Warning, title: "Primary key or unique constraint without the tenant column (existence oracle)" },
    RuleInfo { id: "fk-cross-tenant", severity: Severity::Error, title: "Foreign key to a tenant table without the tenant column" },
    RuleInfo { id: "tenant-column-nullable", severity: Severity::Info, title: "Tenant column is nullable" },
    RuleInfo { id: "tenant-column-updatable", severity: Severity::Error, title: "Runtime role can change the tenant column" },
    RuleInfo { id: "tenant-column-not-indexed", severity: Severity::Info, title: "No index leads with the tenant column" },
    RuleInfo { id: "privilege-truncate", severity: Severity::Error, title: "Runtime role may TRUNCATE a tenant table" },
    RuleInfo { id: "privilege-references", severity: Severity::Warning, title: "Runtime role has REFERENCES on a tenant table" },
    RuleInfo { id: "privilege-trigger", severity: Severity::Warning, title: "Runtime role has TRIGGER on a tenant table" },
    RuleInfo { id: "schema-create", severity: Severity::Warning, title: "Runtime role may CREATE in a schema" },
    RuleInfo { id: "database-temp", severity: Severity::Info, title: "Runtime role may create temporary tables" },
    RuleInfo { id: "partition-unprotected", severity: Severity::Error, title: "Partition or inheritance child of a tenant table reachable directly without its own RLS" },
    RuleInfo { id: "tenant-setting-default", severity: Severity::Error, title: "Tenant context or row_security stored in role/database defaults" },
    RuleInfo { id: "runtime-role-setting", severity: Severity::Warning, title: "Setting stored as a default for the runtime role (the role can change its own defaults)" },
    RuleInfo { id: "runtime-role-password", severity: Severity::Warning, title: "Runtime role logs in with a password it can change itself" },
    RuleInfo { id: "runtime-role-no-connection-limit", severity: Severity::Info, title: "Runtime role without a connection limit" },
    RuleInfo { id: "leakproof-function", severity: Severity::Warning, title: "User-defined LEAKPROOF function" },
    RuleInfo { id: "publication-no-row-filter", severity: Severity::Warning, title: "Publication ships a tenant table without a row filter" },
    RuleInfo { id: "large-objects", severity: Severity::Warning, title: "Large objects are outside RLS" },
    RuleInfo { id: "database-public-connect", severity: Severity::Warning, title: "PUBLIC may connect to a database" },
    RuleInfo { id: "schema-cross-tenant", severity: Severity::Warning, title: "Runtime role or PUBLIC can use several tenant schemas" },
    RuleInfo { id: "probe-cross-tenant-select", severity: Severity::Error, title: "Probe: another tenant's rows were visible" },
    RuleInfo { id: "probe-cross-tenant-update", severity: Severity::Error, title: "Probe: another tenant's rows could be updated" },
    RuleInfo { id: "probe-cross-tenant-delete", severity: Severity::Error, title: "Probe: another tenant's rows could be deleted" },
    RuleInfo { id: "probe-foreign-insert", severity: Severity::Error, title: "Probe: a row for another tenant could be inserted" },
    RuleInfo { id: "probe-update-moves-row", severity: Severity::Error, title: "Probe: UPDATE moved a row to another tenant" },
    RuleInfo { id: "probe-existence-oracle", severity: Severity::Warning, title: "Probe: a unique key revealed another tenant's row" },
    RuleInfo { id: "probe-forged-context", severity: Severity::Error, title: "Probe: a forged context setting switched the transaction to another tenant" },
    RuleInfo { id: "probe-forged-token-accepted", severity: Severity::Error, title: "Probe: a context entry function accepted a token whose signature does not verify" },
    RuleInfo { id: "probe-replayed-token-accepted", severity: Severity::Warning, title: "Probe: a native context entry function accepted a token twice" },
    RuleInfo { id: "probe-skipped", severity: Severity::Warning, title: "Probe could not run" },
    RuleInfo { id: "probe-table-skipped", severity: Severity::Info, title: "Probe could not insert a synthetic row into a table" },
];

/// Warnings about the database's posture rather than an object through which isolation
/// fails: the context design (an unsigned setting, once per database), who may connect, how
/// the runtime role logs in and what it stores for itself. Every other warning, and every
/// error, is hazard-class: it names an object and a way across tenants.
pub const POSTURE_RULES: &[&str] = &[
    "policy-unsigned-context",
    "database-public-connect",
    "runtime-role-password",
    "runtime-role-setting",
    "runtime-role-no-connection-limit",
    "database-temp",
    "probe-skipped",
];

/// Whether a finding is hazard-class: an error, or a warning not in [`POSTURE_RULES`].
/// Info findings never are.
pub fn is_hazard(f: &Finding) -> bool {
    match f.severity {
        Severity::Error => true,
        Severity::Warning => !POSTURE_RULES.contains(&f.rule.as_str()),
        Severity::Info => false,
    }
}

/// Looks a rule up by id.
pub fn rule_info(id: &str) -> Option<&'static RuleInfo> {
    RULES.iter().find(|r| r.id == id)
}
