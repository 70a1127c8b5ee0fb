use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::learned::{change_bursts, step_anomalies, stuck_provisioning};
use super::*;

fn tid(n: u128) -> TenantId {
    TenantId::from_uuid(uuid::Uuid::from_u128(n + 1)).expect("tenant id")
}

/// A fleet of `n` tenants that break no default rule: EU tenants have `gdpr`, dedicated
/// plans are dedicated, residency holds the region, no override turns security off.
fn clean_fleet(n: u128) -> Vec<TenantFacts> {
    (0..n)
        .map(|i| {
            let region = ["eu-west", "us-east", "ap-south"][(i % 3) as usize].to_owned();
            let dedicated = i % 5 == 0;
            TenantFacts {
                tenant: tid(i),
                plan: if dedicated { "dedicated" } else { "team" }.into(),
                region: region.clone(),
                placement: if dedicated {
                    Placement::Dedicated
                } else {
                    Placement::Pooled
                },
                residency: (i % 2 == 0).then(|| vec![region.clone(), "eu-central".into()]),
                compliance: if region.starts_with("eu") {
                    BTreeSet::from(["gdpr".to_owned()])
                } else {
                    BTreeSet::new()
                },
                overrides: vec![OverrideFact {
                    flag: "mfa_required".into(),
                    variant: "on".into(),
                    turns_off: false,
                }],
                served: Vec::new(),
            }
        })
        .collect()
}

fn kinds(f: &[Finding]) -> Vec<(AnomalyKind, Option<TenantId>)> {
    f.iter().map(|f| (f.kind, f.tenant)).collect()
}

#[test]
fn a_clean_fleet_has_no_finding() {
    let cfg = RulesConfig::default();
    assert!(cfg.validate().is_ok());
    assert_eq!(check(&cfg, &clean_fleet(300), &[]), vec![]);
}

#[test]
fn a_tenant_in_the_eu_without_gdpr_is_found_and_a_tag_is_enough() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(30);
    fleet[3].compliance.clear(); // eu-west
    fleet[4].compliance.clear(); // us-east: needs nothing
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(
        kinds(&f),
        vec![(AnomalyKind::ComplianceMissing, Some(tid(3)))]
    );
    assert_eq!(f[0].subject.as_deref(), Some("flag:gdpr"));
    assert_eq!(f[0].severity, Severity::High);
    assert!(f[0].message.starts_with("rule compliance_missing: "));
    assert!(cfg.rejects(&f[0]));
    // A configured map: a US health region needs hipaa as well.
    let mut cfg = cfg;
    cfg.region_compliance
        .insert("us-east".into(), vec!["hipaa".into()]);
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(f.len(), 1 + 10, "ten us-east tenants lack hipaa");
    // A prefix covers only whole region segments.
    assert!(region_matches("eu", "eu-west"));
    assert!(region_matches("eu", "eu"));
    assert!(!region_matches("eu", "europa"));
}

#[test]
fn a_tenant_outside_its_residency_is_found() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(12);
    fleet[2].residency = Some(vec!["eu-west".into()]); // ap-south
    fleet[1].residency = None; // no policy: nothing to break
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(
        kinds(&f),
        vec![(AnomalyKind::OutsideResidency, Some(tid(2)))]
    );
    assert_eq!(f[0].severity, Severity::Critical);
    assert_eq!(f[0].subject.as_deref(), Some("region:ap-south"));
}

#[test]
fn a_dedicated_plan_on_pooled_placement_is_found_and_only_warns_by_default() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(12);
    fleet[5].placement = Placement::Pooled; // dedicated plan
    fleet[6].placement = Placement::Schema; // team plan: fine anywhere
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(
        kinds(&f),
        vec![(AnomalyKind::DedicatedOnPooled, Some(tid(5)))]
    );
    assert!(
        !cfg.rejects(&f[0]),
        "medium is below the default reject_from"
    );
    let mut off = cfg.clone();
    off.disabled.push(AnomalyKind::DedicatedOnPooled);
    assert!(check(&off, &fleet, &[]).is_empty());
}

#[test]
fn an_override_turning_a_security_flag_off_is_found() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(6);
    fleet[1].overrides = vec![
        OverrideFact {
            flag: "mfa_required".into(),
            variant: "off".into(),
            turns_off: true,
        },
        OverrideFact {
            flag: "dark_mode".into(),
            variant: "off".into(),
            turns_off: true,
        },
    ];
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(
        kinds(&f),
        vec![(AnomalyKind::SecurityOverride, Some(tid(1)))]
    );
    assert_eq!(f[0].subject.as_deref(), Some("flag:mfa_required"));
}

