//! Changes take effect without restart: a flag changed through the API is seen by
//! another OS process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tenancy_sdk::bootstrap::CONFIG_READER_ROLE;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("watcher answered in time")
        .expect("read")
        .expect("watcher still running")
}

#[tokio::test]
async fn a_flag_changed_through_the_api_is_seen_by_another_process() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let t = tenant(&db, "pro", "eu-west").await;
    let flag = |default: &str| json!({"kind": "boolean", "variants": {"on": true, "off": false}, "default_variant": default, "off_variant": "off"});
    assert_eq!(
        put(app.addr, "/v1/config/flags/checkout-v2", flag("off"))
            .await
            .status,
        200
    );

    let dsn = db.cluster.url_as(CONFIG_READER_ROLE, &db.name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy-config-watch"))
        .args([dsn.as_str(), &t.to_string(), "checkout-v2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watcher");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = next_line(&mut lines).await;
    assert!(
        ready.starts_with("ready ") && ready.ends_with("variant=off"),
        "{ready}"
    );

    for (default, expect) in [("on", "variant=on"), ("off", "variant=off")] {
        let sent = Instant::now();
        let r = put(app.addr, "/v1/config/flags/checkout-v2", flag(default)).await;
        assert_eq!(r.status, 200);
        loop {
            let line = next_line(&mut lines).await;
            if line.starts_with("change ") && line.ends_with(expect) {
                eprintln!(
                    "seen by the other process after {:?}: {line}",
                    sent.elapsed()
                );
                break;
            }
        }
    }
    // The kill switch propagates too.
    assert_eq!(
        put(app.addr, "/v1/config/flags/checkout-v2", flag("on"))
            .await
            .status,
        200
    );
    loop {
        if next_line(&mut lines).await.ends_with("variant=on") {
            break;
        }
    }
    let r = call(
        app.addr,
        "POST",
        "/v1/config/flags/checkout-v2/kill",
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    loop {
        if next_line(&mut lines).await.ends_with("variant=off") {
            break;
        }
    }
    let _ = child.kill().await;
}
