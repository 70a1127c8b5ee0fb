//! Online moves against real clusters: every pair of placements with writers running
//! (nothing acknowledged is lost), a verification mismatch that undoes
//! the move, a region outside the residency policy refused before anything is copied,
//! and crashes at every step resumed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tenancy_catalog::{WorkflowKind, WorkflowStatus};
use tenancy_core::{Placement, TenantId};
use tenancy_provision::{Fault, FaultPhase, Provisioner};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tenancy_sdk::Router;
use tokio_postgres::Client;

use crate::support::*;

const MOVE_STEPS: [&str; 6] = [
    "residency",
    "prepare",
    "capture",
    "snapshot",
    "catch_up",
    "cutover",
];

/// Inserts `n` parent rows (t00) and one child (t01) per parent; returns their names.
async fn seed(router: &Router, tenant: TenantId, prefix: &str, n: usize) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut tx = router.begin(tenant).await.expect("begin");
    for i in 0..n {
        let name = format!("{prefix}-{i}");
        let id: i64 = tx
            .query_one(
                "INSERT INTO t00 (name, amount) VALUES ($1, 1.5) RETURNING id",
                &[&name],
            )
            .await
            .expect("parent")
            .get(0);
        tx.execute(
            "INSERT INTO t01 (name, parent_id) VALUES ($1, $2)",
            &[&format!("{name}-child"), &id],
        )
        .await
        .expect("child");
        names.insert(name);
    }
    tx.commit().await.expect("commit");
    names
}

/// The names in t00 of `tenant`, read through its own transaction.
async fn names(router: &Router, tenant: TenantId) -> BTreeSet<String> {
    let mut tx = router.begin(tenant).await.expect("begin");
    let rows = tx.query("SELECT name FROM t00", &[]).await.expect("rows");
    tx.rollback().await.expect("rollback");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Writers that insert (and now and then delete) rows of `tenant` until stopped,
/// retrying what fails; what they expect to find afterwards is every acknowledged
/// insert not acknowledged as deleted.
struct Writers {
    stop: Arc<AtomicBool>,
    expected: Arc<Mutex<BTreeSet<String>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(router: &Router, tenant: TenantId, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let expected: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut handles = Vec::new();
        for w in 0..n {
            let (router, stop, expected) = (router.clone(), stop.clone(), expected.clone());
            handles.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let delete = i % 5 == 4;
                    let res: Result<(), tenancy_sdk::Error> = async {
                        let mut tx = router.begin(tenant).await?;
                        tx.execute("INSERT INTO t00 (name) VALUES ($1)", &[&name])
                            .await?;
                        if delete {
                            tx.execute(
                                "DELETE FROM t00 WHERE name = $1",
                                &[&format!("w{w}-{}", i - 1)],
                            )
                            .await?;
                        }
                        tx.commit().await
                    }
                    .await;
                    if res.is_ok() {
                        let mut e = expected.lock().expect("lock");
                        e.insert(name);
                        if delete {
                            e.remove(&format!("w{w}-{}", i - 1));
                        }
                        i += 1;
                    } else {
                        // Not acknowledged: retried under a new name.
                        i += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        Writers {
            stop,
            expected,
            handles,
        }
    }

    async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.expect("writer");
        }
        let e = self.expected.lock().expect("lock").clone();
        e
    }
}

async fn enqueue_move(
    p: &Provisioner,
    catalog: &mut Client,
    tenant: TenantId,
    input: serde_json::Value,
) -> tenancy_catalog::Workflow {
    p.enqueue(catalog, tenant, WorkflowKind::Move, &input, "test")
        .await
        .expect("enqueue")
}

async fn move_to(
    p: &Provisioner,
    catalog: &mut Client,
    tenant: TenantId,
    input: serde_json::Value,
) -> tenancy_catalog::Workflow {
    let wf = enqueue_move(p, catalog, tenant, input).await;
    p.drive(catalog, wf.id, Duration::from_secs(120))
        .await
        .expect("drive")
}

async fn capture_schemas(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenancy_move_%'",
            &[],
        )
        .await
        .expect("schemas")
        .get(0)
}

