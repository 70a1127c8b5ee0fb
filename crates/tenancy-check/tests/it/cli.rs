//! `run`: exit codes and output formats.

use clap::Parser;
use serde_json::Value;
use tenancy_check::{run, CheckArgs};

use crate::corpus;
use crate::support::{plain, unique_roles, with_case};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: CheckArgs,
}

fn args(v: &[&str]) -> CheckArgs {
    let mut all = vec!["tenancy-check"];
    all.extend_from_slice(v);
    Cli::try_parse_from(all).expect("arguments parse").args
}

async fn run_to_string(a: &CheckArgs) -> (i32, String) {
    let mut out = Vec::new();
    let code = run(a, &mut out).await;
    (code, String::from_utf8(out).expect("utf-8"))
}

async fn good_db() -> (tenancy_pg::testing::TestDb, String) {
    let db = plain().await;
    let (app, owner) = unique_roles("cli");
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&format!(
        "{}\n{}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(corpus::BASE, &app, &owner, &db.name)
    ))
    .await
    .expect("setup");
    (db, app)
}

#[tokio::test]
async fn exit_0_on_a_correct_schema_with_probe_and_1_on_a_broken_one() {
    let (db, app) = good_db().await;
    let url = db.cluster.url_as("postgres", &db.name);
    let (code, text) = run_to_string(&args(&[
        "--database-url",
        &url,
        "--runtime-role",
        &app,
        "--probe",
    ]))
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("policy-unsigned-context"), "{text}");

    let (db, app) = with_case(corpus::case("using_true").expect("case")).await;
    let url = db.cluster.url_as("postgres", &db.name);
    let (code, text) = run_to_string(&args(&[
        "--database-url",
        &url,
        "--runtime-role",
        &app,
        "--format",
        "json",
    ]))
    .await;
    assert_eq!(code, 1, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let f = &v["findings"][0];
    for k in ["rule", "severity", "object", "message", "fix"] {
        assert!(f[k].is_string(), "{k} missing in {f}");
    }
    assert_eq!(f["severity"], "error");
    assert_eq!(v["runtime_role"], app.as_str());
    assert_eq!(v["database"], db.name.as_str());
    assert!(v["summary"]["errors"].as_u64().unwrap_or(0) >= 1);
}

#[tokio::test]
async fn exit_2_on_bad_url_unreachable_server_and_bad_key() {
    let (code, _) = run_to_string(&args(&["--database-url", "postgres://[bad"])).await;
    assert_eq!(code, 2);
    let (code, _) = run_to_string(&args(&[
        "--database-url",
        "host=/nonexistent/socket/dir port=1 user=x dbname=y",
    ]))
    .await;
    assert_eq!(code, 2);
    let (code, _) = run_to_string(&args(&[
        "--database-url",
        "host=127.0.0.1 port=1 user=x dbname=y connect_timeout=2",
    ]))
    .await;
    assert_eq!(code, 2);
    let (code, _) = run_to_string(&args(&[
        "--database-url",
        "host=127.0.0.1",
        "--context-key",
        "nocolon",
    ]))
    .await;
    assert_eq!(code, 2);
}

#[tokio::test]
async fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let (db, app) = with_case(corpus::case("view_bypass").expect("case")).await;
    let url = db.cluster.url_as("postgres", &db.name);
    let (code, text) = run_to_string(&args(&[
        "--database-url",
        &url,
        "--runtime-role",
        &app,
        "--format",
        "sarif",
    ]))
    .await;
    assert_eq!(code, 1);
    let doc: Value = serde_json::from_str(&text).expect("sarif is json");
    let schema: Value =
        serde_json::from_str(include_str!("../data/sarif-schema-2.1.0.json")).expect("schema");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errs: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(doc["version"], "2.1.0");
    assert_eq!(doc["runs"][0]["tool"]["driver"]["name"], "tenancy check");
    let results = doc["runs"][0]["results"].as_array().expect("results");
    assert!(results.iter().any(|r| r["ruleId"] == "view-bypasses-rls"
        && r["level"] == "error"
        && r["locations"][0]["logicalLocations"][0]["name"] == "app.all_docs"));
    // A deliberately broken document is rejected, so the validation is real.
    let mut bad = doc.clone();
    bad["runs"][0]["results"][0]["level"] = Value::from("fatal");
    assert!(!validator.is_valid(&bad));
}