#[test]
fn a_rollout_reaching_a_region_its_flag_excludes_is_found() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(6);
    let flags = vec![FlagFacts {
        key: "new_billing".into(),
        excluded_regions: vec!["eu".into()],
    }];
    // Tenant 0 is in eu-west and served "on" by a rollout; tenant 3 too but its variant
    // is the default; tenant 1 is in us-east.
    fleet[0].served = vec![ServedFact {
        flag: "new_billing".into(),
        variant: "on".into(),
        reached: true,
    }];
    fleet[3].served = vec![ServedFact {
        flag: "new_billing".into(),
        variant: "off".into(),
        reached: false,
    }];
    fleet[1].served = fleet[0].served.clone();
    let f = check(&cfg, &fleet, &flags);
    assert_eq!(kinds(&f), vec![(AnomalyKind::RolloutRegion, Some(tid(0)))]);
    // An exclusion declared in configuration instead of in the flag.
    let mut cfg = cfg;
    cfg.rollout_exclusions
        .insert("new_billing".into(), vec!["us-east".into()]);
    let f = check(&cfg, &fleet, &[]);
    assert_eq!(kinds(&f), vec![(AnomalyKind::RolloutRegion, Some(tid(1)))]);
}

#[test]
fn brought_is_what_a_change_adds() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(6);
    fleet[0].compliance.clear();
    let before = check(&cfg, &fleet, &[]);
    fleet[2].residency = Some(vec!["us-east".into()]);
    let after = check(&cfg, &fleet, &[]);
    let new = brought(&before, &after);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].kind, AnomalyKind::OutsideResidency);
}

#[test]
fn configuration_is_validated() {
    let mut cfg = RulesConfig::default();
    cfg.region_compliance.insert("EU West".into(), vec![]);
    assert!(cfg
        .validate()
        .expect_err("refused")
        .contains("region_compliance"));
    let mut cfg = RulesConfig::default();
    cfg.disabled.push(AnomalyKind::Volume);
    assert!(cfg.validate().expect_err("refused").contains("disabled"));
    let mut cfg = RulesConfig::default();
    cfg.learned.z = f64::NAN;
    assert!(cfg.validate().expect_err("refused").contains("learned.z"));
    let cfg: RulesConfig = serde_json::from_value(serde_json::json!({
        "reject_from": "critical",
        "region_compliance": {"us-health": ["hipaa"]},
        "severity": {"dedicated_on_pooled": "high"},
    }))
    .expect("parses");
    assert_eq!(cfg.reject_from, Severity::Critical);
    assert_eq!(cfg.severity.dedicated_on_pooled, Severity::High);
    assert_eq!(cfg.severity.outside_residency, Severity::Critical);
    assert!(serde_json::from_value::<RulesConfig>(serde_json::json!({"typo": 1})).is_err());
}

const DAY: u64 = 86_400;
const NOW: u64 = 1_800_000_000;

/// Fourteen days of `steps` runs with log-normal-ish durations around `ms` and a
/// `fail` failure rate, `per_day` runs a day.
fn history(rng: &mut StdRng, step: &str, per_day: u64, ms: f64, fail: f64) -> Vec<StepRun> {
    let start = NOW - 14 * DAY;
    (0..14 * per_day)
        .map(|i| StepRun {
            step: step.into(),
            at: start + i * DAY / per_day,
            failed: rng.gen_bool(fail),
            ms: ms * (1.0 + rng.gen_range(-0.2..0.3)),
        })
        .collect()
}

#[test]
fn a_steady_step_history_has_no_finding() {
    let mut rng = StdRng::seed_from_u64(1);
    let o = LearnedOptions::default();
    let mut runs = history(&mut rng, "create_schema", 50, 800.0, 0.02);
    runs.extend(history(&mut rng, "seed_settings", 50, 30.0, 0.0));
    assert_eq!(step_anomalies(&runs, NOW, &o), vec![]);
}

#[test]
fn a_rising_failure_rate_of_a_step_is_found() {
    let mut rng = StdRng::seed_from_u64(2);
    let o = LearnedOptions::default();
    let mut runs = history(&mut rng, "create_schema", 50, 800.0, 0.02);
    // After a release, the last day fails one run in three.
    for r in runs.iter_mut().filter(|r| r.at >= NOW - DAY) {
        r.failed = rng.gen_bool(0.35);
    }
    let f = step_anomalies(&runs, NOW, &o);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].kind, AnomalyKind::StepFailures);
    assert_eq!(f[0].subject.as_deref(), Some("step:create_schema"));
    assert!(f[0].score >= 1.0);
    assert!(f[0].evidence[0].observed > f[0].evidence[0].baseline * 5.0);
}

#[test]
fn a_slower_step_is_found_but_not_a_few_slow_runs() {
    let mut rng = StdRng::seed_from_u64(3);
    let o = LearnedOptions::default();
    let mut runs = history(&mut rng, "apply_migrations", 40, 2000.0, 0.0);
    // Three slow runs in the day: the median of the day is unmoved.
    for r in runs.iter_mut().filter(|r| r.at >= NOW - DAY).take(3) {
        r.ms = 60_000.0;
    }
    assert_eq!(step_anomalies(&runs, NOW, &o), vec![]);
    // Every run of the last day ten times slower.
    for r in runs.iter_mut().filter(|r| r.at >= NOW - DAY) {
        r.ms *= 10.0;
    }
    let f = step_anomalies(&runs, NOW, &o);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].kind, AnomalyKind::StepDuration);
}

