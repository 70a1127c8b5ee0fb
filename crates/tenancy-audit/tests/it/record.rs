//! Recording: events exist iff their transaction committed; the runtime role can only add
//! its own tenant's events; recording does not serialize a tenant's transactions.

use std::time::Duration;

use tenancy_audit::{Actor, ActorKind, Event, Outcome};
use tenancy_core::TenantId;

use crate::support::{self, audited_write, event, fresh_db, owner, pool};

async fn count(owner: &tokio_postgres::Client, tenant: TenantId) -> i64 {
    owner
        .query_one(
            "SELECT count(*) FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&tenant.as_uuid()],
        )
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn an_event_exists_exactly_when_its_change_committed() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    let pool = pool(&db, 2);
    let t = TenantId::new_random();

    audited_write(&pool, t, 1).await;
    assert_eq!(count(&owner, t).await, 1);

    // Rolled back: neither the note nor the event.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute("INSERT INTO notes (id, body) VALUES (2, 'two')", &[])
        .await
        .expect("insert");
    tenancy_audit::record(&mut tx, &event("note.create", 2))
        .await
        .expect("record");
    tx.rollback().await.expect("rollback");
    // Dropped without commit: rolled back too.
    let mut tx = pool.begin(t).await.expect("begin");
    tenancy_audit::record(&mut tx, &event("note.create", 3))
        .await
        .expect("record");
    drop(tx);
    // A change that fails after its event was recorded takes the event with it.
    let mut tx = pool.begin(t).await.expect("begin");
    tenancy_audit::record(&mut tx, &event("note.create", 1))
        .await
        .expect("record");
    assert!(tx
        .execute("INSERT INTO notes (id, body) VALUES (1, 'duplicate')", &[])
        .await
        .is_err());
    assert!(tx.commit().await.is_err());

    assert_eq!(count(&owner, t).await, 1);
    let row = owner
        .query_one(
            "SELECT action, target, after->>'body', client_addr::text, outcome, actor_kind, actor_subject \
               FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&t.as_uuid()],
        )
        .await
        .expect("event");
    assert_eq!(row.get::<_, String>(0), "note.create");
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("note:1"));
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("note 1"));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("192.0.2.7/32")
    );
    assert_eq!(row.get::<_, String>(4), "success");
    assert_eq!(row.get::<_, String>(5), "user");
    assert_eq!(row.get::<_, Option<String>>(6).as_deref(), Some("user-1"));
}

