//! Row-level security policies: facts and the rules on them.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::audit::{qi, Target};
use crate::functions::Function;
use crate::model::{CheckError, Finding, Severity};
use crate::predicate::{self, Shape};
use crate::tables::Table;

/// A row-level security policy.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub table: u32,
    pub name: String,
    /// `r` SELECT, `a` INSERT, `w` UPDATE, `d` DELETE, `*` ALL.
    pub cmd: String,
    pub permissive: bool,
    pub to_public: bool,
    pub applies: bool,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub check: Option<String>,
    pub functions: Vec<u32>,
}

impl Policy {
    fn cmd_sql(&self) -> &'static str {
        match self.cmd.as_str() {
            "r" => "SELECT",
            "a" => "INSERT",
            "w" => "UPDATE",
            "d" => "DELETE",
            _ => "ALL",
        }
    }
    fn covers(&self, cmd: &str) -> bool {
        self.cmd == "*" || self.cmd == cmd
    }
}

pub(crate) async fn policies(client: &Client, t: &Target) -> Result<Vec<Policy>, CheckError> {
    let rows = t.rows(
        client,
        "SELECT p.polrelid, p.polname::text, p.polcmd::text, p.polpermissive, 0::oid = ANY (p.polroles), \
                EXISTS (SELECT 1 FROM unnest(p.polroles) r WHERE r = 0 OR pg_has_role($1::oid, r, 'USAGE')), \
                ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END FROM unnest(p.polroles) r), \
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid), \
                ARRAY(SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_policy'::regclass \
                       AND d.objid = p.oid AND d.refclassid = 'pg_catalog.pg_proc'::regclass) \
           FROM pg_catalog.pg_policy p ORDER BY p.polname",
        "reading policies",
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Policy {
            table: r.get(0),
            name: r.get(1),
            cmd: r.get(2),
            permissive: r.get(3),
            to_public: r.get(4),
            applies: r.get(5),
            roles: r.get(6),
            using: r.get(7),
            check: r.get(8),
            functions: r.get(9),
        })
        .collect())
}

/// Whether a widening finding is neutralised by a restrictive tenant floor for `cmd`.
pub(crate) fn has_floor(pols: &[&Policy], cmd: &str, col: &str) -> bool {
    pols.iter().any(|p| {
        !p.permissive
            && p.applies
            && p.covers(cmd)
            && p.using
                .as_deref()
                .or(p.check.as_deref())
                .is_some_and(|e| predicate::classify(e, col) == Shape::Tenant)
    })
}

pub(crate) fn shape_finding(
    shape: &Shape,
    obj: &str,
    where_: &str,
    col: &str,
) -> Option<(&'static str, Severity, String)> {
    match shape {
        Shape::Tenant => None,
        Shape::AlwaysTrue => Some(("policy-always-true", Severity::Error, format!("{where_} is always true: every tenant's rows pass."))),
        Shape::FailOpen => Some((
            "policy-fail-open",
            Severity::Error,
            format!("{where_} fails open (`… IS NULL OR …`, or COALESCE(<context>, <tenant key>)): when the tenant context is unset (a forgotten SET, a pooled connection, a background job) every tenant's rows pass."),
        )),
        Shape::OrWidened { all_branches_tenant } => Some((
            "policy-or-widened",
            if *all_branches_tenant { Severity::Warning } else { Severity::Error },
            format!("{where_} is widened with OR: rows that match the other branch are visible to every tenant of {obj}."),
        )),
        Shape::NoTenantColumn => Some(("policy-no-tenant-column", Severity::Error, format!("{where_} does not reference {col}, so it does not separate tenants."))),
        Shape::Unbound => Some((
            "policy-tenant-unbound",
            Severity::Error,
            format!("{where_} mentions {col} but never compares it with the caller's context (a setting, a context function, a membership lookup of the current user), so every tenant's rows pass."),
        )),
    }
}

