//! The active probe: tries cross-tenant reads and writes as the runtime role, inside
//! transactions that are always rolled back.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_postgres::Client;

use crate::audit::{self, qi, ql, query};
use crate::model::{CheckError, Finding, Severity};
use crate::policies;
use crate::predicate;
use crate::tables::{self, Table};
use crate::Options;

/// How the probe sets the tenant context.
#[derive(Debug)]
enum Mode {
    /// `set_config(guc, tenant, true)`.
    Guc(String),
    /// Signed tokens through `tenancy.enter`. Boxed: a key carries its keyed HMAC state,
    /// far larger than the other variant.
    Signed(Box<tenancy_core::ContextKey>),
}

fn sql_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> CheckError + '_ {
    move |source| CheckError::Sql {
        what: what.to_owned(),
        source,
    }
}

fn skipped(object: &str, msg: String, fix: &str) -> Vec<Finding> {
    vec![Finding::new(
        "probe-skipped",
        Severity::Warning,
        object,
        msg,
        fix,
    )]
}

/// Runs the active probe on the database `client` is connected to and returns its findings.
///
/// The connection must be the runtime role or be able to `SET ROLE` to it; the probe never
/// runs as a superuser or a BYPASSRLS role. Every change is rolled back. The session role
/// is reset at the end.
pub async fn probe(client: &Client, opts: &Options) -> Result<Vec<Finding>, CheckError> {
    let t = audit::target(client, opts).await?;
    if t.role_super || t.role_bypass {
        return Ok(skipped(&t.role, format!("The probe did not run: runtime role {} bypasses row-level security (superuser or BYPASSRLS), so it sees every row anyway.", t.role), "ALTER ROLE <runtime role> NOSUPERUSER NOBYPASSRLS;"));
    }
    let rows = query(
        client,
        "SELECT current_user::text, pg_has_role(current_user, $1::text::name, 'MEMBER')",
        &[&t.role],
        "checking the probe role",
    )
    .await?;
    let (current, can_set): (String, bool) = match rows.first() {
        Some(r) => (r.get(0), r.get(1)),
        None => return Ok(Vec::new()),
    };
    let mut set_role = false;
    if current != t.role {
        if !can_set {
            return Ok(skipped(
                &t.role,
                format!("The probe must run as the runtime role {}, but the connection is {current}, which cannot SET ROLE to it.", t.role),
                &format!("-- connect as {0} (or as a role that is a member of it):  tenancy check --probe --database-url 'user={0} …'", t.role),
            ));
        }
        client
            .batch_execute(&format!("SET ROLE {}", qi(&t.role)))
            .await
            .map_err(sql_err("switching to the runtime role"))?;
        set_role = true;
    }
    let result = run_probe(client, opts, &t).await;
    if set_role {
        let _ = client.batch_execute("RESET ROLE").await;
    }
    result
}

