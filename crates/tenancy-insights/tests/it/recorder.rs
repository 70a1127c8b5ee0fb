use std::time::Duration;

use tenancy_insights::{Recorder, RecorderOptions};
use tenancy_sdk::{Observer, Outcome, TenantId};

fn ok(rows: u64) -> Outcome {
    Outcome::Ok { rows }
}

/// 100,000 tenants: the recorder holds what 1,024 tracked tenants need whatever the
/// number seen, and the heavy tenants are all reported with their time bracketed.
#[test]
fn memory_is_bounded_at_100000_tenants_and_heavy_tenants_are_kept() {
    let rec = Recorder::new(RecorderOptions {
        capacity: 1024,
        ..Default::default()
    });
    let heavy: Vec<TenantId> = (0..10).map(|_| TenantId::new_random()).collect();
    let light: Vec<TenantId> = (0..100_000).map(|_| TenantId::new_random()).collect();
    let mut after_10k = 0;
    for (i, &t) in light.iter().enumerate() {
        // Light tenants: one statement of 100..400 µs each.
        rec.statement(t, Duration::from_micros(100 + (i as u64 % 300)), ok(1));
        // Heavy tenants: a 2 ms statement every 20 light ones (50,000 in all, 10 s of
        // database time against about 25 s spread over 100,000 tenants).
        if i % 20 == 0 {
            let h = heavy[(i / 20) % heavy.len()];
            rec.statement(h, Duration::from_micros(2_000), ok(10));
        }
        if i == 10_000 {
            after_10k = rec.heap_bytes();
        }
    }
    let at_100k = rec.heap_bytes();
    assert!(
        rec.tracked() <= rec.capacity(),
        "tracked {} > capacity {}",
        rec.tracked(),
        rec.capacity()
    );
    assert_eq!(rec.capacity(), 1024);
    // Slots and indexes are allocated once; only the sketches of tracked tenants widen,
    // up to the latency range they see (which eviction order decides), so memory at ten
    // times the tenants stays within twice: a structure per tenant would grow tenfold.
    assert!(
        at_100k < 2 * 1024 * 1024,
        "recorder holds {at_100k} bytes at 100,000 tenants"
    );
    assert!(
        at_100k <= 2 * after_10k,
        "memory grew with tenants: {after_10k} bytes at 10,000, {at_100k} at 100,000"
    );

    let snap = rec.take();
    snap.check().expect("a recorder's snapshot is valid");
    assert_eq!(snap.totals.statements, 100_000 + 5_000);
    let true_heavy_us = 500 * 2_000;
    for h in &heavy {
        let s = snap
            .tenants
            .iter()
            .find(|s| s.tenant == *h)
            .unwrap_or_else(|| panic!("heavy tenant {h} missing from the snapshot"));
        assert!(
            s.counts.db_us - s.db_us_error <= true_heavy_us && true_heavy_us <= s.counts.db_us,
            "{s:?}"
        );
    }
    // The heaviest ten of the snapshot are the heavy tenants.
    let top: Vec<TenantId> = snap.tenants.iter().take(10).map(|s| s.tenant).collect();
    assert!(heavy.iter().all(|h| top.contains(h)), "top ten: {top:?}");
    // Draining starts a new interval: the next snapshot is empty.
    let next = rec.take();
    assert_eq!(next.sequence, snap.sequence + 1);
    assert_eq!(next.totals.statements, 0);
    assert!(next.tenants.is_empty());
}

#[test]
fn errors_refusals_transactions_and_waits_are_counted_per_tenant() {
    let rec = Recorder::new(RecorderOptions::default());
    let t = TenantId::new_random();
    rec.pool_wait(t, Duration::from_micros(50), true); // not tracked yet: totals only
    rec.statement(t, Duration::from_micros(300), ok(3));
    rec.statement(t, Duration::from_micros(100), Outcome::Error);
    rec.statement(t, Duration::from_micros(100), Outcome::ContextRefused);
    rec.pool_wait(t, Duration::from_micros(70), true);
    rec.transaction(
        t,
        Duration::from_millis(2),
        Duration::from_micros(400),
        true,
    );
    let snap = rec.take();
    let s = &snap.tenants[0];
    let c = &s.counts;
    assert_eq!(
        (c.statements, c.errors, c.refusals, s.rows, c.transactions),
        (4 - 1, 2, 1, 3, 1)
    );
    assert_eq!(c.db_us, 300 + 100 + 100 + 400);
    assert_eq!(c.pool_wait_us, 70);
    assert_eq!(snap.totals.pool_wait_us, 120);
    assert_eq!(snap.totals.db_us, 900);
    assert_eq!(
        s.latency.counts.iter().map(|&c| u64::from(c)).sum::<u64>(),
        3
    );
}
