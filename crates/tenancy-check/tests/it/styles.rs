//! Schemas in the application styles `tenancy check` understands, broken and clean:
//! per-tenant `tenant_id` columns, per-user `user_id = auth.uid()` (Supabase's style, with a
//! small `auth` schema whose `uid()` reads a request setting), per-organisation with a
//! memberships table, and schema-per-tenant. Each broken case asserts the object, rule and
//! severity it must produce; each clean case asserts no error and no hazard-class warning
//! ([`tenancy_check::is_hazard`]).
//!
//! Placeholders: `{app}` runtime role, `{owner}` owner of the application's tables, `{db}`
//! database name, `{ctx}` the per-tenant base's context expression.

use tenancy_check::{audit, is_hazard, Report};

use crate::corpus;
use crate::support::{opts, plain, sev, unique_roles};

/// Supabase-style identity: `auth.users` and `auth.uid()` / `auth.jwt()` reading the
/// request settings PostgREST sets from a verified JWT.
const AUTH: &str = "
CREATE SCHEMA auth AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA auth TO {app};
SET ROLE {owner};
CREATE TABLE auth.users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text NOT NULL,
                         raw_user_meta_data jsonb NOT NULL DEFAULT '{}');
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
  AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE
  AS $$ SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb $$;
RESET ROLE;
INSERT INTO auth.users (id, email) VALUES ('00000000-0000-4000-8000-0000000000a1', 'a@example.com'),
                                          ('00000000-0000-4000-8000-0000000000b1', 'b@example.com');
";

/// Per-user rows keyed by `user_id = auth.uid()`, a price list declared shared, and a view
/// that runs as its (superuser) owner but filters by the caller.
const PER_USER: &str = "
CREATE SCHEMA app AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA app TO {app};
SET ROLE {owner};
CREATE TABLE app.todos (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                        user_id uuid NOT NULL REFERENCES auth.users (id), title text NOT NULL);
CREATE INDEX ON app.todos (user_id);
ALTER TABLE app.todos ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON app.todos TO {app}
  USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));
GRANT SELECT, INSERT, UPDATE, DELETE ON app.todos TO {app};
CREATE TABLE app.plans (id int PRIMARY KEY, name text NOT NULL);
COMMENT ON TABLE app.plans IS 'tenancy:global: the price list every user sees';
GRANT SELECT ON app.plans TO {app};
RESET ROLE;
CREATE VIEW app.my_todos AS SELECT id, title FROM app.todos WHERE user_id = (SELECT auth.uid());
GRANT SELECT ON app.my_todos TO {app};
INSERT INTO app.todos (user_id, title) VALUES ('00000000-0000-4000-8000-0000000000a1', 'a'),
                                               ('00000000-0000-4000-8000-0000000000b1', 'b');
INSERT INTO app.plans VALUES (1, 'free');
";

/// Per-organisation rows, visible to the organisation's members.
const PER_ORG: &str = "
CREATE SCHEMA app AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA app TO {app};
SET ROLE {owner};
CREATE TABLE app.orgs (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL);
CREATE TABLE app.memberships (org_id uuid NOT NULL REFERENCES app.orgs (id),
                              user_id uuid NOT NULL REFERENCES auth.users (id), PRIMARY KEY (org_id, user_id));
CREATE INDEX ON app.memberships (user_id);
CREATE TABLE app.projects (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                           org_id uuid NOT NULL REFERENCES app.orgs (id), name text NOT NULL);
CREATE INDEX ON app.projects (org_id);
ALTER TABLE app.orgs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE app.memberships ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE app.projects ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY member_orgs ON app.orgs FOR SELECT TO {app}
  USING (id IN (SELECT m.org_id FROM app.memberships m WHERE m.user_id = (SELECT auth.uid())));
