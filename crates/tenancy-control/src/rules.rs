//! Configuration and provisioning anomalies in `tenancy serve`, and the delivery of every
//! new detection as a Standard Webhooks event.
//!
//! - [`report`]: the one way a detection enters the anomaly feed (the access anomalies
//!   applications push, the rules' findings): kept on the board, counted in
//!   `tenancy_anomalies_total{kind,severity}`, and, when new, queued as an
//!   `anomaly.detected` event for every event receiver through the provisioning engine's
//!   transactional outbox ([`tenancy_provision::Provisioner::queue_event`]), which signs,
//!   delivers and retries it like the lifecycle events.
//! - [`check_fleet`]: the declared rules over the whole fleet (through the configuration
//!   store) and the learned detectors over the catalog's history (workflow steps,
//!   provisioning times, the configuration change log), every
//!   `[insights.rules] interval_secs`; findings become detections of the source `rules`,
//!   one per finding for as long as it holds ([`tenancy_insights::rules::Tracker`]).
//! - [`spawn`]: the periodic task, which also takes the warnings of configuration writes
//!   (findings below `reject_from` that a change brought) as they come.

use std::time::Duration;

use serde_json::json;
use tenancy_core::TenantId;
use tenancy_insights::anomaly::{Anomaly, Detection, DetectionBatch, Pushed, MAX_BATCH};
use tenancy_insights::rules::{
    learned, most_severe, ChangeFact, Finding, RulesConfig, StepRun, Tracked, Tracker,
};
use tenancy_insights::SnapshotError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::AppState;

/// The source of the rules' detections on the board.
pub const SOURCE: &str = "rules";

/// The event type of a new detection.
pub const EVENT_TYPE: &str = "anomaly.detected";

/// Keeps `batch` on the board, counts the new detections and queues an
/// [`EVENT_TYPE`] event for each of them. A failure to queue is logged (the detection is
/// kept and listed all the same).
pub async fn report(state: &AppState, batch: DetectionBatch) -> Result<Pushed, SnapshotError> {
    let pushed = state.keep_anomalies(batch)?;
    // An update of a kept detection is not a new anomaly: only new ones are counted.
    for a in &pushed.new {
        let d = &a.detection;
        metrics::counter!("tenancy_anomalies_total", "kind" => d.kind.as_str(), "severity" => d.severity.as_str())
            .increment(1);
    }
    if !pushed.new.is_empty() && state.provisioner().has_event_receivers() {
        if let Err(e) = queue_events(state, &pushed.new).await {
            tracing::error!(error = %e, detections = pushed.new.len(), "queueing anomaly events");
        }
    }
    Ok(pushed)
}

/// The event id of a kept detection: stable for the same detection (so queueing it
/// again is a no-op), different for another source, id, kind, tenant, subject or first
/// hour (a process that restarts numbers its detections from 0 again).
fn event_id(a: &Anomaly) -> String {
    let d = &a.detection;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        a.source,
        d.id,
        d.kind.as_str(),
        d.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
        d.subject.as_deref().unwrap_or(""),
        d.first_hour
    );
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("anomaly_{h:016x}")
}

