//! Purging a chain's head behind a signed anchor; the control plane's log.

use tenancy_audit::{Actor, ActorKind, Log, Signer, TamperKind, Trust, PLATFORM};
use tenancy_core::TenantId;

use crate::support::{audited_write, fresh_db, owner, pool, seal_all};

fn tenant(n: u128) -> TenantId {
    TenantId::from_uuid(uuid::Uuid::from_u128(0x7e57_0000 + n)).expect("tenant id")
}

fn trust(s: &Signer) -> Trust {
    Trust::Keys(vec![s.public_key_hex()])
}

fn later() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(1)
}

#[tokio::test]
async fn a_purged_head_verifies_from_its_signed_anchor_and_a_cut_without_one_is_detected() {
    let db = fresh_db().await;
    let (a, b) = (tenant(1), tenant(2));
    let p = pool(&db, 2);
    for n in 1..=5 {
        audited_write(&p, a, n).await;
    }
    for n in 1..=2 {
        audited_write(&p, b, 100 + n).await;
    }
    let mut o = owner(&db).await;
    let mut catalog = owner(&db).await;
    seal_all(&mut o).await;
    let signer = Signer::from_seed([3; 32]);
    tenancy_audit::checkpoint(&o, &catalog, &signer, None)
        .await
        .expect("checkpoint");

    // Nothing deletes an event outside a purge, the owner included; a purge names one
    // tenant, so another tenant's events stay refused.
    for (setting, what) in [
        ("", "no purge"),
        (&*format!("{b}:100"), "another tenant's purge"),
    ] {
        let err = o
            .batch_execute(&format!(
                "BEGIN; SELECT set_config('tenancy.audit_purge', '{setting}', true); \
                 DELETE FROM tenancy.audit_events WHERE tenant_id = '{a}'; COMMIT"
            ))
            .await
            .expect_err(what);
        assert!(
            format!("{err:?}").contains("append-only"),
            "{what}: {err:?}"
        );
        o.batch_execute("ROLLBACK").await.expect("rollback");
    }
    // The runtime role has no DELETE at all.
    let mut tx = p.begin(a).await.expect("begin");
    let err = tx
        .execute("DELETE FROM tenancy.audit_events", &[])
        .await
        .expect_err("runtime delete");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
    drop(tx);

    let actor = Actor::new(ActorKind::Worker, "worker:test");
    let purged = tenancy_audit::purge(
        &mut o,
        &mut catalog,
        a.as_uuid(),
        later(),
        &signer,
        &actor,
        None,
    )
    .await
    .expect("purge")
    .expect("something purged");
    // Everything is older than the cutoff, but the newest sealed event stays: the chain
    // goes on from it.
    assert_eq!((purged.removed, purged.anchor.chain_pos), (4, 4));
    let left: i64 = o
        .query_one(
            "SELECT count(*) FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&a.as_uuid()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 1);
    // Tenant b untouched.
    let v = tenancy_audit::verify_log(&o, Some(&catalog), Log::Tenant, None, &[], &trust(&signer))
        .await
        .expect("verify");
    assert_eq!(v.len(), 2, "{v:?}");
    for verdict in &v {
        assert!(verdict.intact(), "{verdict:?}");
    }
    let va = v.iter().find(|v| v.tenant == a.as_uuid()).expect("a");
    assert_eq!((va.base, va.head, va.sealed), (4, 5, 1));
    let vb = v.iter().find(|v| v.tenant == b.as_uuid()).expect("b");
    assert_eq!((vb.base, vb.head), (0, 2));

    // The chain continues after the purge, from its kept head.
    audited_write(&p, a, 6).await;
    seal_all(&mut o).await;
    tenancy_audit::checkpoint(&o, &catalog, &signer, None)
        .await
        .expect("checkpoint");
    let v = tenancy_audit::verify_log(
        &o,
        Some(&catalog),
        Log::Tenant,
        Some(a.as_uuid()),
        &[],
        &trust(&signer),
    )
    .await
    .expect("verify");
    assert!(v[0].intact(), "{v:?}");
    assert_eq!((v[0].base, v[0].head), (4, 6));

    // The purge is an event of the control plane's platform chain, sealed and verified
    // like any chain.
    tenancy_audit::seal_log(&mut catalog, Log::Control, 100)
        .await
        .expect("seal control");
    let control = tenancy_audit::load_log_events(&catalog, Log::Control, PLATFORM)
        .await
        .expect("control events");
    assert_eq!(control.len(), 1, "{control:?}");
    assert_eq!(control[0].recorded.action, "audit.purge");
    assert_eq!(
        control[0].recorded.target.as_deref(),
        Some(&*format!("tenant:{a}"))
    );
    assert!(
        control[0]
            .recorded
            .after
            .as_deref()
            .unwrap_or("")
            .contains("\"up_to_position\": 4"),
        "{:?}",
        control[0].recorded.after
    );
    let v = tenancy_audit::verify_log(
        &catalog,
        Some(&catalog),
        Log::Control,
        None,
        &[],
        &trust(&signer),
    )
    .await
    .expect("verify control");
    assert!(v.iter().all(|v| v.intact()), "{v:?}");

    // An export carries the anchor: the offline check starts from it too.
    let mut out = Vec::new();
    tenancy_audit::export(&o, Some(&catalog), a.as_uuid(), &[], &mut out)
        .await
        .expect("export");
    let exp = tenancy_audit::read_export(&mut &out[..]).expect("read export");
    assert_eq!(exp.anchors.len(), 1);
    let off = tenancy_audit::verify_chain_in(
        Log::Tenant,
        a.as_uuid(),
        &exp.events,
        &exp.checkpoints,
        &exp.anchors,
        &trust(&signer),
    );
    assert!(off.intact(), "{off:?}");
    // Without the anchor (or with an anchor by a key not trusted) the missing head is
    // a deletion.
    let off = tenancy_audit::verify_chain_in(
        Log::Tenant,
        a.as_uuid(),
        &exp.events,
        &exp.checkpoints,
        &[],
        &trust(&signer),
    );
    assert_eq!(
        off.tampering.as_ref().map(|t| (t.kind, t.chain_pos)),
        Some((TamperKind::Deleted, Some(1))),
        "{off:?}"
    );
    let other = Signer::from_seed([4; 32]);
    let off = tenancy_audit::verify_chain_in(
        Log::Tenant,
        a.as_uuid(),
        &exp.events,
        &exp.checkpoints,
        &exp.anchors,
        &trust(&other),
    );
    assert_eq!(
        off.tampering.as_ref().map(|t| t.kind),
        Some(TamperKind::Deleted),
        "{off:?}"
    );

    // The owner can forge the purge setting (it owns the table), but a cut without a
    // signed anchor at its boundary is found: here the events after the anchor.
    o.batch_execute(&format!(
        "BEGIN; SELECT set_config('tenancy.audit_purge', '{a}:6', true); \
         DELETE FROM tenancy.audit_events WHERE tenant_id = '{a}' AND chain_pos = 5; COMMIT"
    ))
    .await
    .expect("forged purge");
    let v = tenancy_audit::verify_log(
        &o,
        Some(&catalog),
        Log::Tenant,
        Some(a.as_uuid()),
        &[],
        &trust(&signer),
    )
    .await
    .expect("verify");
    let t = v[0].tampering.as_ref().expect("the cut is found");
    assert_eq!(t.kind, TamperKind::Deleted, "{t:?}");
    // And a purge refuses to anchor a log that does not verify: tenant b's first event
    // edited behind the trigger's back (a superuser's replica session skips triggers).
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "SET session_replication_role = replica; \
         UPDATE tenancy.audit_events SET target = 'note:999' WHERE tenant_id = '{b}' AND chain_pos = 1"
    ))
    .await
    .expect("tamper");
    let err = tenancy_audit::purge(
        &mut o,
        &mut catalog,
        b.as_uuid(),
        later(),
        &signer,
        &actor,
        None,
    )
    .await
    .expect_err("a tampered log is not anchored");
    assert!(err.to_string().contains("does not verify"), "{err}");
    let anchors: i64 = o
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.audit_anchors WHERE tenant_id = $1",
            &[&b.as_uuid()],
        )
        .await
        .expect("anchors")
        .get(0);
    assert_eq!(anchors, 0);
}

