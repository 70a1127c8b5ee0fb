use clap::Parser;

use crate::tenants::{run, TenantsArgs};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: TenantsArgs,
}

#[tokio::test]
async fn tenants_cli_creates_lists_shows_and_queues_lifecycle_workflows() {
    let db = tenancy_pg::testing::TemplateDb::new("cli_tpl");
    let _ = db; // the catalog below is a plain fresh database
    let cluster = tenancy_pg::testing::cluster().await.expect("cluster");
    let su = cluster.connect("postgres").await.expect("su");
    let name = format!("cli_{}", std::process::id());
    su.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .expect("drop");
    su.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("db");
    let dbsu = cluster.connect(&name).await.expect("su");
    tenancy_sdk::bootstrap::bootstrap_cluster(&dbsu)
        .await
        .expect("roles");
    tenancy_sdk::bootstrap::bootstrap_database(&dbsu, &name)
        .await
        .expect("db");
    let owner_cfg = cluster.config_as(tenancy_sdk::bootstrap::OWNER_ROLE, &name);
    let mut c = tenancy_pg::connect(&owner_cfg).await.expect("owner");
    let key = tenancy_sdk::ContextKey::from_hex("cli".parse().expect("kid"), &"cd".repeat(32))
        .expect("key");
    tenancy_sdk::bootstrap::install_runtime(&c, &key)
        .await
        .expect("runtime");
    tenancy_catalog::migrate(&mut c).await.expect("migrate");
    tenancy_catalog::add_region(&c, &"eu-west".parse().expect("r"), "EU")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &c,
        &tenancy_catalog::NewCluster {
            name: "pg".into(),
            region: "eu-west".parse().expect("r"),
            host: "/tmp".into(),
            port: 5432,
            dbname: "x".into(),
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let url = cluster.url_as(tenancy_sdk::bootstrap::OWNER_ROLE, &name);
    let go = |argv: &[&str]| {
        let mut full = vec!["tenants", "--database-url", &url];
        full.extend_from_slice(argv);
        Cli::parse_from(full).args
    };
    let out = run(go(&[
        "create",
        "acme",
        "--region",
        "eu-west",
        "--placement",
        "schema",
    ]))
    .await
    .expect("create");
    assert!(out.contains("tenant acme"), "{out}");
    assert!(run(go(&["list"]))
        .await
        .expect("list")
        .contains("acme\tprovisioning\tschema"));
    assert!(run(go(&["suspend", "acme", "--reason", "test"]))
        .await
        .expect("suspend")
        .contains("queued suspend"));
    assert!(run(go(&["resume", "acme"]))
        .await
        .expect("resume")
        .contains("queued resume"));
    assert!(run(go(&["delete", "acme"]))
        .await
        .expect("delete")
        .contains("queued delete"));
    let show = run(go(&["show", "acme"])).await.expect("show");
    assert_eq!(show.matches("workflow").count(), 4, "{show}");
    assert!(run(go(&["show", "nope-nope"])).await.is_err());
}