#[tokio::test]
async fn the_runtime_role_cannot_change_delete_truncate_or_forge_events() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (t, other) = (TenantId::new_random(), TenantId::new_random());
    audited_write(&pool, t, 1).await;
    audited_write(&pool, other, 1).await;
    let mut owner = owner(&db).await;
    support::seal_all(&mut owner).await;

    let refused = [
        "UPDATE tenancy.audit_events SET action = 'forged'",
        "UPDATE tenancy.audit_events SET chain_pos = NULL, hash = NULL, prev_hash = NULL",
        "DELETE FROM tenancy.audit_events",
        "TRUNCATE tenancy.audit_events",
        // Columns only the database and the sealer fill in.
        "INSERT INTO tenancy.audit_events (actor_kind, action, outcome, xid) \
         VALUES ('user', 'x', 'success', '1'::xid8)",
        "INSERT INTO tenancy.audit_events (actor_kind, action, outcome, chain_pos, prev_hash, hash) \
         VALUES ('user', 'x', 'success', 9, '\\x00', '\\x00')",
    ];
    for sql in refused {
        let mut tx = pool.begin(t).await.expect("begin");
        let err = tx.execute(sql, &[]).await.expect_err(sql);
        let text = format!("{err:?}");
        assert!(
            text.contains("42501")
                || text.contains("InsufficientPrivilege")
                || text.contains("permission denied"),
            "{sql}: {text}"
        );
        drop(tx);
    }
    // Another tenant's event: refused by the row-level security policy.
    let mut tx = pool.begin(t).await.expect("begin");
    let err = tx
        .execute(
            "INSERT INTO tenancy.audit_events (tenant_id, actor_kind, action, outcome) \
             VALUES ($1, 'user', 'forged', 'success')",
            &[&other.as_uuid()],
        )
        .await
        .expect_err("insert for another tenant");
    assert!(format!("{err:?}").contains("row-level security"), "{err:?}");
    drop(tx);
    // It reads its own tenant's events only.
    let mut tx = pool.begin(t).await.expect("begin");
    let rows = tx
        .query("SELECT tenant_id FROM tenancy.audit_events", &[])
        .await
        .expect("read");
    tx.commit().await.expect("commit");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, uuid::Uuid>(0), t.as_uuid());

    // The owner is held by the append-only trigger too (it can drop the trigger, which
    // the chain makes detectable: see the tamper tests).
    for sql in [
        "UPDATE tenancy.audit_events SET action = 'forged'",
        "DELETE FROM tenancy.audit_events",
        "TRUNCATE tenancy.audit_events",
    ] {
        let err = owner.execute(sql, &[]).await.expect_err(sql);
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
    // Nothing changed.
    let verdicts =
        tenancy_audit::verify_database(&owner, None, None, &[], &tenancy_audit::Trust::AnyKey)
            .await
            .expect("verify");
    assert_eq!(verdicts.len(), 2);
    assert!(
        verdicts.iter().all(|v| v.intact() && v.sealed == 1),
        "{verdicts:?}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_error() {
    let db = fresh_db().await;
    let pool = pool(&db, 1);
    let t = TenantId::new_random();
    let mut tx = pool.begin(t).await.expect("begin");
    for e in [
        Event::new(Actor::new(ActorKind::Admin, "a"), ""),
        Event::new(Actor::new(ActorKind::Admin, "a"), "has space"),
        Event::new(Actor::new(ActorKind::Admin, "a\0b"), "ok"),
        Event::new(Actor::new(ActorKind::Admin, "a"), "ok").target("x".repeat(2000)),
    ] {
        let err = tenancy_audit::record(&mut tx, &e)
            .await
            .expect_err("refused");
        assert!(matches!(err, tenancy_audit::Error::Invalid(_)), "{err}");
    }
    // The transaction is still usable: nothing reached the database.
    tenancy_audit::record(
        &mut tx,
        &Event::new(Actor::new(ActorKind::Worker, "mailer"), "mail.sent").outcome(Outcome::Failure),
    )
    .await
    .expect("record");
    tx.commit().await.expect("commit");
}

/// Two transactions of one tenant each record an event; neither waits for the other, and
/// the sealer neither waits for an open one nor seals its event before it commits.
#[tokio::test]
async fn recording_does_not_serialize_a_tenants_transactions() {
    let db = fresh_db().await;
    let pool = pool(&db, 3);
    let mut owner = owner(&db).await;
    let t = TenantId::new_random();

    let mut open = pool.begin(t).await.expect("begin");
    tenancy_audit::record(&mut open, &event("note.create", 1))
        .await
        .expect("record in the open transaction");

    let second = async {
        let mut tx = pool.begin(t).await.expect("begin");
        tenancy_audit::record(&mut tx, &event("note.create", 2))
            .await
            .expect("record");
        tx.commit().await.expect("commit");
    };
    tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second transaction waited for the first");

    let report = tokio::time::timeout(Duration::from_secs(5), tenancy_audit::seal(&mut owner, 100))
        .await
        .expect("the sealer waited for the open transaction")
        .expect("seal");
    // The open transaction's id is not below the snapshot's xmin: its event is left alone,
    // and so may be the second one (its id is above the open one's).
    assert!(report.sealed <= 1, "{report:?}");
    open.commit().await.expect("commit");

    let sealed = support::seal_all(&mut owner).await;
    let total: i64 = owner
        .query_one(
            "SELECT count(*) FROM tenancy.audit_events WHERE chain_pos IS NOT NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!((total, sealed + report.sealed), (2, 2));
}

/// `record_and_commit` sends the event's INSERT and the COMMIT together: the change and its
/// event still commit together or not at all, whichever of the two fails.
#[tokio::test]
async fn an_event_sent_with_its_commit_exists_exactly_when_its_change_committed() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    // A deferred unique key fails at COMMIT, after the event's INSERT succeeded.
    owner
        .batch_execute(
            "CREATE TABLE deferred_notes (tenant_id uuid NOT NULL, id bigint NOT NULL, \
               UNIQUE (tenant_id, id) DEFERRABLE INITIALLY DEFERRED); \
             SELECT tenancy.make_tenant_table('deferred_notes');",
        )
        .await
        .expect("deferred table");
    let pool = pool(&db, 1);
    let t = TenantId::new_random();

    // The change and its event commit.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute("INSERT INTO notes (id, body) VALUES (1, 'one')", &[])
        .await
        .expect("insert");
    tenancy_audit::record_and_commit(tx, &event("note.create", 1))
        .await
        .expect("record and commit");
    assert_eq!(
        (note_count(&pool, t, 1).await, count(&owner, t).await),
        (1, 1)
    );

    // The database refuses the event (jsonb has no NUL character): the change does not
    // commit without it.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute("INSERT INTO notes (id, body) VALUES (2, 'two')", &[])
        .await
        .expect("insert");
    let refused = event("note.create", 2).after(serde_json::json!({ "body": "a\u{0}b" }));
    let err = tenancy_audit::record_and_commit(tx, &refused)
        .await
        .expect_err("an event the database refuses");
    assert!(matches!(err, tenancy_audit::Error::Tx(_)), "{err}");
    assert_eq!(
        (note_count(&pool, t, 2).await, count(&owner, t).await),
        (0, 1)
    );

    // The COMMIT fails after the event was inserted: the event goes with the change.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute("INSERT INTO deferred_notes (id) VALUES (7), (7)", &[])
        .await
        .expect("the duplicate is checked at commit");
    let err = tenancy_audit::record_and_commit(tx, &event("note.create", 7))
        .await
        .expect_err("the commit fails");
    assert!(format!("{err:?}").contains("23505"), "{err:?}");
    assert_eq!(count(&owner, t).await, 1);

    // Refused before reaching the database: nothing is sent, nothing commits.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.execute("INSERT INTO notes (id, body) VALUES (3, 'three')", &[])
        .await
        .expect("insert");
    let err = tenancy_audit::record_and_commit(tx, &event("has space", 3))
        .await
        .expect_err("invalid action");
    assert!(matches!(err, tenancy_audit::Error::Invalid(_)), "{err}");
    assert_eq!(
        (note_count(&pool, t, 3).await, count(&owner, t).await),
        (0, 1)
    );

    // The event as the transaction's only statement: sent after the opening, then committed.
    let tx = pool.begin(t).await.expect("begin");
    tenancy_audit::record_and_commit(tx, &event("note.view", 4))
        .await
        .expect("record and commit alone");
    assert_eq!(count(&owner, t).await, 2);

    // The pooled connection is clean for the next transaction of another tenant.
    let other = TenantId::new_random();
    let mut tx = pool.begin(other).await.expect("begin");
    let seen = tx
        .query("SELECT tenant_id FROM tenancy.audit_events", &[])
        .await
        .expect("read");
    tx.commit().await.expect("commit");
    assert!(seen.is_empty(), "{seen:?}");
}

/// Notes are a tenant table: counted as the tenant (the owner is held by its policy too).
async fn note_count(pool: &tenancy_sdk::TenantPool, tenant: TenantId, id: i64) -> i64 {
    let mut tx = pool.begin(tenant).await.expect("begin");
    let n = tx
        .query_one("SELECT count(*) FROM notes WHERE id = $1", &[&id])
        .await
        .expect("count notes")
        .get(0);
    tx.commit().await.expect("commit");
    n
}

/// Each optional field is stored when the event has it and empty when it has not, in any
/// combination (the INSERT names only the fields an event has), and every shape of event
/// verifies once sealed.
#[tokio::test]
async fn an_event_stores_exactly_the_fields_it_has_in_any_combination() {
    let db = fresh_db().await;
    let mut owner = owner(&db).await;
    let pool = pool(&db, 2);
    let t = TenantId::new_random();
    let full = |mask: u8| {
        let mut actor = Actor::new(ActorKind::ApiKey, "api_key:k1");
        if mask & 1 == 0 {
            actor.subject = None;
        }
        if mask & 2 != 0 {
            actor.key_id = Some("k1".into());
        }
        let mut e = Event::new(actor, format!("shape.m{mask}")).outcome(Outcome::Denied);
        if mask & 4 != 0 {
            e = e.target("note:1");
        }
        if mask & 8 != 0 {
            e = e.before(serde_json::json!({"n": 1}));
        }
        if mask & 16 != 0 {
            e = e.after(serde_json::json!({"n": 2}));
        }
        if mask & 32 != 0 {
            e = e.request_id("req-1");
        }
        if mask & 64 != 0 {
            e = e.trace_id("4bf92f3577b34da6a3ce929d0e0e4736");
        }
        if mask & 128 != 0 {
            e = e.client_addr("2001:db8::1".parse().expect("address"));
        }
        e
    };
    // Every field alone, none, all, and a few mixes; half sent with their commit.
    let masks: Vec<u8> = [0u8, 255, 0b1010_0101, 0b0101_1010]
        .into_iter()
        .chain((0..8).map(|b| 1u8 << b))
        .collect();
    for (i, mask) in masks.iter().enumerate() {
        let mut tx = pool.begin(t).await.expect("begin");
        if i % 2 == 0 {
            tenancy_audit::record(&mut tx, &full(*mask))
                .await
                .expect("record");
            tx.commit().await.expect("commit");
        } else {
            tenancy_audit::record_and_commit(tx, &full(*mask))
                .await
                .expect("record and commit");
        }
    }
    for mask in &masks {
        let row = owner
            .query_one(
                "SELECT actor_kind, actor_subject, actor_key_id, target, before, after, request_id, \
                        trace_id, client_addr::text, outcome \
                   FROM tenancy.audit_events WHERE tenant_id = $1 AND action = $2",
                &[&t.as_uuid(), &format!("shape.m{mask}")],
            )
            .await
            .expect("event");
        let want = full(*mask);
        let got = |i: usize| row.get::<_, Option<String>>(i);
        let json = |i: usize| row.get::<_, Option<serde_json::Value>>(i);
        assert_eq!(row.get::<_, String>(0), "api_key", "{mask}");
        assert_eq!(got(1), want.actor.subject, "{mask}");
        assert_eq!(got(2), want.actor.key_id, "{mask}");
        assert_eq!(got(3), want.target, "{mask}");
        assert_eq!(json(4), want.before, "{mask}");
        assert_eq!(json(5), want.after, "{mask}");
        assert_eq!(got(6), want.request_id, "{mask}");
        assert_eq!(got(7), want.trace_id, "{mask}");
        assert_eq!(
            got(8),
            want.client_addr.map(|a| format!("{a}/128")),
            "{mask}"
        );
        assert_eq!(row.get::<_, String>(9), "denied", "{mask}");
    }
    assert_eq!(support::seal_all(&mut owner).await, masks.len() as u64);
    let events = tenancy_audit::load_events(&owner, t.as_uuid())
        .await
        .expect("events");
    let verdict =
        tenancy_audit::verify_chain(t.as_uuid(), &events, &[], &tenancy_audit::Trust::AnyKey);
    assert!(verdict.intact(), "{verdict:?}");
    assert_eq!(verdict.sealed, masks.len() as u64);
}
