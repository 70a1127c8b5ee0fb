//! Data-key rotation, KEK rotation and re-encryption.

use tenancy_core::TenantId;
use tenancy_keys::{sealed_version, Error, KekState, Progress, SealedColumn};

use crate::support::{fresh_db, key_dir, keyring, pool, read_secret, write_secret};

#[tokio::test]
async fn rotations_keep_old_values_open_and_reencryption_moves_them_forward() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let dir = key_dir();
    let ring = keyring(&dir);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    assert!(matches!(
        ring.rotate_data_key(&pool, a).await,
        Err(Error::NoDataKeys(_))
    ));
    ring.create_keys(&pool, a).await.expect("keys a");
    ring.create_keys(&pool, b).await.expect("keys b");
    for id in 1..=25 {
        write_secret(&ring, &pool, a, id, &format!("secret {id}")).await;
    }
    write_secret(&ring, &pool, b, 1, "b's secret").await;

    // Data-key rotation: new writes use version 2, old values still open.
    assert_eq!(ring.rotate_data_key(&pool, a).await.expect("rotate dek"), 2);
    let v2 = write_secret(&ring, &pool, a, 26, "secret 26").await;
    assert_eq!(sealed_version(&v2).expect("version"), 2);
    assert_eq!(
        read_secret(&ring, &pool, a, 3).await.expect("old"),
        "secret 3"
    );

    // KEK rotation: every data key rewrapped under KEK 2, rows untouched.
    let before: Vec<Vec<u8>> = bodies(&pool, a).await;
    let (kek, rewrapped) = ring.rotate_kek(&pool, a).await.expect("rotate kek");
    assert_eq!((kek, rewrapped), (2, 2));
    let status = ring.status(&pool, a).await.expect("status");
    assert_eq!(status.kek, KekState::Live { current: 2 });
    assert_eq!(
        status
            .data_keys
            .iter()
            .map(|k| (k.version, k.kek_version))
            .collect::<Vec<_>>(),
        vec![(1, 2), (2, 2)]
    );
    assert_eq!(
        bodies(&pool, a).await,
        before,
        "KEK rotation leaves rows alone"
    );
    // Tenant b's keys are not touched.
    let sb = ring.status(&pool, b).await.expect("status b");
    assert_eq!(sb.data_keys.len(), 1);
    assert_eq!(sb.data_keys[0].kek_version, 1);
    // A new keyring (empty cache) unwraps through the new KEK version.
    let fresh = keyring(&dir);
    assert_eq!(
        read_secret(&fresh, &pool, a, 4).await.expect("after kek"),
        "secret 4"
    );
    assert_eq!(
        read_secret(&fresh, &pool, b, 1).await.expect("b"),
        "b's secret"
    );

    // Re-encryption: 25 version-1 values, batches of 10.
    let col = SealedColumn::new("secrets", "id", "body").expect("column");
    let mut seen = Vec::new();
    let done = ring
        .reencrypt(&pool, a, &col, 10, |p| seen.push(p))
        .await
        .expect("reencrypt");
    let p = |done, resealed| Progress {
        done,
        total: 26,
        resealed,
    };
    assert_eq!(seen, vec![p(10, 10), p(20, 20), p(26, 25)]);
    assert_eq!(done, p(26, 25));
    for body in bodies(&pool, a).await {
        assert_eq!(sealed_version(&body).expect("version"), 2);
    }
    for id in [1, 13, 25, 26] {
        assert_eq!(
            read_secret(&fresh, &pool, a, id)
                .await
                .expect("reencrypted"),
            format!("secret {id}")
        );
    }
    // Nothing left to do the second time; b's row still on its only key.
    let again = ring
        .reencrypt(&pool, a, &col, 10, |_| {})
        .await
        .expect("again");
    assert_eq!(again.resealed, 0);
    assert_eq!(bodies(&pool, b).await.len(), 1);

    // Bad declarations are refused.
    assert!(SealedColumn::new("secrets; drop", "id", "body").is_err());
    assert!(SealedColumn::new("a.b.c", "id", "body").is_err());
    let missing = SealedColumn::new("secrets", "id", "nope").expect("names ok");
    assert!(matches!(
        ring.reencrypt(&pool, a, &missing, 10, |_| {}).await,
        Err(Error::Invalid(_))
    ));
    let not_bytea = SealedColumn::new("secrets", "body", "id").expect("names ok");
    assert!(matches!(
        ring.reencrypt(&pool, a, &not_bytea, 10, |_| {}).await,
        Err(Error::Invalid(_))
    ));
    assert!(ring.reencrypt(&pool, a, &col, 0, |_| {}).await.is_err());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

async fn bodies(pool: &tenancy_sdk::TenantPool, t: TenantId) -> Vec<Vec<u8>> {
    let mut tx = pool.begin_read_only(t).await.expect("begin");
    let rows = tx
        .query("SELECT body FROM secrets ORDER BY id", &[])
        .await
        .expect("bodies");
    tx.commit().await.expect("commit");
    rows.iter().map(|r| r.get(0)).collect()
}
