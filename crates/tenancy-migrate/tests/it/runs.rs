//! Runs of `tenancy migrate` end to end.

use std::time::Duration;

use tenancy_core::Placement;
use tenancy_migrate::drift::Change;
use tenancy_migrate::{Error, Event, Options, Outcome, StopReason};
use tenancy_provision::AppMigration;

use crate::support::*;

fn v12() -> Vec<AppMigration> {
    let mut m = v1();
    m.push(v2());
    m
}

#[tokio::test]
async fn every_placement_is_migrated_then_a_noop_run_never_connects_and_new_tenants_start_at_latest(
) {
    let mut env = Env::new().await;
    let placements = [
        ("pooled-a", Placement::Pooled),
        ("schema-a", Placement::Schema),
        ("schema-b", Placement::Schema),
        ("dedicated-a", Placement::Dedicated),
    ];
    let ids = env.provision(v1(), &placements).await;
    // Provisioning wrote the ledger: every target at version 1.
    assert_eq!(ledger_version(&env.catalog, env.cluster_id).await, Some(1));
    for id in &ids[1..] {
        assert_eq!(ledger_version(&env.catalog, id.as_uuid()).await, Some(1));
    }

    let m = env.migrator(v12());
    let plan = m.plan(0).await.expect("plan");
    assert_eq!(
        plan.total_targets, 4,
        "pooled tables of the cluster, 2 schemas, 1 database"
    );
    assert_eq!(plan.pending(), 4);
    let summary = m.run(&opts(), None).await.expect("run");
    assert!(summary.complete(), "{summary:?}");
    assert_eq!(
        (summary.migrated, summary.failed, summary.skipped),
        (4, 0, 0)
    );
    for (id, (_, placement)) in ids.iter().zip(placements).skip(1) {
        let (client, schema) = env.tenant_db(*id, placement).await;
        assert_eq!(state_of(&client, &schema).await, (2, true), "{placement}");
    }
    let (shared, _) = env.tenant_db(ids[0], Placement::Pooled).await;
    assert_eq!(
        state_of(&shared, "public").await,
        (2, true),
        "pooled tables"
    );
    assert_eq!(ledger_version(&env.catalog, env.cluster_id).await, Some(2));

    // A no-op run answers from the catalog alone: with the cluster unreachable it
    // still succeeds, and skips everything.
    env.catalog
        .execute(
            "UPDATE tenancy_catalog.clusters SET host = '/nonexistent' WHERE id = $1",
            &[&env.cluster_id],
        )
        .await
        .expect("break cluster");
    let summary = m.run(&opts(), None).await.expect("no-op run");
    assert_eq!(
        (summary.skipped, summary.migrated, summary.targets),
        (4, 0, 4),
        "{summary:?}"
    );
    let host = env.db.cluster.socket_dir().display().to_string();
    env.catalog
        .execute(
            "UPDATE tenancy_catalog.clusters SET host = $2 WHERE id = $1",
            &[&env.cluster_id, &host],
        )
        .await
        .expect("restore cluster");

    // Provisioning with the new migrations starts a tenant at the latest version.
    let new = env
        .provision(v12(), &[("schema-new", Placement::Schema)])
        .await;
    let (client, schema) = env.tenant_db(new[0], Placement::Schema).await;
    assert_eq!(state_of(&client, &schema).await, (2, true));
    assert_eq!(
        ledger_version(&env.catalog, new[0].as_uuid()).await,
        Some(2)
    );
    assert_eq!(m.plan(0).await.expect("plan").pending(), 0);
    let status = tenancy_catalog::tenant_migration_status(&env.catalog, new[0])
        .await
        .expect("status")
        .expect("row");
    assert_eq!(status.version, 2);
}