#[tokio::test]
async fn a_purge_whose_condition_fails_changes_nothing() {
    let db = fresh_db().await;
    let a = tenant(3);
    let p = pool(&db, 1);
    for n in 1..=3 {
        audited_write(&p, a, n).await;
    }
    let mut o = owner(&db).await;
    let mut catalog = owner(&db).await;
    seal_all(&mut o).await;
    let signer = Signer::from_seed([5; 32]);
    let actor = Actor::new(ActorKind::Worker, "worker:test");
    let none = tenancy_audit::purge(
        &mut o,
        &mut catalog,
        a.as_uuid(),
        later(),
        &signer,
        &actor,
        Some("SELECT $1::uuid IS NULL"),
    )
    .await
    .expect("purge");
    assert!(none.is_none());
    let (n, anchors): (i64, i64) = {
        let r = o
            .query_one(
                "SELECT (SELECT count(*) FROM tenancy.audit_events), (SELECT count(*) FROM tenancy_catalog.audit_anchors)",
                &[],
            )
            .await
            .expect("counts");
        (r.get(0), r.get(1))
    };
    assert_eq!((n, anchors), (3, 0));
    // Nothing older than the cutoff: nothing to purge.
    let none = tenancy_audit::purge(
        &mut o,
        &mut catalog,
        a.as_uuid(),
        time::OffsetDateTime::now_utc() - time::Duration::days(1),
        &signer,
        &actor,
        None,
    )
    .await
    .expect("purge");
    assert!(none.is_none());
}
