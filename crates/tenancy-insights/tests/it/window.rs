use std::time::{Duration, Instant};

use tenancy_insights::{
    Counts, PushError, Pushed, Sketch, Snapshot, TenantStats, Window, WindowOptions,
};
use tenancy_sdk::TenantId;

fn tenant(t: TenantId, db_us: u64, statements: u64, errors: u64) -> TenantStats {
    let mut s = Sketch::new();
    for _ in 0..statements {
        s.add(db_us as f64 / statements.max(1) as f64);
    }
    TenantStats {
        tenant: t,
        counts: Counts {
            db_us,
            statements,
            transactions: statements,
            errors,
            refusals: 0,
            pool_wait_us: 0,
        },
        db_us_error: 0,
        rows: statements,
        latency: s.to_wire(),
    }
}

fn snapshot(source: &str, sequence: u64, cluster: &str, tenants: Vec<TenantStats>) -> Snapshot {
    let mut totals = Counts::default();
    for t in &tenants {
        totals.db_us += t.counts.db_us;
        totals.statements += t.counts.statements;
        totals.transactions += t.counts.transactions;
        totals.errors += t.counts.errors;
    }
    Snapshot {
        source: source.into(),
        sequence,
        cluster: cluster.into(),
        interval_ms: 1000,
        totals,
        tenants,
    }
}

#[test]
fn shares_merge_across_sources_and_the_threshold_flags_the_noisy_tenant() {
    let w = Window::new(WindowOptions::default());
    let now = Instant::now();
    let (a, b, c) = (
        TenantId::new_random(),
        TenantId::new_random(),
        TenantId::new_random(),
    );
    // Two processes on cluster "one": a uses 600 of 1000 ms; alone on "two", c is not
    // anyone's neighbour.
    w.push(
        snapshot(
            "app:1",
            0,
            "one",
            vec![tenant(a, 300_000, 30, 3), tenant(b, 200_000, 20, 0)],
        ),
        now,
    )
    .expect("push");
    w.push(
        snapshot(
            "app:2",
            0,
            "one",
            vec![tenant(a, 300_000, 30, 0), tenant(b, 200_000, 20, 0)],
        ),
        now,
    )
    .expect("push");
    w.push(
        snapshot("app:3", 0, "two", vec![tenant(c, 900_000, 9, 0)]),
        now,
    )
    .expect("push");
    let r = w.report(None, 10, 0.5, now);
    assert_eq!(r.tenants.len(), 3);
    let ra = r.tenants.iter().find(|t| t.tenant == a).expect("a");
    assert_eq!(ra.db_time_ms, 600.0);
    assert!((ra.share - 0.6).abs() < 1e-9);
    assert!(ra.noisy);
    assert!((ra.error_rate - 0.05).abs() < 1e-9);
    assert!((ra.p50_ms.expect("p50") - 10.0).abs() <= 10.0 * 0.01);
    let rb = r.tenants.iter().find(|t| t.tenant == b).expect("b");
    assert!(!rb.noisy);
    let rc = r.tenants.iter().find(|t| t.tenant == c).expect("c");
    assert_eq!(rc.share, 1.0);
    assert!(
        !rc.noisy,
        "a tenant alone on its cluster has no neighbour to crowd out"
    );
    // Heaviest first.
    assert_eq!(r.tenants[0].tenant, c);
    let one = r
        .clusters
        .iter()
        .find(|c| c.cluster == "one")
        .expect("cluster one");
    assert_eq!((one.sources, one.snapshots, one.noisy_tenants), (2, 2, 1));
    // A higher threshold flags nobody; a filter keeps one cluster.
    assert!(w
        .report(None, 10, 0.7, now)
        .tenants
        .iter()
        .all(|t| !t.noisy));
    let only = w.report(Some("two"), 10, 0.5, now);
    assert_eq!(only.clusters.len(), 1);
    assert!(only.tenants.iter().all(|t| t.cluster == "two"));
    assert_eq!(w.report(None, 1, 0.5, now).tenants.len(), 1);
}

#[test]
fn a_snapshot_pushed_twice_counts_once_and_old_ones_expire() {
    let w = Window::new(WindowOptions {
        window: Duration::from_secs(60),
        ..Default::default()
    });
    let t = TenantId::new_random();
    let now = Instant::now();
    let s = snapshot("app:1", 5, "one", vec![tenant(t, 1000, 1, 0)]);
    assert_eq!(w.push(s.clone(), now), Ok(Pushed::Kept));
    assert_eq!(w.push(s.clone(), now), Ok(Pushed::Duplicate));
    let older = Snapshot {
        sequence: 4,
        ..s.clone()
    };
    assert_eq!(w.push(older, now), Ok(Pushed::Duplicate));
    assert_eq!(w.report(None, 10, 0.5, now).tenants[0].statements, 1);
    let later = now + Duration::from_secs(61);
    assert!(w.report(None, 10, 0.5, later).tenants.is_empty());
    assert!(w.report(None, 10, 0.5, later).clusters.is_empty());
}

