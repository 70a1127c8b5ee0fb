//! Naming a tenant is not a credential: a path prefix, a subdomain or a custom domain
//! picks a tenant but never authenticates the caller. Every attempt here is made over
//! real HTTP against the running app, and the database (read as the superuser, past
//! row-level security) must be exactly as it was.

use serde_json::{json, Value};
use tenancy_core::TenantId;

use crate::support::*;

/// Every row of the app's tables and of the job queue, as text: what an attempt must not
/// change.
pub(crate) async fn db_state(env: &Env) -> Vec<(String, i64, String)> {
    let su = env.db.connect_superuser().await.expect("superuser");
    let mut out = Vec::new();
    for table in [
        "invoicing.customers",
        "invoicing.invoices",
        "invoicing.line_items",
        "invoicing.deliveries",
        "tenancy.jobs",
    ] {
        let row = su
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')
                       FROM {table} t"
                ),
                &[],
            )
            .await
            .expect("table state");
        out.push((table.to_owned(), row.get(0), row.get(1)));
    }
    out
}

/// Every route of the app under `prefix`, with each method it serves and a body that
/// would change something: the ids are globex's.
fn every_route(prefix: &str, cust: &str, inv: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", format!("{prefix}/me"), None),
        ("GET", format!("{prefix}/customers"), None),
        (
            "POST",
            format!("{prefix}/customers"),
            Some(json!({"name": "Mallory", "email": "mallory@evil.example"})),
        ),
        ("GET", format!("{prefix}/customers/{cust}"), None),
        (
            "PATCH",
            format!("{prefix}/customers/{cust}"),
            Some(json!({"name": "pwned"})),
        ),
        ("DELETE", format!("{prefix}/customers/{cust}"), None),
        ("GET", format!("{prefix}/invoices"), None),
        (
            "POST",
            format!("{prefix}/invoices"),
            Some(json!({"customer_id": cust, "number": "EVIL-1"})),
        ),
        ("GET", format!("{prefix}/invoices/{inv}"), None),
        (
            "PATCH",
            format!("{prefix}/invoices/{inv}"),
            Some(json!({"status": "void"})),
        ),
        ("DELETE", format!("{prefix}/invoices/{inv}"), None),
        (
            "POST",
            format!("{prefix}/invoices/{inv}/lines"),
            Some(json!({"description": "x", "quantity": 1, "unit_price_cents": 1})),
        ),
        ("POST", format!("{prefix}/invoices/{inv}/send"), None),
        ("GET", format!("{prefix}/invoices/{inv}/deliveries"), None),
        ("GET", format!("{prefix}/reports/summary"), None),
        ("GET", format!("{prefix}/nope"), None),
    ]
}

#[tokio::test]
async fn anonymous_path_prefix_cannot_read_or_write_another_tenant() {
    let env = start().await;
    let (cust, inv) = env.seed(env.globex, "globex").await;
    let before = db_state(&env).await;
    let by_id = format!("/t/{}", env.globex);
    for prefix in ["/t/globex", by_id.as_str()] {
        for (method, path, body) in every_route(prefix, &cust, &inv) {
            let r = env.call(method, &path, &[], body).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthenticated"),
                "{method} {path}: {r:?}"
            );
        }
    }
    assert_eq!(db_state(&env).await, before, "nothing changed");
}

#[tokio::test]
async fn anonymous_host_header_cannot_read_or_write_another_tenant() {
    let env = start().await;
    let (cust, inv) = env.seed(env.globex, "globex").await;
    let before = db_state(&env).await;
    for host in [
        "globex.invoicing.test",
        "GLOBEX.invoicing.test:8080",
        "globex.invoicing.test.",
    ] {
        for (method, path, body) in every_route("", &cust, &inv) {
            let r = env.call(method, &path, &[("host", host)], body).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthenticated"),
                "{method} {path} Host: {host}: {r:?}"
            );
        }
    }
    assert_eq!(db_state(&env).await, before, "nothing changed");
}

