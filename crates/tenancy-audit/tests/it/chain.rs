//! Sealing, checkpoints and verification: every kind of tampering by the owner role is
//! detected and named.

use std::sync::Arc;

use tenancy_audit::{
    event_hash, load_events, Signer, StoredEvent, TamperKind, Trust, Verdict, GENESIS,
};
use tenancy_core::TenantId;
use tokio_postgres::Client;

use crate::support::{audited_write, fresh_db, owner, pool, seal_all};

const EVENTS: i64 = 6;

struct Setup {
    owner: Client,
    tenant: TenantId,
    other: TenantId,
    signer: Signer,
    _db: tenancy_pg::testing::TestDb,
}

/// Two tenants with six sealed events each, and a signed checkpoint at the head.
async fn setup() -> Setup {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (tenant, other) = (TenantId::new_random(), TenantId::new_random());
    for n in 1..=EVENTS {
        audited_write(&pool, tenant, n).await;
        audited_write(&pool, other, n).await;
    }
    let mut owner = owner(&db).await;
    // Small batches: several seal transactions.
    let first = tenancy_audit::seal(&mut owner, 4)
        .await
        .expect("seal")
        .sealed;
    assert_eq!(first + seal_all(&mut owner).await, 2 * EVENTS as u64);
    let signer = Signer::from_seed([7; 32]);
    let cps = tenancy_audit::checkpoint(&owner, &owner, &signer, None)
        .await
        .expect("checkpoint");
    assert_eq!(cps.len(), 2);
    assert!(cps.iter().all(|c| c.chain_pos == EVENTS));
    // Nothing new: no new checkpoint.
    assert!(tenancy_audit::checkpoint(&owner, &owner, &signer, None)
        .await
        .expect("checkpoint")
        .is_empty());
    let s = Setup {
        owner,
        tenant,
        other,
        signer,
        _db: db,
    };
    let v = verify(&s).await;
    assert!(v.intact(), "{v:?}");
    assert_eq!(
        (v.sealed, v.head, v.checkpoints),
        (EVENTS as u64, EVENTS, 1)
    );
    s
}

fn trust(s: &Setup) -> Trust {
    Trust::Keys(vec![s.signer.public_key_hex()])
}

async fn verify(s: &Setup) -> Verdict {
    let mut v = tenancy_audit::verify_database(
        &s.owner,
        Some(&s.owner),
        Some(s.tenant.as_uuid()),
        &[],
        &trust(s),
    )
    .await
    .expect("verify");
    assert_eq!(v.len(), 1);
    // The other tenant's chain is untouched by every tampering below.
    let o = tenancy_audit::verify_database(
        &s.owner,
        Some(&s.owner),
        Some(s.other.as_uuid()),
        &[],
        &trust(s),
    )
    .await
    .expect("verify other");
    assert!(o[0].intact(), "{o:?}");
    v.remove(0)
}

/// Runs SQL as the owner with the append-only trigger disabled (the owner can do that:
/// it owns the table).
async fn tamper(s: &Setup, sql: &str) {
    s.owner
        .batch_execute(&format!(
            "ALTER TABLE tenancy.audit_events DISABLE TRIGGER USER; {sql}; \
             ALTER TABLE tenancy.audit_events ENABLE TRIGGER USER;"
        ))
        .await
        .expect(sql);
}

fn at(s: &Setup, pos: i64) -> String {
    format!("tenant_id = '{}' AND chain_pos = {pos}", s.tenant)
}

async fn seq_at(s: &Setup, pos: i64) -> i64 {
    s.owner
        .query_one(
            "SELECT seq FROM tenancy.audit_events WHERE tenant_id = $1 AND chain_pos = $2",
            &[&s.tenant.as_uuid(), &pos],
        )
        .await
        .expect("seq")
        .get(0)
}

fn assert_found(v: &Verdict, kind: TamperKind, pos: i64, seq: Option<i64>) {
    let t = v
        .tampering
        .as_ref()
        .unwrap_or_else(|| panic!("not detected: {v:?}"));
    assert_eq!((t.kind, t.chain_pos), (kind, Some(pos)), "{t}");
    if seq.is_some() {
        assert_eq!(t.seq, seq, "{t}");
    }
}

