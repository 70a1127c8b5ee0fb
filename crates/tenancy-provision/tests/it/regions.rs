//! Two regions on two private clusters: each tenant's storage is on its region's
//! cluster only, and a router restricted to one region refuses the other's tenants.

use std::time::Duration;

use tenancy_core::{Placement, TenantState};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};

use crate::support::*;

#[tokio::test]
async fn tenants_are_placed_and_routed_within_their_region_on_two_clusters() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let (us, us_db) = second_region_db().await;
    add_region(&catalog, "us-east", us, &us_db).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let workers = p.spawn_workers(2);
    let mut tenants = Vec::new();
    for (slug, region, placement) in [
        ("eu-pooled", "eu-west", Placement::Pooled),
        ("eu-schema", "eu-west", Placement::Schema),
        ("us-pooled", "us-east", Placement::Pooled),
        ("us-schema", "us-east", Placement::Schema),
        ("us-dedicated", "us-east", Placement::Dedicated),
    ] {
        let (t, _) = p
            .provision(&mut catalog, &request(slug, region, placement), "test")
            .await
            .expect("provision");
        tenants.push(t);
    }
    wait_all_final(&catalog, Duration::from_secs(30)).await;
    workers.stop().await;
    let eu_su = db.connect_superuser().await.expect("eu");
    let us_su = us.connect(&us_db).await.expect("us");
    let us_admin = us.connect("postgres").await.expect("us admin");
    let eu_admin = db.cluster.connect("postgres").await.expect("eu admin");
    let clusters = tenancy_catalog::list_clusters(&catalog)
        .await
        .expect("clusters");
    for t in &tenants {
        let t = tenancy_catalog::get_tenant(&catalog, t.id)
            .await
            .expect("tenant");
        assert_eq!(t.state, TenantState::Active);
        let cluster = clusters
            .iter()
            .find(|c| c.id == t.cluster_id)
            .expect("cluster");
        assert_eq!(cluster.region, t.region, "placed in its own region");
        let schema = tenancy_provision::storage::schema_name_for(t.id);
        let dbname = tenancy_provision::storage::database_name_for(t.id);
        let in_us = t.region.as_str() == "us-east";
        match t.placement {
            Placement::Schema => {
                assert_eq!(schema_exists(&us_su, &schema).await, in_us);
                assert_eq!(schema_exists(&eu_su, &schema).await, !in_us);
            }
            Placement::Dedicated => {
                assert!(database_exists(&us_admin, &dbname).await);
                assert!(!database_exists(&eu_admin, &dbname).await);
            }
            Placement::Pooled => {}
        }
    }
    // Data written through the router lands on the region's cluster.
    let open_all = router(&db);
    for t in &tenants {
        let mut tx = open_all.begin(t.id).await.expect("begin");
        tx.execute("INSERT INTO t00 (name) VALUES ($1)", &[&t.slug.as_str()])
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    let us_rows: i64 = us_su
        .query_one("SELECT count(*) FROM public.t00", &[])
        .await
        .expect("count")
        .get(0);
    let eu_rows: i64 = eu_su
        .query_one("SELECT count(*) FROM public.t00", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        (eu_rows, us_rows),
        (1, 1),
        "pooled rows stay in their region"
    );
    // A router allowed only eu-west refuses every us-east tenant.
    let eu_only = Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions {
            allowed_regions: Some(vec!["eu-west".parse().expect("region")]),
            ..Default::default()
        },
    )
    .expect("router");
    for t in &tenants {
        let r = eu_only.begin(t.id).await;
        if t.region.as_str() == "us-east" {
            assert!(
                matches!(r, Err(tenancy_sdk::Error::RegionMismatch { .. })),
                "{}",
                t.slug
            );
        } else {
            r.expect("eu tenant opens")
                .rollback()
                .await
                .expect("rollback");
        }
    }
    assert_no_orphans_in(
        &catalog,
        &[
            ("eu-west", &eu_admin, &eu_su),
            ("us-east", &us_admin, &us_su),
        ],
    )
    .await;
}
