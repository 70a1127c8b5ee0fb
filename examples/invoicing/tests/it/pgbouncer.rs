//! The example app serving tenants through PgBouncer in transaction mode: the router's
//! tenant pools in `Pooler::Transaction` mode reach the cluster the catalog names through
//! a PgBouncer with three backends; the catalog and the job queue stay direct.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn the_app_serves_tenants_through_pgbouncer_and_keeps_them_apart() {
    let env = std::sync::Arc::new(start_through_pgbouncer().await);
    let (a_cust, a_inv) = env.seed(env.acme, "acme").await;
    let (_, g_inv) = env.seed(env.globex, "globex").await;

    // Many requests at once, from both tenants: more than the pooler's three backends.
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (tenant, own) = if i % 2 == 0 {
            (env.acme, "acme-0001")
        } else {
            (env.globex, "globex-0001")
        };
        let env = std::sync::Arc::clone(&env);
        calls.spawn(async move {
            let r = env.as_tenant(tenant, "GET", "/invoices", None).await;
            (r, own)
        });
    }
    while let Some(done) = calls.join_next().await {
        let (r, own) = done.expect("request task");
        assert_eq!(r.status, 200, "{r:?}");
        let numbers: Vec<&str> = r
            .body
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|i| i["number"].as_str())
            .collect();
        assert_eq!(numbers, [own], "each tenant sees only its own invoice");
    }

    // Another tenant's ids are the same 404 as ids that exist nowhere.
    let r = env
        .as_tenant(env.acme, "GET", &format!("/invoices/{g_inv}"), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = env
        .as_tenant(env.acme, "GET", &format!("/invoices/{a_inv}"), None)
        .await;
    assert_eq!(
        (r.status, r.body["total_cents"].as_i64()),
        (200, Some(8000))
    );
    let r = env
        .as_tenant(env.globex, "DELETE", &format!("/customers/{a_cust}"), None)
        .await;
    assert_eq!(r.status, 404, "{r:?}");

    // A job enqueued through the pooler runs in its tenant's transaction, through it too.
    let r = env
        .as_tenant(env.acme, "POST", &format!("/invoices/{a_inv}/send"), None)
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let job: uuid::Uuid = r.body["job_id"]
        .as_str()
        .expect("job id")
        .parse()
        .expect("uuid");
    let su = env.db.connect_superuser().await.expect("superuser");
    let done = eventually(Duration::from_secs(10), || async {
        su.query_one("SELECT state FROM tenancy.jobs WHERE id = $1", &[&job])
            .await
            .map(|r| r.get::<_, String>(0) == "done")
            .unwrap_or(false)
    })
    .await;
    assert!(done, "the job ran");
    let r = env
        .as_tenant(env.acme, "GET", &format!("/invoices/{a_inv}"), None)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["sent"], true, "{r:?}");
}
