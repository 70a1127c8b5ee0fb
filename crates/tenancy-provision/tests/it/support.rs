//! Test environment: a catalog + shared tenant database per test, a second cluster for a
//! second region, local webhook receivers, and helpers to wait and count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tenancy_catalog::NewCluster;
use tenancy_core::{Placement, TenantId, TenantState};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_provision::{
    AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner, Receiver,
};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, ContextKey, Router, RouterOptions};
use tokio::sync::OnceCell;
use tokio_postgres::Client;

static TEMPLATE: TemplateDb = TemplateDb::new("prov_tpl");
static SECOND: OnceCell<Cluster> = OnceCell::const_new();
static SECOND_DBS: AtomicU64 = AtomicU64::new(0);

pub(crate) const KEY_HEX: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("prov".parse().expect("kid"), KEY_HEX).expect("key")
}

pub(crate) use tenancy_test_support::connect;
pub(crate) use tenancy_test_support::webhooks::WebhookReceiver;

/// A fresh catalog database that is also region eu-west's shared tenant database.
pub(crate) async fn fresh_db() -> TestDb {
    tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), "").await
}

/// The second cluster (region us-east), with roles bootstrapped, and a fresh shared
/// database on it.
pub(crate) async fn second_region_db() -> (&'static Cluster, String) {
    let cluster = SECOND
        .get_or_init(|| async {
            let c = Cluster::start(ClusterOptions::for_tests())
                .await
                .expect("second cluster");
            let su = c.connect("postgres").await.expect("su");
            bootstrap::bootstrap_cluster(&su).await.expect("roles");
            c
        })
        .await;
    let name = format!(
        "shared_{}_{}",
        std::process::id(),
        SECOND_DBS.fetch_add(1, Ordering::Relaxed)
    );
    let su = cluster.connect("postgres").await.expect("su");
    su.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create shared db");
    let su = cluster.connect(&name).await.expect("su");
    bootstrap::bootstrap_database(&su, &name)
        .await
        .expect("bootstrap");
    let owner = connect(cluster.config_as(OWNER_ROLE, &name)).await;
    bootstrap::install_runtime(&owner, &key())
        .await
        .expect("runtime");
    (cluster, name)
}

pub(crate) async fn add_region(owner: &Client, region: &str, cluster: &Cluster, dbname: &str) {
    tenancy_catalog::add_region(owner, &region.parse().expect("region"), region)
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        owner,
        &NewCluster {
            name: format!("pg-{region}"),
            region: region.parse().expect("region"),
            location: tenancy_catalog::ClusterLocation {
                host: cluster.socket_dir().display().to_string(),
                port: cluster.port(),
                dbname: dbname.to_owned(),
            },
            capacity: 1000,
        },
    )
    .await
    .expect("cluster");
}

pub(crate) fn config(registration: Vec<Receiver>, events: Vec<Receiver>) -> ProvisionConfig {
    let mut plans = BTreeMap::new();
    let mut free = serde_json::Map::new();
    free.insert("max_users".into(), serde_json::json!(5));
    plans.insert("free".to_owned(), free);
    let mut pro = serde_json::Map::new();
    pro.insert("max_users".into(), serde_json::json!(100));
    pro.insert("sso".into(), serde_json::json!(true));
    plans.insert("pro".to_owned(), pro);
    ProvisionConfig {
        app_migrations: AppMigrations::generated(4),
        plans,
        registration_receivers: registration,
        event_receivers: events,
        retention: Duration::ZERO,
        max_attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        outbox_max_attempts: 3,
        webhook_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
        // The warm pool has tests of its own (warm_pool.rs); the others create storage
        // at signup, as they always did.
        warm_pool: tenancy_provision::WarmPool::DISABLED,
        moves: tenancy_provision::MoveSettings {
            cutover_wait: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
            keep_source: Duration::ZERO,
        },
    }
}

pub(crate) fn provisioner(db: &TestDb, cfg: ProvisionConfig) -> Provisioner {
    Provisioner::new(
        db.config_as(OWNER_ROLE),
        ClusterAccess::local(db.cluster.superuser()),
        key(),
        cfg,
    )
    .expect("provisioner")
}

pub(crate) fn request(slug: &str, region: &str, placement: Placement) -> ProvisionRequest {
    ProvisionRequest {
        tenant: tenancy_catalog::NewTenant {
            id: None,
            slug: slug.parse().expect("slug"),
            display_name: slug.to_uppercase(),
            plan: "free".parse().expect("plan"),
            region: region.parse().expect("region"),
            placement,
        },
        billing_customer: None,
        billing_subscription: None,
    }
}

pub(crate) fn router(db: &TestDb) -> Router {
    Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions {
            cache_ttl: Duration::ZERO,
            ..Default::default()
        },
    )
    .expect("router")
}

