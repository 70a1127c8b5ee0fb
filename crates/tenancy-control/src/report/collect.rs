//! Gathering a tenant's report from the real sources: the catalog (tenant, clusters,
//! moves, residency, audit checkpoints and anchors, the control log), the tenant's
//! database (its audit log as the owner role; its data keys in its own transaction as
//! the runtime role; `tenancy check` and its probe), the key directory, and the anomaly
//! feed pushed to this control plane.

use std::collections::HashMap;

use tenancy_audit::{Checkpoint, Log, StoredEvent, Trust, Verdict};
use tenancy_catalog::{ClusterRecord, MoveEnd, MoveRecord, Tenant};
use tenancy_core::{Placement, TenantId};
use tenancy_keys::{KekState, KeyProvider};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::*;
use super::sign::GENERATOR;
use crate::api::audit::{open_log, LogReader};
use crate::error::{ApiError, ProblemCode};
use crate::AppState;

/// Most moves, anomalies and listed events a report carries.
const MAX_ITEMS: usize = 1000;
/// Days of the audit events chart.
const DAYS: i64 = 30;
/// Weeks of the anomalies chart.
const WEEKS: i64 = 12;

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn ts_us(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .map(ts)
        .unwrap_or_default()
}

fn ts_secs(s: u64) -> String {
    OffsetDateTime::from_unix_timestamp(s.min(i64::MAX as u64) as i64)
        .map(ts)
        .unwrap_or_default()
}

fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// The day of a time, `YYYY-MM-DD`.
fn day(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Gathers tenant `id`'s report. 404 for an unknown tenant; 503 without an audit
/// sealer (it holds the signing key and the tenant database logins). A source that
/// cannot be read makes its section say so rather than failing the report.
pub async fn collect(state: &AppState, id: TenantId) -> Result<Report, ApiError> {
    let sealer = state.audit().ok_or_else(|| {
        ApiError::new(
            ProblemCode::Unavailable,
            "this control plane signs no reports (it has no audit signing key)",
        )
    })?;
    let now = OffsetDateTime::now_utc();
    let conn = state.catalog().await?;
    let catalog: &tokio_postgres::Client = &conn;
    let tenant = tenancy_catalog::get_tenant(catalog, id).await?;
    let clusters: HashMap<Uuid, ClusterRecord> = tenancy_catalog::list_clusters(catalog)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let policy: Option<Vec<String>> = catalog
        .query_one(
            "SELECT residency FROM tenancy_catalog.tenants WHERE id = $1",
            &[&id.as_uuid()],
        )
        .await
        .map_err(|e| ApiError::unavailable("reading a tenant's residency", &e))?
        .get(0);
    let moves = tenancy_catalog::tenant_moves(catalog, id, MAX_ITEMS as i64).await?;
    let placement = placement_section(&tenant, &moves, &clusters);
    let residency = residency_section(&tenant, policy, &placement.history);

    // The audit logs: the control log in the catalog, the tenant's own in its database.
    let trust = Trust::Keys(vec![sealer.public_key_hex()]);
    let uuid = id.as_uuid();
    let control_events = tenancy_audit::load_log_events(catalog, Log::Control, uuid).await;
    let control_log = chain(catalog, Log::Control, uuid, control_events.as_ref(), &trust).await;
    let reader = open_log(state, catalog, id, Log::Tenant).await;
    let tenant_events = match &reader {
        Ok(LogReader::Tenant(db)) => tenancy_audit::load_log_events(db, Log::Tenant, uuid)
            .await
            .map_err(|e| e.to_string()),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(e.detail.clone()),
    };
    let tenant_log = chain(catalog, Log::Tenant, uuid, tenant_events.as_ref(), &trust).await;
    let no_events = Vec::new();
    let tenant_events = tenant_events.as_ref().unwrap_or(&no_events);
    let control_events = control_events.as_ref().unwrap_or(&no_events);
    let audit = AuditSection {
        trusted_key: sealer.public_key_hex(),
        tenant_log,
        control_log,
        per_day: per_day(now, tenant_events, control_events),
    };

    let isolation = isolation(state, sealer, &tenant, &clusters, &reader).await;
    let keys = keys(state, id, tenant_events).await;
    let anomalies = anomalies(state, id, now);
    let mut anchors = Vec::new();
    for log in [Log::Tenant, Log::Control] {
        if let Ok(a) = tenancy_audit::load_anchors(catalog, log, Some(uuid)).await {
            anchors.extend(a.into_iter().map(|a| AnchorView {
                log: log.as_str().to_owned(),
                chain_pos: a.chain_pos,
                signed_at: ts_us(a.signed_at_us),
            }));
        }
    }
    let retention = RetentionSection {
        audit_retention_days: sealer.config().retention(tenant.plan.as_str()),
        legal_hold: tenant.legal_hold,
        purge_after: tenant.purge_after.map(ts),
        anchors,
    };
    let transfers = latest(control_events, |a| {
        ["export", "import", "move"]
            .iter()
            .any(|w| a.split(['.', '_', ':', '/', '-']).any(|p| p == *w))
    });
    let exports = exports(control_events);
    Ok(Report {
        generated_at: ts(now),
        generator: GENERATOR.to_owned(),
        tenant: TenantFacts {
            id: id.to_string(),
            slug: tenant.slug.to_string(),
            display_name: tenant.display_name.clone(),
            plan: tenant.plan.to_string(),
            state: tenant.state.as_str().to_owned(),
            created_at: ts(tenant.created_at),
        },
        placement,
        residency,
        isolation,
        keys,
        audit,
        anomalies,
        retention,
        transfers,
        exports,
    })
}

/// The tenant's exports, from the `tenant.export` events of its control-log chain (the
/// latest [`MAX_ITEMS`]).
fn exports(events: &[StoredEvent]) -> Vec<ExportView> {
    let mut out: Vec<ExportView> = events
        .iter()
        .filter(|e| e.recorded.action == crate::transfer::EXPORT_ACTION)
        .map(|e| {
            let r = &e.recorded;
            let after: serde_json::Value = r
                .after
                .as_deref()
                .and_then(|a| serde_json::from_str(a).ok())
                .unwrap_or_default();
            let text = |k: &str| after[k].as_str().map(str::to_owned);
            ExportView {
                at: ts_us(e.occurred_at_us),
                actor: match &r.actor_subject {
                    Some(s) => format!("{} {s}", r.actor_kind),
                    None => r.actor_kind.clone(),
                },
                via: text("via"),
                sha256: text("sha256"),
                digest: text("digest"),
                rows: after["rows"].as_u64(),
                bytes: after["bytes"].as_u64(),
                export_id: text("export_id"),
                request_id: r.request_id.clone(),
                client_addr: r.client_addr.clone(),
            }
        })
        .collect();
    let skip = out.len().saturating_sub(MAX_ITEMS);
    out.drain(..skip);
    out
}

fn location(
    placement: Placement,
    region: &str,
    cluster: Uuid,
    clusters: &HashMap<Uuid, ClusterRecord>,
) -> Location {
    Location {
        placement: placement.as_str().to_owned(),
        region: region.to_owned(),
        cluster_id: cluster.to_string(),
        cluster: clusters.get(&cluster).map(|c| c.name.clone()),
    }
}

fn end_location(e: &MoveEnd, clusters: &HashMap<Uuid, ClusterRecord>) -> Location {
    location(e.placement, e.region.as_str(), e.cluster, clusters)
}

/// Where the tenant is, where it was (from its creation, one period per switched move)
/// and its moves.
fn placement_section(
    t: &Tenant,
    moves: &[MoveRecord],
    clusters: &HashMap<Uuid, ClusterRecord>,
) -> PlacementSection {
    let current = location(t.placement, t.region.as_str(), t.cluster_id, clusters);
    let mut switched: Vec<(&MoveRecord, OffsetDateTime)> = moves
        .iter()
        .filter_map(|m| m.record.switched_at.map(|at| (m, at)))
        .collect();
    switched.sort_by_key(|(_, at)| *at);
    let mut history = Vec::new();
    let mut from = t.created_at;
    for (m, at) in &switched {
        history.push(PlacementPeriod {
            location: end_location(&m.record.from, clusters),
            from: ts(from),
            until: Some(ts(*at)),
        });
        from = *at;
    }
    history.push(PlacementPeriod {
        location: current.clone(),
        from: ts(from),
        until: None,
    });
    PlacementSection {
        current,
        schema_name: t.schema_name.clone(),
        database_name: t.database_name.clone(),
        history,
        moves: moves
            .iter()
            .map(|m| MoveView {
                workflow: m.record.workflow.to_string(),
                status: m.record.status.as_str().to_owned(),
                from: end_location(&m.record.from, clusters),
                to: end_location(&m.record.to, clusters),
                started_at: ts(m.started_at),
                switched_at: m.record.switched_at.map(ts),
                finished_at: m.finished_at.map(ts),
            })
            .collect(),
    }
}

fn residency_section(
    t: &Tenant,
    policy: Option<Vec<String>>,
    history: &[PlacementPeriod],
) -> ResidencySection {
    let allowed = policy
        .clone()
        .unwrap_or_else(|| vec![t.region.as_str().to_owned()]);
    ResidencySection {
        current_region_allowed: allowed.iter().any(|r| r == t.region.as_str()),
        periods_outside: history
            .iter()
            .filter(|p| !allowed.contains(&p.location.region))
            .cloned()
            .collect(),
        allowed_regions: allowed,
        policy,
    }
}

fn checkpoint_summary(c: &Checkpoint) -> CheckpointSummary {
    CheckpointSummary {
        chain_pos: c.chain_pos,
        head_hash: c.head_hash.clone(),
        signed_at: ts_us(c.signed_at_us),
        public_key: c.public_key.clone(),
    }
}

/// One chain verified against the catalog's checkpoints and anchors, trusting only the
/// control plane's key.
async fn chain(
    catalog: &tokio_postgres::Client,
    log: Log,
    tenant: Uuid,
    events: Result<&Vec<StoredEvent>, &impl std::fmt::Display>,
    trust: &Trust,
) -> ChainView {
    let unavailable = |why: String| ChainView {
        status: "unavailable".to_owned(),
        sealed: 0,
        unsealed: 0,
        head: 0,
        base: 0,
        checkpoints: 0,
        problem: Some(why),
        last_checkpoint: None,
    };
    let events = match events {
        Ok(e) => e,
        Err(e) => return unavailable(e.to_string()),
    };
    let signed = async {
        Ok::<_, tenancy_audit::Error>((
            tenancy_audit::load_log_checkpoints(catalog, log, Some(tenant)).await?,
            tenancy_audit::load_anchors(catalog, log, Some(tenant)).await?,
        ))
    };
    let (checkpoints, anchors) = match signed.await {
        Ok(v) => v,
        Err(e) => return unavailable(e.to_string()),
    };
    let v: Verdict =
        tenancy_audit::verify_chain_in(log, tenant, events, &checkpoints, &anchors, trust);
    let status = match &v.tampering {
        Some(_) => "tampered",
        None if events.is_empty() => "empty",
        None => "intact",
    };
    ChainView {
        status: status.to_owned(),
        sealed: v.sealed,
        unsealed: v.unsealed,
        head: v.head,
        base: v.base,
        checkpoints: v.checkpoints,
        problem: v.tampering.as_ref().map(ToString::to_string),
        last_checkpoint: checkpoints
            .iter()
            .max_by_key(|c| c.chain_pos)
            .map(checkpoint_summary),
    }
}

/// Events per day of both logs over the last [`DAYS`] days (today included).
fn per_day(now: OffsetDateTime, tenant: &[StoredEvent], control: &[StoredEvent]) -> Vec<DayCount> {
    let days: Vec<String> = (0..DAYS)
        .rev()
        .map(|back| day(now - time::Duration::days(back)))
        .collect();
    let mut out: Vec<DayCount> = days
        .iter()
        .map(|d| DayCount {
            day: d.clone(),
            tenant: 0,
            control: 0,
        })
        .collect();
    let index: HashMap<&str, usize> = days
        .iter()
        .enumerate()
        .map(|(i, d)| (d.as_str(), i))
        .collect();
    for (events, is_tenant) in [(tenant, true), (control, false)] {
        for e in events {
            let Ok(t) =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.occurred_at_us) * 1000)
            else {
                continue;
            };
            if let Some(&i) = index.get(day(t).as_str()) {
                if is_tenant {
                    out[i].tenant += 1;
                } else {
                    out[i].control += 1;
                }
            }
        }
    }
    out
}

