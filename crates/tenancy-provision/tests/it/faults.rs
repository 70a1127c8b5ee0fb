//! Crashes and failures injected at every step of provisioning and deletion: after
//! restarts every tenant reaches a final state, nothing is orphaned, nothing is
//! registered twice. And a receiver that keeps failing rolls the provision back.

use std::time::{Duration, Instant};

use serde_json::json;
use tenancy_catalog::{WorkflowKind, WorkflowStatus};
use tenancy_core::{Placement, TenantState};
use tenancy_provision::{Fault, FaultPhase, Provisioner, Workers};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tokio_postgres::Client;

use crate::support::*;

const PROVISION_STEPS: [&str; 6] = [
    "placement",
    "storage",
    "seed_config",
    "register",
    "billing_link",
    "activate",
];

/// Runs workers until no workflow is unfinished, restarting them whenever an injected
/// crash killed them all. Returns how many restarts it took.
async fn supervise(p: &Provisioner, catalog: &Client, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut workers: Workers = p.spawn_workers(2);
    let mut restarts = 0;
    loop {
        let n = tenancy_catalog::unfinished_workflows(catalog)
            .await
            .expect("count");
        if n == 0 {
            workers.stop().await;
            return restarts;
        }
        if workers.alive() == 0 {
            workers.stop().await;
            workers = p.spawn_workers(2);
            restarts += 1;
        }
        if Instant::now() >= deadline {
            dump_workflows(catalog).await;
            panic!("{n} workflows unfinished after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn crashes_at_every_provision_and_deletion_step_resume_to_final_states() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let reg = WebhookReceiver::start().await;
    let p = provisioner(&db, config(vec![reg.as_receiver("crm")], vec![]));
    // Every step crashes twice (once before it starts, once after its effects but before
    // its commit) and fails once, in a burst of provisions across placements.
    for step in PROVISION_STEPS {
        p.faults()
            .inject(step, FaultPhase::BeforeStep, Fault::Crash, 1);
        p.faults()
            .inject(step, FaultPhase::AfterEffects, Fault::Crash, 2);
    }
    p.faults()
        .inject("storage", FaultPhase::BeforeStep, Fault::Crash, 2);
    let placements = [Placement::Pooled, Placement::Schema, Placement::Dedicated];
    let mut ids = Vec::new();
    for i in 0..9 {
        let (t, _) = p
            .provision(
                &mut catalog,
                &request(&format!("crash-{i}"), "eu-west", placements[i % 3]),
                "test",
            )
            .await
            .expect("provision");
        ids.push(t.id);
    }
    let restarts = supervise(&p, &catalog, Duration::from_secs(60)).await;
    assert!(
        restarts >= 6,
        "the injected crashes killed the workers ({restarts} restarts)"
    );
    let admin = db.cluster.connect("postgres").await.expect("admin");
    for id in &ids {
        let t = tenancy_catalog::get_tenant(&catalog, *id)
            .await
            .expect("tenant");
        assert_eq!(t.state, TenantState::Active, "{}", t.slug);
        // No duplicate registration: one catalog record, one distinct webhook id.
        assert_eq!(
            tenancy_catalog::registrations(&catalog, *id)
                .await
                .expect("regs")
                .len(),
            1
        );
        assert_eq!(reg.distinct("tenant.registration", *id), 1);
    }
    assert_no_orphans(&catalog, &admin).await;
    let steps: i64 = catalog
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.workflow_steps WHERE outcome = 'ok'",
            &[],
        )
        .await
        .expect("steps")
        .get(0);
    assert_eq!(steps, 9 * 6, "every step committed exactly once");

    // Deletion: soft delete then purge (retention 0), crashing at every step.
    for step in ["soft_delete", "check_hold", "drop_storage", "purged"] {
        p.faults()
            .inject(step, FaultPhase::BeforeStep, Fault::Crash, 1);
        p.faults()
            .inject(step, FaultPhase::AfterEffects, Fault::Crash, 1);
    }
    p.faults()
        .inject("drop_storage", FaultPhase::AfterEffects, Fault::Fail, 1);
    for id in &ids {
        p.enqueue(&mut catalog, *id, WorkflowKind::Delete, &json!({}), "test")
            .await
            .expect("delete");
    }
    supervise(&p, &catalog, Duration::from_secs(60)).await;
    // With retention 0 every soft-deleted tenant is due at once, so the workers' own purge
    // scheduler (it runs when workers start, and they restart after each crash) may have
    // enqueued some purges already; this call enqueues the rest. Each tenant gets exactly
    // one purge either way.
    p.schedule_purges(&mut catalog).await.expect("schedule");
    supervise(&p, &catalog, Duration::from_secs(60)).await;
    let purges: i64 = catalog
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.workflows WHERE kind = 'purge'",
            &[],
        )
        .await
        .expect("purges")
        .get(0);
    assert_eq!(purges, 9, "one purge per deleted tenant");
    for id in &ids {
        let t = tenancy_catalog::get_tenant(&catalog, *id)
            .await
            .expect("tenant");
        assert_eq!(t.state, TenantState::Deleted, "{}", t.slug);
        assert!(tenancy_catalog::registrations(&catalog, *id)
            .await
            .expect("regs")
            .is_empty());
    }
    assert_no_orphans(&catalog, &admin).await;
    let by_state = tenancy_catalog::count_tenants_by_state(&catalog)
        .await
        .expect("count");
    assert_eq!(by_state, vec![(TenantState::Deleted, 9)]);
}

#[tokio::test]
async fn a_registration_receiver_that_keeps_failing_rolls_the_provision_back() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let good = WebhookReceiver::start().await;
    let bad = WebhookReceiver::start().await;
    bad.fail.store(true, std::sync::atomic::Ordering::Relaxed);
    let events = WebhookReceiver::start().await;
    // "a-crm" registers first and succeeds; "b-billing" keeps failing.
    let p = provisioner(
        &db,
        config(
            vec![good.as_receiver("a-crm"), bad.as_receiver("b-billing")],
            vec![events.as_receiver("audit")],
        ),
    );
    let mut wfs = Vec::new();
    let mut ids = Vec::new();
    for (slug, placement) in [
        ("doomed-schema", Placement::Schema),
        ("doomed-dedicated", Placement::Dedicated),
    ] {
        let (t, wf) = p
            .provision(&mut catalog, &request(slug, "eu-west", placement), "test")
            .await
            .expect("provision");
        wfs.push(wf.id);
        ids.push(t.id);
    }
    // Crash in the middle of compensation too.
    p.faults()
        .inject("drop_storage", FaultPhase::AfterEffects, Fault::Crash, 1);
    p.faults()
        .inject("deregister", FaultPhase::AfterEffects, Fault::Crash, 1);
    supervise(&p, &catalog, Duration::from_secs(60)).await;
    // The workflows are final; messages compensation queued last may still be in the
    // outbox (regression: waiting here before starting a worker failed under load, with
    // one audit message due and no worker left to send it).
    let p2 = p.spawn_workers(1);
    wait_outbox_drained(&catalog, Duration::from_secs(30)).await;
    p2.stop().await;
    let admin = db.cluster.connect("postgres").await.expect("admin");
    for (wf, id) in wfs.iter().zip(&ids) {
        let wf = tenancy_catalog::get_workflow(&catalog, *wf)
            .await
            .expect("wf")
            .expect("exists");
        assert_eq!(wf.status, WorkflowStatus::Failed);
        let t = tenancy_catalog::get_tenant(&catalog, *id)
            .await
            .expect("tenant");
        assert_eq!(t.state, TenantState::Deleted);
        assert!(tenancy_catalog::registrations(&catalog, *id)
            .await
            .expect("regs")
            .is_empty());
        // The receiver that accepted the registration was told to undo it, once.
        assert_eq!(good.distinct("tenant.registration", *id), 1);
        assert_eq!(good.distinct("tenant.deregistration", *id), 1);
        assert_eq!(events.distinct("tenant.provisioning_failed", *id), 1);
        // The delivery log holds every failed attempt at the failing receiver.
        let log = tenancy_catalog::deliveries(&catalog, Some(*id), 100)
            .await
            .expect("log");
        let failed = log
            .iter()
            .filter(|d| d.receiver == "b-billing" && d.error.is_some())
            .count();
        assert_eq!(failed, 3, "max_attempts attempts at the failing receiver");
    }
    assert_no_orphans(&catalog, &admin).await;
}