CREATE POLICY own_memberships ON app.memberships FOR SELECT TO {app} USING (user_id = (SELECT auth.uid()));
CREATE POLICY member_projects ON app.projects TO {app}
  USING (EXISTS (SELECT 1 FROM app.memberships m WHERE m.org_id = projects.org_id AND m.user_id = (SELECT auth.uid())))
  WITH CHECK (EXISTS (SELECT 1 FROM app.memberships m WHERE m.org_id = projects.org_id AND m.user_id = (SELECT auth.uid())));
GRANT SELECT ON app.orgs, app.memberships TO {app};
GRANT SELECT, INSERT, UPDATE, DELETE ON app.projects TO {app};
RESET ROLE;
INSERT INTO app.orgs (id, name) VALUES ('00000000-0000-4000-8000-00000000000a', 'acme'),
                                       ('00000000-0000-4000-8000-00000000000b', 'globex');
INSERT INTO app.memberships VALUES ('00000000-0000-4000-8000-00000000000a', '00000000-0000-4000-8000-0000000000a1'),
                                   ('00000000-0000-4000-8000-00000000000b', '00000000-0000-4000-8000-0000000000b1');
INSERT INTO app.projects (org_id, name) VALUES ('00000000-0000-4000-8000-00000000000a', 'rocket'),
                                               ('00000000-0000-4000-8000-00000000000b', 'plan');
";

/// One schema per tenant; the runtime role is acme's and reaches only acme's schema.
const SCHEMA_PER_TENANT: &str = "
CREATE SCHEMA tenant_acme AUTHORIZATION {owner};
CREATE SCHEMA tenant_globex AUTHORIZATION {owner};
SET ROLE {owner};
CREATE TABLE tenant_acme.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);
CREATE TABLE tenant_globex.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);
INSERT INTO tenant_acme.notes (body) VALUES ('acme');
INSERT INTO tenant_globex.notes (body) VALUES ('globex');
RESET ROLE;
GRANT USAGE ON SCHEMA tenant_acme TO {app};
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_acme.notes TO {app};
";

/// The application styles.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// `tenant_id` columns and an unsigned setting (the corpus's base schema).
    PerTenant,
    PerUser,
    PerOrg,
    SchemaPerTenant,
}

impl Style {
    fn sql(self) -> String {
        match self {
            Style::PerTenant => corpus::BASE.to_owned(),
            Style::PerUser => format!("{AUTH}{PER_USER}"),
            Style::PerOrg => format!("{AUTH}{PER_ORG}"),
            Style::SchemaPerTenant => SCHEMA_PER_TENANT.to_owned(),
        }
    }
}

/// One schema of the corpus: `expect` lists (rule, object, severity) that must be reported;
/// empty for a clean schema, which must have no error and no hazard-class warning.
struct StyleCase {
    style: Style,
    sql: &'static str,
    tenant_columns: &'static [&'static str],
    expect: &'static [(&'static str, &'static str, &'static str)],
}

const NONE: &[&str] = &[];

async fn run(name: &str, case: &StyleCase) -> (Report, String, String, String) {
    let db = plain().await;
    // Role names stay under PostgreSQL's 63 bytes.
    let (app, owner) = unique_roles(&name[..name.len().min(16)]);
    let c = db.connect_superuser().await.expect("superuser");
    let setup = format!(
        "{}\n{}\n{}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(&case.style.sql(), &app, &owner, &db.name),
        corpus::fill(case.sql, &app, &owner, &db.name)
    );
    c.batch_execute(&setup)
        .await
        .unwrap_or_else(|e| panic!("case {name}: {e:?}"));
    let mut o = opts(&app);
    if !case.tenant_columns.is_empty() {
        o.tenant_columns = case
            .tenant_columns
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    }
    let report = audit(&c, &o).await.expect("audit");
    (report, app, owner, db.name.clone())
}

fn listing(r: &Report) -> Vec<String> {
    r.findings
        .iter()
        .map(|f| {
            format!(
                "{} {} {}: {}",
                f.severity.as_str(),
                f.rule,
                f.object,
                f.message
            )
        })
        .collect()
}

