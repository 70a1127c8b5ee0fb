//! `tenant_move`: a pooled tenant of 100,000 rows over the example app's tables (10,000
//! customers, 20,000 invoices, 60,000 line items, 10,000 deliveries) moved to a dedicated
//! database while 4 clients write to it continuously through the SDK's router, against
//! the offline alternative in the same run.
//!
//! - ours: the online move (`move` workflow: capture, snapshot, catch-up, cutover with
//!   verification), driven in-process. Each of the 4 writers inserts a customer per
//!   transaction through `Router::begin`, retrying what fails; a write's time runs from
//!   its first attempt to its acknowledged commit (waiting for the cutover and retries
//!   included). `ours` = the longest write time among writes in flight during the move.
//! - baseline: the offline move of a second tenant of the same shape: its rows exported
//!   with `COPY … TO STDOUT` (binary) table by table and loaded with `COPY … FROM STDIN`
//!   into a dedicated database made beforehand (not counted), then the catalog switched.
//!   Writes are blocked for all of that: `baseline` = its duration.
//! - `ratio` = baseline / ours (higher is better).
//!
//! Also in `params`: `lost_writes` (acknowledged writes missing on the new placement
//! afterwards, read back through the router), the write-time percentiles of 2 clients of
//! another pooled tenant during the move (`other_tenants_p99_ms`) and during as long a
//! window with no move just before it (`other_tenants_p99_idle_ms`), and the cutover's
//! own account of the held window (`cutover`: draining, final catch-up, verification of
//! the rows changed since the full verification, switch).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tenancy_catalog::{WorkflowKind, WorkflowStatus};
use tenancy_core::{Placement, TenantId};
use tenancy_pg::Cluster;
use tenancy_provision::Provisioner;
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{Router, RouterOptions};
use tokio_postgres::Client;

use crate::report::Report;
use crate::setup::{on_ephemeral_cluster, CATALOG_DB};
use crate::stats::{loadavg, median, percentile};
use crate::tenant_import::{invoicing_env, provision, runtime_router, InvoicingEnv};

/// Rows of each moved tenant.
const ROWS: u64 = 100_000;
/// Clients writing to the moved tenant.
const WRITERS: usize = 4;
/// Clients writing to another tenant of the same pooled tables.
const OTHER_WRITERS: usize = 2;
/// The window with no move in which the other tenant's write times are taken first.
const IDLE: Duration = Duration::from_secs(5);
/// Tables in foreign-key order.
const TABLES: [&str; 4] = ["customers", "invoices", "line_items", "deliveries"];

/// The example app's rows of one tenant (as the superuser, `tenant_id` given).
fn seed_sql(tenant: TenantId) -> String {
    let t = format!("'{}'::uuid", tenant.as_uuid());
    format!(
        "INSERT INTO invoicing.customers (tenant_id, name, email)
             SELECT {t}, 'customer ' || g, 'c' || g || '@example.test' FROM generate_series(1, 10000) g;
         INSERT INTO invoicing.invoices (tenant_id, customer_id, number, status, sent_at)
             SELECT c.tenant_id, c.id, 'INV-' || k || '-' || split_part(c.email, '@', 1),
                    CASE WHEN k = 1 THEN 'sent' ELSE 'draft' END, CASE WHEN k = 1 THEN now() END
               FROM invoicing.customers c, generate_series(1, 2) k WHERE c.tenant_id = {t};
         INSERT INTO invoicing.line_items (tenant_id, invoice_id, description, quantity, unit_price_cents)
             SELECT i.tenant_id, i.id, 'item ' || k || ' of ' || i.number, k, k * 1250
               FROM invoicing.invoices i, generate_series(1, 3) k WHERE i.tenant_id = {t};
         INSERT INTO invoicing.deliveries (tenant_id, invoice_id, job_id, recipient)
             SELECT i.tenant_id, i.id, gen_random_uuid(), 'billing@example.test'
               FROM invoicing.invoices i WHERE i.tenant_id = {t} AND i.status = 'sent';"
    )
}

/// Rows of `tenant` in the four tables of `client`'s database.
async fn count(client: &Client, tenant: TenantId) -> Result<u64> {
    let mut n = 0u64;
    for t in TABLES {
        let sql = format!("SELECT count(*) FROM invoicing.{t} WHERE tenant_id = $1");
        let r: i64 = client
            .query_one(sql.as_str(), &[&tenant.as_uuid()])
            .await?
            .get(0);
        n += u64::try_from(r).unwrap_or(0);
    }
    Ok(n)
}