async fn run_probe(
    client: &Client,
    opts: &Options,
    t: &audit::Target,
) -> Result<Vec<Finding>, CheckError> {
    let tables = tables::tenant_tables(client, opts, t).await?;
    let mode = if t.managed && opts.context_guc.is_none() {
        match &opts.context_key {
            Some(k) => Mode::Signed(Box::new(k.clone())),
            None => {
                return Ok(skipped(&t.database, "The probe did not run: the database is tenancy-managed and the probe needs the context key to sign tenant contexts.".into(), "-- pass --context-key KID:HEX or set TENANCY_CONTEXT_KEY"));
            }
        }
    } else {
        let guc = match &opts.context_guc {
            Some(g) => Some(g.clone()),
            None => {
                let pols = policies::policies(client, t).await?;
                let found: Option<String> = pols
                    .iter()
                    .flat_map(|p| [p.using.as_deref(), p.check.as_deref()])
                    .flatten()
                    .flat_map(predicate::settings_read)
                    .next();
                match found {
                    Some(g) => Some(g),
                    // The setting may be read inside a function the policies call
                    // (`auth.uid()` reading `request.jwt.claim.sub`).
                    None => {
                        let funcs = crate::functions::functions(client, t).await?;
                        pols.iter()
                            .flat_map(|p| p.functions.iter())
                            .filter_map(|o| funcs.iter().find(|x| x.oid == *o && !x.trusted))
                            .flat_map(|x| predicate::settings_read(&x.body))
                            .next()
                    }
                }
            }
        };
        match guc {
            Some(g) => Mode::Guc(g),
            None => {
                return Ok(skipped(&t.database, "The probe did not run: no tenant context setting was given and none was found in the policies.".into(), "-- pass --context-guc NAME (e.g. app.tenant_id)"));
            }
        }
    };
    let mut out = Vec::new();
    if let Mode::Signed(key) = &mode {
        probe_entry_functions(client, key, &mut out).await?;
    }
    for tb in tables
        .iter()
        .filter(|tb| tb.sel || tb.ins || tb.upd || tb.del)
    {
        // A failed statement outside a savepoint leaves the transaction aborted; always clean up.
        let res = probe_table(client, t, tb, &mode, &mut out).await;
        let _ = client.batch_execute("ROLLBACK").await;
        res?;
    }
    out.sort_by(|a, b| a.object.cmp(&b.object).then(a.rule.cmp(&b.rule)));
    out.dedup_by(|a, b| a.rule == b.rule && a.object == b.object);
    Ok(out)
}

/// A synthetic tenant value of the tenant column's type.
fn synthetic_tenant(col_type: &str) -> String {
    let t = col_type.to_lowercase();
    if t.starts_with("int") || t == "bigint" || t == "smallint" || t.starts_with("numeric") {
        let n: u32 = rand::random::<u32>() % 1_000_000 + 1_000_000_000;
        let n = if t == "smallint" {
            n % 30_000 + 1000
        } else {
            n
        };
        n.to_string()
    } else {
        tenancy_core::TenantId::new_random().to_string()
    }
}

/// A literal of `ty` for a NOT NULL column without default, if we know how to make one.
fn literal_for(ty: &str, enum_first: Option<&str>) -> Option<String> {
    let n: u32 = rand::random::<u32>() % 1_000_000_000;
    let base = ty.split('(').next().unwrap_or(ty).trim().to_lowercase();
    let v = match base.as_str() {
        "smallint" => format!("{}", n % 30_000),
        "integer" | "bigint" | "numeric" | "real" | "double precision" => format!("{n}"),
        "text" | "character varying" | "character" | "citext" | "name" => {
            let s = format!("p{n}");
            if let Some(len) = ty
                .split('(')
                .nth(1)
                .and_then(|x| x.trim_end_matches(')').parse::<usize>().ok())
            {
                s.chars().take(len.max(1)).collect()
            } else {
                s
            }
        }
        "uuid" => uuid::Uuid::new_v4().to_string(),
        "boolean" => "false".into(),
        "date"
        | "timestamp without time zone"
        | "timestamp with time zone"
        | "time without time zone" => "now".into(),
        "jsonb" | "json" => "{}".into(),
        "bytea" => "\\x00".into(),
        "inet" => "127.0.0.1".into(),
        _ => match enum_first {
            Some(e) => e.to_owned(),
            None => return None,
        },
    };
    Some(format!("{}::{ty}", ql(&v)))
}

struct RowPlan {
    /// (column, literal) for every column set besides the tenant column.
    vals: Vec<(String, String)>,
}