async fn check(name: &str, case: StyleCase) {
    let (report, app, owner, db) = run(name, &case).await;
    if std::env::var_os("STYLE_DEBUG").is_some() {
        eprintln!("{name}: {:#?}", listing(&report));
    }
    if case.expect.is_empty() {
        let hazards: Vec<String> = report
            .findings
            .iter()
            .filter(|f| is_hazard(f))
            .map(|f| {
                format!(
                    "{} {} {}: {}",
                    f.severity.as_str(),
                    f.rule,
                    f.object,
                    f.message
                )
            })
            .collect();
        assert!(hazards.is_empty(), "clean case {name}: {hazards:#?}");
        return;
    }
    for (rule, object, severity) in case.expect {
        let object = corpus::fill(object, &app, &owner, &db);
        let hits = report.find(rule, &object);
        assert!(
            hits.iter().any(|f| f.severity == sev(severity)),
            "case {name}: expected {severity} {rule} on {object}; got {:#?}",
            listing(&report)
        );
        for f in hits {
            assert!(!f.message.is_empty() && !f.fix.is_empty(), "{f:?}");
        }
    }
}

macro_rules! style_cases {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                check(stringify!($name), $case).await;
            }
        )*
    };
}

style_cases! {
    // ---- clean ----
    clean_per_tenant: StyleCase { style: Style::PerTenant, sql: "
        SET ROLE {owner}; CREATE TABLE app.currencies (code text PRIMARY KEY);
        COMMENT ON TABLE app.currencies IS 'tenancy:global: ISO 4217'; GRANT SELECT ON app.currencies TO {app};
        RESET ROLE; INSERT INTO app.currencies VALUES ('EUR');", tenant_columns: NONE, expect: &[] };
    clean_per_user: StyleCase { style: Style::PerUser, sql: "SELECT 1;", tenant_columns: NONE, expect: &[] };
    clean_per_org: StyleCase { style: Style::PerOrg, sql: "SELECT 1;", tenant_columns: NONE, expect: &[] };
    clean_schema_per_tenant: StyleCase { style: Style::SchemaPerTenant, sql: "SELECT 1;", tenant_columns: NONE, expect: &[] };

    // ---- tables without the configured tenant column ----
    per_user_table_without_rls: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner};
        CREATE TABLE app.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                user_id uuid NOT NULL REFERENCES auth.users (id), body text);
        GRANT SELECT, INSERT ON app.notes TO {app}; RESET ROLE;
        INSERT INTO app.notes (user_id, body) VALUES ('00000000-0000-4000-8000-0000000000a1', 'x');",
        tenant_columns: NONE, expect: &[("rls-disabled", "app.notes", "error")] };
    per_user_policies_but_rls_never_enabled: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner};
        CREATE TABLE app.files (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, creator uuid NOT NULL, path text);
        CREATE POLICY own_files ON app.files TO {app} USING (creator = (SELECT auth.uid()));
        GRANT SELECT ON app.files TO {app}; RESET ROLE;",
        tenant_columns: NONE, expect: &[("rls-disabled", "app.files", "error")] };
    owner_column_by_name: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner};
        CREATE TABLE app.invoices (id bigint PRIMARY KEY, account_id uuid NOT NULL, total numeric);
        GRANT SELECT ON app.invoices TO {app}; RESET ROLE;",
        tenant_columns: NONE, expect: &[("rls-disabled", "app.invoices", "error")] };
    undeclared_shared_table: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner}; CREATE TABLE app.settings (key text PRIMARY KEY, value text);
        GRANT SELECT ON app.settings TO {app}; RESET ROLE; INSERT INTO app.settings VALUES ('k', 'v');",
        tenant_columns: NONE, expect: &[("shared-table-undeclared", "app.settings", "warning")] };
    empty_undeclared_table_is_info: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner}; CREATE TABLE app.flags (name text PRIMARY KEY, enabled boolean NOT NULL);
        GRANT SELECT ON app.flags TO {app}; RESET ROLE;",
        tenant_columns: NONE, expect: &[("shared-table-undeclared", "app.flags", "info")] };
    tenant_column_given_on_the_command_line: StyleCase { style: Style::PerTenant, sql: "
        SET ROLE {owner}; CREATE TABLE app.ledger (workspace_key text NOT NULL, amount numeric);
        GRANT SELECT ON app.ledger TO {app}; RESET ROLE;",
        tenant_columns: &["tenant_id", "workspace_key"], expect: &[("rls-disabled", "app.ledger", "error")] };
    schema_per_tenant_undeclared_public_table: StyleCase { style: Style::SchemaPerTenant, sql: "
        CREATE TABLE public.audit (at timestamptz NOT NULL DEFAULT now(), what text);
        INSERT INTO public.audit (what) VALUES ('signup acme'), ('signup globex');
        GRANT SELECT ON public.audit TO {app};",
        tenant_columns: NONE, expect: &[("shared-table-undeclared", "public.audit", "warning")] };
    per_org_membership_table_without_rls: StyleCase { style: Style::PerOrg,
        sql: "ALTER TABLE app.memberships DISABLE ROW LEVEL SECURITY;",
        tenant_columns: NONE, expect: &[("rls-disabled", "app.memberships", "error")] };
    per_org_organisations_readable_without_rls: StyleCase { style: Style::PerOrg,
        sql: "ALTER TABLE app.orgs DISABLE ROW LEVEL SECURITY;",
        tenant_columns: NONE, expect: &[("rls-disabled", "app.orgs", "error")] };

    // ---- reach ----
    security_invoker_view_calling_a_definer_function: StyleCase { style: Style::PerUser, sql: "
        CREATE FUNCTION app.all_todos() RETURNS SETOF app.todos LANGUAGE sql SECURITY DEFINER
          SET search_path = pg_catalog AS $$ SELECT * FROM app.todos $$;
        CREATE VIEW app.todo_feed WITH (security_invoker = true) AS SELECT * FROM app.all_todos();
        GRANT SELECT ON app.todo_feed TO {app};",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.todo_feed", "error")] };
    view_over_an_invoker_view: StyleCase { style: Style::PerUser, sql: "
        CREATE VIEW app.v_inner WITH (security_invoker = true) AS SELECT * FROM app.todos;
        CREATE VIEW app.v_outer AS SELECT id, title FROM app.v_inner;
        GRANT SELECT ON app.v_outer TO {app};",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.v_outer", "error")] };
    column_only_grant_on_a_view: StyleCase { style: Style::PerUser, sql: "
        CREATE VIEW app.titles AS SELECT id, title FROM app.todos;
        GRANT SELECT (title) ON app.titles TO {app};",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.titles", "error")] };
    view_is_the_only_path: StyleCase { style: Style::PerUser, sql: "
        ALTER TABLE app.todos NO FORCE ROW LEVEL SECURITY;
        REVOKE ALL ON app.todos FROM {app};
        SET ROLE {owner}; CREATE VIEW app.recent AS SELECT title FROM app.todos;
        GRANT SELECT ON app.recent TO {app}; RESET ROLE;",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.recent", "error")] };
    materialized_view_over_a_view: StyleCase { style: Style::PerUser, sql: "
        CREATE VIEW app.v AS SELECT * FROM app.todos;
        CREATE MATERIALIZED VIEW app.stats AS SELECT user_id, count(*) AS n FROM app.v GROUP BY 1;
        GRANT SELECT ON app.stats TO {app};",
        tenant_columns: NONE, expect: &[("matview-tenant-data", "app.stats", "error")] };
    foreign_table_behind_a_view: StyleCase { style: Style::PerUser, sql: "
        CREATE FOREIGN DATA WRAPPER style_fdw; CREATE SERVER style_srv FOREIGN DATA WRAPPER style_fdw;
        CREATE FOREIGN TABLE app.remote_notes (user_id uuid, body text) SERVER style_srv;
        CREATE VIEW app.remote_v AS SELECT * FROM app.remote_notes; GRANT SELECT ON app.remote_v TO {app};",
        tenant_columns: NONE, expect: &[("foreign-table-readable", "app.remote_v", "warning")] };

    view_that_filters_only_partly: StyleCase { style: Style::PerUser, sql: "
        ALTER TABLE app.todos ADD COLUMN shared boolean NOT NULL DEFAULT false;
        CREATE VIEW app.visible AS SELECT id, title FROM app.todos WHERE user_id = (SELECT auth.uid()) OR shared;
        GRANT SELECT ON app.visible TO {app};",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.visible", "error")] };
    view_exposing_the_users_table: StyleCase { style: Style::PerUser, sql: "
        CREATE VIEW app.user_emails AS SELECT email FROM auth.users;
        GRANT SELECT ON app.user_emails TO {app};",
        tenant_columns: NONE, expect: &[("view-bypasses-rls", "app.user_emails", "error")] };

    // ---- every role the runtime role can become ----
    assumable_bypassrls_role_through_a_chain: StyleCase { style: Style::PerUser, sql: "
        CREATE ROLE {owner}_svc NOLOGIN BYPASSRLS; CREATE ROLE {owner}_mid NOLOGIN NOINHERIT;
        GRANT {owner}_svc TO {owner}_mid; GRANT {owner}_mid TO {app};",
        tenant_columns: NONE, expect: &[("assumable-role-bypasses-rls", "{owner}_svc", "error")] };
    assumable_role_with_a_wider_policy: StyleCase { style: Style::PerUser, sql: "
        ALTER ROLE {app} NOINHERIT; CREATE ROLE {owner}_support NOLOGIN; GRANT {owner}_support TO {app};
        CREATE POLICY support_all ON app.todos TO {owner}_support USING (true);",
        tenant_columns: NONE, expect: &[("policy-other-role-widened", "app.todos", "error")] };
    context_setting_stored_on_an_assumable_role: StyleCase { style: Style::PerUser, sql: "
        CREATE ROLE {owner}_job NOLOGIN; GRANT {owner}_job TO {app};
        ALTER ROLE {owner}_job SET request.jwt.claim.sub = '00000000-0000-4000-8000-0000000000a1';",
        tenant_columns: NONE, expect: &[("tenant-setting-default", "{owner}_job", "error")] };
    context_setting_stored_on_the_database: StyleCase { style: Style::PerUser, sql: "
        ALTER DATABASE {db} SET request.jwt.claim.sub = '00000000-0000-4000-8000-0000000000a1';",
        tenant_columns: NONE, expect: &[("tenant-setting-default", "{db}", "error")] };
    another_login_role_with_bypassrls: StyleCase { style: Style::PerUser, sql: "
        CREATE ROLE {owner}_etl LOGIN BYPASSRLS; GRANT USAGE ON SCHEMA app TO {owner}_etl;
        GRANT SELECT ON app.todos TO {owner}_etl;",
        tenant_columns: NONE, expect: &[("login-role-bypassrls", "{owner}_etl", "warning")] };

    // ---- policies on values the caller controls or the wrong identity ----
    policy_on_user_metadata: StyleCase { style: Style::PerUser, sql: "
        CREATE POLICY by_meta ON app.todos FOR SELECT TO {app}
          USING (((SELECT auth.jwt()) -> 'user_metadata' ->> 'owner')::uuid = user_id);",
        tenant_columns: NONE, expect: &[("policy-user-controlled", "app.todos", "error")] };
    policy_on_current_user_under_a_pool_role: StyleCase { style: Style::PerUser, sql: "
        ALTER TABLE app.todos ADD COLUMN created_by name NOT NULL DEFAULT current_user;
        CREATE POLICY mine ON app.todos FOR SELECT TO {app} USING (created_by = current_user);",
        tenant_columns: NONE, expect: &[("policy-role-identity", "app.todos", "error")] };
    policy_on_current_user_through_a_group_role: StyleCase { style: Style::PerUser, sql: "
        CREATE ROLE {owner}_tenants NOLOGIN; GRANT {owner}_tenants TO {app};
        ALTER TABLE app.todos ADD COLUMN created_by name NOT NULL DEFAULT current_user;
        CREATE POLICY mine ON app.todos FOR SELECT TO {owner}_tenants USING (created_by = current_user);",
        tenant_columns: NONE, expect: &[("policy-role-identity", "app.todos", "warning")] };
    policy_with_an_always_true_arm: StyleCase { style: Style::PerUser, sql: "
        DROP POLICY own_rows ON app.todos;
        CREATE POLICY own_rows ON app.todos TO {app} USING (user_id = (SELECT auth.uid()) OR 2 > 1 OR true)
          WITH CHECK (user_id = (SELECT auth.uid()));",
        tenant_columns: NONE, expect: &[("policy-always-true", "app.todos", "error")] };
    policy_with_an_inverted_null_test: StyleCase { style: Style::PerUser, sql: "
        CREATE POLICY signed_in ON app.todos FOR SELECT TO {app}
          USING ((SELECT auth.uid()) IS NOT NULL OR user_id = (SELECT auth.uid()));",
        tenant_columns: NONE, expect: &[("policy-always-true", "app.todos", "error")] };
    policy_that_never_compares_the_key: StyleCase { style: Style::PerUser, sql: "
        CREATE POLICY any_owner ON app.todos FOR SELECT TO {app} USING (user_id IS NOT NULL);",
        tenant_columns: NONE, expect: &[("policy-tenant-unbound", "app.todos", "error")] };
    membership_lookup_without_the_user: StyleCase { style: Style::PerOrg, sql: "
        DROP POLICY member_projects ON app.projects;
        CREATE POLICY any_member ON app.projects TO {app} USING (org_id IN (SELECT m.org_id FROM app.memberships m));",
        tenant_columns: NONE, expect: &[("policy-tenant-unbound", "app.projects", "error")] };
    coalesce_fails_open: StyleCase { style: Style::PerTenant, sql: "
        DROP POLICY tenant_isolation ON app.docs;
        CREATE POLICY p ON app.docs USING (tenant_id = coalesce(NULLIF(current_setting('app.tenant_id', true), '')::uuid, tenant_id));",
        tenant_columns: NONE, expect: &[("policy-fail-open", "app.docs", "error")] };
    insert_policy_without_with_check: StyleCase { style: Style::PerUser, sql: "
        CREATE POLICY add ON app.todos FOR INSERT TO {app};",
        tenant_columns: NONE, expect: &[("policy-insert-no-check", "app.todos", "info")] };
    definer_function_with_a_mutable_search_path: StyleCase { style: Style::PerUser, sql: "
        SET ROLE {owner};
        CREATE FUNCTION app.count_mine() RETURNS bigint LANGUAGE sql SECURITY DEFINER
          AS $$ SELECT count(*) FROM app.todos WHERE user_id = auth.uid() $$;
        RESET ROLE;",
        tenant_columns: NONE, expect: &[("security-definer-search-path", "app.count_mine()", "warning")] };
    schema_per_tenant_role_reaches_two_schemas: StyleCase { style: Style::SchemaPerTenant, sql: "
        GRANT USAGE ON SCHEMA tenant_globex TO {app}; GRANT SELECT ON tenant_globex.notes TO {app};",
        tenant_columns: NONE, expect: &[("schema-cross-tenant", "tenant_globex", "error")] };
}

