//! The access anomaly detectors on generated traffic: each finds the attack injected for
//! it, on the attacked tenant, and stays quiet on every other tenant's seasonal traffic;
//! the detector's memory stays bounded, its options are checked, the feed records
//! nothing while off, and the board keeps, updates and refuses detections.

use std::time::Duration;

use tenancy_core::TenantId;
use tenancy_insights::anomaly::simulate::{
    run, run_with, AttackKind, Batcher, BenignKind, SimOptions, Simulation,
};
use tenancy_insights::anomaly::{
    AccessEvent, AccessKind, AnomalyFeed, AnomalyKind, Board, DetectionBatch, Detector,
    DetectorOptions, Filter, OptionsError, Severity,
};
use tenancy_sdk::{Observer, Outcome};

/// Runs a small simulation with attacks of `kind` only and checks that every attack is
/// found by `expected` on its tenant, and that nothing else is flagged.
fn detects(kind: AttackKind, expected: AnomalyKind, seed: u64) {
    let mut sim = Simulation::new(SimOptions {
        seed,
        tenants: 24,
        days: 13,
        attacks_per_kind: 3,
        kinds: vec![kind],
        ..SimOptions::default()
    });
    let r = run(&mut sim, DetectorOptions::default()).expect("run");
    assert_eq!(r.ours.attacks, 3);
    for a in sim.attacks() {
        assert!(
            r.detections.iter().any(|d| d.tenant_id == Some(a.tenant)
                && d.kind == expected
                && d.first_hour / 3600 >= a.first_hour
                && d.first_hour / 3600 <= a.last_hour + 24),
            "{kind}: {a:?} not found by {expected:?}: {:#?}",
            r.detections
        );
    }
    assert_eq!(
        r.ours.false_alerts, 0,
        "{kind}: flagged outside the attacks: {:#?}",
        r.detections
    );
    for d in &r.detections {
        assert!(d.score >= 1.0, "{d:?}");
        assert!(!d.evidence.is_empty(), "{d:?}");
        assert!(d.severity >= Severity::Low);
    }
}

#[test]
fn enumeration_is_found_from_404s_on_id_lookups() {
    detects(AttackKind::Enumeration, AnomalyKind::Enumeration, 11);
}

#[test]
fn token_replay_is_found_from_context_refusals() {
    detects(AttackKind::TokenReplay, AnomalyKind::ContextRefusal, 12);
}

#[test]
fn slow_exfiltration_is_found_from_heavy_requests_over_hours() {
    detects(AttackKind::SlowExfiltration, AnomalyKind::Exfiltration, 13);
}

#[test]
fn credential_sharing_is_found_from_new_tenants_of_a_subject() {
    detects(AttackKind::CredentialSharing, AnomalyKind::CrossTenant, 14);
}

#[test]
fn a_sudden_noisy_neighbour_is_found_from_volume_against_its_hour_of_week() {
    detects(AttackKind::NoisyNeighbour, AnomalyKind::Volume, 15);
}

#[test]
fn seasonal_traffic_without_attacks_raises_nothing() {
    let mut sim = Simulation::new(SimOptions {
        seed: 21,
        tenants: 40,
        days: 16,
        attacks_per_kind: 0,
        ..SimOptions::default()
    });
    let r = run(&mut sim, DetectorOptions::default()).expect("run");
    assert!(r.events > 100_000, "{}", r.events);
    assert!(r.detections.is_empty(), "{:#?}", r.detections);
    // The static thresholds, on the same traffic, do alert (large tenants' normal).
    assert!(r.baseline.false_alerts > 0);
}

#[test]
fn benign_anomalies_raise_nothing() {
    // Marketing spikes, new office networks, daylight saving and growth, no attack.
    let mut sim = Simulation::new(SimOptions {
        seed: 22,
        tenants: 40,
        days: 24,
        attacks_per_kind: 0,
        benign_per_kind: 8,
        ..SimOptions::default()
    });
    let kinds: Vec<BenignKind> = sim.benign().iter().map(|(k, _)| *k).collect();
    for k in [
        BenignKind::MarketingSpike,
        BenignKind::NewOfficeNetwork,
        BenignKind::DaylightSaving,
        BenignKind::Growing,
    ] {
        assert_eq!(kinds.iter().filter(|b| **b == k).count(), 8, "{k}");
    }
    let r = run(&mut sim, DetectorOptions::default()).expect("run");
    assert!(r.detections.is_empty(), "{:#?}", r.detections);
}