/// The latest [`MAX_ITEMS`] events whose action `pick` selects, oldest first.
fn latest(events: &[StoredEvent], pick: impl Fn(&str) -> bool) -> Vec<ControlEvent> {
    let mut out: Vec<ControlEvent> = events
        .iter()
        .filter(|e| pick(&e.recorded.action))
        .map(|e| {
            let r = &e.recorded;
            ControlEvent {
                at: ts_us(e.occurred_at_us),
                action: r.action.clone(),
                actor: match &r.actor_subject {
                    Some(s) => format!("{} {s}", r.actor_kind),
                    None => r.actor_kind.clone(),
                },
                outcome: r.outcome.clone(),
                target: r.target.clone(),
                request_id: r.request_id.clone(),
            }
        })
        .collect();
    let skip = out.len().saturating_sub(MAX_ITEMS);
    out.drain(..skip);
    out
}

fn unavailable_isolation(why: impl Into<String>) -> IsolationSection {
    IsolationSection {
        status: "unavailable".to_owned(),
        unavailable_reason: Some(why.into()),
        database: None,
        runtime_role: None,
        context_impl: None,
        server_version: None,
        errors: 0,
        warnings: 0,
        info: 0,
        findings: Vec::new(),
        probe_ran: false,
        probe_findings: Vec::new(),
    }
}