/// PostgreSQL admits no row through an INSERT policy without WITH CHECK, which is why
/// `policy-insert-no-check` is info: shown as the runtime role itself.
#[tokio::test]
async fn an_insert_policy_without_with_check_admits_no_row() {
    let db = plain().await;
    let (app, owner) = unique_roles("inschk");
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!(
        "{}\n{}\nDROP POLICY own_rows ON app.todos; CREATE POLICY add ON app.todos FOR INSERT TO {app};",
        corpus::roles_sql(&app, &owner),
        corpus::fill(&format!("{AUTH}{PER_USER}"), &app, &owner, &db.name)
    ))
    .await
    .expect("setup");
    let rt = tenancy_test_support::connect(db.config_as(&app)).await;
    let err = rt
        .batch_execute(
            "INSERT INTO app.todos (user_id, title) VALUES ('00000000-0000-4000-8000-0000000000a1', 'x')",
        )
        .await
        .expect_err("the insert must be refused");
    assert!(
        err.to_string().contains("row-level security")
            || format!("{err:?}").contains("row-level security"),
        "{err:?}"
    );
}

/// The probe on the clean per-user and per-organisation schemas: it finds the request
/// setting inside `auth.uid()`, runs as the runtime role, and reports no error.
#[tokio::test]
async fn the_probe_reports_no_error_on_the_clean_user_and_organisation_styles() {
    for (name, style) in [("probe_user", Style::PerUser), ("probe_org", Style::PerOrg)] {
        let db = plain().await;
        let (app, owner) = unique_roles(name);
        let c = db.connect_superuser().await.expect("superuser");
        c.batch_execute(&format!(
            "{}\n{}",
            corpus::roles_sql(&app, &owner),
            corpus::fill(&style.sql(), &app, &owner, &db.name)
        ))
        .await
        .expect("setup");
        let o = opts(&app);
        let found = tenancy_check::probe(&c, &o).await.expect("probe");
        assert!(
            !found.iter().any(|f| f.rule == "probe-skipped"),
            "{name}: {found:#?}"
        );
        let errors: Vec<_> = found
            .iter()
            .filter(|f| f.severity == tenancy_check::Severity::Error)
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:#?}");
    }
}

