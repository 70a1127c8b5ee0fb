use tenancy_control::ControlConfig;

#[test]
fn example_config_loads_and_environment_overrides_it() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenancy.example.toml");
    let cfg = ControlConfig::load_with_env(Some(&path), &[]).expect("example config");
    assert_eq!(
        cfg.regions,
        vec!["eu-west".to_owned(), "us-east".to_owned()]
    );
    assert_eq!(cfg.workers, 4);
    // The example states the defaults of the public surface's limits, all on.
    let d = tenancy_control::LimitsConfig::default();
    let l = &cfg.limits;
    assert_eq!(
        (
            l.header_read_timeout_ms,
            l.body_timeout_ms,
            l.request_timeout_ms,
            l.max_connections
        ),
        (
            d.header_read_timeout_ms,
            d.body_timeout_ms,
            d.request_timeout_ms,
            d.max_connections
        )
    );
    assert_eq!(
        (l.signup, l.availability, l.public),
        (d.signup, d.availability, d.public)
    );
    assert!(
        l.header_read_timeout_ms > 0
            && l.signup.per_ip_per_minute > 0
            && l.signup.global_per_minute > 0
    );
    let s = tenancy_control::SignupConfig::default();
    assert_eq!(
        (
            cfg.signup.quota_window_secs,
            cfg.signup.max_signups,
            cfg.signup.max_signups_per_ip
        ),
        (s.quota_window_secs, s.max_signups, s.max_signups_per_ip)
    );
    assert!(s.max_signups > 0 && s.max_signups_per_ip > 0);
    let env = vec![
        ("TENANCY_WORKERS".to_owned(), "3".to_owned()),
        ("TENANCY_REGIONS".to_owned(), "ap-south".to_owned()),
    ];
    let cfg = ControlConfig::load_with_env(Some(&path), &env).expect("layered");
    assert_eq!((cfg.workers, cfg.regions), (3, vec!["ap-south".to_owned()]));
    let bad = vec![(
        "TENANCY_ADMIN_TOKEN_SHA256".to_owned(),
        "sha256:zz".to_owned(),
    )];
    assert!(ControlConfig::load_with_env(None, &bad).is_err());
    // A proxy header without the proxies it may come from is refused, as is a bad network.
    let dir = std::env::temp_dir().join(format!("tenancy-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (text, why) in [
        ("[limits]\nclient_ip_header = \"x-forwarded-for\"\n", "trusted_proxies"),
        ("[limits]\ntrusted_proxies = [\"10.0.0.0/40\"]\n", "not an address"),
        ("[limits.signup]\nper_ip_per_minute = 5\nper_ip_burst = 0\nglobal_per_minute = 0\nglobal_burst = 0\n", "burst"),
    ] {
        let p = dir.join("bad.toml");
        std::fs::write(&p, text).expect("write");
        let err = ControlConfig::load_with_env(Some(&p), &[]).expect_err(text);
        assert!(err.contains(why), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn server_example_config_declares_regions_and_clusters_and_bad_declarations_are_refused() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenancy.server.example.toml");
    let env = vec![
        ("TENANCY_OWNER_PASSWORD".to_owned(), "o-pw".to_owned()),
        ("TENANCY_RUNTIME_PASSWORD".to_owned(), "r-pw".to_owned()),
        ("TENANCY_CLUSTER_ADMIN_USER".to_owned(), "ops".to_owned()),
    ];
    let cfg = ControlConfig::load_with_env(Some(&path), &env).expect("server example");
    let endpoints: Vec<_> = cfg
        .clusters
        .iter()
        .map(|c| {
            let (host, port, db) = c.endpoint().expect("endpoint");
            format!("{} {} {host}:{port}/{db} {}", c.name, c.region, c.capacity)
        })
        .collect();
    assert_eq!(
        endpoints,
        vec![
            "pg-eu-1 eu-west pg-eu-1.internal:5432/tenancy 5000",
            "pg-us-1 us-east pg-us-1.internal:5432/tenancy 5000"
        ]
    );
    let poolers: Vec<_> = cfg
        .clusters
        .iter()
        .map(|c| c.pooler().expect("pooler"))
        .collect();
    assert_eq!(poolers, [Some(("pgbouncer-eu-1.internal", 6432)), None]);
    assert_eq!(cfg.region_names["eu-west"], "Europe (Ireland)");
    use secrecy::ExposeSecret;
    assert_eq!(
        cfg.owner_password.as_ref().map(|p| p.expose_secret()),
        Some("o-pw")
    );
    assert_eq!(
        cfg.runtime_password.as_ref().map(|p| p.expose_secret()),
        Some("r-pw")
    );
    assert_eq!(cfg.cluster_admin_user, "ops");

    // Table of bad declarations: each refused with a message naming what is wrong.
    let dir = std::env::temp_dir().join(format!("tenancy-clusters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let with_url = "database_url = \"host=h dbname=d user=tenancy_owner\"\n";
    for (body, says) in [
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\n",
            "only with database_url",
        ),
        (
            "[[clusters]]\nname = \"Pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\n",
            "name \"Pg\" is not allowed",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"EU WEST\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\n",
            "region",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 0\n",
            "capacity must be a positive",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\ndbname = \"d\"\ncapacity = 1\n",
            "host (or url) is required",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nurl = \"host=h dbname=d\"\nhost = \"h\"\ncapacity = 1\n",
            "either url or host/port/dbname",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nurl = \"host=h dbname=d user=x password=y\"\ncapacity = 1\n",
            "must not carry a user or password",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\n\
             [[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h2\"\ndbname = \"d\"\ncapacity = 1\n",
            "declared twice",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\nsize = 3\n",
            "unknown field",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\npooler_host = \"b\"\n",
            "give pooler_host and pooler_port together",
        ),
        (
            "[[clusters]]\nname = \"pg\"\nregion = \"eu-west\"\nhost = \"h\"\ndbname = \"d\"\ncapacity = 1\npooler_host = \"b\"\npooler_port = 0\n",
            "give pooler_host and pooler_port together",
        ),
        ("[region_names]\neu-west = \"\"\n", "display name"),
    ] {
        let file = dir.join("c.toml");
        let text = if says == "only with database_url" {
            body.to_owned()
        } else {
            format!("{with_url}{body}")
        };
        std::fs::write(&file, text).expect("write");
        let err = ControlConfig::load_with_env(Some(&file), &[])
            .expect_err(&format!("{body} must be refused"));
        assert!(err.contains(says), "{body}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds the control plane with `config`, then stops it.
async fn build_and_stop(config: ControlConfig) -> anyhow::Result<()> {
    let app = tenancy_control::build(config).await?;
    let stop = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let _ = stop.send(true);
    running.await.expect("join")
}

#[tokio::test]
async fn declared_regions_and_clusters_are_registered_at_start_idempotently_and_never_move_region()
{
    use tenancy_sdk::bootstrap::OWNER_ROLE;
    let (db, _state, _p) = crate::api::fresh_state_with(Default::default()).await;
    let cluster = |name: &str, region: &str, capacity: i32| tenancy_control::ClusterConfig {
        name: name.into(),
        region: region.parse().expect("region"),
        url: None,
        host: Some(db.cluster.socket_dir().display().to_string()),
        port: Some(db.cluster.port()),
        dbname: Some(db.name.clone()),
        capacity,
        pooler_host: None,
        pooler_port: None,
    };
    let config = |clusters: Vec<tenancy_control::ClusterConfig>, user: &str| ControlConfig {
        listen: "127.0.0.1:0".into(),
        database_url: Some(secrecy::SecretString::from(
            db.cluster.url_as(user, &db.name),
        )),
        context_key_id: "ctl".into(),
        context_key_hex: Some(secrecy::SecretString::from("ab".repeat(32))),
        cluster_admin_user: db.cluster.superuser().to_owned(),
        workers: 1,
        region_names: [("us-east".to_owned(), "US East".to_owned())].into(),
        clusters,
        ..ControlConfig::default()
    };
    let declared = vec![
        cluster("pg-eu", "eu-west", 7),
        cluster("pg-us", "us-east", 9),
    ];
    build_and_stop(config(declared.clone(), OWNER_ROLE))
        .await
        .expect("first start");
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let read = || async {
        owner
            .query(
                "SELECT c.id::text || ' ' || c.name || ' ' || c.region || ' ' || c.capacity || ' ' || r.display_name
                   FROM tenancy_catalog.clusters c JOIN tenancy_catalog.regions r ON r.id = c.region ORDER BY c.name",
                &[],
            )
            .await
            .expect("clusters")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let first = read().await;
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first[0].ends_with("pg-eu eu-west 7 Europe"), "{first:?}");
    assert!(first[1].ends_with("pg-us us-east 9 US East"), "{first:?}");
    // A second start changes nothing.
    build_and_stop(config(declared, OWNER_ROLE))
        .await
        .expect("second start");
    assert_eq!(read().await, first);
    // A cluster never moves to another region (its tenants are pinned there).
    let err = build_and_stop(config(vec![cluster("pg-eu", "us-east", 70)], OWNER_ROLE))
        .await
        .expect_err("moving a cluster");
    assert!(
        format!("{err:#}").contains("cannot move to another region"),
        "{err:#}"
    );
    assert_eq!(read().await, first, "a refused start changes nothing");
    // The catalog is the owner role's: another login is refused before anything is created.
    let err = build_and_stop(config(Vec::new(), db.cluster.superuser()))
        .await
        .expect_err("superuser catalog login");
    assert!(
        format!("{err:#}").contains("must log in as tenancy_owner"),
        "{err:#}"
    );
}
