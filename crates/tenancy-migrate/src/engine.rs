//! Planning and executing a migration run.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tenancy_catalog::naming::{database_name_for, schema_name_for};
use tenancy_catalog::{ClusterRecord, LedgerOutcome, LedgerUpdate, MigrationTarget};
use tenancy_conn::PgConfig;
use tenancy_core::Placement;
use tenancy_sdk::ClusterAccess;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::{sql, Error, MigrationSet};

pub use crate::report::{Event, Options, Outcome, Plan, StopReason, Summary, TargetReport, Wave};

/// Runs the application's migrations across every target registered in a catalog.
#[derive(Debug, Clone)]
pub struct Migrator {
    /// The catalog database, as the owner role.
    catalog: PgConfig,
    /// Logins on tenant clusters (the owner role runs migrations).
    access: ClusterAccess,
    /// The migrations.
    set: MigrationSet,
}

pub(crate) async fn connect(cfg: &PgConfig, what: &str) -> Result<Client, Error> {
    let (client, conn) = cfg.connect_raw().await.map_err(|e| {
        Error::Db(tenancy_conn::DbError::Connect {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "migration connection closed");
        }
    });
    Ok(client)
}

fn db_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => {
            let mut s = d.message().to_owned();
            if let Some(detail) = d.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = d.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            if let Some(w) = d.where_() {
                s.push_str(&format!("; where: {w}"));
            }
            format!("{s} [SQLSTATE {}]", d.code().code())
        }
        None => e.to_string(),
    }
}

/// A target's schema and database.
fn location(t: &MigrationTarget, cluster: &ClusterRecord) -> (String, String) {
    match (t.kind, t.tenant_id) {
        (Placement::Schema, Some(id)) => (
            t.schema_name.clone().unwrap_or_else(|| schema_name_for(id)),
            cluster.dbname.clone(),
        ),
        (Placement::Dedicated, Some(id)) => (
            "public".into(),
            t.database_name
                .clone()
                .unwrap_or_else(|| database_name_for(id)),
        ),
        _ => ("public".into(), cluster.dbname.clone()),
    }
}

/// State shared by the workers of one execution.
struct Shared<'a> {
    migrator: &'a Migrator,
    opts: &'a Options,
    failures: AtomicUsize,
    stop: AtomicBool,
    ledger: Mutex<Option<mpsc::UnboundedSender<LedgerUpdate>>>,
    events: Option<mpsc::UnboundedSender<Event>>,
    reports: Mutex<Vec<TargetReport>>,
}

impl Migrator {
    /// A migrator for the catalog at `catalog` (owner role), the clusters reachable with
    /// `access`, and `set`.
    pub fn new(catalog: impl Into<PgConfig>, access: ClusterAccess, set: MigrationSet) -> Self {
        Migrator {
            catalog: catalog.into(),
            access,
            set,
        }
    }

    /// The migrations.
    pub fn set(&self) -> &MigrationSet {
        &self.set
    }

    pub(crate) async fn catalog_client(&self) -> Result<Client, Error> {
        connect(&self.catalog, "the catalog").await
    }

