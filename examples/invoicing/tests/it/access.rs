//! Access control over real HTTP: built-in and custom roles, `RequirePermission` on
//! `POST /invoices` and `POST /api-keys`, API key scopes within their creator's
//! permissions, roles from JWT claims per issuer, audit events of every change, the
//! management API's input checks, and grants that stay in their tenant.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use tenancy_core::TenantId;

use crate::support::*;

/// A dev-issuer token for `tenant`, subject `sub`, holding `roles` by claim (none: only
/// stored grants count).
fn as_user(tenant: TenantId, sub: &str, roles: &[&str]) -> String {
    let auth = token_with(tenant, |c| {
        c["sub"] = json!(sub);
        c["roles"] = json!(roles.join(" "));
    });
    format!("Bearer {auth}")
}

/// Everything access control stores, across tenants, read as superuser: the roles, the
/// grants and the audit events of `access.*` actions.
async fn access_state(env: &Env) -> Vec<String> {
    let su = env.db.connect_superuser().await.expect("superuser");
    let mut out = Vec::new();
    for sql in [
        "SELECT tenant_id::text || ' ' || name || ' ' || array_to_string(permissions, ',') FROM tenancy.access_roles ORDER BY 1",
        "SELECT tenant_id::text || ' ' || subject || ' ' || role FROM tenancy.access_grants ORDER BY 1",
        "SELECT tenant_id::text || ' ' || action || ' ' || coalesce(target, '') FROM tenancy.audit_events WHERE action LIKE 'access.%' ORDER BY seq",
        "SELECT tenant_id::text || ' ' || key_id FROM tenancy_catalog.api_keys ORDER BY 1",
    ] {
        for r in su.query(sql, &[]).await.expect("state") {
            out.push(r.get::<_, String>(0));
        }
    }
    out
}

fn invoice(cust: &str, number: &str) -> Option<Value> {
    Some(json!({"customer_id": cust, "number": number}))
}

async fn invoices(env: &Env, tenant: TenantId) -> usize {
    let r = env.as_tenant(tenant, "GET", "/invoices", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body.as_array().expect("list").len()
}

#[tokio::test]
async fn viewers_cannot_create_invoices_and_the_refusal_names_the_permission() {
    let env = start().await;
    let (cust, _) = env.seed(env.acme, "acme").await;
    let before = invoices(&env, env.acme).await;
    for (who, roles) in [("vera", &["viewer"][..]), ("nobody", &[][..])] {
        let auth = as_user(env.acme, who, roles);
        // Reading is allowed (scope and role agree)…
        let r = env
            .call("GET", "/invoices", &[("authorization", &auth)], None)
            .await;
        assert_eq!(r.status, 200, "{who}: {r:?}");
        // …creating is not: 403 naming the permission, nothing stored.
        let r = env
            .call(
                "POST",
                "/invoices",
                &[("authorization", &auth)],
                invoice(&cust, &format!("{who}-1")),
            )
            .await;
        assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
        assert!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("\"invoices:create\"")),
            "{r:?}"
        );
        assert_eq!(r.content_type, "application/problem+json");
    }
    assert_eq!(invoices(&env, env.acme).await, before, "nothing created");
    // A member may create invoices.
    let auth = as_user(env.acme, "max", &["member"]);
    let r = env
        .call(
            "POST",
            "/invoices",
            &[("authorization", &auth)],
            invoice(&cust, "max-1"),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test]
