use tenancy_audit::{Actor, ActorKind, Event};
use tenancy_core::{ContextKey, TenantId};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{PoolOptions, TenantPool};
use tokio_postgres::{Client, NoTls};

static TEMPLATE: TemplateDb = TemplateDb::new("audit_tpl");

const KEY_HEX: &str = "0f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f702";

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex("test".parse().expect("kid"), KEY_HEX).expect("key")
}

pub(crate) const APP_SCHEMA: &str = "
CREATE TABLE notes (
    tenant_id uuid NOT NULL,
    id        bigint NOT NULL,
    body      text NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
SELECT tenancy.make_tenant_table('notes');
";

pub(crate) async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A fresh database with the runtime, the catalog, the audit table and an app table.
pub(crate) async fn fresh_db() -> TestDb {
    let db = TEMPLATE
        .fresh(|cluster, db| async move {
            let su = cluster.connect(&db).await?;
            bootstrap::bootstrap_cluster(&su).await?;
            bootstrap::bootstrap_database(&su, &db).await?;
            let mut owner = connect(cluster.config_as(OWNER_ROLE, &db)).await;
            bootstrap::install_runtime(&owner, &key()).await?;
            tenancy_catalog::migrate(&mut owner).await?;
            tenancy_audit::install(&owner).await?;
            tenancy_audit::install_catalog(&owner).await?;
            tenancy_audit::install_catalog(&owner).await?;
            // Installing twice changes nothing.
            tenancy_audit::install(&owner).await?;
            owner.batch_execute(APP_SCHEMA).await?;
            Ok(())
        })
        .await
        .expect("fresh database");
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap clone");
    db
}

pub(crate) async fn owner(db: &TestDb) -> Client {
    connect(db.config_as(OWNER_ROLE)).await
}

pub(crate) fn pool(db: &TestDb, size: usize) -> TenantPool {
    TenantPool::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions {
            max_size: size,
            ..PoolOptions::default()
        },
    )
    .expect("pool")
}

pub(crate) fn event(action: &str, n: i64) -> Event {
    Event::new(Actor::new(ActorKind::User, "user-1"), action)
        .target(format!("note:{n}"))
        .after(serde_json::json!({ "id": n, "body": format!("note {n}") }))
        .request_id(format!("req-{n}"))
        .client_addr("192.0.2.7".parse().expect("ip"))
}

/// Writes a note and its audit event in one transaction, and commits.
pub(crate) async fn audited_write(pool: &TenantPool, tenant: TenantId, n: i64) {
    let mut tx = pool.begin(tenant).await.expect("begin");
    tx.execute(
        "INSERT INTO notes (id, body) VALUES ($1, $2)",
        &[&n, &format!("note {n}")],
    )
    .await
    .expect("insert note");
    tenancy_audit::record(&mut tx, &event("note.create", n))
        .await
        .expect("record");
    tx.commit().await.expect("commit");
}

/// Seals until no event of the database is left unsealed. The sealer takes only events of
/// transactions below the snapshot's xmin, which is cluster-wide: other tests' open
/// transactions (in other databases) can hold a pass back for a moment.
pub(crate) async fn seal_all(owner: &mut Client) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut sealed = 0;
    loop {
        sealed += tenancy_audit::seal(owner, 1000).await.expect("seal").sealed;
        let left: i64 = owner
            .query_one(
                "SELECT count(*) FROM tenancy.audit_events WHERE chain_pos IS NULL",
                &[],
            )
            .await
            .expect("count unsealed")
            .get(0);
        if left == 0 {
            return sealed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} events still unsealed after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
