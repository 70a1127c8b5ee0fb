//! The layer hierarchy, explanations, override expiry and targeted snapshot updates.

use super::*;

fn hierarchy_snapshot() -> (Snapshot, TenantId, TenantId, TenantId) {
    let seats: EntitlementKey = "seats".parse().expect("key");
    let sso: EntitlementKey = "sso".parse().expect("key");
    let locale: SettingKey = "locale".parse().expect("key");
    let pro = Plan {
        key: "pro".parse().expect("plan"),
        display_name: "Pro".into(),
        values: LayerValues {
            entitlements: BTreeMap::from([
                (seats.clone(), EntitlementValue::Limit(25)),
                (sso.clone(), EntitlementValue::Enabled(true)),
            ]),
            settings: BTreeMap::from([(locale.clone(), json!("de"))]),
            flags: BTreeMap::from([("f".parse().expect("f"), "on".parse().expect("v"))]),
        },
    };
    let eu = RegionLayer {
        region: "eu-west".parse().expect("r"),
        values: LayerValues {
            entitlements: BTreeMap::from([(sso.clone(), EntitlementValue::Enabled(false))]),
            settings: BTreeMap::from([(locale.clone(), json!("fr"))]),
            flags: BTreeMap::new(),
        },
    };
    let plain = tenant("free", "us-east", Placement::Pooled);
    let pro_us = tenant("pro", "us-east", Placement::Pooled);
    let mut pro_eu = tenant("pro", "eu-west", Placement::Schema);
    let id = pro_eu.attributes.id;
    pro_eu.overrides.push(Override {
        tenant_id: id,
        target: OverrideTarget::Entitlement(seats.clone()),
        value: json!(100),
        reason: "negotiated contract".into(),
        expires_at: Some(now() + Duration::days(30)),
        created_by: "sales".into(),
    });
    pro_eu.settings.insert(locale.clone(), json!("it"));
    let data = ConfigData {
        version: 7,
        entitlements: vec![
            EntitlementDef {
                key: seats,
                kind: EntitlementKind::Limit,
                default: EntitlementValue::Limit(3),
                description: String::new(),
            },
            EntitlementDef {
                key: sso,
                kind: EntitlementKind::Feature,
                default: EntitlementValue::Enabled(false),
                description: String::new(),
            },
        ],
        plans: vec![pro],
        regions: vec![eu],
        flags: vec![Flag::boolean("f".parse().expect("f"))],
        settings: vec![SettingDef {
            key: locale,
            schema: json!({"type": "string"}),
            default: json!("en"),
            description: String::new(),
        }],
        tenants: vec![plain.clone(), pro_us.clone(), pro_eu],
    };
    (
        Snapshot::build(data),
        plain.attributes.id,
        pro_us.attributes.id,
        id,
    )
}

#[test]
fn hierarchy_global_plan_region_tenant() {
    let (snap, plain, pro_us, pro_eu) = hierarchy_snapshot();
    assert_eq!(snap.version(), 7);
    // Global.
    assert_eq!(
        snap.entitlement(plain, "seats", now()),
        Some(Resolved {
            value: EntitlementValue::Limit(3),
            layer: Layer::Global
        })
    );
    assert!(!snap.has_feature(plain, "sso", now()));
    assert_eq!(
        snap.setting(plain, "locale")
            .map(|r| (r.value.clone(), r.layer)),
        Some((json!("en"), Layer::Global))
    );
    // Plan.
    assert_eq!(snap.limit(pro_us, "seats", now()), Some(25));
    assert_eq!(
        snap.entitlement(pro_us, "sso", now()).map(|r| r.layer),
        Some(Layer::Plan)
    );
    assert!(snap.has_feature(pro_us, "sso", now()));
    assert_eq!(
        snap.setting(pro_us, "locale")
            .map(|r| (r.value.clone(), r.layer)),
        Some((json!("de"), Layer::Plan))
    );
    let e = snap.flag(pro_us, "f", now()).expect("flag");
    assert_eq!((e.enabled(), e.reason), (true, FlagReason::Plan));
    // Region beats plan.
    assert_eq!(
        snap.entitlement(pro_eu, "sso", now()),
        Some(Resolved {
            value: EntitlementValue::Enabled(false),
            layer: Layer::Region
        })
    );
    // Tenant beats everything.
    assert_eq!(
        snap.entitlement(pro_eu, "seats", now()),
        Some(Resolved {
            value: EntitlementValue::Limit(100),
            layer: Layer::Tenant
        })
    );
    assert_eq!(
        snap.setting(pro_eu, "locale")
            .map(|r| (r.value.clone(), r.layer)),
        Some((json!("it"), Layer::Tenant))
    );
    // Limits.
    assert!(snap.check_limit(pro_us, "seats", 25, now()).is_ok());
    let err = snap
        .check_limit(pro_us, "seats", 26, now())
        .expect_err("over");
    assert_eq!((err.limit, err.requested), (25, 26));
    assert_eq!(
        snap.limit(pro_us, "no-such-limit", now()),
        Some(0),
        "unknown limits fail closed"
    );
    assert!(!snap.has_feature(pro_us, "no-such-feature", now()));
}

