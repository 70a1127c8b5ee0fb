//! What the runtime role can store for itself to break every later session: defaults set
//! with `ALTER ROLE CURRENT_USER … SET` and a password set with `ALTER ROLE CURRENT_USER
//! PASSWORD`. Done as the role itself, the way injected SQL would.

use tenancy_check::Severity;

use crate::support::{audit_as, errors, plain, unique_roles};

/// A login role like an application's runtime role, in a fresh database, and a session
/// of it.
async fn runtime_session(
    tag: &str,
) -> (tenancy_pg::testing::TestDb, String, tokio_postgres::Client) {
    let db = plain().await;
    let (app, _) = unique_roles(tag);
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT; GRANT CONNECT ON DATABASE \"{}\" TO {app};",
        db.name
    ))
    .await
    .expect("runtime role");
    let client = tenancy_test_support::connect(db.config_as(&app)).await;
    (db, app, client)
}

#[tokio::test]
async fn runtime_role_defaults_it_stored_itself_are_reported() {
    let (db, app, attacker) = runtime_session("settings").await;
    let before = audit_as(&db, &app).await;
    assert!(
        !before
            .findings
            .iter()
            .any(|f| f.rule == "runtime-role-setting"),
        "nothing stored yet: {:#?}",
        before.findings
    );
    attacker
        .batch_execute(&format!(
            "ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET statement_timeout = '1ms';
             ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET default_transaction_read_only = on;
             ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET search_path = pg_catalog;
             ALTER ROLE CURRENT_USER IN DATABASE \"{db}\" SET enable_indexscan = off;",
            db = db.name
        ))
        .await
        .expect("a role may store its own defaults");
    let report = audit_as(&db, &app).await;
    for name in [
        "statement_timeout",
        "default_transaction_read_only",
        "search_path",
        "enable_indexscan",
    ] {
        let object = format!("{app} in {}: {name}", db.name);
        let hits = report.find("runtime-role-setting", &object);
        assert!(
            hits.iter().any(|f| f.severity == Severity::Warning
                && f.fix.contains("RESET")
                && f.message.contains("change its own defaults")),
            "{object}: {:#?}",
            report.findings
        );
    }
    assert!(errors(&report).is_empty(), "{:#?}", errors(&report));
}

#[tokio::test]
async fn a_password_the_runtime_role_set_itself_is_reported() {
    let (db, app, attacker) = runtime_session("password").await;
    // The test cluster accepts passwords over TCP (scram-sha-256): a role without one
    // could be given one.
    let before = audit_as(&db, &app).await;
    let hits = before.find("runtime-role-password", &app);
    assert!(
        hits.iter()
            .any(|f| f.severity == Severity::Info && f.message.contains("has no password")),
        "{:#?}",
        before.findings
    );
    attacker
        .batch_execute("ALTER ROLE CURRENT_USER PASSWORD 'known-to-the-attacker'")
        .await
        .expect("every role may change its own password");
    let report = audit_as(&db, &app).await;
    let hits = report.find("runtime-role-password", &app);
    assert!(
        hits.iter().any(|f| f.severity == Severity::Warning
            && f.message.contains("change its own password")
            && f.message.contains("cert")
            && f.message.contains("scram-sha-256")),
        "{:#?}",
        report.findings
    );
    assert!(
        report
            .find("runtime-role-no-connection-limit", &app)
            .iter()
            .any(|f| f.severity == Severity::Info),
        "{:#?}",
        report.findings
    );
    assert!(errors(&report).is_empty(), "{:#?}", errors(&report));
}
