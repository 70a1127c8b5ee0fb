//! Server logs. With `log_statement` or `log_min_duration_statement` on, PostgreSQL logs
//! every statement's bound parameters, and `tenancy.enter`'s parameter is a live context
//! token. The bootstrap (run by a superuser, as for every cluster the tests start) stores
//! `log_parameter_max_length = 0` for the runtime role, which that role cannot undo.

use tenancy_sdk::TenantId;

use crate::support::*;

const LOG_FILE: &str = "tenancy-postgres.log";

#[tokio::test]
async fn statement_logs_show_the_openings_but_never_a_context_token() {
    for (imp, db) in fresh_dbs().await {
        let su = db.connect_superuser().await.expect("superuser");
        // Only this database's runtime sessions log their statements.
        su.batch_execute(&format!(
            "ALTER ROLE tenancy_app IN DATABASE {} SET log_statement = 'all'",
            db.name
        ))
        .await
        .expect("statement logging for this database");

        let pool = pool(&db, 1);
        let tenant = TenantId::new_random();
        seed(&pool, tenant, 2).await;
        assert_eq!(
            visible_tenants(&pool, tenant).await,
            vec![tenant.as_uuid(); 2]
        );

        let log = std::fs::read_to_string(db.cluster.data_dir().join(LOG_FILE))
            .expect("the cluster's log file");
        assert!(
            log.contains("SELECT tenancy.enter"),
            "{imp:?}: the openings are logged (statement logging is on), so the next assertion can fail"
        );
        let leaked: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("parameters:") && l.contains("'v1."))
            .collect();
        assert!(
            leaked.is_empty(),
            "{imp:?}: context tokens in the server log:\n{}",
            leaked.join("\n")
        );
    }
}

#[tokio::test]
async fn the_runtime_role_cannot_turn_parameter_logging_back_on() {
    let db = fresh_db().await;
    let app = runtime_client(&db).await;
    let shown: String = app
        .query_one("SHOW log_parameter_max_length", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "0", "the runtime role's stored default");
    for sql in [
        "SET log_parameter_max_length = -1",
        "SELECT set_config('log_parameter_max_length', '-1', false)",
        "ALTER ROLE CURRENT_USER SET log_parameter_max_length = -1",
        "ALTER ROLE CURRENT_USER RESET log_parameter_max_length",
    ] {
        let err = app
            .batch_execute(sql)
            .await
            .expect_err(&format!("runtime role ran {sql}"));
        let code = err.code().map(|c| c.code().to_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err:?}");
    }
    let again = runtime_client(&db).await;
    let shown: String = again
        .query_one("SHOW log_parameter_max_length", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(shown, "0", "a new session still has it");
}
