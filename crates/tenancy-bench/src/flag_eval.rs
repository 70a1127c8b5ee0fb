//! `flag_eval`: in-process flag evaluation, tenancy-config against unleash-yggdrasil
//! (the Unleash SDKs' evaluation core) on equivalent rules, same process, same run.
//!
//! The rule set: 1,000 tenants over three plans, two regions and some tags; 20 flags;
//! the measured flag has three rules — plan in [enterprise]; region in [eu-west] and
//! tagged `beta`; a 25% rollout by tenant id — and is off otherwise. Unleash gets the
//! same as three strategies (two `default` strategies with constraints, then a
//! `flexibleRollout` with `userId` stickiness). Each side is called the way an
//! application calls it: ours `ConfigClient::is_enabled(tenant, key)` (snapshot load,
//! tenant lookup, rules, clock read for override expiry); theirs
//! `EngineState::is_enabled(name, &context, &None)` with a context built beforehand.
//!
//! Timing: batches of `BATCH` calls over rotating tenants, timed as a whole (so the cost of
//! reading the clock is spread over the batch), ours and theirs alternating batch by batch;
//! the per-call time of each batch is a sample. Reported: median and p99 of samples per
//! run, medians over runs.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde_json::json;
use tenancy_config::engine::{ConfigData, TenantData};
use tenancy_config::model::{Flag, TenantAttributes};
use tenancy_config::{ConfigClient, Snapshot};
use tenancy_core::{Placement, TenantId};
use unleash_yggdrasil::{ClientFeatures, Context, EngineState, UpdateMessage};

use crate::report::Report;
use crate::stats::{loadavg, median, percentile};

const TENANTS: usize = 1_000;
const FLAGS: usize = 20;
const BATCH: usize = 512;
const BATCHES: usize = 2_000;
const KEY: &str = "checkout-v2";

struct Fixture {
    ours: ConfigClient,
    ids: Vec<TenantId>,
    theirs: EngineState,
    contexts: Vec<Context>,
}

fn fixture() -> Result<Fixture> {
    let plans = ["free", "pro", "enterprise"];
    let regions = ["eu-west", "us-east"];
    let mut tenants = Vec::with_capacity(TENANTS);
    let mut contexts = Vec::with_capacity(TENANTS);
    for i in 0..TENANTS {
        let id = TenantId::new_random();
        let plan = plans[i % 3];
        let region = regions[(i / 3) % 2];
        let tags: Vec<String> = if i % 5 == 0 {
            vec!["beta".into(), "vip".into()]
        } else {
            vec!["ga".into()]
        };
        contexts.push(Context {
            user_id: Some(id.to_string()),
            session_id: None,
            environment: None,
            app_name: None,
            current_time: None,
            remote_address: None,
            properties: Some(HashMap::from([
                ("plan".to_owned(), plan.to_owned()),
                ("region".to_owned(), region.to_owned()),
                ("tags".to_owned(), tags.join(",")),
            ])),
        });
        tenants.push(TenantData {
            attributes: TenantAttributes {
                id,
                plan: plan.parse()?,
                region: region.parse()?,
                placement: Placement::Pooled,
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                tags,
                custom: serde_json::Map::new(),
            },
            overrides: Vec::new(),
            settings: BTreeMap::new(),
            branding: None,
            domains: Vec::new(),
        });
    }
    let ids = tenants.iter().map(|t| t.attributes.id).collect();

    let measured: Flag = serde_json::from_value(json!({
        "key": KEY, "kind": "boolean", "variants": {"on": true, "off": false},
        "default_variant": "off", "off_variant": "off",
        "rules": [
            {"name": "enterprise", "conditions": [{"attribute": "plan", "op": "in", "values": ["enterprise"]}],
             "serve": {"type": "variant", "variant": "on"}},
            {"name": "eu beta", "conditions": [{"attribute": "region", "op": "in", "values": ["eu-west"]},
                                               {"attribute": "tags", "op": "any_of", "values": ["beta"]}],
             "serve": {"type": "variant", "variant": "on"}},
            {"name": "25%", "serve": {"type": "rollout", "weights": [{"variant": "on", "weight": 2500}, {"variant": "off", "weight": 7500}]}}
        ]
    }))
    .context("building the measured flag")?;
    measured.validate()?;
    let mut flags = vec![measured];
    let mut unleash_features = vec![json!({
        "name": KEY, "enabled": true, "strategies": [
            {"name": "default", "constraints": [{"contextName": "plan", "operator": "IN", "values": ["enterprise"]}]},
            {"name": "default", "constraints": [
                {"contextName": "region", "operator": "IN", "values": ["eu-west"]},
                {"contextName": "tags", "operator": "STR_CONTAINS", "values": ["beta"]}]},
            {"name": "flexibleRollout", "parameters": {"rollout": "25", "stickiness": "userId", "groupId": KEY}}
        ]
    })];
    for i in 1..FLAGS {
        let key = format!("flag-{i}");
        let mut f = Flag::boolean(key.parse()?);
        f.rules = serde_json::from_value(
            json!([{"conditions": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
            "serve": {"type": "variant", "variant": "on"}}]),
        )?;
        flags.push(f);
        unleash_features.push(json!({"name": key, "enabled": true, "strategies": [
            {"name": "default", "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro"]}]}]}));
    }
    let ours = ConfigClient::from_snapshot(Snapshot::build(ConfigData {
        version: 1,
        flags,
        tenants,
        ..Default::default()
    }));
    let features: ClientFeatures =
        serde_json::from_value(json!({"version": 2, "features": unleash_features}))
            .context("building the Unleash features")?;
    let theirs = EngineState::default();
    if let Some(warnings) = theirs.take_state(UpdateMessage::FullResponse(features)) {
        anyhow::ensure!(
            warnings.is_empty(),
            "yggdrasil refused the rules: {warnings:?}"
        );
    }
    Ok(Fixture {
        ours,
        ids,
        theirs,
        contexts,
    })
}

