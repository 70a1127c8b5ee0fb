//! Catalog tests against a real private cluster (owner role, fresh database per test;
//! `runtime` attacks the catalog as the runtime role).

mod runtime;

use tenancy_catalog::{CatalogError, Migration, NewCluster, NewTenant};
use tenancy_core::{Placement, TenantState};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tokio_postgres::NoTls;

static TPL: TemplateDb = TemplateDb::new("catalog_tpl");

const BOOTSTRAP: &str = "DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_owner') THEN CREATE ROLE tenancy_owner LOGIN; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_app') THEN CREATE ROLE tenancy_app LOGIN NOINHERIT; END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_config_reader') THEN CREATE ROLE tenancy_config_reader LOGIN NOINHERIT; END IF;
END $$;";

pub(crate) async fn owner(db: &TestDb) -> tokio_postgres::Client {
    let (c, conn) = db
        .config_as("tenancy_owner")
        .connect(NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    c
}

pub(crate) async fn fresh() -> TestDb {
    let db = TPL
        .fresh(|cluster, name| async move {
            let su = cluster.connect(&name).await?;
            su.batch_execute(BOOTSTRAP).await?;
            Ok(())
        })
        .await
        .expect("db");
    // Database privileges are not copied from a template.
    let su = db.connect_superuser().await.expect("su");
    su.batch_execute(&format!(
        "GRANT CREATE ON DATABASE {} TO tenancy_owner",
        db.name
    ))
    .await
    .expect("grant");
    db
}

pub(crate) fn new_tenant(slug: &str, region: &str) -> NewTenant {
    NewTenant {
        id: None,
        slug: slug.parse().expect("slug"),
        display_name: slug.to_uppercase(),
        plan: "free".parse().expect("plan"),
        region: region.parse().expect("region"),
        placement: Placement::Pooled,
    }
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_a_changed_file() {
    let db = fresh().await;
    let mut c = owner(&db).await;
    assert_eq!(
        tenancy_catalog::migrate(&mut c).await.expect("first"),
        tenancy_catalog::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    );
    assert!(
        tenancy_catalog::migrate(&mut c)
            .await
            .expect("second")
            .is_empty(),
        "no-op the second time"
    );
    let changed = [Migration {
        version: 1,
        name: "0001_catalog",
        sql: "SELECT 1",
    }];
    match tenancy_catalog::migrate_for_tests(&mut c, &changed).await {
        Err(CatalogError::ChecksumMismatch { version: 1, .. }) => {}
        other => panic!("expected a checksum refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn tenants_are_placed_in_their_region_with_events_and_valid_transitions() {
    let db = fresh().await;
    let mut c = owner(&db).await;
    tenancy_catalog::migrate(&mut c).await.expect("migrate");
    tenancy_catalog::add_region(&c, &"eu-west".parse().expect("r"), "EU")
        .await
        .expect("region");
    for (name, cap) in [("pg-a", 1), ("pg-b", 5)] {
        tenancy_catalog::add_cluster(
            &c,
            &NewCluster {
                name: name.into(),
                region: "eu-west".parse().expect("r"),
                location: tenancy_catalog::ClusterLocation {
                    host: "/tmp".into(),
                    port: 5432,
                    dbname: "x".into(),
                },
                capacity: cap,
            },
        )
        .await
        .expect("cluster");
    }
    let t1 = tenancy_catalog::create_tenant(&mut c, &new_tenant("acme", "eu-west"), "test")
        .await
        .expect("t1");
    let t2 = tenancy_catalog::create_tenant(&mut c, &new_tenant("globex", "eu-west"), "test")
        .await
        .expect("t2");
    assert_ne!(
        t1.cluster_id, t2.cluster_id,
        "least-loaded placement spreads tenants"
    );
    assert_eq!(t1.state, TenantState::Provisioning);

    assert!(matches!(
        tenancy_catalog::create_tenant(&mut c, &new_tenant("acme", "eu-west"), "t").await,
        Err(CatalogError::SlugTaken(_))
    ));
    assert!(matches!(
        tenancy_catalog::create_tenant(&mut c, &new_tenant("initech", "us-east"), "t").await,
        Err(CatalogError::UnknownRegion(_))
    ));
    let bad_cluster = NewCluster {
        name: "Bad Name".into(),
        region: "eu-west".parse().expect("r"),
        location: tenancy_catalog::ClusterLocation {
            host: "/tmp".into(),
            port: 1,
            dbname: "x".into(),
        },
        capacity: 1,
    };
    assert!(matches!(
        tenancy_catalog::add_cluster(&c, &bad_cluster).await,
        Err(CatalogError::Invalid(_))
    ));

    tenancy_catalog::set_state(&mut c, t1.id, TenantState::Active, "test", "ready")
        .await
        .expect("activate");
    tenancy_catalog::set_state(&mut c, t1.id, TenantState::Active, "test", "again")
        .await
        .expect("idempotent");
    assert!(matches!(
        tenancy_catalog::set_state(&mut c, t2.id, TenantState::Suspended, "test", "x").await,
        Err(CatalogError::InvalidTransition { .. })
    ));
    let events = tenancy_catalog::tenant_events(&c, t1.id)
        .await
        .expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["created", "state_changed"],
        "the idempotent repeat records nothing"
    );

    // The event log is append-only, even for the owner.
    let err = c
        .execute("DELETE FROM tenancy_catalog.tenant_events", &[])
        .await
        .expect_err("append-only");
    assert!(err
        .as_db_error()
        .map(|d| d.message().contains("append-only"))
        .unwrap_or(false));
    let err = c
        .execute("UPDATE tenancy_catalog.tenant_events SET actor = 'x'", &[])
        .await
        .expect_err("append-only");
    assert!(err.as_db_error().is_some());

    // Capacity: pg-a (1) is full; more tenants go to pg-b until it is full too.
    for i in 0..4 {
        tenancy_catalog::create_tenant(&mut c, &new_tenant(&format!("t{i}x"), "eu-west"), "t")
            .await
            .expect("fits");
    }
    assert!(matches!(
        tenancy_catalog::create_tenant(&mut c, &new_tenant("overflow", "eu-west"), "t").await,
        Err(CatalogError::NoCapacity(_))
    ));
    let page = tenancy_catalog::list_tenants(&c, None, 3)
        .await
        .expect("page");
    assert_eq!(page.len(), 3);
    let next = tenancy_catalog::list_tenants(&c, Some(&page[2].slug), 100)
        .await
        .expect("next");
    assert_eq!(page.len() + next.len(), 6);
    assert!(tenancy_catalog::list_tenants(&c, None, 0).await.is_err());
}

/// A provisioning that failed for good (the tenant ends `deleted` with `failure` set) frees
/// its slug for the customer's next attempt; a tenant that was deleted after serving keeps
/// its slug, and so does every live one.
#[tokio::test]
async fn a_failed_provisioning_frees_its_slug_and_nothing_else_does() {
    let db = fresh().await;
    let mut c = owner(&db).await;
    tenancy_catalog::migrate(&mut c).await.expect("migrate");
    tenancy_catalog::add_region(&c, &"eu-west".parse().expect("r"), "EU")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &c,
        &NewCluster {
            name: "pg-a".into(),
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
    let create = |slug: &'static str| new_tenant(slug, "eu-west");
    let failed = tenancy_catalog::create_tenant(&mut c, &create("globex"), "t")
        .await
        .expect("globex");
    let gone = tenancy_catalog::create_tenant(&mut c, &create("initech"), "t")
        .await
        .expect("initech");
    tenancy_catalog::create_tenant(&mut c, &create("acme"), "t")
        .await
        .expect("acme");
    // What compensation leaves (mark_failed), and a tenant deleted after it served.
    c.execute(
        "UPDATE tenancy_catalog.tenants SET state = 'deleted', failure = 'storage step failed' WHERE id = $1",
        &[&failed.id.as_uuid()],
    )
    .await
    .expect("failed");
    c.execute(
        "UPDATE tenancy_catalog.tenants SET state = 'deleted' WHERE id = $1",
        &[&gone.id.as_uuid()],
    )
    .await
    .expect("deleted");

    let slug = |s: &str| s.parse::<tenancy_core::Slug>().expect("slug");
    assert!(!tenancy_catalog::slug_taken(&c, &slug("globex"))
        .await
        .expect("q"));
    assert!(tenancy_catalog::slug_taken(&c, &slug("initech"))
        .await
        .expect("q"));
    assert!(tenancy_catalog::slug_taken(&c, &slug("acme"))
        .await
        .expect("q"));
    // The failed tenant is still found by its slug while nobody else has it.
    assert_eq!(
        tenancy_catalog::get_tenant_by_slug(&c, &slug("globex"))
            .await
            .expect("by slug")
            .id,
        failed.id
    );
    for taken in ["initech", "acme"] {
        assert!(
            matches!(
                tenancy_catalog::create_tenant(&mut c, &create(taken), "t").await,
                Err(CatalogError::SlugTaken(_))
            ),
            "{taken} keeps its slug"
        );
    }

    let again = tenancy_catalog::create_tenant(&mut c, &create("globex"), "t")
        .await
        .expect("the customer's next attempt takes the freed slug");
    assert_ne!(again.id, failed.id);
    assert!(tenancy_catalog::slug_taken(&c, &slug("globex"))
        .await
        .expect("q"));
    assert!(matches!(
        tenancy_catalog::create_tenant(&mut c, &create("globex"), "t").await,
        Err(CatalogError::SlugTaken(_))
    ));
    assert_eq!(
        tenancy_catalog::get_tenant_by_slug(&c, &slug("globex"))
            .await
            .expect("by slug")
            .id,
        again.id,
        "the slug names the tenant holding it"
    );
    let routed: uuid::Uuid = c
        .query_one(
            "SELECT id FROM tenancy_catalog.tenant_route_by_slug('globex')",
            &[],
        )
        .await
        .expect("route")
        .get(0);
    assert_eq!(routed, again.id.as_uuid());

    // Paging by slug keeps both tenants named globex on one page, the failed one first.
    let first = tenancy_catalog::list_tenants(&c, None, 1)
        .await
        .expect("page 1");
    assert_eq!(
        first.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        vec!["acme"]
    );
    let second = tenancy_catalog::list_tenants(&c, Some(&slug("acme")), 1)
        .await
        .expect("page 2");
    assert_eq!(
        second.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![failed.id, again.id]
    );
    let third = tenancy_catalog::list_tenants(&c, Some(&slug("globex")), 10)
        .await
        .expect("page 3");
    assert_eq!(
        third.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![gone.id]
    );
}

/// Looking a tenant up by slug uses an index, whatever the tenant's state (the unique index
/// on slugs is partial).
#[tokio::test]
async fn slug_lookups_use_an_index() {
    let db = fresh().await;
    let mut c = owner(&db).await;
    tenancy_catalog::migrate(&mut c).await.expect("migrate");
    c.batch_execute("SET enable_seqscan = off")
        .await
        .expect("planner");
    for sql in [
        "EXPLAIN SELECT id FROM tenancy_catalog.tenants WHERE slug = 'acme'",
        "EXPLAIN SELECT id FROM tenancy_catalog.tenants WHERE slug > 'acme' ORDER BY slug LIMIT 10",
    ] {
        let plan: Vec<String> = c
            .query(sql, &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("tenants_slug_idx"), "{sql}:\n{plan}");
    }
}