async fn queue_events(state: &AppState, new: &[Anomaly]) -> Result<(), String> {
    let mut conn = state.catalog().await.map_err(|e| e.detail)?;
    let tx = conn.transaction().await.map_err(|e| e.to_string())?;
    // Deliveries are filed under the tenant only when the catalog knows it (an
    // application may push detections of a tenant it made up).
    let ids: Vec<uuid::Uuid> = new
        .iter()
        .filter_map(|a| a.detection.tenant_id.map(|t| t.as_uuid()))
        .collect();
    let known: std::collections::HashSet<uuid::Uuid> = tx
        .query(
            "SELECT id FROM tenancy_catalog.tenants WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for a in new {
        let tenant = a
            .detection
            .tenant_id
            .filter(|t| known.contains(&t.as_uuid()));
        state
            .provisioner()
            .queue_event(
                &tx,
                &event_id(a),
                tenant,
                EVENT_TYPE,
                json!({"source": a.source, "detection": a.detection}),
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// Pushes detections of the source [`SOURCE`] in batches of at most [`MAX_BATCH`].
async fn publish(state: &AppState, detections: Vec<Detection>) {
    let mut rest = detections;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(MAX_BATCH));
        let batch = DetectionBatch {
            source: SOURCE.into(),
            detections: rest,
        };
        if let Err(e) = report(state, batch).await {
            tracing::error!(field = %e.field, error = %e.message, "a rule's detection was refused");
        }
        rest = tail;
    }
}

/// Seconds since the Unix epoch as the database sees them (`f64`), or 0 for a null.
fn secs(r: &tokio_postgres::Row, i: usize) -> f64 {
    r.get::<_, Option<f64>>(i).unwrap_or(0.0)
}

/// The learned detectors' findings over the catalog's history up to `now`.
pub async fn learned_findings(
    c: &tokio_postgres::Client,
    cfg: &RulesConfig,
    now: u64,
) -> Result<Vec<Finding>, tokio_postgres::Error> {
    let o = &cfg.learned;
    let start = o.history_start(now) as f64;
    let since: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&start];
    let (steps, provisioning, finished, changes) = tokio::try_join!(
        c.query(
            "SELECT w.kind || '/' || s.step, extract(epoch FROM s.at)::float8, s.outcome <> 'ok', s.ms
             FROM tenancy_catalog.workflow_steps s JOIN tenancy_catalog.workflows w ON w.id = s.workflow_id
             WHERE s.at >= to_timestamp($1) AND NOT s.compensation
             ORDER BY s.seq DESC LIMIT 500000",
            &since,
        ),
        c.query(
            "SELECT id, extract(epoch FROM now() - created_at)::float8 FROM tenancy_catalog.tenants
             WHERE state = 'provisioning'",
            &[],
        ),
        c.query(
            "SELECT extract(epoch FROM finished_at - created_at)::float8 FROM tenancy_catalog.workflows
             WHERE kind = 'provision' AND status = 'succeeded' AND finished_at >= to_timestamp($1)
             ORDER BY seq DESC LIMIT 100000",
            &since,
        ),
        c.query(
            "SELECT actor, extract(epoch FROM at)::float8, tenant_id FROM tenancy_catalog.config_changes
             WHERE at >= to_timestamp($1) ORDER BY version DESC LIMIT 500000",
            &since,
        ),
    )?;
    let runs: Vec<StepRun> = steps
        .iter()
        .map(|r| StepRun {
            step: r.get(0),
            at: secs(r, 1) as u64,
            failed: r.get(2),
            ms: r.get(3),
        })
        .collect();
    let provisioning: Vec<(TenantId, f64)> = provisioning
        .iter()
        .filter_map(|r| Some((TenantId::from_uuid(r.get(0)).ok()?, secs(r, 1))))
        .collect();
    let finished: Vec<f64> = finished.iter().map(|r| secs(r, 0)).collect();
    let changes: Vec<ChangeFact> = changes
        .iter()
        .map(|r| ChangeFact {
            actor: r.get(0),
            at: secs(r, 1) as u64,
            tenant: r
                .get::<_, Option<uuid::Uuid>>(2)
                .and_then(|u| TenantId::from_uuid(u).ok()),
        })
        .collect();
    let mut out = learned::step_anomalies(&runs, now, o);
    out.extend(learned::stuck_provisioning(&provisioning, &finished, o));
    out.extend(learned::change_bursts(&changes, now, o));
    Ok(out)
}

/// One check of the whole fleet at `now`: the declared rules (when the configuration
/// service is mounted) and the learned detectors; the findings, the most severe
/// [`RulesConfig::max_findings`], become detections on the board.
pub async fn check_fleet(
    state: &AppState,
    cfg: &RulesConfig,
    tracker: &mut Tracker,
    now: u64,
) -> Result<Tracked, String> {
    let mut findings = Vec::new();
    if let Some(c) = state.config() {
        if let Some(f) = c
            .store
            .fleet_findings()
            .await
            .map_err(|e| format!("checking the configuration rules: {e}"))?
        {
            findings.extend(f);
        }
    }
    let conn = state.catalog().await.map_err(|e| e.detail)?;
    findings.extend(
        learned_findings(&conn, cfg, now)
            .await
            .map_err(|e| format!("reading the provisioning history: {e}"))?,
    );
    findings.retain(|f| cfg.enabled(f.kind));
    let findings = most_severe(findings, cfg.max_findings);
    let tracked = tracker.update(&findings, now);
    publish(state, tracked.detections.clone()).await;
    Ok(tracked)
}

/// A sender for the warnings of configuration writes, and its receiver for [`spawn`].
pub fn warnings_channel() -> (
    mpsc::UnboundedSender<Vec<Finding>>,
    mpsc::UnboundedReceiver<Vec<Finding>>,
) {
    mpsc::unbounded_channel()
}

/// Checks the fleet every [`RulesConfig::interval_secs`] (the first time at once), and
/// turns the warnings of configuration writes into detections as they come.
pub fn spawn(
    state: AppState,
    cfg: RulesConfig,
    mut warnings: mpsc::UnboundedReceiver<Vec<Finding>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker = Tracker::new();
        let mut tick = tokio::time::interval(Duration::from_secs(cfg.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = tenancy_insights::anomaly::unix_now();
                    match check_fleet(&state, &cfg, &mut tracker, now).await {
                        Ok(t) => tracing::debug!(
                            findings = t.detections.len(),
                            opened = t.opened.len(),
                            closed = t.closed,
                            "fleet checked against the configuration and provisioning rules"
                        ),
                        Err(e) => tracing::warn!(error = %e, "fleet check of the configuration and provisioning rules failed"),
                    }
                }
                Some(w) = warnings.recv() => {
                    let w: Vec<Finding> = w.into_iter().filter(|f| cfg.enabled(f.kind)).collect();
                    let t = tracker.add(&w, tenancy_insights::anomaly::unix_now());
                    publish(&state, t.detections).await;
                }
            }
        }
    })
}