#[tokio::test]
async fn a_modified_field_is_detected_and_named() {
    let s = setup().await;
    let seq = seq_at(&s, 3).await;
    tamper(&s, &format!("UPDATE tenancy.audit_events SET after = '{{\"id\": 3, \"body\": \"edited\"}}' WHERE {}", at(&s, 3))).await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::Modified, 3, Some(seq));
    assert!(v
        .tampering
        .expect("found")
        .detail
        .contains(&format!("seq {seq}")));
}

#[tokio::test]
async fn a_deleted_middle_event_is_detected_and_named() {
    let s = setup().await;
    let next = seq_at(&s, 4).await;
    tamper(
        &s,
        &format!("DELETE FROM tenancy.audit_events WHERE {}", at(&s, 3)),
    )
    .await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::Deleted, 3, Some(next));
}

#[tokio::test]
async fn a_forged_inserted_event_is_detected_even_with_a_correct_hash() {
    let s = setup().await;
    // The forger shifts events 3.. up by one and puts a well-formed event at position 3
    // that links to position 2 (it knows the hash algorithm, not the checkpoint key).
    let events = load_events(&s.owner, s.tenant.as_uuid())
        .await
        .expect("events");
    let mut forged: StoredEvent = events[2].clone();
    forged.seq = 1_000_000;
    forged.recorded.action = "note.delete".into();
    let prev: [u8; 32] = hex::decode(events[1].hash.as_deref().expect("hash"))
        .expect("hex")
        .try_into()
        .expect("32");
    let h = event_hash(&forged, 3, &prev);
    tamper(
        &s,
        &format!(
            "UPDATE tenancy.audit_events SET chain_pos = chain_pos + 1000 WHERE tenant_id = '{t}' AND chain_pos >= 3; \
             UPDATE tenancy.audit_events SET chain_pos = chain_pos - 999 WHERE tenant_id = '{t}' AND chain_pos > 1000; \
             INSERT INTO tenancy.audit_events (tenant_id, seq, occurred_at, actor_kind, actor_subject, action, \
                 target, after, request_id, client_addr, outcome, chain_pos, prev_hash, hash) \
             OVERRIDING SYSTEM VALUE SELECT tenant_id, 1000000, occurred_at, actor_kind, actor_subject, 'note.delete', \
                 target, after, request_id, client_addr, outcome, 3, '\\x{prev}', '\\x{h}' \
               FROM tenancy.audit_events WHERE tenant_id = '{t}' AND seq = {orig}",
            t = s.tenant,
            prev = hex::encode(prev),
            h = hex::encode(h),
            orig = events[2].seq,
        ),
    )
    .await;
    let v = verify(&s).await;
    // The forged event verifies on its own; the event after it does not follow it.
    assert_found(&v, TamperKind::InsertedOrReordered, 4, Some(events[2].seq));
    assert!(v.tampering.expect("found").detail.contains("seq 1000000"));
}

#[tokio::test]
async fn a_forged_event_with_a_wrong_hash_is_named() {
    let s = setup().await;
    tamper(
        &s,
        &format!(
            "INSERT INTO tenancy.audit_events (tenant_id, seq, actor_kind, action, outcome, chain_pos, prev_hash, hash) \
             OVERRIDING SYSTEM VALUE VALUES ('{t}', 999, 'admin', 'forged', 'success', {pos}, \
                 (SELECT hash FROM tenancy.audit_events WHERE {head}), '\\x{zero}')",
            t = s.tenant,
            pos = EVENTS + 1,
            head = at(&s, EVENTS),
            zero = hex::encode([1u8; 32]),
        ),
    )
    .await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::Modified, EVENTS + 1, Some(999));
}

