//! Damaged and forged archives are refused with an error that says what is wrong, and
//! leave the target tenant without a single row, even when earlier tables had already
//! been loaded when the damage was found.

use tenancy_core::Placement;
use tenancy_transfer::Error;

use crate::support::*;

/// A deployment with a filled pooled source, its archive, and an empty pooled target.
async fn setup() -> (Env, Vec<u8>, tenancy_core::TenantId) {
    let mut env = env().await;
    let source = env.tenant("source", Placement::Pooled).await;
    env.fill(source, "src", 25).await;
    let archive = env.export(source).await;
    let target = env.tenant("target", Placement::Pooled).await;
    (env, archive, target)
}

async fn refused(env: &Env, target: tenancy_core::TenantId, archive: &[u8]) -> Error {
    let e = env
        .import(target, archive)
        .await
        .expect_err("the archive is refused");
    assert_eq!(env.row_count(target).await, 0, "rows imported by {e}");
    // Nothing half-done on the file side either: verification alone refuses it.
    assert!(
        tenancy_transfer::verify_archive(archive, &tenancy_transfer::NoProgress)
            .await
            .is_err()
            || matches!(e, Error::Incompatible(_) | Error::Refused(_))
    );
    e
}

#[tokio::test]
async fn a_changed_row_is_refused_and_nothing_is_imported() {
    let (env, mut archive, target) = setup().await;
    // A row of the last table (t02): every other table was loaded before it is reached.
    let at = find(&archive, b"src 25 child child");
    archive[at + 4] = b'6';
    let e = refused(&env, target, &archive).await;
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("table \"t02\"") && text.contains("checksum"),
        "{text}"
    );
}

#[tokio::test]
async fn a_truncated_archive_is_refused_and_nothing_is_imported() {
    let (env, archive, target) = setup().await;
    for cut in [5, archive.len() / 2, archive.len() - 1] {
        let e = refused(&env, target, &archive[..cut]).await;
        assert!(e.to_string().contains("truncated"), "cut at {cut}: {e}");
    }
}

#[tokio::test]
async fn a_wrong_checksum_is_refused_and_nothing_is_imported() {
    let (env, archive, target) = setup().await;
    // The declared checksum of t02 changed (its rows intact).
    let fs = frames(&archive);
    let (_, end) = fs
        .iter()
        .rfind(|(tag, _)| *tag == b'E')
        .expect("an end frame");
    let mut declared: tenancy_transfer::TableSummary = serde_json::from_slice(end).expect("end");
    let at = find(&archive, end);
    let first = declared.checksum.remove(0);
    declared.checksum.push(if first == '0' { '1' } else { '0' });
    let mut forged = archive[..at].to_vec();
    let bytes = serde_json::to_vec(&declared).expect("json");
    assert_eq!(bytes.len(), end.len());
    forged.extend_from_slice(&bytes);
    forged.extend_from_slice(&archive[at + end.len()..]);
    let e = refused(&env, target, &forged).await;
    assert!(
        e.to_string().contains("declares") && e.to_string().contains("t02"),
        "{e}"
    );
    // A header byte changed (the digest in the summary catches what no table checksum
    // covers).
    let mut forged = archive.clone();
    let at = find(&forged, b"\"slug\":\"source\"");
    forged[at + 9] = b'S';
    let e = refused(&env, target, &forged).await;
    assert!(e.to_string().contains("digest"), "{e}");
    // Not an archive at all.
    let e = refused(&env, target, b"PGDMP not ours").await;
    assert!(e.to_string().contains("not a tenancy export"), "{e}");
}

#[tokio::test]
async fn an_archive_at_a_newer_app_version_is_refused_with_what_to_do() {
    let (env, archive, target) = setup().await;
    let newer = reforge(
        &archive,
        |h| {
            h.app.version = 3;
            h.app
                .migrations
                .push(tenancy_transfer::format::MigrationRef {
                    version: 3,
                    name: "0003_future".into(),
                    checksum: "ab".repeat(32),
                });
        },
        |_, _| None,
    )
    .await;
    // The forgery is a well-formed archive: only the version stops it.
    tenancy_transfer::verify_archive(newer.as_slice(), &tenancy_transfer::NoProgress)
        .await
        .expect("well-formed");
    let e = refused(&env, target, &newer).await;
    let text = e.to_string();
    assert!(matches!(e, Error::Incompatible(_)), "{text}");
    assert!(
        text.contains("app version 3") && text.contains("tenancy migrate"),
        "{text}"
    );
}

#[tokio::test]
async fn an_archive_of_another_app_is_refused() {
    let (env, archive, target) = setup().await;
    let other = reforge(
        &archive,
        |h| h.app.migrations[0].checksum = "cd".repeat(32),
        |_, _| None,
    )
    .await;
    let e = refused(&env, target, &other).await;
    assert!(e.to_string().contains("another app"), "{e}");
}

#[tokio::test]
async fn an_archive_at_an_older_app_version_is_imported_with_the_later_tables_empty() {
    let (env, archive, target) = setup().await;
    // What version 1 of the app exported: no `kinds` table yet.
    let older = reforge(
        &archive,
        |h| {
            h.app.version = 1;
            h.app.migrations.retain(|m| m.version <= 1);
            h.tables.retain(|t| t.name != "kinds");
        },
        |_, _| None,
    )
    .await;
    let s = env.import(target, &older).await.expect("older archive");
    assert_eq!((s.from_version, s.to_version), (1, 2));
    assert_eq!(env.row_count(target).await, 25 * 3);
}

#[tokio::test]
async fn rows_forged_to_name_another_tenant_are_refused_and_reach_no_one() {
    let mut env = env().await;
    let source = env.tenant("source", Placement::Pooled).await;
    env.fill(source, "src", 5).await;
    let victim = env.tenant("victim", Placement::Pooled).await;
    env.fill(victim, "vic", 3).await;
    let victim_before = env.contents(victim).await;
    let archive = env.export(source).await;
    let target = env.tenant("target", Placement::Pooled).await;
    // Each t00 row claims the victim's tenant id (checksums recomputed: well-formed).
    let forged = reforge(
        &archive,
        |_| {},
        |table, line| {
            (table == "t00").then(|| {
                format!(
                    "{{\"tenant_id\": \"{victim}\", {}",
                    line.trim_start_matches('{')
                )
            })
        },
    )
    .await;
    let e = env.import(target, &forged).await.expect_err("refused");
    assert!(e.to_string().contains("t00"), "{e}");
    assert_eq!(env.row_count(target).await, 0);
    assert_eq!(env.contents(victim).await, victim_before);
    // A header that lists tenant_id as a column is refused before any row is read.
    let forged = reforge(
        &archive,
        |h| {
            h.tables[0]
                .columns
                .push(tenancy_transfer::format::ColumnDef {
                    name: "tenant_id".into(),
                    type_name: "uuid".into(),
                })
        },
        |_, _| None,
    )
    .await;
    let e = env.import(target, &forged).await.expect_err("refused");
    assert!(e.to_string().contains("never carries tenant ids"), "{e}");
    assert_eq!(env.contents(victim).await, victim_before);
}
