//! The warm pool: schema and dedicated tenants claim pre-created spares (renamed, so the
//! tenant's storage *is* the former spare), spares hold no rows, an empty pool falls back
//! to creating storage, and spares of an older app version are never claimed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tenancy_core::{Placement, TenantId};
use tenancy_provision::storage::{self, SPARE_DATABASE_PREFIX, SPARE_SCHEMA_PREFIX};
use tenancy_provision::{AppMigration, AppMigrations, WarmPool};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tokio_postgres::Client;

use crate::support::*;

/// Oids of the spare schemas of the shared database.
async fn spare_schema_oids(su: &Client) -> HashSet<u32> {
    su.query(
        "SELECT oid FROM pg_namespace WHERE starts_with(nspname, $1)",
        &[&SPARE_SCHEMA_PREFIX],
    )
    .await
    .expect("spares")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Oids of the spare databases of the cluster.
async fn spare_database_oids(su: &Client) -> HashSet<u32> {
    su.query(
        "SELECT oid FROM pg_database WHERE starts_with(datname, $1)",
        &[&SPARE_DATABASE_PREFIX],
    )
    .await
    .expect("spares")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn schema_oid(su: &Client, schema: &str) -> u32 {
    su.query_one(
        "SELECT oid FROM pg_namespace WHERE nspname = $1",
        &[&schema],
    )
    .await
    .expect("schema oid")
    .get(0)
}

async fn database_oid(su: &Client, db: &str) -> u32 {
    su.query_one("SELECT oid FROM pg_database WHERE datname = $1", &[&db])
        .await
        .expect("database oid")
        .get(0)
}

/// Rows in every table of `schema`, counted as the superuser (no RLS).
async fn rows_in(su: &Client, schema: &str) -> i64 {
    let tables: Vec<String> = su
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = $1::text::regnamespace AND c.relkind IN ('r', 'p')",
            &[&schema],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!tables.is_empty(), "{schema} has tables");
    let mut n = 0;
    for t in tables {
        n += su
            .query_one(&format!("SELECT count(*) FROM {t}"), &[])
            .await
            .expect("count")
            .get::<_, i64>(0);
    }
    n
}

/// Writes a row through the router (runtime role) and reads it back.
async fn works_through_the_router(db: &tenancy_pg::testing::TestDb, ids: &[TenantId]) {
    let router = router(db);
    for id in ids {
        let mut tx = router.begin(*id).await.expect("begin");
        tx.execute("INSERT INTO t00 (name) VALUES ($1)", &[&id.to_string()])
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    for id in ids {
        let mut tx = router.begin(*id).await.expect("begin");
        let names: Vec<String> = tx
            .query("SELECT name FROM t00", &[])
            .await
            .expect("select")
            .iter()
            .map(|r| r.get(0))
            .collect();
        tx.commit().await.expect("commit");
        assert_eq!(names, vec![id.to_string()]);
    }
}

#[tokio::test]
async fn schema_tenants_claim_spares_and_fall_back_when_the_pool_is_empty() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let su = db.connect_superuser().await.expect("su");
    let mut cfg = config(vec![], vec![]);
    cfg.warm_pool = WarmPool {
        schemas: 2,
        databases: 0,
    };
    let p = provisioner(&db, cfg.clone());
    assert_eq!(p.refill_warm_pool().await.expect("refill"), 2);
    assert_eq!(p.refill_warm_pool().await.expect("refill"), 0, "full");
    let spares = spare_schema_oids(&su).await;
    assert_eq!(spares.len(), 2);
    // A spare is a tenant schema like any other, at the latest version.
    for r in su
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&SPARE_SCHEMA_PREFIX],
        )
        .await
        .expect("names")
    {
        let name: String = r.get(0);
        assert_eq!(
            storage::schema_version(&su, &name).await.expect("v"),
            Some(cfg.app_migrations.latest())
        );
        let unforced: i64 = su
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relnamespace = $1::text::regnamespace AND relkind = 'r'
                   AND NOT (relrowsecurity AND relforcerowsecurity)",
                &[&name],
            )
            .await
            .expect("rls")
            .get(0);
        assert_eq!(unforced, 0, "RLS forced on every table of {name}");
    }

    // Two tenants take the two spares; the third finds the pool empty and creates its
    // schema (no workers run, so nothing refills meanwhile).
    let mut ids = Vec::new();
    for slug in ["warm-a", "warm-b", "warm-c"] {
        ids.push(provision_driven(&p, &mut catalog, slug, Placement::Schema).await);
    }
    let oids: Vec<u32> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(schema_oid(&su, &storage::schema_name_for(*id)).await);
        }
        v
    };
    assert!(spares.contains(&oids[0]), "warm-a got a spare");
    assert!(spares.contains(&oids[1]), "warm-b got a spare");
    assert!(!spares.contains(&oids[2]), "warm-c was created at signup");
    assert!(spare_schema_oids(&su).await.is_empty(), "pool drained");
    assert_eq!(p.warm_pool_claims(), (2, 0));
    works_through_the_router(&db, &ids).await;

    // The workers' refill task brings the pool back; spares never carry rows.
    let workers = p.spawn_workers(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while spare_schema_oids(&su).await.len() < 2 {
        assert!(Instant::now() < deadline, "pool not refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.stop().await;
    for r in su
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&SPARE_SCHEMA_PREFIX],
        )
        .await
        .expect("names")
    {
        assert_eq!(rows_in(&su, &r.get::<_, String>(0)).await, 0);
    }
    // A storage step re-run after a crash that followed its claim: the tenant's schema
    // (a former spare) exists, and the step just continues (takes no other spare).
    let (t, wf) = p
        .provision(
            &mut catalog,
            &request("warm-d", "eu-west", Placement::Schema),
            "test",
        )
        .await
        .expect("provision");
    let schema = storage::schema_name_for(t.id);
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    assert!(
        storage::claim_spare_schema(&mut owner, &schema, cfg.app_migrations.latest())
            .await
            .expect("claim")
    );
    let claimed = schema_oid(&su, &schema).await;
    let wf = p
        .drive(&mut catalog, wf.id, Duration::from_secs(60))
        .await
        .expect("drive");
    assert!(wf.status.is_final());
    assert_eq!(
        spare_schema_oids(&su).await.len(),
        1,
        "no other spare taken"
    );
    assert_eq!(schema_oid(&su, &schema).await, claimed);
    works_through_the_router(&db, &[t.id]).await;
    assert_no_orphans(&catalog, &su).await;
}

