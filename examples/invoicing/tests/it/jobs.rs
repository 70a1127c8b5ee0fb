//! Jobs run as the tenant that enqueued them, and only with a valid signed context.

use std::time::Duration;

use serde_json::json;
use tenancy_sdk::bootstrap::OWNER_ROLE;

use crate::support::*;

async fn job_state(env: &Env, job: &str) -> (String, Option<String>) {
    let su = env.db.connect_superuser().await.expect("superuser");
    let id: uuid::Uuid = job.parse().expect("job id");
    let row = su
        .query_one(
            "SELECT state, last_error FROM tenancy.jobs WHERE id = $1",
            &[&id],
        )
        .await
        .expect("job row");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn send_invoice_job_runs_in_the_right_tenant() {
    let env = start().await;
    let (_, a_inv) = env.seed(env.acme, "acme").await;
    let (_, g_inv) = env.seed(env.globex, "globex").await;
    let ra = env
        .as_tenant(env.acme, "POST", &format!("/invoices/{a_inv}/send"), None)
        .await;
    let rg = env
        .as_tenant(env.globex, "POST", &format!("/invoices/{g_inv}/send"), None)
        .await;
    assert_eq!((ra.status, rg.status), (202, 202), "{ra:?} {rg:?}");
    let (ja, jg) = (
        ra.body["job_id"].as_str().expect("job").to_owned(),
        rg.body["job_id"].as_str().expect("job").to_owned(),
    );
    for (job, _) in [(&ja, "acme"), (&jg, "globex")] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                job_state(&env, job).await.0 == "done"
            })
            .await,
            "job {job} done: {:?}",
            job_state(&env, job).await
        );
    }
    for (tenant, inv, job, email) in [
        (env.acme, &a_inv, &ja, "billing@acme.example"),
        (env.globex, &g_inv, &jg, "billing@globex.example"),
    ] {
        let r = env
            .as_tenant(tenant, "GET", &format!("/invoices/{inv}/deliveries"), None)
            .await;
        assert_eq!(
            r.body,
            json!([{"job_id": job, "recipient": email, "tenant_id": tenant.to_string()}]),
            "{r:?}"
        );
        let r = env
            .as_tenant(tenant, "GET", &format!("/invoices/{inv}"), None)
            .await;
        assert_eq!(
            (r.body["status"].as_str(), r.body["sent"].as_bool()),
            (Some("sent"), Some(true))
        );
    }
    // Jobs are enqueued, not read, by the runtime role: not even its own tenant's (what a
    // tenant sees of a job is what the handler wrote, the delivery above).
    let pool = tenancy_sdk::TenantPool::new(
        env.db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        key(),
        Default::default(),
    )
    .expect("pool");
    let mut tx = pool.begin(env.acme).await.expect("begin");
    let err = tx
        .query_one("SELECT count(*) FROM tenancy.jobs", &[])
        .await
        .expect_err("the runtime role reads no jobs");
    assert_eq!(
        err.sqlstate(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
}

#[tokio::test]
async fn jobs_without_a_valid_signed_tenant_are_refused() {
    let env = start().await;
    let (_, a_inv) = env.seed(env.acme, "acme").await;
    let (_, g_inv) = env.seed(env.globex, "globex").await;
    // Enqueue properly for acme, then, as the owner (what a compromised migration or a
    // hand edit could do), retarget the job to globex and add an unsigned job.
    let r = env
        .as_tenant(env.acme, "POST", &format!("/invoices/{a_inv}/send"), None)
        .await;
    let job = r.body["job_id"].as_str().expect("job").to_owned();
    // The worker may already have run it; enqueue unsigned/tampered jobs directly.
    let owner = connect(env.db.config_as(OWNER_ROLE)).await;
    let tampered = uuid::Uuid::new_v4();
    let unsigned = uuid::Uuid::new_v4();
    let payload = json!({"invoice_id": g_inv}).to_string();
    let sig = owner
        .query_one(
            "SELECT signature, issued_at FROM tenancy.jobs WHERE id = $1",
            &[&job.parse::<uuid::Uuid>().expect("id")],
        )
        .await
        .expect("job");
    let (signature, issued): (Option<String>, i64) = (sig.get(0), sig.get(1));
    owner
        .execute(
            "INSERT INTO tenancy.jobs (tenant_id, id, queue, kind, payload, issued_at, signature) VALUES
             ($1, $2, 'invoicing', 'send_invoice', $3, $4, $5),
             ($1, $6, 'invoicing', 'send_invoice', $3, $4, NULL)",
            &[&env.globex.as_uuid(), &tampered, &payload, &issued, &signature, &unsigned],
        )
        .await
        .expect("insert forged jobs");
    for id in [tampered, unsigned] {
        let id = id.to_string();
        assert!(
            eventually(Duration::from_secs(5), || async {
                job_state(&env, &id).await.0 == "rejected"
            })
            .await,
            "forged job refused: {:?}",
            job_state(&env, &id).await
        );
    }
    // Nothing was delivered for globex's invoice.
    let r = env
        .as_tenant(
            env.globex,
            "GET",
            &format!("/invoices/{g_inv}/deliveries"),
            None,
        )
        .await;
    assert_eq!(r.body, json!([]), "{r:?}");
    // And a tenant transaction cannot enqueue a job for another tenant (RLS WITH CHECK).
    let pool = tenancy_sdk::TenantPool::new(
        env.db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        key(),
        Default::default(),
    )
    .expect("pool");
    let mut tx = pool.begin(env.acme).await.expect("begin");
    let err = tx
        .execute(
            "INSERT INTO tenancy.jobs (tenant_id, id, kind, payload, issued_at) VALUES ($1, gen_random_uuid(), 'send_invoice', '{}', 0)",
            &[&env.globex.as_uuid()],
        )
        .await
        .expect_err("cross-tenant enqueue refused");
    assert_eq!(
        err.sqlstate(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
}
