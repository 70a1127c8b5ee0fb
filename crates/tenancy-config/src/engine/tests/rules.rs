//! Targeting: every condition type, rule order, rollouts, the kill switch, unknown keys.

use super::*;

#[test]
fn every_condition_type_matches_and_misses() {
    let t = tenant("pro", "eu-west", Placement::Pooled);
    let id = t.attributes.id;
    let other = TenantId::new_random();
    let cases: Vec<(&str, Condition, bool)> = vec![
        (
            "tenant in",
            Condition::TenantId {
                op: SetOp::In,
                values: vec![id],
            },
            true,
        ),
        (
            "tenant in other",
            Condition::TenantId {
                op: SetOp::In,
                values: vec![other],
            },
            false,
        ),
        (
            "tenant not in",
            Condition::TenantId {
                op: SetOp::NotIn,
                values: vec![other],
            },
            true,
        ),
        (
            "plan in",
            Condition::Plan {
                op: SetOp::In,
                values: vec!["pro".parse().expect("p")],
            },
            true,
        ),
        (
            "plan in other",
            Condition::Plan {
                op: SetOp::In,
                values: vec!["free".parse().expect("p")],
            },
            false,
        ),
        (
            "plan not in",
            Condition::Plan {
                op: set(SetOp::NotIn),
                values: vec!["pro".parse().expect("p")],
            },
            false,
        ),
        (
            "region in",
            Condition::Region {
                op: SetOp::In,
                values: vec!["eu-west".parse().expect("r")],
            },
            true,
        ),
        (
            "region not in",
            Condition::Region {
                op: SetOp::NotIn,
                values: vec!["eu-west".parse().expect("r")],
            },
            false,
        ),
        (
            "placement in",
            Condition::Placement {
                op: SetOp::In,
                values: vec![Placement::Pooled],
            },
            true,
        ),
        (
            "placement in other",
            Condition::Placement {
                op: SetOp::In,
                values: vec![Placement::Dedicated, Placement::Schema],
            },
            false,
        ),
        (
            "placement not in",
            Condition::Placement {
                op: SetOp::NotIn,
                values: vec![Placement::Dedicated],
            },
            true,
        ),
        (
            "tags any",
            Condition::Tags {
                op: TagOp::AnyOf,
                values: vec!["x".into(), "beta".into()],
            },
            true,
        ),
        (
            "tags any miss",
            Condition::Tags {
                op: TagOp::AnyOf,
                values: vec!["x".into()],
            },
            false,
        ),
        (
            "tags all",
            Condition::Tags {
                op: TagOp::AllOf,
                values: vec!["eu".into(), "beta".into()],
            },
            true,
        ),
        (
            "tags all miss",
            Condition::Tags {
                op: TagOp::AllOf,
                values: vec!["eu".into(), "x".into()],
            },
            false,
        ),
        (
            "tags none",
            Condition::Tags {
                op: TagOp::NoneOf,
                values: vec!["x".into()],
            },
            true,
        ),
        (
            "tags none miss",
            Condition::Tags {
                op: TagOp::NoneOf,
                values: vec!["beta".into()],
            },
            false,
        ),
        (
            "created before",
            Condition::CreatedAt {
                op: TimeOp::Before,
                value: datetime!(2025-07-01 00:00 UTC),
            },
            true,
        ),
        (
            "created before miss",
            Condition::CreatedAt {
                op: TimeOp::Before,
                value: datetime!(2025-06-01 00:00 UTC),
            },
            false,
        ),
        (
            "created after (inclusive)",
            Condition::CreatedAt {
                op: TimeOp::After,
                value: datetime!(2025-06-01 00:00 UTC),
            },
            true,
        ),
        (
            "created after miss",
            Condition::CreatedAt {
                op: TimeOp::After,
                value: datetime!(2025-06-02 00:00 UTC),
            },
            false,
        ),
        (
            "custom eq",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::Eq,
                value: json!("fintech"),
            },
            true,
        ),
        (
            "custom eq number loose",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Eq,
                value: json!(250.0),
            },
            true,
        ),
        (
            "custom not eq",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::NotEq,
                value: json!("retail"),
            },
            true,
        ),
        (
            "custom in",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::In,
                value: json!(["retail", "fintech"]),
            },
            true,
        ),
        (
            "custom not in",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::NotIn,
                value: json!(["fintech"]),
            },
            false,
        ),
        (
            "custom gt",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Gt,
                value: json!(100),
            },
            true,
        ),
        (
            "custom gt miss",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Gt,
                value: json!(250),
            },
            false,
        ),
        (
            "custom gte",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Gte,
                value: json!(250),
            },
            true,
        ),
        (
            "custom lt",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Lt,
                value: json!(251),
            },
            true,
        ),
        (
            "custom lte miss",
            Condition::Custom {
                name: "employees".into(),
                op: CustomOp::Lte,
                value: json!(249),
            },
            false,
        ),
        (
            "custom gt on a string",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::Gt,
                value: json!(1),
            },
            false,
        ),
        (
            "custom contains string",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::Contains,
                value: json!("tech"),
            },
            true,
        ),
        (
            "custom contains array",
            Condition::Custom {
                name: "labels".into(),
                op: CustomOp::Contains,
                value: json!("b"),
            },
            true,
        ),
        (
            "custom contains miss",
            Condition::Custom {
                name: "labels".into(),
                op: CustomOp::Contains,
                value: json!("z"),
            },
            false,
        ),
        (
            "custom exists",
            Condition::Custom {
                name: "industry".into(),
                op: CustomOp::Exists,
                value: json!(null),
            },
            true,
        ),
        (
            "custom missing attribute",
            Condition::Custom {
                name: "nope".into(),
                op: CustomOp::NotEq,
                value: json!(1),
            },
            false,
        ),
    ];
    for (name, cond, expected) in cases {
        let f = flag_with(vec![cond]);
        f.validate().expect(name);
        let snap = snap_with(vec![f], vec![t.clone()]);
        let e = snap.flag(id, "f", now()).expect("flag");
        assert_eq!(e.enabled(), expected, "{name}");
        let reason = if expected {
            FlagReason::Rule {
                index: 0,
                bucket: None,
            }
        } else {
            FlagReason::Default
        };
        assert_eq!(e.reason, reason, "{name}");
    }
}