async fn plan_row(client: &Client, tb: &Table) -> Result<Result<RowPlan, String>, CheckError> {
    let rows = query(
        client,
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), \
                (SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder LIMIT 1) \
           FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull AND NOT a.atthasdef \
            AND a.attidentity = '' AND a.attgenerated = '' AND a.attnum <> $2::int2 ORDER BY a.attnum",
        &[&tb.oid, &tb.col_attnum],
        "planning a probe row",
    )
    .await?;
    let mut plan = RowPlan { vals: Vec::new() };
    for r in rows {
        let name: String = r.get(0);
        let ty: String = r.get(1);
        let en: Option<String> = r.get(2);
        match literal_for(&ty, en.as_deref()) {
            Some(l) => plan.vals.push((name, l)),
            None => return Ok(Err(format!("column {name} of type {ty} is NOT NULL without a default and the probe cannot make up a value"))),
        }
    }
    Ok(Ok(plan))
}

fn insert_sql(tb: &Table, plan: &RowPlan, tenant: &str, fresh: bool) -> String {
    let mut cols = vec![qi(&tb.col_name)];
    let mut vals = vec![format!("{}::{}", ql(tenant), tb.col_type)];
    for (c, v) in &plan.vals {
        cols.push(qi(c));
        if fresh {
            // Re-generate the literal so unique keys do not collide.
            let ty = v.rsplit("::").next().unwrap_or("text");
            vals.push(literal_for(ty, None).unwrap_or_else(|| v.clone()));
        } else {
            vals.push(v.clone());
        }
    }
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        tb.qname(),
        cols.join(", "),
        vals.join(", ")
    )
}

/// Runs `sql` inside a savepoint; keeps its effects only when `keep`.
async fn attempt(
    client: &Client,
    sql: &str,
    keep: bool,
) -> Result<Result<u64, tokio_postgres::Error>, CheckError> {
    client
        .batch_execute("SAVEPOINT tenancy_probe")
        .await
        .map_err(sql_err("creating a savepoint"))?;
    let r = client.execute(sql, &[]).await;
    let end = if keep && r.is_ok() {
        "RELEASE SAVEPOINT tenancy_probe"
    } else {
        "ROLLBACK TO SAVEPOINT tenancy_probe"
    };
    client
        .batch_execute(end)
        .await
        .map_err(sql_err("ending a savepoint"))?;
    Ok(r)
}

async fn count(client: &Client, sql: &str) -> Result<i64, CheckError> {
    match attempt_query(client, sql).await? {
        Ok(n) => Ok(n),
        Err(_) => Ok(0),
    }
}

async fn attempt_query(
    client: &Client,
    sql: &str,
) -> Result<Result<i64, tokio_postgres::Error>, CheckError> {
    client
        .batch_execute("SAVEPOINT tenancy_probe")
        .await
        .map_err(sql_err("creating a savepoint"))?;
    let r = client
        .query_one(sql, &[])
        .await
        .map(|row| row.get::<_, i64>(0));
    client
        .batch_execute("ROLLBACK TO SAVEPOINT tenancy_probe")
        .await
        .map_err(sql_err("ending a savepoint"))?;
    Ok(r)
}

async fn begin_as(client: &Client, mode: &Mode, tenant: &str) -> Result<(), CheckError> {
    match mode {
        Mode::Guc(g) => {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(sql_err("opening a probe transaction"))?;
            client
                .execute("SELECT set_config($1::text, $2::text, true)", &[g, &tenant])
                .await
                .map_err(sql_err("setting the probe tenant"))?;
        }
        Mode::Signed(key) => {
            let pid: i32 = client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .map_err(sql_err("reading the backend pid"))?
                .get(0);
            let tid: tenancy_core::TenantId = tenant.parse().map_err(|_| {
                CheckError::BadKey(format!("synthetic tenant {tenant} is not a UUID"))
            })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            let token = key.sign(tid, pid, now, 60_000_000);
            client
                .batch_execute(&format!("BEGIN; SELECT tenancy.enter({})", ql(token.as_str())))
                .await
                .map_err(sql_err("entering a signed tenant context (is --context-key the key installed with tenancy.install_context_key?)"))?;
        }
    }
    Ok(())
}

