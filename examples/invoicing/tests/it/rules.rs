//! The rejection rules, as RFC 9457 problems that never reveal other tenants.

use tenancy_core::{TenantId, TenantState};

use crate::support::*;

fn assert_problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.content_type, "application/problem+json", "{r:?}");
    assert_eq!(r.body["code"], code, "{r:?}");
    assert_eq!(
        r.body["type"],
        format!("urn:tenancy:problem:{code}"),
        "{r:?}"
    );
    assert_eq!(r.body["status"], status, "{r:?}");
    assert!(r.body["title"].is_string(), "{r:?}");
}

#[tokio::test]
async fn rejection_rules() {
    let env = start().await;
    let acme_jwt = format!("Bearer {}", token(env.acme));

    // No credential → 401, whatever the request names.
    let r = env.call("GET", "/me", &[], None).await;
    assert_problem(&r, 401, "unauthenticated");
    let r = env.call("GET", "/me", &[("host", BASE_DOMAIN)], None).await;
    assert_problem(&r, 401, "unauthenticated");
    let r = env
        .call("GET", "/me", &[("host", "nosuchco.invoicing.test")], None)
        .await;
    assert_problem(&r, 401, "unauthenticated");

    // Sources that disagree → 403, whether the other tenant exists or not, same body.
    let to_globex = env
        .call(
            "GET",
            "/me",
            &[
                ("authorization", &acme_jwt),
                ("host", "globex.invoicing.test"),
            ],
            None,
        )
        .await;
    assert_problem(&to_globex, 403, "tenant-mismatch");
    let to_nobody = env
        .call(
            "GET",
            "/me",
            &[
                ("authorization", &acme_jwt),
                ("host", "nosuchco.invoicing.test"),
            ],
            None,
        )
        .await;
    assert_problem(&to_nobody, 403, "tenant-mismatch");
    assert_eq!(
        to_globex.said(),
        to_nobody.said(),
        "a mismatch says nothing about the other tenant"
    );
    let r = env
        .call(
            "GET",
            "/me",
            &[("authorization", &acme_jwt), ("x-tenant-id", "globex")],
            None,
        )
        .await;
    assert_problem(&r, 403, "tenant-mismatch");
    let r = env
        .call("GET", "/t/globex/me", &[("authorization", &acme_jwt)], None)
        .await;
    assert_problem(&r, 403, "tenant-mismatch");

    // Unknown tenant → 404 (by slug from the trusted gateway, by id in a valid token).
    let r = env
        .call("GET", "/me", &[("x-tenant-id", "nosuchco")], None)
        .await;
    assert_problem(&r, 404, "tenant-not-found");
    let ghost = format!("Bearer {}", token(TenantId::new_random()));
    let r = env
        .call("GET", "/me", &[("authorization", &ghost)], None)
        .await;
    assert_problem(&r, 404, "tenant-not-found");

    // Suspended → 403 tenant-suspended; provisioning → 409; deleting → 410.
    let r = env.as_tenant(env.initech, "GET", "/me", None).await;
    assert_problem(&r, 403, "tenant-suspended");
    let r = env
        .call("GET", "/me", &[("x-tenant-id", "hooli")], None)
        .await;
    assert_problem(&r, 409, "tenant-provisioning");
    let r = env.as_tenant(env.hooli, "GET", "/me", None).await;
    assert_problem(&r, 409, "tenant-provisioning");
    let r = env.as_tenant(env.umbrella, "GET", "/me", None).await;
    assert_problem(&r, 410, "tenant-deleted");

    // A tenant suspended while the app runs is refused at once (catalog notification),
    // and resumes when reactivated.
    let r = env.as_tenant(env.globex, "GET", "/customers", None).await;
    assert_eq!(r.status, 200);
    let mut owner = connect(env.db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    tenancy_catalog::set_state(
        &mut owner,
        env.globex,
        TenantState::Suspended,
        "test",
        "non-payment",
    )
    .await
    .expect("suspend");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            env.as_tenant(env.globex, "GET", "/customers", None)
                .await
                .code()
                == "tenant-suspended"
        })
        .await
    );
    tenancy_catalog::set_state(&mut owner, env.globex, TenantState::Active, "test", "paid")
        .await
        .expect("reactivate");
    assert!(
        eventually(std::time::Duration::from_secs(3), || async {
            env.as_tenant(env.globex, "GET", "/customers", None)
                .await
                .status
                == 200
        })
        .await
    );

    // Unknown routes and bad bodies are problems too.
    let r = env.as_tenant(env.acme, "GET", "/nope", None).await;
    assert_problem(&r, 404, "not-found");
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            "/customers",
            Some(serde_json::json!({"nom": 1})),
        )
        .await;
    assert_problem(&r, 400, "bad-request");
}