#[test]
fn all_conditions_of_a_rule_must_hold_and_first_rule_wins() {
    let t = tenant("pro", "eu-west", Placement::Pooled);
    let id = t.attributes.id;
    let mut f = Flag {
        kind: FlagKind::Multivariate,
        variants: BTreeMap::from([
            ("a".parse().expect("v"), json!("A")),
            ("b".parse().expect("v"), json!("B")),
            ("c".parse().expect("v"), json!("C")),
        ]),
        default_variant: "c".parse().expect("v"),
        off_variant: "c".parse().expect("v"),
        ..Flag::boolean("m".parse().expect("key"))
    };
    f.rules = vec![
        Rule {
            name: "needs both".into(),
            conditions: vec![
                Condition::Plan {
                    op: SetOp::In,
                    values: vec!["pro".parse().expect("p")],
                },
                Condition::Region {
                    op: SetOp::In,
                    values: vec!["us-east".parse().expect("r")],
                },
            ],
            serve: Serve::Variant {
                variant: "a".parse().expect("v"),
            },
        },
        Rule {
            name: "pro".into(),
            conditions: vec![Condition::Plan {
                op: SetOp::In,
                values: vec!["pro".parse().expect("p")],
            }],
            serve: Serve::Variant {
                variant: "b".parse().expect("v"),
            },
        },
        Rule {
            name: "everyone".into(),
            conditions: vec![],
            serve: Serve::Variant {
                variant: "a".parse().expect("v"),
            },
        },
    ];
    f.validate().expect("valid");
    let snap = snap_with(vec![f], vec![t]);
    let e = snap.flag(id, "m", now()).expect("flag");
    assert_eq!(e.value, &json!("B"));
    assert_eq!(
        e.reason,
        FlagReason::Rule {
            index: 1,
            bucket: None
        }
    );
}

