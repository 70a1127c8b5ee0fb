//! New tenants start at the fleet's version: a provisioning engine that loaded version 1
//! at start provisions at version 2 once `tenancy migrate` brought the fleet there.

use tenancy_core::Placement;
use tenancy_provision::AppMigration;

use crate::support::*;

#[tokio::test]
async fn a_control_plane_started_before_migrate_provisions_new_tenants_at_the_fleet_version() {
    let mut env = Env::new().await;
    // Loaded at start: version 1 only. Its first tenants warm the shared database and the
    // dedicated template at version 1 (what the engine remembers per process).
    let started_at_v1 = env.provisioner(v1());
    let placements = [
        ("old-pooled", Placement::Pooled),
        ("old-schema", Placement::Schema),
        ("old-dedicated", Placement::Dedicated),
    ];
    env.provision_with(&started_at_v1, &placements).await;

    // `tenancy migrate` brings the fleet to version 2 (recording the migrations, with
    // their texts, in the catalog's ledger).
    let mut v12: Vec<AppMigration> = v1();
    v12.push(v2());
    let summary = env.migrator(v12).run(&opts(), None).await.expect("migrate");
    assert!(summary.complete(), "{summary:?}");

    // The engine still holds version 1 in memory; new tenants start at version 2.
    let placements = [
        ("new-pooled", Placement::Pooled),
        ("new-schema", Placement::Schema),
        ("new-dedicated", Placement::Dedicated),
    ];
    let ids = env.provision_with(&started_at_v1, &placements).await;
    for (id, (slug, placement)) in ids.iter().zip(placements) {
        let tenant = tenancy_catalog::get_tenant(&env.catalog, *id)
            .await
            .expect("tenant");
        assert_eq!(tenant.state, tenancy_core::TenantState::Active, "{slug}");
        let (client, schema) = env.tenant_db(*id, placement).await;
        let schema = if placement == Placement::Pooled {
            "public".to_owned()
        } else {
            schema
        };
        assert_eq!(state_of(&client, &schema).await, (2, true), "{slug}");
        let target = if placement == Placement::Pooled {
            env.cluster_id
        } else {
            id.as_uuid()
        };
        assert_eq!(
            ledger_version(&env.catalog, target).await,
            Some(2),
            "{slug}"
        );
    }
    assert_eq!(
        env.migrator({
            let mut m = v1();
            m.push(v2());
            m
        })
        .plan(0)
        .await
        .expect("plan")
        .pending(),
        0,
        "nothing is behind the fleet"
    );
}

#[tokio::test]
async fn a_fleet_version_recorded_without_its_text_fails_the_provision_with_what_to_do() {
    let mut env = Env::new().await;
    let started_at_v1 = env.provisioner(v1());
    env.provision_with(&started_at_v1, &[("first", Placement::Schema)])
        .await;
    // A ledger row written before the catalog kept migration texts.
    env.catalog
        .execute(
            "INSERT INTO tenancy_catalog.app_migrations (version, name, checksum) VALUES (2, '0002_notes', $1)",
            &[&v2().checksum()],
        )
        .await
        .expect("record v2 without text");
    let p = started_at_v1;
    let req = tenancy_provision::ProvisionRequest {
        tenant: tenancy_catalog::NewTenant {
            id: None,
            slug: "second".parse().expect("slug"),
            display_name: "second".into(),
            plan: "free".parse().expect("plan"),
            region: "eu-west".parse().expect("region"),
            placement: Placement::Schema,
        },
        billing_customer: None,
        billing_subscription: None,
    };
    let (t, wf) = p
        .provision(&mut env.catalog, &req, "test")
        .await
        .expect("provision");
    let mut driver = connect(env.db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    let w = p
        .drive(&mut driver, wf.id, std::time::Duration::from_secs(60))
        .await
        .expect("drive");
    assert_ne!(w.status, tenancy_catalog::WorkflowStatus::Succeeded);
    let tenant = tenancy_catalog::get_tenant(&env.catalog, t.id)
        .await
        .expect("tenant");
    assert_ne!(
        tenant.state,
        tenancy_core::TenantState::Active,
        "never active behind the fleet"
    );
    let why = w.last_error.unwrap_or_default();
    assert!(
        why.contains("restart tenancy serve with app_migrations_dir holding version 2"),
        "says what to do: {why}"
    );
    // Doing that: a control plane with version 2 provisions and records its text; from
    // then on the one started at version 1 provisions at version 2 too.
    let mut v12 = v1();
    v12.push(v2());
    let restarted = env.provisioner(v12);
    env.provision_with(&restarted, &[("third", Placement::Schema)])
        .await;
    let ids = env
        .provision_with(&p, &[("fourth", Placement::Schema)])
        .await;
    let (client, schema) = env.tenant_db(ids[0], Placement::Schema).await;
    assert_eq!(state_of(&client, &schema).await, (2, true));
}