#[test]
fn memory_is_bounded_by_clusters_and_snapshots_per_cluster() {
    let w = Window::new(WindowOptions {
        max_clusters: 2,
        max_snapshots_per_cluster: 3,
        ..Default::default()
    });
    let now = Instant::now();
    for seq in 0..10 {
        w.push(
            snapshot(
                "app:1",
                seq,
                "one",
                vec![tenant(TenantId::new_random(), 10, 1, 0)],
            ),
            now,
        )
        .expect("push");
    }
    let r = w.report(None, 100, 0.5, now);
    assert_eq!(r.clusters[0].snapshots, 3);
    assert_eq!(r.tenants.len(), 3);
    w.push(snapshot("app:2", 0, "two", vec![]), now)
        .expect("second cluster");
    assert_eq!(
        w.push(snapshot("app:3", 0, "three", vec![]), now),
        Err(PushError::Full(2))
    );
}

#[test]
fn invalid_snapshots_name_the_field() {
    let t = TenantId::new_random();
    let good = snapshot("app:1", 0, "one", vec![tenant(t, 1000, 2, 1)]);
    good.check().expect("valid");
    type Change = Box<dyn Fn(&mut Snapshot)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|s| s.source = String::new()), "source"),
        (Box::new(|s| s.source = "a b".into()), "source"),
        (Box::new(|s| s.cluster = "One".into()), "cluster"),
        (Box::new(|s| s.cluster = "a".repeat(64)), "cluster"),
        (Box::new(|s| s.interval_ms = 0), "interval_ms"),
        (Box::new(|s| s.interval_ms = 3_600_001), "interval_ms"),
        (Box::new(|s| s.totals.refusals = 5), "totals.refusals"),
        (Box::new(|s| s.totals.errors = 99), "totals.errors"),
        (
            Box::new(|s| s.totals.transactions = 1 << 53),
            "totals.transactions",
        ),
        (Box::new(|s| s.sequence = u64::MAX), "sequence"),
        (Box::new(|s| s.tenants[0].rows = 1 << 53), "tenants[0].rows"),
        (
            Box::new(|s| s.tenants.push(s.tenants[0].clone())),
            "tenants[1].tenant",
        ),
        (
            Box::new(|s| s.tenants[0].db_us_error = 1001),
            "tenants[0].db_us_error",
        ),
        (
            Box::new(|s| s.tenants[0].counts.errors = 3),
            "tenants[0].errors",
        ),
        (
            Box::new(|s| s.tenants[0].counts.pool_wait_us = 1 << 53),
            "tenants[0].pool_wait_us",
        ),
        (
            Box::new(|s| s.tenants[0].latency.counts = vec![1, 1, 1]),
            "tenants[0].latency",
        ),
        (
            Box::new(|s| s.tenants[0].latency.offset = -3),
            "tenants[0].latency",
        ),
        (
            Box::new(|s| {
                let one = s.tenants[0].clone();
                s.tenants = (0..257)
                    .map(|_| TenantStats {
                        tenant: TenantId::new_random(),
                        ..one.clone()
                    })
                    .collect();
            }),
            "tenants",
        ),
    ];
    for (change, field) in cases {
        let mut s = good.clone();
        change(&mut s);
        let e = s.check().expect_err("must be refused");
        assert_eq!(e.field, field, "{e}");
    }
}

#[test]
fn a_snapshot_too_large_for_a_body_keeps_its_heaviest_tenants() {
    let tenants: Vec<TenantStats> = (0..200)
        .map(|i| tenant(TenantId::new_random(), 10_000 - i, 50, 0))
        .collect();
    let s = snapshot("app:1", 0, "one", tenants);
    let json = s.to_json_within(16 * 1024).expect("fits");
    assert!(json.len() <= 16 * 1024);
    let back: Snapshot = serde_json::from_slice(&json).expect("json");
    assert!(!back.tenants.is_empty() && back.tenants.len() < 200);
    assert_eq!(back.tenants[..], s.tenants[..back.tenants.len()]);
    assert_eq!(back.totals, s.totals);
}

#[test]
fn a_tenant_s_counts_are_flat_fields_on_the_wire_and_unknown_fields_are_refused() {
    let t = TenantId::new_random();
    let s = snapshot("app:1", 0, "one", vec![tenant(t, 1000, 2, 1)]);
    let json = serde_json::to_value(&s).expect("json");
    let one = &json["tenants"][0];
    for field in [
        "tenant",
        "db_us",
        "db_us_error",
        "statements",
        "transactions",
        "rows",
        "errors",
        "refusals",
        "pool_wait_us",
        "latency",
    ] {
        assert!(one.get(field).is_some(), "{field} missing from {one}");
    }
    assert_eq!(one.as_object().map(|o| o.len()), Some(10), "{one}");
    assert_eq!(one["db_us"], 1000);
    assert_eq!(json["totals"]["statements"], 2);
    let back: Snapshot = serde_json::from_value(json.clone()).expect("round trip");
    assert_eq!(back, s);

    for (at, extra) in [("tenants", "cpu_us"), ("totals", "rows")] {
        let mut bad = json.clone();
        let target = if at == "tenants" {
            &mut bad["tenants"][0]
        } else {
            &mut bad["totals"]
        };
        target[extra] = serde_json::json!(1);
        let e = serde_json::from_value::<Snapshot>(bad).expect_err("unknown field accepted");
        assert!(e.to_string().contains(extra), "{at}.{extra}: {e}");
    }
}
