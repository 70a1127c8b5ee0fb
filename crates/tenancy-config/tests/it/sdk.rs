//! The SDK client: LISTEN/NOTIFY invalidation (targeted and full), coalescing, overrides
//! with expiry through the store, catalog changes, and the OpenFeature provider.

use std::time::Duration;

use open_feature::provider::FeatureProvider;
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason};
use serde_json::json;
use tenancy_config::model::{
    EntitlementDef, EntitlementKind, EntitlementValue, Flag, Override, OverrideTarget, Rule, Serve,
};
use tenancy_config::openfeature::TenancyProvider;
use tenancy_config::{FlagReason, Layer};
use tenancy_config_service::ChangeMeta;
use time::OffsetDateTime;

use crate::support::*;

fn meta() -> ChangeMeta {
    ChangeMeta::new("test", "because")
}

fn on_for_plan(key: &str, plan: &str) -> Flag {
    let mut f = Flag::boolean(key.parse().expect("key"));
    f.rules.push(Rule {
        name: String::new(),
        conditions: vec![tenancy_config::model::Condition::Plan {
            op: tenancy_config::model::SetOp::In,
            values: vec![plan.parse().expect("plan")],
        }],
        serve: Serve::Variant {
            variant: "on".parse().expect("v"),
        },
    });
    f
}

#[tokio::test]
async fn notifications_update_the_snapshot_in_place() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "pro", "eu-west").await;
    let client = client(&db).await;
    assert!(!client.is_enabled(t, "f"));

    // Flag change: a targeted reload of one flag.
    let v = store
        .put_flag(&on_for_plan("f", "pro"), &meta())
        .await
        .expect("put");
    assert!(
        client.wait_for_version(v, Duration::from_secs(10)).await,
        "flag change not seen"
    );
    assert!(client.is_enabled(t, "f"));

    // Kill switch.
    let v = store
        .set_flag_killed(&"f".parse().expect("key"), true, &meta())
        .await
        .expect("kill");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    assert!(!client.is_enabled(t, "f"));
    assert_eq!(
        client
            .snapshot()
            .flag(t, "f", OffsetDateTime::now_utc())
            .map(|e| e.reason),
        Some(FlagReason::KillSwitch)
    );
    let v = store
        .set_flag_killed(&"f".parse().expect("key"), false, &meta())
        .await
        .expect("unkill");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);

    // Plan and entitlement changes: a full reload.
    let def = EntitlementDef {
        key: "seats".parse().expect("k"),
        kind: EntitlementKind::Limit,
        default: EntitlementValue::Limit(3),
        description: String::new(),
    };
    store
        .put_entitlement(&def, &meta())
        .await
        .expect("entitlement");
    let plan: tenancy_config::model::Plan = serde_json::from_value(
        json!({"key": "pro", "display_name": "Pro", "entitlements": {"seats": 50}}),
    )
    .expect("plan");
    let v = store.put_plan(&plan, &meta()).await.expect("plan");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    assert_eq!(client.limit(t, "seats"), Some(50));

    // Catalog changes (a new tenant, a plan change) reach the snapshot through the
    // catalog trigger's notification.
    let newcomer = tenant(&db, "pro", "us-east").await;
    eventually(&client, "new tenant visible", |c| {
        c.snapshot().tenant(newcomer).is_some()
    })
    .await;
    assert!(client.is_enabled(newcomer, "f"));
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    owner
        .execute(
            "UPDATE tenancy_catalog.tenants SET plan = 'free' WHERE id = $1",
            &[&newcomer.as_uuid()],
        )
        .await
        .expect("downgrade");
    eventually(&client, "downgrade visible", |c| {
        !c.is_enabled(newcomer, "f")
    })
    .await;
    assert_eq!(client.limit(newcomer, "seats"), Some(3));

    // Tags and custom attributes feed targeting.
    let mut f = Flag::boolean("beta".parse().expect("key"));
    f.rules.push(
        serde_json::from_value(json!({"conditions": [
        {"attribute": "tags", "op": "any_of", "values": ["beta"]},
        {"attribute": "custom", "name": "employees", "op": "gte", "value": 100}
    ], "serve": {"type": "variant", "variant": "on"}}))
        .expect("rule"),
    );
    store.put_flag(&f, &meta()).await.expect("flag");
    let custom = serde_json::from_value(json!({"employees": 120})).expect("custom");
    let v = store
        .put_tenant_attributes(t, &["beta".into()], &custom, &meta())
        .await
        .expect("attributes");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    assert!(client.is_enabled(t, "beta"));
    assert!(!client.is_enabled(newcomer, "beta"));
    let st = client.status();
    assert!(st.connected && !st.stale, "{st:?}");
}

