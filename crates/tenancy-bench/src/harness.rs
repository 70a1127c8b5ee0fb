//! Closed-loop throughput measurement and the run matrix (variants × concurrency × runs).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::cpu::CpuSnapshot;
use crate::setup::ROWS_PER_TENANT;

/// Concurrency levels measured (pool size = concurrency).
pub(crate) const CONCURRENCY: [usize; 2] = [8, 32];

/// How long and how often to measure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Whole repetitions of the matrix.
    pub runs: usize,
    /// Measured seconds per (variant, concurrency, run).
    pub seconds: u64,
    /// Unmeasured warm-up seconds before each measurement.
    pub warmup_seconds: u64,
    /// Measure only the variant of this name (for profiling one side; no report is written).
    pub only: Option<&'static str>,
}

/// One measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Operations that failed (error or wrong row); must be 0.
    pub failures: u64,
    /// Client (this process) CPU microseconds per completed operation.
    pub client_cpu_us_per_op: Option<f64>,
    /// Server (all PostgreSQL processes) CPU microseconds per completed operation.
    pub server_cpu_us_per_op: Option<f64>,
}

/// Runs `op` in a closed loop on `concurrency` tasks for `duration`; each call gets a random
/// seeded tenant and one of its row ids.
pub(crate) async fn measure<F, Fut>(
    tenants: &Arc<Vec<Uuid>>,
    concurrency: usize,
    duration: Duration,
    postmaster: Option<u32>,
    op: F,
) -> Result<Sample>
where
    F: Fn(Uuid, i64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let cpu0 = CpuSnapshot::take(postmaster);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        let tenants = Arc::clone(tenants);
        let first_error = Arc::clone(&first_error);
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::from_entropy();
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let tenant = tenants[rng.gen_range(0..tenants.len())];
                let id = rng.gen_range(1..=ROWS_PER_TENANT);
                match op(tenant, id).await {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        failed += 1;
                        if let Ok(mut slot) = first_error.lock() {
                            slot.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0u64, 0u64);
    for t in tasks {
        let (o, f) = t.await.context("joining a benchmark task")?;
        ok += o;
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (client, server) = CpuSnapshot::take(postmaster).since(&cpu0);
    if failed > 0 {
        let msg = first_error
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_default();
        bail!(
            "{failed} of {} operations failed; first error: {msg}",
            ok + failed
        );
    }
    let per_op = |cpu: Option<f64>| cpu.filter(|_| ok > 0).map(|s| s * 1e6 / ok as f64);
    Ok(Sample {
        ops_per_sec: ok as f64 / elapsed,
        failures: failed,
        client_cpu_us_per_op: per_op(client),
        server_cpu_us_per_op: per_op(server),
    })
}

/// A benchmark made of variants measured side by side.
pub(crate) trait Variants {
    /// Variant names, in the order they are run within each run.
    fn names(&self) -> &[&'static str];
    /// Measures variant `v` at concurrency index `ci` for `duration`.
    fn run(
        &self,
        v: usize,
        ci: usize,
        duration: Duration,
    ) -> impl Future<Output = Result<Sample>> + Send;
}

/// All samples: `samples[variant][concurrency index][run]`.
#[derive(Debug)]
pub(crate) struct Matrix {
    names: Vec<&'static str>,
    samples: Vec<Vec<Vec<Sample>>>,
}

/// Runs every (variant, concurrency) once per run, variants alternating (A B A B …).
pub(crate) async fn run_matrix<B: Variants>(bench: &B, settings: Settings) -> Result<Matrix> {
    let names = bench.names().to_vec();
    if let Some(only) = settings.only {
        if !names.contains(&only) {
            bail!("--only {only}: this benchmark has no such variant; it has {names:?}");
        }
    }
    let mut samples = vec![vec![Vec::new(); CONCURRENCY.len()]; names.len()];
    let warm = Duration::from_secs(settings.warmup_seconds);
    let dur = Duration::from_secs(settings.seconds);
    for run in 0..settings.runs {
        for (ci, c) in CONCURRENCY.iter().enumerate() {
            for (v, name) in names.iter().enumerate() {
                if settings.only.is_some_and(|only| only != *name) {
                    continue;
                }
                if !warm.is_zero() {
                    bench
                        .run(v, ci, warm)
                        .await
                        .with_context(|| format!("warming up {name} at concurrency {c}"))?;
                }
                let s = bench
                    .run(v, ci, dur)
                    .await
                    .with_context(|| format!("measuring {name} at concurrency {c}"))?;
                println!(
                    "  run {}/{} c={c:<2} {name:<16} {:>9.0} ops/s  client {:>6} µs/op  server {:>6} µs/op",
                    run + 1,
                    settings.runs,
                    s.ops_per_sec,
                    fmt_opt(s.client_cpu_us_per_op),
                    fmt_opt(s.server_cpu_us_per_op),
                );
                samples[v][ci].push(s);
            }
        }
    }
    Ok(Matrix { names, samples })
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.1}"))
}

/// Median of a non-empty slice (mean of the middle two for even length).
pub(crate) fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn round(x: f64, places: i32) -> f64 {
    let p = 10f64.powi(places);
    (x * p).round() / p
}

impl Matrix {
    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| *n == name)
            .unwrap_or(usize::MAX)
    }

    /// Median throughput of `name` at concurrency index `ci`.
    pub(crate) fn median_ops(&self, name: &str, ci: usize) -> f64 {
        let v = self.index(name);
        self.samples.get(v).map_or(f64::NAN, |s| {
            median(&s[ci].iter().map(|x| x.ops_per_sec).collect::<Vec<_>>())
        })
    }

    fn median_cpu(&self, v: usize, ci: usize, server: bool) -> Option<f64> {
        let xs: Vec<f64> = self.samples[v][ci]
            .iter()
            .filter_map(|s| {
                if server {
                    s.server_cpu_us_per_op
                } else {
                    s.client_cpu_us_per_op
                }
            })
            .collect();
        (!xs.is_empty()).then(|| round(median(&xs), 1))
    }

    /// Per-variant figures for the JSON params: medians, per-run throughputs, CPU per op.
    pub(crate) fn variants_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (v, name) in self.names.iter().enumerate() {
            let mut per_c = serde_json::Map::new();
            for (ci, c) in CONCURRENCY.iter().enumerate() {
                let runs: Vec<f64> = self.samples[v][ci]
                    .iter()
                    .map(|s| round(s.ops_per_sec, 1))
                    .collect();
                let failures: u64 = self.samples[v][ci].iter().map(|s| s.failures).sum();
                per_c.insert(
                    format!("c{c}"),
                    json!({
                        "median_ops_per_sec": round(self.median_ops(name, ci), 1),
                        "runs_ops_per_sec": runs,
                        "median_client_cpu_us_per_op": self.median_cpu(v, ci, false),
                        "median_server_cpu_us_per_op": self.median_cpu(v, ci, true),
                        "failures": failures,
                    }),
                );
            }
            out.insert((*name).to_owned(), serde_json::Value::Object(per_c));
        }
        serde_json::Value::Object(out)
    }

    /// Prints the medians and CPU per op of every variant.
    pub(crate) fn print_medians(&self) {
        for (ci, c) in CONCURRENCY.iter().enumerate() {
            for (v, name) in self.names.iter().enumerate() {
                if self.samples[v][ci].is_empty() {
                    continue;
                }
                println!(
                    "  median c={c:<2} {name:<16} {:>9.0} ops/s  client {:>6} µs/op  server {:>6} µs/op",
                    self.median_ops(name, ci),
                    fmt_opt(self.median_cpu(v, ci, false)),
                    fmt_opt(self.median_cpu(v, ci, true)),
                );
            }
        }
    }
}

/// True (after saying so) when `--only` measured one variant: there is no ratio to report.
pub(crate) fn profiling_only(settings: Settings) -> bool {
    if let Some(only) = settings.only {
        println!("--only {only}: one variant measured for profiling; no ratio, no report written");
        return true;
    }
    false
}

/// Rounds a ratio for the report.
pub(crate) fn ratio(ours: f64, baseline: f64) -> f64 {
    round(ours / baseline, 3)
}

/// Rounds a throughput for the report.
pub(crate) fn ops(x: f64) -> f64 {
    round(x, 1)
}