#[tokio::test]
async fn a_failing_tenant_is_marked_and_the_others_migrate_and_max_failures_stops_the_run() {
    let mut env = Env::new().await;
    let tenants: Vec<(String, Placement)> = (0..6)
        .map(|i| (format!("tenant-{i}"), Placement::Schema))
        .collect();
    let refs: Vec<(&str, Placement)> = tenants.iter().map(|(s, p)| (s.as_str(), *p)).collect();
    let ids = env.provision(v1(), &refs).await;
    let su = env.db.connect_superuser().await.expect("su");
    // Tenant 2's schema already has the column: migration 2 fails there.
    let broken = tenancy_provision::storage::schema_name_for(ids[2]);
    su.batch_execute(&format!("ALTER TABLE {broken}.t01 ADD COLUMN notes int"))
        .await
        .expect("break tenant");

    let m = env.migrator(v12());
    let summary = m.run(&opts(), None).await.expect("run");
    assert_eq!((summary.migrated, summary.failed), (6, 1), "{summary:?}");
    assert!(summary.stopped.is_none());
    let failure = &summary.failures[0];
    assert_eq!(failure.target_id, ids[2].as_uuid());
    let Outcome::Failed(e) = &failure.outcome else {
        panic!("{failure:?}")
    };
    assert!(e.contains("notes") && e.contains("already exists"), "{e}");
    let status = tenancy_catalog::tenant_migration_status(&env.catalog, ids[2])
        .await
        .expect("status")
        .expect("row");
    assert_eq!((status.version, status.error_version), (1, Some(2)));
    assert!(status
        .error
        .as_deref()
        .unwrap_or("")
        .contains("already exists"));
    // Unchanged: still version 1, whole (the failed transaction rolled back).
    let (v, _) = state_of(&su, &broken).await;
    assert_eq!(v, 1);
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 2) {
        let schema = tenancy_provision::storage::schema_name_for(*id);
        assert_eq!(state_of(&su, &schema).await, (2, true), "tenant {i}");
    }

    // max_failures: a third migration that fails on every tenant stops after 2 failures.
    let mut ms = v12();
    ms.push(AppMigration {
        version: 3,
        name: "0003_bad".into(),
        sql: "ALTER TABLE no_such_table ADD COLUMN x int".into(),
    });
    let m3 = env.migrator(ms);
    let summary = m3
        .run(
            &Options {
                concurrency: 1,
                pipeline: 1,
                max_failures: 2,
                ..opts()
            },
            None,
        )
        .await
        .expect("run");
    assert_eq!(
        summary.stopped,
        Some(StopReason::MaxFailures(2)),
        "{summary:?}"
    );
    assert_eq!(summary.failed, 2);
    assert!(summary.not_run > 0, "{summary:?}");

    // Fixing the broken tenant and re-running finishes the job.
    su.batch_execute(&format!("ALTER TABLE {broken}.t01 DROP COLUMN notes"))
        .await
        .expect("fix tenant");
    let summary = m.run(&opts(), None).await.expect("rerun");
    assert!(summary.complete(), "{summary:?}");
    assert_eq!(summary.migrated, 1);
    assert_eq!(state_of(&su, &broken).await, (2, true));
}

#[tokio::test]
async fn a_run_killed_half_way_resumes_and_no_tenant_is_half_migrated() {
    let mut env = Env::new().await;
    let tenants: Vec<(String, Placement)> = (0..8)
        .map(|i| (format!("tenant-{i}"), Placement::Schema))
        .collect();
    let refs: Vec<(&str, Placement)> = tenants.iter().map(|(s, p)| (s.as_str(), *p)).collect();
    let ids = env.provision(v1(), &refs).await;
    // A migration of several statements, so a kill can land in the middle of one.
    let mut ms = v1();
    ms.push(AppMigration {
        version: 2,
        name: "0002_notes".into(),
        sql: "ALTER TABLE t01 ADD COLUMN notes text NOT NULL DEFAULT '';
              CREATE INDEX ON t01 (tenant_id, notes);
              SELECT pg_sleep(0.05);
              ALTER TABLE t00 ADD COLUMN flag boolean NOT NULL DEFAULT false"
            .into(),
    });
    let m = env.migrator(ms);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = {
        let m = m.clone();
        tokio::spawn(async move {
            m.run(
                &Options {
                    concurrency: 1,
                    pipeline: 2,
                    ..opts()
                },
                Some(tx),
            )
            .await
        })
    };
    // Kill the run (drop its future) after two targets are done.
    let mut done = 0;
    while let Some(ev) = rx.recv().await {
        if let Event::Target(_) = ev {
            done += 1;
            if done == 2 {
                run.abort();
                break;
            }
        }
    }
    let _ = run.await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let su = env.db.connect_superuser().await.expect("su");
    let mut at_2 = 0;
    for id in &ids {
        let schema = tenancy_provision::storage::schema_name_for(*id);
        let (v, notes) = state_of(&su, &schema).await;
        let flag: bool = su
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = ($1 || '.t00')::regclass AND attname = 'flag')",
                &[&schema],
            )
            .await
            .expect("flag")
            .get(0);
        // All or nothing: the marker, the first and the last statement agree.
        assert_eq!((notes, flag), (v == 2, v == 2), "{schema} half-migrated");
        // The ledger never claims more than the schema has.
        assert!(
            ledger_version(&env.catalog, id.as_uuid())
                .await
                .unwrap_or(0)
                <= v
        );
        if v == 2 {
            at_2 += 1;
        }
    }
    assert!(
        at_2 >= 2 && at_2 < ids.len(),
        "killed part-way: {at_2} of {} migrated",
        ids.len()
    );

    // Resume: everything reaches the latest version, the ledger catches up.
    let summary = m.run(&opts(), None).await.expect("resume");
    assert!(summary.complete(), "{summary:?}");
    assert_eq!(
        summary.migrated + summary.caught_up + summary.skipped,
        ids.len() + 1
    );
    for id in &ids {
        let schema = tenancy_provision::storage::schema_name_for(*id);
        assert_eq!(state_of(&su, &schema).await, (2, true));
        assert_eq!(ledger_version(&env.catalog, id.as_uuid()).await, Some(2));
    }
    assert_eq!(m.plan(0).await.expect("plan").pending(), 0);
}

