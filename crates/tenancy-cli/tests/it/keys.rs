//! `tenancy keys status | rotate` on a real cluster.

use std::sync::Arc;

use tenancy_keys::{Keyring, LocalKeyProvider};
use tenancy_pg::testing::TemplateDb;
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};

static TEMPLATE: TemplateDb = TemplateDb::new("cli_keys_tpl");

fn key() -> ContextKey {
    ContextKey::from_bytes("test".parse().expect("kid"), [6; 32])
}

async fn connect(cfg: tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
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
async fn keys_status_and_rotate() {
    let db = TEMPLATE
        .fresh(|cluster, db| async move {
            let su = cluster.connect(&db).await?;
            bootstrap::bootstrap_cluster(&su).await?;
            bootstrap::bootstrap_database(&su, &db).await?;
            let owner = connect(cluster.config_as(OWNER_ROLE, &db)).await;
            bootstrap::install_runtime(&owner, &key()).await?;
            tenancy_keys::install(&owner).await?;
            Ok(())
        })
        .await
        .expect("fresh database");
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap clone");
    let pool =
        TenantPool::new(db.config_as(RUNTIME_ROLE), key(), PoolOptions::default()).expect("pool");
    let dir = std::env::temp_dir().join(format!("tenancy-cli-keys-{}", uuid::Uuid::new_v4()));
    let ring = Keyring::new(Arc::new(LocalKeyProvider::open(&dir).expect("key dir")));
    let t = TenantId::new_random();
    ring.create_keys(&pool, t).await.expect("create keys");

    let url = db.cluster.url_as(RUNTIME_ROLE, &db.name);
    let hex = "06".repeat(32);
    let tenancy = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &url)
            .env("TENANCY_KEY_DIR", &dir)
            .env("TENANCY_CONTEXT_KEY_HEX", &hex)
            .args(["--context-key-id", "test"])
            .output()
            .expect("run tenancy keys")
    };
    let tenant = t.to_string();
    let o = tenancy(&["status", "--tenant", &tenant]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("key-encryption key: version 1"), "{s}");
    assert!(s.contains("data keys: 1 (current: version 1)"), "{s}");

    let o = tenancy(&["rotate", "--tenant", &tenant]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("data key version 2"));
    let o = tenancy(&["rotate", "--tenant", &tenant, "--kek"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 data keys rewrapped"));
    let o = tenancy(&["status", "--tenant", &tenant]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("key-encryption key: version 2"), "{s}");
    assert!(s.contains("data keys: 2 (current: version 2)"), "{s}");
    assert_eq!(s.matches("wrapped under KEK 2").count(), 2, "{s}");

    // Refusals: a bad tenant id, a tenant without keys.
    let o = tenancy(&["status", "--tenant", "not-a-uuid"]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a tenant id"));
    let other = TenantId::new_random().to_string();
    let o = tenancy(&["rotate", "--tenant", &other]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has no data key"),
        "{}",
        out(&o)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
