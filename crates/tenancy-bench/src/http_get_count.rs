//! `http_get_count`: the requests of `http_get`, a fixed number of them, one at a time, on
//! one thread: for counting the application process's CPU instructions per request under
//! valgrind, which is exact and repeatable where requests per second on a shared machine
//! are not. PostgreSQL runs in its own processes, which valgrind does not follow, so the
//! count is the client side alone: HTTP client and server, the layer or its absence, the
//! pool and the driver.
//!
//! Each run prints nothing but a summary; the count per request is the difference of two
//! runs with different numbers of requests divided by that difference, which leaves out
//! start-up, the cluster's set-up and the warm-up (see `scripts/http-get-cost.sh`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http_get::{bare_server, catalog, get_row, ours_server_with, token, HttpClient};
use crate::setup::{Env, ROWS_PER_TENANT};

/// Requests sent before counting starts: every tenant's token verified and cached, every
/// tenant's catalog entry loaded, the pool's connection open and its statements prepared.
const WARMUP: usize = 300;
/// How long the layer's and the router's caches trust an entry here: past the slowest
/// run under valgrind, so no catalog reload falls in the counted requests (with their
/// defaults, seconds, how many would depend on how slow valgrind runs).
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Pause between two warm-ups: the catalog's change listener connects in the background
/// and clears the caches once it listens; under valgrind that can take seconds, and the
/// reloads must not fall in the counted requests.
const SETTLE: Duration = Duration::from_secs(5);

/// Sends `WARMUP` then `requests` GETs of `variant` (`ours`, `bare` or `ours_recording`), one at a time,
/// through a server and client on a current-thread runtime of their own.
pub(crate) async fn run(env: &Env, variant: &str, requests: usize) -> Result<()> {
    if !matches!(variant, "ours" | "bare" | "ours_recording") {
        bail!("http_get_count: --only must be `ours`, `bare` or `ours_recording`, not {variant:?}");
    }
    catalog(env).await?;
    let mut tokens = Vec::new();
    for t in &env.tenants {
        tokens.push((*t, format!("Bearer {}", token(*t)?)));
    }
    let variant = variant.to_owned();
    // One thread: the instructions counted do not depend on how work is spread over
    // worker threads.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the runtime")?;
            rt.block_on(drive(env, &variant, &tokens, requests))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the request thread panicked"))?
    })
}

async fn drive(
    env: &Env,
    variant: &str,
    tokens: &[(uuid::Uuid, String)],
    requests: usize,
) -> Result<()> {
    let base = match variant {
        "bare" => bare_server(env, 1).await?,
        v => ours_server_with(env, 1, Some(CACHE_TTL), v == "ours_recording").await?,
    };
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let send = |i: usize| {
        let (t, auth) = &tokens[i % tokens.len()];
        let id = i64::try_from(i.wrapping_mul(7919) % 1000).unwrap_or(0) % ROWS_PER_TENANT + 1;
        let url = if variant == "bare" {
            format!("{base}/plain/items/{t}/{id}")
        } else {
            format!("{base}/items/{id}")
        };
        get_row(&client, url, auth, *t, id)
    };
    for i in 0..WARMUP {
        send(i).await.context("warming up")?;
    }
    tokio::time::sleep(SETTLE).await;
    for i in 0..WARMUP {
        send(i).await.context("warming up")?;
    }
    let start = Instant::now();
    for i in 0..requests {
        send(WARMUP + i)
            .await
            .context("sending a counted request")?;
    }
    println!(
        "http_get_count: {variant}: {requests} requests after two warm-ups of {WARMUP} in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
