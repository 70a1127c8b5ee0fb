//! The `tenancy` binary. Thin: argument parsing and output only; the work is in the
//! library crates.

use clap::{Parser, Subcommand};

mod audit;
mod bootstrap;
mod client;
mod keys;
mod legacy_import;
mod migrate;
mod report;
mod serve;
mod tenants;
mod top;
mod transfer;

#[derive(Parser, Debug)]
#[command(
    name = "tenancy",
    version,
    about = "Multi-tenant foundation for SaaS on PostgreSQL"
)]
struct Cli {
    /// Log format on stderr: json (one object a line) or text. Default: json for `serve`
    /// when stderr is not a terminal, text otherwise; colours only on a terminal.
    #[arg(long, global = true, env = "TENANCY_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// One JSON object a line (timestamp, level, target, message, fields, spans).
    Json,
    /// Human-readable lines.
    Text,
}

/// Logs on stderr, and traces over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. `TENANCY_LOG` filters (`info`,
/// `tenancy_provision=debug`, …); the default is `info` for `serve` (lifecycle events and
/// one access line per request) and `warn` for the other commands. Returns the trace
/// provider, to flush at exit.
fn init_telemetry(
    format: Option<LogFormat>,
    serving: bool,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let terminal = std::io::stderr().is_terminal();
    let default = if serving {
        "info,tokio_postgres=warn"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
        .unwrap_or_else(|_| default.into());
    let format = format.unwrap_or(if serving && !terminal {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let (provider, otlp_error) = otlp_provider();
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer().with_tracer(p.tracer("tenancy"))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(terminal);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    match format {
        LogFormat::Json => registry
            .with(fmt.json().with_current_span(true).with_span_list(false))
            .init(),
        LogFormat::Text => registry.with(fmt).init(),
    }
    if let Some(e) = otlp_error {
        tracing::warn!(error = %e, "OpenTelemetry export is off: the OTLP exporter could not be built");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/HTTP");
    }
    provider
}

/// The OTLP/HTTP (protobuf) trace exporter when an OTLP endpoint is configured (the
/// standard `OTEL_EXPORTER_OTLP_*` variables; `OTEL_SERVICE_NAME` names the service,
/// `tenancy` by default).
fn otlp_provider() -> (
    Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    Option<String>,
) {
    let set = |v: &str| std::env::var(v).is_ok_and(|v| !v.trim().is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        return (None, None);
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => return (None, Some(e.to_string())),
    };
    let service = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "tenancy".to_owned());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    (Some(provider), None)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Audit a live PostgreSQL database for every known way row-level-security tenant
    /// isolation fails (and, with --probe, try cross-tenant access as the runtime role).
    /// Exit 0: no error finding; 1: at least one; 2: could not run.
    Check(CheckCommand),
    /// Set up an existing PostgreSQL server for tenancy: roles, privileges, schemas, the
    /// signed-context functions, the context key and the catalog. Idempotent; works
    /// without superuser (CREATEROLE and ownership of the database suffice). Exit 0: set
    /// up; 2: could not run or refused (says what to fix).
    Bootstrap(bootstrap::BootstrapArgs),
    /// Run the control-plane API and the provisioning workers (embedded PostgreSQL when
    /// no database is configured). Exit 0: stopped; 2: could not run.
    Serve(serve::ServeArgs),
    /// Create, list, show, suspend, resume, delete, export and import tenants. Exit 0:
    /// done; 2: could not run or refused.
    Tenants(tenants::TenantsArgs),
    /// Import a database of the app's single-tenant era (its tables without tenant_id) as
    /// a new tenant: checked first (--dry-run reports every incompatibility with what to
    /// do), copied in one transaction of the tenant's, verified by counts and checksums;
    /// running it again for the same source finishes or does nothing. Exit 0: imported
    /// or nothing to do; 1: the source does not fit; 2: could not run or failed.
    Import(legacy_import::ImportArgs),
    /// Apply the app's migrations to every pooled cluster, schema tenant and dedicated
    /// database (--dry-run, --check-drift). Exit 0: all current; 1: failures or drift;
    /// 2: could not run.
    Migrate(migrate::MigrateArgs),
    /// Seal, verify and export the tenants' tamper-evident audit logs. verify: exit 0
    /// intact, 1 tampered, 2 could not run.
    Audit(audit::AuditArgs),
    /// Show and rotate a tenant's encryption keys. Exit 0: done; 2: could not run.
    Keys(keys::KeysArgs),
    /// A tenant's signed compliance evidence report from `tenancy serve` (JSON, or one
    /// self-contained HTML page), or `report verify FILE`. Exit 0: written / valid;
    /// 1: invalid (verify); 2: could not run.
    Report(report::ReportArgs),
    /// A live view of the tenants using the most database time (from `tenancy serve`'s
    /// insights), redrawn in place until Ctrl-C. Exit 0: stopped; 2: could not run.
    Top(top::TopArgs),
}

/// An error and its causes on one line, PostgreSQL's message and SQLSTATE included.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let e: &(dyn std::error::Error + 'static) = e.as_ref();
    tenancy_conn::error_text(e)
}

#[derive(clap::Args, Debug)]
struct CheckCommand {
    #[command(flatten)]
    args: tenancy_check::CheckArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let traces = init_telemetry(cli.log_format, matches!(cli.command, Command::Serve(_)));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            // 2: could not run (as `check` and `migrate`).
            Command::Serve(args) => match serve::run(args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {}", error_text(&e));
                    2
                }
            },
            Command::Tenants(args) => match tenants::run(args).await {
                Ok(out) => {
                    use std::io::Write as _;
                    // A closed stdout (`| head`) is not an error.
                    let _ = writeln!(std::io::stdout(), "{out}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {}", error_text(&e));
                    2
                }
            },
            Command::Import(args) => legacy_import::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Bootstrap(args) => bootstrap::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Check(c) => {
                let mut out = std::io::stdout();
                tenancy_check::run(&c.args, &mut out).await as u8
            }
        }
    });
    drop(rt);
    // Spans still buffered are sent before the process exits.
    if let Some(p) = traces {
        if let Err(e) = p.shutdown() {
            eprintln!("warning: flushing OpenTelemetry spans: {e}");
        }
    }
    std::process::ExitCode::from(code)
}