#[tokio::test]
async fn junit_and_text_outputs() {
    let (db, app) = with_case(corpus::case("truncate").expect("case")).await;
    let url = db.cluster.url_as("postgres", &db.name);
    let (code, xml) = run_to_string(&args(&[
        "--database-url",
        &url,
        "--runtime-role",
        &app,
        "--format",
        "junit",
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains("<testsuite name=\"tenancy check\""));
    assert!(
        xml.contains("<testcase classname=\"privilege-truncate\" name=\"app.docs\">\n    <failure"),
        "{xml}"
    );
    assert!(xml.trim_end().ends_with("</testsuite>"));
    let (_, text) = run_to_string(&args(&["--database-url", &url, "--runtime-role", &app])).await;
    assert!(text.contains("\napp.docs\n"), "{text}");
    assert!(
        text.contains("privilege-truncate") && text.contains("fix: REVOKE TRUNCATE"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colours when not a terminal");
}

/// `tenancy check` over TLS: a `postgres://` URL with `sslmode=verify-full` and
/// `sslrootcert` reaches a server that only accepts TLS on TCP; the wrong CA cannot run.
#[tokio::test]
async fn audits_a_database_over_verify_full_tls() {
    let cluster = tenancy_pg::Cluster::start(tenancy_pg::ClusterOptions {
        tls: Some(tenancy_pg::ClusterTls::default()),
        ..tenancy_pg::ClusterOptions::for_tests()
    })
    .await
    .expect("TLS cluster");
    let (app, owner) = unique_roles("tls");
    let su = cluster.connect("postgres").await.expect("superuser");
    for sql in [
        "ALTER ROLE postgres PASSWORD 'check-tls'".to_owned(),
        "CREATE DATABASE check_tls".to_owned(),
    ] {
        su.batch_execute(&sql).await.expect("set-up");
    }
    let c = cluster.connect("check_tls").await.expect("superuser");
    c.batch_execute(&format!(
        "{}\n{}",
        corpus::roles_sql(&app, &owner),
        corpus::fill(corpus::BASE, &app, &owner, "check_tls")
    ))
    .await
    .expect("schema");
    let ca = cluster.tls_ca_file().expect("CA");
    let url = |root: &str| {
        format!(
            "postgres://postgres:check-tls@localhost:{}/check_tls?sslmode=verify-full&sslrootcert={root}",
            cluster.port()
        )
    };
    let (code, text) = run_to_string(&args(&[
        "--database-url",
        &url(&ca.display().to_string()),
        "--runtime-role",
        &app,
        "--probe",
    ]))
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("policy-unsigned-context"), "{text}");

    // Its own certificate is not a CA that signed the server's: cannot run.
    let (code, _) = run_to_string(&args(&[
        "--database-url",
        &url(&ca.with_file_name("server.crt").display().to_string()),
        "--runtime-role",
        &app,
    ]))
    .await;
    assert_eq!(code, 2);
}

/// `--tenant-column` takes several names (repeated or comma-separated), in order of
/// preference; an empty one is refused with exit code 2 before connecting.
#[tokio::test]
async fn several_tenant_columns_and_an_empty_one_is_refused() {
    let a = args(&[
        "--database-url",
        "postgres://nobody@localhost/none",
        "--tenant-column",
        "tenant_id,account_id",
        "--tenant-column",
        "org_id",
    ]);
    let o = a.options().expect("options");
    assert_eq!(o.tenant_columns, vec!["tenant_id", "account_id", "org_id"]);
    assert_eq!(
        args(&["--database-url", "x"])
            .options()
            .expect("options")
            .tenant_columns,
        vec!["tenant_id"]
    );
    let a = args(&[
        "--database-url",
        "postgres://nobody@localhost/none",
        "--tenant-column",
        " ",
    ]);
    assert!(matches!(
        a.options(),
        Err(tenancy_check::CheckError::BadOption(_))
    ));
    let (code, text) = run_to_string(&a).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.is_empty(), "{text}");
}
