//! Input the database cannot store or compute with is a 4xx problem naming the field,
//! never a 500, and nothing of the request is stored.

use serde_json::{json, Value};

use crate::anonymous::db_state;
use crate::support::*;

fn assert_names_field(r: &Resp, field: &str, what: &str) {
    assert!(
        r.status == 400 || r.status == 422,
        "{what}: expected a 4xx problem, got {r:?}"
    );
    assert_eq!(r.content_type, "application/problem+json", "{what}: {r:?}");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(field),
        "{what}: the problem must name {field:?}: {r:?}"
    );
}

#[tokio::test]
async fn nul_bytes_in_any_text_field_are_refused_naming_the_field_and_nothing_is_stored() {
    let env = start().await;
    let (cust, inv) = env.seed(env.acme, "acme").await;
    let before = db_state(&env).await;
    let nul = "a\u{0}b";
    let line = |d: &str| json!({"description": d, "quantity": 1, "unit_price_cents": 1});
    let cases: Vec<(&str, String, Value, &str)> = vec![
        (
            "POST",
            "/customers".into(),
            json!({"name": nul, "email": "x@y.test"}),
            "name",
        ),
        (
            "POST",
            "/customers".into(),
            json!({"name": "x", "email": "x\u{0}@y.test"}),
            "email",
        ),
        (
            "PATCH",
            format!("/customers/{cust}"),
            json!({"name": nul}),
            "name",
        ),
        (
            "PATCH",
            format!("/customers/{cust}"),
            json!({"email": "a@b\u{0}.test"}),
            "email",
        ),
        (
            "POST",
            "/invoices".into(),
            json!({"customer_id": cust, "number": nul}),
            "number",
        ),
        (
            "POST",
            "/invoices".into(),
            json!({"customer_id": cust, "number": "N-2", "lines": [line("ok"), line(nul)]}),
            "lines[1].description",
        ),
        (
            "PATCH",
            format!("/invoices/{inv}"),
            json!({"number": nul}),
            "number",
        ),
        (
            "PATCH",
            format!("/invoices/{inv}"),
            json!({"status": "draft\u{0}"}),
            "status",
        ),
        (
            "POST",
            format!("/invoices/{inv}/lines"),
            line(nul),
            "description",
        ),
    ];
    for (method, path, body, field) in cases {
        let r = env.as_tenant(env.acme, method, &path, Some(body)).await;
        assert_names_field(&r, field, &format!("{method} {path}"));
    }
    // A query parameter too.
    let r = env
        .as_tenant(env.acme, "GET", "/invoices?status=draft%00", None)
        .await;
    assert_names_field(&r, "status", "GET /invoices?status");
    assert_eq!(db_state(&env).await, before, "nothing stored");
}

#[tokio::test]
async fn amounts_that_overflow_are_refused_naming_the_field_and_nothing_is_stored() {
    let env = start().await;
    let (cust, inv) = env.seed(env.acme, "acme").await;
    let before = db_state(&env).await;
    let huge = |q: i64, p: i64| json!({"description": "x", "quantity": q, "unit_price_cents": p});
    // quantity × unit price beyond 64 bits, one line.
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            "/invoices",
            Some(json!({"customer_id": cust, "number": "BIG-1",
                        "lines": [huge(2_147_483_647, 10_000_000_000)]})),
        )
        .await;
    assert_names_field(&r, "lines[0].quantity", "POST /invoices");
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            &format!("/invoices/{inv}/lines"),
            Some(huge(2_147_483_647, 10_000_000_000)),
        )
        .await;
    assert_names_field(&r, "quantity", "POST lines");
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            &format!("/invoices/{inv}/lines"),
            Some(huge(1, i64::MAX)),
        )
        .await;
    assert_names_field(&r, "unit_price_cents", "POST lines, price");
    // Beyond 32 bits the JSON itself does not fit the field: a 400 naming it.
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            &format!("/invoices/{inv}/lines"),
            Some(huge(2_147_483_648, 1)),
        )
        .await;
    assert_names_field(&r, "quantity", "POST lines, quantity beyond i32");
    // Lines each within bounds whose sum is too large for an invoice.
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            "/invoices",
            Some(json!({"customer_id": cust, "number": "BIG-2",
                        "lines": [huge(1_000_000, 100_000_000_000)]})),
        )
        .await;
    assert_names_field(&r, "lines", "POST /invoices, total");
    let r = env
        .as_tenant(
            env.acme,
            "POST",
            &format!("/invoices/{inv}/lines"),
            Some(huge(1_000_000, 100_000_000_000)),
        )
        .await;
    assert_names_field(&r, "unit_price_cents", "POST lines, total");
    assert_eq!(db_state(&env).await, before, "nothing stored");
    // Everything still reads.
    for path in [
        "/invoices".to_owned(),
        format!("/invoices/{inv}"),
        "/reports/summary".into(),
    ] {
        let r = env.as_tenant(env.acme, "GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
}
