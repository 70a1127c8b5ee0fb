//! The `tenancy` binary. Thin: argument parsing and output only; the work is in the
//! library crates.

use clap::{Parser, Subcommand};

mod bootstrap;
mod demo;
mod migrate;
mod serve;
mod tenants;

#[derive(Parser, Debug)]
#[command(
    name = "tenancy",
    version,
    about = "Multi-tenant foundation for SaaS on PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a private PostgreSQL cluster, create two tenants and show that each sees only
    /// its own rows, even when it tries not to.
    Demo(demo::DemoArgs),
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
    /// Create, list, show, suspend, resume and delete tenants. Exit 0: done; 2: could not
    /// run or refused.
    Tenants(tenants::TenantsArgs),
    /// Apply the app's migrations to every pooled cluster, schema tenant and dedicated
    /// database (--dry-run, --check-drift). Exit 0: all current; 1: failures or drift;
    /// 2: could not run.
    Migrate(migrate::MigrateArgs),
}

#[derive(clap::Args, Debug)]
struct CheckCommand {
    #[command(flatten)]
    args: tenancy_check::CheckArgs,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
            Command::Demo(args) => match demo::run(args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            },
            // 2: could not run (as `check` and `migrate`).
            Command::Serve(args) => match serve::run(args).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e:#}");
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
                    eprintln!("error: {e:#}");
                    2
                }
            },
            Command::Migrate(args) => migrate::run(args).await,
            Command::Bootstrap(args) => bootstrap::run(args).await,
            Command::Check(c) => {
                let mut out = std::io::stdout();
                tenancy_check::run(&c.args, &mut out).await as u8
            }
        }
    });
    std::process::ExitCode::from(code)
}