/// Views that share sub-views have exponentially many paths: 24 levels, each view reading
/// both views of the level below (2^24 paths). The audit still finishes quickly and still
/// reports the top view, which runs as a superuser over a tenant table.
#[tokio::test]
async fn a_graph_of_shared_views_is_walked_within_a_budget() {
    let db = plain().await;
    let (app, owner) = unique_roles("diamond");
    let c = db.connect_superuser().await.expect("superuser");
    let mut sql = format!(
        "{}\n{}\n{}\nCREATE VIEW app.l0_a AS SELECT id, title FROM app.todos; CREATE VIEW app.l0_b AS SELECT id, title FROM app.todos;",
        corpus::roles_sql(&app, &owner),
        corpus::fill(AUTH, &app, &owner, &db.name),
        corpus::fill(PER_USER, &app, &owner, &db.name)
    );
    for i in 1..24 {
        let p = i - 1;
        sql.push_str(&format!(
            "CREATE VIEW app.l{i}_a AS SELECT * FROM app.l{p}_a UNION ALL SELECT * FROM app.l{p}_b; \
             CREATE VIEW app.l{i}_b AS SELECT * FROM app.l{p}_b UNION ALL SELECT * FROM app.l{p}_a;"
        ));
    }
    sql.push_str(&format!("GRANT SELECT ON app.l23_a TO {app};"));
    c.batch_execute(&sql).await.expect("setup");
    let report = tokio::time::timeout(std::time::Duration::from_secs(60), audit(&c, &opts(&app)))
        .await
        .expect("the audit finishes")
        .expect("audit");
    assert!(
        report
            .find("view-bypasses-rls", "app.l23_a")
            .iter()
            .any(|f| f.severity == tenancy_check::Severity::Error),
        "{:#?}",
        listing(&report)
    );
}
