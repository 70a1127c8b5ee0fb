//! Three databases of the app's single-tenant era (its tables without `tenant_id`),
//! generated here with different rows, imported as pooled tenants with
//! `tenancy_transfer::legacy` and then served by the running app: each tenant's API
//! shows exactly its source's rows, and another tenant's imported ids are 404.

use serde_json::Value;
use tenancy_catalog::NewTenant;
use tenancy_core::{Placement, TenantId, TenantState};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{ClusterAccess, ClusterCredentials, Router, RouterOptions};
use tenancy_transfer::legacy::{self, LegacyOptions};
use tokio_postgres::Client;

use crate::support::*;

/// The example app's tables before tenants, and its migration ledger.
const SINGLE_TENANT_SCHEMA: &str = "
CREATE SCHEMA invoicing;
CREATE TABLE invoicing.customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE invoicing.invoices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES invoicing.customers, number text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'draft', currency text NOT NULL DEFAULT 'EUR', sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE invoicing.line_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoicing.invoices ON DELETE CASCADE,
    description text NOT NULL, quantity integer NOT NULL, unit_price_cents bigint NOT NULL);
CREATE TABLE invoicing.deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoicing.invoices ON DELETE CASCADE,
    job_id uuid NOT NULL UNIQUE, recipient text NOT NULL, sent_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.invoicing_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO public.invoicing_migrations (name) VALUES ('0001_invoicing');
";

/// A source database with `n` customers tagged `tag`, two invoices each (one sent), and
/// `items` line items per invoice; a superuser connection to it.
async fn source(env: &Env, tag: &str, n: i32, items: i32) -> Client {
    let name = format!("{}_{tag}", env.db.name);
    let admin = connect(env.db.cluster.config("postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create source");
    let c = connect(env.db.cluster.config(&name)).await;
    c.batch_execute(SINGLE_TENANT_SCHEMA).await.expect("schema");
    c.execute(
        "INSERT INTO invoicing.customers (name, email)
         SELECT $1 || ' customer ' || g, $1 || g || '@example.test' FROM generate_series(1, $2) g",
        &[&tag, &n],
    )
    .await
    .expect("customers");
    c.execute(
        "INSERT INTO invoicing.invoices (customer_id, number, status, sent_at)
         SELECT c.id, $1 || '-' || k || '-' || c.email, CASE WHEN k = 1 THEN 'sent' ELSE 'draft' END,
                CASE WHEN k = 1 THEN now() END
           FROM invoicing.customers c, generate_series(1, 2) k",
        &[&tag],
    )
    .await
    .expect("invoices");
    c.execute(
        "INSERT INTO invoicing.line_items (invoice_id, description, quantity, unit_price_cents)
         SELECT i.id, $1 || ' item ' || k, k, k * 1250 FROM invoicing.invoices i, generate_series(1, $2) k",
        &[&tag, &items],
    )
    .await
    .expect("line items");
    c.execute(
        "INSERT INTO invoicing.deliveries (invoice_id, job_id, recipient)
         SELECT i.id, gen_random_uuid(), 'billing@example.test' FROM invoicing.invoices i WHERE status = 'sent'",
        &[],
    )
    .await
    .expect("deliveries");
    c
}

/// An active pooled tenant made for an import.
async fn tenant(env: &Env, slug: &str) -> TenantId {
    let mut owner = connect(env.db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    let t = tenancy_catalog::create_tenant(
        &mut owner,
        &NewTenant {
            id: None,
            slug: slug.parse().expect("slug"),
            display_name: slug.into(),
            plan: "pro".parse().expect("plan"),
            region: "eu-west".parse().expect("region"),
            placement: Placement::Pooled,
        },
        "test",
    )
    .await
    .expect("tenant");
    tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "test", "ready")
        .await
        .expect("activate");
    t.id
}

fn sorted(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .expect("a list")
        .iter()
        .map(|x| x[field].as_str().expect("field").to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn imported_single_tenant_databases_are_served_each_to_its_own_tenant_only() {
    let env = start().await;
    let router = Router::new(
        env.db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions {
            cache_ttl: std::time::Duration::ZERO,
            ..Default::default()
        },
    )
    .expect("router");
    let access = ClusterAccess::local(env.db.cluster.superuser());
    let opts = LegacyOptions {
        ledger: Some("public.invoicing_migrations".into()),
        exclude: vec![],
    };
    let third = tenant(&env, "initrode").await;
    let mut imported = Vec::new();
    for ((tag, n, items), t) in [("north", 7, 2), ("south", 11, 1), ("east", 4, 3)]
        .into_iter()
        .zip([env.acme, env.globex, third])
    {
        let src = source(&env, tag, n, items).await;
        let report = legacy::inspect(&src, &env.owner, &opts)
            .await
            .expect("inspect");
        assert!(!report.blocked(), "{tag}: {report}");
        let s = legacy::import_database(
            &router,
            &env.owner,
            &access,
            &src,
            t,
            &opts,
            &tenancy_transfer::NoProgress,
        )
        .await
        .expect("import");
        assert_eq!(s.rows() as i32, n + 2 * n + 2 * n * items + n, "{s}");
        imported.push((tag, t, src));
    }
    for (tag, t, src) in &imported {
        let emails: Vec<String> = src
            .query("SELECT email FROM invoicing.customers", &[])
            .await
            .expect("emails")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut emails = emails;
        emails.sort();
        let r = env.as_tenant(*t, "GET", "/customers", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            sorted(&r.body, "email"),
            emails,
            "{tag}: its customers, only"
        );
        let numbers: Vec<String> = src
            .query("SELECT number FROM invoicing.invoices ORDER BY number", &[])
            .await
            .expect("numbers")
            .iter()
            .map(|r| r.get(0))
            .collect();
        let r = env.as_tenant(*t, "GET", "/invoices", None).await;
        assert_eq!(
            sorted(&r.body, "number"),
            numbers,
            "{tag}: its invoices, only"
        );
        let total: String = src
            .query_one(
                "SELECT coalesce(sum(quantity::numeric * unit_price_cents), 0)::text FROM invoicing.line_items",
                &[],
            )
            .await
            .expect("total")
            .get(0);
        let r = env.as_tenant(*t, "GET", "/reports/summary", None).await;
        assert_eq!(
            r.body["total_cents"].as_i64().map(|c| c.to_string()),
            Some(total),
            "{tag}: {r:?}"
        );
        // An imported invoice of this tenant opens with its lines; for every other
        // tenant it does not exist.
        let (id, lines): (uuid::Uuid, i64) = {
            let row = src
                .query_one(
                    "SELECT i.id, (SELECT count(*) FROM invoicing.line_items l WHERE l.invoice_id = i.id)
                       FROM invoicing.invoices i ORDER BY i.number LIMIT 1",
                    &[],
                )
                .await
                .expect("an invoice");
            (row.get(0), row.get(1))
        };
        let r = env
            .as_tenant(*t, "GET", &format!("/invoices/{id}"), None)
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.body["lines"].as_array().map(|l| l.len() as i64),
            Some(lines)
        );
        for (_, other, _) in imported.iter().filter(|(_, o, _)| o != t) {
            let r = env
                .as_tenant(*other, "GET", &format!("/invoices/{id}"), None)
                .await;
            assert_eq!(
                r.status, 404,
                "{tag}'s invoice seen by another tenant: {r:?}"
            );
        }
    }
}
