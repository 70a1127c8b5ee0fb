//! `tenancy check`: audits a live PostgreSQL database for the known ways row-level-security
//! (RLS) tenant isolation fails, and optionally probes it.
//!
//! Main parts:
//! - [`audit`] — the static audit. It reads the system catalogues once as the connecting
//!   role (facts: tables and their keys, policies, functions, views, roles) and applies the
//!   rules in [`RULES`], pure functions over those facts, for the *runtime role* (the role
//!   the application uses) and every role it can `SET ROLE` to. Modules: `tables` (which
//!   tables hold tenant rows, by which key; RLS, keys, undeclared shared tables), `policies`,
//!   `functions` (SECURITY DEFINER, LEAKPROOF, triggers), `reach` (views, materialized views,
//!   foreign tables and the definer functions views call, followed through the object graph),
//!   `roles` (assumable roles, login roles with BYPASSRLS, stored settings, how the runtime
//!   role logs in) and `database` (schema and database privileges, publications, large
//!   objects).
//! - [`probe`] — the active probe: as the runtime role (via `SET ROLE` when needed, never as
//!   a superuser), in transactions that are always rolled back, it inserts synthetic rows for
//!   synthetic tenants and tries cross-tenant SELECT/INSERT/UPDATE/DELETE, moving a row to
//!   another tenant and unique-key existence oracles. Contexts are set with
//!   `set_config(<guc>, …, true)`, or on tenancy-managed databases with signed tokens
//!   (`tenancy.enter`); there every entry function the runtime role may call
//!   (`tenancy.enter`, the native `tenancy.enter_read_only`) must also refuse a token
//!   with a bad signature, and a native one a token it already accepted.
//! - [`run`] and [`CheckArgs`] — the `tenancy check` command: parse, connect, audit, probe,
//!   render ([`Format`]: text, JSON, SARIF 2.1.0, JUnit) and return the exit code
//!   (0 no error finding, 1 error findings, 2 could not run).
//!
//! Application styles it understands, by how a table's tenant key is found (first match):
//! 1. a configured tenant column (`--tenant-column`, repeatable, default `tenant_id`) —
//!    per-tenant schemas such as tenancy's own;
//! 2. the column a policy on the table compares with the caller's context:
//!    `user_id = auth.uid()` (Supabase/PostgREST per-user rows), `tenant_id =
//!    current_setting(…)`, `org_id IN (SELECT org_id FROM memberships WHERE user_id =
//!    auth.uid())` or `EXISTS (… memberships.org_id = projects.org_id AND … auth.uid() …)`
//!    (per-organisation with memberships) — found even when RLS was never enabled;
//! 3. a foreign key to a tenant root (a table other tenant keys reference, such as
//!    `auth.users` or `orgs`), and the root's own referenced column;
//! 4. a well-known owner column: `user_id`, `owner_id`, `org_id`, `organization_id`,
//!    `account_id`, `workspace_id`, `team_id`, `customer_id`, `company_id`, `profile_id`.
//!
//! Schema-per-tenant schemas (named `tenant_…`, commented `tenancy:tenant-schema`, or
//! provisioned by tenancy) hold one tenant by placement: the check is which of them a role can
//! reach. A table the runtime role can read or write with no key, not declared shared, that
//! holds rows is `shared-table-undeclared`; declare reference data with `--global-table` or
//! `COMMENT ON TABLE … IS 'tenancy:global: <why>'` (ignored on tables the runtime role owns).
//!
//! Severity contract: `error` — the runtime role (or a role it can become) can read or write
//! another tenant's rows with ordinary SQL; `warning` — isolation fails if something else also
//! goes wrong; `info` — hygiene and performance. Warnings are *hazard-class* ([`is_hazard`]:
//! an object and a way across tenants) unless they are about the database's posture
//! ([`POSTURE_RULES`]). Examples:
//! - error: `rls-disabled` on `notes(user_id)` granted to the runtime role;
//!   `view-bypasses-rls` on a view owned by a superuser, even through a security_invoker view
//!   or a definer function it calls; `assumable-role-bypasses-rls` for
//!   `app → mid → svc BYPASSRLS`; `policy-user-controlled` on `user_metadata`.
//! - hazard warning: `shared-table-undeclared`, `security-definer-search-path`,
//!   `unique-without-tenant` on a value the caller chooses (an email), `login-role-bypassrls`.
//! - posture warning, once per database: `policy-unsigned-context` (every policy reads a
//!   setting any role can change; the finding lists the tables).
//! - info, where no isolation follows: `tenant-column-nullable`, `tenant-column-not-indexed`,
//!   `policy-initplan`, `unique-without-tenant` on a generated key, `policy-insert-no-check`
//!   (PostgreSQL admits no row through it).
//!
//! What it does not do: it changes nothing (fixes are printed as SQL, never applied; probe
//! writes are rolled back), it does not parse SQL properly (policy and function bodies are
//! analysed textually, so unusual predicates may be misjudged — the probe is the behavioural
//! cross-check), it does not cover leaks outside the catalogue (application code, pooler
//! settings, statistics and EXPLAIN side channels, LISTEN/NOTIFY, advisory locks, server
//! minor versions), and it does not check other databases of the cluster beyond their
//! CONNECT grants.

mod audit;
mod database;
mod functions;
mod model;
mod output;
mod policies;
mod predicate;
mod probe;
mod reach;
mod roles;
mod tables;

use std::io::{IsTerminal, Write};
use std::time::Duration;

