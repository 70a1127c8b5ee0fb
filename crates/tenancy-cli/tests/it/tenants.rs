//! `tenancy tenants …` against a real catalog: the binary, as operators run it.

/// Runs `tenancy tenants --database-url URL ARGV…`: its stdout when it exits 0, else its
/// exit code and stderr.
async fn tenants(url: &str, argv: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["tenants", "--database-url", url])
        .args(argv)
        .env_remove("DATABASE_URL")
        .output()
        .await
        .map_err(|e| format!("running tenancy tenants: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[tokio::test]
async fn tenants_cli_creates_lists_shows_and_queues_lifecycle_workflows() {
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
            location: tenancy_catalog::ClusterLocation {
                host: "/tmp".into(),
                port: 5432,
                dbname: "x".into(),
            },
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let url = cluster.url_as(tenancy_sdk::bootstrap::OWNER_ROLE, &name);
    let out = tenants(
        &url,
        &[
            "create",
            "acme",
            "--region",
            "eu-west",
            "--placement",
            "schema",
        ],
    )
    .await
    .expect("create");
    assert!(out.contains("tenant acme"), "{out}");
    assert!(tenants(&url, &["list"])
        .await
        .expect("list")
        .contains("acme\tprovisioning\tschema"));
    assert!(tenants(&url, &["suspend", "acme", "--reason", "test"])
        .await
        .expect("suspend")
        .contains("queued suspend"));
    assert!(tenants(&url, &["resume", "acme"])
        .await
        .expect("resume")
        .contains("queued resume"));
    assert!(tenants(&url, &["delete", "acme"])
        .await
        .expect("delete")
        .contains("queued delete"));
    let moved = tenants(
        &url,
        &["move", "acme", "--to", "dedicated", "--region", "eu-west"],
    )
    .await
    .expect("move");
    assert!(moved.contains("queued move"), "{moved}");
    let input: serde_json::Value = c
        .query_one(
            "SELECT input FROM tenancy_catalog.workflows WHERE kind = 'move'",
            &[],
        )
        .await
        .expect("move workflow")
        .get(0);
    assert_eq!(
        input,
        serde_json::json!({"to": "dedicated", "region": "eu-west"})
    );
    // A target that cannot be is refused before anything is queued.
    for bad in [
        &["move", "acme", "--to", "elsewhere"][..],
        &["move", "acme", "--to", "pooled", "--region", "Nowhere Land"][..],
    ] {
        let e = tenants(&url, bad).await.expect_err("refused");
        assert!(e.contains("checking the move"), "{e}");
    }
    let show = tenants(&url, &["show", "acme"]).await.expect("show");
    assert_eq!(show.matches("workflow").count(), 5, "{show}");
    let missing = tenants(&url, &["show", "nope-nope"])
        .await
        .expect_err("an unknown tenant is refused");
    assert!(missing.starts_with("Some(2)"), "{missing}");
}