#[tokio::test]
async fn bursts_of_changes_are_coalesced() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "pro", "eu-west").await;
    let client = tenancy_config::ConfigClient::connect(
        db.config_as(tenancy_sdk::bootstrap::CONFIG_READER_ROLE),
        tenancy_config::ClientOptions {
            coalesce: Duration::from_millis(50),
            ..fast_opts()
        },
    )
    .await
    .expect("client");
    let rx = client.subscribe();
    let start = *rx.borrow();
    // 40 changes committed together in well under the coalescing window.
    let mut last = 0;
    let mut writes = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            let mut f = Flag::boolean(format!("f{}", i % 4).parse().expect("key"));
            f.description = format!("burst {i}");
            store
                .put_flag(&f, &ChangeMeta::new("burst", ""))
                .await
                .expect("put")
        }));
    }
    for w in writes {
        last = last.max(w.await.expect("join"));
    }
    assert!(client.wait_for_version(last, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let swaps = *client.subscribe().borrow() - start;
    assert!(
        swaps < 40,
        "40 changes caused {swaps} snapshot swaps; they should be coalesced"
    );
    assert_eq!(client.snapshot().flag_keys().len(), 4);
    assert!(!client.is_enabled(t, "f0"));
}

#[tokio::test]
async fn overrides_apply_with_reason_and_expire() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "free", "eu-west").await;
    let other = tenant(&db, "free", "eu-west").await;
    let client = client(&db).await;
    store
        .put_flag(&on_for_plan("sso-beta", "enterprise"), &meta())
        .await
        .expect("flag");
    let expires = OffsetDateTime::now_utc() + time::Duration::hours(2);
    let o = Override {
        tenant_id: t,
        target: OverrideTarget::Flag("sso-beta".parse().expect("key")),
        value: json!("on"),
        reason: "design partner".into(),
        expires_at: Some(expires),
        created_by: "ignored".into(),
    };
    let v = store.put_override(&o, &meta()).await.expect("override");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    assert!(client.is_enabled(t, "sso-beta"));
    assert!(!client.is_enabled(other, "sso-beta"));
    let ex = client.explain("flag", t, "sso-beta").expect("explain");
    assert_eq!(ex.decided_by, Layer::Tenant);
    assert!(ex.layers[3]
        .note
        .as_deref()
        .unwrap_or("")
        .contains("design partner"));
    // After the expiry the override stops applying, without any write.
    let later = expires + time::Duration::seconds(1);
    let snap = client.snapshot();
    let e = snap.flag(t, "sso-beta", later).expect("flag");
    assert_eq!((e.enabled(), e.reason), (false, FlagReason::Default));
    // Expiry in the past is refused; deleting the override takes effect.
    let past = Override {
        expires_at: Some(OffsetDateTime::now_utc() - time::Duration::minutes(1)),
        ..o.clone()
    };
    assert!(store.put_override(&past, &meta()).await.is_err());
    let v = store
        .delete_override(t, &o.target, &meta())
        .await
        .expect("delete");
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    assert!(!client.is_enabled(t, "sso-beta"));
    // The change log recorded the override's reason and who set it.
    let changes = store.changes(0, 100, Some(t)).await.expect("changes");
    let put = changes
        .iter()
        .find(|c| c.entity == "override" && c.action == "put")
        .expect("put recorded");
    assert_eq!(
        put.after.as_ref().map(|a| a["reason"].clone()),
        Some(json!("design partner"))
    );
    assert_eq!(put.actor, "test");
}

#[tokio::test]
async fn openfeature_provider_evaluates_from_the_snapshot() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "pro", "eu-west").await;
    store
        .put_flag(&on_for_plan("f", "pro"), &meta())
        .await
        .expect("flag");
    let mv: Flag = serde_json::from_value(json!({"key": "limits", "kind": "multivariate",
        "variants": {"small": {"rows": 10}, "big": {"rows": 1000}}, "default_variant": "small", "off_variant": "small",
        "rules": [{"serve": {"type": "variant", "variant": "big"}}]})).expect("flag");
    let v = store.put_flag(&mv, &meta()).await.expect("flag");
    let client = client(&db).await;
    assert!(client.wait_for_version(v, Duration::from_secs(10)).await);
    let p = TenancyProvider::new(client);
    let ctx = EvaluationContext::default().with_targeting_key(t.to_string());
    let b = p.resolve_bool_value("f", &ctx).await.expect("bool");
    assert!(b.value);
    assert_eq!(b.variant.as_deref(), Some("on"));
    assert_eq!(b.reason, Some(EvaluationReason::TargetingMatch));
    let s = p
        .resolve_struct_value("limits", &ctx)
        .await
        .expect("struct");
    assert_eq!(s.variant.as_deref(), Some("big"));
    assert!(s.value.fields.contains_key("rows"));
    let err = p
        .resolve_string_value("f", &ctx)
        .await
        .expect_err("type mismatch");
    assert_eq!(err.code, EvaluationErrorCode::TypeMismatch);
    let err = p
        .resolve_bool_value("nope", &ctx)
        .await
        .expect_err("unknown");
    assert_eq!(err.code, EvaluationErrorCode::FlagNotFound);
    let err = p
        .resolve_bool_value("f", &EvaluationContext::default())
        .await
        .expect_err("no key");
    assert_eq!(err.code, EvaluationErrorCode::TargetingKeyMissing);
    assert_eq!(p.status(), open_feature::provider::ProviderStatus::Ready);
}

#[tokio::test]
async fn periodic_full_refresh_bounds_staleness_without_notifications() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "pro", "eu-west").await;
    store
        .put_flag(&Flag::boolean("quiet".parse().expect("key")), &meta())
        .await
        .expect("flag");
    let client = tenancy_config::ConfigClient::connect(
        db.config_as(tenancy_sdk::bootstrap::CONFIG_READER_ROLE),
        tenancy_config::ClientOptions {
            max_staleness: Duration::from_millis(600),
            ..fast_opts()
        },
    )
    .await
    .expect("client");
    assert!(!client.is_enabled(t, "quiet"));
    // A change that sends no notification (made by hand, outside the store).
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    owner
        .execute(
            "UPDATE tenancy_catalog.config_flags SET definition = jsonb_set(definition, '{default_variant}', '\"on\"') WHERE key = 'quiet'",
            &[],
        )
        .await
        .expect("silent update");
    let started = std::time::Instant::now();
    eventually(
        &client,
        "periodic refresh picks up the silent change",
        |c| c.is_enabled(t, "quiet"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!client.status().stale);
}