async fn only_admins_issue_api_keys_and_a_key_never_exceeds_its_creator() {
    let env = start().await;
    let (cust, _) = env.seed(env.acme, "acme").await;
    let key_body = |scopes: &[&str]| Some(json!({"name": "ci", "scopes": scopes}));
    // Members and viewers may not manage API keys.
    for role in ["member", "viewer"] {
        let auth = as_user(env.acme, "m", &[role]);
        let r = env
            .call(
                "POST",
                "/api-keys",
                &[("authorization", &auth)],
                key_body(&["invoices:read"]),
            )
            .await;
        assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
        assert!(r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("\"api_keys:manage\"")));
    }
    // A custom role that may manage keys but not create invoices cannot hand out
    // `invoices:create` through a key, nor a wildcard, nor an undeclared scope.
    let owner = as_user(env.acme, "olga", &["owner"]);
    let r = env
        .call(
            "POST",
            "/access/roles",
            &[("authorization", &owner)],
            Some(json!({"name": "keykeeper", "permissions": ["api_keys:manage", "invoices:read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = env
        .call(
            "POST",
            "/access/grants",
            &[("authorization", &owner)],
            Some(json!({"subject": "kim", "role": "keykeeper"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = access_state(&env).await;
    let kim = as_user(env.acme, "kim", &[]);
    let r = env
        .call(
            "POST",
            "/api-keys",
            &[("authorization", &kim)],
            key_body(&["invoices:read", "invoices:create"]),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
    assert!(r.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("\"invoices:create\"")));
    for bad in [
        &["*"][..],
        &["invoices:*"],
        &["invoices:read", "billing:nope"],
    ] {
        let r = env
            .call(
                "POST",
                "/api-keys",
                &[("authorization", &kim)],
                key_body(bad),
            )
            .await;
        assert_eq!((r.status, r.code()), (422, "validation"), "{bad:?}: {r:?}");
        assert!(r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("scopes[") && d.contains("unknown permission")));
    }
    assert_eq!(access_state(&env).await, before, "no key stored");
    // Within kim's permissions: issued, and the key does what its scopes say, no more.
    let r = env
        .call(
            "POST",
            "/api-keys",
            &[("authorization", &kim)],
            key_body(&["invoices:read"]),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.body["key"].as_str().expect("key").to_owned();
    let key_subject = format!("api_key:{}", r.body["key_id"].as_str().expect("key id"));
    let r = env
        .call("GET", "/invoices", &[("x-api-key", &key)], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // A role granted to the key is the key's alone: a token whose `sub` spells the key's
    // subject gets nothing of it.
    let r = env
        .call(
            "POST",
            "/access/grants",
            &[("authorization", &owner)],
            Some(json!({"subject": key_subject, "role": "viewer"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = env
        .call("GET", "/access/me", &[("x-api-key", &key)], None)
        .await;
    assert_eq!(r.body["roles"], json!(["viewer"]), "{r:?}");
    let spoof = as_user(env.acme, &key_subject, &[]);
    let r = env
        .call("GET", "/access/me", &[("authorization", &spoof)], None)
        .await;
    assert_eq!(
        (r.body["roles"].clone(), r.body["permissions"].clone()),
        (json!([]), json!([])),
        "{r:?}"
    );
    let r = env
        .call(
            "POST",
            "/invoices",
            &[("x-api-key", &key)],
            invoice(&cust, "key-1"),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
    let r = env
        .call("GET", "/access/me", &[("x-api-key", &key)], None)
        .await;
    assert_eq!(r.body["permissions"], json!(["invoices:read"]), "{r:?}");
    // An admin issues a key that creates invoices.
    let admin = as_user(env.acme, "ada", &["admin"]);
    let r = env
        .call(
            "POST",
            "/api-keys",
            &[("authorization", &admin)],
            key_body(&["invoices:read", "invoices:write", "invoices:create"]),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.body["key"].as_str().expect("key").to_owned();
    let r = env
        .call(
            "POST",
            "/invoices",
            &[("x-api-key", &key)],
            invoice(&cust, "key-2"),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test]
async fn custom_roles_grant_what_they_list_and_every_change_is_an_audit_event() {
    let env = start().await;
    let (cust, _) = env.seed(env.acme, "acme").await;
    let owner = as_user(env.acme, "olga", &["owner"]);
    let bob = as_user(env.acme, "bob", &[]);
    let call = |auth: String, method: &'static str, path: &'static str, body: Option<Value>| {
        let env = &env;
        async move {
            env.call(method, path, &[("authorization", &auth)], body)
                .await
        }
    };
    let create = |n: &str| invoice(&cust, n);
    // Without a grant bob may not create invoices.
    let r = call(bob.clone(), "POST", "/invoices", create("bob-0")).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = call(owner.clone(), "POST", "/access/roles", Some(json!({"name": "billing", "permissions": ["invoices:read", "invoices:write", "invoices:create"]}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(
        r.body["permissions"],
        json!(["invoices:create", "invoices:read", "invoices:write"])
    );
    let r = call(
        owner.clone(),
        "POST",
        "/access/grants",
        Some(json!({"subject": "bob", "role": "billing"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Granting again changes nothing and records nothing.
    let r = call(
        owner.clone(),
        "POST",
        "/access/grants",
        Some(json!({"subject": "bob", "role": "billing"})),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(bob.clone(), "GET", "/access/me", None).await;
    assert_eq!(r.body["roles"], json!(["billing"]), "{r:?}");
    let r = call(bob.clone(), "POST", "/invoices", create("bob-1")).await;
    assert_eq!(r.status, 201, "{r:?}");
    // The role loses the permission: bob loses it at his next request.
    let r = env
        .call(
            "PUT",
            "/access/roles/billing",
            &[("authorization", &owner)],
            Some(json!({"permissions": ["invoices:read"]})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = call(bob.clone(), "POST", "/invoices", create("bob-2")).await;
    assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
    // Revoked, then the role deleted (with any grant of it left).
    let r = call(
        owner.clone(),
        "POST",
        "/access/grants",
        Some(json!({"subject": "carl", "role": "billing"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(
        owner.clone(),
        "POST",
        "/access/revocations",
        Some(json!({"subject": "bob", "role": "billing"})),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = env
        .call(
            "DELETE",
            "/access/roles/billing",
            &[("authorization", &owner)],
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = call(owner.clone(), "GET", "/access/grants", None).await;
    assert_eq!(r.body, json!({"items": [], "next_after": null}), "{r:?}");
    // One event per change, in order, by the owner, in acme's log.
    let su = env.db.connect_superuser().await.expect("superuser");
    let events: Vec<(String, String, String, Option<String>)> = su
        .query(
            "SELECT tenant_id::text, action, coalesce(target, ''), actor_subject FROM tenancy.audit_events
              WHERE action LIKE 'access.%' ORDER BY seq",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let acme = env.acme.to_string();
    let e = |a: &str, t: &str| {
        (
            acme.clone(),
            a.to_owned(),
            t.to_owned(),
            Some("olga".to_owned()),
        )
    };
    assert_eq!(
        events,
        vec![
            e("access.role.create", "role:billing"),
            e("access.grant", "subject:bob"),
            e("access.role.update", "role:billing"),
            e("access.grant", "subject:carl"),
            e("access.revoke", "subject:bob"),
            e("access.revoke", "subject:carl"),
            e("access.role.delete", "role:billing"),
        ]
    );
}

#[tokio::test]
async fn jwt_claims_map_to_roles_per_issuer() {
    let env = start().await;
    let (cust, _) = env.seed(env.acme, "acme").await;
    let signed = |iss: &str, edit: &dyn Fn(&mut Value)| {
        let mut c = claims(iss, env.acme);
        c["sub"] = json!("sso-user");
        edit(&mut c);
        let t = match iss {
            IDP_ISS => sign(Algorithm::RS256, &rsa_key(), &c, None),
            OTHER_ISS => sign(
                Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(b"other-issuer-secret-32-bytes-long!!"),
                &c,
                None,
            ),
            _ => sign(Algorithm::HS256, &hs_key(), &c, None),
        };
        format!("Bearer {t}")
    };
    let create = |auth: String, n: &'static str| {
        let env = &env;
        let body = invoice(&cust, n);
        async move {
            env.call("POST", "/invoices", &[("authorization", &auth)], body)
                .await
        }
    };
    // The identity provider names roles in `groups`.
    let viewer = signed(IDP_ISS, &|c| {
        c["groups"] = json!(["invoicing-viewers"]);
        c["roles"] = json!("owner");
    });
    let r = create(viewer, "idp-1").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "permission-denied"),
        "the idp's `roles` claim means nothing: {r:?}"
    );
    let admin = signed(IDP_ISS, &|c| {
        c["groups"] = json!(["unrelated", "invoicing-admins"])
    });
    let r = create(admin.clone(), "idp-2").await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = env
        .call("GET", "/access/me", &[("authorization", &admin)], None)
        .await;
    assert_eq!(r.body["roles"], json!(["admin"]), "{r:?}");
    // Another trusted issuer has no mapping: its `roles` and `groups` claims grant nothing.
    let other = signed(OTHER_ISS, &|_| {});
    let r = create(other.clone(), "other-1").await;
    assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
    let r = env
        .call("GET", "/access/me", &[("authorization", &other)], None)
        .await;
    assert_eq!(r.body["roles"], json!([]), "{r:?}");
    // The dev issuer names them in `roles`; a value with no mapping grants nothing.
    let unknown = signed(DEV_ISS, &|c| c["roles"] = json!("superuser root"));
    let r = create(unknown, "dev-1").await;
    assert_eq!(r.status, 403, "{r:?}");
    let member = signed(DEV_ISS, &|c| c["roles"] = json!(["viewer", "member"]));
    let r = create(member, "dev-2").await;
    assert_eq!(r.status, 201, "{r:?}");
}

#[tokio::test]
async fn a_grant_in_one_tenant_gives_nothing_in_another() {
    let env = start().await;
    let (acme_cust, _) = env.seed(env.acme, "acme").await;
    let (globex_cust, _) = env.seed(env.globex, "globex").await;
    let acme_owner = as_user(env.acme, "olga", &["owner"]);
    for body in [
        json!({"subject": "bob", "role": "admin"}),
        json!({"subject": "bob", "role": "owner"}),
    ] {
        let r = env
            .call(
                "POST",
                "/access/grants",
                &[("authorization", &acme_owner)],
                Some(body),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = env
        .call(
            "POST",
            "/access/roles",
            &[("authorization", &acme_owner)],
            Some(json!({"name": "billing", "permissions": ["invoices:create"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // bob is an admin and owner of acme…
    let in_acme = as_user(env.acme, "bob", &[]);
    let r = env
        .call(
            "POST",
            "/invoices",
            &[("authorization", &in_acme)],
            invoice(&acme_cust, "b-1"),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // …and nothing in globex: no roles, no permission, no view of acme's roles or grants.
    let in_globex = as_user(env.globex, "bob", &[]);
    let r = env
        .call("GET", "/access/me", &[("authorization", &in_globex)], None)
        .await;
    assert_eq!(
        (r.body["roles"].clone(), r.body["permissions"].clone()),
        (json!([]), json!([])),
        "{r:?}"
    );
    let r = env
        .call(
            "POST",
            "/invoices",
            &[("authorization", &in_globex)],
            invoice(&globex_cust, "b-1"),
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "permission-denied"), "{r:?}");
    for path in ["/access/grants", "/access/roles"] {
        let r = env
            .call("GET", path, &[("authorization", &in_globex)], None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (403, "permission-denied"),
            "{path}: {r:?}"
        );
    }
    let globex_owner = as_user(env.globex, "gina", &["owner"]);
    let r = env
        .call(
            "GET",
            "/access/grants",
            &[("authorization", &globex_owner)],
            None,
        )
        .await;
    assert_eq!(r.body["items"], json!([]), "{r:?}");
    let r = env
        .call(
            "GET",
            "/access/roles",
            &[("authorization", &globex_owner)],
            None,
        )
        .await;
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .expect("roles")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["owner", "admin", "member", "viewer"],
        "acme's custom role is not globex's"
    );
    // globex granting acme's custom role: unknown there.
    let r = env
        .call(
            "POST",
            "/access/grants",
            &[("authorization", &globex_owner)],
            Some(json!({"subject": "bob", "role": "billing"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not-found"), "{r:?}");
}

/// One refused management call: who, method, path, body, status, code, and what the
/// detail must name.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<Value>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn management_input_is_checked_and_a_refusal_stores_nothing() {
    let env = start().await;
    let owner = as_user(env.acme, "olga", &["owner"]);
    // A single owner by grant, so the last-owner rule can be tried.
    let r = env
        .call(
            "POST",
            "/access/grants",
            &[("authorization", &owner)],
            Some(json!({"subject": "olga", "role": "owner"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = env
        .call(
            "POST",
            "/access/roles",
            &[("authorization", &owner)],
            Some(json!({"name": "clerk", "permissions": ["access:manage", "invoices:read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = env
        .call(
            "POST",
            "/access/grants",
            &[("authorization", &owner)],
            Some(json!({"subject": "cleo", "role": "clerk"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = access_state(&env).await;
    let admin = as_user(env.acme, "ada", &["admin"]);
    let clerk = as_user(env.acme, "cleo", &[]);
    let member = as_user(env.acme, "max", &["member"]);
    let owner_by_grant = as_user(env.acme, "olga", &[]);
    let long = "a".repeat(65);
    let many: Vec<String> = (0..300).map(|_| "invoices:read".to_owned()).collect();
    let cases: Vec<Case> = vec![
        // (who, method, path, body, status, code, detail names)
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "x", "permissions": ["invoices:delete"]})),
            422,
            "validation",
            "permissions[0]: unknown permission \"invoices:delete\"",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "x", "permissions": ["invoices:read\u{0}"]})),
            422,
            "validation",
            "unknown permission",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "admin", "permissions": []})),
            422,
            "validation",
            "\"admin\" is built in",
        ),
        (
            "owner",
            "PUT",
            "/access/roles/viewer",
            Some(json!({"permissions": ["invoices:create"]})),
            422,
            "validation",
            "\"viewer\" is built in",
        ),
        (
            "owner",
            "DELETE",
            "/access/roles/owner",
            None,
            422,
            "validation",
            "\"owner\" is built in",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": long, "permissions": []})),
            422,
            "validation",
            "name:",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "Bad Name", "permissions": []})),
            422,
            "validation",
            "name:",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "x\u{0}", "permissions": []})),
            422,
            "validation",
            "name:",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "x", "permissions": many})),
            422,
            "validation",
            "at most 256",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "clerk", "permissions": []})),
            409,
            "conflict",
            "already exists",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": "x", "permissions": [], "extra": 1})),
            400,
            "bad-request",
            "extra",
        ),
        (
            "owner",
            "POST",
            "/access/roles",
            Some(json!({"name": 7, "permissions": []})),
            400,
            "bad-request",
            "name",
        ),
        (
            "owner",
            "PUT",
            "/access/roles/nosuch",
            Some(json!({"permissions": []})),
            404,
            "not-found",
            "nosuch",
        ),
        (
            "owner",
            "POST",
            "/access/grants",
            Some(json!({"subject": "bob", "role": "nosuch"})),
            404,
            "not-found",
            "nosuch",
        ),
        (
            "owner",
            "POST",
            "/access/grants",
            Some(json!({"subject": "bob\u{0}", "role": "viewer"})),
            422,
            "validation",
            "subject:",
        ),
        (
            "owner",
            "POST",
            "/access/grants",
            Some(json!({"subject": "", "role": "viewer"})),
            422,
            "validation",
            "subject:",
        ),
        (
            "owner",
            "POST",
            "/access/grants",
            Some(json!({"subject": "b".repeat(257), "role": "viewer"})),
            422,
            "validation",
            "subject:",
        ),
        (
            "owner",
            "POST",
            "/access/revocations",
            Some(json!({"subject": "olga", "role": "owner"})),
            409,
            "conflict",
            "last owner",
        ),
        (
            "owner",
            "POST",
            "/access/revocations",
            Some(json!({"subject": "nobody", "role": "viewer"})),
            404,
            "not-found",
            "grant",
        ),
        // Nobody hands out more than they hold.
        (
            "admin",
            "POST",
            "/access/grants",
            Some(json!({"subject": "bob", "role": "owner"})),
            403,
            "permission-denied",
            "\"owner\"",
        ),
        (
            "admin",
            "POST",
            "/access/revocations",
            Some(json!({"subject": "olga", "role": "owner"})),
            403,
            "permission-denied",
            "\"owner\"",
        ),
        (
            "clerk",
            "POST",
            "/access/grants",
            Some(json!({"subject": "bob", "role": "member"})),
            403,
            "permission-denied",
            "\"invoices:create\"",
        ),
        (
            "clerk",
            "POST",
            "/access/roles",
            Some(json!({"name": "x", "permissions": ["invoices:write"]})),
            403,
            "permission-denied",
            "\"invoices:write\"",
        ),
        (
            "member",
            "GET",
            "/access/roles",
            None,
            403,
            "permission-denied",
            "\"access:manage\"",
        ),
        (
            "member",
            "POST",
            "/access/grants",
            Some(json!({"subject": "max", "role": "admin"})),
            403,
            "permission-denied",
            "\"access:manage\"",
        ),
    ];
    for (who, method, path, body, status, code, names) in cases {
        let auth = match who {
            "owner" => &owner_by_grant,
            "admin" => &admin,
            "clerk" => &clerk,
            _ => &member,
        };
        let r = env
            .call(method, path, &[("authorization", auth)], body.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (status, code),
            "{who} {method} {path} {body:?}: {r:?}"
        );
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(names),
            "{who} {method} {path}: {detail:?} names {names:?}"
        );
    }
    assert_eq!(
        access_state(&env).await,
        before,
        "nothing of a refused call is stored"
    );
}

/// Every page of `GET /api-keys` as `auth`, `limit` a page.
async fn listed_keys(env: &Env, auth: &str, limit: u32) -> Vec<Value> {
    let (mut items, mut after) = (Vec::new(), String::new());
    loop {
        let r = env
            .call(
                "GET",
                &format!("/api-keys?limit={limit}{after}"),
                &[("authorization", auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.body["items"].as_array().expect("items");
        assert!(page.len() <= limit as usize);
        items.extend(page.iter().cloned());
        match r.body["next_after"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => return items,
        }
    }
}

#[tokio::test]
async fn only_admins_list_and_revoke_api_keys_and_only_their_tenants() {
    let env = start().await;
    let owner = as_user(env.acme, "olga", &["owner"]);
    let admin = as_user(env.acme, "ada", &["admin"]);
    let mut issued = Vec::new();
    for (i, auth) in [&owner, &admin, &owner].into_iter().enumerate() {
        let r = env
            .call(
                "POST",
                "/api-keys",
                &[("authorization", auth)],
                Some(json!({"name": format!("ci-{i}"), "scopes": ["invoices:read"]})),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.body.get("secret_hash").is_none(), "{r:?}");
        issued.push((
            r.body["key_id"].as_str().expect("id").to_owned(),
            r.body["key"].as_str().expect("key").to_owned(),
        ));
    }
    let globex_owner = as_user(env.globex, "gina", &["owner"]);
    let r = env
        .call(
            "POST",
            "/api-keys",
            &[("authorization", &globex_owner)],
            Some(json!({"name": "theirs", "scopes": ["invoices:read"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (theirs, their_key) = (
        r.body["key_id"].as_str().expect("id").to_owned(),
        r.body["key"].as_str().expect("key").to_owned(),
    );
    // Members and viewers may neither list nor revoke keys: 403 naming the permission.
    for role in ["member", "viewer"] {
        let auth = as_user(env.acme, role, &[role]);
        for (method, path) in [
            ("GET", "/api-keys".to_owned()),
            ("POST", format!("/api-keys/{}/revoke", issued[0].0)),
        ] {
            let r = env
                .call(method, &path, &[("authorization", &auth)], None)
                .await;
            assert_eq!(
                (r.status, r.code()),
                (403, "permission-denied"),
                "{role} {path}: {r:?}"
            );
            assert!(
                r.body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("\"api_keys:manage\"")),
                "{r:?}"
            );
        }
    }
    // An admin lists the tenant's own keys, newest first, in pages, without secrets.
    for limit in [1, 2, 50] {
        let keys = listed_keys(&env, &admin, limit).await;
        let ids: Vec<&str> = keys.iter().filter_map(|k| k["key_id"].as_str()).collect();
        let mut want: Vec<&str> = issued.iter().map(|(id, _)| id.as_str()).collect();
        want.sort_unstable();
        let mut got = ids.clone();
        got.sort_unstable();
        assert_eq!(got, want, "limit {limit}: only acme's keys, each once");
        for k in &keys {
            assert!(
                k.get("key").is_none() && k.get("secret_hash").is_none(),
                "{k}"
            );
        }
    }
    for (query, code) in [("limit=0", "validation"), ("after=nope", "validation")] {
        let r = env
            .call(
                "GET",
                &format!("/api-keys?{query}"),
                &[("authorization", &admin)],
                None,
            )
            .await;
        assert_eq!((r.status, r.code()), (422, code), "{query}: {r:?}");
    }
    // Another tenant's key is not found through this one, and keeps working.
    let r = env
        .call(
            "POST",
            &format!("/api-keys/{theirs}/revoke"),
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = env
        .call("GET", "/invoices", &[("x-api-key", &their_key)], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Revoked: the key stops authenticating at once.
    let r = env
        .call("GET", "/invoices", &[("x-api-key", &issued[0].1)], None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = env
        .call(
            "POST",
            &format!("/api-keys/{}/revoke", issued[0].0),
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["revoked_at"].is_string(), "{r:?}");
    let r = env
        .call("GET", "/invoices", &[("x-api-key", &issued[0].1)], None)
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = env
        .call("GET", "/invoices", &[("x-api-key", &issued[1].1)], None)
        .await;
    assert_eq!(r.status, 200, "the other keys stay: {r:?}");
}

/// The control log's API key events, as superuser, in order: tenant, action, target,
/// actor kind, subject, key id, request id and `after`.
async fn key_events(
    env: &Env,
) -> Vec<(
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Value,
)> {
    let su = env.db.connect_superuser().await.expect("superuser");
    su.query(
        "SELECT tenant_id::text, action, target, actor_kind, coalesce(actor_subject, ''),
                coalesce(actor_key_id, ''), coalesce(request_id, ''), coalesce(after, 'null')
           FROM tenancy_catalog.audit_log WHERE action LIKE 'api_key.%' ORDER BY seq",
        &[],
    )
    .await
    .expect("key events")
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
        )
    })
    .collect()
}

#[tokio::test]
async fn every_api_key_issue_and_revocation_is_an_audit_event_and_a_refused_one_is_none() {
    let env = start().await;
    let acme = env.acme.to_string();
    let owner = as_user(env.acme, "olga", &["owner"]);
    let admin = as_user(env.acme, "ada", &["admin"]);
    let viewer = as_user(env.acme, "vera", &["viewer"]);
    let member = as_user(env.acme, "max", &["member"]);
    let issue = |auth: &'static str, value: String, scopes: &[&str], rid: &'static str| {
        let body = Some(json!({"name": "ci", "scopes": scopes}));
        let env = &env;
        async move {
            env.call(
                "POST",
                "/api-keys",
                &[(auth, value.as_str()), ("x-request-id", rid)],
                body,
            )
            .await
        }
    };
    // Issued by a user: one event, in the same transaction as the key.
    let r = issue(
        "authorization",
        owner.clone(),
        &["invoices:read", "api_keys:manage"],
        "req-issue-1",
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let (k1, key1) = (
        r.body["key_id"].as_str().expect("id").to_owned(),
        r.body["key"].as_str().expect("key").to_owned(),
    );
    let events = key_events(&env).await;
    assert_eq!(
        events,
        [(
            acme.clone(),
            "api_key.issue".to_owned(),
            format!("api_key:{k1}"),
            "user".to_owned(),
            "olga".to_owned(),
            String::new(),
            "req-issue-1".to_owned(),
            json!({"name": "ci", "scopes": ["api_keys:manage", "invoices:read"]}),
        )],
        "{events:?}"
    );
    assert!(
        !format!("{events:?}").contains(&key1),
        "the key itself is never recorded"
    );
    // Refused issues (no permission, scopes beyond the caller's, undeclared scopes) and
    // refused revocations record nothing.
    for (auth, scopes) in [
        (&viewer, &["invoices:read"][..]),
        (&member, &["invoices:read"]),
        (&owner, &["invoices:*"]),
    ] {
        let r = issue("authorization", auth.clone(), scopes, "req-refused").await;
        assert!(matches!(r.status, 403 | 422), "{r:?}");
    }
    let r = issue(
        "x-api-key",
        key1.clone(),
        &["invoices:create"],
        "req-refused",
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "permission-denied"),
        "beyond the key: {r:?}"
    );
    for auth in [&viewer, &member] {
        let r = env
            .call(
                "POST",
                &format!("/api-keys/{k1}/revoke"),
                &[("authorization", auth)],
                None,
            )
            .await;
        assert_eq!(r.status, 403, "{r:?}");
    }
    let globex_owner = as_user(env.globex, "gina", &["owner"]);
    let r = env
        .call(
            "POST",
            &format!("/api-keys/{k1}/revoke"),
            &[("authorization", &globex_owner)],
            None,
        )
        .await;
    assert_eq!(r.status, 404, "another tenant's key: {r:?}");
    assert_eq!(
        key_events(&env).await,
        events,
        "nothing recorded for a refusal"
    );
    // Issued by an API key: the actor is the key, with its id.
    let r = issue("x-api-key", key1.clone(), &["invoices:read"], "req-issue-2").await;
    assert_eq!(r.status, 201, "{r:?}");
    let k2 = r.body["key_id"].as_str().expect("id").to_owned();
    // Revoked by an admin: one event; revoking it again changes and records nothing.
    for _ in 0..2 {
        let r = env
            .call(
                "POST",
                &format!("/api-keys/{k2}/revoke"),
                &[("authorization", &admin), ("x-request-id", "req-revoke")],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let events = key_events(&env).await;
    assert_eq!(events.len(), 3, "{events:?}");
    let (t, action, target, kind, subject, key_id, rid, after) = &events[1];
    assert_eq!(
        (
            t,
            action.as_str(),
            target,
            kind.as_str(),
            subject,
            key_id,
            rid.as_str()
        ),
        (
            &acme,
            "api_key.issue",
            &format!("api_key:{k2}"),
            "api_key",
            &format!("api_key:{k1}"),
            &k1,
            "req-issue-2"
        ),
        "{events:?}"
    );
    assert_eq!(after["scopes"], json!(["invoices:read"]));
    let (t, action, target, kind, subject, key_id, rid, after) = &events[2];
    assert_eq!(
        (
            t,
            action.as_str(),
            target,
            kind.as_str(),
            subject.as_str(),
            key_id.as_str(),
            rid.as_str()
        ),
        (
            &acme,
            "api_key.revoke",
            &format!("api_key:{k2}"),
            "user",
            "ada",
            "",
            "req-revoke"
        ),
        "{events:?}"
    );
    assert!(after["revoked_at"].is_string(), "{after}");
}

#[tokio::test]
async fn the_runtime_role_issues_keys_only_for_its_context_tenant_and_reads_no_hash() {
    use tenancy_sdk::bootstrap::RUNTIME_ROLE;
    use tenancy_sdk::{PoolOptions, TenantPool};
    let env = start().await;
    let pool = TenantPool::new(
        env.db.config_as(RUNTIME_ROLE),
        key(),
        PoolOptions::default(),
    )
    .expect("pool");
    let scopes = vec!["invoices:read".to_owned()];
    // In acme's context, a key is acme's: no argument names a tenant.
    let mut tx = pool.begin(env.acme).await.expect("begin");
    let by = tenancy_axum::api_key::KeyActor::user("script");
    let (rec, key) =
        tenancy_axum::api_key::issue_tenant_api_key(&mut tx, &by, "mine", &scopes, &scopes)
            .await
            .expect("issued");
    tx.commit().await.expect("commit");
    let runtime = tenancy_pg::connect(&env.db.config_as(RUNTIME_ROLE))
        .await
        .expect("runtime");
    let grant = tenancy_catalog::authenticate_api_key(&runtime, &rec.key_id, &key.hash())
        .await
        .expect("authenticate")
        .expect("a live key");
    assert_eq!(grant.tenant_id, env.acme);
    // Scopes beyond the caller's permissions are refused by the function itself.
    let mut tx = pool.begin(env.acme).await.expect("begin");
    let err = tenancy_axum::api_key::issue_tenant_api_key(
        &mut tx,
        &by,
        "more",
        &["invoices:read".to_owned(), "invoices:create".to_owned()],
        &scopes,
    )
    .await
    .expect_err("beyond the caller's permissions");
    assert!(
        format!("{err:?}").contains("permission of the caller"),
        "{err:?}"
    );
    drop(tx);
    // Without a context: nothing issued, nothing listed.
    for sql in [
        "SELECT * FROM tenancy_catalog.issue_tenant_api_key('00112233445566aa', '\\x00000000000000000000000000000000000000000000000000000000000000aa', 'x', '{}', '{}', 'user', 'u', NULL, NULL)",
    ] {
        let err = runtime.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("no tenant context"), "{err:?}");
    }
    // Nor without the actor its event records, nor as an actor an application may not
    // speak for.
    for (sql, refusal) in [
        (
            "SELECT * FROM tenancy_catalog.issue_tenant_api_key('00112233445566aa', '\\x00', 'x', '{}', '{}')",
            "permission denied",
        ),
        (
            "SELECT * FROM tenancy_catalog.revoke_tenant_api_key('00112233445566aa')",
            "permission denied",
        ),
        (
            "SELECT * FROM tenancy_catalog.issue_tenant_api_key('00112233445566aa', '\\x00', 'x', '{}', '{}', 'admin', 'root', NULL, NULL)",
            "must be a user or an API key",
        ),
        (
            "SELECT * FROM tenancy_catalog.revoke_tenant_api_key('00112233445566aa', 'system', NULL, NULL, NULL)",
            "must be a user or an API key",
        ),
    ] {
        let mut tx = pool.begin(env.acme).await.expect("begin");
        let err = tx.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains(refusal), "{sql}: {err:?}");
        drop(tx);
    }
    let n: i64 = runtime
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.tenant_api_keys(NULL, '', 1000)",
            &[],
        )
        .await
        .expect("list")
        .get(0);
    assert_eq!(n, 0);
    // No hash, no key table, no other tenant's key: not readable, not writable.
    for sql in [
        "SELECT secret_hash FROM tenancy_catalog.api_keys",
        "SELECT count(*) FROM tenancy_catalog.api_keys",
        "INSERT INTO tenancy_catalog.api_keys (key_id, tenant_id, name, secret_hash) SELECT '00112233445566bb', id, 'x', '\\x00' FROM tenancy_catalog.tenants",
        "UPDATE tenancy_catalog.api_keys SET tenant_id = tenant_id",
    ] {
        let err = runtime.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("permission denied"), "{sql}: {err:?}");
    }
    let mut tx = pool.begin(env.globex).await.expect("begin");
    let theirs = tenancy_axum::api_key::tenant_api_keys(&mut tx, None, 1000)
        .await
        .expect("list");
    assert!(theirs.iter().all(|k| k.key_id != rec.key_id), "{theirs:?}");
    let revoked = tenancy_axum::api_key::revoke_tenant_api_key(&mut tx, &by, &rec.key_id)
        .await
        .expect("revoke");
    assert!(revoked.is_none(), "another tenant's key is not revocable");
    tx.commit().await.expect("commit");
    let mut tx = pool.begin(env.acme).await.expect("begin");
    let mine = tenancy_axum::api_key::tenant_api_keys(&mut tx, None, 1000)
        .await
        .expect("list");
    let rows = tx
        .query(
            "SELECT * FROM tenancy_catalog.tenant_api_keys(NULL, '', 10)",
            &[],
        )
        .await
        .expect("list");
    let columns: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        columns,
        [
            "key_id",
            "name",
            "scopes",
            "created_at",
            "revoked_at",
            "last_used_at"
        ],
        "no hash among what the runtime role gets"
    );
    tx.commit().await.expect("commit");
    assert!(mine
        .iter()
        .any(|k| k.key_id == rec.key_id && k.revoked_at.is_none()));
    assert!(
        tenancy_catalog::authenticate_api_key(&runtime, &rec.key_id, &key.hash())
            .await
            .expect("authenticate")
            .is_some()
    );
}
