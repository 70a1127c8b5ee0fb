//! `tenancy audit seal | verify | export` on a real cluster: exit 0 on an intact log, 1
//! naming the first bad event once the owner role tampered with it, 2 when it cannot run.

use tenancy_audit::{Actor, ActorKind, Event};
use tenancy_pg::testing::TemplateDb;
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};
use tenancy_test_support::connect;

use crate::bootstrap::tenancy;

static TEMPLATE: TemplateDb = TemplateDb::new("cli_audit_tpl");

fn key() -> ContextKey {
    ContextKey::from_bytes("test".parse().expect("kid"), [5; 32])
}

fn out(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn audit_verify_exits_1_naming_the_first_bad_event() {
    let db = tenancy_test_support::fresh_catalog_db_with(&TEMPLATE, key(), async |owner| {
        Ok(tenancy_audit::install(owner).await?)
    })
    .await;
    let su = db.connect_superuser().await.expect("superuser");
    let pool =
        TenantPool::new(db.config_as(RUNTIME_ROLE), key(), PoolOptions::default()).expect("pool");
    let t = TenantId::new_random();
    for n in 0..5 {
        let mut tx = pool.begin(t).await.expect("begin");
        tenancy_audit::record(
            &mut tx,
            &Event::new(Actor::new(ActorKind::ApiKey, "key-1"), "invoice.create")
                .target(format!("invoice:{n}")),
        )
        .await
        .expect("record");
        tx.commit().await.expect("commit");
    }
    let url = db.cluster.url_as(OWNER_ROLE, &db.name);
    let dir = std::env::temp_dir().join(format!("tenancy-cli-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (keyfile, published, export) = (
        dir.join("audit.key"),
        dir.join("checkpoints.jsonl"),
        dir.join("export.jsonl"),
    );
    let (keyfile, published, export) = (
        keyfile.to_str().expect("utf8"),
        published.to_str().expect("utf8"),
        export.to_str().expect("utf8"),
    );
    let tenant = t.to_string();
    let env = [("DATABASE_URL", url.as_str())];

    // Seal until every event is in the chain (other tests' transactions on this cluster
    // can hold a pass back), then sign.
    let mut sealed = false;
    for _ in 0..100 {
        let o = tenancy(
            &["audit", "seal", "--key", keyfile, "--publish", published],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let left: i64 = su
            .query_one(
                "SELECT count(*) FROM tenancy.audit_events WHERE chain_pos IS NULL",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            sealed = true;
            break;
        }
    }
    assert!(sealed, "events left unsealed");
    let o = tenancy(&["audit", "seal", "--key", keyfile], &env);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("signed 0 checkpoints"),
        "{}",
        out(&o)
    );

    let verify = |extra: &[&str]| {
        let mut args = vec!["audit", "verify", "--key", keyfile];
        args.extend_from_slice(extra);
        tenancy(&args, &env)
    };
    let o = verify(&["--tenant", &tenant, "--checkpoints", published]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("intact (5 sealed events"),
        "{}",
        out(&o)
    );

    let o = tenancy(
        &["audit", "export", "--tenant", &tenant, "-o", export],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = verify(&["--file", export]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // The owner edits event 2 (dropping the append-only trigger's hold first).
    su.batch_execute(&format!(
        "ALTER TABLE tenancy.audit_events DISABLE TRIGGER USER; \
         UPDATE tenancy.audit_events SET target = 'invoice:forged' WHERE tenant_id = '{t}' AND chain_pos = 2; \
         ALTER TABLE tenancy.audit_events ENABLE TRIGGER USER;"
    ))
    .await
    .expect("tamper");
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("TAMPERED: modified") && stdout.contains("chain position 2"),
        "{}",
        out(&o)
    );

    // The tail removed, and the catalog's checkpoints with it: the published file shows it.
    su.batch_execute(&format!(
        "ALTER TABLE tenancy.audit_events DISABLE TRIGGER USER; \
         UPDATE tenancy.audit_events SET target = 'invoice:1' WHERE tenant_id = '{t}' AND chain_pos = 2; \
         DELETE FROM tenancy.audit_events WHERE tenant_id = '{t}' AND chain_pos >= 4; \
         ALTER TABLE tenancy.audit_events ENABLE TRIGGER USER; \
         ALTER TABLE tenancy_catalog.audit_checkpoints DISABLE TRIGGER USER; \
         DELETE FROM tenancy_catalog.audit_checkpoints; \
         ALTER TABLE tenancy_catalog.audit_checkpoints ENABLE TRIGGER USER;"
    ))
    .await
    .expect("tamper");
    let o = verify(&["--tenant", &tenant]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "without the published checkpoints the cut is invisible\n{}",
        out(&o)
    );
    let o = verify(&["--tenant", &tenant, "--checkpoints", published]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("TAMPERED: truncated"),
        "{}",
        out(&o)
    );

    // Could not run: exit 2.
    let o = tenancy(&["audit", "verify"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = tenancy(&["audit", "verify", "--tenant", "not-a-uuid"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = verify(&["--file", keyfile]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn audit_verify_starts_a_purged_chain_at_its_anchor_and_hold_is_recorded() {
    let db = TEMPLATE
        .fresh(|cluster, db| async move {
            let su = cluster.connect(&db).await?;
            bootstrap::bootstrap_cluster(&su).await?;
            bootstrap::bootstrap_database(&su, &db).await?;
            let mut owner = connect(cluster.config_as(OWNER_ROLE, &db)).await;
            bootstrap::install_runtime(&owner, &key()).await?;
            tenancy_catalog::migrate(&mut owner).await?;
            tenancy_audit::install(&owner).await?;
            Ok(())
        })
        .await
        .expect("fresh database");
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap clone");
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    tenancy_catalog::add_region(&owner, &"eu-west".parse().expect("r"), "Europe")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &owner,
        &tenancy_catalog::NewCluster {
            name: "pg".into(),
            region: "eu-west".parse().expect("r"),
            location: tenancy_catalog::ClusterLocation {
                host: db.cluster.socket_dir().display().to_string(),
                port: db.cluster.port(),
                dbname: db.name.clone(),
            },
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let t = tenancy_catalog::create_tenant(
        &mut owner,
        &tenancy_catalog::NewTenant {
            id: None,
            slug: "held".parse().expect("slug"),
            display_name: "Held".into(),
            plan: "free".parse().expect("plan"),
            region: "eu-west".parse().expect("r"),
            placement: "pooled".parse().expect("placement"),
        },
        "test",
    )
    .await
    .expect("tenant")
    .id;
    let pool =
        TenantPool::new(db.config_as(RUNTIME_ROLE), key(), PoolOptions::default()).expect("pool");
    for n in 0..5 {
        let mut tx = pool.begin(t).await.expect("begin");
        tenancy_audit::record(
            &mut tx,
            &Event::new(Actor::new(ActorKind::User, "u"), "invoice.create")
                .target(format!("invoice:{n}")),
        )
        .await
        .expect("record");
        tx.commit().await.expect("commit");
    }
    let url = db.cluster.url_as(OWNER_ROLE, &db.name);
    let env = [("DATABASE_URL", url.as_str())];
    let dir = std::env::temp_dir().join(format!("tenancy-cli-purge-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keyfile = dir.join("audit.key");
    let keyfile = keyfile.to_str().expect("utf8");
    let tenant = t.to_string();

    // Legal hold set and lifted from the command line, each a control-log event.
    for args in [
        vec!["audit", "hold", "--tenant", &tenant],
        vec!["audit", "hold", "--tenant", &tenant, "--clear"],
    ] {
        let o = tenancy(&args, &env);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    }
    let held: bool = owner
        .query_one(
            "SELECT legal_hold FROM tenancy_catalog.tenants WHERE id = $1",
            &[&t.as_uuid()],
        )
        .await
        .expect("hold")
        .get(0);
    assert!(!held);
    let events: Vec<(String, String, String)> = owner
        .query(
            "SELECT action, actor_kind, actor_subject FROM tenancy_catalog.audit_log WHERE tenant_id = $1 ORDER BY seq",
            &[&t.as_uuid()],
        )
        .await
        .expect("control events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "tenant.legal_hold.set");
    assert_eq!(events[1].0, "tenant.legal_hold.clear");
    assert!(
        events
            .iter()
            .all(|e| e.1 == "admin" && e.2.starts_with("cli:")),
        "{events:?}"
    );
    let o = tenancy(
        &[
            "audit",
            "hold",
            "--tenant",
            &uuid::Uuid::new_v4().to_string(),
        ],
        &env,
    );
    assert_eq!(o.status.code(), Some(2), "an unknown tenant\n{}", out(&o));

    let mut sealed = false;
    for _ in 0..100 {
        let o = tenancy(&["audit", "seal", "--key", keyfile], &env);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let left: i64 = su
            .query_one(
                "SELECT count(*) FROM tenancy.audit_events WHERE chain_pos IS NULL",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            sealed = true;
            break;
        }
    }
    assert!(sealed, "events left unsealed");
    let signer = tenancy_audit::Signer::load(std::path::Path::new(keyfile)).expect("key");
    let mut o2 = connect(db.config_as(OWNER_ROLE)).await;
    let purged = tenancy_audit::purge(
        &mut o2,
        &mut owner,
        t.as_uuid(),
        time::OffsetDateTime::now_utc() + time::Duration::days(1),
        &signer,
        &Actor::new(ActorKind::Worker, "worker:test"),
        None,
    )
    .await
    .expect("purge")
    .expect("purged");
    assert_eq!(purged.removed, 4);
    let o = tenancy(
        &["audit", "verify", "--key", keyfile, "--tenant", &tenant],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("verified from the purge anchor at position 4"),
        "{}",
        out(&o)
    );
    // The control plane's log (holds, the purge) seals and verifies too (sealing waits
    // for the cluster's oldest running transaction: other tests can hold it back).
    let mut sealed = false;
    for _ in 0..100 {
        let o = tenancy(&["audit", "seal", "--key", keyfile], &env);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let left: i64 = su
            .query_one(
                "SELECT count(*) FROM tenancy_catalog.audit_log WHERE chain_pos IS NULL",
                &[],
            )
            .await
            .expect("count")
            .get(0);
        if left == 0 {
            sealed = true;
            break;
        }
    }
    assert!(sealed, "control events left unsealed");
    let o = tenancy(
        &["audit", "verify", "--key", keyfile, "--log", "control"],
        &env,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        stdout.contains(&format!("tenant {t}: intact (2 sealed events")),
        "{}",
        out(&o)
    );
    assert!(
        stdout.contains("tenant 00000000-0000-0000-0000-000000000000: intact (1 sealed events"),
        "{}",
        out(&o)
    );
    // A deleted anchor leaves a head that nothing vouches for: tampered.
    su.batch_execute(
        "ALTER TABLE tenancy_catalog.audit_anchors DISABLE TRIGGER USER; \
         DELETE FROM tenancy_catalog.audit_anchors; \
         ALTER TABLE tenancy_catalog.audit_anchors ENABLE TRIGGER USER;",
    )
    .await
    .expect("tamper");
    let o = tenancy(
        &["audit", "verify", "--key", keyfile, "--tenant", &tenant],
        &env,
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("TAMPERED: deleted"),
        "{}",
        out(&o)
    );
    let o = tenancy(&["audit", "verify", "--log", "everything"], &env);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
