//! The audit logs through `tenancy serve` (build + run, real HTTP): the sealer task,
//! its signing key and publications, the control plane's own log, `GET
//! /v1/tenants/{id}/audit`, retention and legal hold.

use std::time::Duration;

use serde_json::{json, Value};
use tenancy_audit::{Checkpoint, Log, StoredEvent, Trust};
use tenancy_control::audit::AuditConfig;
use tenancy_control::{ControlConfig, SignupConfig};
use tenancy_core::TenantId;
use tenancy_pg::testing::TestDb;
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ContextKey, PoolOptions, TenantPool};

use crate::api::{fresh_state_with, AUTH, JSON};
use crate::hostile::{generous, http, Resp};

fn key() -> ContextKey {
    ContextKey::from_hex("ctl".parse().expect("kid"), &"ab".repeat(32)).expect("key")
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tenancy-audit-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

pub(crate) fn config(db: &TestDb, audit: AuditConfig) -> ControlConfig {
    let digest = tenancy_control::auth::token_digest(crate::api::TOKEN);
    ControlConfig {
        listen: "127.0.0.1:0".into(),
        database_url: Some(secrecy::SecretString::from(
            db.cluster.url_as(OWNER_ROLE, &db.name),
        )),
        context_key_id: "ctl".into(),
        context_key_hex: Some(secrecy::SecretString::from("ab".repeat(32))),
        admin_token_sha256: vec![format!("sha256:{}", hex::encode(digest))],
        cluster_admin_user: db.cluster.superuser().to_owned(),
        workers: 1,
        limits: generous(),
        audit,
        ..ControlConfig::default()
    }
}

/// Creates a pooled tenant through the API; returns its id.
pub(crate) async fn create(port: u16, slug: &str, request_id: &str) -> TenantId {
    let body = json!({"slug": slug, "display_name": slug, "plan": "free", "region": "eu-west", "placement": "pooled"}).to_string();
    let r = http(
        port,
        "127.0.0.7",
        "POST",
        "/v1/tenants",
        &[
            AUTH,
            JSON,
            ("idempotency-key", slug),
            ("x-request-id", request_id),
        ],
        Some(&body),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    r.body["tenant"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("tenant id")
}

async fn hold(port: u16, t: TenantId, on: bool) {
    let r = http(
        port,
        "127.0.0.7",
        "POST",
        &format!("/v1/tenants/{t}/legal-hold"),
        &[AUTH, JSON, ("idempotency-key", &format!("hold-{t}-{on}"))],
        Some(&json!({"hold": on}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["legal_hold"], on, "{}", r.body);
}

async fn page(port: u16, t: TenantId, query: &str) -> Resp {
    http(
        port,
        "127.0.0.7",
        "GET",
        &format!("/v1/tenants/{t}/audit{query}"),
        &[AUTH],
        None,
    )
    .await
}

/// Every page of a log, one event a page; the events as `StoredEvent`s and every
/// checkpoint and anchor the pages carried.
async fn all_pages(
    port: u16,
    t: TenantId,
    log: &str,
) -> (Vec<StoredEvent>, Vec<Checkpoint>, Vec<Checkpoint>, String) {
    let (mut events, mut cps, mut anchors) = (Vec::new(), Vec::new(), Vec::new());
    let mut after = String::new();
    let mut key = String::new();
    loop {
        let r = page(port, t, &format!("?log={log}&limit=1{after}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        key = r.body["public_key"].as_str().unwrap_or(&key).to_owned();
        for e in r.body["items"].as_array().expect("items") {
            let mut e = e.clone();
            e["tenant"] = json!(t.to_string());
            events.push(serde_json::from_value(e).expect("an event"));
        }
        for c in r.body["checkpoints"].as_array().expect("checkpoints") {
            let mut c = c.clone();
            c["tenant"] = json!(t.to_string());
            cps.push(serde_json::from_value(c).expect("a checkpoint"));
        }
        if !r.body["anchor"].is_null() {
            let mut a = r.body["anchor"].clone();
            a["tenant"] = json!(t.to_string());
            anchors.push(serde_json::from_value(a).expect("an anchor"));
        }
        match r.body["next_after"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return (events, cps, anchors, key),
        }
    }
}

pub(crate) fn runtime_pool(db: &TestDb) -> TenantPool {
    TenantPool::new(db.config_as(RUNTIME_ROLE), key(), PoolOptions::default()).expect("pool")
}

/// Records `n` application events of `t` as the runtime role, each in its own TenantTx.
pub(crate) async fn app_events(pool: &TenantPool, t: TenantId, n: usize) {
    for i in 0..n {
        let mut tx = pool.begin(t).await.expect("begin");
        let e = tenancy_audit::Event::new(
            tenancy_audit::Actor::new(tenancy_audit::ActorKind::User, "user-1"),
            "invoice.create",
        )
        .target(format!("invoice:{i}"));
        tenancy_audit::record(&mut tx, &e).await.expect("record");
        tx.commit().await.expect("commit");
    }
}

/// Waits until `f` returns something.
pub(crate) async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test]
async fn serve_seals_signs_publishes_and_records_every_control_plane_change() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let dir = temp_dir("serve");
    let key_file = dir.join("signing-key");
    let publish = dir.join("checkpoints.jsonl");
    let mut cfg = config(
        &db,
        AuditConfig {
            seal_interval_secs: 1,
            signing_key_file: Some(key_file.clone()),
            publish_file: Some(publish.clone()),
            ..AuditConfig::default()
        },
    );
    cfg.event_receivers = vec![tenancy_control::config::ReceiverConfig {
        name: "ledger".into(),
        url: "http://127.0.0.1:9/hooks".into(),
        secret: tenancy_provision::webhook::generate_secret(),
    }];
    let app = tenancy_control::build(cfg.clone()).await.expect("build");
    let port = app.port();
    let public_key = app.state().audit().expect("sealer").public_key_hex();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());

    // The key was made at the first start, readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&key_file).expect("key file");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let t = create(port, "audited", "req-audit-1").await;
    hold(port, t, true).await;
    hold(port, t, false).await;
    // A configuration write of the tenant, through the configuration service's one
    // write path.
    let r = http(
        port,
        "127.0.0.7",
        "PUT",
        &format!("/v1/config/tenants/{t}/domains/audited.example.com"),
        &[AUTH, ("x-request-id", "req-audit-2")],
        None,
    )
    .await;
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.body
    );

    // The sealer task seals and checkpoints the control log on its own.
    let (control, cps, _, key) =
        eventually("the control chain sealed and checkpointed", || async {
            let got = all_pages(port, t, "control").await;
            (got.0
                .iter()
                .any(|e| e.recorded.action == "config.domain.put")
                && got.1.iter().any(|c| c.chain_pos == got.0.len() as i64))
            .then_some(got)
        })
        .await;
    assert_eq!(key, public_key);
    // Workflow steps' changes (`tenant.state.*`) land in between, as the workers apply them.
    let actions: Vec<&str> = control
        .iter()
        .map(|e| e.recorded.action.as_str())
        .filter(|a| !a.starts_with("tenant.state."))
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "tenant.legal_hold.set",
            "tenant.legal_hold.clear",
            "config.domain.put"
        ],
        "{control:?}"
    );
    let created = &control[0].recorded;
    assert_eq!(created.actor_kind, "admin");
    assert!(
        created
            .actor_subject
            .as_deref()
            .is_some_and(|s| s.starts_with("admin:")),
        "{created:?}"
    );
    assert_eq!(created.request_id.as_deref(), Some("req-audit-1"));
    assert_eq!(created.client_addr.as_deref(), Some("127.0.0.7/32"));
    assert_eq!(created.trace_id.as_deref().map(str::len), Some(32));
    assert!(
        created
            .after
            .as_deref()
            .is_some_and(|a| a.contains("sha256")),
        "digest, not the value: {created:?}"
    );
    let set = control
        .iter()
        .find(|e| e.recorded.action == "tenant.legal_hold.set")
        .map(|e| &e.recorded)
        .expect("hold event");
    assert!(set.before.is_some() && set.after.is_some());
    let v = tenancy_audit::verify_chain_in(
        Log::Control,
        t.as_uuid(),
        &control,
        &cps,
        &[],
        &Trust::Keys(vec![public_key.clone()]),
    );
    assert!(v.intact(), "{v:?}");

    // Application events in the tenant's own log, sealed and checkpointed by the task.
    let pool = runtime_pool(&db);
    app_events(&pool, t, 3).await;
    let (events, cps, anchors, _) =
        eventually("the tenant chain sealed and checkpointed", || async {
            let got = all_pages(port, t, "tenant").await;
            (got.0.len() == 3 && got.1.iter().any(|c| c.chain_pos == 3)).then_some(got)
        })
        .await;
    assert!(anchors.is_empty());
    let v = tenancy_audit::verify_chain_in(
        Log::Tenant,
        t.as_uuid(),
        &events,
        &cps,
        &[],
        &Trust::Keys(vec![public_key.clone()]),
    );
    assert!(v.intact(), "{v:?}");
    assert_eq!(v.head, 3);

    // Published: the JSON-lines file and `audit.checkpoint` webhooks through the outbox,
    // each a checkpoint that verifies.
    let file = tenancy_audit::read_jsonl(&publish).expect("published file");
    assert!(
        file.iter()
            .any(|c| c.log == Log::Tenant && c.tenant == t.as_uuid() && c.chain_pos == 3),
        "{file:?}"
    );
    assert!(file
        .iter()
        .all(|c| c.verify_signature().is_ok() && c.public_key == public_key));
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let hooks = owner
        .query(
            "SELECT payload FROM tenancy_catalog.webhook_outbox WHERE event_type = 'audit.checkpoint' AND receiver = 'ledger'",
            &[],
        )
        .await
        .expect("outbox");
    assert!(!hooks.is_empty());
    for h in &hooks {
        let p: Value = h.get(0);
        assert_eq!(p["type"], "audit.checkpoint");
        let c: Checkpoint = serde_json::from_value(p["data"].clone()).expect("checkpoint");
        c.verify_signature().expect("signed");
    }

    // Stops cleanly with the other workers; the key is the same at the next start.
    let _ = stopper.send(true);
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("stops")
        .expect("join")
        .expect("served");
    let again = tenancy_control::build(cfg).await.expect("second build");
    assert_eq!(
        again.state().audit().expect("sealer").public_key_hex(),
        public_key
    );
    let stop = again.stopper();
    let running = tokio::spawn(again.run_until_stopped());
    let _ = stop.send(true);
    running.await.expect("join").expect("served");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_tenant_reads_or_forges_another_log_and_the_api_refuses_another_chains_cursor() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let app = tenancy_control::build(config(
        &db,
        AuditConfig {
            seal_interval_secs: 0,
            ..AuditConfig::default()
        },
    ))
    .await
    .expect("build");
    let port = app.port();
    let sealer = app.state().audit().expect("sealer").clone();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let a = create(port, "alpha", "req-a").await;
    let b = create(port, "beta", "req-b").await;
    sealer
        .pass(false)
        .await
        .expect("first pass installs and seals");
    let pool = runtime_pool(&db);
    app_events(&pool, a, 2).await;
    app_events(&pool, b, 1).await;
    eventually("sealed", || async {
        sealer.pass(false).await.expect("pass");
        let r = page(port, a, "").await;
        (r.body["items"].as_array().map(Vec::len) == Some(2)).then_some(())
    })
    .await;

    // The runtime role sees only its transaction's tenant's events, cannot add one for
    // another tenant, and reaches no part of the control plane's log.
    let mut tx = pool.begin(b).await.expect("begin");
    let seen: i64 = tx
        .query_one("SELECT count(*) FROM tenancy.audit_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(seen, 1);
    drop(tx);
    let mut tx = pool.begin(b).await.expect("begin");
    let err = tx
        .execute(
            "INSERT INTO tenancy.audit_events (tenant_id, actor_kind, action, outcome) VALUES ($1, 'admin', 'tenant.delete', 'success')",
            &[&a.as_uuid()],
        )
        .await
        .expect_err("an event for another tenant");
    assert!(format!("{err:?}").contains("row-level security"), "{err:?}");
    drop(tx);
    let runtime = tenancy_pg::connect(&db.config_as(RUNTIME_ROLE))
        .await
        .expect("runtime");
    for sql in [
        "SELECT count(*) FROM tenancy_catalog.audit_log",
        "INSERT INTO tenancy_catalog.audit_log (tenant_id, actor_kind, action, outcome) VALUES ('00000000-0000-0000-0000-000000000001', 'admin', 'tenant.create', 'success')",
        "INSERT INTO tenancy_catalog.audit_checkpoints (tenant_id, chain_pos, head_hash, signed_at, public_key, signature) VALUES ('00000000-0000-0000-0000-000000000001', 1, '\\x00', now(), '\\x00', '\\x00')",
        "SELECT count(*) FROM tenancy_catalog.audit_anchors",
    ] {
        let err = runtime.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("permission denied"), "{sql}: {err:?}");
    }
    // The owner cannot change or delete a control-plane event either (the trigger).
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    for sql in [
        "UPDATE tenancy_catalog.audit_log SET actor_subject = 'someone-else'",
        "DELETE FROM tenancy_catalog.audit_log",
        "TRUNCATE tenancy_catalog.audit_log",
    ] {
        let err = owner.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }

    // Pages: a's cursor is refused on b, and on a's other log; malformed input is a 422
    // naming the parameter.
    let first = page(port, a, "?limit=1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(1));
    let cursor = first.body["next_after"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = page(port, a, &format!("?limit=1&after={cursor}")).await;
    assert_eq!(second.body["items"][0]["chain_pos"], 2, "{}", second.body);
    for (t, q) in [
        (b, format!("?after={cursor}")),
        (a, format!("?log=control&after={cursor}")),
    ] {
        let r = page(port, t, &q).await;
        assert_eq!(r.status, 409, "{q}: {}", r.body);
        assert!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("the cursor belongs to")),
            "{q}: {}",
            r.body
        );
    }
    for (t, q, field) in [
        (a, "?after=zz".to_owned(), "after"),
        (a, format!("?after={a}.tenant.x"), "after"),
        (a, format!("?after={a}.other.1"), "after"),
        (a, "?after=v1.x.tenant.1".to_owned(), "after"),
        (a, "?limit=0".to_owned(), "limit"),
        (a, "?limit=501".to_owned(), "limit"),
        (a, "?log=everything".to_owned(), "log"),
    ] {
        let r = page(port, t, &q).await;
        assert_eq!(r.status, 422, "{q}: {}", r.body);
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/problem+json"),
            "{q}"
        );
        assert_eq!(r.body["errors"][0]["field"], field, "{q}: {}", r.body);
    }
    let r = http(
        port,
        "127.0.0.7",
        "GET",
        &format!("/v1/tenants/{a}/audit"),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = page(
        port,
        TenantId::from_uuid(uuid::Uuid::new_v4()).expect("id"),
        "",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // b's page holds b's event only.
    let r = page(port, b, "").await;
    assert_eq!(
        r.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.body
    );
    let _ = stopper.send(true);
    running.await.expect("join").expect("served");
}

#[tokio::test]
async fn events_past_their_plans_retention_are_purged_only_without_a_legal_hold() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let app = tenancy_control::build(config(
        &db,
        AuditConfig {
            seal_interval_secs: 0,
            retention_days: [("free".to_owned(), 7)].into(),
            ..AuditConfig::default()
        },
    ))
    .await
    .expect("build");
    let port = app.port();
    let sealer = app.state().audit().expect("sealer").clone();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let t = create(port, "kept", "req-k").await;
    sealer.pass(false).await.expect("install");
    let pool = runtime_pool(&db);
    app_events(&pool, t, 3).await;
    // Three events from 30 days ago (backdated before sealing, behind the trigger's back),
    // then a recent one.
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "SET session_replication_role = replica; \
         UPDATE tenancy.audit_events SET occurred_at = occurred_at - interval '30 days' WHERE tenant_id = '{t}'"
    ))
    .await
    .expect("backdate");
    app_events(&pool, t, 1).await;
    hold(port, t, true).await;
    let sealed = eventually("all four sealed", || async {
        sealer.pass(true).await.expect("pass");
        let r = page(port, t, "").await;
        (r.body["items"].as_array().map(Vec::len) == Some(4)).then_some(r)
    })
    .await;
    assert!(sealed.body["anchor"].is_null());
    // On hold: nothing purged, however many passes.
    let report = sealer.pass(true).await.expect("pass");
    assert!(report.purged.is_empty(), "{report:?}");
    assert_eq!(
        page(port, t, "").await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );

    hold(port, t, false).await;
    let report = sealer.pass(true).await.expect("pass");
    assert_eq!(report.purged, vec![(t.as_uuid(), 3)], "{report:?}");
    let (events, cps, anchors, key) = all_pages(port, t, "tenant").await;
    assert_eq!(events.len(), 1);
    assert_eq!(anchors.len(), 1);
    assert_eq!(anchors[0].chain_pos, 3);
    let v = tenancy_audit::verify_chain_in(
        Log::Tenant,
        t.as_uuid(),
        &events,
        &cps,
        &anchors,
        &Trust::Keys(vec![key.clone()]),
    );
    assert!(v.intact(), "{v:?}");
    assert_eq!((v.base, v.head), (3, 4));
    // What `tenancy audit verify` runs on the live database agrees.
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let v = tenancy_audit::verify_log(
        &owner,
        Some(&owner),
        Log::Tenant,
        Some(t.as_uuid()),
        &[],
        &Trust::Keys(vec![key.clone()]),
    )
    .await
    .expect("verify");
    assert!(v[0].intact(), "{v:?}");
    // The purge is a checkpointed event of the control plane's platform chain.
    // (Sealing waits for the cluster's oldest running transaction, which other tests'
    // transactions can hold back for a moment.)
    let purges = eventually("the purge event sealed", || async {
        sealer.pass(false).await.expect("pass");
        let purges = tenancy_audit::load_log_events(&owner, Log::Control, tenancy_audit::PLATFORM)
            .await
            .expect("platform chain");
        purges
            .iter()
            .all(|e| e.chain_pos.is_some())
            .then_some(purges)
    })
    .await;
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0].recorded.action, "audit.purge");
    assert_eq!(purges[0].recorded.actor_kind, "worker");
    let pos = purges[0].chain_pos.expect("sealed");
    let cps =
        tenancy_audit::load_log_checkpoints(&owner, Log::Control, Some(tenancy_audit::PLATFORM))
            .await
            .expect("checkpoints");
    assert!(cps.iter().any(|c| c.chain_pos >= pos), "{cps:?}");
    // The hold's set and clear are in the tenant's control chain, before the purge.
    let control = tenancy_audit::load_log_events(&owner, Log::Control, t.as_uuid())
        .await
        .expect("control");
    // Workflow steps' changes (`tenant.state.*`) land in between, as the workers apply them.
    let actions: Vec<&str> = control
        .iter()
        .map(|e| e.recorded.action.as_str())
        .filter(|a| !a.starts_with("tenant.state."))
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.create",
            "tenant.legal_hold.set",
            "tenant.legal_hold.clear"
        ]
    );
    // The worker's activation entered the same chain, in its step's transaction.
    assert!(
        control
            .iter()
            .any(|e| e.recorded.action == "tenant.state.active"),
        "{control:?}"
    );
    let _ = stopper.send(true);
    running.await.expect("join").expect("served");
}