/// Moves a tenant from `from` to `to` while two writers write to it and a neighbour's
/// rows sit in the same pooled tables; checks everything acknowledged is there.
async fn move_with_writers(from: Placement, to: Placement) {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let mover = provision_driven(&p, &mut catalog, "mover", from).await;
    let neighbour = provision_driven(&p, &mut catalog, "neighbour", Placement::Pooled).await;
    let mut expected = seed(&router, mover, "seed", 300).await;
    let theirs = seed(&router, neighbour, "theirs", 50).await;
    let writers = Writers::start(&router, mover, 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let wf = move_to(&p, &mut catalog, mover, json!({ "to": to.as_str() })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = writers.stop().await;
    if wf.status != WorkflowStatus::Succeeded {
        dump_workflows(&catalog).await;
    }
    assert_eq!(wf.status, WorkflowStatus::Succeeded, "{:?}", wf.last_error);
    assert!(!written.is_empty(), "the writers wrote during the move");
    expected.extend(written);
    let t = tenancy_catalog::get_tenant(&catalog, mover)
        .await
        .expect("tenant");
    assert_eq!(t.placement, to);
    assert_eq!(
        names(&router, mover).await,
        expected,
        "every acknowledged write is on the new placement"
    );
    assert_eq!(
        names(&router, neighbour).await,
        theirs,
        "the neighbour is untouched"
    );
    // A child per seeded parent came along, its foreign key intact.
    let mut tx = router.begin(mover).await.expect("begin");
    let children: i64 = tx
        .query_one(
            "SELECT count(*) FROM t01 c JOIN t00 p ON p.tenant_id = c.tenant_id AND p.id = c.parent_id",
            &[],
        )
        .await
        .expect("children")
        .get(0);
    assert_eq!(children, 300);
    // New rows get keys past the moved ones.
    tx.execute("INSERT INTO t00 (name) VALUES ('after')", &[])
        .await
        .expect("insert after the move");
    tx.commit().await.expect("commit");
    // The move is recorded with both regions, and the old copy is dropped once kept
    // long enough (zero here).
    let mv = catalog
        .query_one(
            "SELECT from_placement, to_placement, from_region, to_region, status FROM tenancy_catalog.tenant_moves WHERE workflow_id = $1",
            &[&wf.id],
        )
        .await
        .expect("move record");
    assert_eq!(mv.get::<_, String>(0), from.as_str());
    assert_eq!(mv.get::<_, String>(1), to.as_str());
    assert_eq!(mv.get::<_, String>(3), "eu-west");
    assert_eq!(mv.get::<_, String>(4), "switched");
    assert_eq!(p.drop_moved_sources().await.expect("drop"), 1);
    let su = db.cluster.connect(&db.name).await.expect("su");
    assert_eq!(capture_schemas(&su).await, 0, "the capture is gone");
    if from == Placement::Pooled {
        let left: i64 = su
            .query_one(
                "SELECT count(*) FROM t00 WHERE tenant_id = $1",
                &[&mover.as_uuid()],
            )
            .await
            .expect("old rows")
            .get(0);
        assert_eq!(left, 0, "the old pooled rows are dropped");
    }
    if let Placement::Dedicated = from {
        let admin = db.cluster.connect("postgres").await.expect("admin");
        assert!(
            !database_exists(
                &admin,
                &tenancy_provision::storage::database_name_for(mover)
            )
            .await
        );
    }
    assert_eq!(
        names(&router, neighbour).await,
        theirs,
        "the neighbour is still untouched"
    );
}

#[tokio::test]
async fn pooled_to_dedicated_with_writers_running_loses_nothing() {
    move_with_writers(Placement::Pooled, Placement::Dedicated).await;
}

#[tokio::test]
async fn dedicated_to_pooled_with_writers_running_loses_nothing() {
    move_with_writers(Placement::Dedicated, Placement::Pooled).await;
}

#[tokio::test]
async fn pooled_to_schema_and_schema_to_dedicated_lose_nothing() {
    move_with_writers(Placement::Pooled, Placement::Schema).await;
    move_with_writers(Placement::Schema, Placement::Dedicated).await;
}

#[tokio::test]
async fn dedicated_to_schema_and_schema_to_pooled_lose_nothing() {
    move_with_writers(Placement::Dedicated, Placement::Schema).await;
    move_with_writers(Placement::Schema, Placement::Pooled).await;
}

#[tokio::test]
async fn a_verification_mismatch_undoes_the_move_and_the_old_placement_keeps_serving() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let tenant = provision_driven(&p, &mut catalog, "tampered", Placement::Pooled).await;
    let expected = seed(&router, tenant, "row", 40).await;
    let wf = enqueue_move(&p, &mut catalog, tenant, json!({ "to": "dedicated" })).await;
    // Every step before the cutover.
    for _ in 0..5 {
        p.step_once(&mut catalog, Some(wf.id)).await.expect("step");
    }
    let db_name = tenancy_provision::storage::database_name_for(tenant);
    let target = db.cluster.connect(&db_name).await.expect("target");
    let changed = target
        .execute("UPDATE t00 SET name = 'tampered' WHERE name = 'row-7'", &[])
        .await
        .expect("tamper");
    assert_eq!(changed, 1);
    let wf = p
        .drive(&mut catalog, wf.id, Duration::from_secs(60))
        .await
        .expect("drive");
    assert_eq!(wf.status, WorkflowStatus::Failed);
    let err = wf.last_error.unwrap_or_default();
    assert!(
        err.contains("verification failed") && err.contains("t00"),
        "{err}"
    );
    drop(target);
    let t = tenancy_catalog::get_tenant(&catalog, tenant)
        .await
        .expect("tenant");
    assert_eq!(t.placement, Placement::Pooled);
    assert_eq!(
        names(&router, tenant).await,
        expected,
        "served from the old placement, nothing lost"
    );
    let admin = db.cluster.connect("postgres").await.expect("admin");
    assert!(
        !database_exists(&admin, &db_name).await,
        "the target is dropped"
    );
    let su = db.cluster.connect(&db.name).await.expect("su");
    assert_eq!(
        capture_schemas(&su).await,
        0,
        "the capture and its fence are gone"
    );
    // Writes go on in the old placement.
    let mut tx = router.begin(tenant).await.expect("begin");
    tx.execute("INSERT INTO t00 (name) VALUES ('still here')", &[])
        .await
        .expect("write after the undone move");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_region_outside_the_residency_policy_is_refused_before_anything_is_copied() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let (second, second_db) = second_region_db().await;
    add_region(&catalog, "us-east", second, &second_db).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let tenant = provision_driven(&p, &mut catalog, "resident", Placement::Pooled).await;
    let expected = seed(&router, tenant, "row", 20).await;
    let wf = move_to(
        &p,
        &mut catalog,
        tenant,
        json!({ "to": "dedicated", "region": "us-east" }),
    )
    .await;
    assert_eq!(wf.status, WorkflowStatus::Failed);
    let err = wf.last_error.unwrap_or_default();
    assert!(err.contains("residency"), "{err}");
    let steps = tenancy_catalog::workflow_steps(&catalog, wf.id)
        .await
        .expect("steps");
    assert!(
        steps
            .iter()
            .all(|s| s.step == "residency" || s.step == "roll_back"),
        "nothing past the residency check ran: {steps:?}"
    );
    let admin = second.connect("postgres").await.expect("admin");
    assert!(
        !database_exists(
            &admin,
            &tenancy_provision::storage::database_name_for(tenant)
        )
        .await
    );
    assert_eq!(names(&router, tenant).await, expected);
    // Allowed once the policy names the region: the move crosses regions.
    tenancy_catalog::set_residency(
        &catalog,
        tenant,
        Some(&[
            "eu-west".parse().expect("region"),
            "us-east".parse().expect("region"),
        ]),
    )
    .await
    .expect("residency");
    let wf = move_to(
        &p,
        &mut catalog,
        tenant,
        json!({ "to": "dedicated", "region": "us-east" }),
    )
    .await;
    assert_eq!(wf.status, WorkflowStatus::Succeeded, "{:?}", wf.last_error);
    let t = tenancy_catalog::get_tenant(&catalog, tenant)
        .await
        .expect("tenant");
    assert_eq!(
        (t.region.as_str(), t.placement),
        ("us-east", Placement::Dedicated)
    );
    assert_eq!(names(&router, tenant).await, expected);
    let mv = catalog
        .query_one(
            "SELECT from_region, to_region FROM tenancy_catalog.tenant_moves WHERE workflow_id = $1",
            &[&wf.id],
        )
        .await
        .expect("move");
    assert_eq!(
        (mv.get::<_, String>(0), mv.get::<_, String>(1)),
        ("eu-west".into(), "us-east".into())
    );
}

#[tokio::test]
async fn crashes_at_every_move_step_resume_and_lose_nothing() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let tenant = provision_driven(&p, &mut catalog, "crashy", Placement::Pooled).await;
    let mut expected = seed(&router, tenant, "row", 100).await;
    let writers = Writers::start(&router, tenant, 1);
    for step in MOVE_STEPS {
        p.faults()
            .inject(step, FaultPhase::BeforeStep, Fault::Crash, 1);
        p.faults()
            .inject(step, FaultPhase::AfterEffects, Fault::Crash, 1);
    }
    let wf = enqueue_move(&p, &mut catalog, tenant, json!({ "to": "dedicated" })).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut crashes = 0;
    let wf = loop {
        // A crash abandons the step's catalog transaction; the next "worker" resumes.
        match p.drive(&mut catalog, wf.id, Duration::from_secs(60)).await {
            Ok(w) if w.status.is_final() => break w,
            Ok(_) => {}
            Err(_) => {
                crashes += 1;
                catalog = connect(db.config_as(OWNER_ROLE)).await;
            }
        }
        assert!(Instant::now() < deadline, "the move did not finish");
    };
    let written = writers.stop().await;
    assert_eq!(crashes, 2 * MOVE_STEPS.len(), "every step crashed twice");
    assert_eq!(wf.status, WorkflowStatus::Succeeded, "{:?}", wf.last_error);
    expected.extend(written);
    let t = tenancy_catalog::get_tenant(&catalog, tenant)
        .await
        .expect("tenant");
    assert_eq!(t.placement, Placement::Dedicated);
    assert_eq!(names(&router, tenant).await, expected);
}

