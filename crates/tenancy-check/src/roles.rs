//! Roles: the runtime role, every role it can assume, login roles that bypass row-level
//! security, and settings stored for them.

use tokio_postgres::Client;

use crate::audit::{qi, query, Target};
use crate::model::{CheckError, Finding, Severity};

/// A role the runtime role can switch to with `SET ROLE`.
#[derive(Debug, Clone)]
pub(crate) struct Assumable {
    pub name: String,
    /// Role names from the runtime role to this one.
    pub path: Vec<String>,
    pub superuser: bool,
    pub bypassrls: bool,
}

/// Every role `role` can `SET ROLE` to, with the shortest membership chain to it
/// (PostgreSQL 16+: grants WITH SET; before: any membership).
pub(crate) async fn assumable(
    client: &Client,
    role: u32,
    version: i32,
) -> Result<Vec<Assumable>, CheckError> {
    let set_option = if version >= 160000 {
        "AND m.set_option"
    } else {
        ""
    };
    let sql = format!(
        "WITH RECURSIVE chain(oid, path) AS ( \
            SELECT $1::oid, ARRAY[$1::oid] \
            UNION ALL \
            SELECT m.roleid, c.path || m.roleid FROM pg_catalog.pg_auth_members m JOIN chain c ON m.member = c.oid \
             WHERE NOT m.roleid = ANY (c.path) {set_option}) \
         SELECT DISTINCT ON (c.oid) r.rolname::text, \
                ARRAY(SELECT pg_get_userbyid(x) FROM unnest(c.path) WITH ORDINALITY u(x, i) ORDER BY u.i)::text[], \
                r.rolsuper, r.rolbypassrls \
           FROM chain c JOIN pg_catalog.pg_roles r ON r.oid = c.oid \
          WHERE c.oid <> $1::oid \
          ORDER BY c.oid, array_length(c.path, 1)"
    );
    let rows = query(
        client,
        &sql,
        &[&role],
        "reading the roles the runtime role can assume",
    )
    .await?;
    let mut out: Vec<Assumable> = rows
        .into_iter()
        .map(|r| Assumable {
            name: r.get(0),
            path: r.get(1),
            superuser: r.get(2),
            bypassrls: r.get(3),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Login roles other than the runtime role (and not superusers, which are administrators
/// by definition) that have BYPASSRLS and a privilege on a tenant table: a second
/// credential that reads every tenant's rows, which the application's isolation does not
/// cover.
pub(crate) async fn login_bypass_rules(
    client: &Client,
    t: &Target,
    tenant_tables: &[u32],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT r.rolname::text, \
                ARRAY(SELECT n.nspname || '.' || c.relname FROM unnest($2::oid[]) x(o) \
                        JOIN pg_catalog.pg_class c ON c.oid = x.o JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                       WHERE has_table_privilege(r.oid, x.o, 'SELECT') OR has_table_privilege(r.oid, x.o, 'UPDATE') \
                          OR has_table_privilege(r.oid, x.o, 'DELETE') ORDER BY 1)::text[] \
           FROM pg_catalog.pg_roles r \
          WHERE r.rolcanlogin AND r.rolbypassrls AND NOT r.rolsuper AND r.oid <> $1::oid ORDER BY 1",
        &[&t.role_oid, &tenant_tables],
        "reading login roles with BYPASSRLS",
    )
    .await?;
    for r in rows {
        let name: String = r.get(0);
        let tables: Vec<String> = r.get(1);
        if tables.is_empty() || t.assumable.iter().any(|a| a.name == name) {
            continue;
        }
        f.push(Finding::new(
            "login-role-bypassrls",
            Severity::Warning,
            &name,
            format!("Role {name} can log in, has BYPASSRLS and may read or write tenant tables ({}): whoever holds its credentials, or SQL injected into any service that uses it, sees every tenant's rows; the runtime role's isolation does not cover it.", tables.join(", ")),
            format!("ALTER ROLE {} NOBYPASSRLS;  -- or NOLOGIN, kept for migrations run by an operator", qi(&name)),
        ));
    }
    Ok(())
}

pub(crate) fn role_rules(t: &Target, f: &mut Vec<Finding>) {
    for a in &t.assumable {
        if !(a.superuser || a.bypassrls) {
            continue;
        }
        f.push(Finding::new(
            "assumable-role-bypasses-rls",
            Severity::Error,
            &a.name,
            format!(
                "The runtime role {} can SET ROLE to {} ({}), which {}: one `SET ROLE {}` in any tenant's request, injected SQL included, and row-level security no longer applies.",
                t.role,
                a.name,
                a.path.join(" → "),
                if a.superuser { "is a superuser" } else { "has BYPASSRLS" },
                qi(&a.name)
            ),
            format!("REVOKE {} FROM {};  -- revoke the first grant of the chain", qi(a.path.get(1).unwrap_or(&a.name)), qi(&t.role)),
        ));
    }
    if t.role_super {
        f.push(Finding::new(
            "runtime-role-superuser",
            Severity::Error,
            &t.role,
            format!("The runtime role {} is a superuser. Superusers bypass row-level security, FORCE included, so every query sees every tenant's rows.", t.role),
            format!("ALTER ROLE {} NOSUPERUSER;", qi(&t.role)),
        ));
    }
    if t.role_bypass {
        f.push(Finding::new(
            "runtime-role-bypassrls",
            Severity::Error,
            &t.role,
            format!("The runtime role {} has BYPASSRLS: row-level security never applies to it, FORCE included.", t.role),
            format!("ALTER ROLE {} NOBYPASSRLS;", qi(&t.role)),
        ));
    }
}

pub(crate) async fn settings_rules(
    client: &Client,
    t: &Target,
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = t
        .rows(
            client,
            "SELECT coalesce(r.rolname::text, ''), coalesce(d.datname::text, ''), c \
           FROM pg_catalog.pg_db_role_setting s \
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole \
           LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
          WHERE (s.setdatabase = 0 OR d.datname = current_database()) \
            AND (s.setrole = 0 OR pg_has_role($1::oid, s.setrole, 'MEMBER'))",
            "reading role and database settings",
        )
        .await?;
    for r in rows {
        let role: String = r.get(0);
        let db: String = r.get(1);
        let setting: String = r.get(2);
        let name = setting_name(&setting);
        let hit = is_context_setting(&name, gucs);
        if !hit {
            continue;
        }
        let (obj, fix) = match (role.is_empty(), db.is_empty()) {
            (false, false) => (
                role.clone(),
                format!(
                    "ALTER ROLE {} IN DATABASE {} RESET {name};",
                    qi(&role),
                    qi(&db)
                ),
            ),
            (false, true) => (
                role.clone(),
                format!("ALTER ROLE {} RESET {name};", qi(&role)),
            ),
            _ => (
                db.clone(),
                format!("ALTER DATABASE {} RESET {name};", qi(&db)),
            ),
        };
        f.push(Finding::new(
            "tenant-setting-default",
            Severity::Error,
            obj,
            format!("`{setting}` is stored as a default for {}{}: every session of the runtime role starts with it, so a transaction that forgets to set its tenant silently runs as that tenant (or with row_security changed) instead of seeing nothing.", if role.is_empty() { "all roles" } else { role.as_str() }, if db.is_empty() { String::new() } else { format!(" in database {db}") }),
            fix,
        ));
    }
    Ok(())
}

/// Settings the SDK's tenant pools send in every connection's startup packet, which take
/// precedence over role and database defaults (other clients of the role get the stored
/// default).
pub(crate) const POOL_PINNED_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "row_security",
    "client_min_messages",
    "search_path",
];

/// Settings whose stored default breaks or slows every session that starts with it, or
/// changes what its statements mean.
pub(crate) const AVAILABILITY_SETTINGS: &[&str] = &[
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "default_transaction_read_only",
    "default_transaction_isolation",
    "default_transaction_deferrable",
    "search_path",
    "client_min_messages",
    "work_mem",
    "hash_mem_multiplier",
    "maintenance_work_mem",
    "temp_buffers",
    "plan_cache_mode",
    "jit",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "effective_cache_size",
    "from_collapse_limit",
    "join_collapse_limit",
    "geqo",
    "geqo_threshold",
    "max_parallel_workers_per_gather",
    "synchronous_commit",
    "commit_delay",
    "vacuum_cost_delay",
    "local_preload_libraries",
    "check_function_bodies",
    "default_toast_compression",
    "datestyle",
    "intervalstyle",
    "timezone",
    "extra_float_digits",
    "bytea_output",
    "standard_conforming_strings",
    "xmloption",
];

/// Defaults stored for the runtime role itself (`ALTER ROLE <runtime> [IN DATABASE …] SET`).
/// PostgreSQL lets a role change its own defaults, so these are what injected SQL would
/// leave behind to break every later session of the role: a 1 ms `statement_timeout`, a
/// read-only default, a `search_path` that hides the application's tables, planner
/// settings that turn point reads into scans. Settings the tenant context depends on are
/// `tenant-setting-default`'s (an error there); everything else stored for the runtime
/// role is reported here.
pub(crate) async fn runtime_role_setting_rules(
    client: &Client,
    t: &Target,
    gucs: &[String],
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    // A setting only a superuser may set (`log_parameter_max_length`, which the bootstrap
    // stores to keep tokens out of statement logs) is one the role cannot change or reset
    // either, unless it was granted SET on it (PostgreSQL 15+).
    let changeable = if t.version >= 150000 {
        "p.context <> 'superuser' OR pg_catalog.has_parameter_privilege(s.setrole, p.name, 'SET')"
    } else {
        "p.context <> 'superuser'"
    };
    let rows = t.rows(
        client,
        &format!(
            "SELECT coalesce(d.datname::text, ''), c \
               FROM pg_catalog.pg_db_role_setting s \
               LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) c \
              WHERE s.setrole = $1::oid AND (s.setdatabase = 0 OR d.datname = current_database()) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_settings p \
                                 WHERE p.name = lower(split_part(c, '=', 1)) AND NOT ({changeable})) \
              ORDER BY 1, 2"
        ),
        "reading the runtime role's stored settings",
    )
    .await?;
    for r in rows {
        let db: String = r.get(0);
        let setting: String = r.get(1);
        let name = setting_name(&setting);
        // Reported as errors by tenant-setting-default.
        if is_context_setting(&name, gucs) {
            continue;
        }
        let scope = if db.is_empty() {
            String::new()
        } else {
            format!(" in database {db}")
        };
        let effect = if POOL_PINNED_SETTINGS.contains(&name.as_str()) {
            "tenancy's tenant pools override it in their startup packet, but every other session of the role (workers, scripts, other pools) starts with it"
        } else if AVAILABILITY_SETTINGS.contains(&name.as_str()) || name.starts_with("enable_") {
            "every session of the role starts with it, tenancy's tenant pools included: it can fail, stall or slow every tenant's statements"
        } else {
            "every session of the role starts with it, tenancy's tenant pools included"
        };
        let fix = if db.is_empty() {
            format!("ALTER ROLE {} RESET {name};", qi(&t.role))
        } else {
            format!(
                "ALTER ROLE {} IN DATABASE {} RESET {name};",
                qi(&t.role),
                qi(&db)
            )
        };
        f.push(Finding::new(
            "runtime-role-setting",
            Severity::Warning,
            format!("{}{}: {name}", t.role, if db.is_empty() { String::new() } else { format!(" in {db}") }),
            format!(
                "`{setting}` is stored as a default for the runtime role {}{scope}; {effect}. PostgreSQL lets a role change its own defaults (`ALTER ROLE CURRENT_USER SET …`), so SQL injected into any tenant's request can store one that breaks every later session: keep the runtime role without stored settings, set what the application needs in its connection options, and alert on new rows in pg_db_role_setting.",
                t.role
            ),
            fix,
        ));
    }
    Ok(())
}

/// Password methods of pg_hba.conf: they check the role's own password, which the role can
/// change itself.
pub(crate) const PASSWORD_METHODS: &[&str] = &["password", "md5", "scram-sha-256"];

/// How the runtime role logs in, and its connection limit. PostgreSQL lets every role
/// change its own password (`ALTER ROLE CURRENT_USER PASSWORD …`, no privilege needed), so
/// where pg_hba.conf accepts a password for the runtime role, SQL injected into any
/// tenant's request can lock the application out (every new connection fails) or set a
/// password the attacker knows and log in directly. Whether the role has a password is in
/// `pg_authid.rolpassword`, readable by superusers only; the rules in
/// `pg_hba_file_rules`, by superusers only too (PostgreSQL 15: by default). What cannot be
/// read is said, not guessed.
pub(crate) async fn runtime_role_login_rules(
    client: &Client,
    t: &Target,
    f: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = t
        .rows(
            client,
            "SELECT r.rolcanlogin, r.rolconnlimit, \
                has_table_privilege('pg_catalog.pg_authid', 'SELECT'), \
                has_function_privilege('pg_catalog.pg_hba_file_rules()', 'EXECUTE') \
           FROM pg_catalog.pg_roles r WHERE r.oid = $1::oid",
            "reading the runtime role's login attributes",
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(());
    };
    let (can_login, conn_limit, authid, hba): (bool, i32, bool, bool) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    if !can_login {
        return Ok(());
    }
    if conn_limit < 0 {
        f.push(Finding::new(
            "runtime-role-no-connection-limit",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} has no CONNECTION LIMIT: a leaked credential or a misconfigured pool can take every connection slot of the cluster, and the owner role then cannot connect to migrate or repair.",
                t.role
            ),
            format!(
                "ALTER ROLE {} CONNECTION LIMIT <sum of the application's pool sizes plus headroom>;",
                qi(&t.role)
            ),
        ));
    }
    let has_password: Option<bool> = if authid {
        let rows = t
            .rows(
                client,
                "SELECT rolpassword IS NOT NULL FROM pg_catalog.pg_authid WHERE oid = $1::oid",
                "reading whether the runtime role has a password",
            )
            .await?;
        rows.first().map(|r| r.get(0))
    } else {
        None
    };
    // Rules that accept a password and can apply to the runtime role in this database
    // (ignoring which earlier rule a given client would match first: these are the ones
    // that may be used).
    let password_rules: Option<Vec<String>> = if hba {
        let rows = query(
            client,
            "SELECT h.line_number, h.type, coalesce(h.address, ''), h.auth_method \
               FROM pg_catalog.pg_hba_file_rules h \
              WHERE h.error IS NULL AND h.auth_method = ANY ($3::text[]) \
                AND (h.database && ARRAY['all', current_database()]::text[] \
                     OR ('sameuser' = ANY (h.database) AND current_database() = $2::text) \
                     OR ('samerole' = ANY (h.database) AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g \
                                 WHERE g.rolname = current_database() AND pg_has_role($1::oid, g.oid, 'MEMBER')))) \
                AND (h.user_name && ARRAY['all', $2::text]::text[] \
                     OR EXISTS (SELECT 1 FROM unnest(h.user_name) u \
                                 WHERE u LIKE '+%' AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g \
                                     WHERE g.rolname = substr(u, 2) AND pg_has_role($1::oid, g.oid, 'MEMBER')))) \
              ORDER BY 1",
            &[&t.role_oid, &t.role, &PASSWORD_METHODS],
            "reading pg_hba.conf rules",
        )
        .await?;
        Some(
            rows.iter()
                .map(|r| {
                    let line: i32 = r.get(0);
                    let kind: String = r.get(1);
                    let addr: String = r.get(2);
                    let method: String = r.get(3);
                    format!(
                        "line {line} ({kind}{}{method})",
                        if addr.is_empty() {
                            " ".to_owned()
                        } else {
                            format!(" from {addr}, ")
                        }
                    )
                })
                .collect(),
        )
    } else {
        None
    };
    let why = "PostgreSQL lets every role change its own password (`ALTER ROLE CURRENT_USER PASSWORD …` needs no privilege), so SQL injected into any tenant's request can lock the application out of every new connection or set a password the attacker knows and log in directly";
    let alternatives = "Prefer authentication the role cannot change from SQL: client certificates (`hostssl … cert`), peer authentication on a Unix socket, or the platform's IAM authentication (RDS IAM, Cloud SQL IAM, Microsoft Entra). If a password must stay, accept it only from the application's hosts, log `ALTER ROLE` (log_statement = 'ddl') and alert on it, and rotate it from outside the database";
    let fix = format!(
        "-- pg_hba.conf: hostssl {} {} <application network> cert  (or: local {} {} peer)",
        qi(&t.database),
        qi(&t.role),
        qi(&t.database),
        qi(&t.role)
    );
    match (has_password, &password_rules) {
        (_, Some(rules)) if rules.is_empty() => {}
        (Some(true), Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Warning,
            &t.role,
            format!(
                "The runtime role {} has a password, and pg_hba.conf accepts it ({}). {why}. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (Some(false), Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} has no password, but pg_hba.conf would accept one for it ({}). {why}: injected SQL can give it one. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (None, Some(rules)) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Info,
            &t.role,
            format!(
                "The runtime role {} can log in, and pg_hba.conf accepts a password for it ({}); whether it has one could not be read (pg_authid needs a superuser). {why}. {alternatives}.",
                t.role,
                rules.join(", ")
            ),
            fix,
        )),
        (Some(true), None) => f.push(Finding::new(
            "runtime-role-password",
            Severity::Warning,
            &t.role,
            format!(
                "The runtime role {} has a password; whether pg_hba.conf accepts it could not be read (pg_hba_file_rules needs a superuser). {why}. {alternatives}.",
                t.role
            ),
            fix,
        )),
        (has, None) => {
            if has == Some(false) {
                return Ok(());
            }
            f.push(Finding::new(
                "runtime-role-password",
                Severity::Info,
                &t.role,
                format!(
                    "The runtime role {} can log in; whether it logs in with a password could not be decided (pg_authid and pg_hba_file_rules need a superuser: run the check as one to know). {why}. {alternatives}.",
                    t.role
                ),
                fix,
            ));
        }
    }
    Ok(())
}

/// The name of a stored `name=value` setting (`pg_db_role_setting.setconfig`), lowercase.
pub(crate) fn setting_name(setting: &str) -> String {
    setting
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .to_lowercase()
}

/// Whether a stored setting can switch or widen the tenant context (`row_security`, a
/// context setting the policies read, or a name that says tenant): those are
/// `tenant-setting-default` findings.
pub(crate) fn is_context_setting(name: &str, gucs: &[String]) -> bool {
    name == "row_security" || gucs.iter().any(|g| g == name) || name.contains("tenant")
}
