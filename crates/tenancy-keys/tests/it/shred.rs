//! Crypto-shredding: a dump taken before the shred stops opening after it.

use std::path::{Path, PathBuf};
use std::process::Command;

use tenancy_audit::{Actor, ActorKind};
use tenancy_core::TenantId;
use tenancy_keys::{Error, KekState, KeyProvider, LocalKeyProvider};
use tenancy_pg::testing::TestDb;
use tenancy_pg::PgBinaries;

use crate::support::{fresh_db, key_dir, keyring, pool, prepare_clone, read_secret, write_secret};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run client binary");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client binary of the server's version: next to `initdb`, or next to the file
/// `initdb` links to (a `PATH` directory may hold only links to the server binaries).
fn client_bin(bins: &PgBinaries, name: &str) -> PathBuf {
    let direct = bins.bin(name);
    if direct.exists() {
        return direct;
    }
    let initdb = std::fs::canonicalize(bins.bin("initdb")).expect("resolve initdb");
    let beside = initdb.with_file_name(name);
    assert!(
        beside.exists(),
        "{name} not found next to {}",
        initdb.display()
    );
    beside
}

/// `pg_dump -Fc` of `db` into `file`, with the server binaries' own pg_dump.
fn dump(bins: &PgBinaries, db: &TestDb, file: &Path) {
    let c = db.cluster;
    run(Command::new(client_bin(bins, "pg_dump"))
        .arg("-Fc")
        .arg("-h")
        .arg(c.data_dir())
        .arg("-p")
        .arg(c.port().to_string())
        .arg("-U")
        .arg(c.superuser())
        .arg("-f")
        .arg(file)
        .arg(&db.name));
}

/// Restores `file` into a new database on the same cluster.
async fn restore(bins: &PgBinaries, db: &TestDb, file: &Path, name: &str) -> TestDb {
    let c = db.cluster;
    let admin = c.connect("postgres").await.expect("admin");
    admin
        .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .await
        .expect("create restore target");
    run(Command::new(client_bin(bins, "pg_restore"))
        .arg("-h")
        .arg(c.data_dir())
        .arg("-p")
        .arg(c.port().to_string())
        .arg("-U")
        .arg(c.superuser())
        .arg("--exit-on-error")
        .arg("-d")
        .arg(name)
        .arg(file));
    let restored = TestDb {
        cluster: c,
        name: name.to_owned(),
    };
    prepare_clone(&restored).await;
    restored
}

