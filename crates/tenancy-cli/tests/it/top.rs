//! Per-tenant insights end to end: snapshots from a real recorder pushed to a real
//! `tenancy serve`, `GET /v1/insights/tenants`, and `tenancy top` driven in a
//! pseudo-terminal (util-linux `script`), redrawing in place until Ctrl-C.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tenancy_insights::{Recorder, RecorderOptions};
use tenancy_sdk::{Observer, Outcome, TenantId};

use crate::ops::{http, port_of, token_of, wait_ready, Served};

/// A snapshot from a recorder that saw `heavy` use 80 ms and three others 5 ms each on
/// cluster `main`, as JSON.
fn load(heavy: TenantId, others: &[TenantId]) -> (Recorder, String) {
    let rec = Recorder::new(RecorderOptions {
        cluster: "main".into(),
        source: "top-test".into(),
        ..Default::default()
    });
    for _ in 0..40 {
        rec.statement(heavy, Duration::from_millis(2), Outcome::Ok { rows: 3 });
    }
    rec.statement(heavy, Duration::from_micros(10), Outcome::ContextRefused);
    for &t in others {
        for _ in 0..10 {
            rec.statement(t, Duration::from_micros(500), Outcome::Ok { rows: 1 });
        }
    }
    let json = rec.take().to_json_within(64 * 1024).expect("fits");
    (rec, String::from_utf8(json).expect("utf-8"))
}

fn post(port: u16, token: Option<&str>, body: &str) -> crate::ops::Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    http(port, "POST", "/v1/insights/snapshots", &headers, Some(body))
}

#[test]
fn insights_api_and_top_in_a_terminal_show_the_noisy_tenant_live() {
    let serve = Served::start(&[], &[]);
    let banner = serve.banner("admin token");
    let port = port_of(&banner);
    let token = token_of(&banner);
    wait_ready(port);

    let heavy = TenantId::new_random();
    let others: Vec<TenantId> = (0..3).map(|_| TenantId::new_random()).collect();
    let (_rec, body) = load(heavy, &others);

    // Pushing: admin only, checked, idempotent per (source, sequence).
    assert_eq!(post(port, None, &body).status, 401);
    let a = post(port, Some(&token), &body);
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.json()["status"], "kept");
    let a = post(port, Some(&token), &body);
    assert_eq!(a.json()["status"], "duplicate", "{}", a.body);
    let bad = body.replacen("\"cluster\":\"main\"", "\"cluster\":\"Main\"", 1);
    let a = post(port, Some(&token), &bad);
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.json()["errors"][0]["field"], "cluster", "{}", a.body);

    // The report: the heavy tenant has 80 of 95 ms of cluster main.
    let auth = format!("Bearer {token}");
    let a = http(
        port,
        "GET",
        "/v1/insights/tenants?cluster=main&limit=10",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let r = a.json();
    assert_eq!(r["tenants"].as_array().map(Vec::len), Some(4), "{r}");
    let top = &r["tenants"][0];
    assert_eq!(top["tenant"], heavy.to_string(), "{r}");
    assert_eq!(top["noisy"], true, "{r}");
    assert_eq!(top["refusals"], 1, "{r}");
    assert!(
        (top["p50_ms"].as_f64().expect("p50") - 2.0).abs() <= 0.02,
        "{r}"
    );
    assert!(r["tenants"][1]["noisy"] == false, "{r}");
    assert_eq!(r["clusters"][0]["noisy_tenants"], 1, "{r}");
    let a = http(
        port,
        "GET",
        "/v1/insights/tenants?noisy_share=0",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.json()["errors"][0]["field"], "noisy_share", "{}", a.body);

    // `tenancy top` in a pseudo-terminal.
    let bin = env!("CARGO_BIN_EXE_tenancy");
    let cmd = format!("exec {bin} top --url http://127.0.0.1:{port} --cluster main --interval 0.3");
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TENANCY_ADMIN_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs tenancy top in a pseudo-terminal");
    let screen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut out = child.stdout.take().expect("stdout");
    let sink = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("screen").extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&screen.lock().expect("screen")).into_owned();
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never shown; screen: {:?}",
                text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&heavy.to_string());
    wait_for("NOISY");
    // A tenant pushed now appears in a later frame: the view refreshes by itself.
    let late = TenantId::new_random();
    let (_rec2, body2) = load(late, &[]);
    assert_eq!(post(port, Some(&token), &body2).status, 202);
    wait_for(&late.to_string());
    let shown = text();
    assert!(
        shown.contains("\x1b[?1049h"),
        "the alternate screen was not entered"
    );
    assert!(
        shown.matches("\x1b[1;1H").count() >= 2,
        "frames are not redrawn in place: {shown:?}"
    );

    // Ctrl-C through the terminal: top restores the screen and exits 0.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"\x03").expect("send Ctrl-C");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tenancy top did not stop on Ctrl-C; screen: {:?}", text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    assert!(status.success(), "{status:?}; screen: {:?}", text());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        text().contains("\x1b[?1049l"),
        "the screen was not restored"
    );

    // Without a terminal: one frame, plain text.
    let once = Command::new(bin)
        .args([
            "top",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--cluster",
            "main",
        ])
        .env("TENANCY_ADMIN_TOKEN", &token)
        .output()
        .expect("top without a terminal");
    assert_eq!(
        once.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let plain = String::from_utf8_lossy(&once.stdout);
    assert!(
        plain.contains(&heavy.to_string()) && !plain.contains('\x1b'),
        "{plain}"
    );
    // A wrong token: exit 2 with the server's reason.
    let wrong = Command::new(bin)
        .args(["top", "--url", &format!("http://127.0.0.1:{port}")])
        .env("TENANCY_ADMIN_TOKEN", "wrong")
        .output()
        .expect("top with a wrong token");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