fn finding(f: &tenancy_check::Finding) -> FindingView {
    FindingView {
        rule: f.rule.clone(),
        severity: f.severity.as_str().to_owned(),
        object: f.object.clone(),
        message: f.message.clone(),
    }
}

/// `tenancy check` of the database the tenant's rows are in (the static audit as the
/// owner role, which reads the system catalogues; the probe as the runtime role, with
/// the context key, every change rolled back).
async fn isolation(
    state: &AppState,
    sealer: &crate::audit::sealer::Sealer,
    t: &Tenant,
    clusters: &HashMap<Uuid, ClusterRecord>,
    reader: &Result<LogReader, ApiError>,
) -> IsolationSection {
    let owner = match reader {
        Ok(LogReader::Tenant(db)) => db,
        Ok(_) => return unavailable_isolation("the tenant has no database yet (or any more)"),
        Err(e) => return unavailable_isolation(e.detail.clone()),
    };
    let Some(cluster) = clusters.get(&t.cluster_id) else {
        return unavailable_isolation("the tenant's cluster is not in the catalog");
    };
    let dbname = match (t.placement, &t.database_name) {
        (Placement::Dedicated, Some(d)) => d.clone(),
        _ => cluster.dbname.clone(),
    };
    let opts = tenancy_check::Options {
        context_key: state.report_sources().context_key.clone(),
        ..tenancy_check::Options::default()
    };
    let mut report = match tenancy_check::audit(owner, &opts).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant = %t.id, error = %e, "the report's isolation check failed");
            return unavailable_isolation("the isolation check could not run (logged)");
        }
    };
    report.normalize();
    let summary = report.summary();
    let (probe_ran, probe_findings) = if opts.context_key.is_none() {
        (false, Vec::new())
    } else {
        match sealer.runtime_db(cluster, &dbname).await {
            Ok(runtime) => match tenancy_check::probe(&runtime, &opts).await {
                Ok(fs) => (true, fs.iter().map(finding).collect()),
                Err(e) => {
                    tracing::warn!(tenant = %t.id, error = %e, "the report's isolation probe failed");
                    (false, Vec::new())
                }
            },
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %tenancy_conn::ErrorText(e.as_ref()), "the report's probe could not connect as the runtime role");
                (false, Vec::new())
            }
        }
    };
    IsolationSection {
        status: "checked".to_owned(),
        unavailable_reason: None,
        database: Some(report.database.clone()),
        runtime_role: Some(report.runtime_role.clone()),
        context_impl: report.context_impl.clone(),
        server_version: Some(report.server_version),
        errors: summary.errors as u32,
        warnings: summary.warnings as u32,
        info: summary.info as u32,
        findings: report.findings.iter().map(finding).collect(),
        probe_ran,
        probe_findings,
    }
}

