//! The corpus of deliberately broken schemas: one case per rule, each on top of a correct
//! tutorial-style base (unsigned `current_setting('app.tenant_id', true)` context, RLS enabled
//! and forced, composite keys, plain runtime role). Shared by the integration tests and by
//! `examples/corpus.rs` (the pgrls comparison).
//!
//! Placeholders: `{app}` runtime role, `{owner}` table owner role, `{db}` database name.

#![allow(dead_code)]

/// The tenant predicate of the base schema.
pub(crate) const CTX: &str = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)";

/// Correct base schema (run as superuser after the two roles exist).
pub(crate) const BASE: &str = "
CREATE SCHEMA app AUTHORIZATION {owner};
GRANT USAGE ON SCHEMA app TO {app};
SET ROLE {owner};
CREATE TABLE app.docs (tenant_id uuid NOT NULL, id bigint NOT NULL, title text NOT NULL DEFAULT '', PRIMARY KEY (tenant_id, id));
ALTER TABLE app.docs ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON app.docs USING (tenant_id = {ctx}) WITH CHECK (tenant_id = {ctx});
GRANT SELECT, INSERT, UPDATE, DELETE ON app.docs TO {app};
RESET ROLE;
INSERT INTO app.docs (tenant_id, id, title) VALUES (gen_random_uuid(), 1, 'existing row of a real tenant');
";

/// One broken schema.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    pub name: &'static str,
    pub rule: &'static str,
    pub object: &'static str,
    pub severity: &'static str,
    pub sql: &'static str,
}

macro_rules! case {
    ($name:expr, $rule:expr, $object:expr, $sev:expr, $sql:expr) => {
        Case {
            name: $name,
            rule: $rule,
            object: $object,
            severity: $sev,
            sql: $sql,
        }
    };
}

