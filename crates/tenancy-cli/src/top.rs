//! `tenancy top`: a live terminal view of the tenants using the most database time, from
//! a running `tenancy serve` (`GET /v1/insights/tenants`), redrawn in place every
//! interval until Ctrl-C. Without a terminal (or with `--once`) it prints one frame.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use crossterm::{cursor, terminal, QueueableCommand};
use secrecy::SecretString;
use serde::Deserialize;

/// Arguments of `tenancy top`.
#[derive(clap::Args, Debug)]
pub(crate) struct TopArgs {
    /// Address of `tenancy serve` (`http://host:port`; plain HTTP: loopback or a tunnel).
    #[arg(long, env = "TENANCY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An admin token of the server.
    #[arg(long, env = "TENANCY_ADMIN_TOKEN", hide_env_values = true)]
    token: SecretString,
    /// Only this cluster.
    #[arg(long)]
    cluster: Option<String>,
    /// Tenants shown (1 to 1000).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Share of a cluster's database time from which a tenant is flagged noisy (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    noisy_share: f64,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Print one frame and exit.
    #[arg(long)]
    once: bool,
}

#[derive(Debug, Deserialize)]
struct Report {
    window_seconds: u64,
    noisy_share: f64,
    clusters: Vec<ClusterRow>,
    tenants: Vec<TenantRow>,
}

#[derive(Debug, Deserialize)]
struct ClusterRow {
    cluster: String,
    db_time_ms: f64,
    statements: u64,
    error_rate: f64,
    sources: u64,
    noisy_tenants: u64,
}

#[derive(Debug, Deserialize)]
struct TenantRow {
    tenant: String,
    cluster: String,
    db_time_ms: f64,
    share: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    statements: u64,
    error_rate: f64,
    refusals: u64,
    pool_wait_ms: f64,
    noisy: bool,
}

/// Where to connect and what to ask.
struct Target {
    authority: String,
    path: String,
}

fn target(args: &TopArgs) -> anyhow::Result<Target> {
    let authority = crate::client::authority(&args.url, "tenancy top")?;
    if !(1..=1000).contains(&args.limit) {
        bail!("--limit {}: must be 1 to 1000", args.limit);
    }
    if !(args.noisy_share > 0.0 && args.noisy_share <= 1.0) {
        bail!(
            "--noisy-share {}: must be above 0 and at most 1",
            args.noisy_share
        );
    }
    if !(args.interval >= 0.1 && args.interval <= 3600.0) {
        bail!("--interval {}: must be 0.1 to 3600 seconds", args.interval);
    }
    let mut path = format!(
        "/v1/insights/tenants?limit={}&noisy_share={}",
        args.limit, args.noisy_share
    );
    if let Some(c) = &args.cluster {
        if !tenancy_insights::is_cluster_name(c) {
            bail!("--cluster {c:?}: a cluster name is 1 to 63 characters a-z, 0-9, '_' or '-', starting with a letter");
        }
        let _ = write!(path, "&cluster={c}");
    }
    Ok(Target { authority, path })
}