/// Signed mode: every function that enters a context (`tenancy.enter`, and the native
/// `tenancy.enter_read_only`) the runtime role may call must refuse a token whose
/// signature does not verify, and a native (C) one also a token it accepted before on
/// this connection. The replay is probed on native only: the probe's enter, ROLLBACK,
/// enter sequence rolls back the PL/pgSQL single-use mark with the transaction that set
/// it, which is that implementation's documented residual.
async fn probe_entry_functions(
    client: &Client,
    key: &tenancy_core::ContextKey,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let rows = query(
        client,
        "SELECT p.oid::regprocedure::text, 'tenancy.' || quote_ident(p.proname), l.lanname = 'c', pg_backend_pid() \
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
          WHERE p.pronamespace = 'tenancy'::regnamespace AND p.proname IN ('enter', 'enter_read_only') \
            AND p.proargtypes = '25'::oidvector AND has_function_privilege(p.oid, 'EXECUTE') ORDER BY 1",
        &[],
        "listing the context entry functions",
    )
    .await?;
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0)
    };
    let tenant = tenancy_core::TenantId::new_random();
    // Same key id, other key material: only the signature is wrong.
    let forger = tenancy_core::ContextKey::from_bytes(key.kid().clone(), rand::random());
    for r in rows {
        let (func, name, native, pid): (String, String, bool, i32) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        // Whether `func` accepts `token` as the first statement of a transaction (rolled back).
        let entered = |token: &str| {
            let sql = format!("BEGIN; SELECT {name}({})", ql(token));
            async move {
                let ok = client.batch_execute(&sql).await.is_ok();
                let _ = client.batch_execute("ROLLBACK").await;
                ok
            }
        };
        let forged = forger.sign(tenant, pid, now(), 60_000_000);
        if entered(forged.as_str()).await {
            out.push(Finding::new(
                "probe-forged-token-accepted",
                Severity::Error,
                &func,
                format!("{func} accepted a tenant context token whose signature does not verify: any SQL run as the runtime role can enter any tenant."),
                "-- reinstall tenancy's runtime from tenancy-sdk/sql (bootstrap_database, then install_runtime)",
            ));
        }
        if native {
            let token = key.sign(tenant, pid, now(), 60_000_000);
            if entered(token.as_str()).await && entered(token.as_str()).await {
                out.push(Finding::new(
                    "probe-replayed-token-accepted",
                    Severity::Warning,
                    &func,
                    format!("{func} accepted the same tenant context token twice on one connection: injected SQL could re-enter a tenant whose token it saw earlier (native tokens are single-use)."),
                    "-- reinstall the tenancy_context library and tenancy's runtime from tenancy-sdk/sql",
                ));
            }
        }
    }
    Ok(())
}

async fn switch_to(client: &Client, mode: &Mode, tenant: &str) -> Result<(), CheckError> {
    match mode {
        Mode::Guc(g) => {
            client
                .execute("SELECT set_config($1::text, $2::text, true)", &[g, &tenant])
                .await
                .map_err(sql_err("switching the probe tenant"))?;
        }
        Mode::Signed(_) => {
            // Forge: keep A's binding, swap in B's id. A correct tenancy database yields no tenant.
            client
                .execute(
                    "SELECT set_config('tenancy.ctx', $1::text || substr(coalesce(current_setting('tenancy.ctx', true), ''), 37), true)",
                    &[&tenant],
                )
                .await
                .map_err(sql_err("forging a tenant context"))?;
        }
    }
    Ok(())
}