/// The rules on the policies of tenant table `tb`. Tables whose policies read an unsigned
/// context setting are added to `unsigned` (reported once per database).
pub(crate) fn policy_rules(
    t: &Target,
    tb: &Table,
    pols: &[&Policy],
    fns: &HashMap<u32, &Function>,
    unsigned_tables: &mut Vec<String>,
    f: &mut Vec<Finding>,
) {
    let obj = tb.object();
    let q = tb.qname();
    let col = tb.col_name.as_str();
    let good = format!("{c} = (SELECT <context function>())", c = qi(col));
    if tb.rls
        && !tb.is_child
        && !t.role_super
        && !t.role_bypass
        && !pols.iter().any(|p| p.permissive && p.applies)
    {
        f.push(Finding::new(
            "no-policy",
            Severity::Info,
            &obj,
            format!("{obj} has row-level security enabled but no permissive policy applies to {}: it sees no rows and cannot write (deny-all). Not a leak, but probably not intended.", t.role),
            format!("CREATE POLICY tenant_isolation ON {q} USING ({good}) WITH CHECK ({good});"),
        ));
    }
    let mut unwrapped = false;
    for p in pols {
        let pname = qi(&p.name);
        let fix_pol = format!("DROP POLICY {pname} ON {q};\nCREATE POLICY {pname} ON {q} AS PERMISSIVE FOR {} TO {} USING ({good}) WITH CHECK ({good});", p.cmd_sql(), qi(&t.role));
        let called: Vec<&Function> = p
            .functions
            .iter()
            .filter_map(|o| fns.get(o).copied())
            .collect();
        // Widening shapes, in the predicate and in functions it calls.
        if p.permissive {
            let mut shapes: Vec<(Shape, String, bool)> = Vec::new();
            if p.cmd != "a" {
                if let Some(u) = &p.using {
                    shapes.push((
                        predicate::classify(u, col),
                        format!("The USING expression of policy {} on {obj} ({u})", p.name),
                        false,
                    ));
                }
            }
            if let Some(c) = &p.check {
                let s = predicate::classify(c, col);
                shapes.push((
                    s,
                    format!(
                        "The WITH CHECK expression of policy {} on {obj} ({c})",
                        p.name
                    ),
                    true,
                ));
            }
            for func in &called {
                if func.trusted || !(func.language == "sql" || func.language == "plpgsql") {
                    continue;
                }
                if let Some(s) = predicate::body_shape(&func.body) {
                    shapes.push((
                        s,
                        format!(
                            "Function {}({}), called by policy {} on {obj},",
                            func.qname, func.signature, p.name
                        ),
                        false,
                    ));
                }
            }
            // A predicate that calls a function may check the tenant inside it.
            let calls_user_fn = !called.is_empty();
            for (shape, where_, is_check) in shapes {
                let shape = if (shape == Shape::NoTenantColumn || shape == Shape::Unbound)
                    && calls_user_fn
                {
                    Shape::Tenant
                } else {
                    shape
                };
                let Some((mut rule, mut sev, mut msg)) = shape_finding(&shape, &obj, &where_, col)
                else {
                    continue;
                };
                if is_check && shape == Shape::AlwaysTrue {
                    rule = "with-check-true";
                    msg = format!("{where_} is WITH CHECK (true): the runtime role can write rows for any tenant ({} through this policy).", if p.cmd == "a" { "INSERT" } else { "INSERT/UPDATE" });
                }
                if !p.applies {
                    // A policy only for the table's owner grants nothing the owner lacks (it
                    // can disable row-level security on its own table); what matters is
                    // which definer functions run as the owner, which
                    // `security-definer-ignores-context` checks.
                    let owner_only = p.roles.iter().all(|r| *r == tb.owner);
                    let assumed = t.assumable.iter().find(|a| p.roles.contains(&a.name));
                    let (sev, why) = if let Some(a) = assumed {
                        (Severity::Error, format!("The policy is for {}, which the runtime role {} can SET ROLE to ({}), so the runtime role reads or writes across tenants with one statement.", a.name, t.role, a.path.join(" → ")))
                    } else if owner_only {
                        (Severity::Info, format!("The policy is only for the table's owner {}, which can read every row of its own table anyway; definer functions the runtime role may call are checked by security-definer-ignores-context.", tb.owner))
                    } else {
                        (Severity::Warning, format!("The policy is for {} (not the runtime role {}), so those roles read or write across tenants.", p.roles.join(", "), t.role))
                    };
                    f.push(Finding::new(
                        "policy-other-role-widened",
                        sev,
                        &obj,
                        format!("{msg} {why}"),
                        fix_pol.replace(
                            &format!("TO {}", qi(&t.role)),
                            &format!(
                                "TO {}",
                                p.roles
                                    .iter()
                                    .map(|r| if r == "PUBLIC" { r.clone() } else { qi(r) })
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ),
                    ));
                    continue;
                }
                let cmd_key = if p.cmd == "*" { "r" } else { p.cmd.as_str() };
                if sev == Severity::Error && has_floor(pols, cmd_key, col) {
                    sev = Severity::Warning;
                    msg.push_str(" A RESTRICTIVE tenant policy still limits the rows, so this is not exploitable on its own.");
                }
                if p.to_public {
                    msg.push_str(" The policy applies TO PUBLIC, i.e. to every role.");
                }
                f.push(Finding::new(rule, sev, &obj, msg, fix_pol.clone()));
            }
            // Tenant column writable through UPDATE without tenant protection.
            if p.applies && p.covers("w") && tb.col_updatable && tb.rls {
                let eff = p.check.as_deref().or(p.using.as_deref());
                let protected = eff.is_some_and(|e| {
                    predicate::classify(e, col) == Shape::Tenant || !called.is_empty()
                });
                if !protected {
                    f.push(Finding::new(
                        "tenant-column-updatable",
                        Severity::Error,
                        &obj,
                        format!("The runtime role may UPDATE {obj}.{col} and policy {} does not check the new row's tenant: an UPDATE can move a row to another tenant.", p.name),
                        format!("{fix_pol}\nREVOKE UPDATE ({c}) ON {q} FROM {r};", c = qi(col), r = qi(&t.role)),
                    ));
                }
            }
        }
        if !p.applies {
            continue;
        }
        let exprs: Vec<&str> = [p.using.as_deref(), p.check.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        // Identity from values the caller controls, or from the pool's shared role.
        let user_fns: Vec<&&Function> = called.iter().filter(|x| !x.trusted).collect();
        if p.permissive
            && (exprs.iter().any(|e| predicate::user_controlled(e))
                || user_fns.iter().any(|x| predicate::user_controlled(&x.body)))
        {
            f.push(Finding::new(
                "policy-user-controlled",
                Severity::Error,
                &obj,
                format!("Policy {} on {obj} takes the caller's identity from user metadata (user_metadata / raw_user_meta_data), which every signed-up user can edit themselves: any user can name another tenant and read or write its rows.", p.name),
                format!("{fix_pol}\n-- take the tenant from a claim or table only the server writes (app_metadata, a memberships table)"),
            ));
        }
        if p.permissive
            && !t.role_super
            && (exprs.iter().any(|e| predicate::role_identity(e))
                || user_fns.iter().any(|x| predicate::role_identity(&x.body)))
        {
            // A policy for the runtime role itself (or PUBLIC) under a shared pool role is
            // the same identity for every tenant. One that reaches the runtime role only
            // through a group role may be a role-per-tenant design (each tenant a member of
            // the group): a warning to confirm.
            let direct = p.to_public || p.roles.contains(&t.role);
            let (sev, msg) = if direct {
                (Severity::Error, format!("Policy {} on {obj} identifies the caller by the database role (current_user / session_user), but every tenant's requests run as the same runtime role {}: the rows it lets one tenant see, it lets every tenant see.", p.name, t.role))
            } else {
                (Severity::Warning, format!("Policy {} on {obj} identifies the caller by the database role (current_user / session_user) and applies to the runtime role {} through {}: correct only if every tenant connects as a role of its own; under a shared pool role every tenant sees the same rows.", p.name, t.role, p.roles.join(", ")))
            };
            f.push(Finding::new(
                "policy-role-identity",
                sev,
                &obj,
                msg,
                fix_pol.clone(),
            ));
        }
        if p.cmd == "a" && p.check.is_none() {
            f.push(Finding::new(
                "policy-insert-no-check",
                Severity::Info,
                &obj,
                format!("INSERT policy {} on {obj} has no WITH CHECK expression: PostgreSQL applies no check from it, so it admits no row on its own (INSERTs pass only through other permissive policies). Not a leak, but the INSERT rule it was meant to state is missing.", p.name),
                format!("ALTER POLICY {pname} ON {q} WITH CHECK ({good});"),
            ));
        }
        // Unsigned context, initplan and volatility.
        let mut unsigned = exprs.iter().any(|e| predicate::reads_setting(e));
        for func in &called {
            if !func.trusted && predicate::reads_setting(&func.body) {
                unsigned = true;
            }
            if func.volatile && !func.trusted {
                f.push(Finding::new(
                    "policy-volatile-function",
                    Severity::Warning,
                    &obj,
                    format!("Policy {} on {obj} calls VOLATILE function {}: it runs for every row and blocks index use.", p.name, func.qname),
                    format!("ALTER FUNCTION {}({}) STABLE;", func.qname, func.signature),
                ));
            }
            if func.nargs == 0
                && exprs
                    .iter()
                    .any(|e| predicate::unwrapped_calls(e, &func.name) > 0)
            {
                unwrapped = true;
            }
        }
        if exprs
            .iter()
            .any(|e| predicate::unwrapped_calls(e, "current_setting") > 0)
        {
            unwrapped = true;
        }
        if unsigned && !unsigned_tables.contains(&obj) {
            unsigned_tables.push(obj.clone());
        }
    }
    if unwrapped {
        f.push(Finding::new(
            "policy-initplan",
            // Performance: no isolation follows from it.
            Severity::Info,
            &obj,
            format!("A policy on {obj} calls its context function directly instead of as (SELECT …), so PostgreSQL evaluates it once per row instead of once per statement."),
            format!("-- wrap the call: USING ({c} = (SELECT <context function>()))", c = qi(col)),
        ));
    }
}

/// `policy-unsigned-context`, once per database: the tables whose policies take the tenant
/// from a setting any role can change. One cause (the context design), so one finding that
/// lists the tables rather than one per table.
pub(crate) fn unsigned_context_rule(t: &Target, tables: &[String], f: &mut Vec<Finding>) {
    if tables.is_empty() {
        return;
    }
    let shown: Vec<&str> = tables.iter().take(20).map(String::as_str).collect();
    let more = tables.len().saturating_sub(shown.len());
    f.push(Finding::new(
        "policy-unsigned-context",
        Severity::Warning,
        &t.database,
        format!(
            "The policies of {} table(s) ({}{}) take the tenant from a setting read with current_setting(). Placeholder settings can be changed by any role, so SQL injected into one statement can call set_config(…) and switch tenant for the rest of the transaction; isolation then rests on the application never running injected SQL.",
            tables.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ),
        "-- verify a signed context inside the database, e.g. tenancy's: USING (<tenant key> = (SELECT tenancy.current_tenant_id()))".to_owned(),
    ));
}