#[tokio::test]
async fn a_changed_or_missing_applied_migration_is_refused_with_what_to_do() {
    let mut env = Env::new().await;
    env.provision(v1(), &[("schema-a", Placement::Schema)])
        .await;
    env.migrator(v12()).run(&opts(), None).await.expect("run");

    let mut changed = v12();
    changed[1].sql.push_str(", ADD COLUMN sneaky int");
    let err = env
        .migrator(changed)
        .run(&opts(), None)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            Error::ChecksumMismatch {
                version: 2,
                next: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("0002_notes.sql") && text.contains("new migration"),
        "{text}"
    );
    // Nothing was touched: the ledger is unchanged.
    let su = env.db.connect_superuser().await.expect("su");
    let n: i64 = su
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.app_migration_targets WHERE version <> 2",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);

    let err = env
        .migrator(v1())
        .run(&opts(), None)
        .await
        .expect_err("refused");
    assert!(
        matches!(err, Error::MissingFile { version: 2, .. }),
        "{err:?}"
    );

    // A migration that failed everywhere was never recorded, so it may still be fixed.
    let mut bad = v12();
    bad.push(AppMigration {
        version: 3,
        name: "0003_x".into(),
        sql: "SELEC 1".into(),
    });
    let s = env.migrator(bad).run(&opts(), None).await.expect("run");
    assert_eq!(s.failed, 2);
    let mut fixed = v12();
    fixed.push(AppMigration {
        version: 3,
        name: "0003_x".into(),
        sql: "SELECT 1".into(),
    });
    let s = env
        .migrator(fixed)
        .run(&opts(), None)
        .await
        .expect("fixed run");
    assert!(s.complete(), "{s:?}");
}

#[tokio::test]
async fn drift_is_reported_per_tenant_with_what_differs() {
    let mut env = Env::new().await;
    let ids = env
        .provision(
            v1(),
            &[
                ("schema-a", Placement::Schema),
                ("schema-b", Placement::Schema),
                ("dedicated-a", Placement::Dedicated),
            ],
        )
        .await;
    let m = env.migrator(v12());
    assert!(m.run(&opts(), None).await.expect("run").complete());
    let clean = m.check_drift().await.expect("drift");
    assert!(clean.drifted.is_empty(), "{:#?}", clean.drifted);
    assert_eq!(clean.checked, 4);

    let su = env.db.connect_superuser().await.expect("su");
    let b = tenancy_provision::storage::schema_name_for(ids[1]);
    su.batch_execute(&format!(
        "ALTER TABLE {b}.t00 ADD COLUMN hotfix int;
         DROP INDEX {b}.t01_tenant_id_name_idx;
         ALTER TABLE {b}.t01 ALTER COLUMN notes DROP NOT NULL;
         ALTER TABLE {b}.t00 NO FORCE ROW LEVEL SECURITY;"
    ))
    .await
    .expect("hand edit");
    let (ded, _) = env.tenant_db(ids[2], Placement::Dedicated).await;
    ded.batch_execute("DROP POLICY tenancy_tenant_isolation ON public.t01")
        .await
        .expect("drop policy");

    let report = m.check_drift().await.expect("drift");
    assert_eq!(report.drifted.len(), 2, "{:#?}", report.drifted);
    let schema_b = report
        .drifted
        .iter()
        .find(|d| d.target_id == ids[1].as_uuid())
        .expect("b drifted");
    let find = |o: &str| {
        schema_b
            .differences
            .iter()
            .find(|d| d.object == o)
            .map(|d| d.change.clone())
    };
    assert!(
        matches!(find("column t00.hotfix"), Some(Change::Added { .. })),
        "{schema_b:#?}"
    );
    assert!(
        matches!(
            find("index t01_tenant_id_name_idx"),
            Some(Change::Missing { .. })
        ),
        "{schema_b:#?}"
    );
    assert!(
        matches!(find("column t01.notes"), Some(Change::Changed { .. })),
        "{schema_b:#?}"
    );
    assert!(
        matches!(find("table t00"), Some(Change::Changed { .. })),
        "{schema_b:#?}"
    );
    assert_eq!(schema_b.differences.len(), 4, "{schema_b:#?}");
    let dedicated = report
        .drifted
        .iter()
        .find(|d| d.target_id == ids[2].as_uuid())
        .expect("dedicated drifted");
    assert_eq!(dedicated.differences.len(), 1);
    assert_eq!(
        dedicated.differences[0].object,
        "policy t01.tenancy_tenant_isolation"
    );
}

