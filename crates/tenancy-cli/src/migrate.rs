//! `tenancy migrate`: the application's migrations across every pooled cluster, schema
//! tenant and dedicated database registered in the catalog. Connects like
//! `tenancy serve`: the configuration file and `TENANCY_…`/`DATABASE_URL` variables.
//!
//! Exit codes: 0 everything is at the latest version (or no drift); 1 some target failed,
//! the run stopped early, or drift was found; 2 it could not run (bad input, no catalog).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use tenancy_migrate::{Event, MigrationSet, Migrator, Options, Outcome, Plan, Summary};
use tenancy_provision::{ClusterAccess, Login};

/// Arguments of `tenancy migrate`.
#[derive(clap::Args, Debug)]
pub(crate) struct MigrateArgs {
    /// Configuration file (TOML) of `tenancy serve`; TENANCY_… variables override it.
    #[arg(long, env = "TENANCY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory of the app's NNNN_name.sql migrations (default: app_migrations_dir of
    /// the configuration, or TENANCY_APP_MIGRATIONS_DIR).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the plan (waves, targets and their versions) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compare every target's schema with a reference migrated to the same version;
    /// exit 1 when any differs.
    #[arg(long, conflicts_with = "dry_run")]
    pub check_drift: bool,
    /// JSON lines on stdout (the default when stdout is not a terminal).
    #[arg(long)]
    pub json: bool,
    /// Migrate this many tenants first; stop if any of them fails.
    #[arg(long, default_value_t = 0)]
    pub canary: usize,
    /// Stop taking new targets after this many failures.
    #[arg(long, default_value_t = 10)]
    pub max_failures: usize,
    /// Connections per cluster.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Targets pipelined per connection (each in its own transaction).
    #[arg(long, default_value_t = 16)]
    pub pipeline: usize,
    /// Targets a connection migrates before it is replaced.
    #[arg(long, default_value_t = 500)]
    pub recycle_after: usize,
    /// lock_timeout of migration sessions, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub lock_timeout_ms: u64,
    /// statement_timeout of migration sessions (bounds one target), in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    pub statement_timeout_ms: u64,
}

/// One line on stderr: the signed-context implementation of the catalog database. Silent
/// when it cannot connect (the migration run reports that itself).
async fn report_context_impl(catalog: &tenancy_conn::PgConfig) {
    let Ok(client) = tenancy_conn::connect(catalog).await else {
        return;
    };
    if let Ok(line) = tenancy_sdk::bootstrap::describe_context_impl(&client).await {
        eprintln!("tenant context of the catalog database: {line}");
    }
}

/// Completes at the first SIGINT (Ctrl-C) or SIGTERM: the run then starts no new target,
/// lets the targets in flight finish, records them in the ledger and prints its summary.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let int = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let name = tokio::select! {
        _ = term => "SIGTERM",
        _ = int => "SIGINT",
    };
    eprintln!(
        "{name}: finishing the targets in flight and recording them; no new target is started"
    );
}

/// A failure to run at all (exit 2), as opposed to targets that failed (exit 1).
fn cannot_run(msg: impl std::fmt::Display) -> u8 {
    eprintln!("error: {msg}");
    2
}