/// Waits until no workflow is unfinished.
pub(crate) async fn wait_all_final(catalog: &Client, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let n = tenancy_catalog::unfinished_workflows(catalog)
            .await
            .expect("count");
        if n == 0 {
            return;
        }
        if Instant::now() >= deadline {
            dump_workflows(catalog).await;
            panic!("{n} workflows still unfinished after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn dump_workflows(catalog: &Client) {
    let rows = catalog
        .query("SELECT kind, status, step, attempts, coalesce(last_error, ''), run_after::text FROM tenancy_catalog.workflows WHERE status NOT IN ('succeeded') ORDER BY seq", &[])
        .await
        .expect("workflows");
    for r in rows {
        eprintln!(
            "wf {} {} step={} attempts={} err={} run_after={}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, i32>(2),
            r.get::<_, i32>(3),
            r.get::<_, String>(4),
            r.get::<_, String>(5)
        );
    }
}

/// Waits until the outbox is empty (every message delivered or dead).
pub(crate) async fn wait_outbox_drained(catalog: &Client, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let n: i64 = catalog
            .query_one(
                "SELECT count(*) FROM tenancy_catalog.webhook_outbox WHERE status = 'pending'",
                &[],
            )
            .await
            .expect("outbox")
            .get(0);
        if n == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let rows = catalog
                .query("SELECT webhook_id, status, attempts, next_attempt::text, now()::text FROM tenancy_catalog.webhook_outbox", &[])
                .await
                .expect("outbox");
            for r in rows {
                eprintln!(
                    "outbox {:?} {:?} {:?} {:?} {:?}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i32>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4)
                );
            }
            let log = tenancy_catalog::deliveries(catalog, None, 20)
                .await
                .expect("log");
            eprintln!("deliveries {log:#?}");
            panic!("{n} webhooks still pending");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn schema_exists(client: &Client, schema: &str) -> bool {
    client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .expect("schema lookup")
        .is_some()
}

pub(crate) async fn database_exists(client: &Client, db: &str) -> bool {
    client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .expect("db lookup")
        .is_some()
}

/// Asserts that storage exists exactly for the tenants whose state keeps it, and that no
/// tenant schema in the shared database lacks a live catalog tenant.
pub(crate) async fn assert_no_orphans(catalog: &Client, cluster_admin: &Client) {
    assert_no_orphans_in(catalog, &[("eu-west", cluster_admin, catalog)]).await
}

/// [`assert_no_orphans`] with, per region, a maintenance connection to its cluster and a
/// connection to its shared database.
pub(crate) async fn assert_no_orphans_in(catalog: &Client, regions: &[(&str, &Client, &Client)]) {
    let tenants = tenancy_catalog::list_tenants(catalog, None, 1000)
        .await
        .expect("tenants");
    for (region, admin, shared) in regions {
        let mut live_schemas = Vec::new();
        for t in tenants.iter().filter(|t| t.region.as_str() == *region) {
            let keeps = !matches!(t.state, tenancy_core::TenantState::Deleted);
            match t.placement {
                Placement::Schema => {
                    let s = tenancy_provision::storage::schema_name_for(t.id);
                    assert_eq!(
                        schema_exists(shared, &s).await,
                        keeps,
                        "schema of {} ({})",
                        t.slug,
                        t.state
                    );
                    if keeps {
                        live_schemas.push(s);
                    }
                }
                Placement::Dedicated => {
                    let d = tenancy_provision::storage::database_name_for(t.id);
                    assert_eq!(
                        database_exists(admin, &d).await,
                        keeps,
                        "database of {} ({})",
                        t.slug,
                        t.state
                    );
                }
                Placement::Pooled => {}
            }
        }
        let rows = shared
            .query(
                "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9a-f]{32}$' ORDER BY 1",
                &[],
            )
            .await
            .expect("schemas");
        let mut found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        found.sort();
        live_schemas.sort();
        assert_eq!(
            found, live_schemas,
            "tenant schemas in the shared database of {region}"
        );
    }
}

/// Provisions one tenant and runs its workflow in this task (no workers, so no refill).
pub(crate) async fn provision_driven(
    p: &Provisioner,
    catalog: &mut Client,
    slug: &str,
    placement: Placement,
) -> TenantId {
    let (t, wf) = p
        .provision(catalog, &request(slug, "eu-west", placement), "test")
        .await
        .expect("provision");
    let wf = p
        .drive(catalog, wf.id, Duration::from_secs(60))
        .await
        .expect("drive");
    assert!(wf.status.is_final(), "{slug}: {:?}", wf.status);
    let t = tenancy_catalog::get_tenant(catalog, t.id)
        .await
        .expect("tenant");
    assert_eq!(t.state, TenantState::Active, "{slug}");
    t.id
}
