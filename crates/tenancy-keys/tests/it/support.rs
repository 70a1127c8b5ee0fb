use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tenancy_core::{ContextKey, TenantId};
use tenancy_keys::{FieldRef, Keyring, LocalKeyProvider};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{PoolOptions, TenantPool};
use tokio_postgres::{Client, NoTls};

static TEMPLATE: TemplateDb = TemplateDb::new("keys_tpl");
static DIRS: AtomicU64 = AtomicU64::new(0);

const KEY_HEX: &str = "1f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f702";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

/// An application table with a sealed column.
pub(crate) const APP_SCHEMA: &str = "
CREATE TABLE secrets (
    tenant_id uuid NOT NULL,
    id        bigint NOT NULL,
    body      bytea,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy.make_tenant_table('secrets');
";

pub(crate) async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A fresh database with the runtime, the audit table, the data-key table and an app table.
pub(crate) async fn fresh_db() -> TestDb {
    let db = TEMPLATE
        .fresh(|cluster, db| async move {
            let su = cluster.connect(&db).await?;
            bootstrap::bootstrap_cluster(&su).await?;
            bootstrap::bootstrap_database(&su, &db).await?;
            let owner = connect(cluster.config_as(OWNER_ROLE, &db)).await;
            bootstrap::install_runtime(&owner, &key()).await?;
            tenancy_audit::install(&owner).await?;
            tenancy_keys::install(&owner).await?;
            // Installing twice changes nothing.
            tenancy_keys::install(&owner).await?;
            owner.batch_execute(APP_SCHEMA).await?;
            Ok(())
        })
        .await
        .expect("fresh database");
    prepare_clone(&db).await;
    db
}

/// Database-level settings a cloned or restored database needs.
pub(crate) async fn prepare_clone(db: &TestDb) {
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap database");
}

pub(crate) fn pool(db: &TestDb) -> TenantPool {
    TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            max_size: 4,
            ..PoolOptions::default()
        },
    )
    .expect("pool")
}

/// A fresh, private key directory (not created yet).
pub(crate) fn key_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("tenancy-keys-{}-{n}", std::process::id()))
}

pub(crate) fn keyring(dir: &std::path::Path) -> Keyring<LocalKeyProvider> {
    Keyring::new(Arc::new(LocalKeyProvider::open(dir).expect("key dir")))
}

/// Seals `text` for `secrets.body` row `id` and writes it, in one committed transaction.
pub(crate) async fn write_secret(
    ring: &Keyring<LocalKeyProvider>,
    pool: &TenantPool,
    tenant: TenantId,
    id: i64,
    text: &str,
) -> Vec<u8> {
    let mut tx = pool.begin(tenant).await.expect("begin");
    let row = id.to_string();
    let field = FieldRef::new("secrets", "body", &row).expect("field");
    let sealed = ring
        .seal(&mut tx, &field, text.as_bytes())
        .await
        .expect("seal");
    tx.execute(
        "INSERT INTO secrets (id, body) VALUES ($1, $2) \
         ON CONFLICT (tenant_id, id) DO UPDATE SET body = excluded.body",
        &[&id, &sealed],
    )
    .await
    .expect("insert secret");
    tx.commit().await.expect("commit");
    sealed
}

/// Reads and opens `secrets.body` row `id`.
pub(crate) async fn read_secret(
    ring: &Keyring<LocalKeyProvider>,
    pool: &TenantPool,
    tenant: TenantId,
    id: i64,
) -> Result<String, tenancy_keys::Error> {
    let mut tx = pool.begin_read_only(tenant).await.expect("begin");
    let sealed: Vec<u8> = tx
        .query_one("SELECT body FROM secrets WHERE id = $1", &[&id])
        .await
        .expect("select secret")
        .get(0);
    let row = id.to_string();
    let field = FieldRef::new("secrets", "body", &row).expect("field");
    let r = ring.open(&mut tx, &field, &sealed).await;
    tx.commit().await.expect("commit");
    r.map(|p| String::from_utf8(p).expect("utf-8"))
}
