//! Custom domains: claim, TXT verification through the resolver trait, conflicts between
//! tenants, disable and removal, and resolution through the snapshot.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn domain_lifecycle_with_txt_verification() {
    let db = fresh_db().await;
    let app = app(&db).await;
    let a = tenant(&db, "pro", "eu-west").await;
    let b = tenant(&db, "pro", "eu-west").await;
    let path =
        |t: tenancy_core::TenantId, rest: &str| format!("/v1/config/tenants/{t}/domains/{rest}");

    let bad = call(app.addr, "PUT", &path(a, "not_a_host"), &[ACTOR], None).await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);

    let claim = call(app.addr, "PUT", &path(a, "App.Acme.com"), &[ACTOR], None).await;
    assert_eq!(claim.status, 200, "{:?}", claim.body);
    assert_eq!(claim.body["hostname"], "app.acme.com");
    assert_eq!(claim.body["state"], "pending");
    assert_eq!(
        claim.body["challenge"]["name"],
        "_tenancy-challenge.app.acme.com"
    );
    let value = claim.body["challenge"]["value"]
        .as_str()
        .expect("challenge")
        .to_owned();
    // Claiming again returns the same token.
    let again = call(app.addr, "PUT", &path(a, "app.acme.com"), &[ACTOR], None).await;
    assert_eq!(again.body["challenge"]["value"], json!(value));

    // No record yet: stays pending, says why.
    let check = call(
        app.addr,
        "POST",
        &path(a, "app.acme.com/verify"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(check.status, 200);
    assert_eq!(check.body["state"], "pending");
    assert!(check.body["last_error"]
        .as_str()
        .unwrap_or("")
        .contains("no TXT record"));
    // A wrong record does not verify either.
    app.dns.add_txt(
        "_tenancy-challenge.app.acme.com",
        "tenancy-domain-verification=someone-else",
    );
    let check = call(
        app.addr,
        "POST",
        &path(a, "app.acme.com/verify"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(check.body["state"], "pending");

    // Tenant b claims the same host: allowed while pending (claims are cheap), but only
    // one tenant can hold it verified.
    let claim_b = call(app.addr, "PUT", &path(b, "app.acme.com"), &[ACTOR], None).await;
    assert_eq!(claim_b.status, 200);
    let value_b = claim_b.body["challenge"]["value"]
        .as_str()
        .expect("challenge")
        .to_owned();
    assert_ne!(value, value_b);

    app.dns.add_txt("_tenancy-challenge.app.acme.com", &value);
    let ok = call(
        app.addr,
        "POST",
        &path(a, "app.acme.com/verify"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(ok.body["state"], "verified", "{:?}", ok.body);
    eventually(&app.client, "domain resolves", |c| {
        c.snapshot().tenant_for_domain("app.acme.com") == Some(a)
    })
    .await;

    app.dns.add_txt("_tenancy-challenge.app.acme.com", &value_b);
    let conflict = call(
        app.addr,
        "POST",
        &path(b, "app.acme.com/verify"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(conflict.status, 409, "{:?}", conflict.body);
    assert_eq!(conflict.body["code"], "conflict");

    let list = call(
        app.addr,
        "GET",
        &format!("/v1/config/tenants/{a}/domains"),
        &[],
        None,
    )
    .await;
    assert_eq!(list.body["domains"][0]["state"], "verified");

    let off = call(
        app.addr,
        "POST",
        &path(a, "app.acme.com/disable"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(off.body["state"], "disabled");
    eventually(&app.client, "disabled domain no longer resolves", |c| {
        c.snapshot().tenant_for_domain("app.acme.com").is_none()
    })
    .await;
    // Now b can prove it.
    let ok_b = call(
        app.addr,
        "POST",
        &path(b, "app.acme.com/verify"),
        &[ACTOR],
        None,
    )
    .await;
    assert_eq!(ok_b.body["state"], "verified", "{:?}", ok_b.body);
    eventually(&app.client, "domain moves to b", |c| {
        c.snapshot().tenant_for_domain("app.acme.com") == Some(b)
    })
    .await;

    let gone = call(app.addr, "DELETE", &path(b, "app.acme.com"), &[ACTOR], None).await;
    assert_eq!(gone.status, 200);
    eventually(&app.client, "removed domain no longer resolves", |c| {
        c.snapshot().tenant_for_domain("app.acme.com").is_none()
    })
    .await;
    let missing = call(app.addr, "DELETE", &path(b, "app.acme.com"), &[ACTOR], None).await;
    assert_eq!(missing.status, 404);
}