/// One acknowledged write: when its first attempt started (since the benchmark's epoch),
/// how long until its commit was acknowledged, and the customer email it inserted.
#[derive(Debug, Clone)]
struct Write {
    started: Duration,
    took: Duration,
    email: String,
    /// Attempts until the acknowledged one (1: no retry).
    attempts: u32,
    /// When the acknowledged attempt started (since the epoch).
    last_attempt: Duration,
    /// How long that attempt's `Router::begin` took (a cutover's wait, a new pool's
    /// connection).
    last_begin: Duration,
}

/// What a writer did.
#[derive(Debug, Default)]
struct Written {
    writes: Vec<Write>,
    failed_attempts: u64,
}

/// Clients inserting customers of one tenant until stopped, each write retried until
/// acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Written>>,
}

impl Writers {
    fn start(router: &Router, tenant: TenantId, n: usize, tag: &str, epoch: Instant) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..n)
            .map(|w| {
                let (router, stop, tag) = (router.clone(), stop.clone(), tag.to_owned());
                tokio::spawn(async move {
                    let mut out = Written::default();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let email = format!("{tag}-{w}-{i}@example.test");
                        let started = Instant::now();
                        let mut attempts = 0u32;
                        let mut last_attempt: Instant;
                        let mut last_begin = Duration::ZERO;
                        loop {
                            attempts += 1;
                            last_attempt = Instant::now();
                            let res: Result<(), tenancy_sdk::Error> = async {
                                let mut tx = router.begin(tenant).await?;
                                last_begin = last_attempt.elapsed();
                                tx.execute(
                                    "INSERT INTO invoicing.customers (name, email) VALUES ($1, $2)",
                                    &[&"written during the move", &email],
                                )
                                .await?;
                                tx.commit().await
                            }
                            .await;
                            if res.is_ok() {
                                break;
                            }
                            out.failed_attempts += 1;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        out.writes.push(Write {
                            started: started - epoch,
                            took: started.elapsed(),
                            email,
                            attempts,
                            last_attempt: last_attempt - epoch,
                            last_begin,
                        });
                        i += 1;
                    }
                    out
                })
            })
            .collect();
        Writers { stop, handles }
    }

    async fn stop(self) -> Result<Written> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Written::default();
        for h in self.handles {
            let w = h.await.context("a writer panicked")?;
            all.writes.extend(w.writes);
            all.failed_attempts += w.failed_attempts;
        }
        Ok(all)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Write times (ms, ascending) of the writes in flight at some moment of `[from, to]`.
