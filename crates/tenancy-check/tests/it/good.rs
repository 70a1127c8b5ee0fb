//! Correct schemas: no error fires falsely.

use tenancy_check::{audit, Options, Severity};

use crate::corpus;
use crate::support::{
    audit_as, errors, managed, managed_both, managed_native, plain, unique_roles,
};

/// On both context implementations (the native one adds `tenancy.enter_read_only`, a
/// SECURITY DEFINER function the runtime role may execute), with the same findings.
#[tokio::test]
async fn tenancy_managed_schema_has_no_error() {
    let mut seen: Vec<Vec<(String, String)>> = Vec::new();
    for db in managed_both().await {
        let c = db.connect_superuser().await.expect("superuser");
        let report = audit(&c, &Options::default()).await.expect("audit");
        assert!(report.tenancy_managed);
        assert_eq!(report.runtime_role, "tenancy_app");
        assert_eq!(
            report.tenant_tables,
            vec!["public.comments".to_owned(), "public.docs".to_owned()]
        );
        assert!(
            errors(&report).is_empty(),
            "unexpected errors: {:#?}",
            errors(&report)
        );
        // tenancy's own definer functions and signed context are trusted.
        for f in &report.findings {
            assert_ne!(f.rule, "security-definer-function", "{f:?}");
            assert_ne!(f.rule, "policy-unsigned-context", "{f:?}");
            assert_ne!(f.rule, "policy-initplan", "{f:?}");
            assert!(
                f.severity != Severity::Warning || f.rule == "database-public-connect",
                "unexpected warning {f:?}"
            );
        }
        // Other databases of the cluster come and go with other tests.
        seen.push(
            report
                .findings
                .iter()
                .filter(|f| f.rule != "database-public-connect" || f.object == db.name)
                .map(|f| (f.rule.clone(), f.object.replace(&db.name, "<db>")))
                .collect(),
        );
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "the implementations differ: {seen:#?}"
    );
}

/// `tenancy.enter_read_only` is trusted by its name and comment, like `tenancy.enter`: the
/// same function under another name, or without the comment, is an ordinary definer
/// function the runtime role may execute.
#[tokio::test]
async fn only_tenancys_own_enter_read_only_is_trusted() {
    let Some(db) = managed_native().await else {
        return;
    };
    let c = db.connect_superuser().await.expect("superuser");
    let definer_findings = |r: &tenancy_check::Report| -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.rule == "security-definer-function")
            .map(|f| f.object.clone())
            .collect()
    };
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert!(definer_findings(&report).is_empty(), "{report:#?}");
    c.batch_execute("COMMENT ON FUNCTION tenancy.enter_read_only(text) IS NULL")
        .await
        .expect("uncomment");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert_eq!(
        definer_findings(&report),
        vec!["tenancy.enter_read_only(token text)".to_owned()]
    );
}

#[tokio::test]
async fn tutorial_guc_schema_has_no_error_but_an_unsigned_context_warning() {
    let db = plain().await;
    let (app, owner) = unique_roles("good");
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!(
        "{}\n{}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(corpus::BASE, &app, &owner, &db.name)
    ))
    .await
    .expect("setup");
    let report = audit_as(&db, &app).await;
    assert!(
        errors(&report).is_empty(),
        "unexpected errors: {:#?}",
        errors(&report)
    );
    // Reported once for the database, listing the table.
    let unsigned = report.find("policy-unsigned-context", &db.name);
    assert_eq!(unsigned.len(), 1, "{:#?}", report.findings);
    assert!(unsigned[0].message.contains("app.docs"), "{unsigned:?}");
    assert_eq!(report.tenant_tables, vec!["app.docs".to_owned()]);
}

#[tokio::test]
async fn restrictive_floor_downgrades_a_widened_permissive_policy() {
    let db = plain().await;
    let (app, owner) = unique_roles("floor");
    let c = db.connect_superuser().await.expect("superuser");
    let extra = format!(
        "DROP POLICY tenant_isolation ON app.docs; CREATE POLICY open ON app.docs USING (true) WITH CHECK (tenant_id = {ctx}); \
         CREATE POLICY floor ON app.docs AS RESTRICTIVE USING (tenant_id = {ctx}) WITH CHECK (tenant_id = {ctx});",
        ctx = corpus::CTX
    );
    c.batch_execute(&format!(
        "{}\n{}\n{extra}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(corpus::BASE, &app, &owner, &db.name)
    ))
    .await
    .expect("setup");
    let report = audit_as(&db, &app).await;
    let hits = report.find("policy-always-true", "app.docs");
    assert!(
        !hits.is_empty() && hits.iter().all(|f| f.severity == Severity::Warning),
        "{hits:#?}"
    );
}

#[tokio::test]
async fn global_tables_are_skipped_and_missing_role_is_an_error() {
    let db = plain().await;
    let (app, owner) = unique_roles("global");
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!("{}\nCREATE TABLE public.plans (tenant_id uuid, name text); GRANT SELECT ON public.plans TO {app};", corpus::roles_sql(&app, &owner))).await.expect("setup");
    let mut o = crate::support::opts(&app);
    assert!(!audit(&c, &o)
        .await
        .expect("audit")
        .find("rls-disabled", "public.plans")
        .is_empty());
    o.global_tables = vec!["public.plans".into()];
    assert!(audit(&c, &o)
        .await
        .expect("audit")
        .find("rls-disabled", "public.plans")
        .is_empty());
    o.runtime_role = Some("no_such_role_here".into());
    assert!(matches!(
        audit(&c, &o).await,
        Err(tenancy_check::CheckError::NoSuchRole(_))
    ));
}

