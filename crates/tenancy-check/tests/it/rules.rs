//! One test per corpus case: the expected rule fires on the expected object with the
//! expected severity.

use crate::corpus::{self, fill};
use crate::support::{audit_as, sev, with_case};

async fn check(name: &str) {
    let case = corpus::case(name).expect("case exists");
    let (db, app) = with_case(case).await;
    let report = audit_as(&db, &app).await;
    let object = fill(case.object, &app, "", &db.name);
    let hits = report.find(case.rule, &object);
    assert!(
        hits.iter().any(|f| f.severity == sev(case.severity)),
        "case {name}: expected {} {} on {object}; got {:#?}",
        case.severity,
        case.rule,
        report
            .findings
            .iter()
            .map(|f| format!("{} {} {}", f.severity.as_str(), f.rule, f.object))
            .collect::<Vec<_>>()
    );
    for f in hits {
        assert!(
            !f.message.is_empty() && !f.fix.is_empty(),
            "finding without message or fix: {f:?}"
        );
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                check(stringify!($name)).await;
            }
        )*

        #[test]
        fn every_corpus_case_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for c in corpus::CASES {
                assert!(tested.contains(&c.name), "corpus case {} has no test", c.name);
            }
        }
    };
}

cases!(
    rls_disabled,
    rls_not_forced,
    rls_not_forced_owner,
    runtime_owner,
    member_of_owner,
    no_policy,
    using_true,
    one_equals_one,
    or_widened,
    fail_open,
    fail_open_in_function,
    no_tenant_column,
    other_role_widened,
    owner_only_widened,
    with_check_true,
    superuser,
    bypassrls,
    view_bypass,
    secdef_reads_tenant_table,
    secdef_other,
    secdef_writes_ignoring_context,
    secdef_claims_any_tenants_row,
    trigger_secdef,
    unique_without_tenant,
    fk_cross_tenant,
    nullable_tenant,
    tenant_column_updatable,
    truncate,
    references,
    trigger_privilege,
    schema_create,
    temp,
    partition_unprotected,
    matview,
    foreign_table,
    setting_default,
    leakproof,
    publication,
    large_objects,
    cross_tenant_schemas,
    initplan,
    volatile_function,
    not_indexed,
    unsigned_context,
    public_connect,
);

/// Every rule a finding can carry is listed in `RULES` (the SARIF output, `--explain` and
/// the documentation come from that list): each `Finding::new("<id>", …)` in the source
/// names a listed rule.
#[test]
fn every_rule_the_checker_emits_is_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut emitted = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("source");
            for (i, _) in text.match_indices("Finding::new(") {
                let rest = text[i + "Finding::new(".len()..].trim_start();
                if let Some(lit) = rest.strip_prefix('"') {
                    if let Some(end) = lit.find('"') {
                        emitted.push(lit[..end].to_owned());
                    }
                }
            }
        }
    }
    assert!(emitted.len() > 20, "found the findings: {emitted:?}");
    let missing: Vec<_> = emitted
        .iter()
        .filter(|id| tenancy_check::rule_info(id).is_none())
        .collect();
    assert!(missing.is_empty(), "emitted but not in RULES: {missing:?}");
}