#[tokio::test]
async fn a_credential_of_one_tenant_cannot_select_another() {
    let env = start().await;
    let (cust, inv) = env.seed(env.globex, "globex").await;
    let (_, acme_key) = tenancy_axum::api_key::issue_api_key(
        &env.owner,
        env.acme,
        "ci",
        &["invoices:read".into(), "invoices:write".into()],
    )
    .await
    .expect("issue");
    let before = db_state(&env).await;
    let jwt = format!("Bearer {}", token(env.acme));
    let key_bearer = format!("Bearer {}", acme_key.expose());
    let credentials: [(&str, &str); 3] = [
        ("authorization", &jwt),
        ("x-api-key", acme_key.expose()),
        ("authorization", &key_bearer),
    ];
    for cred in credentials {
        // By path prefix (slug and id).
        let by_id = format!("/t/{}", env.globex);
        for prefix in ["/t/globex", by_id.as_str()] {
            for (method, path, body) in every_route(prefix, &cust, &inv) {
                let r = env.call(method, &path, &[cred], body).await;
                assert_eq!(
                    (r.status, r.code()),
                    (403, "tenant-mismatch"),
                    "{} {method} {path}: {r:?}",
                    cred.0
                );
            }
        }
        // By Host header.
        for (method, path, body) in every_route("", &cust, &inv) {
            let r = env
                .call(
                    method,
                    &path,
                    &[cred, ("host", "globex.invoicing.test")],
                    body,
                )
                .await;
            assert_eq!(
                (r.status, r.code()),
                (403, "tenant-mismatch"),
                "{} {method} {path} Host: globex: {r:?}",
                cred.0
            );
        }
    }
    assert_eq!(db_state(&env).await, before, "nothing changed");
}

#[tokio::test]
async fn a_credential_without_scopes_grants_no_scope() {
    let env = start().await;
    let (cust, _) = env.seed(env.acme, "acme").await;
    let before = db_state(&env).await;
    let new_customer = json!({"name": "x", "email": "x@y.test"});
    let call = |auth: String, method: &'static str, path: &'static str, body: Option<Value>| {
        let env = &env;
        async move {
            env.call(method, path, &[("authorization", &auth)], body)
                .await
        }
    };

    // A JWT without `scope`/`scp`: it authenticates (who am I works) but allows nothing
    // that needs a scope.
    let bare = format!(
        "Bearer {}",
        token_with(env.acme, |c| {
            c.as_object_mut().expect("claims").remove("scope");
        })
    );
    let r = call(bare.clone(), "GET", "/me", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    for (method, path, body) in [
        ("GET", "/customers", None),
        ("GET", "/invoices", None),
        ("GET", "/reports/summary", None),
        ("POST", "/customers", Some(new_customer.clone())),
    ] {
        let r = call(bare.clone(), method, path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "insufficient-scope"),
            "{method} {path}: {r:?}"
        );
    }
    // Claims that look like scopes but are not the standard ones grant nothing either.
    for edit in [
        json!({"scopes": "invoices:read invoices:write"}),
        json!({"scope": ["invoices:read", "invoices:write"]}),
        json!({"scope": ""}),
    ] {
        let t = token_with(env.acme, |c| {
            let m = c.as_object_mut().expect("claims");
            m.remove("scope");
            for (k, v) in edit.as_object().expect("edit") {
                m.insert(k.clone(), v.clone());
            }
        });
        let r = call(format!("Bearer {t}"), "GET", "/customers", None).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "insufficient-scope"),
            "{edit}: {r:?}"
        );
    }
    // Read scope only: reads work, writes do not.
    let read = format!(
        "Bearer {}",
        token_with(env.acme, |c| c["scope"] = json!("invoices:read"))
    );
    assert_eq!(
        call(read.clone(), "GET", "/customers", None).await.status,
        200
    );
    let r = call(read, "POST", "/customers", Some(new_customer.clone())).await;
    assert_eq!((r.status, r.code()), (403, "insufficient-scope"), "{r:?}");
    // `scp` as an array is the other standard spelling.
    let scp = format!(
        "Bearer {}",
        token_with(env.acme, |c| {
            let m = c.as_object_mut().expect("claims");
            m.remove("scope");
            m.insert("scp".into(), json!(["invoices:read"]));
        })
    );
    assert_eq!(call(scp, "GET", "/customers", None).await.status, 200);

    // An API key issued without scopes allows nothing that needs one.
    let (_, key) = tenancy_axum::api_key::issue_api_key(&env.owner, env.acme, "bare", &[])
        .await
        .expect("issue");
    let r = env
        .call("GET", "/me", &[("x-api-key", key.expose())], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    for (method, path, body) in [
        ("GET", "/customers".to_owned(), None),
        ("GET", format!("/customers/{cust}"), None),
        ("DELETE", format!("/customers/{cust}"), None),
        ("POST", "/customers".to_owned(), Some(new_customer.clone())),
    ] {
        let r = env
            .call(method, &path, &[("x-api-key", key.expose())], body)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (403, "insufficient-scope"),
            "API key {method} {path}: {r:?}"
        );
    }
    // The trusted gateway header names the tenant but grants no scope by itself.
    let r = env
        .call("GET", "/customers", &[("x-tenant-id", "acme")], None)
        .await;
    assert_eq!((r.status, r.code()), (403, "insufficient-scope"), "{r:?}");
    assert_eq!(db_state(&env).await, before, "nothing changed");
}

