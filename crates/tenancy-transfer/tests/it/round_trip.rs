//! Export → import between placements: the target holds exactly the source's rows
//! (every table equal by count and checksum), keeps working afterwards, and the source's
//! pooled neighbours are neither exported nor touched.

use tenancy_core::Placement;

use crate::support::*;

async fn round_trip(from: Placement, to: Placement) {
    let mut env = env().await;
    let source = env.tenant("source", from).await;
    // A neighbour in the same placement, with rows of its own that must not travel.
    let neighbour = env.tenant("neighbour", from).await;
    env.fill(source, "src", 40).await;
    env.fill(neighbour, "nbr", 7).await;
    let target = env.tenant("target", to).await;
    let before = env.contents(source).await;
    let archive = env.export(source).await;
    assert!(
        !archive.windows(3).any(|w| w == b"nbr"),
        "the export holds a neighbour's row"
    );
    let summary = env.import(target, &archive).await.expect("import");
    assert_eq!(
        summary.tables.iter().map(|t| t.rows).sum::<u64>(),
        40 * 3 + 3
    );
    let after = env.contents(target).await;
    assert_eq!(before, after, "{from} -> {to}: the target differs");
    assert_eq!(env.contents(source).await, before, "the source changed");
    assert_eq!(env.row_count(neighbour).await, 7 * 3 + 3);
    // The target keeps working: its identity sequences were raised past the imported
    // keys, so the next insert does not collide with an imported row.
    let mut tx = env.router.begin(target).await.expect("begin");
    let id: i64 = tx
        .query_one("INSERT INTO t00 (name) VALUES ('after') RETURNING id", &[])
        .await
        .expect("insert after import")
        .get(0);
    assert!(id > 40, "new id {id} after 40 imported");
    tx.execute(
        "INSERT INTO t01 (name, parent_id) VALUES ('after child', $1)",
        &[&id],
    )
    .await
    .expect("child insert");
    tx.commit().await.expect("commit");
    // Importing again into the now non-empty tenant is refused and changes nothing.
    let again = env
        .import(target, &archive)
        .await
        .expect_err("second import");
    assert!(again.to_string().contains("already has rows"), "{again}");
    assert_eq!(env.row_count(target).await, 40 * 3 + 3 + 2);
}

#[tokio::test]
async fn pooled_to_pooled_under_a_new_id_is_equal_by_checksum() {
    round_trip(Placement::Pooled, Placement::Pooled).await;
}

#[tokio::test]
async fn pooled_to_schema_is_equal_by_checksum() {
    round_trip(Placement::Pooled, Placement::Schema).await;
}

#[tokio::test]
async fn pooled_to_dedicated_is_equal_by_checksum() {
    round_trip(Placement::Pooled, Placement::Dedicated).await;
}

#[tokio::test]
async fn dedicated_to_pooled_is_equal_by_checksum() {
    round_trip(Placement::Dedicated, Placement::Pooled).await;
}

#[tokio::test]
async fn schema_to_dedicated_is_equal_by_checksum() {
    round_trip(Placement::Schema, Placement::Dedicated).await;
}
