//! Sealing and opening through a TenantTx: round trip, bindings, tampering, isolation.

use tenancy_core::TenantId;
use tenancy_keys::{sealed_version, Error, FieldRef, OVERHEAD};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;

use crate::support::{connect, fresh_db, key_dir, keyring, pool, read_secret, write_secret};

#[tokio::test]
async fn sealed_values_open_only_where_they_were_sealed() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let ring = keyring(&dir);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());

    // No keys yet: a clear refusal, nothing sealed.
    let mut tx = pool.begin(a).await.expect("begin");
    let f1 = FieldRef::new("secrets", "body", "1").expect("field");
    assert!(matches!(
        ring.seal(&mut tx, &f1, b"x").await,
        Err(Error::NoDataKeys(t)) if t == a
    ));
    tx.rollback().await.expect("rollback");

    assert_eq!(ring.create_keys(&pool, a).await.expect("keys a"), 1);
    assert_eq!(ring.create_keys(&pool, a).await.expect("idempotent"), 1);
    ring.create_keys(&pool, b).await.expect("keys b");

    let sealed = write_secret(&ring, &pool, a, 1, "alpha secret").await;
    assert_eq!(sealed.len(), OVERHEAD + "alpha secret".len());
    assert_eq!(sealed_version(&sealed).expect("version"), 1);
    assert!(!sealed.windows(5).any(|w| w == b"alpha"));
    assert_eq!(
        read_secret(&ring, &pool, a, 1).await.expect("open"),
        "alpha secret"
    );
    // Sealing twice gives different bytes (random nonce).
    let again = write_secret(&ring, &pool, a, 1, "alpha secret").await;
    assert_ne!(sealed, again);

    let mut tx = pool.begin(a).await.expect("begin");
    for (table, column, row) in [
        ("secrets", "body", "2"),
        ("secrets", "title", "1"),
        ("other", "body", "1"),
    ] {
        let f = FieldRef::new(table, column, row).expect("field");
        let e = ring
            .open(&mut tx, &f, &sealed)
            .await
            .expect_err("moved value");
        assert!(
            matches!(e, Error::Open { .. }),
            "{table}.{column} row {row}: {e}"
        );
        assert!(e
            .to_string()
            .contains("sealed for another tenant, table, column or row"));
    }
    // Tampering: each part of the value, and a cut-off value.
    for i in [0usize, 1, 4, 5, 16, 17, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x40;
        let e = ring.open(&mut tx, &f1, &bad).await.expect_err("tampered");
        assert!(
            matches!(
                e,
                Error::Open { .. } | Error::Malformed(_) | Error::NoDataKey { .. }
            ),
            "byte {i}: {e}"
        );
    }
    let e = ring
        .open(&mut tx, &f1, &sealed[..OVERHEAD - 1])
        .await
        .expect_err("short");
    assert!(matches!(e, Error::Malformed(_)), "{e}");
    assert!(matches!(
        ring.open(&mut tx, &f1, &[]).await,
        Err(Error::Malformed(_))
    ));
    // Still opens untouched.
    assert_eq!(
        ring.open(&mut tx, &f1, &sealed).await.expect("open"),
        b"alpha secret"
    );
    tx.rollback().await.expect("rollback");

    // Moved to tenant b (same table, column, row, and b has a data key version 1 too).
    let mut tx = pool.begin(b).await.expect("begin b");
    let e = ring
        .open(&mut tx, &f1, &sealed)
        .await
        .expect_err("other tenant");
    assert!(
        matches!(e, Error::Open { tenant, .. } if tenant == b),
        "{e}"
    );
    tx.rollback().await.expect("rollback");

    // Bad field references are refused before any work.
    assert!(FieldRef::new("", "body", "1").is_err());
    assert!(FieldRef::new("secrets", "bo\0dy", "1").is_err());
    assert!(FieldRef::new("secrets", "body", &"x".repeat(1025)).is_err());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn runtime_role_sees_and_changes_only_its_own_tenants_keys() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let ring = keyring(&dir);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    ring.create_keys(&pool, a).await.expect("keys a");
    ring.create_keys(&pool, b).await.expect("keys b");
    ring.rotate_data_key(&pool, b).await.expect("rotate b");

    let mut tx = pool.begin(a).await.expect("begin a");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM tenancy.data_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1, "tenant a sees only its own key");
    let n: i64 = tx
        .query_one(
            "SELECT count(*) FROM tenancy.data_keys WHERE tenant_id = $1",
            &[&b.as_uuid()],
        )
        .await
        .expect("count b")
        .get(0);
    assert_eq!(n, 0, "tenant a reads none of tenant b's wrapped keys");
    let changed = tx
        .execute(
            "UPDATE tenancy.data_keys SET kek_version = 9 WHERE tenant_id = $1",
            &[&b.as_uuid()],
        )
        .await
        .expect("update b");
    assert_eq!(changed, 0);
    let deleted = tx
        .execute(
            "DELETE FROM tenancy.data_keys WHERE tenant_id = $1",
            &[&b.as_uuid()],
        )
        .await
        .expect("delete b");
    assert_eq!(deleted, 0);
    let e = tx
        .execute(
            "INSERT INTO tenancy.data_keys (tenant_id, version, wrapped, kek_version) \
             VALUES ($1, 7, '\\x00', 1)",
            &[&b.as_uuid()],
        )
        .await
        .expect_err("insert for b");
    let chain = chain(&e);
    assert!(chain.contains("row-level security"), "{chain}");
    tx.rollback().await.expect("rollback");

    // Without a tenant context, the runtime role sees nothing and cannot truncate.
    let raw = connect(db.config_as(RUNTIME_ROLE)).await;
    let n: i64 = raw
        .query_one("SELECT count(*) FROM tenancy.data_keys", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(raw
        .batch_execute("TRUNCATE tenancy.data_keys")
        .await
        .is_err());

    // Tenant b still has both of its keys.
    let status = ring.status(&pool, b).await.expect("status b");
    assert_eq!(status.data_keys.len(), 2);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// An error and its sources, for matching the server's message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn a_wrapped_key_copied_from_another_tenant_or_altered_does_not_unwrap() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let ring = keyring(&dir);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    ring.create_keys(&pool, a).await.expect("keys a");
    ring.create_keys(&pool, b).await.expect("keys b");
    write_secret(&ring, &pool, a, 1, "a's secret").await;

    // The superuser (no row-level security) puts b's wrapped key in a's row.
    let su = db.connect_superuser().await.expect("superuser");
    let swap = "UPDATE tenancy.data_keys SET wrapped = \
                (SELECT wrapped FROM tenancy.data_keys WHERE tenant_id = $2 AND version = 1) \
                WHERE tenant_id = $1 AND version = 1";
    let n = su
        .execute(swap, &[&a.as_uuid(), &b.as_uuid()])
        .await
        .expect("swap");
    assert_eq!(n, 1);
    let e = read_secret(&keyring(&dir), &pool, a, 1)
        .await
        .expect_err("foreign wrapped key");
    assert!(
        matches!(e, Error::Unwrap { tenant, kek_version: 1 } if tenant == a),
        "{e}"
    );

    // One flipped bit of a wrapped key.
    su.execute(
        "UPDATE tenancy.data_keys SET wrapped = set_byte(wrapped, 20, get_byte(wrapped, 20) # 1) \
         WHERE tenant_id = $1",
        &[&b.as_uuid()],
    )
    .await
    .expect("flip");
    ring.create_keys(&pool, b).await.expect("keys b exist");
    let mut tx = pool.begin(b).await.expect("begin b");
    let f = FieldRef::new("secrets", "body", "9").expect("field");
    let e = keyring(&dir)
        .seal(&mut tx, &f, b"x")
        .await
        .expect_err("altered");
    assert!(matches!(e, Error::Unwrap { .. }), "{e}");
    tx.rollback().await.expect("rollback");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
