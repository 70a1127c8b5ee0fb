//! The active probe on broken and correct schemas.

use tenancy_check::{parse_context_key, probe, Options, Severity};

use crate::corpus;
use crate::support::{
    managed, managed_both, managed_native, opts, plain, unique_roles, with_case, KEY_HEX,
};

fn probe_errors(found: &[tenancy_check::Finding]) -> Vec<String> {
    found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {}", f.rule, f.object, f.message))
        .collect()
}

/// Probe options with the test databases' context key (signed probes can run).
fn keyed() -> Options {
    Options {
        context_key: Some(parse_context_key(&format!("k1:{KEY_HEX}")).expect("key")),
        ..Options::default()
    }
}

#[tokio::test]
async fn probe_finds_cross_tenant_access_through_using_true() {
    let case = corpus::case("using_true").expect("case");
    let (db, app) = with_case(case).await;
    let c = db.connect_superuser().await.expect("superuser");
    // No policy names the setting, so the probe needs to be told.
    let found = probe(&c, &opts(&app)).await.expect("probe");
    assert_eq!(found[0].rule, "probe-skipped");
    let mut o = opts(&app);
    o.context_guc = Some("app.tenant_id".into());
    let found = probe(&c, &o).await.expect("probe");
    let rules: Vec<&str> = found.iter().map(|f| f.rule.as_str()).collect();
    assert!(rules.contains(&"probe-cross-tenant-select"), "{found:#?}");
    assert!(
        rules.contains(&"probe-foreign-insert") || rules.contains(&"probe-cross-tenant-update"),
        "{found:#?}"
    );
    // The session role is restored and nothing was kept.
    let who: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("who")
        .get(0);
    assert_eq!(who, "postgres");
    let n: i64 = c
        .query_one("SELECT count(*) FROM app.docs", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn probe_finds_rls_disabled_and_update_moves() {
    let case = corpus::case("rls_disabled").expect("case");
    let (db, app) = with_case(case).await;
    let c = db.connect_superuser().await.expect("superuser");
    let mut o = opts(&app);
    o.context_guc = Some("app.tenant_id".into());
    let found = probe(&c, &o).await.expect("probe");
    let rules: Vec<&str> = found.iter().map(|f| f.rule.as_str()).collect();
    for r in [
        "probe-cross-tenant-select",
        "probe-cross-tenant-update",
        "probe-cross-tenant-delete",
        "probe-foreign-insert",
        "probe-update-moves-row",
    ] {
        assert!(rules.contains(&r), "missing {r}: {found:#?}");
    }
}

#[tokio::test]
async fn probe_finds_existence_oracle() {
    let case = corpus::case("unique_without_tenant").expect("case");
    let (db, app) = with_case(case).await;
    let c = db.connect_superuser().await.expect("superuser");
    let found = probe(&c, &opts(&app)).await.expect("probe");
    assert!(
        found.iter().any(|f| f.rule == "probe-existence-oracle"),
        "{found:#?}"
    );
    assert!(probe_errors(&found).is_empty(), "{found:#?}");
}

#[tokio::test]
async fn probe_finds_nothing_on_the_tutorial_schema() {
    let db = plain().await;
    let (app, owner) = unique_roles("pgood");
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!(
        "{}\n{}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(corpus::BASE, &app, &owner, &db.name)
    ))
    .await
    .expect("setup");
    let found = probe(&c, &opts(&app)).await.expect("probe");
    assert!(found.is_empty(), "{found:#?}");
}

#[tokio::test]
async fn probe_finds_nothing_on_the_tenancy_managed_schema() {
    for db in managed_both().await {
        let c = db.connect_superuser().await.expect("superuser");
        let o = keyed();
        let found = probe(&c, &o).await.expect("probe");
        // comments.doc_id must reference an existing doc of the same tenant: the synthetic row
        // cannot satisfy that foreign key, so the table's write checks are skipped (info).
        assert!(probe_errors(&found).is_empty(), "{found:#?}");
        assert!(
            found
                .iter()
                .all(|f| f.rule == "probe-table-skipped" && f.object == "public.comments"),
            "{found:#?}"
        );
        // Without the key the probe is skipped with a warning.
        let found = probe(&c, &Options::default()).await.expect("probe");
        assert_eq!(
            found.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
            vec!["probe-skipped"]
        );
    }
}

#[tokio::test]
async fn probe_on_tenancy_managed_finds_a_widened_policy() {
    for db in managed_both().await {
        let c = db.connect_superuser().await.expect("superuser");
        c.batch_execute("SET ROLE tenancy_owner; CREATE POLICY everyone ON public.docs FOR SELECT USING (true); RESET ROLE;").await.expect("widen");
        let o = keyed();
        let found = probe(&c, &o).await.expect("probe");
        assert!(
            found
                .iter()
                .any(|f| f.rule == "probe-cross-tenant-select" && f.object == "public.docs"),
            "{found:#?}"
        );
    }
}

/// A context function that believes the setting (no binding check) lets injected
/// set_config switch tenants: the probe says so.
#[tokio::test]
async fn probe_finds_a_context_function_that_trusts_the_setting() {
    let db = managed().await;
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION tenancy.current_tenant_id() RETURNS uuid LANGUAGE sql STABLE \
           AS $$ SELECT left(nullif(current_setting('tenancy.ctx', true), ''), 36)::uuid $$",
    )
    .await
    .expect("weaken");
    let o = keyed();
    let found = probe(&c, &o).await.expect("probe");
    assert!(
        found
            .iter()
            .any(|f| f.rule == "probe-forged-context" && f.object == "public.docs"),
        "{found:#?}"
    );
}

/// Every context entry function the runtime role may call must refuse a forged token, and
/// a native one a replayed token. Here `tenancy.enter_read_only` (native only) is replaced
/// with a C function that ignores its token: the probe reports both.
#[tokio::test]
async fn probe_finds_an_entry_function_that_accepts_forged_and_replayed_tokens() {
    let Some(db) = managed_native().await else {
        return;
    };
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(
        "CREATE OR REPLACE FUNCTION tenancy.enter_read_only(token text) RETURNS uuid \
           LANGUAGE C VOLATILE SECURITY DEFINER AS 'tenancy_context', 'tenancy_current_tenant_id'",
    )
    .await
    .expect("weaken");
    let o = keyed();
    let found = probe(&c, &o).await.expect("probe");
    let on_functions: Vec<(&str, &str, Severity)> = found
        .iter()
        .filter(|f| f.object.starts_with("tenancy."))
        .map(|f| (f.rule.as_str(), f.object.as_str(), f.severity))
        .collect();
    assert_eq!(
        on_functions,
        vec![
            (
                "probe-forged-token-accepted",
                "tenancy.enter_read_only(text)",
                Severity::Error
            ),
            (
                "probe-replayed-token-accepted",
                "tenancy.enter_read_only(text)",
                Severity::Warning
            ),
        ],
        "{found:#?}"
    );
}

#[tokio::test]
async fn probe_refuses_to_run_as_a_bypassing_role() {
    let case = corpus::case("superuser").expect("case");
    let (db, app) = with_case(case).await;
    let c = db.connect_superuser().await.expect("superuser");
    let found = probe(&c, &opts(&app)).await.expect("probe");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, "probe-skipped");
}
