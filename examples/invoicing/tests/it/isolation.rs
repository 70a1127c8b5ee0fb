//! Cross-tenant attempts through every endpoint: another tenant's id is the same 404 as
//! an id that does not exist, and changes nothing.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn tenants_see_only_their_own_data_through_every_endpoint() {
    let env = start().await;
    let (a_cust, a_inv) = env.seed(env.acme, "acme").await;
    let (g_cust, g_inv) = env.seed(env.globex, "globex").await;
    let random = uuid::Uuid::new_v4().to_string();

    // Lists and reports show only the caller's rows.
    let r = env.as_tenant(env.acme, "GET", "/customers", None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1), "{r:?}");
    assert_eq!(r.body[0]["id"], a_cust.as_str());
    let r = env.as_tenant(env.globex, "GET", "/invoices", None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));
    assert_eq!(r.body[0]["number"], "globex-0001");
    let r = env
        .as_tenant(env.acme, "GET", "/reports/summary", None)
        .await;
    assert_eq!(
        (r.body["customers"].as_i64(), r.body["invoices"].as_i64()),
        (Some(1), Some(1)),
        "{r:?}"
    );
    assert_eq!(r.body["total_cents"], 8000);
    assert_eq!(r.body["tenant"], "acme");
    let r = env
        .as_tenant(env.acme, "GET", &format!("/invoices/{a_inv}"), None)
        .await;
    assert_eq!(
        (r.status, r.body["total_cents"].as_i64()),
        (200, Some(8000)),
        "{r:?}"
    );
    assert_eq!(r.body["lines"].as_array().map(Vec::len), Some(2));

    // Every endpoint, acme using globex's ids vs ids that exist nowhere.
    let cases: Vec<(&str, String, String, Option<serde_json::Value>)> = vec![
        (
            "GET",
            format!("/customers/{g_cust}"),
            format!("/customers/{random}"),
            None,
        ),
        (
            "PATCH",
            format!("/customers/{g_cust}"),
            format!("/customers/{random}"),
            Some(json!({"name": "pwned"})),
        ),
        (
            "DELETE",
            format!("/customers/{g_cust}"),
            format!("/customers/{random}"),
            None,
        ),
        (
            "GET",
            format!("/invoices/{g_inv}"),
            format!("/invoices/{random}"),
            None,
        ),
        (
            "PATCH",
            format!("/invoices/{g_inv}"),
            format!("/invoices/{random}"),
            Some(json!({"status": "void"})),
        ),
        (
            "DELETE",
            format!("/invoices/{g_inv}"),
            format!("/invoices/{random}"),
            None,
        ),
        (
            "POST",
            format!("/invoices/{g_inv}/lines"),
            format!("/invoices/{random}/lines"),
            Some(json!({"description": "x", "quantity": 1, "unit_price_cents": 1})),
        ),
        (
            "POST",
            format!("/invoices/{g_inv}/send"),
            format!("/invoices/{random}/send"),
            None,
        ),
        (
            "GET",
            format!("/invoices/{g_inv}/deliveries"),
            format!("/invoices/{random}/deliveries"),
            None,
        ),
    ];
    for (method, theirs, nowhere, body) in cases {
        let a = env.as_tenant(env.acme, method, &theirs, body.clone()).await;
        let b = env.as_tenant(env.acme, method, &nowhere, body).await;
        assert_eq!(a.status, 404, "{method} {theirs}: {a:?}");
        assert_eq!(
            a.said(),
            b.said(),
            "{method}: another tenant's id must look like no id at all"
        );
        assert_eq!(a.content_type, b.content_type);
    }
    // Creating an invoice for another tenant's customer: same 404 as a made-up customer.
    let body = |c: &str| Some(json!({"customer_id": c, "number": "X-1"}));
    let a = env
        .as_tenant(env.acme, "POST", "/invoices", body(&g_cust))
        .await;
    let b = env
        .as_tenant(env.acme, "POST", "/invoices", body(&random))
        .await;
    assert_eq!((a.status, a.said()), (404, b.said()), "{a:?}");
    // The same email in two tenants is fine (keys are per tenant) and reveals nothing.
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            "/customers",
            Some(json!({"name": "dup", "email": "billing@globex.example"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Globex's data is untouched.
    let r = env
        .as_tenant(env.globex, "GET", &format!("/invoices/{g_inv}"), None)
        .await;
    assert_eq!(
        (
            r.status,
            r.body["status"].as_str(),
            r.body["total_cents"].as_i64()
        ),
        (200, Some("draft"), Some(8000)),
        "{r:?}"
    );
    let r = env
        .as_tenant(env.globex, "GET", &format!("/customers/{g_cust}"), None)
        .await;
    assert_eq!(r.body["name"], "globex customer");
    // A malformed id is a 404 too.
    let r = env
        .as_tenant(env.acme, "GET", "/invoices/not-a-uuid", None)
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn crud_and_report_work_for_one_tenant() {
    let env = start().await;
    let (cust, inv) = env.seed(env.acme, "acme").await;
    let r = env
        .as_tenant(
            env.acme,
            "PATCH",
            &format!("/customers/{cust}"),
            Some(json!({"name": "Acme Billing"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["name"].as_str()),
        (200, Some("Acme Billing")),
        "{r:?}"
    );
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            &format!("/invoices/{inv}/lines"),
            Some(json!({"description": "Extra", "quantity": 2, "unit_price_cents": 250})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["total_cents"].as_i64()),
        (201, Some(8500)),
        "{r:?}"
    );
    let r = env
        .as_tenant(
            env.acme,
            "PATCH",
            &format!("/invoices/{inv}"),
            Some(json!({"status": "paid"})),
        )
        .await;
    assert_eq!(r.body["status"], "paid");
    let r = env
        .as_tenant(env.acme, "GET", "/invoices?status=paid", None)
        .await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));
    let r = env
        .as_tenant(env.acme, "GET", "/reports/summary", None)
        .await;
    assert_eq!(r.body["by_status"]["paid"]["total_cents"], 8500, "{r:?}");
    // A customer with invoices cannot be deleted; after the invoice goes, it can.
    let r = env
        .as_tenant(env.acme, "DELETE", &format!("/customers/{cust}"), None)
        .await;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{r:?}");
    let r = env
        .as_tenant(env.acme, "DELETE", &format!("/invoices/{inv}"), None)
        .await;
    assert_eq!(r.status, 204);
    let r = env
        .as_tenant(env.acme, "DELETE", &format!("/customers/{cust}"), None)
        .await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = env.as_tenant(env.acme, "GET", "/customers", None).await;
    assert_eq!(r.body, json!([]));
}
