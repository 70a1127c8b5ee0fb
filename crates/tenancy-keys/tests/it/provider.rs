//! The local key provider: key files, their modes, and refusals of bad files.

use std::os::unix::fs::PermissionsExt;

use tenancy_core::TenantId;
use tenancy_keys::{Error, KekState, KeyProvider, LocalKeyProvider};

use crate::support::key_dir;

fn kek_path(p: &LocalKeyProvider, t: TenantId) -> std::path::PathBuf {
    p.dir().join(format!("{t}.kek"))
}

#[tokio::test]
async fn wraps_unwraps_rotates_and_keeps_files_private() {
    let dir = key_dir();
    let p = LocalKeyProvider::open(&dir).expect("open");
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let t = TenantId::new_random();
    assert_eq!(p.state(t).await.expect("state"), KekState::Missing);
    assert!(matches!(
        p.wrap(t, None, &[7; 32], b"a").await,
        Err(Error::NoKek(_))
    ));
    assert_eq!(p.create_kek(t).await.expect("create"), 1);
    assert_eq!(p.create_kek(t).await.expect("create again"), 1);
    let mode = std::fs::metadata(kek_path(&p, t))
        .expect("file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let w1 = p.wrap(t, None, &[7; 32], b"aad").await.expect("wrap");
    assert_eq!(w1.kek_version, 1);
    assert_eq!(*p.unwrap(t, &w1, b"aad").await.expect("unwrap"), [7; 32]);
    // Other associated data, another tenant or another version: refused.
    assert!(matches!(
        p.unwrap(t, &w1, b"other").await,
        Err(Error::Unwrap { .. })
    ));
    let u = TenantId::new_random();
    p.create_kek(u).await.expect("create u");
    assert!(matches!(
        p.unwrap(u, &w1, b"aad").await,
        Err(Error::Unwrap { .. })
    ));

    assert_eq!(p.rotate_kek(t).await.expect("rotate"), 2);
    assert_eq!(
        p.state(t).await.expect("state"),
        KekState::Live { current: 2 }
    );
    let w2 = p.wrap(t, None, &[9; 32], b"aad").await.expect("wrap v2");
    assert_eq!(w2.kek_version, 2);
    assert_eq!(
        *p.unwrap(t, &w1, b"aad").await.expect("old still opens"),
        [7; 32]
    );
    assert_eq!(*p.unwrap(t, &w2, b"aad").await.expect("new opens"), [9; 32]);
    let mut wrong = w1.clone();
    wrong.kek_version = 2;
    assert!(matches!(
        p.unwrap(t, &wrong, b"aad").await,
        Err(Error::Unwrap { .. })
    ));
    wrong.kek_version = 3;
    assert!(matches!(
        p.unwrap(t, &wrong, b"aad").await,
        Err(Error::NoKekVersion { version: 3, .. })
    ));
    // A fresh provider on the same directory reads the same keys.
    let again = LocalKeyProvider::open(&dir).expect("reopen");
    assert_eq!(
        *again.unwrap(t, &w2, b"aad").await.expect("reopened"),
        [9; 32]
    );

    p.destroy(t).await.expect("destroy");
    p.destroy(t).await.expect("destroy is idempotent");
    assert_eq!(p.state(t).await.expect("state"), KekState::Destroyed);
    assert!(matches!(
        p.unwrap(t, &w1, b"aad").await,
        Err(Error::Destroyed(_))
    ));
    assert!(matches!(p.create_kek(t).await, Err(Error::Destroyed(_))));
    assert!(matches!(p.rotate_kek(t).await, Err(Error::Destroyed(_))));
    // The other tenant is untouched; no temporary file is left behind.
    assert_eq!(
        p.state(u).await.expect("state u"),
        KekState::Live { current: 1 }
    );
    let leftovers = std::fs::read_dir(&dir)
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .unwrap_or(true)
        })
        .count();
    assert_eq!(leftovers, 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn refuses_corrupt_foreign_and_exposed_files() {
    let dir = key_dir();
    let p = LocalKeyProvider::open(&dir).expect("open");
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    p.create_kek(a).await.expect("create a");
    let w = p.wrap(a, None, &[1; 32], b"x").await.expect("wrap");
    let good = std::fs::read(kek_path(&p, a)).expect("read");

    // One flipped byte: checksum.
    let mut bad = good.clone();
    bad[30] ^= 1;
    std::fs::write(kek_path(&p, a), &bad).expect("write");
    let e = p.unwrap(a, &w, b"x").await.expect_err("corrupt");
    assert!(e.to_string().contains("checksum"), "{e}");
    // Truncated, and not a key file at all.
    std::fs::write(kek_path(&p, a), &good[..good.len() - 5]).expect("write");
    assert!(matches!(p.state(a).await, Err(Error::KeyFile { .. })));
    std::fs::write(kek_path(&p, a), b"hello").expect("write");
    let e = p.state(a).await.expect_err("not a key file");
    assert!(e.to_string().contains("not a tenancy key file"), "{e}");
    // Tenant a's file put in place of tenant b's: foreign.
    std::fs::write(kek_path(&p, b), &good).expect("write");
    std::fs::set_permissions(kek_path(&p, b), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    let e = p.wrap(b, None, &[1; 32], b"x").await.expect_err("foreign");
    assert!(
        e.to_string().contains(&format!("belongs to tenant {a}")),
        "{e}"
    );
    // Readable by others.
    std::fs::write(kek_path(&p, a), &good).expect("restore");
    std::fs::set_permissions(kek_path(&p, a), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let e = p.state(a).await.expect_err("exposed file");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(kek_path(&p, a), std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    assert_eq!(*p.unwrap(a, &w, b"x").await.expect("restored"), [1; 32]);
    // A directory others can read is refused.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let e = LocalKeyProvider::open(&dir).expect_err("exposed dir");
    assert!(e.to_string().contains("chmod 700"), "{e}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
