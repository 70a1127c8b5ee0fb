//! `GET`/`POST /v1/insights/anomalies` over a real socket: detections an application's
//! detector found (on generated traffic with an injected enumeration) pushed, listed by
//! tenant, kind and severity, updated in place, refused field by field, and counted in
//! `tenancy_anomalies_total`.

use serde_json::{json, Value};
use tenancy_control::SignupConfig;
use tenancy_insights::anomaly::simulate::{run, AttackKind, SimOptions, Simulation};
use tenancy_insights::anomaly::{DetectionBatch, DetectorOptions};

use crate::api::{AUTH, JSON};
use crate::hostile::{generous, http, served};

const FROM: &str = "127.0.0.1";

#[tokio::test]
async fn anomalies_are_pushed_listed_filtered_and_counted_over_http() {
    // Detections of the real detector on generated traffic.
    let mut sim = Simulation::new(SimOptions {
        seed: 7,
        tenants: 12,
        days: 10,
        attacks_per_kind: 2,
        kinds: vec![AttackKind::Enumeration],
        ..SimOptions::default()
    });
    let r = run(&mut sim, DetectorOptions::default()).expect("run");
    assert!(r.detections.len() >= 2, "{:?}", r.detections);
    let attacked = sim.attacks()[0].tenant;
    let batch = DetectionBatch {
        source: "billing@host-1:0a1b2c3d".into(),
        detections: r.detections.clone(),
    };

    let s = served(generous(), SignupConfig::default()).await;
    let body = serde_json::to_string(&batch).expect("json");
    let pushed = push(s.port, &body).await;
    assert_eq!(pushed.status, 202, "{:?}", pushed.body);
    assert_eq!(pushed.body["new"], json!(r.detections.len()));
    assert_eq!(pushed.body["updated"], json!(0));

    // The same batch again updates, it does not add.
    let again = push(s.port, &body).await;
    assert_eq!(again.body["new"], json!(0));
    assert_eq!(again.body["updated"], json!(r.detections.len()));

    let all = http(s.port, FROM, "GET", "/v1/insights/anomalies", &[AUTH], None).await;
    assert_eq!(all.status, 200);
    let list = all.body["anomalies"].as_array().expect("list").clone();
    assert_eq!(list.len(), r.detections.len());
    let hours: Vec<u64> = list
        .iter()
        .map(|a| a["detection"]["last_hour"].as_u64().expect("hour"))
        .collect();
    assert!(
        hours.windows(2).all(|w| w[0] >= w[1]),
        "latest first: {hours:?}"
    );

    let mine = http(
        s.port,
        FROM,
        "GET",
        &format!(
            "/v1/insights/anomalies?tenant={}&kind=enumeration&limit=5",
            attacked.as_uuid()
        ),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(mine.status, 200);
    let mine = mine.body["anomalies"].as_array().expect("list").clone();
    assert!(!mine.is_empty());
    for a in &mine {
        let d = &a["detection"];
        assert_eq!(d["tenant_id"], json!(attacked.to_string()));
        assert_eq!(d["kind"], json!("enumeration"));
        assert_eq!(a["source"], json!("billing@host-1:0a1b2c3d"));
        let ev = &d["evidence"][0];
        assert_eq!(ev["signal"], json!("not_found_per_hour"));
        assert!(
            ev["observed"].as_f64().expect("observed") > ev["baseline"].as_f64().expect("baseline")
        );
    }
    let critical = http(
        s.port,
        FROM,
        "GET",
        "/v1/insights/anomalies?severity=critical",
        &[AUTH],
        None,
    )
    .await;
    for a in critical.body["anomalies"].as_array().expect("list") {
        assert_eq!(a["detection"]["severity"], json!("critical"));
    }

    // Refused: unauthenticated, out-of-range parameters, an invalid detection.
    let anon = http(s.port, FROM, "GET", "/v1/insights/anomalies", &[], None).await;
    assert_eq!(anon.status, 401);
    for q in [
        "limit=0",
        "kind=sqli",
        "severity=urgent",
        "since=-1",
        "tenant=00000000-0000-0000-0000-000000000000",
    ] {
        let resp = http(
            s.port,
            FROM,
            "GET",
            &format!("/v1/insights/anomalies?{q}"),
            &[AUTH],
            None,
        )
        .await;
        assert_eq!(resp.status, 422, "{q}: {:?}", resp.body);
    }
    let mut bad: Value = serde_json::to_value(&batch).expect("json");
    bad["detections"][0]["last_hour"] = json!(0);
    let resp = http(
        s.port,
        FROM,
        "POST",
        "/v1/insights/anomalies",
        &[AUTH, JSON],
        Some(&bad.to_string()),
    )
    .await;
    assert_eq!(resp.status, 422, "{:?}", resp.body);
    assert_eq!(
        resp.body["errors"][0]["field"],
        json!("detections[0].last_hour")
    );

    let text = scrape(s.port).await;
    let enumerations: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("tenancy_anomalies_total{") && l.contains(r#"kind="enumeration""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let pushed_enumerations = r
        .detections
        .iter()
        .filter(|d| d.kind.as_str() == "enumeration")
        .count();
    // Counted once per new detection (other tests of this binary may add their own).
    assert!(enumerations >= pushed_enumerations as f64, "{text}");
}

/// Pushes a batch (JSON text) as the admin.
async fn push(port: u16, body: &str) -> crate::hostile::Resp {
    http(
        port,
        FROM,
        "POST",
        "/v1/insights/anomalies",
        &[AUTH, JSON],
        Some(body),
    )
    .await
}

/// The `/metrics` text over a plain socket.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    c.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).await.expect("read");
    String::from_utf8_lossy(&raw).into_owned()
}