#[test]
fn explain_names_the_deciding_layer_and_every_layer() {
    let (snap, _plain, pro_us, pro_eu) = hierarchy_snapshot();
    let ex = snap
        .explain_entitlement(pro_eu, "seats", now())
        .expect("explain");
    assert_eq!(ex.decided_by, Layer::Tenant);
    assert_eq!(ex.value, json!(100));
    let layers: Vec<(Layer, Option<serde_json::Value>)> = ex
        .layers
        .iter()
        .map(|l| (l.layer, l.value.clone()))
        .collect();
    assert_eq!(
        layers,
        vec![
            (Layer::Global, Some(json!(3))),
            (Layer::Plan, Some(json!(25))),
            (Layer::Region, None),
            (Layer::Tenant, Some(json!(100)))
        ]
    );
    let note = ex.layers[3].note.clone().unwrap_or_default();
    assert!(
        note.contains("negotiated contract") && note.contains("expires"),
        "{note}"
    );

    let ex = snap.explain_flag(pro_us, "f", now()).expect("explain");
    assert_eq!(ex.decided_by, Layer::Plan);
    assert!(ex.detail.contains("plan"), "{}", ex.detail);

    let ex = snap.explain_setting(pro_eu, "locale").expect("explain");
    assert_eq!(
        (ex.decided_by, ex.value.clone()),
        (Layer::Tenant, json!("it"))
    );

    assert!(snap.explain_flag(pro_us, "missing", now()).is_err());
    assert!(snap.explain_entitlement(pro_us, "missing", now()).is_err());
    assert!(snap.explain_setting(pro_us, "missing").is_err());
}

#[test]
fn overrides_expire() {
    let (snap, _plain, _pro_us, pro_eu) = hierarchy_snapshot();
    let later = now() + Duration::days(31);
    assert_eq!(
        snap.entitlement(pro_eu, "seats", later),
        Some(Resolved {
            value: EntitlementValue::Limit(25),
            layer: Layer::Plan
        })
    );
    let ex = snap
        .explain_entitlement(pro_eu, "seats", later)
        .expect("explain");
    assert_eq!(ex.decided_by, Layer::Plan);
    let note = ex.layers[3].note.clone().unwrap_or_default();
    assert!(note.contains("expired"), "{note}");

    // Flag override with an expiry: on before, rules after.
    let mut t = tenant("free", "us-east", Placement::Pooled);
    let id = t.attributes.id;
    t.overrides.push(Override {
        tenant_id: id,
        target: OverrideTarget::Flag("f".parse().expect("key")),
        value: json!("on"),
        reason: "beta pilot".into(),
        expires_at: Some(now() + Duration::hours(1)),
        created_by: "pm".into(),
    });
    let snap = snap_with(vec![Flag::boolean("f".parse().expect("key"))], vec![t]);
    let e = snap.flag(id, "f", now()).expect("flag");
    assert_eq!((e.enabled(), e.reason), (true, FlagReason::Override));
    let e = snap
        .flag(id, "f", now() + Duration::hours(1))
        .expect("flag");
    assert_eq!((e.enabled(), e.reason), (false, FlagReason::Default));
}

#[test]
fn targeted_updates_replace_one_tenant_or_flag() {
    let (snap, plain, pro_us, _pro_eu) = hierarchy_snapshot();
    let mut moved = snap.tenant(plain).expect("tenant").clone();
    moved.attributes.plan = "pro".parse().expect("plan");
    moved.domains.push(Domain {
        tenant_id: plain,
        hostname: "app.acme.com".into(),
        state: DomainState::Verified,
        token: "t".into(),
        verified_at: None,
        last_error: None,
    });
    let next = snap.with_tenant(plain, Some(moved), 9);
    assert_eq!(next.version(), 9);
    assert_eq!(next.limit(plain, "seats", now()), Some(25));
    assert_eq!(next.tenant_for_domain("app.acme.com"), Some(plain));
    assert_eq!(
        snap.limit(plain, "seats", now()),
        Some(3),
        "the old snapshot is untouched"
    );
    let gone = next.with_tenant(plain, None, 9);
    assert!(gone.tenant(plain).is_none());
    assert_eq!(gone.tenant_for_domain("app.acme.com"), None);

    let mut f = Flag::boolean("f".parse().expect("key"));
    f.killed = true;
    let killed = snap.with_flag(&"f".parse().expect("key"), Some(f), 10);
    // The plan's forced variant is recompiled into the new flag, but the kill switch wins.
    assert_eq!(
        killed.flag(pro_us, "f", now()).map(|e| e.reason),
        Some(FlagReason::KillSwitch)
    );
    let removed = killed.with_flag(&"f".parse().expect("key"), None, 11);
    assert!(removed.flag(pro_us, "f", now()).is_none());
}
