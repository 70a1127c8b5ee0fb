//! The `tenancy-demo` binary: starts a private PostgreSQL cluster, creates two tenants and
//! shows that each sees only its own rows, through the SDK and through the example
//! application (examples/invoicing) served next to it. A binary of its own so that the
//! product binary `tenancy` links neither the example application nor the cluster
//! harness it needs.

use clap::Parser;

mod demo;

#[derive(Parser, Debug)]
#[command(
    name = "tenancy-demo",
    version,
    about = "Start a private PostgreSQL cluster, create two tenants and show that each sees only \
             its own rows, even when it tries not to"
)]
struct Cli {
    #[command(flatten)]
    args: demo::DemoArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Warnings and errors on stderr; `TENANCY_LOG` filters as for `tenancy`.
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANCY_LOG")
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // The multi-threaded runtime with I/O and timers.
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(demo::run(cli.args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let e: &(dyn std::error::Error + 'static) = e.as_ref();
            eprintln!("error: {}", tenancy_conn::error_text(e));
            std::process::ExitCode::from(1)
        }
    }
}
