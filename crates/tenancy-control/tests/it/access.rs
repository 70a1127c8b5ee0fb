//! Platform administrators' management of tenants' roles, grants and API keys through
//! `tenancy serve` (build + run, real HTTP against a real cluster).

use serde_json::{json, Value};
use tenancy_control::audit::AuditConfig;
use tenancy_control::{AccessModelConfig, SignupConfig};
use tenancy_core::TenantId;
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::api::{fresh_state_with, AUTH, JSON};
use crate::audit::{config, create, eventually};
use crate::hostile::{http, Resp};

async fn call(port: u16, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
    let mut headers = vec![AUTH, JSON];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    let body = body.map(|b| b.to_string());
    http(port, "127.0.0.7", method, path, &headers, body.as_deref()).await
}

async fn active(port: u16, t: TenantId) {
    eventually("the tenant active", || async {
        let r = call(port, "GET", &format!("/v1/tenants/{t}"), None, None).await;
        (r.body["state"] == "active").then_some(())
    })
    .await;
}

/// The field a 422 problem names.
fn field(r: &Resp) -> &str {
    r.body["errors"][0]["field"].as_str().unwrap_or("")
}

/// Every item of a paged list, following `next_after` with `limit`.
async fn every_page(port: u16, path: &str, limit: u32) -> (Vec<Value>, usize) {
    let (mut items, mut pages) = (Vec::new(), 0);
    let mut after = String::new();
    loop {
        let r = call(
            port,
            "GET",
            &format!("{path}?limit={limit}{after}"),
            None,
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let got = r.body["items"].as_array().expect("items");
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        pages += 1;
        match r.body["next_after"].as_str() {
            Some(n) => after = format!("&after={}", urlencode(n)),
            None => return (items, pages),
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn platform_admins_manage_a_tenants_roles_grants_and_keys_with_audit_events() {
    let (db, _state, _p) = fresh_state_with(SignupConfig::default()).await;
    let mut cfg = config(
        &db,
        AuditConfig {
            seal_interval_secs: 0,
            ..AuditConfig::default()
        },
    );
    cfg.access = AccessModelConfig {
        permissions: vec!["invoices:read".into(), "invoices:create".into()],
        member: vec!["invoices:read".into(), "invoices:create".into()],
        viewer: vec!["invoices:read".into()],
    };
    let app = tenancy_control::build(cfg).await.expect("build");
    let port = app.port();
    let sealer = app.state().audit().expect("sealer").clone();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());
    let acme = create(port, "acme", "req-acme").await;
    let globex = create(port, "globex", "req-globex").await;
    active(port, acme).await;
    active(port, globex).await;
    let base = format!("/v1/tenants/{acme}");

    // Neither an anonymous caller nor a tenant's own credential (its API key) is a
    // platform admin.
    let owner = tenancy_pg::connect(&db.config_as(OWNER_ROLE))
        .await
        .expect("owner");
    let mut keys = Vec::new();
    for (i, t) in [acme, acme, acme, globex].into_iter().enumerate() {
        let (rec, key) =
            tenancy_axum::api_key::issue_api_key(&owner, t, &format!("key-{i}"), &Vec::new())
                .await
                .expect("key");
        keys.push((rec.key_id, key));
    }
    let tenant_key = format!("Bearer {}", keys[0].1.expose());
    for path in [
        format!("{base}/access/grants"),
        format!("{base}/access/roles"),
        format!("{base}/api-keys"),
    ] {
        let r = http(port, "127.0.0.7", "GET", &path, &[], None).await;
        assert_eq!(r.status, 401, "anonymous {path}: {}", r.body);
        let r = http(
            port,
            "127.0.0.7",
            "GET",
            &path,
            &[("authorization", &tenant_key)],
            None,
        )
        .await;
        assert_eq!(r.status, 401, "tenant key {path}: {}", r.body);
    }
    let r = http(
        port,
        "127.0.0.7",
        "POST",
        &format!("{base}/access/grants"),
        &[
            ("authorization", &tenant_key),
            JSON,
            ("idempotency-key", "x"),
        ],
        Some(&json!({"subject": "eve", "role": "owner"}).to_string()),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Grants: new (201), replayed under the same key, already held (200).
    let alice = json!({"subject": "alice", "role": "owner"});
    let r = call(
        port,
        "POST",
        &format!("{base}/access/grants"),
        Some("g1"),
        Some(alice.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body, alice);
    let r = call(
        port,
        "POST",
        &format!("{base}/access/grants"),
        Some("g1"),
        Some(alice.clone()),
    )
    .await;
    assert_eq!(r.status, 201, "the replay: {}", r.body);
    let r = call(
        port,
        "POST",
        &format!("{base}/access/grants"),
        Some("g2"),
        Some(alice.clone()),
    )
    .await;
    assert_eq!(r.status, 200, "already held: {}", r.body);
    // Custom roles, checked against the configured model, every bad field named.
    let r = call(
        port,
        "POST",
        &format!("{base}/access/roles"),
        Some("r1"),
        Some(json!({"name": "billing", "permissions": ["invoices:create", "invoices:read"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"name": "billing", "builtin": false, "permissions": ["invoices:create", "invoices:read"]})
    );
    for (i, (body, status, named)) in [
        (json!({"name": "billing", "permissions": []}), 409, ""),
        (
            json!({"name": "x", "permissions": ["invoices:delete"]}),
            422,
            "permissions[0]",
        ),
        (json!({"name": "owner", "permissions": []}), 422, "name"),
        (json!({"name": "Bad Name", "permissions": []}), 422, "name"),
        (
            json!({"name": "x", "permissions": [], "extra": 1}),
            422,
            "body",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = call(
            port,
            "POST",
            &format!("{base}/access/roles"),
            Some(&format!("bad-{i}")),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert_eq!(field(&r), named, "{body}: {}", r.body);
    }
    for (i, (body, named)) in [
        (json!({"subject": "", "role": "viewer"}), "subject"),
        (json!({"subject": "a\u{0}b", "role": "viewer"}), "subject"),
        (json!({"subject": "bob", "role": "No"}), "role"),
    ]
    .into_iter()
    .enumerate()
    {
        let r = call(
            port,
            "POST",
            &format!("{base}/access/grants"),
            Some(&format!("badg-{i}")),
            Some(body.clone()),
        )
        .await;
        assert_eq!((r.status, field(&r)), (422, named), "{body}: {}", r.body);
    }
    let r = call(
        port,
        "POST",
        &format!("{base}/access/grants"),
        Some("g-unknown"),
        Some(json!({"subject": "bob", "role": "nosuch"})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    for (i, s) in ["bob", "carol", "dave.d", "zoë"].into_iter().enumerate() {
        let r = call(
            port,
            "POST",
            &format!("{base}/access/grants"),
            Some(&format!("g-{i}")),
            Some(json!({"subject": s, "role": if i % 2 == 0 { "billing" } else { "viewer" }})),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = call(
        port,
        "GET",
        &format!("{base}/access/roles/billing"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["builtin"].clone()),
        (200, json!(false)),
        "{}",
        r.body
    );
    let r = call(
        port,
        "GET",
        &format!("{base}/access/roles/viewer"),
        None,
        None,
    )
    .await;
    assert_eq!(
        r.body["permissions"],
        json!(["invoices:read"]),
        "{}",
        r.body
    );

    // Paged lists: every item once, in order, whatever the page size.
    let (roles, pages) = every_page(port, &format!("{base}/access/roles"), 2).await;
    let names: Vec<&str> = roles.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["owner", "admin", "member", "viewer", "billing"]);
    assert_eq!(pages, 3);
    let (grants, pages) = every_page(port, &format!("{base}/access/grants"), 2).await;
    let (all, _) = every_page(port, &format!("{base}/access/grants"), 200).await;
    assert_eq!(grants, all);
    assert_eq!(grants.len(), 5);
    assert_eq!(pages, 3);
    // Bad paging names its field.
    for (query, status, named) in [
        ("limit=0", 422, "limit"),
        ("limit=201", 422, "limit"),
        ("after=zz.viewer", 422, "after"),
        ("after=not-a-cursor", 422, "after"),
        ("limit=abc", 400, ""),
    ] {
        for list in ["access/grants", "access/roles", "api-keys"] {
            let r = call(port, "GET", &format!("{base}/{list}?{query}"), None, None).await;
            if list == "access/roles" && query == "after=not-a-cursor" {
                // A well-formed role name is a cursor of the role list.
                assert_eq!(r.status, 200, "{list}?{query}: {}", r.body);
                continue;
            }
            assert_eq!(
                (r.status, field(&r)),
                (status, named),
                "{list}?{query}: {}",
                r.body
            );
        }
    }
    // The other tenant has none of it.
    let r = call(
        port,
        "GET",
        &format!("/v1/tenants/{globex}/access/grants"),
        None,
        None,
    )
    .await;
    assert_eq!(r.body["items"], json!([]), "{}", r.body);
    let r = call(
        port,
        "GET",
        &format!("/v1/tenants/{globex}/access/roles/billing"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);

    // Revocations: the last owner stays; a grant that is not there is 404.
    let r = call(
        port,
        "POST",
        &format!("{base}/access/revocations"),
        Some("v1"),
        Some(alice.clone()),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = call(
        port,
        "POST",
        &format!("{base}/access/revocations"),
        Some("v2"),
        Some(json!({"subject": "carol", "role": "viewer"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        port,
        "POST",
        &format!("{base}/access/revocations"),
        Some("v3"),
        Some(json!({"subject": "carol", "role": "viewer"})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        port,
        "DELETE",
        &format!("{base}/access/roles/billing"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(
        port,
        "GET",
        &format!("{base}/access/roles/billing"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        port,
        "DELETE",
        &format!("{base}/access/roles/viewer"),
        None,
        None,
    )
    .await;
    assert_eq!((r.status, field(&r)), (422, "name"), "{}", r.body);

    // API keys: the tenant's own, newest first, no secret or hash; another tenant's key is
    // not found through this tenant.
    let (listed, _) = every_page(port, &format!("{base}/api-keys"), 2).await;
    let ids: Vec<&str> = listed.iter().filter_map(|k| k["key_id"].as_str()).collect();
    let mut want: Vec<&str> = keys[..3].iter().map(|(id, _)| id.as_str()).collect();
    want.reverse();
    assert_eq!(ids.len(), 3);
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_unstable();
    let mut sorted_want = want.clone();
    sorted_want.sort_unstable();
    assert_eq!(sorted_ids, sorted_want);
    for k in &listed {
        let mut fields: Vec<&str> = k
            .as_object()
            .expect("key")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "created_at",
                "key_id",
                "last_used_at",
                "name",
                "revoked_at",
                "scopes"
            ]
        );
    }
    let r = call(
        port,
        "POST",
        &format!("{base}/api-keys/{}/revoke", keys[3].0),
        Some("k0"),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        port,
        "POST",
        &format!("{base}/api-keys/NOT-A-KEY/revoke"),
        Some("k1"),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = call(
        port,
        "POST",
        &format!("{base}/api-keys/{}/revoke", keys[0].0),
        Some("k2"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["revoked_at"].is_string(), "{}", r.body);
    let gone = tenancy_catalog::authenticate_api_key(&owner, &keys[0].0, &keys[0].1.hash())
        .await
        .expect("authenticate");
    assert!(gone.is_none(), "a revoked key never authenticates");
    let still = tenancy_catalog::authenticate_api_key(&owner, &keys[3].0, &keys[3].1.hash())
        .await
        .expect("authenticate");
    assert!(still.is_some(), "the other tenant's key is untouched");

    // Every change is an event: the access changes in the tenant's own log, by the admin;
    // the key revocation in the control log, in the tenant's chain.
    let events = eventually("the tenant's log sealed", || async {
        sealer.pass(false).await.expect("pass");
        let r = call(port, "GET", &format!("{base}/audit?limit=500"), None, None).await;
        let items = r.body["items"].as_array().cloned().unwrap_or_default();
        (items.len() >= 10).then_some(items)
    })
    .await;
    let actions: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
                e["actor_kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(actions.len(), 10, "{actions:?}");
    assert_eq!(
        actions[..7],
        [
            ("access.grant", "subject:alice", "admin"),
            ("access.role.create", "role:billing", "admin"),
            ("access.grant", "subject:bob", "admin"),
            ("access.grant", "subject:carol", "admin"),
            ("access.grant", "subject:dave.d", "admin"),
            ("access.grant", "subject:zoë", "admin"),
            ("access.revoke", "subject:carol", "admin"),
        ]
    );
    // Deleting the role revoked its grants (in no particular order), then itself.
    let mut cascade = actions[7..9].to_vec();
    cascade.sort_unstable();
    assert_eq!(
        cascade,
        [
            ("access.revoke", "subject:bob", "admin"),
            ("access.revoke", "subject:dave.d", "admin"),
        ]
    );
    assert_eq!(actions[9], ("access.role.delete", "role:billing", "admin"));
    let principal = events[0]["actor_subject"].as_str().expect("subject");
    assert!(principal.starts_with("admin:"), "{principal}");
    let control = eventually("the control log sealed", || async {
        sealer.pass(false).await.expect("pass");
        let r = call(
            port,
            "GET",
            &format!("{base}/audit?log=control&limit=500"),
            None,
            None,
        )
        .await;
        let items = r.body["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .any(|e| e["action"] == "api_key.revoke")
            .then_some(items)
    })
    .await;
    let revoked: Vec<&Value> = control
        .iter()
        .filter(|e| e["action"] == "api_key.revoke")
        .collect();
    assert_eq!(revoked.len(), 1, "one event for the one revocation");
    assert_eq!(
        revoked[0]["target"],
        json!(format!("api_key:{}", keys[0].0))
    );
    assert_eq!(revoked[0]["actor_subject"], json!(principal));
    // Revoking it again changes nothing and records nothing.
    let r = call(
        port,
        "POST",
        &format!("{base}/api-keys/{}/revoke", keys[0].0),
        Some("k3"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let _ = stopper.send(true);
    running.await.expect("join").expect("served");
}

#[tokio::test]
async fn every_access_operation_is_in_the_openapi_document_with_its_errors() {
    let doc = serde_json::to_value(tenancy_control::openapi()).expect("document");
    for (path, method, statuses) in [
        (
            "/v1/tenants/{id}/access/roles",
            "get",
            &["200", "400", "401", "404", "409", "422", "503"][..],
        ),
        (
            "/v1/tenants/{id}/access/roles",
            "post",
            &[
                "201", "400", "401", "404", "409", "413", "415", "422", "503",
            ],
        ),
        (
            "/v1/tenants/{id}/access/roles/{name}",
            "get",
            &["200", "401", "404", "409", "503"],
        ),
        (
            "/v1/tenants/{id}/access/roles/{name}",
            "delete",
            &["204", "401", "404", "409", "422", "503"],
        ),
        (
            "/v1/tenants/{id}/access/grants",
            "get",
            &["200", "400", "401", "404", "409", "422", "503"],
        ),
        (
            "/v1/tenants/{id}/access/grants",
            "post",
            &["200", "201", "400", "401", "404", "409", "422", "503"],
        ),
        (
            "/v1/tenants/{id}/access/revocations",
            "post",
            &["200", "400", "401", "404", "409", "422", "503"],
        ),
        (
            "/v1/tenants/{id}/api-keys",
            "get",
            &["200", "400", "401", "404", "422", "503"],
        ),
        (
            "/v1/tenants/{id}/api-keys/{key_id}/revoke",
            "post",
            &["200", "400", "401", "404", "409", "422", "503"],
        ),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        assert_eq!(op["security"], json!([{"admin": []}]), "{method} {path}");
        for s in statuses {
            assert!(
                op["responses"][*s].is_object(),
                "{method} {path} documents {s}: {}",
                op["responses"]
            );
        }
        if method == "post" {
            let key = op["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .find(|p| p["name"] == "Idempotency-Key")
                .expect("an Idempotency-Key");
            assert_eq!(key["required"], json!(true), "{method} {path}");
        }
    }
}