async fn probe_table(
    client: &Client,
    t: &audit::Target,
    tb: &Table,
    mode: &Mode,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let obj = tb.object();
    let q = tb.qname();
    let c = qi(&tb.col_name);
    let ty = &tb.col_type;
    let a = synthetic_tenant(ty);
    let b = synthetic_tenant(ty);
    let lit = |v: &str| format!("{}::{ty}", ql(v));
    let signed = matches!(mode, Mode::Signed(_));
    let plan = plan_row(client, tb).await?;
    let role = qi(&t.role);

    begin_as(client, mode, &a).await?;
    // 1. As A: insert A's row.
    let mut have_a = false;
    if let Ok(plan) = &plan {
        if tb.ins {
            match attempt(client, &insert_sql(tb, plan, &a, false), true).await? {
                Ok(_) => have_a = true,
                Err(e) => out.push(Finding::new(
                    "probe-table-skipped",
                    Severity::Info,
                    &obj,
                    format!(
                        "The probe could not insert a synthetic row into {obj} as tenant A ({}); write checks on this table were skipped.",
                        e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string())
                    ),
                    "-- give the columns defaults, or probe with application fixtures",
                )),
            }
        }
    } else if let Err(why) = &plan {
        out.push(Finding::new(
            "probe-table-skipped",
            Severity::Info,
            &obj,
            format!("The probe skipped writes on {obj}: {why}."),
            "-- give the column a default",
        ));
    }
    // 2. As A: rows of other tenants (pre-existing ones included).
    cross_checks(client, tb, &a, "tenant A", out).await?;
    // 3. Insert a row for another tenant.
    foreign_insert(
        client,
        tb,
        &plan,
        &b,
        format!("Acting as tenant A, the runtime role {} inserted a row into {obj} with {} = B (another tenant).", t.role, tb.col_name),
        format!("ALTER POLICY <policy> ON {q} WITH CHECK ({c} = (SELECT <context function>()));"),
        out,
    )
    .await?;
    if have_a && tb.upd {
        // 4. Move A's row to B.
        if let Ok(n) = attempt(
            client,
            &format!("UPDATE {q} SET {c} = {} WHERE {c} = {}", lit(&b), lit(&a)),
            false,
        )
        .await?
        {
            if n > 0 {
                out.push(Finding::new(
                    "probe-update-moves-row",
                    Severity::Error,
                    &obj,
                    format!("Acting as tenant A, the runtime role {} changed {} of its row in {obj} to another tenant: UPDATE can move rows across tenants.", t.role, tb.col_name),
                    format!("ALTER POLICY <policy> ON {q} WITH CHECK ({c} = (SELECT <context function>()));\nREVOKE UPDATE ({c}) ON {q} FROM {role};"),
                ));
            }
        }
    }
    // 5. Switch to B (GUC: set_config; signed: a forged context that must not yield B).
    switch_to(client, mode, &b).await?;
    // Signed: the PL/pgSQL context turns a forged setting into no tenant; the native one
    // keeps no setting, so the transaction stays tenant A's. Either is correct; B is not.
    let effective: Option<String> = if signed {
        client
            .query_one("SELECT tenancy.current_tenant_id()::text", &[])
            .await
            .map_err(sql_err("reading the context after a forged setting"))?
            .get(0)
    } else {
        None
    };
    if signed && effective.as_deref() == Some(b.as_str()) {
        out.push(Finding::new(
            "probe-forged-context",
            Severity::Error,
            &obj,
            format!("Inside tenant A's transaction, set_config('tenancy.ctx', …) with tenant B's id made tenancy.current_tenant_id() return B: injected SQL can switch tenants while {obj} is read."),
            "-- reinstall tenancy's runtime (tenancy.enter / tenancy.current_tenant_id) from tenancy-sdk/sql".to_owned(),
        ));
    }
    let still_a = signed && effective.as_deref() == Some(a.as_str());
    let who = if still_a {
        "a forged context setting (ignored: the transaction stayed tenant A's)"
    } else if signed {
        "a forged context (tenant B's id with tenant A's binding)"
    } else {
        "tenant B"
    };
    if have_a && !still_a {
        let n = count(
            client,
            &format!("SELECT count(*) FROM {q} WHERE {c} = {}", lit(&a)),
        )
        .await?;
        if n > 0 {
            out.push(Finding::new(
                "probe-cross-tenant-select",
                Severity::Error,
                &obj,
                format!("With {who}, the runtime role {} read tenant A's row in {obj}.", t.role),
                format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;  -- and a policy USING ({c} = (SELECT <context function>()))"),
            ));
        }
    }
    cross_checks(client, tb, if still_a { &a } else { &b }, who, out).await?;
    if signed && !still_a {
        foreign_insert(
            client,
            tb,
            &plan,
            &a,
            format!("With {who}, the runtime role {} inserted a row for tenant A into {obj}.", t.role),
            format!("ALTER POLICY <policy> ON {q} WITH CHECK ({c} = (SELECT tenancy.current_tenant_id()));"),
            out,
        )
        .await?;
    }
    // 6. Existence oracle: B inserts A's unique values.
    if have_a && !signed {
        if let Ok(plan) = &plan {
            if let Err(e) = attempt(client, &insert_sql(tb, plan, &b, false), false).await? {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                    out.push(Finding::new(
                        "probe-existence-oracle",
                        Severity::Warning,
                        &obj,
                        format!("Acting as tenant B, inserting tenant A's key values into {obj} failed with a unique violation: B learns that another tenant has those values."),
                        format!("-- make every primary key and unique constraint on {q} start with {c}"),
                    ));
                }
            }
        }
    }
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(sql_err("rolling back the probe"))?;
    // 7. Signed mode: a real context for B against pre-existing rows.
    if signed {
        begin_as(client, mode, &b).await?;
        cross_checks(client, tb, &b, "tenant B (signed context)", out).await?;
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(sql_err("rolling back the probe"))?;
    }
    Ok(())
}

