//! Stand-alone runner of `tenancy check` until the `tenancy` binary wires it in:
//! `cargo run -q -p tenancy-check --example check -- --database-url URL [options]`.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "tenancy-check",
    about = "Audit a PostgreSQL database for RLS tenant-isolation failures"
)]
struct Cli {
    #[command(flatten)]
    args: tenancy_check::CheckArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    let code = tenancy_check::run(&cli.args, &mut out).await;
    std::process::exit(code);
}