    /// Refuses the run when a migration applied somewhere changed or disappeared.
    pub async fn verify_checksums(&self, catalog: &Client) -> Result<(), Error> {
        let recorded = tenancy_catalog::recorded_app_migrations(catalog).await?;
        let files: HashMap<i32, &tenancy_catalog::AppMigration> =
            self.set.app.all().iter().map(|m| (m.version, m)).collect();
        let next = self
            .set
            .latest()
            .max(recorded.last().map_or(0, |r| r.version))
            + 1;
        for r in &recorded {
            match files.get(&r.version) {
                None => {
                    return Err(Error::MissingFile {
                        version: r.version,
                        name: r.name.clone(),
                        dir: self.set.source.clone(),
                    })
                }
                Some(m) => {
                    let found = m.checksum();
                    if found != r.checksum {
                        return Err(Error::ChecksumMismatch {
                            version: r.version,
                            file: self.set.path_of(r.version),
                            expected: r.checksum.clone(),
                            found,
                            next,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks checksums and asks the catalog which targets are behind (one query; no
    /// target is contacted). `canary` tenants (schema or dedicated, in id order) form
    /// the first wave.
    pub async fn plan(&self, canary: usize) -> Result<Plan, Error> {
        let catalog = self.catalog_client().await?;
        self.plan_with(&catalog, canary).await
    }

    async fn plan_with(&self, catalog: &Client, canary: usize) -> Result<Plan, Error> {
        self.verify_checksums(catalog).await?;
        let latest = self.set.latest();
        let (pending, total) = tenancy_catalog::targets_below(catalog, latest).await?;
        let mut waves = Vec::new();
        let mut rest = pending;
        if canary > 0 {
            let mut first = Vec::new();
            let mut others = Vec::new();
            for t in rest {
                if first.len() < canary && t.kind != Placement::Pooled {
                    first.push(t);
                } else {
                    others.push(t);
                }
            }
            if !first.is_empty() {
                waves.push(Wave {
                    name: "canary",
                    targets: first,
                });
            }
            rest = others;
        }
        if !rest.is_empty() {
            waves.push(Wave {
                name: "rest",
                targets: rest,
            });
        }
        Ok(Plan {
            latest,
            total_targets: usize::try_from(total).unwrap_or(0),
            waves,
        })
    }

    /// Plans and executes.
    pub async fn run(
        &self,
        opts: &Options,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<Summary, Error> {
        opts.validate()?;
        let started = Instant::now();
        let plan = self.plan(opts.canary).await?;
        let mut summary = self.execute(&plan, opts, events).await?;
        // The whole run, planning included (all a no-op run does).
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Executes a plan wave by wave. Dropping the future stops the run; whatever
    /// committed is kept and the next run continues from the markers.
    pub async fn execute(
        &self,
        plan: &Plan,
        opts: &Options,
        events: Option<mpsc::UnboundedSender<Event>>,
    ) -> Result<Summary, Error> {
        self.execute_until(plan, opts, events, std::future::pending())
            .await
    }

    /// [`Migrator::execute`] until `interrupt` completes: then no new target is started,
    /// the targets in flight finish, the ledger records them, and the summary says
    /// [`StopReason::Interrupted`] (the next run continues from there).
    pub async fn execute_until(
        &self,
        plan: &Plan,
        opts: &Options,
        events: Option<mpsc::UnboundedSender<Event>>,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Result<Summary, Error> {
        opts.validate()?;
        let started = Instant::now();
        let pending = plan.pending();
        let mut summary = Summary {
            latest: plan.latest,
            targets: plan.total_targets,
            skipped: plan.total_targets.saturating_sub(pending),
            migrated: 0,
            caught_up: 0,
            failed: 0,
            not_run: 0,
            stopped: None,
            elapsed: Duration::ZERO,
            slowest: Duration::ZERO,
            failures: Vec::new(),
        };
        if pending == 0 {
            summary.elapsed = started.elapsed();
            return Ok(summary);
        }
        let catalog = self.catalog_client().await?;
        let clusters: HashMap<Uuid, ClusterRecord> = tenancy_catalog::list_clusters(&catalog)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect();
        let (ledger_tx, ledger_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            migrator: self,
            opts,
            failures: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            ledger: Mutex::new(Some(ledger_tx)),
            events: events.clone(),
            reports: Mutex::new(Vec::new()),
        };
        let writer = ledger_writer(catalog, ledger_rx, &self.set);
        let work = async {
            let mut done = 0;
            for (i, wave) in plan.waves.iter().enumerate() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(ev) = &events {
                    let _ = ev.send(Event::Wave {
                        name: wave.name,
                        targets: wave.targets.len(),
                    });
                }
                run_wave(&shared, wave, &clusters).await?;
                done = i + 1;
                let failed_so_far = shared.failures.load(Ordering::SeqCst);
                if wave.name == "canary" && failed_so_far > 0 && i + 1 < plan.waves.len() {
                    shared.stop.store(true, Ordering::SeqCst);
                    return Ok::<_, Error>((done, Some(StopReason::CanaryFailed)));
                }
            }
            let reason = shared
                .stop
                .load(Ordering::SeqCst)
                .then_some(StopReason::MaxFailures(opts.max_failures));
            Ok((done, reason))
        };
        let work = async {
            let r = work.await;
            // No more ledger updates: dropping the sender lets the writer drain and end.
            if let Ok(mut g) = shared.ledger.lock() {
                g.take();
            }
            r
        };
        let interrupted = AtomicBool::new(false);
        let watcher = async {
            interrupt.await;
            interrupted.store(true, Ordering::SeqCst);
            shared.stop.store(true, Ordering::SeqCst);
            std::future::pending::<std::convert::Infallible>().await
        };
        let (work_result, writer_result) = tokio::select! {
            r = async { tokio::join!(work, writer) } => r,
            never = watcher => match never {},
        };
        let (_, stopped) = work_result?;
        let stopped = if interrupted.load(Ordering::SeqCst) {
            Some(StopReason::Interrupted)
        } else {
            stopped
        };
        writer_result?;
        let reports = shared.reports.into_inner().unwrap_or_default();
        for r in &reports {
            summary.slowest = summary.slowest.max(r.duration);
            match &r.outcome {
                Outcome::Migrated => summary.migrated += 1,
                Outcome::CaughtUp => summary.caught_up += 1,
                Outcome::Failed(_) => {
                    summary.failed += 1;
                    summary.failures.push(r.clone());
                }
            }
        }
        summary.not_run = pending.saturating_sub(reports.len());
        summary.stopped = stopped;
        if let (Some(reason), Some(ev)) = (stopped, &events) {
            let _ = ev.send(Event::Stopped(reason));
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Session settings of a migration connection to `dbname` of `cluster`.
    pub(crate) fn owner_config(
        &self,
        cluster: &ClusterRecord,
        dbname: &str,
        opts: Option<&Options>,
    ) -> PgConfig {
        let mut cfg =
            tenancy_sdk::config_for(cluster, &self.access.owner, dbname, &self.access.tls);
        cfg.pg_mut().application_name("tenancy-migrate");
        if let Some(o) = opts {
            cfg.pg_mut().options(format!(
                "-c lock_timeout={} -c statement_timeout={}",
                o.lock_timeout.as_millis().max(1),
                o.statement_timeout.as_millis().max(1)
            ));
        }
        cfg
    }
}

impl Shared<'_> {
    /// Records a target's outcome: ledger, events, failure count (and the stop).
    fn report(&self, t: &MigrationTarget, r: TargetReport) {
        let label = match &r.outcome {
            Outcome::Migrated => "migrated",
            Outcome::CaughtUp => "caught_up",
            Outcome::Failed(_) => "failed",
        };
        metrics::counter!(
            "tenancy_migration_targets_total",
            "kind" => t.kind.to_string(),
            "outcome" => label
        )
        .increment(1);
        let outcome = match &r.outcome {
            Outcome::Migrated | Outcome::CaughtUp => LedgerOutcome::At {
                version: r.to,
                checksum: self
                    .migrator
                    .set
                    .app
                    .all()
                    .iter()
                    .find(|m| m.version == r.to)
                    .map(|m| m.checksum())
                    .unwrap_or_default(),
                duration_ms: (r.outcome == Outcome::Migrated)
                    .then_some(r.duration.as_secs_f64() * 1000.0),
            },
            Outcome::Failed(e) => LedgerOutcome::Failed {
                version: r.to,
                error: e.clone(),
            },
        };
        if let Outcome::Failed(e) = &r.outcome {
            tracing::warn!(target_id = %t.target_id, label = %t.label, error = %e, "migration failed");
            let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.opts.max_failures {
                self.stop.store(true, Ordering::SeqCst);
            }
        }
        if let Ok(g) = self.ledger.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(LedgerUpdate {
                    target_id: t.target_id,
                    kind: t.kind,
                    tenant_id: t.tenant_id,
                    cluster_id: t.cluster_id,
                    outcome,
                });
            }
        }
        if let Some(ev) = &self.events {
            let _ = ev.send(Event::Target(r.clone()));
        }
        if let Ok(mut g) = self.reports.lock() {
            g.push(r);
        }
    }
}

/// Runs one wave: per cluster, `concurrency` workers share the cluster's queue.
async fn run_wave(
    shared: &Shared<'_>,
    wave: &Wave,
    clusters: &HashMap<Uuid, ClusterRecord>,
) -> Result<(), Error> {
    let mut by_cluster: HashMap<Uuid, (VecDeque<&MigrationTarget>, VecDeque<&MigrationTarget>)> =
        HashMap::new();
    for t in &wave.targets {
        let e = by_cluster.entry(t.cluster_id).or_default();
        if t.kind == Placement::Dedicated {
            e.1.push_back(t);
        } else {
            e.0.push_back(t);
        }
    }
    let mut queues = Vec::new();
    for (id, (in_shared_db, dedicated)) in by_cluster {
        let cluster = clusters.get(&id).ok_or(Error::UnknownCluster(id))?;
        queues.push((cluster, Mutex::new(in_shared_db), Mutex::new(dedicated)));
    }
    let mut workers = Vec::new();
    for (cluster, shared_q, dedicated_q) in &queues {
        for _ in 0..shared.opts.concurrency {
            workers.push(worker(shared, cluster, shared_q, dedicated_q));
        }
    }
    join_all(workers).await;
    Ok(())
}

type Queue<'a> = Mutex<VecDeque<&'a MigrationTarget>>;

/// Takes work until the queues are empty or the run stops.
async fn worker(
    shared: &Shared<'_>,
    cluster: &ClusterRecord,
    shared_q: &Queue<'_>,
    dedicated_q: &Queue<'_>,
) {
    let m = shared.migrator;
    let opts = shared.opts;
    // The connection to the cluster's shared database and how many targets it has served.
    let mut conn: Option<(Client, usize)> = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let batch: Vec<&MigrationTarget> = match shared_q.lock() {
            Ok(mut q) => {
                let n = opts.pipeline.min(q.len());
                q.drain(..n).collect()
            }
            Err(_) => return,
        };
        if !batch.is_empty() {
            if conn.as_ref().is_some_and(|(c, _)| c.is_closed()) {
                conn = None;
            }
            if conn.is_none() {
                let cfg = m.owner_config(cluster, &cluster.dbname, Some(opts));
                match connect(
                    &cfg,
                    &format!("database {} of cluster {}", cluster.dbname, cluster.name),
                )
                .await
                {
                    Ok(c) => conn = Some((c, 0)),
                    Err(e) => {
                        for t in batch {
                            let r = report_for(
                                t,
                                m.set.latest(),
                                Outcome::Failed(e.to_string()),
                                Duration::ZERO,
                            );
                            shared.report(t, r);
                        }
                        continue;
                    }
                }
            }
            let Some((client, used)) = conn.as_mut() else {
                return;
            };
            let reports = migrate_batch(m, client, cluster, &batch).await;
            *used += batch.len();
            if *used >= opts.recycle_after {
                conn = None;
            }
            for (t, r) in batch.into_iter().zip(reports) {
                shared.report(t, r);
            }
            continue;
        }
        let next = match dedicated_q.lock() {
            Ok(mut q) => q.pop_front(),
            Err(_) => return,
        };
        let Some(t) = next else { return };
        let r = migrate_dedicated(m, opts, cluster, t).await;
        shared.report(t, r);
    }
}

fn report_for(t: &MigrationTarget, to: i32, outcome: Outcome, duration: Duration) -> TargetReport {
    TargetReport {
        target_id: t.target_id,
        label: t.label.clone(),
        kind: t.kind,
        from: t.version,
        to,
        outcome,
        duration,
    }
}

/// Interprets one target's answer: a stale plan (the marker is elsewhere) comes back as
/// `Err(Some(marker_version))`.
fn interpret(
    r: Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
) -> Result<(), Result<i32, String>> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => match e.as_db_error() {
            Some(d) if d.code().code() == sql::STALE_PLAN => {
                let v = d.detail().and_then(|v| v.parse().ok()).unwrap_or(0);
                Err(Ok(v))
            }
            _ => Err(Err(db_error_text(&e))),
        },
    }
}

/// Settles a target whose marker says `at` instead of what the ledger said.
async fn replan(m: &Migrator, client: &Client, schema: &str, at: i32) -> (Outcome, Duration) {
    let latest = m.set.latest();
    if at == latest {
        return (Outcome::CaughtUp, Duration::ZERO);
    }
    if at > latest {
        return (
            Outcome::Failed(format!(
                "schema {schema} is at version {at}, newer than the newest migration ({latest}) in {}; run with the newer migrations",
                m.set.source
            )),
            Duration::ZERO,
        );
    }
    let started = Instant::now();
    let r = client
        .simple_query(&sql::upgrade(schema, at, &m.set.app))
        .await;
    let outcome = match interpret(r) {
        Ok(()) => Outcome::Migrated,
        Err(Ok(v)) if v == latest => Outcome::CaughtUp,
        Err(Ok(v)) => Outcome::Failed(format!(
            "schema {schema} moved to version {v} while it was being migrated; run again"
        )),
        Err(Err(e)) => Outcome::Failed(e),
    };
    (outcome, started.elapsed())
}

/// Migrates targets of one shared database, their transactions pipelined on `client`.
async fn migrate_batch(
    m: &Migrator,
    client: &Client,
    cluster: &ClusterRecord,
    batch: &[&MigrationTarget],
) -> Vec<TargetReport> {
    let latest = m.set.latest();
    let schemas: Vec<String> = batch.iter().map(|t| location(t, cluster).0).collect();
    let answers = join_all(batch.iter().zip(&schemas).map(|(t, schema)| async move {
        let started = Instant::now();
        let r = client
            .simple_query(&sql::upgrade(schema, t.version, &m.set.app))
            .await;
        (interpret(r), started.elapsed())
    }))
    .await;
    let mut out = Vec::with_capacity(batch.len());
    for ((t, schema), (answer, took)) in batch.iter().zip(&schemas).zip(answers) {
        let (outcome, took) = match answer {
            Ok(()) => (Outcome::Migrated, took),
            Err(Err(e)) => (Outcome::Failed(e), took),
            Err(Ok(at)) => replan(m, client, schema, at).await,
        };
        out.push(report_for(t, latest, outcome, took));
    }
    out
}

/// Migrates a dedicated database's `public` schema on a connection of its own.
async fn migrate_dedicated(
    m: &Migrator,
    opts: &Options,
    cluster: &ClusterRecord,
    t: &MigrationTarget,
) -> TargetReport {
    let latest = m.set.latest();
    let (schema, db) = location(t, cluster);
    let cfg = m.owner_config(cluster, &db, Some(opts));
    let client = match connect(&cfg, &format!("database {db}")).await {
        Ok(c) => c,
        Err(e) => return report_for(t, latest, Outcome::Failed(e.to_string()), Duration::ZERO),
    };
    let started = Instant::now();
    let r = client
        .simple_query(&sql::upgrade(&schema, t.version, &m.set.app))
        .await;
    let (outcome, took) = match interpret(r) {
        Ok(()) => (Outcome::Migrated, started.elapsed()),
        Err(Err(e)) => (Outcome::Failed(e), started.elapsed()),
        Err(Ok(at)) => replan(m, &client, &schema, at).await,
    };
    report_for(t, latest, outcome, took)
}

/// Writes outcomes to the catalog as they arrive, in batches, together with the
/// checksums of the migrations that now have been applied somewhere.
async fn ledger_writer(
    mut catalog: Client,
    mut rx: mpsc::UnboundedReceiver<LedgerUpdate>,
    set: &MigrationSet,
) -> Result<(), Error> {
    let mut recorded_up_to = 0;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 2000 {
            match rx.try_recv() {
                Ok(u) => batch.push(u),
                Err(_) => break,
            }
        }
        let reached = batch
            .iter()
            .filter_map(|u| match u.outcome {
                LedgerOutcome::At { version, .. } => Some(version),
                LedgerOutcome::Failed { .. } => None,
            })
            .max()
            .unwrap_or(0);
        let tx = catalog
            .transaction()
            .await
            .map_err(Error::db("starting a ledger transaction"))?;
        if reached > recorded_up_to {
            // With their texts: provisioning in a control plane started earlier reads them
            // to bring new tenants to this version.
            let applied: Vec<_> = set
                .app
                .sources()
                .into_iter()
                .filter(|m| m.version <= reached)
                .collect();
            tenancy_catalog::record_app_migration_sources(&tx, &applied).await?;
        }
        tenancy_catalog::write_ledger(&tx, &batch).await?;
        tx.commit()
            .await
            .map_err(Error::db("committing the migration ledger"))?;
        recorded_up_to = recorded_up_to.max(reached);
    }
    Ok(())
}
