//! Every placement end to end, and the lifecycle workflows.

use std::time::Duration;

use serde_json::json;
use tenancy_catalog::{WorkflowKind, WorkflowStatus};
use tenancy_core::{Placement, TenantState};
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::support::*;

#[tokio::test]
async fn every_placement_reaches_active_and_is_routed_as_the_runtime_role() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let reg = WebhookReceiver::start().await;
    let events = WebhookReceiver::start().await;
    let p = provisioner(
        &db,
        config(
            vec![reg.as_receiver("crm")],
            vec![events.as_receiver("audit")],
        ),
    );
    let workers = p.spawn_workers(2);
    let mut tenants = Vec::new();
    for (slug, placement) in [
        ("pooled-a", Placement::Pooled),
        ("pooled-b", Placement::Pooled),
        ("schema-a", Placement::Schema),
        ("schema-b", Placement::Schema),
        ("dedicated-a", Placement::Dedicated),
    ] {
        let mut req = request(slug, "eu-west", placement);
        req.billing_customer = Some(format!("cus_{slug}"));
        let (t, wf) = p
            .provision(&mut catalog, &req, "test")
            .await
            .expect("provision");
        assert_eq!(t.state, TenantState::Provisioning);
        assert_eq!(wf.kind, WorkflowKind::Provision);
        tenants.push(t);
    }
    wait_all_final(&catalog, Duration::from_secs(30)).await;
    wait_outbox_drained(&catalog, Duration::from_secs(30)).await;

    let router = router(&db);
    for t in &tenants {
        let t = tenancy_catalog::get_tenant(&catalog, t.id)
            .await
            .expect("tenant");
        assert_eq!(t.state, TenantState::Active, "{}", t.slug);
        assert_eq!(
            t.billing_customer.as_deref(),
            Some(format!("cus_{}", t.slug).as_str())
        );
        let settings = tenancy_catalog::plan_settings(&catalog, t.id)
            .await
            .expect("settings");
        assert_eq!(settings.get("max_users"), Some(&json!(5)));
        // Exactly one registration per tenant, and one activation event.
        assert_eq!(reg.distinct("tenant.registration", t.id), 1);
        assert_eq!(events.distinct("tenant.activated", t.id), 1);
        // Data through the router, as tenancy_app, in the placement's storage.
        let mut tx = router.begin(t.id).await.expect("begin");
        tx.execute("INSERT INTO t00 (name) VALUES ($1)", &[&t.slug.as_str()])
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    assert_eq!(
        reg.bad_signatures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Each tenant sees only its own row, whatever its placement.
    for t in &tenants {
        let mut tx = router.begin(t.id).await.expect("begin");
        let rows = tx.query("SELECT name FROM t00", &[]).await.expect("select");
        tx.commit().await.expect("commit");
        let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(names, vec![t.slug.to_string()]);
    }
    // Schema tenants' tables are tenant tables (RLS forced), in their own schema.
    let schema = tenancy_provision::storage::schema_name_for(tenants[2].id);
    let forced: Vec<bool> = catalog
        .query(
            "SELECT relforcerowsecurity FROM pg_class WHERE relnamespace = $1::text::regnamespace AND relkind = 'r'",
            &[&schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(forced, vec![true; 4]);
    // The dedicated database refuses PUBLIC connections.
    let su = db.cluster.connect("postgres").await.expect("su");
    let dbname = tenancy_provision::storage::database_name_for(tenants[4].id);
    let public_connect: bool = su
        .query_one(
            "SELECT has_database_privilege('public', $1, 'CONNECT')",
            &[&dbname],
        )
        .await
        .expect("privilege")
        .get(0);
    assert!(!public_connect);
    workers.stop().await;
    assert_no_orphans(&catalog, &su).await;
}

#[tokio::test]
async fn lifecycle_suspend_resume_change_plan_delete_and_purge_respect_the_legal_hold() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let events = WebhookReceiver::start().await;
    let p = provisioner(&db, config(vec![], vec![events.as_receiver("audit")]));
    let mut ids = Vec::new();
    for (slug, placement) in [
        ("life-pooled", Placement::Pooled),
        ("life-schema", Placement::Schema),
        ("life-dedicated", Placement::Dedicated),
    ] {
        let (t, wf) = p
            .provision(&mut catalog, &request(slug, "eu-west", placement), "test")
            .await
            .expect("provision");
        let wf = p
            .drive(&mut catalog, wf.id, Duration::from_secs(20))
            .await
            .expect("drive");
        assert_eq!(wf.status, WorkflowStatus::Succeeded);
        ids.push(t.id);
    }
    let router = router(&db);
    let mut tx = router.begin(ids[0]).await.expect("begin");
    tx.execute("INSERT INTO t00 (name) VALUES ('row')", &[])
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    // An application's tenant table in a schema of its own is purged too.
    catalog
        .batch_execute(
            "CREATE SCHEMA app2; GRANT USAGE ON SCHEMA app2 TO tenancy_app;
             CREATE TABLE app2.notes (tenant_id uuid NOT NULL, id bigint GENERATED ALWAYS AS IDENTITY,
                                      body text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT tenancy.make_tenant_table('app2.notes');",
        )
        .await
        .expect("app schema");
    let mut tx = router.begin(ids[0]).await.expect("begin");
    tx.execute("INSERT INTO app2.notes (body) VALUES ('note')", &[])
        .await
        .expect("insert note");
    tx.commit().await.expect("commit");

    let run = |kind: WorkflowKind, input: serde_json::Value, i: usize| {
        let p = p.clone();
        let id = ids[i];
        let cfg = db.config_as(OWNER_ROLE);
        async move {
            let mut c = connect(cfg).await;
            let wf = p
                .enqueue(&mut c, id, kind, &input, "test")
                .await
                .expect("enqueue");
            p.drive(&mut c, wf.id, Duration::from_secs(20))
                .await
                .expect("drive")
        }
    };
    // Suspend: data refused; resume: data again.
    assert_eq!(
        run(WorkflowKind::Suspend, json!({"reason": "non-payment"}), 0)
            .await
            .status,
        WorkflowStatus::Succeeded
    );
    assert!(matches!(
        router.begin(ids[0]).await,
        Err(tenancy_sdk::Error::NotActive { .. })
    ));
    assert_eq!(
        run(WorkflowKind::Resume, json!({}), 0).await.status,
        WorkflowStatus::Succeeded
    );
    router
        .begin(ids[0])
        .await
        .expect("resumed")
        .rollback()
        .await
        .expect("rollback");
    // Change plan re-seeds the plan's settings.
    assert_eq!(
        run(WorkflowKind::ChangePlan, json!({"plan": "pro"}), 0)
            .await
            .status,
        WorkflowStatus::Succeeded
    );
    let t = tenancy_catalog::get_tenant(&catalog, ids[0])
        .await
        .expect("tenant");
    assert_eq!(t.plan.as_str(), "pro");
    let settings = tenancy_catalog::plan_settings(&catalog, ids[0])
        .await
        .expect("settings");
    assert_eq!(settings.get("sso"), Some(&json!(true)));
    // Resume of an active tenant is a no-op success; suspend of a deleted one is cancelled.
    assert_eq!(
        run(WorkflowKind::Resume, json!({}), 0).await.status,
        WorkflowStatus::Succeeded
    );

    // Legal hold on the schema tenant, then delete all three (retention 0).
    tenancy_catalog::set_legal_hold(&mut catalog, ids[1], true, "legal")
        .await
        .expect("hold");
    for i in 0..3 {
        assert_eq!(
            run(WorkflowKind::Delete, json!({}), i).await.status,
            WorkflowStatus::Succeeded
        );
    }
    let queued = p.schedule_purges(&mut catalog).await.expect("schedule");
    assert_eq!(queued, 2, "the held tenant is not scheduled");
    let workers = p.spawn_workers(1);
    wait_all_final(&catalog, Duration::from_secs(20)).await;
    let states: Vec<TenantState> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(
                tenancy_catalog::get_tenant(&catalog, *id)
                    .await
                    .expect("t")
                    .state,
            );
        }
        v
    };
    assert_eq!(
        states,
        vec![
            TenantState::Deleted,
            TenantState::Deleting,
            TenantState::Deleted
        ]
    );
    // The pooled tenant's rows are gone (checked as superuser, which bypasses RLS).
    let su = db.connect_superuser().await.expect("su");
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM public.t00 WHERE tenant_id = $1",
            &[&ids[0].as_uuid()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM app2.notes WHERE tenant_id = $1",
            &[&ids[0].as_uuid()],
        )
        .await
        .expect("count notes")
        .get(0);
    assert_eq!(n, 0, "the app schema's rows are purged too");
    // Even a purge queued by hand is cancelled while the hold is on.
    let wf = run(WorkflowKind::Purge, json!({}), 1).await;
    assert_eq!(wf.status, WorkflowStatus::Cancelled);
    assert!(wf.last_error.unwrap_or_default().contains("legal hold"));
    // Suspending a deleted tenant is refused, not half-done.
    assert_eq!(
        run(WorkflowKind::Suspend, json!({}), 0).await.status,
        WorkflowStatus::Cancelled
    );
    // Lifting the hold lets the scheduler purge it.
    tenancy_catalog::set_legal_hold(&mut catalog, ids[1], false, "legal")
        .await
        .expect("lift");
    assert_eq!(p.schedule_purges(&mut catalog).await.expect("schedule"), 1);
    wait_all_final(&catalog, Duration::from_secs(20)).await;
    wait_outbox_drained(&catalog, Duration::from_secs(30)).await;
    workers.stop().await;
    let t = tenancy_catalog::get_tenant(&catalog, ids[1])
        .await
        .expect("tenant");
    assert_eq!(t.state, TenantState::Deleted);
    let admin = db.cluster.connect("postgres").await.expect("admin");
    assert_no_orphans(&catalog, &admin).await;
    for id in &ids {
        assert_eq!(events.distinct("tenant.purged", *id), 1);
    }
    assert_eq!(events.distinct("tenant.suspended", ids[0]), 1);
}