/// Check `probe-foreign-insert`: in the current context, inserting a row whose tenant
/// column names `other` must be refused. `what` says who acted, `fix` how to refuse it.
async fn foreign_insert(
    client: &Client,
    tb: &Table,
    plan: &Result<RowPlan, String>,
    other: &str,
    what: String,
    fix: String,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let Ok(plan) = plan else { return Ok(()) };
    if tb.ins
        && attempt(client, &insert_sql(tb, plan, other, true), false)
            .await?
            .is_ok()
    {
        out.push(Finding::new(
            "probe-foreign-insert",
            Severity::Error,
            tb.object(),
            what,
            fix,
        ));
    }
    Ok(())
}

/// As tenant `me`: counts, updates and deletes rows whose tenant is not `me`.
async fn cross_checks(
    client: &Client,
    tb: &Table,
    me: &str,
    who: &str,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let obj = tb.object();
    let q = tb.qname();
    let c = qi(&tb.col_name);
    let other = format!("{c} IS DISTINCT FROM {}::{}", ql(me), tb.col_type);
    let fix = format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;  -- and one policy USING ({c} = (SELECT <context function>())) WITH CHECK (same)");
    if tb.sel {
        let n = count(client, &format!("SELECT count(*) FROM {q} WHERE {other}")).await?;
        if n > 0 {
            out.push(Finding::new(
                "probe-cross-tenant-select",
                Severity::Error,
                &obj,
                format!("With {who}, the runtime role saw {n} row(s) of other tenants in {obj}."),
                fix.clone(),
            ));
        }
    }
    if tb.upd {
        if let Ok(n) = attempt(
            client,
            &format!("UPDATE {q} SET {c} = {c} WHERE {other}"),
            false,
        )
        .await?
        {
            if n > 0 {
                out.push(Finding::new("probe-cross-tenant-update", Severity::Error, &obj, format!("With {who}, the runtime role updated {n} row(s) of other tenants in {obj}."), fix.clone()));
            }
        }
    }
    if tb.del {
        if let Ok(n) = attempt(client, &format!("DELETE FROM {q} WHERE {other}"), false).await? {
            if n > 0 {
                out.push(Finding::new("probe-cross-tenant-delete", Severity::Error, &obj, format!("With {who}, the runtime role deleted {n} row(s) of other tenants in {obj}."), fix));
            }
        }
    }
    Ok(())
}