/// Runs `tenancy migrate`; returns the exit code.
pub(crate) async fn run(args: MigrateArgs) -> u8 {
    let opts = Options {
        concurrency: args.concurrency,
        pipeline: args.pipeline,
        recycle_after: args.recycle_after,
        lock_timeout: Duration::from_millis(args.lock_timeout_ms),
        statement_timeout: Duration::from_millis(args.statement_timeout_ms),
        canary: args.canary,
        max_failures: args.max_failures,
    };
    if let Err(e) = opts.validate() {
        return cannot_run(e);
    }
    let config = match tenancy_control::ControlConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return cannot_run(format!("loading the configuration: {e}")),
    };
    let Some(url) = config.database_url.as_ref() else {
        return cannot_run(
            "no catalog database configured: set DATABASE_URL (or database_url in the file given with --config) to the catalog that `tenancy serve` uses",
        );
    };
    let mut catalog = match tenancy_conn::PgConfig::parse(url.expose_secret()) {
        Ok(c) => c,
        Err(e) => return cannot_run(format!("parsing the catalog database URL: {e}")),
    };
    // As `tenancy serve`: the owner role's catalog; a server `tenancy bootstrap` has not
    // set up is named with the command to run.
    if catalog.pg().get_user().is_none() {
        catalog.pg_mut().user(tenancy_sdk::bootstrap::OWNER_ROLE);
    }
    if catalog.pg().get_password().is_none()
        && catalog.pg().get_user() == Some(tenancy_sdk::bootstrap::OWNER_ROLE)
    {
        if let Some(p) = &config.owner_password {
            catalog.pg_mut().password(p.expose_secret().as_bytes());
        }
    }
    match tenancy_control::connect_catalog(&catalog).await {
        Ok(client) => {
            // The catalog at the version this binary needs (tenancy serve and tenancy
            // bootstrap migrate it; -1: no catalog at all).
            let at = client
                .query_one(
                    "SELECT CASE WHEN to_regclass('tenancy_catalog.schema_migrations') IS NULL THEN -1
                            ELSE (SELECT coalesce(max(version), 0) FROM tenancy_catalog.schema_migrations) END",
                    &[],
                )
                .await
                .map(|r| r.get::<_, i32>(0));
            let needs = tenancy_catalog::MIGRATIONS.last().map_or(0, |m| m.version);
            match at {
                Ok(-1) => {
                    return cannot_run(
                        "the catalog database has no tenancy catalog: run `tenancy bootstrap --database-url …` on it (or start `tenancy serve` once), then run tenancy migrate again",
                    )
                }
                Ok(v) if v < needs => {
                    return cannot_run(format!(
                        "the catalog is at version {v} and this tenancy needs {needs}: run `tenancy bootstrap --database-url …` (or start this version of `tenancy serve` once) to migrate it, then run tenancy migrate again"
                    ))
                }
                _ => {}
            }
        }
        Err(e) => return cannot_run(crate::error_text(&e)),
    }
    let Some(dir) = args.dir.or(config.app_migrations_dir.clone()) else {
        return cannot_run(
            "no migrations directory: pass --dir DIR (or set app_migrations_dir / TENANCY_APP_MIGRATIONS_DIR)",
        );
    };
    let set = match MigrationSet::from_dir(&dir) {
        Ok(s) => s,
        Err(e) => return cannot_run(tenancy_conn::error_text(&e)),
    };
    let login = |user: &str, password: &Option<secrecy::SecretString>| Login {
        user: user.to_owned(),
        password: password.clone(),
    };
    let access = ClusterAccess {
        admin: login(&config.cluster_admin_user, &config.cluster_admin_password),
        owner: login(tenancy_sdk::bootstrap::OWNER_ROLE, &config.owner_password),
        runtime: login(
            tenancy_sdk::bootstrap::RUNTIME_ROLE,
            &config.runtime_password,
        ),
        // Tenant clusters are trusted as the catalog's URL says (same sslmode, CA and
        // client certificate), as `tenancy serve` does.
        tls: catalog.tls().clone(),
    };
    report_context_impl(&catalog).await;
    let migrator = Migrator::new(catalog, access, set);
    let json = args.json || !std::io::stdout().is_terminal();

    if args.check_drift {
        return match migrator.check_drift().await {
            Err(e) => cannot_run(tenancy_conn::error_text(&e)),
            Ok(report) => {
                if json {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                } else {
                    for (label, v) in &report.behind {
                        println!("behind  {label}: version {v} (run tenancy migrate first)");
                    }
                    for d in &report.drifted {
                        println!(
                            "drift   {} ({} {}, schema {}):",
                            d.label, d.kind, d.target_id, d.schema
                        );
                        for diff in &d.differences {
                            println!("          {}: {}", diff.object, describe(&diff.change));
                        }
                    }
                    println!(
                        "{} targets compared with version {}: {} differ, {} behind",
                        report.checked,
                        report.version,
                        report.drifted.len(),
                        report.behind.len()
                    );
                }
                u8::from(!report.drifted.is_empty())
            }
        };
    }

    let plan = match migrator.plan(opts.canary).await {
        Ok(p) => p,
        Err(e) => return cannot_run(tenancy_conn::error_text(&e)),
    };
    if args.dry_run {
        print_plan(&plan, json);
        return 0;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pending = plan.pending() as u64;
    let printer = tokio::spawn(async move {
        let bar = (!json && pending > 0).then(|| {
            let b = indicatif::ProgressBar::new(pending);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} targets ({per_sec}, eta {eta}) {msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        while let Some(ev) = rx.recv().await {
            match (&bar, ev) {
                (Some(b), Event::Target(r)) => {
                    if let Outcome::Failed(e) = &r.outcome {
                        b.println(format!("failed  {} ({}): {e}", r.label, r.kind));
                    }
                    b.inc(1);
                }
                (Some(b), Event::Wave { name, targets }) => {
                    b.set_message(format!("wave {name} ({targets})"))
                }
                (Some(b), Event::Stopped(reason)) => b.println(format!("stopping: {reason}")),
                (None, ev) => println!("{}", event_json(&ev)),
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    });
    let result = migrator
        .execute_until(&plan, &opts, Some(tx), interrupted())
        .await;
    let _ = printer.await;
    match result {
        Err(e) => cannot_run(tenancy_conn::error_text(&e)),
        Ok(summary) => {
            print_summary(&summary, json);
            u8::from(!summary.complete())
        }
    }
}

fn describe(c: &tenancy_migrate::drift::Change) -> String {
    use tenancy_migrate::drift::Change;
    match c {
        Change::Missing { expected } => format!("missing (expected {expected})"),
        Change::Added { found } => format!("added ({found})"),
        Change::Changed { expected, found } => {
            format!("changed: expected {expected}, found {found}")
        }
    }
}

fn event_json(ev: &Event) -> serde_json::Value {
    match ev {
        Event::Wave { name, targets } => {
            serde_json::json!({"event": "wave", "wave": name, "targets": targets})
        }
        Event::Stopped(reason) => {
            serde_json::json!({"event": "stopped", "reason": reason.to_string()})
        }
        Event::Target(r) => {
            let (outcome, error) = match &r.outcome {
                Outcome::Migrated => ("migrated", None),
                Outcome::CaughtUp => ("caught_up", None),
                Outcome::Failed(e) => ("failed", Some(e.as_str())),
            };
            serde_json::json!({
                "event": "target", "target_id": r.target_id, "label": r.label, "kind": r.kind.as_str(),
                "from": r.from, "to": r.to, "outcome": outcome, "error": error,
                "ms": r.duration.as_secs_f64() * 1000.0,
            })
        }
    }
}

fn print_plan(plan: &Plan, json: bool) {
    if json {
        for w in &plan.waves {
            for t in &w.targets {
                println!(
                    "{}",
                    serde_json::json!({"event": "plan", "wave": w.name, "target_id": t.target_id, "label": t.label,
                        "kind": t.kind.as_str(), "from": t.version, "to": plan.latest, "last_error": t.error})
                );
            }
        }
        println!(
            "{}",
            serde_json::json!({"event": "plan_summary", "latest": plan.latest, "targets": plan.total_targets, "pending": plan.pending()})
        );
        return;
    }
    for w in &plan.waves {
        println!("wave {} ({} targets):", w.name, w.targets.len());
        for t in &w.targets {
            let err = t
                .error
                .as_deref()
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default();
            println!(
                "  {:<9} {:<40} {} -> {}{err}",
                t.kind.as_str(),
                t.label,
                t.version,
                plan.latest
            );
        }
    }
    println!(
        "{} of {} targets would be migrated to version {} (dry run: nothing changed)",
        plan.pending(),
        plan.total_targets,
        plan.latest
    );
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "summary", "latest": s.latest, "targets": s.targets, "skipped": s.skipped,
                "migrated": s.migrated, "caught_up": s.caught_up, "failed": s.failed, "not_run": s.not_run,
                "stopped": s.stopped.map(|r| r.to_string()), "elapsed_s": s.elapsed.as_secs_f64(),
                "slowest_ms": s.slowest.as_secs_f64() * 1000.0})
        );
        return;
    }
    for f in &s.failures {
        if let Outcome::Failed(e) = &f.outcome {
            println!("failed   {} ({} {}): {e}", f.label, f.kind, f.target_id);
        }
    }
    println!(
        "version {}: {} migrated, {} caught up, {} already current, {} failed, {} not run, of {} targets in {} (slowest target {:.1} ms)",
        s.latest,
        s.migrated,
        s.caught_up,
        s.skipped,
        s.failed,
        s.not_run,
        s.targets,
        tenancy_migrate::secs(s.elapsed),
        s.slowest.as_secs_f64() * 1000.0
    );
    if let Some(r) = s.stopped {
        println!(
            "stopped early: {r}; fix the failures and run again (the run resumes where it stopped)"
        );
    }
}
