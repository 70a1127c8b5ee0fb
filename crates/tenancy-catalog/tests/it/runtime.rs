//! The catalog as the runtime role sees it, attacked with no tenant context: it reads no
//! catalog table, and its lookup functions answer one tenant for a key it holds, with
//! only what routing needs, and nothing for a guess. The configuration reader reads the
//! configuration, not the tenants' names or billing links.

use tenancy_catalog::{NewCluster, TenantRoute};
use tenancy_core::{Placement, TenantId, TenantState};
use tenancy_pg::testing::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::{fresh, new_tenant, owner};

const RUNTIME: &str = "tenancy_app";
const READER: &str = "tenancy_config_reader";

async fn connect_as(db: &TestDb, role: &str) -> Client {
    let (c, conn) = db.config_as(role).connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    c
}

/// A migrated catalog with two active tenants (the second with a billing link, a verified
/// and a pending custom domain), an API key of the first, and a value of each
/// configuration table, so every table has rows to leak.
struct Env {
    db: TestDb,
    acme: TenantId,
    globex: TenantId,
    cluster: uuid::Uuid,
}

const KEY_ID: &str = "0123456789abcdef";
const KEY_HASH: [u8; 32] = [7; 32];

async fn env() -> Env {
    let db = fresh().await;
    let mut c = owner(&db).await;
    tenancy_catalog::migrate(&mut c).await.expect("migrate");
    tenancy_catalog::add_region(&c, &"eu-west".parse().expect("r"), "EU")
        .await
        .expect("region");
    let cluster = tenancy_catalog::add_cluster(
        &c,
        &NewCluster {
            name: "pg-a".into(),
            region: "eu-west".parse().expect("r"),
            location: tenancy_catalog::ClusterLocation {
                host: "/tmp".into(),
                port: 5432,
                dbname: "shared".into(),
            },
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let mut ids = Vec::new();
    for slug in ["acme", "globex"] {
        let t = tenancy_catalog::create_tenant(&mut c, &new_tenant(slug, "eu-west"), "test")
            .await
            .expect("tenant");
        tenancy_catalog::set_state(&mut c, t.id, TenantState::Active, "test", "ready")
            .await
            .expect("activate");
        ids.push(t.id);
    }
    let (acme, globex) = (ids[0], ids[1]);
    tenancy_catalog::create_api_key(&c, acme, KEY_ID, &KEY_HASH, "ci", &["invoices:read".into()])
        .await
        .expect("api key");
    c.execute(
        "UPDATE tenancy_catalog.tenants SET billing_customer = 'cus_globex_secret' WHERE id = $1",
        &[&globex.as_uuid()],
    )
    .await
    .expect("billing link");
    c.batch_execute(&format!(
        "INSERT INTO tenancy_catalog.config_domains (tenant_id, hostname, state, token, version)
           VALUES ('{globex}', 'app.globex.example', 'verified', 'tok-1', 1),
                  ('{globex}', 'pending.globex.example', 'pending', 'tok-2', 1);
         INSERT INTO tenancy_catalog.config_changes (actor, reason, entity, entity_key, tenant_id, action)
           VALUES ('alice@globex', 'secret reason', 'tenant', '{globex}', '{globex}', 'put');
         INSERT INTO tenancy_catalog.config_tenant_attributes (tenant_id, tags, version) VALUES ('{globex}', '{{vip}}', 1);
         INSERT INTO tenancy_catalog.config_overrides (tenant_id, kind, key, value, reason, created_by, version)
           VALUES ('{globex}', 'flag', 'beta', 'true', 'deal', 'alice', 1);
         INSERT INTO tenancy_catalog.config_branding (tenant_id, display_name, primary_color, accent_color, email_from_name, email_from_address, version)
           VALUES ('{globex}', 'Globex', '#000000', '#ffffff', 'Globex', 'billing@globex.example', 1);"
    ))
    .await
    .expect("configuration rows");
    Env {
        db,
        acme,
        globex,
        cluster: cluster.id,
    }
}

fn is_denied(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}

#[tokio::test]
async fn runtime_role_without_context_cannot_read_any_catalog_table() {
    let env = env().await;
    let own = owner(&env.db).await;
    let tables: Vec<String> = own
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'tenancy_catalog' AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1",
            &[],
        )
        .await
        .expect("catalog tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for must in [
        "tenants",
        "regions",
        "clusters",
        "api_keys",
        "config_domains",
    ] {
        assert!(
            tables.iter().any(|t| t == must),
            "{must} is a catalog table"
        );
    }
    assert!(
        tables.iter().filter(|t| t.starts_with("config_")).count() >= 10,
        "{tables:?}"
    );
    let app = connect_as(&env.db, RUNTIME).await;
    for table in &tables {
        let sql = format!("SELECT * FROM tenancy_catalog.{table}");
        match app.query(&sql, &[]).await {
            Err(e) if is_denied(&e) => {}
            Err(e) => panic!("{sql}: expected permission denied, got {e}"),
            Ok(rows) => panic!(
                "{sql}: the runtime role read {} rows without any context",
                rows.len()
            ),
        }
        // Not one column either.
        let sql = format!("SELECT count(*) FROM tenancy_catalog.{table}");
        assert!(
            app.query(&sql, &[]).await.is_err_and(|e| is_denied(&e)),
            "{sql}"
        );
    }
    // The usual spots where a listing hides: the slug and billing columns of tenants.
    for sql in [
        "SELECT slug, display_name, plan, billing_customer FROM tenancy_catalog.tenants",
        "SELECT id FROM tenancy_catalog.tenants WHERE slug = 'globex'",
        "SELECT tenant_id, hostname FROM tenancy_catalog.config_domains",
    ] {
        assert!(
            app.query(sql, &[]).await.is_err_and(|e| is_denied(&e)),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn lookups_return_one_tenant_for_a_held_key_and_nothing_for_a_guess() {
    let env = env().await;
    let app = connect_as(&env.db, RUNTIME).await;

    // By id and by slug: exactly that tenant's route.
    let by_id = tenancy_catalog::tenant_route(&app, env.acme)
        .await
        .expect("by id")
        .expect("acme exists");
    let expected = TenantRoute {
        id: env.acme,
        slug: "acme".parse().expect("slug"),
        region: "eu-west".parse().expect("region"),
        placement: Placement::Pooled,
        cluster_id: env.cluster,
        state: TenantState::Active,
        schema_name: None,
        database_name: None,
        cutover: false,
    };
    assert_eq!(by_id, expected);
    let by_slug = tenancy_catalog::tenant_route_by_slug(&app, &"acme".parse().expect("slug"))
        .await
        .expect("by slug")
        .expect("acme exists");
    assert_eq!(by_slug, expected);

    // Guesses name nobody.
    assert_eq!(
        tenancy_catalog::tenant_route(&app, TenantId::new_random())
            .await
            .expect("guess"),
        None
    );
    assert_eq!(
        tenancy_catalog::tenant_route_by_slug(&app, &"initech".parse().expect("slug"))
            .await
            .expect("guess"),
        None
    );
    // Raw calls cannot widen a lookup into a listing: patterns, NULL, or an expression
    // all match nothing, and no call returns more than one row.
    for (sql, arg) in [
        (
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug($1)",
            "%",
        ),
        (
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug($1)",
            "a%",
        ),
        (
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug($1)",
            "acme' OR true --",
        ),
    ] {
        let rows = app.query(sql, &[&arg]).await.expect("lookup");
        assert!(
            rows.is_empty(),
            "{sql} with {arg:?} returned {} rows",
            rows.len()
        );
    }
    let rows = app
        .query(
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug(NULL)",
            &[],
        )
        .await
        .expect("lookup");
    assert!(rows.is_empty());
    let rows = app
        .query("SELECT * FROM tenancy_catalog.tenant_route(NULL)", &[])
        .await
        .expect("lookup");
    assert!(rows.is_empty());

    // What a lookup returns: routing columns only, never a name, plan or billing link.
    let row = app
        .query_one(
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug('globex')",
            &[],
        )
        .await
        .expect("globex by slug");
    let columns: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        columns,
        vec![
            "id",
            "slug",
            "region",
            "placement",
            "cluster_id",
            "state",
            "schema_name",
            "database_name",
            "cutover"
        ]
    );
    let text = format!("{row:?}");
    assert!(
        !text.contains("cus_globex_secret") && !text.contains("GLOBEX"),
        "{text}"
    );

    // A verified custom domain names its tenant; a pending one, or a guess, nobody.
    assert_eq!(
        tenancy_catalog::tenant_for_domain(&app, "App.Globex.Example.")
            .await
            .expect("verified"),
        Some(env.globex)
    );
    for host in ["pending.globex.example", "globex.example", "%.example"] {
        assert_eq!(
            tenancy_catalog::tenant_for_domain(&app, host)
                .await
                .expect("lookup"),
            None,
            "{host}"
        );
    }
    let raw: Option<uuid::Uuid> = app
        .query_one("SELECT tenancy_catalog.tenant_for_domain('%')", &[])
        .await
        .expect("raw domain lookup")
        .get(0);
    assert_eq!(raw, None);

    // An API key needs its id and the right hash.
    let grant = tenancy_catalog::authenticate_api_key(&app, KEY_ID, &KEY_HASH)
        .await
        .expect("key")
        .expect("the right hash authenticates");
    assert_eq!(grant.tenant_id, env.acme);
    assert_eq!(
        tenancy_catalog::authenticate_api_key(&app, KEY_ID, &[8; 32])
            .await
            .expect("wrong hash"),
        None
    );

    // The cluster a route names: where it is, nothing else; a guess is an error.
    let cluster = tenancy_catalog::cluster_route(&app, env.cluster)
        .await
        .expect("cluster of the route");
    assert_eq!(
        (cluster.host.as_str(), cluster.port, cluster.dbname.as_str()),
        ("/tmp", 5432, "shared")
    );
    assert_eq!(cluster.pooler, None);
    // Its pooler address, once registered, and removed again.
    let o = owner(&env.db).await;
    tenancy_catalog::set_cluster_pooler(&o, "pg-a", Some(("bouncer.internal", 6432)))
        .await
        .expect("pooler address");
    let with_pooler = tenancy_catalog::cluster_route(&app, env.cluster)
        .await
        .expect("cluster with its pooler");
    assert_eq!(
        (
            with_pooler.location.host.as_str(),
            with_pooler.location.port,
            with_pooler.pooler
        ),
        ("/tmp", 5432, Some(("bouncer.internal".to_owned(), 6432)))
    );
    assert!(
        tenancy_catalog::set_cluster_pooler(&o, "pg-nope", Some(("b", 1)))
            .await
            .is_err(),
        "an unknown cluster"
    );
    tenancy_catalog::set_cluster_pooler(&o, "pg-a", None)
        .await
        .expect("no pooler");
    assert_eq!(
        tenancy_catalog::cluster_route(&app, env.cluster)
            .await
            .expect("cluster")
            .pooler,
        None
    );
    assert!(tenancy_catalog::cluster_route(&app, uuid::Uuid::new_v4())
        .await
        .is_err());
}

#[tokio::test]
async fn configuration_reader_reads_configuration_but_no_names_billing_or_keys() {
    let env = env().await;
    let reader = connect_as(&env.db, READER).await;
    // What the configuration snapshot reads.
    for sql in [
        "SELECT * FROM tenancy_catalog.config_overrides",
        "SELECT * FROM tenancy_catalog.config_branding",
        "SELECT * FROM tenancy_catalog.config_domains",
        "SELECT * FROM tenancy_catalog.config_tenant_attributes",
        "SELECT coalesce(max(version), 0) FROM tenancy_catalog.config_changes",
        "SELECT id, plan, region, placement, created_at FROM tenancy_catalog.tenants WHERE state <> 'deleted'",
    ] {
        reader
            .query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // Nothing more: names, billing links, API keys, who changed what, and no writes.
    for sql in [
        "SELECT display_name FROM tenancy_catalog.tenants",
        "SELECT billing_customer FROM tenancy_catalog.tenants",
        "SELECT * FROM tenancy_catalog.tenants",
        "SELECT * FROM tenancy_catalog.api_keys",
        "SELECT actor, reason FROM tenancy_catalog.config_changes",
        "SELECT * FROM tenancy_catalog.workflows",
        "SELECT * FROM tenancy_catalog.clusters",
        "UPDATE tenancy_catalog.config_overrides SET value = 'false'",
        "DELETE FROM tenancy_catalog.config_domains",
    ] {
        assert!(
            reader.query(sql, &[]).await.is_err_and(|e| is_denied(&e)),
            "{sql}: the configuration reader must be refused"
        );
    }
    // And the reader cannot look tenants up by key either (that is the runtime role's).
    assert!(reader
        .query(
            "SELECT * FROM tenancy_catalog.tenant_route_by_slug('acme')",
            &[]
        )
        .await
        .is_err_and(|e| is_denied(&e)));
}