#[test]
fn a_step_without_history_is_not_judged() {
    let o = LearnedOptions::default();
    let runs: Vec<StepRun> = (0..20)
        .map(|i| StepRun {
            step: "new_step".into(),
            at: NOW - 100 + i,
            failed: true,
            ms: 1.0,
        })
        .collect();
    assert_eq!(step_anomalies(&runs, NOW, &o), vec![]);
}

#[test]
fn a_tenant_stuck_in_provisioning_is_found() {
    let mut rng = StdRng::seed_from_u64(4);
    let o = LearnedOptions::default();
    let finished: Vec<f64> = (0..200).map(|_| rng.gen_range(20.0..60.0)).collect();
    let provisioning = vec![(tid(1), 45.0), (tid(2), 300.0), (tid(3), 4000.0)];
    let f = stuck_provisioning(&provisioning, &finished, &o);
    // 300 s is far past the usual but under the floor of ten minutes.
    assert_eq!(
        kinds(&f),
        vec![(AnomalyKind::StuckProvisioning, Some(tid(3)))]
    );
    let mut o2 = o.clone();
    o2.stuck_floor_secs = 0.0;
    let f = stuck_provisioning(&provisioning, &finished, &o2);
    assert_eq!(f.len(), 2);
    // Too little history: nothing.
    assert!(stuck_provisioning(&provisioning, &finished[..3], &o2).is_empty());
}

#[test]
fn a_burst_of_changes_unlike_the_actor_is_found() {
    let mut rng = StdRng::seed_from_u64(5);
    let o = LearnedOptions::default();
    let mut changes = Vec::new();
    // A busy pipeline: about 30 changes an hour for two weeks, and 35 this hour.
    for h in 0..(14 * 24) {
        for _ in 0..rng.gen_range(25..35) {
            changes.push(ChangeFact {
                actor: "service:deployer".into(),
                at: NOW - 14 * DAY + h * 3600 + rng.gen_range(0..3600),
                tenant: None,
            });
        }
    }
    // A person who makes a couple of changes a day, then 40 in an hour on one tenant.
    for d in 0..14 {
        changes.push(ChangeFact {
            actor: "user:alice".into(),
            at: NOW - 14 * DAY + d * DAY + 3600 * 10,
            tenant: None,
        });
    }
    for i in 0..40 {
        changes.push(ChangeFact {
            actor: "user:alice".into(),
            at: NOW - 3000 + i * 60,
            tenant: Some(tid(7)),
        });
    }
    for i in 0..35 {
        changes.push(ChangeFact {
            actor: "service:deployer".into(),
            at: NOW - 3000 + i * 60,
            tenant: None,
        });
    }
    let f = change_bursts(&changes, NOW, &o);
    assert_eq!(kinds(&f), vec![(AnomalyKind::ChangeBurst, Some(tid(7)))]);
    assert_eq!(f[0].subject.as_deref(), Some("actor:user:alice"));
    // A new actor making a few changes is not a burst.
    let few: Vec<ChangeFact> = (0..5)
        .map(|i| ChangeFact {
            actor: "user:bob".into(),
            at: NOW - 100 + i,
            tenant: None,
        })
        .collect();
    assert!(change_bursts(&few, NOW, &o).is_empty());
}

#[test]
fn the_tracker_keeps_one_detection_per_finding_while_it_holds() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(6);
    fleet[0].compliance.clear();
    let mut t = Tracker::new();
    let first = t.update(&check(&cfg, &fleet, &[]), NOW);
    assert_eq!(first.opened.len(), 1);
    let d = &first.opened[0];
    assert_eq!(d.tenant_id, Some(tid(0)));
    assert_eq!(d.kind, AnomalyKind::ComplianceMissing);
    assert_eq!(d.first_hour, NOW - NOW % 3600);
    // The next check: the same detection, extended, nothing opened.
    let again = t.update(&check(&cfg, &fleet, &[]), NOW + 7200);
    assert!(again.opened.is_empty());
    assert_eq!(again.detections[0].id, d.id);
    assert_eq!(again.detections[0].first_hour, d.first_hour);
    assert_eq!(again.detections[0].last_hour, d.first_hour + 7200);
    // Fixed: closed; broken again: a new detection.
    fleet[0].compliance.insert("gdpr".into());
    assert_eq!(t.update(&check(&cfg, &fleet, &[]), NOW + 9000).closed, 1);
    assert_eq!(t.open(), 0);
    fleet[0].compliance.clear();
    let reopened = t.update(&check(&cfg, &fleet, &[]), NOW + 12000);
    assert_eq!(reopened.opened.len(), 1);
    assert_ne!(reopened.opened[0].id, d.id);
}

#[test]
fn most_severe_keeps_the_worst() {
    let cfg = RulesConfig::default();
    let mut fleet = clean_fleet(9);
    fleet[0].compliance.clear();
    fleet[1].residency = Some(vec!["nowhere".into()]);
    fleet[5].placement = Placement::Pooled;
    let f = most_severe(check(&cfg, &fleet, &[]), 2);
    assert_eq!(
        f.iter().map(|f| f.severity).collect::<Vec<_>>(),
        vec![Severity::Critical, Severity::High]
    );
}