pub use audit::audit;
pub use model::{
    is_hazard, rule_info, CheckError, Finding, Report, RuleInfo, Severity, Summary, POSTURE_RULES,
    RULES,
};
pub use output::{json_value, render, sarif, Format};
pub use probe::probe;

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// The role the application connects as; `None` picks `tenancy_app` on tenancy-managed
    /// databases and the connecting role otherwise.
    pub runtime_role: Option<String>,
    /// Names of the tenant column, in order of preference (a table is keyed by the first it
    /// has). Tables with none of them are keyed by what the audit finds (policies, foreign
    /// keys, owner column names; see the crate docs).
    pub tenant_columns: Vec<String>,
    /// Tables (`schema.table`, or `table` for `public`) that are global on purpose.
    pub global_tables: Vec<String>,
    /// Name of the setting holding the tenant on non-tenancy databases (probe; also checked in
    /// role/database defaults). Detected from the policies when `None`.
    pub context_guc: Option<String>,
    /// Key that signs contexts on tenancy-managed databases (probe).
    pub context_key: Option<tenancy_core::ContextKey>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime_role: None,
            tenant_columns: vec!["tenant_id".into()],
            global_tables: Vec::new(),
            context_guc: None,
            context_key: None,
        }
    }
}

/// Arguments of `tenancy check`.
#[derive(Clone, clap::Args)]
pub struct CheckArgs {
    /// Database to audit: a libpq key=value string or a postgres:// URL.
    #[arg(long, value_name = "URL")]
    pub database_url: String,
    /// Role the application runs as [default: tenancy_app on tenancy-managed databases, else the connecting role].
    #[arg(long, value_name = "ROLE")]
    pub runtime_role: Option<String>,
    /// Column that holds the tenant id (repeatable, or comma-separated: a table is keyed by
    /// the first it has; tables with none are keyed by what the policies and foreign keys
    /// show).
    #[arg(
        long = "tenant-column",
        value_name = "NAME",
        default_value = "tenant_id",
        value_delimiter = ','
    )]
    pub tenant_columns: Vec<String>,
    /// A table that is global on purpose (repeatable); or declare it in the database with
    /// COMMENT ON TABLE … IS 'tenancy:global: <why>'.
    #[arg(long = "global-table", value_name = "SCHEMA.TABLE")]
    pub global_tables: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also try cross-tenant reads and writes as the runtime role (always rolled back).
    #[arg(long)]
    pub probe: bool,
    /// Setting that carries the tenant on non-tenancy databases, e.g. app.tenant_id (probe).
    #[arg(long, value_name = "NAME")]
    pub context_guc: Option<String>,
    /// Context key KID:HEX for probing tenancy-managed databases.
    #[arg(
        long,
        value_name = "KID:HEX",
        env = "TENANCY_CONTEXT_KEY",
        hide_env_values = true
    )]
    pub context_key: Option<String>,
}

impl std::fmt::Debug for CheckArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckArgs")
            .field("runtime_role", &self.runtime_role)
            .field("tenant_columns", &self.tenant_columns)
            .field("global_tables", &self.global_tables)
            .field("format", &self.format)
            .field("probe", &self.probe)
            .field("context_guc", &self.context_guc)
            .field(
                "context_key",
                &self.context_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Parses `KID:HEX` into a context key.
pub fn parse_context_key(s: &str) -> Result<tenancy_core::ContextKey, CheckError> {
    let (kid, hex) = s
        .split_once(':')
        .ok_or_else(|| CheckError::BadKey("missing ':' between key id and material".into()))?;
    let kid = kid
        .trim()
        .parse()
        .map_err(|e: tenancy_core::TokenError| CheckError::BadKey(e.to_string()))?;
    tenancy_core::ContextKey::from_hex(kid, hex).map_err(|e| CheckError::BadKey(e.to_string()))
}

impl CheckArgs {
    /// The audit options these arguments describe.
    pub fn options(&self) -> Result<Options, CheckError> {
        Ok(Options {
            runtime_role: self.runtime_role.clone(),
            tenant_columns: {
                let cols: Vec<String> = self
                    .tenant_columns
                    .iter()
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                if cols.is_empty() {
                    return Err(CheckError::BadOption(
                        "--tenant-column needs at least one column name".into(),
                    ));
                }
                cols
            },
            global_tables: self.global_tables.clone(),
            context_guc: self.context_guc.clone(),
            context_key: self
                .context_key
                .as_deref()
                .map(parse_context_key)
                .transpose()?,
        })
    }
}

/// Connects to `url` (libpq string or URL, `sslmode` up to `verify-full`) and drives the
/// connection on the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, CheckError> {
    let mut cfg =
        tenancy_conn::PgConfig::parse(url).map_err(|e| CheckError::BadUrl(e.to_string()))?;
    if cfg.pg().get_connect_timeout().is_none() {
        cfg.pg_mut().connect_timeout(Duration::from_secs(10));
    }
    cfg.pg_mut().application_name("tenancy check");
    tenancy_conn::connect(&cfg)
        .await
        .map_err(|e| CheckError::Connect(e.to_string()))
}

/// Runs `tenancy check` and returns its exit code: 0 no `error` finding, 1 at least one,
/// 2 could not run (the reason goes to stderr).
pub async fn run(args: &CheckArgs, out: &mut dyn Write) -> i32 {
    match run_inner(args, out).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "tenancy check: {e}");
            2
        }
    }
}

async fn run_inner(args: &CheckArgs, out: &mut dyn Write) -> Result<i32, CheckError> {
    let opts = args.options()?;
    let client = connect(&args.database_url).await?;
    let mut report = audit(&client, &opts).await?;
    if args.probe {
        let found = probe(&client, &opts).await?;
        report.findings.extend(found);
        report.normalize();
    }
    let color = args.format == Format::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    if let Err(e) = render(&report, args.format, color, out) {
        let _ = writeln!(
            std::io::stderr(),
            "tenancy check: cannot write the report: {e}"
        );
        return Ok(2);
    }
    Ok(if report.has_errors() { 1 } else { 0 })
}
