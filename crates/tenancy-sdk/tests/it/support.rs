use std::time::{SystemTime, UNIX_EPOCH};

use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{self, ContextImpl, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};
use tokio_postgres::Client;

static TEMPLATE: TemplateDb = TemplateDb::new("sdk_tpl");

pub(crate) const KEY_HEX: &str = "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f701";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

pub(crate) const APP_SCHEMA: &str = "
CREATE TABLE customers (
    tenant_id uuid NOT NULL,
    id        uuid NOT NULL DEFAULT gen_random_uuid(),
    email     text NOT NULL,
    name      text NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);
CREATE TABLE invoices (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    customer_id  uuid NOT NULL,
    amount_cents bigint NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id) ON DELETE CASCADE
);
SELECT tenancy.make_tenant_table('customers');
SELECT tenancy.make_tenant_table('invoices');
";

pub(crate) use tenancy_test_support::connect;

/// A fresh database with roles, runtime schema, catalog and the app tables, with the
/// native signed context when this build has the library (see `fresh_db_plpgsql`).
pub(crate) async fn fresh_db() -> TestDb {
    tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), APP_SCHEMA).await
}

/// The same database with the PL/pgSQL implementation of the signed context (what a
/// server without the tenancy_context library gets).
pub(crate) async fn fresh_db_plpgsql() -> TestDb {
    let db = fresh_db().await;
    let owner = connect(db.config_as(OWNER_ROLE)).await;
    bootstrap::install_runtime_with(&owner, &key(), Some(ContextImpl::PlPgSql))
        .await
        .expect("install the PL/pgSQL context");
    assert_eq!(
        bootstrap::context_impl(&owner).await.expect("impl"),
        Some(ContextImpl::PlPgSql)
    );
    db
}

/// Both implementations, for tests that must hold for each.
pub(crate) async fn fresh_dbs() -> Vec<(ContextImpl, TestDb)> {
    let native = fresh_db().await;
    let su = native.connect_superuser().await.expect("superuser");
    let imp = bootstrap::context_impl(&su)
        .await
        .expect("impl")
        .expect("installed");
    assert!(
        imp == ContextImpl::Native || !tenancy_pg::native_required(),
        "TENANCY_REQUIRE_NATIVE=1, but the database did not get the native context"
    );
    let mut out = vec![(imp, native)];
    if imp == ContextImpl::Native {
        out.push((ContextImpl::PlPgSql, fresh_db_plpgsql().await));
    }
    out
}

/// A fresh database with the native signed context, or `None` when this build has no
/// native library for the server (built without server headers). Panics when the library
/// was built but the database did not get the native context, so a native test cannot
/// pass by checking nothing, and under `TENANCY_REQUIRE_NATIVE=1` whenever there is no
/// native context.
pub(crate) async fn fresh_native_db() -> Option<TestDb> {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("superuser");
    if bootstrap::context_impl(&su).await.expect("impl") == Some(ContextImpl::Native) {
        assert_extension_when_offered(&su).await;
        return Some(db);
    }
    assert!(
        !tenancy_pg::native_required(),
        "TENANCY_REQUIRE_NATIVE=1, but the database did not get the native context"
    );
    assert!(
        tenancy_pg::native_context_library(db.cluster.major_version()).is_none(),
        "the native library was built for this server but the database did not get the native context"
    );
    eprintln!("no native context library for this server: nothing to check");
    None
}

/// Where the server offers the tenancy_context extension, the native context must be
/// that extension (the bootstrap prefers it over creating the functions from the library).
pub(crate) async fn assert_extension_when_offered(su: &Client) {
    if tenancy_test_support::context_extension_offered(su).await {
        let installed: Option<String> = su
            .query_opt(
                "SELECT extversion FROM pg_extension WHERE extname = 'tenancy_context'",
                &[],
            )
            .await
            .expect("installed extension")
            .map(|r| r.get(0));
        assert_eq!(
            installed.as_deref(),
            Some(tenancy_pg::EXTENSION_VERSION),
            "the server offers the tenancy_context extension, but the database's native context is not it"
        );
    }
}

pub(crate) fn pool(db: &TestDb, max_size: usize) -> TenantPool {
    TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            max_size,
            ..Default::default()
        },
    )
    .expect("pool")
}

/// A plain runtime-role connection, outside the SDK (what injected SQL or a careless
/// developer would have).
pub(crate) async fn runtime_client(db: &TestDb) -> Client {
    connect(db.config_as(RUNTIME_ROLE)).await
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// Opens a tenant transaction by hand on a plain client, as the SDK does.
pub(crate) async fn enter_by_hand(
    client: &Client,
    tenant: TenantId,
) -> Result<String, tokio_postgres::Error> {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let token = key().sign(tenant, pid, now_micros(), 60_000_000);
    client
        .batch_execute(&format!(
            "BEGIN; SELECT tenancy.enter('{}')",
            token.as_str()
        ))
        .await?;
    Ok(token.as_str().to_owned())
}

/// Inserts `n` customers for `tenant` through the SDK and returns their ids.
pub(crate) async fn seed(pool: &TenantPool, tenant: TenantId, n: usize) -> Vec<uuid::Uuid> {
    let mut tx = pool.begin(tenant).await.expect("begin");
    let mut ids = Vec::new();
    for i in 0..n {
        let row = tx
            .query_one(
                "INSERT INTO customers (email, name) VALUES ($1, $2) RETURNING id",
                &[&format!("c{i}@{tenant}.example"), &format!("customer {i}")],
            )
            .await
            .expect("insert");
        ids.push(row.get(0));
    }
    tx.commit().await.expect("commit");
    ids
}

/// Every tenant id visible to `tenant` in customers.
pub(crate) async fn visible_tenants(pool: &TenantPool, tenant: TenantId) -> Vec<uuid::Uuid> {
    let mut tx = pool.begin(tenant).await.expect("begin");
    let rows = tx
        .query("SELECT tenant_id FROM customers", &[])
        .await
        .unwrap_or_else(|e| panic!("select: {e:?}"));
    tx.commit().await.expect("commit");
    rows.iter().map(|r| r.get(0)).collect()
}