pub(crate) const CASES: &[Case] = &[
    case!("rls_disabled", "rls-disabled", "app.docs", "error", "ALTER TABLE app.docs DISABLE ROW LEVEL SECURITY;"),
    case!("rls_not_forced", "rls-not-forced", "app.docs", "warning", "ALTER TABLE app.docs NO FORCE ROW LEVEL SECURITY;"),
    case!("rls_not_forced_owner", "rls-not-forced", "app.docs", "error", "ALTER TABLE app.docs NO FORCE ROW LEVEL SECURITY; ALTER TABLE app.docs OWNER TO {app};"),
    case!("runtime_owner", "runtime-role-owner", "app.docs", "error", "ALTER TABLE app.docs OWNER TO {app};"),
    case!("member_of_owner", "runtime-role-member-of-owner", "app.docs", "error", "GRANT {owner} TO {app};"),
    case!("no_policy", "no-policy", "app.docs", "info", "DROP POLICY tenant_isolation ON app.docs;"),
    case!("using_true", "policy-always-true", "app.docs", "error", "DROP POLICY tenant_isolation ON app.docs; CREATE POLICY p ON app.docs USING (true);"),
    case!("one_equals_one", "policy-always-true", "app.docs", "error", "CREATE POLICY p2 ON app.docs FOR SELECT USING (1 = 1);"),
    case!(
        "or_widened",
        "policy-or-widened",
        "app.docs",
        "error",
        "ALTER TABLE app.docs ADD COLUMN is_public boolean NOT NULL DEFAULT false; DROP POLICY tenant_isolation ON app.docs; \
         CREATE POLICY p ON app.docs USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) OR is_public);"
    ),
    case!(
        "fail_open",
        "policy-fail-open",
        "app.docs",
        "error",
        "DROP POLICY tenant_isolation ON app.docs; \
         CREATE POLICY p ON app.docs USING (current_setting('app.tenant_id', true) IS NULL OR tenant_id = current_setting('app.tenant_id', true)::uuid);"
    ),
    case!(
        "fail_open_in_function",
        "policy-fail-open",
        "app.docs",
        "error",
        "CREATE FUNCTION app.visible(t uuid) RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT current_setting('app.tenant_id', true) IS NULL OR t = current_setting('app.tenant_id', true)::uuid $$; \
         DROP POLICY tenant_isolation ON app.docs; CREATE POLICY p ON app.docs USING (app.visible(tenant_id));"
    ),
    case!("no_tenant_column", "policy-no-tenant-column", "app.docs", "error", "DROP POLICY tenant_isolation ON app.docs; CREATE POLICY p ON app.docs USING (title <> '');"),
    case!("other_role_widened", "policy-other-role-widened", "app.docs", "warning", "CREATE ROLE {owner}_auditor; CREATE POLICY audit_all ON app.docs TO {owner}_auditor USING (true);"),
    case!("owner_only_widened", "policy-other-role-widened", "app.docs", "info", "CREATE POLICY owner_all ON app.docs TO {owner} USING (true);"),
    case!("with_check_true", "with-check-true", "app.docs", "error", "CREATE POLICY ins ON app.docs FOR INSERT WITH CHECK (true);"),
    case!("superuser", "runtime-role-superuser", "{app}", "error", "ALTER ROLE {app} SUPERUSER;"),
    case!("bypassrls", "runtime-role-bypassrls", "{app}", "error", "ALTER ROLE {app} BYPASSRLS;"),
    case!("view_bypass", "view-bypasses-rls", "app.all_docs", "error", "CREATE VIEW app.all_docs AS SELECT * FROM app.docs; GRANT SELECT ON app.all_docs TO {app};"),
    case!(
        "secdef_reads_tenant_table",
        "security-definer-ignores-context",
        "app.get_doc(i bigint)",
        "error",
        "CREATE FUNCTION app.get_doc(i bigint) RETURNS SETOF app.docs LANGUAGE sql SECURITY DEFINER AS $$ SELECT * FROM app.docs WHERE id = i $$;"
    ),
    case!("secdef_other", "security-definer-function", "app.now2()", "warning", "CREATE FUNCTION app.now2() RETURNS timestamptz LANGUAGE sql SECURITY DEFINER AS $$ SELECT now() $$;"),
    case!(
        "secdef_writes_ignoring_context",
        "security-definer-ignores-context",
        "app.retitle(i bigint, t text)",
        "warning",
        "CREATE FUNCTION app.retitle(i bigint, t text) RETURNS void LANGUAGE sql SECURITY DEFINER AS $$ UPDATE app.docs SET title = t WHERE id = i $$;"
    ),
    // The shape of a job queue's claim function: owned by a role that is subject to RLS
    // but has a policy of its own that lets it see every row, executable by PUBLIC.
    case!(
        "secdef_claims_any_tenants_row",
        "security-definer-ignores-context",
        "app.claim(i bigint)",
        "error",
        "SET ROLE {owner}; \
         CREATE POLICY owner_all ON app.docs FOR ALL TO {owner} USING (true) WITH CHECK (true); \
         CREATE FUNCTION app.claim(i bigint) RETURNS TABLE (tenant_id uuid, title text) LANGUAGE sql SECURITY DEFINER \
           SET search_path = pg_catalog AS $$ UPDATE app.docs d SET title = d.title WHERE d.id = i RETURNING d.tenant_id, d.title $$; \
         RESET ROLE;"
    ),
    case!(
        "trigger_secdef",
        "trigger-security-definer",
        "app.docs",
        "warning",
        "CREATE FUNCTION app.tg() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN RETURN NEW; END $$; \
         CREATE TRIGGER t BEFORE INSERT ON app.docs FOR EACH ROW EXECUTE FUNCTION app.tg();"
    ),
    case!("unique_without_tenant", "unique-without-tenant", "app.docs", "warning", "ALTER TABLE app.docs ADD CONSTRAINT docs_title_key UNIQUE (title);"),
    case!(
        "fk_cross_tenant",
        "fk-cross-tenant",
        "app.comments",
        "error",
        "SET ROLE {owner}; ALTER TABLE app.docs ADD CONSTRAINT docs_id_key UNIQUE (id); \
         CREATE TABLE app.comments (tenant_id uuid NOT NULL, id bigint NOT NULL, doc_id bigint REFERENCES app.docs (id), PRIMARY KEY (tenant_id, id)); \
         ALTER TABLE app.comments ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; \
         CREATE POLICY tenant_isolation ON app.comments USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)); \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.comments TO {app}; RESET ROLE;"
    ),
    case!(
        "nullable_tenant",
        "tenant-column-nullable",
        "app.docs",
        // Info: a NULL tenant leaks only through a fail-open policy, an error of its own.
        "info",
        "ALTER TABLE app.docs DROP CONSTRAINT docs_pkey; ALTER TABLE app.docs ALTER COLUMN tenant_id DROP NOT NULL; CREATE UNIQUE INDEX ON app.docs (tenant_id, id);"
    ),
    case!(
        "tenant_column_updatable",
        "tenant-column-updatable",
        "app.docs",
        "error",
        "CREATE POLICY upd ON app.docs FOR UPDATE USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)) WITH CHECK (true);"
    ),
    case!("truncate", "privilege-truncate", "app.docs", "error", "GRANT TRUNCATE ON app.docs TO {app};"),
    case!("references", "privilege-references", "app.docs", "warning", "GRANT REFERENCES ON app.docs TO {app};"),
    case!("trigger_privilege", "privilege-trigger", "app.docs", "warning", "GRANT TRIGGER ON app.docs TO {app};"),
    case!("schema_create", "schema-create", "app", "warning", "GRANT CREATE ON SCHEMA app TO {app};"),
    case!("temp", "database-temp", "{db}", "info", "SELECT 1;"),
    case!(
        "partition_unprotected",
        "partition-unprotected",
        "app.events_2026",
        "error",
        "SET ROLE {owner}; \
         CREATE TABLE app.events (tenant_id uuid NOT NULL, id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at); \
         CREATE TABLE app.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
         ALTER TABLE app.events ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; \
         CREATE POLICY tenant_isolation ON app.events USING (tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)); \
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.events, app.events_2026 TO {app}; RESET ROLE;"
    ),
    case!(
        "matview",
        "matview-tenant-data",
        "app.doc_counts",
        "error",
        "CREATE MATERIALIZED VIEW app.doc_counts AS SELECT tenant_id, count(*) AS n FROM app.docs GROUP BY 1; GRANT SELECT ON app.doc_counts TO {app};"
    ),
    case!(
        "foreign_table",
        "foreign-table-readable",
        "app.remote_docs",
        "warning",
        "CREATE FOREIGN DATA WRAPPER probe_fdw; CREATE SERVER probe_srv FOREIGN DATA WRAPPER probe_fdw; \
         CREATE FOREIGN TABLE app.remote_docs (tenant_id uuid, title text) SERVER probe_srv; GRANT SELECT ON app.remote_docs TO {app};"
    ),
    case!("setting_default", "tenant-setting-default", "{app}", "error", "ALTER ROLE {app} SET app.tenant_id = '00000000-0000-4000-8000-000000000001';"),
    case!(
        "leakproof",
        "leakproof-function",
        "app.leaky(text)",
        "warning",
        "CREATE FUNCTION app.leaky(text) RETURNS boolean LANGUAGE plpgsql LEAKPROOF AS $$ BEGIN RAISE NOTICE '%', $1; RETURN true; END $$;"
    ),
    case!("publication", "publication-no-row-filter", "app.docs", "warning", "CREATE PUBLICATION docs_pub FOR TABLE app.docs;"),
    case!("large_objects", "large-objects", "{db}", "warning", "SELECT lo_create(0);"),
    case!(
        "cross_tenant_schemas",
        "schema-cross-tenant",
        "tenant_a",
        "warning",
        "CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b; GRANT USAGE ON SCHEMA tenant_a, tenant_b TO PUBLIC;"
    ),
    case!(
        "initplan",
        "policy-initplan",
        "app.docs",
        // Info: a performance trap, no isolation follows from it.
        "info",
        "DROP POLICY tenant_isolation ON app.docs; \
         CREATE POLICY p ON app.docs USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);"
    ),
    case!(
        "volatile_function",
        "policy-volatile-function",
        "app.docs",
        "warning",
        "CREATE FUNCTION app.ctx() RETURNS uuid LANGUAGE sql VOLATILE AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$; \
         DROP POLICY tenant_isolation ON app.docs; CREATE POLICY p ON app.docs USING (tenant_id = (SELECT app.ctx())) WITH CHECK (tenant_id = (SELECT app.ctx()));"
    ),
    // Info: a performance trap, no isolation follows from it.
    case!("not_indexed", "tenant-column-not-indexed", "app.docs", "info", "ALTER TABLE app.docs DROP CONSTRAINT docs_pkey, ADD PRIMARY KEY (id, tenant_id);"),
    // One finding per database (it lists the tables): the cause is the context design,
    // not any one table.
    case!("unsigned_context", "policy-unsigned-context", "{db}", "warning", "SELECT 1;"),
    case!("public_connect", "database-public-connect", "{db}", "info", "SELECT 1;"),
];

/// Looks a case up.
pub(crate) fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// Fills the placeholders.
pub(crate) fn fill(sql: &str, app: &str, owner: &str, db: &str) -> String {
    sql.replace("{ctx}", CTX)
        .replace("{app}", app)
        .replace("{owner}", owner)
        .replace("{db}", db)
}

/// SQL (as superuser) that creates the two roles if missing.
pub(crate) fn roles_sql(app: &str, owner: &str) -> String {
    format!(
        "DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app}') THEN CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{owner}') THEN CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOBYPASSRLS; END IF; \
         END $$;"
    )
}

/// Full setup SQL for a case (roles, base, case), run as superuser in database `db`.
pub(crate) fn setup_sql(case: &Case, app: &str, owner: &str, db: &str) -> String {
    format!(
        "{}\n{}\n{}",
        roles_sql(app, owner),
        fill(BASE, app, owner, db),
        fill(case.sql, app, owner, db)
    )
}
