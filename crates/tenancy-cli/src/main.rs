//! The `tenancy` binary. Thin: argument parsing and output only; the work is in the
//! library crates.

use clap::{Parser, Subcommand};

mod demo;

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
        }
    });
    std::process::ExitCode::from(code)
}