fn in_window(w: &Written, from: Duration, to: Duration) -> Vec<f64> {
    let mut v: Vec<f64> = w
        .writes
        .iter()
        .filter(|x| x.started <= to && x.started + x.took >= from)
        .map(|x| ms(x.took))
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// One run's figures.
#[derive(Debug)]
struct RunFigures {
    ours_ms: f64,
    baseline_ms: f64,
    move_s: f64,
    lost_writes: u64,
    acknowledged: usize,
    during_move: usize,
    failed_attempts: u64,
    mover_p50_ms: f64,
    other_p99_ms: f64,
    other_p99_idle_ms: f64,
    other_during_move: usize,
    cutover: serde_json::Value,
    longest: serde_json::Value,
}

/// Runs the benchmark `runs` times and writes `target/bench/tenant_move.json`.
pub(crate) async fn run(runs: usize) -> Result<()> {
    on_ephemeral_cluster(async |cluster| measure(cluster, runs).await).await
}

async fn measure(cluster: &Cluster, runs: usize) -> Result<()> {
    println!(
        "== tenant_move: a {ROWS}-row pooled tenant moved to a dedicated database under {WRITERS} writers vs an offline COPY move"
    );
    let InvoicingEnv {
        key,
        su: _su,
        mut owner,
        access: _,
        provisioner,
    } = invoicing_env(cluster, &[]).await?;
    let router = runtime_router(cluster, &key, RouterOptions::default())?;
    let listener = router
        .listen_for_changes(cluster.config_as(RUNTIME_ROLE, CATALOG_DB))
        .await?;
    let shared = cluster.connect(CATALOG_DB).await?;
    let mut figures = Vec::new();
    for run in 0..runs {
        let f = one_run(cluster, &provisioner, &router, &mut owner, &shared, run).await?;
        println!(
            "run {}: ours {:.1} ms (move {:.2} s, {} writes during it, {} lost), offline {:.1} ms, other tenant p99 {:.1} ms (idle {:.1} ms)",
            run + 1,
            f.ours_ms,
            f.move_s,
            f.during_move,
            f.lost_writes,
            f.baseline_ms,
            f.other_p99_ms,
            f.other_p99_idle_ms
        );
        println!("  cutover {}\n  longest write {}", f.cutover, f.longest);
        figures.push(f);
    }
    listener.abort();
    let pick = |g: fn(&RunFigures) -> f64| median(&figures.iter().map(g).collect::<Vec<_>>());
    let (ours, baseline) = (pick(|f| f.ours_ms), pick(|f| f.baseline_ms));
    let lost: u64 = figures.iter().map(|f| f.lost_writes).sum();
    let report = Report {
        name: "tenant_move".into(),
        unit: "ms the tenant's writes were held moving 100,000 rows pooled → dedicated (lower is better)".into(),
        ours,
        baseline,
        baseline_name: "offline move: COPY out of the pooled tables, COPY into the new database, catalog switch; writes blocked throughout (PostgreSQL 15, same cluster)".into(),
        ratio: baseline / ours,
        params: json!({
            "rows": ROWS,
            "runs": runs,
            "writers": WRITERS,
            "ours_ms": round2(ours),
            "lost_writes": lost,
            "other_tenants_p99_ms": round2(pick(|f| f.other_p99_ms)),
            "other_tenants_p99_idle_ms": round2(pick(|f| f.other_p99_idle_ms)),
            "other_tenant_writers": OTHER_WRITERS,
            "tables": {"customers": 10_000, "invoices": 20_000, "line_items": 60_000, "deliveries": 10_000},
            "per_run": figures.iter().map(|f| json!({
                "ours_ms": round2(f.ours_ms),
                "baseline_ms": round2(f.baseline_ms),
                "move_seconds": round2(f.move_s),
                "acknowledged_writes": f.acknowledged,
                "writes_during_move": f.during_move,
                "failed_attempts": f.failed_attempts,
                "lost_writes": f.lost_writes,
                "mover_p50_ms_during_move": round2(f.mover_p50_ms),
                "other_tenants_p99_ms": round2(f.other_p99_ms),
                "other_tenants_p99_idle_ms": round2(f.other_p99_idle_ms),
                "other_tenant_writes_during_move": f.other_during_move,
                "cutover": f.cutover,
                "longest_write": f.longest,
            })).collect::<Vec<_>>(),
            "ours_is": "the longest time from a write's first attempt to its acknowledged commit, over the writes in flight during the move (cutover wait and retries included)",
            "load_average": loadavg(),
        }),
    };
    let path = report.write()?;
    println!(
        "ours {ours:.1} ms, offline {baseline:.1} ms, ratio {:.1}, lost writes {lost}; written to {}",
        report.ratio,
        path.display()
    );
    anyhow::ensure!(lost == 0, "{lost} acknowledged writes were lost");
    Ok(())
}

async fn one_run(
    cluster: &Cluster,
    p: &Provisioner,
    router: &Router,
    owner: &mut Client,
    shared: &Client,
    run: usize,
) -> Result<RunFigures> {
    let mover = provision(p, owner, &format!("mover-{run}"), Placement::Pooled).await?;
    let offline = provision(p, owner, &format!("offline-{run}"), Placement::Pooled).await?;
    let other = provision(p, owner, &format!("other-{run}"), Placement::Pooled).await?;
    let spare = provision(p, owner, &format!("spare-{run}"), Placement::Dedicated).await?;
    for t in [mover, offline] {
        shared
            .batch_execute(&seed_sql(t))
            .await
            .context("seeding a tenant")?;
        anyhow::ensure!(count(shared, t).await? == ROWS, "seeding {t}");
    }
    shared
        .batch_execute("VACUUM ANALYZE")
        .await
        .context("vacuuming the shared tables")?;

    let baseline_ms = offline_move(cluster, owner, shared, offline, spare).await?;

    let epoch = Instant::now();
    let epoch_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        * 1000.0;
    let writers = Writers::start(router, mover, WRITERS, &format!("mover{run}"), epoch);
    let others = Writers::start(router, other, OTHER_WRITERS, &format!("other{run}"), epoch);
    let idle_from = epoch.elapsed();
    tokio::time::sleep(IDLE).await;
    let move_from = epoch.elapsed();
    let wf = p
        .enqueue(
            owner,
            mover,
            WorkflowKind::Move,
            &json!({ "to": "dedicated" }),
            "bench",
        )
        .await?;
    let wf = p.drive(owner, wf.id, Duration::from_secs(600)).await?;
    let move_to = epoch.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let written = writers.stop().await?;
    let other_written = others.stop().await?;
    anyhow::ensure!(
        wf.status == WorkflowStatus::Succeeded,
        "the move ended {}: {:?}",
        wf.status,
        wf.last_error
    );
    let t = tenancy_catalog::get_tenant(owner, mover).await?;
    anyhow::ensure!(
        t.placement == Placement::Dedicated,
        "the tenant is {}",
        t.placement
    );

    // Every acknowledged write is on the new placement, read through the router.
    let mut tx = router.begin(mover).await?;
    let rows = tx
        .query("SELECT email FROM invoicing.customers", &[])
        .await?;
    let moved_rows = count_through(&mut tx).await?;
    tx.rollback().await?;
    let present: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let lost = written
        .writes
        .iter()
        .filter(|w| !present.contains(&w.email))
        .count() as u64;
    anyhow::ensure!(
        moved_rows == ROWS + written.writes.len() as u64 - lost,
        "the new placement holds {moved_rows} rows, expected {} + {} written - {lost} lost",
        ROWS,
        written.writes.len()
    );

    let during = in_window(&written, move_from, move_to);
    let other_during = in_window(&other_written, move_from, move_to);
    let other_idle = in_window(&other_written, idle_from, move_from);
    let cutover: serde_json::Value = owner
        .query_one(
            "SELECT detail -> 'cutover' FROM tenancy_catalog.tenant_events
              WHERE tenant_id = $1 AND kind = 'moved' ORDER BY seq DESC LIMIT 1",
            &[&mover.as_uuid()],
        )
        .await
        .context("reading the move event")?
        .get(0);
    // The longest write, placed against the held window (ms since the window opened).
    let held_at = cutover["held_at_unix_ms"].as_f64().unwrap_or(f64::NAN) - epoch_unix_ms;
    let longest = written
        .writes
        .iter()
        .filter(|x| x.started <= move_to && x.started + x.took >= move_from)
        .max_by_key(|x| x.took)
        .map(|x| {
            json!({
                "took_ms": round2(ms(x.took)),
                "attempts": x.attempts,
                "started_after_hold_ms": round2(ms(x.started) - held_at),
                "last_attempt_after_hold_ms": round2(ms(x.last_attempt) - held_at),
                "last_begin_ms": round2(ms(x.last_begin)),
                "acknowledged_after_hold_ms": round2(ms(x.started + x.took) - held_at),
            })
        })
        .unwrap_or(serde_json::Value::Null);
    Ok(RunFigures {
        ours_ms: during.last().copied().unwrap_or(f64::NAN),
        baseline_ms,
        move_s: (move_to - move_from).as_secs_f64(),
        lost_writes: lost,
        acknowledged: written.writes.len(),
        during_move: during.len(),
        failed_attempts: written.failed_attempts,
        mover_p50_ms: percentile(&during, 0.5),
        other_p99_ms: percentile(&other_during, 0.99),
        other_p99_idle_ms: percentile(&other_idle, 0.99),
        other_during_move: other_during.len(),
        cutover,
        longest,
    })
}

/// Rows of the moved tenant on its placement, through its own transaction.
async fn count_through(tx: &mut tenancy_sdk::TenantTx) -> Result<u64> {
    let mut n = 0u64;
    for t in TABLES {
        let sql = format!("SELECT count(*) FROM invoicing.{t}");
        let r: i64 = tx.query_one(sql.as_str(), &[]).await?.get(0);
        n += u64::try_from(r).unwrap_or(0);
    }
    Ok(n)
}

/// The offline move of `tenant` into the (empty, migrated) dedicated database of
/// `spare`: every table copied with binary COPY, then the catalog pointed at it. Returns
/// how long the tenant's writes would be blocked (ms).
async fn offline_move(
    cluster: &Cluster,
    owner: &Client,
    shared: &Client,
    tenant: TenantId,
    spare: TenantId,
) -> Result<f64> {
    let db = tenancy_catalog::get_tenant(owner, spare)
        .await?
        .database_name
        .context("the spare tenant has no database")?;
    let target = cluster.connect(&db).await?;
    let started = Instant::now();
    for t in TABLES {
        let out = shared
            .copy_out(&format!(
                "COPY (SELECT * FROM invoicing.{t} WHERE tenant_id = '{}') TO STDOUT (FORMAT binary)",
                tenant.as_uuid()
            ))
            .await
            .with_context(|| format!("exporting {t}"))?;
        let sink = target
            .copy_in(&format!("COPY invoicing.{t} FROM STDIN (FORMAT binary)"))
            .await
            .with_context(|| format!("loading {t}"))?;
        futures_util::pin_mut!(out);
        futures_util::pin_mut!(sink);
        while let Some(chunk) = out.next().await {
            sink.send(chunk?).await?;
        }
        sink.finish().await?;
    }
    owner
        .execute(
            "UPDATE tenancy_catalog.tenants SET placement = 'dedicated', database_name = $2, updated_at = now()
              WHERE id = $1",
            &[&tenant.as_uuid(), &db],
        )
        .await
        .context("switching the catalog")?;
    let took = ms(started.elapsed());
    anyhow::ensure!(
        count(&target, tenant).await? == ROWS,
        "the offline move loaded a different number of rows"
    );
    Ok(took)
}