#[tokio::test]
async fn alternate_tenant_id_spellings_reach_nothing() {
    let env = start().await;
    env.seed(env.globex, "globex").await;
    let before = db_state(&env).await;
    let id = env.globex.to_string();
    let simple = id.replace('-', "");
    let spellings = [
        id.to_uppercase(),
        format!("{{{id}}}"),
        format!("%7B{id}%7D"),
        simple.clone(),
        simple.to_uppercase(),
        format!("urn:uuid:{id}"),
        format!("%20{id}"),
        format!("{id}%20"),
    ];
    let globex_jwt = format!("Bearer {}", token(env.globex));
    for s in &spellings {
        let path = format!("/t/{s}/customers");
        // Anonymous: refused before the spelling matters.
        let r = env.call("GET", &path, &[], None).await;
        assert_eq!((r.status, r.code()), (401, "unauthenticated"), "{s}: {r:?}");
        // Even with globex's own credential, another spelling of its id names no tenant:
        // a mismatch, never a second way to write the same address.
        let r = env
            .call("GET", &path, &[("authorization", &globex_jwt)], None)
            .await;
        assert_eq!((r.status, r.code()), (403, "tenant-mismatch"), "{s}: {r:?}");
        let r = env
            .call(
                "POST",
                &path,
                &[("authorization", &globex_jwt)],
                Some(json!({"name": "x", "email": "x@y.test"})),
            )
            .await;
        assert_eq!((r.status, r.code()), (403, "tenant-mismatch"), "{s}: {r:?}");
    }
    for s in &spellings[..2] {
        // The gateway header and a token's claim read ids in one spelling only too.
        let r = env
            .call("GET", "/me", &[("x-tenant-id", s.as_str())], None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "tenant-not-found"),
            "{s}: {r:?}"
        );
        let t = token_with(env.globex, |c| c["tenant_id"] = json!(s));
        let r = env
            .call(
                "GET",
                "/customers",
                &[("authorization", &format!("Bearer {t}"))],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (404, "tenant-not-found"),
            "{s}: {r:?}"
        );
    }
    // The canonical spelling works, as a control.
    let r = env
        .call(
            "GET",
            &format!("/t/{id}/customers"),
            &[("authorization", &globex_jwt)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(db_state(&env).await, before, "nothing changed");
    let _: TenantId = id.parse().expect("canonical");
}