#[test]
fn the_replay_batches_keep_every_count_per_tenant() {
    let mut sim = Simulation::new(SimOptions {
        seed: 23,
        tenants: 30,
        days: 12,
        attacks_per_kind: 2,
        ..SimOptions::default()
    });
    let mut batcher = Batcher::default();
    let (mut events, mut requests) = (0usize, 0usize);
    let mut buf = Vec::new();
    // Per tenant: requests, lookups, 404s, mismatches, refusals.
    let count = |m: &mut std::collections::HashMap<TenantId, [u64; 5]>, e: &AccessEvent, w: u64| {
        let c = m.entry(e.tenant).or_default();
        match e.kind {
            AccessKind::Response {
                status, id_lookup, ..
            } => {
                c[0] += w;
                c[1] += w * u64::from(id_lookup);
                c[2] += w * u64::from(status == 404);
            }
            AccessKind::TenantMismatch => c[3] += w,
            AccessKind::ContextRefused => c[4] += w,
        }
    };
    let (mut raw, mut sent) = (Default::default(), Default::default());
    for hour in sim.hours() {
        buf.clear();
        sim.labelled_hour(hour, &mut buf);
        for l in &buf {
            count(&mut raw, &l.event, 1);
        }
        let b = batcher.batches(&buf);
        for x in &b {
            count(&mut sent, &x.event, u64::from(x.weight));
            assert_eq!(x.event.at / 3600, hour);
        }
        events += buf.len();
        requests += b.len();
    }
    assert_eq!(raw, sent);
    assert!(
        requests * 5 < events,
        "{requests} requests for {events} events"
    );
    // The batched stream scores as the raw one does.
    let opts = SimOptions {
        seed: 23,
        tenants: 30,
        days: 12,
        attacks_per_kind: 2,
        ..SimOptions::default()
    };
    let a = run_with(
        &mut Simulation::new(opts.clone()),
        DetectorOptions::default(),
        false,
    )
    .expect("run");
    let b = run_with(&mut Simulation::new(opts), DetectorOptions::default(), true).expect("run");
    assert_eq!(a.events, b.events);
    assert!(b.requests < a.requests);
    assert!(
        b.ours.recall >= a.ours.recall - 0.1,
        "{:?} vs {:?}",
        b.ours,
        a.ours
    );
}

fn tenant(n: u64) -> TenantId {
    TenantId::from_uuid(uuid::Uuid::from_u64_pair(n, 1)).expect("id")
}

fn lookup(at: u64, t: TenantId, status: u16) -> AccessEvent {
    AccessEvent::new(
        at,
        t,
        AccessKind::Response {
            status,
            id_lookup: true,
            rows: 1,
            bytes: 300,
        },
    )
}

#[test]
fn a_detection_carries_its_evidence_and_later_hours_extend_it() {
    let mut d = Detector::new(DetectorOptions {
        baseline_hours: 24,
        ..DetectorOptions::default()
    })
    .expect("detector");
    let t = tenant(1);
    let start = 1_767_571_200;
    // A day of baseline: 100 lookups an hour, 1 missing.
    for h in 0..24u64 {
        for i in 0..100 {
            d.observe(&lookup(
                start + h * 3600 + i,
                t,
                if i == 0 { 404 } else { 200 },
            ));
        }
    }
    // Two hours of enumeration: 100 lookups, 80 missing.
    let mut opened = Vec::new();
    for h in 24..26u64 {
        for i in 0..100 {
            opened.extend(d.observe(&lookup(
                start + h * 3600 + i,
                t,
                if i < 80 { 404 } else { 200 },
            )));
        }
    }
    opened.extend(d.advance(start + 27 * 3600));
    assert_eq!(opened.len(), 1, "{opened:#?}");
    let kept: Vec<_> = d.detections().cloned().collect();
    assert_eq!(kept.len(), 1);
    let det = &kept[0];
    assert_eq!(det.kind, AnomalyKind::Enumeration);
    assert_eq!(det.tenant_id, Some(t));
    assert_eq!(det.first_hour, start + 24 * 3600);
    assert_eq!(
        det.last_hour,
        start + 25 * 3600,
        "the second hour extends it"
    );
    assert!(det.severity >= Severity::High, "{det:?}");
    let ev = &det.evidence[0];
    assert_eq!(ev.signal, "not_found_per_hour");
    assert_eq!(ev.observed, 80.0);
    assert!(ev.baseline < 5.0, "{ev:?}");
}