async fn fetch(t: &Target, token: &SecretString) -> anyhow::Result<Report> {
    let body = crate::client::get(&t.authority, &t.path, token).await?;
    serde_json::from_slice(&body).context("reading the report")
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// One frame, one line per entry.
fn frame(args: &TopArgs, r: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    let now = time::OffsetDateTime::now_utc();
    lines.push(format!(
        "tenancy top  {}  window {} s  noisy at {:.0}% of a cluster  {:02}:{:02}:{:02} UTC",
        args.url,
        r.window_seconds,
        r.noisy_share * 100.0,
        now.hour(),
        now.minute(),
        now.second()
    ));
    lines.push(String::new());
    lines.push(format!(
        "{:<20} {:>12} {:>10} {:>7} {:>8} {:>6}",
        "CLUSTER", "DB TIME ms", "STMTS", "ERR%", "SOURCES", "NOISY"
    ));
    if r.clusters.is_empty() {
        lines.push("(no snapshots in the window: is an application pushing?)".into());
    }
    for c in &r.clusters {
        lines.push(format!(
            "{:<20} {:>12.1} {:>10} {:>6.2}% {:>8} {:>6}",
            c.cluster,
            c.db_time_ms,
            c.statements,
            c.error_rate * 100.0,
            c.sources,
            c.noisy_tenants
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:<36} {:<14} {:>11} {:>6} {:>8} {:>8} {:>8} {:>6} {:>5} {:>8}  ",
        "TENANT",
        "CLUSTER",
        "DB ms",
        "SHARE",
        "P50 ms",
        "P99 ms",
        "STMTS",
        "ERR%",
        "REFUS",
        "WAIT ms"
    ));
    for t in &r.tenants {
        lines.push(format!(
            "{:<36} {:<14} {:>11.1} {:>5.1}% {:>8} {:>8} {:>8} {:>5.1}% {:>5} {:>8.1}  {}",
            t.tenant,
            t.cluster,
            t.db_time_ms,
            t.share * 100.0,
            opt_ms(t.p50_ms),
            opt_ms(t.p99_ms),
            t.statements,
            t.error_rate * 100.0,
            t.refusals,
            t.pool_wait_ms,
            if t.noisy { "NOISY" } else { "" }
        ));
    }
    lines
}

/// Draws `lines` from the top-left corner, clearing what the previous frame left.
fn draw(out: &mut impl Write, lines: &[String]) -> std::io::Result<()> {
    // A terminal that reports no size (a pseudo-terminal nobody sized) gets 160 x 50.
    let (width, height) = match terminal::size() {
        Ok((w, h)) if w > 0 && h > 0 => (w, h),
        _ => (160, 50),
    };
    out.queue(cursor::MoveTo(0, 0))?;
    for (i, line) in lines.iter().take(usize::from(height)).enumerate() {
        if i > 0 {
            out.write_all(b"\r\n")?;
        }
        let clipped: String = line.chars().take(usize::from(width)).collect();
        out.write_all(clipped.as_bytes())?;
        out.queue(terminal::Clear(terminal::ClearType::UntilNewLine))?;
    }
    out.queue(terminal::Clear(terminal::ClearType::FromCursorDown))?;
    out.flush()
}

/// Runs `tenancy top`. Exit 0: stopped (Ctrl-C) or printed once; 2: could not run.
pub(crate) async fn run(args: TopArgs) -> u8 {
    match run_inner(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", crate::error_text(&e));
            2
        }
    }
}

async fn run_inner(args: TopArgs) -> anyhow::Result<()> {
    let t = target(&args)?;
    let mut out = std::io::stdout();
    if args.once || !out.is_terminal() {
        let report = fetch(&t, &args.token).await?;
        for line in frame(&args, &report) {
            writeln!(out, "{}", line.trim_end())?;
        }
        return Ok(());
    }
    // The first answer decides whether the server can be used at all.
    let mut report = fetch(&t, &args.token).await?;
    out.queue(terminal::EnterAlternateScreen)?
        .queue(cursor::Hide)?;
    let every = Duration::from_secs_f64(args.interval);
    // A failed refresh keeps the last frame and says why on its first line.
    let mut failure: Option<String> = None;
    let result: anyhow::Result<()> = async {
        loop {
            let mut lines = frame(&args, &report);
            if let Some(f) = &failure {
                lines[0] = format!("refresh failed: {f}");
            }
            draw(&mut out, &lines)?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
            match fetch(&t, &args.token).await {
                Ok(r) => {
                    report = r;
                    failure = None;
                }
                Err(e) => failure = Some(crate::error_text(&e)),
            }
        }
    }
    .await;
    let mut out = std::io::stdout();
    out.queue(cursor::Show)?
        .queue(terminal::LeaveAlternateScreen)?
        .flush()?;
    result
}