/// The tenant's keys: its key-encryption key in the key directory (when this control
/// plane has one), its data keys read in its own transaction (runtime role, row-level
/// security), and the `keys.*` events of its own audit log.
async fn keys(state: &AppState, id: TenantId, tenant_events: &[StoredEvent]) -> KeySection {
    let (kek, kek_version) = match &state.report_sources().key_dir {
        None => ("not_visible", None),
        Some(dir) => match tenancy_keys::LocalKeyProvider::open(dir) {
            Ok(p) => match p.state(id).await {
                Ok(KekState::Missing) => ("missing", None),
                Ok(KekState::Live { current }) => ("live", Some(current)),
                Ok(KekState::Destroyed) => ("destroyed", None),
                Err(e) => {
                    tracing::warn!(tenant = %id, error = %e, "reading the tenant's key-encryption key state");
                    ("not_visible", None)
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "opening the key directory report.key_dir");
                ("not_visible", None)
            }
        },
    };
    let data_keys = match state.tenant_access() {
        Some(access) => data_keys(access.router(), id).await,
        None => None,
    };
    KeySection {
        kek: kek.to_owned(),
        kek_version,
        data_keys_readable: data_keys.is_some(),
        data_keys: data_keys.unwrap_or_default(),
        events: latest(tenant_events, |a| a.starts_with("keys.")),
    }
}

/// The tenant's data keys (version, KEK version, creation), or `None` when its database
/// has no data-key table or cannot be reached.
async fn data_keys(router: &tenancy_sdk::Router, id: TenantId) -> Option<Vec<DataKeyView>> {
    let read = async {
        let mut tx = router.begin_read_only(id).await?;
        let has: bool = tx
            .query_one("SELECT to_regclass('tenancy.data_keys') IS NOT NULL", &[])
            .await?
            .get(0);
        let rows = if has {
            Some(
                tx.query(
                    "SELECT version, kek_version, created_at FROM tenancy.data_keys \
                      WHERE tenant_id = $1 ORDER BY version",
                    &[&id.as_uuid()],
                )
                .await?,
            )
        } else {
            None
        };
        tx.commit().await?;
        Ok::<_, tenancy_sdk::Error>(rows)
    };
    match read.await {
        Ok(rows) => rows.map(|rows| {
            rows.iter()
                .map(|r| DataKeyView {
                    version: r.get::<_, i32>(0).max(0) as u32,
                    kek_version: r.get::<_, i32>(1).max(0) as u32,
                    created_at: ts(r.get(2)),
                })
                .collect()
        }),
        Err(e) => {
            tracing::warn!(tenant = %id, error = %e, "reading the tenant's data keys for its report");
            None
        }
    }
}

/// The tenant's anomalies from the feed, with their resolution and a weekly count.
fn anomalies(state: &AppState, id: TenantId, now: OffsetDateTime) -> AnomalySection {
    let filter = tenancy_insights::anomaly::Filter {
        tenant: Some(id),
        ..Default::default()
    };
    let kept = state.anomalies(&filter, MAX_ITEMS);
    let now_s = now.unix_timestamp().max(0) as u64;
    // Open: flagged in the current or the previous hour (a detector extends a detection
    // every hour it stays flagged).
    let open_since = (now_s / 3600).saturating_sub(1) * 3600;
    let items: Vec<AnomalyView> = kept
        .iter()
        .map(|a| {
            let d = &a.detection;
            let open = d.last_hour >= open_since;
            AnomalyView {
                source: a.source.clone(),
                id: d.id,
                kind: d.kind.as_str().to_owned(),
                severity: d.severity.as_str().to_owned(),
                score: round3(d.score),
                first_hour: ts_secs(d.first_hour),
                last_hour: ts_secs(d.last_hour),
                resolution: if open { "open" } else { "ended" }.to_owned(),
                ended_at: (!open).then(|| ts_secs(d.last_hour.saturating_add(3600))),
                evidence: d
                    .evidence
                    .iter()
                    .map(|e| EvidenceView {
                        signal: e.signal.clone(),
                        baseline: round3(e.baseline),
                        observed: round3(e.observed),
                    })
                    .collect(),
            }
        })
        .collect();
    // Weeks start on Monday (UTC); 1970-01-01 was a Thursday.
    let week_of = |s: u64| (s / 86_400 + 3) / 7;
    let this_week = week_of(now_s);
    let per_week = (0..WEEKS as u64)
        .rev()
        .filter_map(|back| this_week.checked_sub(back))
        .map(|w| WeekCount {
            week: day(OffsetDateTime::from_unix_timestamp(
                ((w * 7).saturating_sub(3) * 86_400) as i64,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)),
            count: kept
                .iter()
                .filter(|a| week_of(a.detection.first_hour) == w)
                .count() as u64,
        })
        .collect();
    AnomalySection {
        open: items.iter().filter(|a| a.resolution == "open").count() as u64,
        items,
        per_week,
    }
}