#[tokio::test]
async fn a_failing_canary_stops_the_run_before_the_rest() {
    let mut env = Env::new().await;
    let ids = env
        .provision(
            v1(),
            &[
                ("tenant-a", Placement::Schema),
                ("tenant-b", Placement::Schema),
                ("tenant-c", Placement::Schema),
            ],
        )
        .await;
    let m = env.migrator(v12());
    let plan = m.plan(1).await.expect("plan");
    assert_eq!(plan.waves.len(), 2);
    let canary = plan.waves[0].targets[0].target_id;
    let su = env.db.connect_superuser().await.expect("su");
    let id = ids
        .iter()
        .find(|i| i.as_uuid() == canary)
        .expect("canary is a tenant");
    let schema = tenancy_provision::storage::schema_name_for(*id);
    su.batch_execute(&format!("ALTER TABLE {schema}.t01 ADD COLUMN notes int"))
        .await
        .expect("break");
    let summary = m.execute(&plan, &opts(), None).await.expect("run");
    assert_eq!(summary.stopped, Some(StopReason::CanaryFailed));
    assert_eq!(
        (summary.failed, summary.migrated, summary.not_run),
        (1, 0, 3),
        "{summary:?}"
    );
}

#[tokio::test]
async fn an_interrupted_run_finishes_the_targets_in_flight_and_records_them() {
    let mut env = Env::new().await;
    let placements: Vec<(String, Placement)> = (0..6)
        .map(|i| (format!("int-{i}"), Placement::Schema))
        .collect();
    let refs: Vec<(&str, Placement)> = placements.iter().map(|(s, p)| (s.as_str(), *p)).collect();
    env.provision(v1(), &refs).await;
    // Each target takes a while, one at a time: the interrupt comes with targets left.
    let mut slow = v2();
    slow.sql.push_str(";\nSELECT pg_sleep(0.3)");
    let mut ms = v1();
    ms.push(slow);
    let m = env.migrator(ms);
    let plan = m.plan(0).await.expect("plan");
    let pending = plan.pending();
    assert!(pending >= 6, "{pending}");
    let one_at_a_time = Options {
        concurrency: 1,
        pipeline: 1,
        ..opts()
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (first_done, interrupt) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut first_done = Some(first_done);
        let mut stopped = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Target(_) => {
                    if let Some(f) = first_done.take() {
                        let _ = f.send(());
                    }
                }
                Event::Stopped(r) => stopped.push(r),
                Event::Wave { .. } => {}
            }
        }
        stopped
    });
    let summary = m
        .execute_until(&plan, &one_at_a_time, Some(tx), async {
            let _ = interrupt.await;
        })
        .await
        .expect("run");
    let stopped_events = watcher.await.expect("events");
    assert_eq!(
        summary.stopped,
        Some(StopReason::Interrupted),
        "{summary:?}"
    );
    assert_eq!(stopped_events, vec![StopReason::Interrupted]);
    assert!(!summary.complete());
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert!(
        summary.migrated >= 1 && summary.not_run >= 1,
        "interrupted after the first target: {summary:?}"
    );
    assert_eq!(summary.migrated + summary.not_run, pending, "{summary:?}");
    // Every target that ran is in the ledger, so the next plan is exactly what is left.
    let next = m.plan(0).await.expect("plan");
    assert_eq!(next.pending(), summary.not_run, "{summary:?}");
    let rest = m.run(&opts(), None).await.expect("run");
    assert!(rest.complete(), "{rest:?}");
    assert_eq!(rest.migrated, summary.not_run);
}
