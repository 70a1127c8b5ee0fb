//! Test support: a fresh database per test (roles, runtime schema, catalog with the
//! configuration tables), tenants, a store as the owner role, an SDK client as the
//! configuration reader role, and the routes served on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_config_service::dns::{StaticResolver, TxtResolver};
use tenancy_config_service::{ConfigState, Store};
use tenancy_core::{ContextKey, Placement, TenantId};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{self, CONFIG_READER_ROLE, OWNER_ROLE};
use tokio_postgres::{Client, NoTls};

static TEMPLATE: TemplateDb = TemplateDb::new("config_tpl");

pub(crate) const KEY_HEX: &str = "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f701";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

pub(crate) async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// Roles, database privileges, runtime schema and the migrated catalog, on `db` of
/// `cluster` (used for template databases and for private clusters).
pub(crate) async fn install(
    cluster: &tenancy_pg::Cluster,
    db: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let su = cluster.connect(db).await?;
    bootstrap::bootstrap_cluster(&su).await?;
    bootstrap::bootstrap_database(&su, db).await?;
    let mut owner = connect(cluster.config_as(OWNER_ROLE, db)).await;
    bootstrap::install_runtime(&owner, &key()).await?;
    tenancy_catalog::migrate(&mut owner).await?;
    tenancy_catalog::add_region(&owner, &"eu-west".parse()?, "Europe West").await?;
    tenancy_catalog::add_region(&owner, &"us-east".parse()?, "US East").await?;
    for (name, region) in [("eu1", "eu-west"), ("us1", "us-east")] {
        tenancy_catalog::add_cluster(
            &owner,
            &NewCluster {
                name: name.into(),
                region: region.parse()?,
                location: tenancy_catalog::ClusterLocation {
                    host: "localhost".into(),
                    port: 5432,
                    dbname: "app".into(),
                },
                capacity: 1000,
            },
        )
        .await?;
    }
    Ok(())
}

/// A fresh database for one test.
pub(crate) async fn fresh_db() -> TestDb {
    let db = TEMPLATE
        .fresh(|cluster, db| async move { install(cluster, &db).await })
        .await
        .expect("fresh database");
    // Database-level privileges are not copied from a template; set them on the clone.
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap clone");
    db
}

static SLUG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Creates a tenant in the catalog (as the owner role).
pub(crate) async fn tenant_on(cfg: tokio_postgres::Config, plan: &str, region: &str) -> TenantId {
    let mut owner = connect(cfg).await;
    let n = SLUG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = tenancy_catalog::create_tenant(
        &mut owner,
        &NewTenant {
            id: None,
            slug: format!("acme-{}-{n}", std::process::id())
                .parse()
                .expect("slug"),
            display_name: format!("Acme {n}"),
            plan: plan.parse().expect("plan"),
            region: region.parse().expect("region"),
            placement: Placement::Pooled,
        },
        "test",
    )
    .await
    .expect("create tenant");
    t.id
}

pub(crate) async fn tenant(db: &TestDb, plan: &str, region: &str) -> TenantId {
    tenant_on(db.config_as(OWNER_ROLE), plan, region).await
}

pub(crate) fn store(db: &TestDb) -> Store {
    Store::new(db.config_as(OWNER_ROLE), 4).expect("store")
}

pub(crate) fn fast_opts() -> ClientOptions {
    ClientOptions {
        max_staleness: Duration::from_secs(30),
        coalesce: Duration::from_millis(2),
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    }
}

pub(crate) async fn client(db: &TestDb) -> ConfigClient {
    ConfigClient::connect(db.config_as(CONFIG_READER_ROLE), fast_opts())
        .await
        .expect("config client")
}

/// Everything a test of the routes needs.
#[derive(Debug)]
pub(crate) struct App {
    pub addr: SocketAddr,
    pub client: ConfigClient,
    pub dns: StaticResolver,
}

pub(crate) async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

pub(crate) async fn app(db: &TestDb) -> App {
    let store = store(db);
    let client = client(db).await;
    let dns = StaticResolver::new();
    let resolver: Arc<dyn TxtResolver> = Arc::new(dns.clone());
    let router = tenancy_config_service::routes(ConfigState {
        store: store.clone(),
        client: client.clone(),
        resolver,
    });
    App {
        addr: serve(router).await,
        client,
        dns,
    }
}

/// An HTTP response, body parsed as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
}

pub(crate) async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let bytes = match &body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(b).expect("json"))
        }
        None => Bytes::new(),
    };
    let resp = sender
        .send_request(req.body(Full::new(bytes)).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let raw = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        content_type,
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
    }
}

pub(crate) const ACTOR: (&str, &str) = ("x-tenancy-actor", "alice@ops");

pub(crate) async fn put(addr: SocketAddr, path: &str, body: Value) -> Resp {
    call(
        addr,
        "PUT",
        path,
        &[ACTOR, ("x-tenancy-reason", "test change")],
        Some(body),
    )
    .await
}

/// Waits (bounded) until `check` holds on the client.
pub(crate) async fn eventually(
    client: &ConfigClient,
    what: &str,
    check: impl Fn(&ConfigClient) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut rx = client.subscribe();
    while !check(client) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
    }
}
