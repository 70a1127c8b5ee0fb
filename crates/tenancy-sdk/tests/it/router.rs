//! The router: catalog lookup, state and region checks.

use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Error, Router, RouterOptions, TenantId};

use crate::support::*;

#[tokio::test]
async fn router_opens_active_tenants_in_their_region_only() {
    let db = fresh_db().await;
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    for (r, name) in [("eu-west", "Europe"), ("us-east", "US East")] {
        tenancy_catalog::add_region(&owner, &r.parse().expect("region"), name)
            .await
            .expect("region");
        tenancy_catalog::add_cluster(
            &owner,
            &NewCluster {
                name: format!("pg-{r}"),
                region: r.parse().expect("region"),
                location: tenancy_catalog::ClusterLocation {
                    host: db.cluster.socket_dir().display().to_string(),
                    port: db.cluster.port(),
                    dbname: db.name.clone(),
                },
                capacity: 100,
            },
        )
        .await
        .expect("cluster");
    }
    let mut ids = Vec::new();
    for (slug, region) in [("acme", "eu-west"), ("globex", "us-east")] {
        let t = tenancy_catalog::create_tenant(
            &mut owner,
            &NewTenant {
                id: None,
                slug: slug.parse().expect("slug"),
                display_name: slug.to_uppercase(),
                plan: "pro".parse().expect("plan"),
                region: region.parse().expect("region"),
                placement: tenancy_core::Placement::Pooled,
            },
            "test",
        )
        .await
        .expect("tenant");
        ids.push(t.id);
    }
    let router = Router::new(
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

    // Still provisioning: refused.
    assert!(matches!(
        router.begin(ids[0]).await,
        Err(Error::NotActive { .. })
    ));
    for id in &ids {
        tenancy_catalog::set_state(
            &mut owner,
            *id,
            tenancy_core::TenantState::Active,
            "test",
            "ready",
        )
        .await
        .expect("activate");
        router.invalidate(*id);
    }
    let mut tx = router.begin(ids[0]).await.expect("eu tenant opens");
    tx.execute(
        "INSERT INTO customers (email, name) VALUES ('a@acme', 'A')",
        &[],
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");

    // A us-east tenant through a router allowed only eu-west: refused.
    match router.begin(ids[1]).await {
        Err(Error::RegionMismatch { tenant_region, .. }) => assert_eq!(tenant_region, "us-east"),
        other => panic!("expected a region refusal, got {other:?}"),
    }
    // The catalog itself refuses a tenant on a cluster of another region.
    let eu_cluster: uuid::Uuid = owner
        .query_one(
            "SELECT id FROM tenancy_catalog.clusters WHERE region = 'eu-west'",
            &[],
        )
        .await
        .expect("c")
        .get(0);
    let err = owner
        .execute(
            "UPDATE tenancy_catalog.tenants SET cluster_id = $1 WHERE id = $2",
            &[&eu_cluster, &ids[1].as_uuid()],
        )
        .await
        .expect_err("cross-region placement");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
    );

    // Suspended: refused after invalidation.
    tenancy_catalog::set_state(
        &mut owner,
        ids[0],
        tenancy_core::TenantState::Suspended,
        "test",
        "non-payment",
    )
    .await
    .expect("suspend");
    router.invalidate(ids[0]);
    assert!(matches!(
        router.begin(ids[0]).await,
        Err(Error::NotActive { .. })
    ));
    // Unknown tenant.
    assert!(matches!(
        router.begin(TenantId::new_random()).await,
        Err(Error::Catalog(
            tenancy_catalog::CatalogError::TenantNotFound(_)
        ))
    ));
}
