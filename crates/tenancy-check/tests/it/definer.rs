//! `security-definer-ignores-context`: what it reports, at which severity, and what it
//! leaves alone (functions that check the context, declared narrow lookups, tenancy's job
//! queue as installed).

use tenancy_check::{audit, Options, Report, Severity};

use crate::corpus::Case;
use crate::support::{audit_as, managed, with_case};

const RULE: &str = "security-definer-ignores-context";

fn severity_of(r: &Report, object: &str) -> Option<Severity> {
    r.findings
        .iter()
        .filter(|f| f.rule == RULE && f.object == object)
        .map(|f| f.severity)
        .max()
}

#[tokio::test]
async fn definer_functions_that_check_the_context_or_are_narrow_lookups_are_not_reported() {
    let case = Case {
        name: "definer_negatives",
        rule: RULE,
        object: "",
        severity: "",
        sql: "CREATE FUNCTION app.my_docs() RETURNS SETOF app.docs LANGUAGE sql SECURITY DEFINER AS \
                $$ SELECT * FROM app.docs WHERE tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) $$; \
              CREATE FUNCTION app.doc_by_key(k bigint) RETURNS SETOF app.docs LANGUAGE sql SECURITY DEFINER AS \
                $$ SELECT * FROM app.docs WHERE id = k $$; \
              COMMENT ON FUNCTION app.doc_by_key(bigint) IS 'tenancy:narrow-lookup: one document by the key its holder presents'; \
              CREATE FUNCTION app.doc_by_key2(k bigint) RETURNS SETOF app.docs LANGUAGE sql SECURITY DEFINER AS \
                $$ SELECT * FROM app.docs WHERE id = k $$; \
              COMMENT ON FUNCTION app.doc_by_key2(bigint) IS 'one document (not declared narrow)'; \
              SET ROLE {owner}; \
              CREATE FUNCTION app.bound_docs() RETURNS SETOF app.docs LANGUAGE sql SECURITY DEFINER AS \
                $$ SELECT * FROM app.docs $$; \
              RESET ROLE;",
    };
    let (db, app) = with_case(&case).await;
    let report = audit_as(&db, &app).await;
    assert_eq!(severity_of(&report, "app.my_docs()"), None, "{report:#?}");
    assert_eq!(
        severity_of(&report, "app.doc_by_key(k bigint)"),
        None,
        "{report:#?}"
    );
    // The same function without the declaration is reported.
    assert_eq!(
        severity_of(&report, "app.doc_by_key2(k bigint)"),
        Some(Severity::Error),
        "{report:#?}"
    );
    // Row-level security (forced, tenant policy only) still binds the owner: a warning.
    assert_eq!(
        severity_of(&report, "app.bound_docs()"),
        Some(Severity::Warning),
        "{report:#?}"
    );
    // One finding per function: the generic definer rule does not repeat it.
    assert!(
        report
            .find("security-definer-function", "app.doc_by_key2(k bigint)")
            .is_empty(),
        "{report:#?}"
    );
}

/// Runs tenancy-axum's job queue SQL as the owner in a managed database.
async fn managed_with_jobs() -> tenancy_pg::testing::TestDb {
    let db = managed().await;
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!(
        "SET ROLE tenancy_owner;\n{}\nRESET ROLE;",
        include_str!("../../../tenancy-jobs/sql/jobs.sql")
    ))
    .await
    .expect("job queue");
    db
}

#[tokio::test]
async fn job_queue_functions_are_not_reported_but_granting_them_to_the_runtime_role_is() {
    let db = managed_with_jobs().await;
    let c = db.connect_superuser().await.expect("superuser");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert!(!report.has_errors(), "{report:#?}");
    let claim = "tenancy.claim_job(p_queue text, p_lease_seconds integer)";
    let finish = "tenancy.finish_job(p_tenant uuid, p_id uuid, p_claim uuid, p_state text, p_error text, p_retry_seconds integer)";
    for f in &report.findings {
        assert!(
            f.object != claim && f.object != finish,
            "the queue's functions are the worker's alone: {f:?}"
        );
    }
    // Granted to the runtime role (as the queue once was), claiming hands out any
    // tenant's job: an error; finishing changes any tenant's job: a warning.
    c.batch_execute(
        "GRANT EXECUTE ON FUNCTION tenancy.claim_job(text, integer) TO tenancy_app; \
         GRANT EXECUTE ON FUNCTION tenancy.finish_job(uuid, uuid, uuid, text, text, integer) TO tenancy_app;",
    )
    .await
    .expect("grant");
    let report = audit(&c, &Options::default()).await.expect("audit");
    assert_eq!(
        severity_of(&report, claim),
        Some(Severity::Error),
        "{report:#?}"
    );
    assert_eq!(
        severity_of(&report, finish),
        Some(Severity::Warning),
        "{report:#?}"
    );
}