#[test]
fn rollout_is_stable_and_close_to_its_weights() {
    // Stable: a known vector, so other implementations (and future versions) agree.
    let t: TenantId = "0190f2c4-5b7e-7a51-9d0e-3f1c2b4a5d6e".parse().expect("id");
    let b = rollout_bucket("new-billing", t);
    assert_eq!(b, rollout_bucket("new-billing", t));
    assert!(b < 10_000);
    // Salted by flag: the same tenant lands in different buckets for different flags.
    let differs = (0..20).any(|i| rollout_bucket(&format!("flag-{i}"), t) != b);
    assert!(differs);

    let mut f = Flag::boolean("roll".parse().expect("key"));
    f.rules.push(Rule {
        name: "30%".into(),
        conditions: vec![],
        serve: Serve::Rollout {
            weights: vec![
                WeightedVariant {
                    variant: "on".parse().expect("v"),
                    weight: 3_000,
                },
                WeightedVariant {
                    variant: "off".parse().expect("v"),
                    weight: 7_000,
                },
            ],
        },
    });
    f.validate().expect("valid");
    let tenants: Vec<TenantData> = (0..10_000)
        .map(|_| tenant("pro", "eu-west", Placement::Pooled))
        .collect();
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.attributes.id).collect();
    let snap = snap_with(vec![f.clone()], tenants.clone());
    let on = ids
        .iter()
        .filter(|id| snap.is_enabled(**id, "roll", now()))
        .count();
    assert!(
        (2_750..=3_250).contains(&on),
        "30% rollout gave {on} of 10000"
    );
    // Every evaluation of a tenant reports its bucket, and the same answer each time.
    for id in ids.iter().take(100) {
        let e = snap.flag(*id, "roll", now()).expect("flag");
        let FlagReason::Rule {
            bucket: Some(b), ..
        } = e.reason
        else {
            panic!("rollout reason expected, got {:?}", e.reason)
        };
        assert_eq!(b, rollout_bucket("roll", *id));
        assert_eq!(e.enabled(), b < 3_000);
        assert_eq!(snap.is_enabled(*id, "roll", now()), e.enabled());
    }
    // Growing the rollout only adds tenants: nobody who had it loses it.
    let mut bigger = f;
    bigger.rules[0].serve = Serve::Rollout {
        weights: vec![
            WeightedVariant {
                variant: "on".parse().expect("v"),
                weight: 5_000,
            },
            WeightedVariant {
                variant: "off".parse().expect("v"),
                weight: 5_000,
            },
        ],
    };
    let snap2 = snap_with(vec![bigger], tenants);
    for id in &ids {
        if snap.is_enabled(*id, "roll", now()) {
            assert!(snap2.is_enabled(*id, "roll", now()));
        }
    }
}

#[test]
fn kill_switch_beats_rules_and_overrides() {
    let mut t = tenant("pro", "eu-west", Placement::Pooled);
    let id = t.attributes.id;
    t.overrides.push(Override {
        tenant_id: id,
        target: OverrideTarget::Flag("f".parse().expect("key")),
        value: json!("on"),
        reason: "pilot".into(),
        expires_at: None,
        created_by: "ops".into(),
    });
    let mut f = flag_with(vec![]);
    f.killed = true;
    let snap = snap_with(vec![f], vec![t]);
    let e = snap.flag(id, "f", now()).expect("flag");
    assert!(!e.enabled());
    assert_eq!(e.reason, FlagReason::KillSwitch);
    let ex = snap.explain_flag(id, "f", now()).expect("explain");
    assert!(ex.detail.contains("kill switch"), "{}", ex.detail);
}

#[test]
fn unknown_flag_and_unknown_tenant() {
    let snap = snap_with(vec![flag_with(vec![])], vec![]);
    let stranger = TenantId::new_random();
    assert!(snap.flag(stranger, "nope", now()).is_none());
    assert!(!snap.is_enabled(stranger, "nope", now()));
    let e = snap.flag(stranger, "f", now()).expect("flag");
    assert_eq!(e.reason, FlagReason::UnknownTenant);
    assert!(!e.enabled());
}