#[tokio::test]
async fn the_router_waits_out_a_cutover_and_gives_up_after_its_bound() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let tenant = provision_driven(&p, &mut catalog, "waiting", Placement::Pooled).await;
    let wf = enqueue_move(&p, &mut catalog, tenant, json!({ "to": "dedicated" })).await;
    // The residency step records the move; its cutover window is opened by hand.
    p.step_once(&mut catalog, Some(wf.id)).await.expect("step");
    tenancy_catalog::set_cutover(&catalog, wf.id, Some(Duration::from_millis(400)))
        .await
        .expect("open the window");
    let started = Instant::now();
    let mut tx = router
        .begin(tenant)
        .await
        .expect("opens once the window passed");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited {:?}",
        started.elapsed()
    );
    tx.query_one("SELECT 1", &[]).await.expect("query");
    tx.rollback().await.expect("rollback");
    // A window longer than the router waits: refused after its bound, not hung.
    let short = tenancy_sdk::Router::new(
        db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        key(),
        tenancy_sdk::ClusterCredentials {
            user: tenancy_sdk::bootstrap::RUNTIME_ROLE.into(),
            password: None,
        },
        tenancy_sdk::RouterOptions {
            cache_ttl: Duration::ZERO,
            cutover_wait: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .expect("router");
    tenancy_catalog::set_cutover(&catalog, wf.id, Some(Duration::from_secs(30)))
        .await
        .expect("open the window");
    let started = Instant::now();
    let err = short.begin(tenant).await.expect_err("refused");
    assert!(matches!(err, tenancy_sdk::Error::Cutover { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    tenancy_catalog::set_cutover(&catalog, wf.id, None)
        .await
        .expect("close the window");
    short
        .begin(tenant)
        .await
        .expect("opens again")
        .rollback()
        .await
        .expect("rollback");
}

/// Connections of the runtime role to database `name`.
async fn runtime_connections(client: &Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            &[&name, &tenancy_sdk::bootstrap::RUNTIME_ROLE],
        )
        .await
        .expect("count connections")
        .get(0)
}

#[tokio::test]
async fn a_listening_router_connects_to_an_announced_target_and_wakes_on_the_switch() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let p = provisioner(&db, config(vec![], vec![]));
    let router = router(&db);
    let listener = router
        .listen_for_changes(db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE))
        .await
        .expect("listen");
    let tenant = provision_driven(&p, &mut catalog, "warmed", Placement::Pooled).await;
    let wf = enqueue_move(&p, &mut catalog, tenant, json!({ "to": "dedicated" })).await;
    // residency (records the move), prepare (creates the target database).
    for _ in 0..2 {
        p.step_once(&mut catalog, Some(wf.id)).await.expect("step");
    }
    let mv = tenancy_catalog::get_move(&catalog, wf.id)
        .await
        .expect("move")
        .expect("recorded");
    let target = mv.to.database.clone().expect("a dedicated target");
    assert_eq!(runtime_connections(&catalog, &target).await, 0);
    // Announced: the router opens connections to the target before any transaction
    // of the tenant goes there.
    tenancy_catalog::announce_move_target(&catalog, wf.id)
        .await
        .expect("announce");
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime_connections(&catalog, &target).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no connection to the announced target"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A window far longer than the test: the opening returns once it is closed (the
    // notification or the router's poll), not at its deadline.
    tenancy_catalog::set_cutover(&catalog, wf.id, Some(Duration::from_secs(4)))
        .await
        .expect("open the window");
    let waiting = {
        let router = router.clone();
        tokio::spawn(async move {
            let mut tx = router.begin(tenant).await?;
            tx.query_one("SELECT 1", &[]).await?;
            tx.rollback().await?;
            Ok::<Instant, tenancy_sdk::Error>(Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the opening waits out the window");
    let closed = Instant::now();
    tenancy_catalog::set_cutover(&catalog, wf.id, None)
        .await
        .expect("close the window");
    let opened = waiting.await.expect("join").expect("opens");
    assert!(
        opened.duration_since(closed) < Duration::from_secs(1),
        "opened {:?} after the window closed",
        opened.duration_since(closed)
    );
    listener.abort();
}
