//! `config_propagation`: a flag changed through the HTTP API, until a second OS process
//! evaluating in-process sees the new value.
//!
//! Setup: a private cluster with tenancy's roles and catalog, one tenant, the
//! configuration routes served on 127.0.0.1, and a child process (this same executable,
//! in watcher mode, see [`child_mode`]) holding a `ConfigClient` as the configuration
//! reader role and printing the flag's variant after every snapshot swap. Each sample: note the time,
//! `PUT /v1/config/flags/…` flipping the default variant, wait for the child's line with
//! the new variant. There is no peer to compare with; the baseline is the target
//! (p99 < 50 ms), and `ratio` = target / ours (> 1 means within target).

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_config_service::dns::{StaticResolver, TxtResolver};
use tenancy_config_service::{ConfigState, Store};
use tenancy_core::{ContextKey, Placement, TenantId};
use tenancy_pg::Cluster;
use tenancy_sdk::bootstrap::{self, CONFIG_READER_ROLE, OWNER_ROLE};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::report::Report;
use crate::setup::on_ephemeral_cluster;
use crate::stats::{loadavg, median, percentile};

/// Environment variable that turns this executable into the watcher child.
pub(crate) const CHILD_ENV: &str = "TENANCY_BENCH_CONFIG_WATCHER";
const FLAG: &str = "bench-propagation";
const CHANGES_PER_RUN: usize = 100;

/// When this process was started as the watcher child, runs it and returns its result;
/// otherwise returns `None`. Call it first thing in `main`.
pub(crate) async fn child_mode() -> Option<Result<()>> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    Some(watch(&spec).await)
}

async fn watch(spec: &str) -> Result<()> {
    let (dsn, tenant) = spec
        .rsplit_once('|')
        .context("watcher spec is DSN|TENANT")?;
    let tenant: TenantId = tenant.parse()?;
    let client = ConfigClient::connect(
        dsn.parse::<tokio_postgres::Config>()?,
        ClientOptions::default(),
    )
    .await
    .context("watcher: loading the configuration")?;
    let mut changes = client.subscribe();
    let variant = |c: &ConfigClient| {
        c.variant(tenant, FLAG)
            .map_or_else(|| "-".to_owned(), |(v, _)| v.to_string())
    };
    // Plain blocking stdout: one short line per change, flushed at once.
    let say = |line: String| -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    say(format!("ready {}", variant(&client)))?;
    while changes.changed().await.is_ok() {
        say(format!("change {}", variant(&client)))?;
    }
    Ok(())
}

fn key() -> Result<ContextKey> {
    Ok(ContextKey::from_hex(
        "bench".parse()?,
        "3f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f701",
    )?)
}

/// One HTTP/1.1 request on a fresh connection; returns the status code.
async fn http_put(addr: std::net::SocketAddr, path: &str, body: &serde_json::Value) -> Result<u16> {
    let body = serde_json::to_vec(body)?;
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nx-tenancy-actor: bench\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("reading the HTTP status")?;
    Ok(status)
}