#[tokio::test]
async fn swapped_events_are_detected_and_named() {
    let s = setup().await;
    let fourth = seq_at(&s, 4).await;
    tamper(
        &s,
        &format!(
            "UPDATE tenancy.audit_events SET chain_pos = 1000 WHERE {p3}; \
             UPDATE tenancy.audit_events SET chain_pos = 3 WHERE {p4}; \
             UPDATE tenancy.audit_events SET chain_pos = 4 WHERE tenant_id = '{t}' AND chain_pos = 1000",
            p3 = at(&s, 3),
            p4 = at(&s, 4),
            t = s.tenant,
        ),
    )
    .await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::InsertedOrReordered, 3, Some(fourth));
}

#[tokio::test]
async fn a_tail_deleted_after_a_checkpoint_is_detected() {
    let s = setup().await;
    // Without the checkpoint the shorter chain is consistent: only the signed head shows
    // what is missing.
    tamper(
        &s,
        &format!(
            "DELETE FROM tenancy.audit_events WHERE tenant_id = '{}' AND chain_pos >= 5",
            s.tenant
        ),
    )
    .await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::Truncated, 5, None);
    // Every event deleted: still named, from the checkpoint alone.
    tamper(
        &s,
        &format!(
            "DELETE FROM tenancy.audit_events WHERE tenant_id = '{}'",
            s.tenant
        ),
    )
    .await;
    let all = tenancy_audit::verify_database(&s.owner, Some(&s.owner), None, &[], &trust(&s))
        .await
        .expect("verify");
    let v = all
        .iter()
        .find(|v| v.tenant == s.tenant.as_uuid())
        .expect("the tenant is verified from its checkpoint");
    assert_found(v, TamperKind::Truncated, 1, None);
}

#[tokio::test]
async fn a_consistently_rewritten_chain_fails_against_the_checkpoint() {
    let s = setup().await;
    // The forger edits event 2 and recomputes every hash from there: the chain is
    // self-consistent, the signed head is not.
    let mut events = load_events(&s.owner, s.tenant.as_uuid())
        .await
        .expect("events");
    events[1].recorded.target = Some("note:rewritten".into());
    let mut prev = GENESIS;
    let mut sql = String::new();
    for (i, e) in events.iter().enumerate() {
        let pos = i as i64 + 1;
        let h = event_hash(e, pos, &prev);
        sql.push_str(&format!(
            "UPDATE tenancy.audit_events SET target = {target}, prev_hash = '\\x{p}', hash = '\\x{h}' WHERE {w};",
            target = e.recorded.target.as_deref().map_or("NULL".into(), |t| format!("'{t}'")),
            p = hex::encode(prev),
            h = hex::encode(h),
            w = at(&s, pos),
        ));
        prev = h;
    }
    tamper(&s, sql.trim_end_matches(';')).await;
    let v = verify(&s).await;
    assert_found(&v, TamperKind::CheckpointMismatch, EVENTS, None);
}

#[tokio::test]
async fn checkpoints_by_an_untrusted_key_count_as_forged() {
    let s = setup().await;
    let forger = Signer::from_seed([9; 32]);
    let head = load_events(&s.owner, s.tenant.as_uuid())
        .await
        .expect("events");
    let h: [u8; 32] = hex::decode(head[5].hash.as_deref().expect("hash"))
        .expect("hex")
        .try_into()
        .expect("32");
    let forged = forger.sign(s.tenant.as_uuid(), EVENTS, &h, 0);
    let v = tenancy_audit::verify_database(
        &s.owner,
        Some(&s.owner),
        Some(s.tenant.as_uuid()),
        std::slice::from_ref(&forged),
        &trust(&s),
    )
    .await
    .expect("verify");
    assert_found(&v[0], TamperKind::BadCheckpoint, EVENTS, None);
    // A checkpoint whose signature was altered.
    let mut altered = s.signer.sign(s.tenant.as_uuid(), EVENTS, &h, 0);
    altered.chain_pos = 2;
    let v = tenancy_audit::verify_database(
        &s.owner,
        None,
        Some(s.tenant.as_uuid()),
        &[altered],
        &Trust::AnyKey,
    )
    .await
    .expect("verify");
    assert_found(&v[0], TamperKind::BadCheckpoint, 2, None);
}