#[tokio::test]
async fn spares_of_an_older_app_version_are_not_claimed_and_are_replaced() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let su = db.connect_superuser().await.expect("su");
    let mut cfg = config(vec![], vec![]);
    cfg.warm_pool = WarmPool {
        schemas: 2,
        databases: 0,
    };
    let old = provisioner(&db, cfg.clone());
    old.refill_warm_pool().await.expect("refill");
    let old_spares = spare_schema_oids(&su).await;
    assert_eq!(old_spares.len(), 2);

    // The app gains a migration.
    let mut ms = cfg.app_migrations.all().to_vec();
    ms.push(AppMigration {
        version: cfg.app_migrations.latest() + 1,
        name: "0002_notes".into(),
        sql: "CREATE TABLE notes (tenant_id uuid NOT NULL, body text NOT NULL)".into(),
    });
    cfg.app_migrations = AppMigrations::new(ms).expect("migrations");
    let latest = cfg.app_migrations.latest();
    let new = provisioner(&db, cfg);
    let id = provision_driven(&new, &mut catalog, "newer", Placement::Schema).await;
    let schema = storage::schema_name_for(id);
    assert!(!old_spares.contains(&schema_oid(&su, &schema).await));
    assert_eq!(
        storage::schema_version(&su, &schema).await.expect("v"),
        Some(latest)
    );
    assert_eq!(spare_schema_oids(&su).await, old_spares, "old spares kept");
    // Refill replaces them with spares at the new version.
    assert_eq!(new.refill_warm_pool().await.expect("refill"), 2);
    let now = spare_schema_oids(&su).await;
    assert_eq!(now.len(), 2);
    assert!(now.is_disjoint(&old_spares));
    let id2 = provision_driven(&new, &mut catalog, "newer-b", Placement::Schema).await;
    let s2 = storage::schema_name_for(id2);
    assert!(now.contains(&schema_oid(&su, &s2).await));
    assert_eq!(
        storage::schema_version(&su, &s2).await.expect("v"),
        Some(latest)
    );
    works_through_the_router(&db, &[id, id2]).await;
}

#[tokio::test]
async fn dedicated_tenants_claim_finalised_spare_databases_with_their_own_keys() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let su = db.cluster.connect("postgres").await.expect("su");
    let mut cfg = config(vec![], vec![]);
    cfg.warm_pool = WarmPool {
        schemas: 0,
        databases: 2,
    };
    let p = provisioner(&db, cfg.clone());
    p.refill_warm_pool().await.expect("refill");
    let spares = spare_database_oids(&su).await;
    assert_eq!(spares.len(), 2);
    let names: Vec<String> = su
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            &[&SPARE_DATABASE_PREFIX],
        )
        .await
        .expect("names")
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Each spare is finalised: its own binding key, the context key bound to it; no rows.
    let mut keys = Vec::new();
    for name in &names {
        let c = db.cluster.connect(name).await.expect("spare");
        let row = c
            .query_one(
                "SELECT b.k, (SELECT count(*) FROM tenancy_private.context_keys k WHERE k.bkey = b.k)
                   FROM tenancy_private.binding_key b",
                &[],
            )
            .await
            .expect("binding key");
        assert_eq!(row.get::<_, i64>(1), 1);
        keys.push(row.get::<_, Vec<u8>>(0));
        assert_eq!(rows_in(&c, "public").await, 0);
    }
    assert_ne!(keys[0], keys[1], "each spare has its own binding key");
    // (Our sessions to the spares are closed; a claim waits for closing ones.)

    let mut ids = Vec::new();
    for slug in ["ded-a", "ded-b", "ded-c"] {
        ids.push(provision_driven(&p, &mut catalog, slug, Placement::Dedicated).await);
    }
    let mut oids = Vec::new();
    for id in &ids {
        let name = storage::database_name_for(*id);
        oids.push(database_oid(&su, &name).await);
        let comment: Option<String> = su
            .query_one(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .expect("comment")
            .get(0);
        assert_eq!(comment, None, "no spare marker on a tenant's database");
    }
    assert!(spares.contains(&oids[0]) && spares.contains(&oids[1]));
    assert!(!spares.contains(&oids[2]), "the third was cloned at signup");
    assert!(spare_database_oids(&su).await.is_empty());
    assert_eq!(p.warm_pool_claims(), (0, 2));
    works_through_the_router(&db, &ids).await;

    // Refilled by the workers' task.
    let workers = p.spawn_workers(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while spare_database_oids(&su).await.len() < 2 {
        assert!(Instant::now() < deadline, "pool not refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.stop().await;
    assert_no_orphans(&catalog, &su).await;
    for r in su
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
            &[&SPARE_DATABASE_PREFIX],
        )
        .await
        .expect("names")
    {
        storage::drop_database(&su, &r.get::<_, String>(0))
            .await
            .expect("drop spare");
    }
}