#[tokio::test]
async fn shredding_makes_an_earlier_dump_unreadable() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let ring = keyring(&dir);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    ring.create_keys(&pool, a).await.expect("keys a");
    ring.create_keys(&pool, b).await.expect("keys b");
    for id in 1..=3 {
        write_secret(&ring, &pool, a, id, &format!("a secret {id}")).await;
    }
    ring.rotate_data_key(&pool, a).await.expect("rotate");
    write_secret(&ring, &pool, a, 4, "a secret 4").await;
    write_secret(&ring, &pool, b, 1, "b secret").await;

    // The backup, taken before the shred.
    let bins = PgBinaries::locate().expect("server binaries");
    let file = dir.join("before.dump");
    dump(&bins, &db, &file);
    let restored = restore(&bins, &db, &file, &format!("{}_r", db.name)).await;
    let rpool = crate::support::pool(&restored);
    // Before the shred, the restored copy opens (with a keyring that never saw the keys).
    let before = keyring(&dir);
    for id in 1..=4 {
        assert_eq!(
            read_secret(&before, &rpool, a, id)
                .await
                .expect("restored opens"),
            format!("a secret {id}")
        );
    }

    let actor = Actor::new(ActorKind::Admin, "ops@example.com");
    let report = ring.shred(&pool, a, &actor).await.expect("shred");
    assert_eq!(report.data_keys_deleted, 2);
    assert_eq!(
        ring.provider().state(a).await.expect("state"),
        KekState::Destroyed
    );

    // The live database: no data keys left, nothing opens, the shred is in the audit log.
    let e = read_secret(&ring, &pool, a, 1)
        .await
        .expect_err("live after shred");
    assert!(matches!(e, Error::Destroyed(t) if t == a), "{e}");
    let mut tx = pool.begin_read_only(a).await.expect("begin");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM tenancy.data_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    let ev = tx
        .query_one(
            "SELECT action, actor_subject, target, after FROM tenancy.audit_events",
            &[],
        )
        .await
        .expect("audit event");
    assert_eq!(ev.get::<_, String>(0), "keys.shred");
    assert_eq!(ev.get::<_, String>(1), "ops@example.com");
    assert_eq!(ev.get::<_, String>(2), format!("tenant:{a}"));
    assert_eq!(
        ev.get::<_, serde_json::Value>(3),
        serde_json::json!({ "data_keys_deleted": 2 })
    );
    tx.commit().await.expect("commit");

    // The earlier dump still holds the wrapped keys and sealed values, but nothing opens.
    for id in 1..=4 {
        let e = read_secret(&keyring(&dir), &rpool, a, id)
            .await
            .expect_err("restored after shred");
        assert!(matches!(e, Error::Destroyed(t) if t == a), "{e}");
    }
    let mut rtx = rpool.begin_read_only(a).await.expect("begin restored");
    let n: i64 = rtx
        .query_one("SELECT count(*) FROM tenancy.data_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 2, "the dump kept the wrapped keys");
    rtx.commit().await.expect("commit");
    // Keys cannot come back for the shredded tenant; the other tenant is untouched.
    assert!(matches!(
        ring.create_keys(&pool, a).await,
        Err(Error::Destroyed(_))
    ));
    assert_eq!(
        read_secret(&ring, &pool, b, 1).await.expect("b"),
        "b secret"
    );
    assert_eq!(
        read_secret(&keyring(&dir), &rpool, b, 1)
            .await
            .expect("b restored"),
        "b secret"
    );
    assert!(matches!(
        ring.provider().state(b).await.expect("state b"),
        KekState::Live { current: 1 }
    ));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A provider whose destruction fails: everything else is the local provider's.
struct FailingDestroy(LocalKeyProvider);

impl KeyProvider for FailingDestroy {
    async fn create_kek(&self, t: TenantId) -> Result<u32, Error> {
        self.0.create_kek(t).await
    }
    async fn state(&self, t: TenantId) -> Result<KekState, Error> {
        self.0.state(t).await
    }
    async fn wrap(
        &self,
        t: TenantId,
        v: Option<u32>,
        key: &[u8; 32],
        aad: &[u8],
    ) -> Result<tenancy_keys::Wrapped, Error> {
        self.0.wrap(t, v, key, aad).await
    }
    async fn unwrap(
        &self,
        t: TenantId,
        w: &tenancy_keys::Wrapped,
        aad: &[u8],
    ) -> Result<tenancy_keys::SecretKey, Error> {
        self.0.unwrap(t, w, aad).await
    }
    async fn rotate_kek(&self, t: TenantId) -> Result<u32, Error> {
        self.0.rotate_kek(t).await
    }
    async fn destroy(&self, _: TenantId) -> Result<(), Error> {
        Err(Error::Provider(
            "scheduling the key deletion was refused".into(),
        ))
    }
}

#[tokio::test]
async fn a_failed_destruction_changes_nothing() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let provider = FailingDestroy(LocalKeyProvider::open(&dir).expect("key dir"));
    let ring = tenancy_keys::Keyring::new(std::sync::Arc::new(provider));
    let a = TenantId::new_random();
    ring.create_keys(&pool, a).await.expect("keys");
    let mut tx = pool.begin(a).await.expect("begin");
    let f = tenancy_keys::FieldRef::new("secrets", "body", "1").expect("field");
    let sealed = ring.seal(&mut tx, &f, b"kept").await.expect("seal");
    tx.commit().await.expect("commit");

    let actor = Actor::new(ActorKind::Admin, "ops");
    let e = ring.shred(&pool, a, &actor).await.expect_err("shred fails");
    assert!(matches!(e, Error::Provider(_)), "{e}");
    // The wrapped keys are still there, no audit event was recorded, and the value opens
    // with a fresh keyring (nothing cached).
    let mut tx = pool.begin_read_only(a).await.expect("begin");
    let counts = tx
        .query_one(
            "SELECT (SELECT count(*) FROM tenancy.data_keys), \
                    (SELECT count(*) FROM tenancy.audit_events)",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (1, 0));
    let fresh = keyring(&dir);
    assert_eq!(
        fresh.open(&mut tx, &f, &sealed).await.expect("opens"),
        b"kept"
    );
    tx.commit().await.expect("commit");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
