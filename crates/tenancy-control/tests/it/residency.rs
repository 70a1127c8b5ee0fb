//! A tenant's residency policy through `PUT /v1/tenants/{id}/residency` over real HTTP:
//! bad input refused with a problem naming the field and nothing stored; a policy set,
//! shown in the tenant's GET, kept by the catalog, audited, and cleared again.

use serde_json::{json, Value};
use tenancy_audit::Log;
use tenancy_control::SignupConfig;
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::api::{AUTH, JSON};
use crate::hostile::{generous, http, served, Resp};

async fn put(port: u16, tenant: &str, body: &str) -> Resp {
    http(
        port,
        "127.0.0.1",
        "PUT",
        &format!("/v1/tenants/{tenant}/residency"),
        &[AUTH, JSON],
        Some(body),
    )
    .await
}

async fn residency_shown(port: u16, tenant: &str) -> Value {
    let r = http(
        port,
        "127.0.0.1",
        "GET",
        &format!("/v1/tenants/{tenant}"),
        &[AUTH],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["residency"].clone()
}

#[tokio::test]
async fn residency_is_validated_set_shown_audited_and_cleared() {
    let s = served(generous(), SignupConfig::default()).await;
    let owner = tenancy_pg::connect(&s.db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    for (r, name) in [("eu-central", "Frankfurt"), ("us-east", "Virginia")] {
        tenancy_catalog::add_region(&owner, &r.parse().expect("region"), name)
            .await
            .expect("region");
    }
    let t = crate::audit::create(s.port, "resident", "req-residency").await;
    let id = t.to_string();

    let too_many = json!({ "regions": (0..65).map(|i| format!("r{i}")).collect::<Vec<_>>() });
    for bad in [
        json!({ "regions": [] }),
        too_many,
        json!({ "regions": ["Not A Region"] }),
        json!({ "regions": ["eu-west", "eu-west"] }),
        json!({ "regions": ["eu-west", "mars-north"] }),
        json!({ "regions": ["eu-central", "us-east"] }),
    ] {
        let r = put(s.port, &id, &bad.to_string()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/problem+json"),
            "{bad}"
        );
        assert_eq!(r.body["errors"][0]["field"], "regions", "{bad}: {}", r.body);
    }
    // The refusal of a policy without the current region says what to do.
    let r = put(s.port, &id, r#"{"regions":["eu-central"]}"#).await;
    let detail = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        detail.contains("eu-west") && detail.contains("move"),
        "{}",
        r.body
    );
    for malformed in [
        r#"{"regions":"eu-west"}"#,
        r#"{"regions":["eu-west"],"extra":1}"#,
        "{",
        // No body, or no `regions`, is refused rather than read as a clear.
        "",
        "{}",
    ] {
        let r = put(s.port, &id, malformed).await;
        assert!(
            (400..500).contains(&r.status),
            "{malformed}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(residency_shown(s.port, &id).await, Value::Null);
    assert_eq!(
        tenancy_catalog::residency(&owner, t)
            .await
            .expect("residency"),
        vec!["eu-west".parse().expect("r")],
        "nothing was stored"
    );

    let r = put(s.port, &id, r#"{"regions":["eu-central","eu-west"]}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["residency"], json!(["eu-central", "eu-west"]));
    assert_eq!(
        residency_shown(s.port, "resident").await,
        json!(["eu-central", "eu-west"])
    );
    let stored: Vec<String> = tenancy_catalog::residency(&owner, t)
        .await
        .expect("residency")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(stored, ["eu-central", "eu-west"]);

    let r = put(s.port, "resident", r#"{"regions":null}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(residency_shown(s.port, &id).await, Value::Null);

    let r = put(s.port, "nobody-here", r#"{"regions":["eu-west"]}"#).await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Both changes are in the tenant's control-plane audit chain, by the admin.
    let control = tenancy_audit::load_log_events(&owner, Log::Control, t.as_uuid())
        .await
        .expect("control log");
    let actions: Vec<&str> = control
        .iter()
        .map(|e| e.recorded.action.as_str())
        .filter(|a| a.starts_with("tenant.residency."))
        .collect();
    assert_eq!(actions, ["tenant.residency.set", "tenant.residency.clear"]);
}
