//! Creates every corpus case (plus the two correct schemas) in its own database on a
//! private cluster, prints one tab-separated line per case
//! (`case  rule  object  severity  runtime_role  url  schemas`), then `READY`, and keeps the
//! cluster running until stdin closes. Used by `scripts/compare-pgrls.sh`.

#[path = "../tests/it/corpus.rs"]
mod corpus;

use std::io::{BufRead, Write};

use tenancy_pg::{Cluster, ClusterOptions};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions::for_tests()).await?;
    let admin = cluster.connect("postgres").await?;
    let mut lines = Vec::new();
    for (i, case) in corpus::CASES.iter().enumerate() {
        let db = format!("case_{}", case.name);
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await?;
        let (app, owner) = (format!("c{i}_app"), format!("c{i}_own"));
        let c = cluster.connect(&db).await?;
        c.batch_execute(&corpus::setup_sql(case, &app, &owner, &db))
            .await?;
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{app}\t{}\tapp",
            case.name,
            case.rule,
            corpus::fill(case.object, &app, &owner, &db),
            case.severity,
            cluster.url_as(cluster.superuser(), &db)
        ));
    }
    // Correct schemas: the tutorial GUC schema and the tenancy-managed one.
    admin.batch_execute("CREATE DATABASE good_guc").await?;
    let c = cluster.connect("good_guc").await?;
    c.batch_execute(&format!(
        "{}\n{}",
        corpus::roles_sql("good_app", "good_own"),
        corpus::fill(corpus::BASE, "good_app", "good_own", "good_guc")
    ))
    .await?;
    lines.push(format!(
        "good_guc\t(none)\t-\t-\tgood_app\t{}\tapp",
        cluster.url_as(cluster.superuser(), "good_guc")
    ));
    admin.batch_execute("CREATE DATABASE good_tenancy").await?;
    let c = cluster.connect("good_tenancy").await?;
    c.batch_execute(include_str!("../../tenancy-sdk/sql/bootstrap.sql"))
        .await?;
    c.batch_execute(
        &include_str!("../../tenancy-sdk/sql/database.sql").replace(":dbname", "good_tenancy"),
    )
    .await?;
    c.batch_execute("SET ROLE tenancy_owner").await?;
    c.batch_execute(include_str!("../../tenancy-sdk/sql/runtime.sql"))
        .await?;
    c.batch_execute(&format!(
        "SELECT tenancy.install_context_key('k1', '{KEY_HEX}')"
    ))
    .await?;
    c.batch_execute(
        "CREATE TABLE public.docs (tenant_id uuid NOT NULL, id bigint NOT NULL, title text NOT NULL, PRIMARY KEY (tenant_id, id)); \
         SELECT tenancy.make_tenant_table('public.docs'); RESET ROLE;",
    )
    .await?;
    lines.push(format!(
        "good_tenancy\t(none)\t-\t-\ttenancy_app\t{}\tpublic",
        cluster.url_as(cluster.superuser(), "good_tenancy")
    ));
    let mut stdout = std::io::stdout();
    for l in &lines {
        writeln!(stdout, "{l}")?;
    }
    writeln!(stdout, "READY")?;
    stdout.flush()?;
    // Keep the cluster up until stdin closes.
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(admin);
    cluster.stop().await;
    Ok(())
}