#[tokio::test]
async fn an_export_verifies_offline_and_shows_tampering() {
    let s = setup().await;
    let dir = std::env::temp_dir().join(format!("tenancy-audit-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let published = dir.join("checkpoints.jsonl");
    // A newer event, sealed and published to a file.
    let db2 = &s._db;
    audited_write(&pool(db2, 1), s.tenant, 100).await;
    let mut owner = owner(db2).await;
    seal_all(&mut owner).await;
    let cps = tenancy_audit::checkpoint(&owner, &owner, &s.signer, Some(&published))
        .await
        .expect("checkpoint");
    assert_eq!(cps.len(), 1);
    let from_file = tenancy_audit::read_jsonl(&published).expect("read");
    assert_eq!(from_file, cps);

    let mut out = Vec::new();
    let n = tenancy_audit::export(&s.owner, Some(&s.owner), s.tenant.as_uuid(), &[], &mut out)
        .await
        .expect("export");
    assert_eq!(n, EVENTS as u64 + 1);
    let exp = tenancy_audit::read_export(&mut out.as_slice()).expect("read export");
    assert_eq!(exp.checkpoints.len(), 2);
    assert_eq!(exp.public_keys, vec![s.signer.public_key_hex()]);
    let v = tenancy_audit::verify_chain(exp.tenant, &exp.events, &exp.checkpoints, &trust(&s));
    assert!(v.intact(), "{v:?}");

    // The same export with one event edited.
    let text = String::from_utf8(out).expect("utf8");
    let edited = text.replacen("note:2", "note:X", 1);
    assert_ne!(edited, text);
    let exp = tenancy_audit::read_export(&mut edited.as_bytes()).expect("read export");
    let v = tenancy_audit::verify_chain(exp.tenant, &exp.events, &exp.checkpoints, &trust(&s));
    assert_found(&v, TamperKind::Modified, 2, None);
    // Not an export: a clear error, not a panic.
    assert!(tenancy_audit::read_export(&mut "{\"kind\":\"event\"}\n".as_bytes()).is_err());
    assert!(tenancy_audit::read_export(&mut "".as_bytes()).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// 8 tasks append to one tenant while sealers run: every event ends up sealed exactly
/// once, in one chain with no gap.
#[tokio::test]
async fn concurrent_appends_of_one_tenant_are_sealed_exactly_once() {
    let db = fresh_db().await;
    let pool = Arc::new(pool(&db, 8));
    let t = TenantId::new_random();
    let per_task = 25i64;
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let pool = Arc::clone(&pool);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                audited_write(&pool, t, task * 1000 + i).await;
            }
        }));
    }
    // Two sealers working while the appends run.
    let mut sealers = Vec::new();
    for _ in 0..2 {
        let mut owner = owner(&db).await;
        sealers.push(tokio::spawn(async move {
            let mut sealed = 0;
            for _ in 0..40 {
                sealed += tenancy_audit::seal(&mut owner, 7)
                    .await
                    .expect("seal")
                    .sealed;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            sealed
        }));
    }
    for task in tasks {
        task.await.expect("append task");
    }
    let mut sealed = 0;
    for s in sealers {
        sealed += s.await.expect("sealer");
    }
    let mut owner = owner(&db).await;
    sealed += tenancy_audit::seal(&mut owner, 1000)
        .await
        .expect("seal")
        .sealed;
    assert_eq!(sealed, 8 * per_task as u64);
    let row = owner
        .query_one(
            "SELECT count(*), count(chain_pos), count(DISTINCT chain_pos), min(chain_pos), max(chain_pos) \
               FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&t.as_uuid()],
        )
        .await
        .expect("counts");
    let total = 8 * per_task;
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, Option<i64>>(3),
            row.get::<_, Option<i64>>(4)
        ),
        (total, total, total, Some(1), Some(total))
    );
    let v = tenancy_audit::verify_database(&owner, None, Some(t.as_uuid()), &[], &Trust::AnyKey)
        .await
        .expect("verify");
    assert!(v[0].intact() && v[0].sealed == total as u64, "{v:?}");
}