async fn next(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) -> Result<String> {
    match tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await {
        Ok(Ok(Some(l))) => Ok(l),
        Ok(Ok(None)) => bail!("the watcher process exited"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("the watcher process said nothing for 10 s"),
    }
}

fn flag(default: &str) -> serde_json::Value {
    json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": default, "off_variant": "off"})
}

/// Runs the benchmark `runs` times and writes `target/bench/config_propagation.json`.
pub(crate) async fn run(runs: usize) -> Result<()> {
    on_ephemeral_cluster(async |cluster| measure(cluster, runs).await).await
}

async fn measure(cluster: &Cluster, runs: usize) -> Result<()> {
    let db = "config_bench";
    let su = cluster.connect("postgres").await?;
    su.batch_execute(&format!("CREATE DATABASE {db}")).await?;
    let su = cluster.connect(db).await?;
    bootstrap::bootstrap_cluster(&su).await?;
    bootstrap::bootstrap_database(&su, db).await?;
    let mut owner = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, db)).await?;
    bootstrap::install_runtime(&owner, &key()?).await?;
    tenancy_catalog::migrate(&mut owner).await?;
    tenancy_catalog::add_region(&owner, &"eu-west".parse()?, "Europe West").await?;
    tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "eu1".into(),
            region: "eu-west".parse()?,
            location: tenancy_catalog::ClusterLocation {
                host: "localhost".into(),
                port: 5432,
                dbname: db.into(),
            },
            capacity: 100,
        },
    )
    .await?;
    let tenant = tenancy_catalog::create_tenant(
        &mut owner,
        &NewTenant {
            id: None,
            slug: "bench-tenant".parse()?,
            display_name: "Bench".into(),
            plan: "pro".parse()?,
            region: "eu-west".parse()?,
            placement: Placement::Pooled,
        },
        "bench",
    )
    .await?
    .id;

    let store = Store::new(cluster.config_as(OWNER_ROLE, db), 4)?;
    let client = ConfigClient::connect(
        cluster.config_as(CONFIG_READER_ROLE, db),
        ClientOptions::default(),
    )
    .await?;
    let resolver: Arc<dyn TxtResolver> = Arc::new(StaticResolver::new());
    let router = tenancy_config_service::routes(ConfigState {
        store,
        client,
        resolver,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    anyhow::ensure!(
        http_put(addr, &format!("/v1/config/flags/{FLAG}"), &flag("off")).await? == 200,
        "creating the flag failed"
    );

    let spec = format!("{}|{tenant}", cluster.url_as(CONFIG_READER_ROLE, db));
    let mut child = Command::new(std::env::current_exe()?)
        .arg("config_propagation")
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the watcher process")?;
    let mut lines = BufReader::new(child.stdout.take().context("watcher stdout")?).lines();
    let ready = next(&mut lines).await?;
    anyhow::ensure!(
        ready == "ready off",
        "unexpected first line from the watcher: {ready}"
    );

    let (mut p50s, mut p99s, mut all) = (Vec::new(), Vec::new(), Vec::new());
    let mut state = "off";
    for r in 0..runs {
        let mut ms = Vec::with_capacity(CHANGES_PER_RUN);
        for _ in 0..CHANGES_PER_RUN {
            let want = if state == "off" { "on" } else { "off" };
            let started = Instant::now();
            let status = http_put(addr, &format!("/v1/config/flags/{FLAG}"), &flag(want)).await?;
            anyhow::ensure!(status == 200, "the API answered {status}");
            let expected = format!("change {want}");
            while next(&mut lines).await? != expected {}
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
            state = want;
            // Spread the changes a little, as real edits are.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  run {}/{runs}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            r + 1,
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            percentile(&ms, 1.0)
        );
        p50s.push(percentile(&ms, 0.5));
        p99s.push(percentile(&ms, 0.99));
        all.extend(ms);
    }
    let _ = child.kill().await;
    all.sort_by(f64::total_cmp);
    let ours = median(&p99s);
    let target = 50.0;
    let report = Report {
        name: "config_propagation".into(),
        unit: "ms from API PUT to the new value in another process, p99 (lower is better; ratio = target / ours, > 1 means within target)".into(),
        ours,
        baseline: target,
        baseline_name: "target p99 < 50 ms (no peer measured)".into(),
        ratio: target / ours,
        params: json!({
            "runs": runs,
            "loadavg_at_end": loadavg(),
            "cpus": std::thread::available_parallelism().map_or(0, usize::from),
            "changes_per_run": CHANGES_PER_RUN,
            "p50_ms_per_run": p50s,
            "p99_ms_per_run": p99s,
            "p50_ms_all": percentile(&all, 0.5),
            "p99_ms_all": percentile(&all, 0.99),
            "max_ms_all": percentile(&all, 1.0),
            "path": "HTTP PUT → store transaction with NOTIFY → LISTEN in the child → targeted reload → ArcSwap → child prints → parent reads the pipe",
            "coalesce_ms": ClientOptions::default().coalesce.as_secs_f64() * 1000.0,
        }),
    };
    let path = report.write()?;
    println!(
        "config_propagation: p99 {ours:.2} ms (target < {target} ms) → {}",
        path.display()
    );
    Ok(())
}