#[test]
fn memory_is_bounded_by_the_tenant_capacity() {
    let mut d = Detector::new(DetectorOptions {
        max_tenants: 50,
        ..DetectorOptions::default()
    })
    .expect("detector");
    for i in 0..200u64 {
        d.observe(&lookup(1_767_571_200 + i, tenant(i + 1), 200));
    }
    let s = d.stats();
    assert_eq!(s.tenants, 50);
    assert_eq!(s.untracked_events, 150);
}

#[test]
fn options_are_checked() {
    for (opts, err) in [
        (
            DetectorOptions {
                baseline_hours: 0,
                ..DetectorOptions::default()
            },
            OptionsError::BaselineHours(0),
        ),
        (
            DetectorOptions {
                max_tenants: 0,
                ..DetectorOptions::default()
            },
            OptionsError::Capacity("max_tenants"),
        ),
    ] {
        assert_eq!(Detector::new(opts).err(), Some(err));
    }
}

#[test]
fn the_feed_counts_refusals_only_while_recording() {
    let feed = AnomalyFeed::new(DetectorOptions::default()).expect("feed");
    let t = tenant(3);
    feed.statement(t, Duration::from_millis(1), Outcome::Ok { rows: 1 });
    assert_eq!(
        feed.stats().tenants,
        0,
        "an ordinary statement is no signal"
    );
    feed.set_recording(false);
    feed.statement(t, Duration::from_millis(1), Outcome::ContextRefused);
    assert_eq!(feed.stats().tenants, 0);
    feed.set_recording(true);
    feed.statement(t, Duration::from_millis(1), Outcome::ContextRefused);
    assert_eq!(feed.stats().tenants, 1);
}

#[test]
fn the_board_keeps_updates_filters_and_refuses() {
    let mut sim = Simulation::new(SimOptions {
        seed: 5,
        tenants: 12,
        days: 10,
        attacks_per_kind: 2,
        kinds: vec![AttackKind::TokenReplay],
        ..SimOptions::default()
    });
    let r = run(&mut sim, DetectorOptions::default()).expect("run");
    assert!(r.detections.len() >= 2);
    let mut board = Board::new(3);
    let batch = DetectionBatch {
        source: "app:1".into(),
        detections: r.detections.clone(),
    };
    let p = board.push(batch.clone()).expect("push");
    assert_eq!(p.new.len(), r.detections.len());
    let p = board.push(batch.clone()).expect("push again");
    assert!(p.new.is_empty());
    let t = sim.attacks()[0].tenant;
    let mine = board.list(
        &Filter {
            tenant: Some(t),
            ..Filter::default()
        },
        10,
    );
    assert!(mine.iter().all(|a| a.detection.tenant_id == Some(t)));
    assert!(!mine.is_empty());
    // Bounded: a fourth detection from another source pushes the oldest out.
    let mut more = batch.clone();
    more.source = "app:2".into();
    for _ in 0..3 {
        let _ = board.push(more.clone()).expect("push");
    }
    assert!(board.list(&Filter::default(), 100).len() <= 3);

    let mut bad = batch.clone();
    bad.detections[0].score = f64::NAN;
    assert_eq!(
        board.push(bad).expect_err("nan").field,
        "detections[0].score"
    );
    let mut bad = batch;
    bad.source = "no spaces".into();
    assert_eq!(board.push(bad).expect_err("source").field, "source");
}
