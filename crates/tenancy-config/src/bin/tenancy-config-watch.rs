//! Watches one flag of one tenant and prints a line every time the configuration
//! snapshot changes: the second OS process of the propagation tests and benchmark.
//!
//! Usage: `tenancy-config-watch DSN TENANT FLAG`
//! (DSN in libpq key=value form, e.g. `host=/tmp/pg port=5432 user=tenancy_config_reader dbname=app`).
//!
//! Output, one line each: `ready version=V variant=X`, then
//! `change version=V variant=X` after every swap, and `stale` / `fresh` when the
//! snapshot's freshness changes.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_core::TenantId;

fn variant(client: &ConfigClient, tenant: TenantId, flag: &str) -> String {
    client
        .variant(tenant, flag)
        .map_or_else(|| "-".to_owned(), |(v, _)| v.to_string())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dsn, tenant, flag] = args.as_slice() else {
        eprintln!("usage: tenancy-config-watch DSN TENANT FLAG");
        return ExitCode::from(2);
    };
    let config: tenancy_conn::PgConfig = match dsn.parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bad DSN: {e}");
            return ExitCode::from(2);
        }
    };
    let tenant: TenantId = match tenant.parse() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let opts = ClientOptions {
        max_staleness: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let client = match ConfigClient::connect(config, opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot load the configuration: {e}");
            return ExitCode::from(1);
        }
    };
    let mut changes = client.subscribe();
    say(&format!(
        "ready version={} variant={}",
        client.snapshot().version(),
        variant(&client, tenant, flag)
    ));
    let mut stale = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() {
                    return ExitCode::SUCCESS;
                }
                say(&format!(
                    "change version={} variant={}",
                    client.snapshot().version(),
                    variant(&client, tenant, flag)
                ));
            }
            _ = tick.tick() => {
                let now_stale = client.status().stale;
                if now_stale != stale {
                    stale = now_stale;
                    say(if stale { "stale" } else { "fresh" });
                }
            }
        }
    }
}
