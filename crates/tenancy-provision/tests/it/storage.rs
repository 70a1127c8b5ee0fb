//! The fast paths of the storage step produce the same objects as the general ones:
//! a schema created from generated DDL equals one made with `tenancy.make_tenant_table`,
//! and a dedicated database cloned from the template has the privileges of a bootstrapped
//! database and secrets of its own.

use std::time::Duration;

use tenancy_core::Placement;
use tenancy_provision::storage::{self, create_schema_fast, migrate_schema};
use tenancy_provision::{AppMigration, AppMigrations};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tokio_postgres::Client;

use crate::support::*;

/// The generated app plus the cases `make_tenant_table` treats specially: a table
/// without `tenant_id` (the helper adds it and an index) and a partitioned table.
fn app() -> AppMigrations {
    let mut ms = AppMigrations::generated(3).all().to_vec();
    ms.push(AppMigration {
        version: 2,
        name: "0002_more".into(),
        sql: "CREATE TABLE notes (body text NOT NULL);
              CREATE TABLE events (tenant_id uuid NOT NULL, at date NOT NULL, PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
              GRANT SELECT ON notes TO PUBLIC;"
            .into(),
    });
    AppMigrations::new(ms).expect("migrations")
}

/// Everything about a schema's tables that tenancy cares about, schema name removed.
async fn describe(client: &Client, schema: &str) -> Vec<String> {
    let rows = client
        .query(
            "SELECT format('%s %s rls=%s force=%s acl=%s', c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relacl::text)
               FROM pg_class c WHERE c.relnamespace = $1::text::regnamespace AND c.relkind IN ('r', 'p')
             UNION ALL
             SELECT format('col %s.%s %s notnull=%s default=%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
               FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
              WHERE c.relnamespace = $1::text::regnamespace AND c.relkind IN ('r', 'p')
             UNION ALL
             SELECT format('policy %s.%s %s %s %s %s %s', c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles::text,
                           pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
               FROM pg_class c JOIN pg_policy p ON p.polrelid = c.oid
              WHERE c.relnamespace = $1::text::regnamespace
             UNION ALL
             SELECT 'index ' || replace(pg_get_indexdef(i.indexrelid), quote_ident($1) || '.', '')
               FROM pg_class c JOIN pg_index i ON i.indrelid = c.oid
              WHERE c.relnamespace = $1::text::regnamespace
             UNION ALL
             SELECT 'constraint ' || c.relname || ' ' || k.conname || ' ' || replace(pg_get_constraintdef(k.oid), quote_ident($1) || '.', '')
               FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid
              WHERE c.relnamespace = $1::text::regnamespace
             UNION ALL
             SELECT 'schema ' || coalesce(n.nspacl::text, '') || ' ' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
               FROM pg_namespace n WHERE n.nspname = $1
             ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("describe");
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_schema_from_generated_ddl_equals_one_made_by_make_tenant_table() {
    let db = fresh_db().await;
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    let app = app();
    // Fast: one round trip of generated DDL.
    create_schema_fast(&mut owner, "s_fast", &app)
        .await
        .expect("fast path");
    // General: the schema exists already, so migrate_schema takes the general path
    // (migrations + tenancy.make_tenant_table on every table).
    owner
        .batch_execute("CREATE SCHEMA s_general")
        .await
        .expect("schema");
    assert!(migrate_schema(&mut owner, "s_general", true, &app)
        .await
        .expect("general path"));
    let fast = describe(&owner, "s_fast").await;
    let general = describe(&owner, "s_general").await;
    assert!(
        fast.iter().any(|l| l.starts_with("policy notes.")),
        "{fast:#?}"
    );
    assert_eq!(fast, general);
    // Re-running is a no-op; the fast path refuses an existing schema.
    assert!(!migrate_schema(&mut owner, "s_fast", true, &app)
        .await
        .expect("re-run"));
    assert!(create_schema_fast(&mut owner, "s_fast", &app)
        .await
        .is_err());
    assert_eq!(
        storage::schema_version(&owner, "s_fast").await.expect("v"),
        Some(2)
    );
}

#[tokio::test]
async fn a_schema_whose_keys_leave_out_the_tenant_is_refused_by_the_fast_path_too() {
    let db = fresh_db().await;
    let mut owner = connect(db.config_as(OWNER_ROLE)).await;
    let app = AppMigrations::new(vec![AppMigration {
        version: 1,
        name: "0001_bad".into(),
        sql: "CREATE TABLE bad (tenant_id uuid NOT NULL, id bigint PRIMARY KEY)".into(),
    }])
    .expect("migrations");
    assert!(create_schema_fast(&mut owner, "s_bad", &app).await.is_err());
    assert!(migrate_schema(&mut owner, "s_bad", true, &app)
        .await
        .is_err());
    assert!(!schema_exists(&owner, "s_bad").await);
}

#[tokio::test]
async fn dedicated_databases_are_clones_with_their_own_keys_and_the_bootstrap_privileges() {
    let db = fresh_db().await;
    let mut catalog = connect(db.config_as(OWNER_ROLE)).await;
    add_region(&catalog, "eu-west", db.cluster, &db.name).await;
    let mut cfg = config(vec![], vec![]);
    cfg.app_migrations = app();
    let p = provisioner(&db, cfg.clone());
    let workers = p.spawn_workers(2);
    let mut ids = Vec::new();
    for slug in ["clone-a", "clone-b"] {
        let (t, _) = p
            .provision(
                &mut catalog,
                &request(slug, "eu-west", Placement::Dedicated),
                "test",
            )
            .await
            .expect("provision");
        ids.push(t.id);
    }
    wait_all_final(&catalog, Duration::from_secs(60)).await;
    workers.stop().await;

    let su = db.cluster.connect("postgres").await.expect("su");
    let template = storage::template_name_for(&cfg.app_migrations);
    let row = su
        .query_one(
            "SELECT datallowconn FROM pg_database WHERE datname = $1",
            &[&template],
        )
        .await
        .expect("template");
    assert!(!row.get::<_, bool>(0), "nobody may connect to the template");
    // The template holds no secrets.
    su.batch_execute(&format!("ALTER DATABASE {template} ALLOW_CONNECTIONS true"))
        .await
        .expect("open template");
    let tpl = db.cluster.connect(&template).await.expect("template conn");
    let secrets: i64 = tpl
        .query_one(
            "SELECT (SELECT count(*) FROM tenancy_private.binding_key) + (SELECT count(*) FROM tenancy_private.context_keys)",
            &[],
        )
        .await
        .expect("secrets")
        .get(0);
    assert_eq!(secrets, 0);
    drop(tpl);

    // A database bootstrapped the long way, for its privileges.
    su.batch_execute("CREATE DATABASE long_way")
        .await
        .expect("db");
    let lw = db.cluster.connect("long_way").await.expect("long way");
    tenancy_sdk::bootstrap::bootstrap_database(&lw, "long_way")
        .await
        .expect("bootstrap");
    let acl = |name: String| {
        let su = &su;
        async move {
            su.query_one(
                // Sorted: the order of ACL items depends on the order of the grants.
                "SELECT string_agg(a::text, ',' ORDER BY a::text)
                   FROM pg_database d, unnest(d.datacl) a WHERE d.datname = $1",
                &[&name],
            )
            .await
            .expect("acl")
            .get::<_, Option<String>>(0)
        }
    };
    let expected = acl("long_way".into()).await;
    let mut keys = Vec::new();
    for id in &ids {
        let name = storage::database_name_for(*id);
        assert_eq!(acl(name.clone()).await, expected, "privileges of {name}");
        let c = db.cluster.connect(&name).await.expect("clone");
        let row = c
            .query_one(
                "SELECT b.k, (SELECT count(*) FROM tenancy_private.context_keys k WHERE k.bkey = b.k)
                   FROM tenancy_private.binding_key b",
                &[],
            )
            .await
            .expect("binding key");
        assert_eq!(
            row.get::<_, i64>(1),
            1,
            "the context key carries the binding key"
        );
        keys.push(row.get::<_, Vec<u8>>(0));
        assert_eq!(
            storage::schema_version(&c, "public").await.expect("v"),
            Some(2)
        );
    }
    assert_eq!(keys[0].len(), 64);
    assert_ne!(keys[0], keys[1], "each clone has its own binding key");

    // Routed as the runtime role, each sees only its own rows.
    let router = router(&db);
    for id in &ids {
        let mut tx = router.begin(*id).await.expect("begin");
        tx.execute("INSERT INTO notes (body) VALUES ('x')", &[])
            .await
            .expect("insert");
        let n: i64 = tx
            .query_one("SELECT count(*) FROM notes", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 1);
        tx.commit().await.expect("commit");
    }
}
