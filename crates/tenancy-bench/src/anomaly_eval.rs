//! `anomaly_eval`: the access anomaly detectors of tenancy-insights against a static
//! threshold detector, on the same generated traffic with labelled attacks.
//!
//! The generator (`tenancy_insights::anomaly::simulate`): 200 tenants of sizes from 3 to
//! 3,000 requests in their busiest hour, four rhythms, 21 time zones, 30 simulated days
//! from a fixed seed (`--seed`); after the 7-day baseline, 12 attacks of each of five
//! kinds (enumeration, token replay, slow exfiltration, credential sharing across
//! tenants, sudden noisy neighbour), each on a tenant of its own.
//!
//! The replay path: the generator emits `AccessEvent`s — what the request layer records
//! per answered request, per `tenant-mismatch` 403 and what the SDK's observer records
//! per refused context — hour by hour in time order, at accelerated time (a simulated
//! hour is closed as soon as its events are in), into `Detector::observe`, and the same
//! events into the static detector. No HTTP server or database is involved: the layer's
//! and the SDK's recording are the same calls with the same event values.
//!
//! Reported: `ours` = F1 of our detections against the labels (a detection is true when
//! it names an attacked tenant during its attack or the day after), `baseline` = the
//! static detector's F1, `ratio` = ours / baseline; precision, recall and false alarms
//! per tenant-week after the baseline for both.

use anyhow::{Context as _, Result};
use serde_json::json;
use tenancy_insights::anomaly::simulate::{self, Evaluation, SimOptions, Simulation};
use tenancy_insights::anomaly::DetectorOptions;

use crate::report::Report;

fn figures(e: &Evaluation) -> serde_json::Value {
    json!({
        "precision": e.precision,
        "recall": e.recall,
        "f1": e.f1,
        "false_alarms_per_tenant_week": e.false_alarms_per_tenant_week,
        "true_alerts": e.true_alerts,
        "false_alerts": e.false_alerts,
        "attacks_detected": e.detected,
        "attacks": e.attacks,
        "recall_by_attack": e.by_kind.iter()
            .map(|(k, d, n)| (k.to_string(), json!({"detected": d, "attacks": n})))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// Runs the evaluation with `seed` and writes the report.
pub(crate) fn run(seed: u64) -> Result<()> {
    let opts = SimOptions {
        seed,
        ..SimOptions::default()
    };
    let detector = DetectorOptions {
        baseline_hours: opts.baseline_days * 24,
        max_detections: 100_000,
        ..DetectorOptions::default()
    };
    println!(
        "anomaly_eval: {} tenants, {} days, seed {seed}…",
        opts.tenants, opts.days
    );
    let mut sim = Simulation::new(opts.clone());
    let started = std::time::Instant::now();
    let r = simulate::run(&mut sim, detector).context("running the detectors")?;
    let secs = started.elapsed().as_secs_f64();
    let mut by_kind = serde_json::Map::new();
    for d in &r.detections {
        let n = by_kind.entry(d.kind.as_str()).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    let mut params = figures(&r.ours);
    if let Some(p) = params.as_object_mut() {
        p.insert("seed".into(), json!(seed));
        p.insert("tenants".into(), json!(r.tenants));
        p.insert("days".into(), json!(opts.days));
        p.insert("baseline_days".into(), json!(opts.baseline_days));
        p.insert("attacks_per_kind".into(), json!(opts.attacks_per_kind));
        p.insert("events".into(), json!(r.events));
        p.insert("detections_by_kind".into(), json!(by_kind));
        p.insert("baseline_figures".into(), figures(&r.baseline));
        p.insert("replay_seconds".into(), json!(secs));
        p.insert(
            "replay".into(),
            json!("generated AccessEvents (the layer's and the SDK observer's records) fed in time order at accelerated time; no HTTP or database"),
        );
    }
    let ratio = if r.baseline.f1 > 0.0 {
        r.ours.f1 / r.baseline.f1
    } else {
        f64::INFINITY
    };
    println!(
        "ours: F1 {:.3} precision {:.3} recall {:.3} false alarms/tenant-week {:.4}",
        r.ours.f1, r.ours.precision, r.ours.recall, r.ours.false_alarms_per_tenant_week
    );
    println!(
        "static thresholds: F1 {:.3} precision {:.3} recall {:.3} false alarms/tenant-week {:.4}",
        r.baseline.f1,
        r.baseline.precision,
        r.baseline.recall,
        r.baseline.false_alarms_per_tenant_week
    );
    let report = Report {
        name: "anomaly_eval".into(),
        unit: "F1 of detections against injected attacks (higher is better; ratio = ours / baseline)".into(),
        ours: r.ours.f1,
        baseline: r.baseline.f1,
        baseline_name: "static thresholds on the same signals (requests, 404s, refusals, mismatches, heavy requests per hour; tenants per subject per day)".into(),
        ratio: if ratio.is_finite() { ratio } else { 0.0 },
        params,
    };
    let path = report.write()?;
    println!("wrote {}", path.display());
    Ok(())
}