/// Catalog tables are not tenant tables (no RLS rules apply to them), but one that holds
/// tenant rows and that the runtime role can read is an error: the tenants table itself
/// (it has no tenant column), one with the tenant column, one that only references the
/// tenants table, and column privileges as much as table privileges. A catalog table
/// without tenant rows, or one the runtime role cannot read, is not reported.
#[tokio::test]
async fn readable_catalog_tables_holding_tenant_rows_are_errors() {
    let db = managed().await;
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS tenancy_catalog AUTHORIZATION tenancy_owner;
         GRANT USAGE ON SCHEMA tenancy_catalog TO tenancy_app;
         CREATE TABLE tenancy_catalog.regions (id text PRIMARY KEY);
         CREATE TABLE tenancy_catalog.tenants (id uuid PRIMARY KEY, slug text, billing_customer text);
         CREATE TABLE tenancy_catalog.tenant_flags (tenant_id uuid NOT NULL, flag text NOT NULL, PRIMARY KEY (tenant_id, flag));
         CREATE TABLE tenancy_catalog.tenant_notes (tenant_id uuid NOT NULL, note text);
         CREATE TABLE tenancy_catalog.keys (key_id text PRIMARY KEY, owner uuid REFERENCES tenancy_catalog.tenants (id));
         CREATE TABLE public.tenant_mirror (owner uuid REFERENCES tenancy_catalog.tenants (id), name text);
         GRANT SELECT ON tenancy_catalog.regions, tenancy_catalog.tenant_flags, tenancy_catalog.keys, public.tenant_mirror TO tenancy_app;
         GRANT SELECT (id, slug) ON tenancy_catalog.tenants TO tenancy_app;",
    )
    .await
    .expect("catalog tables");
    let report = audit(&c, &Options::default()).await.expect("audit");
    let mut readable: Vec<(&str, Severity)> = report
        .findings
        .iter()
        .filter(|f| f.rule == "catalog-readable")
        .map(|f| (f.object.as_str(), f.severity))
        .collect();
    readable.sort_by_key(|(o, _)| *o);
    assert_eq!(
        readable,
        vec![
            ("public.tenant_mirror", Severity::Error),
            ("tenancy_catalog.keys", Severity::Error),
            ("tenancy_catalog.tenant_flags", Severity::Error),
            ("tenancy_catalog.tenants", Severity::Error),
        ],
        "{:#?}",
        report.findings
    );
    assert!(!report
        .tenant_tables
        .iter()
        .any(|t| t.starts_with("tenancy_catalog.")));
    // Once revoked, nothing is reported.
    c.batch_execute(
        "REVOKE ALL ON ALL TABLES IN SCHEMA tenancy_catalog FROM tenancy_app;
         REVOKE ALL ON public.tenant_mirror FROM tenancy_app;",
    )
    .await
    .expect("revoke");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert!(
        !report.findings.iter().any(|f| f.rule == "catalog-readable"),
        "{:#?}",
        report.findings
    );
}

/// The report says which signed-context implementation the database runs, in JSON and
/// in the text output's second line.
#[tokio::test]
async fn the_report_names_the_context_implementation() {
    let mut cases = vec![(managed().await, "plpgsql")];
    cases.extend(managed_native().await.map(|db| (db, "native")));
    cases.extend(
        crate::support::managed_extension()
            .await
            .map(|db| (db, "native")),
    );
    for (db, expected) in cases {
        let c = db.connect_superuser().await.expect("superuser");
        let report = audit(&c, &Options::default()).await.expect("audit");
        assert_eq!(
            report.context_impl.as_deref(),
            Some(expected),
            "{}",
            db.name
        );
        assert_eq!(tenancy_check::json_value(&report)["context_impl"], expected);
        let mut text = Vec::new();
        tenancy_check::render(&report, tenancy_check::Format::Text, false, &mut text)
            .expect("text");
        let text = String::from_utf8(text).expect("utf-8");
        assert_eq!(
            text.lines().nth(1),
            Some(format!("tenant context: {expected}").as_str()),
            "{text}"
        );
    }
    let db = plain().await;
    let c = db.connect_superuser().await.expect("superuser");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert_eq!(report.context_impl, None, "not tenancy-managed");
}

/// tenancy's PL/pgSQL context functions run as their owner without `SET search_path`:
/// trusted because every name in them is schema-qualified. The same function with one
/// operator left unqualified loses that trust and is reported like any definer without
/// its own search_path.
#[tokio::test]
async fn plpgsql_context_functions_are_trusted_only_while_fully_qualified() {
    let db = managed().await;
    let c = db.connect_superuser().await.expect("superuser");
    let row = c
        .query_one(
            "SELECT l.lanname::text, p.prosrc, p.proconfig IS NULL FROM pg_catalog.pg_proc p \
               JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
              WHERE p.oid = 'tenancy.enter(text)'::regprocedure",
            &[],
        )
        .await
        .expect("enter");
    assert_eq!(row.get::<_, String>(0), "plpgsql");
    assert!(row.get::<_, bool>(2), "tenancy.enter has no SET clause");
    let search_path_findings = |r: &tenancy_check::Report| -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.rule == "security-definer-search-path")
            .map(|f| f.object.clone())
            .collect()
    };
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert!(search_path_findings(&report).is_empty(), "{report:#?}");

    let body: String = row.get(1);
    let loose = body.replacen("OPERATOR(pg_catalog.<>) 7", "<> 7", 1);
    assert_ne!(loose, body, "the body has the expected comparison");
    c.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION tenancy.enter(token text) RETURNS uuid \
         LANGUAGE plpgsql VOLATILE SECURITY DEFINER AS $b${loose}$b$"
    ))
    .await
    .expect("replace enter");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert_eq!(
        search_path_findings(&report),
        vec!["tenancy.enter(token text)".to_owned()]
    );
}