/// Per-call nanoseconds of `BATCHES` batches of each side, batches alternating (ours,
/// theirs, ours, …) so both see the same interference from other processes.
fn sample(
    mut ours: impl FnMut(usize) -> usize,
    mut theirs: impl FnMut(usize) -> usize,
) -> ((Vec<f64>, usize), (Vec<f64>, usize)) {
    let (mut a, mut b) = (Vec::with_capacity(BATCHES), Vec::with_capacity(BATCHES));
    let (mut a_on, mut b_on) = (0, 0);
    let mut offset = 0;
    for _ in 0..BATCHES {
        let start = Instant::now();
        a_on += ours(offset);
        a.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        let start = Instant::now();
        b_on += theirs(offset);
        b.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
        offset = (offset + BATCH) % TENANTS;
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    ((a, a_on), (b, b_on))
}

/// Runs the benchmark `runs` times and writes `target/bench/flag_eval.json`.
pub(crate) fn run(runs: usize) -> Result<()> {
    let fx = fixture()?;
    let ours_batch = |offset: usize| {
        let mut on = 0;
        for i in 0..BATCH {
            let id = fx.ids[(offset + i) % TENANTS];
            on += usize::from(fx.ours.is_enabled(black_box(id), black_box(KEY)));
        }
        on
    };
    let theirs_batch = |offset: usize| {
        let mut on = 0;
        for i in 0..BATCH {
            let ctx = &fx.contexts[(offset + i) % TENANTS];
            on += usize::from(fx.theirs.is_enabled(black_box(KEY), black_box(ctx), &None));
        }
        on
    };
    // Warm caches and branch predictors on both sides.
    let _ = sample(ours_batch, theirs_batch);
    let (mut ours_p50, mut ours_p99, mut theirs_p50, mut theirs_p99) =
        (vec![], vec![], vec![], vec![]);
    let (mut ours_on, mut theirs_on) = (0.0, 0.0);
    for r in 0..runs {
        let ((o, o_on), (t, t_on)) = sample(ours_batch, theirs_batch);
        let calls = (BATCH * BATCHES) as f64;
        ours_on = o_on as f64 / calls;
        theirs_on = t_on as f64 / calls;
        println!(
            "  run {}/{runs}: tenancy-config p50 {:.1} ns p99 {:.1} ns | yggdrasil p50 {:.1} ns p99 {:.1} ns",
            r + 1,
            percentile(&o, 0.5),
            percentile(&o, 0.99),
            percentile(&t, 0.5),
            percentile(&t, 0.99)
        );
        ours_p50.push(percentile(&o, 0.5));
        ours_p99.push(percentile(&o, 0.99));
        theirs_p50.push(percentile(&t, 0.5));
        theirs_p99.push(percentile(&t, 0.99));
    }
    let ours = median(&ours_p50);
    let baseline = median(&theirs_p50);
    let report = Report {
        name: "flag_eval".into(),
        unit: "ns per evaluation (median of per-batch means; lower is better; ratio = baseline / ours, > 1 means we are faster)".into(),
        ours,
        baseline,
        baseline_name: "unleash-yggdrasil 0.21 EngineState::is_enabled, equivalent strategies".into(),
        ratio: baseline / ours,
        params: json!({
            "runs": runs,
            "loadavg_at_end": loadavg(),
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "tenants": TENANTS,
            "flags": FLAGS,
            "batch": BATCH,
            "batches_per_run": BATCHES,
            "ours_p50_ns_per_run": ours_p50,
            "ours_p99_ns_per_run": ours_p99,
            "baseline_p50_ns_per_run": theirs_p50,
            "baseline_p99_ns_per_run": theirs_p99,
            "ours_p99_ns": median(&ours_p99),
            "baseline_p99_ns": median(&theirs_p99),
            "ours_on_fraction": ours_on,
            "baseline_on_fraction": theirs_on,
            "target": "ratio >= 1.0 and ours p50 <= 250 ns",
            "rules": "plan in [enterprise] | region in [eu-west] & tag beta | 25% rollout by tenant id",
        }),
    };
    let path = report.write()?;
    println!(
        "flag_eval: tenancy-config {ours:.1} ns, yggdrasil {baseline:.1} ns, ratio {:.2} → {}",
        report.ratio,
        path.display()
    );
    Ok(())
}
