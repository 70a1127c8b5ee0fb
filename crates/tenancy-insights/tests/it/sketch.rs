use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenancy_insights::sketch::{max_key, ALPHA, MAX_BINS};
use tenancy_insights::{Sketch, SketchWire};

/// The value at rank `floor(q * (n - 1))` of a sorted sample (the rank the sketch answers).
fn exact(sorted: &[f64], q: f64) -> f64 {
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

fn assert_within(sketch: &Sketch, sorted: &[f64], what: &str) {
    for q in [0.01, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999] {
        let got = sketch.quantile(q).expect("non-empty");
        let want = exact(sorted, q).max(1.0);
        let err = (got - want).abs() / want;
        assert!(
            err <= ALPHA + 1e-9,
            "{what}: q{q}: sketch {got} against exact {want}: relative error {err} > {ALPHA}"
        );
    }
}

/// Log-normal latencies (µs) around `median`, spread by `sigma`.
fn latencies(rng: &mut StdRng, n: usize, median: f64, sigma: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            // Box-Muller.
            let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            median * (sigma * z).exp()
        })
        .collect()
}

#[test]
fn quantiles_are_within_the_stated_relative_error() {
    let mut rng = StdRng::seed_from_u64(7);
    for (median, sigma) in [(300.0, 0.5), (2_000.0, 1.2), (50.0, 0.1)] {
        let mut values = latencies(&mut rng, 50_000, median, sigma);
        let mut s = Sketch::new();
        for &v in &values {
            s.add(v);
        }
        values.sort_by(f64::total_cmp);
        assert_eq!(s.count(), values.len() as u64);
        assert_within(&s, &values, &format!("median {median} sigma {sigma}"));
    }
}

#[test]
fn merged_sketches_answer_like_one_sketch_of_the_union() {
    let mut rng = StdRng::seed_from_u64(11);
    let a = latencies(&mut rng, 20_000, 200.0, 0.4);
    let b = latencies(&mut rng, 5_000, 20_000.0, 0.3);
    let (mut sa, mut sb, mut all) = (Sketch::new(), Sketch::new(), Sketch::new());
    a.iter().for_each(|&v| {
        sa.add(v);
        all.add(v);
    });
    b.iter().for_each(|&v| {
        sb.add(v);
        all.add(v);
    });
    sa.merge(&sb);
    assert_eq!(sa, all);
    let mut union: Vec<f64> = a.into_iter().chain(b).collect();
    union.sort_by(f64::total_cmp);
    assert_within(&sa, &union, "merged");
    // Through the wire form and back, nothing changes.
    let back = Sketch::from_wire(&sa.to_wire()).expect("own wire form");
    assert_eq!(back.to_wire(), sa.to_wire());
}

#[test]
fn a_sample_wider_than_the_store_keeps_its_upper_quantiles() {
    // 1 µs to 10 s: wider than MAX_BINS buckets, so the lowest collapse.
    let mut values: Vec<f64> = (0..100_000)
        .map(|i| 10f64.powf(i as f64 / 14_285.0))
        .collect();
    let mut s = Sketch::new();
    values.iter().for_each(|&v| s.add(v));
    assert!(s.to_wire().counts.len() <= MAX_BINS);
    values.sort_by(f64::total_cmp);
    for q in [0.5, 0.9, 0.99] {
        let (got, want) = (s.quantile(q).expect("some"), exact(&values, q));
        assert!(
            (got - want).abs() / want <= ALPHA + 1e-9,
            "q{q}: {got} vs {want}"
        );
    }
}

#[test]
fn hostile_wire_forms_are_refused_with_the_reason() {
    let cases = [
        (
            SketchWire {
                offset: -1,
                counts: vec![1],
            },
            "buckets",
        ),
        (
            SketchWire {
                offset: -1,
                counts: vec![],
            },
            "buckets",
        ),
        (
            SketchWire {
                offset: max_key() + 1,
                counts: vec![],
            },
            "buckets",
        ),
        (
            SketchWire {
                offset: max_key(),
                counts: vec![1, 1],
            },
            "buckets",
        ),
        (
            SketchWire {
                offset: i32::MAX,
                counts: vec![1],
            },
            "buckets",
        ),
        (
            SketchWire {
                offset: 0,
                counts: vec![1; MAX_BINS + 1],
            },
            "at most",
        ),
    ];
    for (w, says) in cases {
        let e = Sketch::from_wire(&w).expect_err("must be refused");
        assert!(e.contains(says), "{w:?}: {e}");
    }
    // The largest counts saturate instead of overflowing.
    let w = SketchWire {
        offset: 10,
        counts: vec![u32::MAX, u32::MAX],
    };
    let mut s = Sketch::from_wire(&w).expect("valid");
    s.merge(&Sketch::from_wire(&w).expect("valid"));
    assert_eq!(s.count(), 4 * u64::from(u32::MAX));
    assert!(s.quantile(0.5).is_some());
}
