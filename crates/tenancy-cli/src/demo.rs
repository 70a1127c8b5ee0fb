//! `tenancy demo`: the embedded default end to end.

use anyhow::{bail, Context, Result};
use tenancy_catalog::{NewCluster, NewTenant};
use tenancy_core::{ContextKey, Placement, TenantId, TenantState};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};

/// Options of `tenancy demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Keep the cluster running after the demo and print how to connect, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
}

const APP_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invoices (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    number       text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, number)
);
SELECT tenancy.make_tenant_table('invoices');
";

async fn connect(cfg: tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .context("connecting to the demo cluster")?;
    tokio::spawn(conn);
    Ok(client)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    println!("tenancy demo: starting a private PostgreSQL cluster (embedded default)…");
    let cluster = Cluster::start(ClusterOptions {
        ephemeral: true,
        ..Default::default()
    })
    .await
    .context("starting the embedded PostgreSQL cluster")?;
    println!(
        "  PostgreSQL {} in {}",
        cluster.major_version(),
        cluster.data_dir().display()
    );
    let result = demo(&cluster, args.keep_running).await;
    cluster.stop().await;
    result
}

async fn demo(cluster: &Cluster, keep_running: bool) -> Result<()> {
    let db = "tenancy";
    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .context("creating the demo database")?;
    let su = cluster.connect(db).await?;
    bootstrap::bootstrap_cluster(&su).await?;
    bootstrap::bootstrap_database(&su, db).await?;
    let key = ContextKey::from_bytes("demo".parse()?, rand::random());
    let mut owner = connect(cluster.config_as(OWNER_ROLE, db)).await?;
    bootstrap::install_runtime(&owner, &key).await?;
    tenancy_catalog::migrate(&mut owner).await?;
    owner
        .batch_execute(APP_SCHEMA)
        .await
        .context("creating the demo app's tables")?;
    println!("  roles: {OWNER_ROLE} (runs migrations, owns tables), {RUNTIME_ROLE} (runtime: NOSUPERUSER NOBYPASSRLS, owns nothing)");
    println!(
        "  catalog migrated; tenant table `invoices`: RLS enabled + forced, signed-context policy"
    );

    let region = "eu-west".parse()?;
    tenancy_catalog::add_region(&owner, &region, "Europe (West)").await?;
    tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "pg-eu-west-1".into(),
            region: region.clone(),
            host: cluster.socket_dir().display().to_string(),
            port: cluster.port(),
            dbname: db.into(),
            capacity: 1000,
        },
    )
    .await?;
    let mut tenants = Vec::new();
    for (slug, name) in [("acme", "Acme Corp"), ("globex", "Globex Inc")] {
        let t = tenancy_catalog::create_tenant(
            &mut owner,
            &NewTenant {
                id: None,
                slug: slug.parse()?,
                display_name: name.into(),
                plan: "pro".parse()?,
                region: region.clone(),
                placement: Placement::Pooled,
            },
            "demo",
        )
        .await?;
        tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "demo", "demo signup")
            .await?;
        println!(
            "  tenant {:<7} id {}  region {}  placement {}  → active",
            t.slug, t.id, t.region, t.placement
        );
        tenants.push(t);
    }

    let router = Router::new(
        cluster.config_as(RUNTIME_ROLE, db),
        key,
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )?;
    for (t, n) in tenants.iter().zip([3, 2]) {
        let mut tx = router.begin(t.id).await?;
        for i in 1..=n {
            tx.execute(
                "INSERT INTO invoices (number, amount_cents) VALUES ($1, $2)",
                &[
                    &format!("{}-{i:04}", t.slug.as_str().to_uppercase()),
                    &(i as i64 * 12_500),
                ],
            )
            .await?;
        }
        tx.commit().await?;
    }
    println!();
    let mut first_ids: Vec<uuid::Uuid> = Vec::new();
    for t in &tenants {
        let mut tx = router.begin(t.id).await?;
        let rows = tx
            .query(
                "SELECT id, number, amount_cents FROM invoices ORDER BY number",
                &[],
            )
            .await?;
        tx.commit().await?;
        let numbers: Vec<String> = rows.iter().map(|r| r.get::<_, String>(1)).collect();
        println!(
            "  {} sees {} invoices: {}",
            t.slug,
            rows.len(),
            numbers.join(", ")
        );
        if let Some(r) = rows.first() {
            first_ids.push(r.get(0));
        }
    }
    let (acme, globex) = (&tenants[0], &tenants[1]);
    println!();
    println!("  {} tries to reach {}'s data:", acme.slug, globex.slug);
    let mut tx = router.begin(acme.id).await?;
    let by_id = tx
        .query_opt(
            "SELECT number FROM invoices WHERE id = $1",
            &[&first_ids[1]],
        )
        .await?;
    println!(
        "    SELECT … WHERE id = <globex invoice id>          → {}",
        if by_id.is_some() {
            "FOUND (isolation broken!)"
        } else {
            "no row"
        }
    );
    let updated = tx
        .execute(
            "UPDATE invoices SET amount_cents = 0 WHERE id = $1",
            &[&first_ids[1]],
        )
        .await?;
    println!("    UPDATE … WHERE id = <globex invoice id>          → {updated} rows");
    tx.query_one(
        "SELECT set_config('tenancy.ctx', $1, true)",
        &[&globex.id.to_string()],
    )
    .await?;
    let after_forge: i64 = tx
        .query_one("SELECT count(*) FROM invoices", &[])
        .await?
        .get(0);
    println!("    set_config('tenancy.ctx', '<globex id>', true)   → then sees {after_forge} rows (forged context is worthless)");
    tx.rollback().await?;
    let mut tx = router.begin(acme.id).await?;
    let moved = tx
        .execute(
            "UPDATE invoices SET tenant_id = $1",
            &[&globex.id.as_uuid()],
        )
        .await;
    println!(
        "    UPDATE invoices SET tenant_id = '<globex id>'     → {}",
        match &moved {
            Ok(n) => format!("{n} rows moved (isolation broken!)"),
            Err(_) => "refused by the policy's WITH CHECK".into(),
        }
    );
    drop(tx);
    let app = connect(cluster.config_as(RUNTIME_ROLE, db)).await?;
    let no_ctx: i64 = app
        .query_one("SELECT count(*) FROM invoices", &[])
        .await?
        .get(0);
    println!(
        "    runtime role with no tenant context               → sees {no_ctx} rows (fail closed)"
    );
    if by_id.is_some() || updated != 0 || after_forge != 0 || moved.is_ok() || no_ctx != 0 {
        bail!("isolation check failed in the demo");
    }
    let other = TenantId::new_random();
    match router.begin(other).await {
        Err(e) => println!("    unknown tenant {other}  → {e}"),
        Ok(_) => bail!("an unknown tenant was opened"),
    }
    println!();
    println!("demo finished: each tenant saw only its own rows.");
    if keep_running {
        println!();
        println!("cluster kept running; connect with:");
        println!(
            "  psql \"{}\"   (runtime role; sees nothing without a tenant context)",
            cluster.url_as(RUNTIME_ROLE, db)
        );
        println!(
            "  psql \"{}\"   (superuser)",
            cluster.url_as(cluster.superuser(), db)
        );
        println!("press Ctrl-C to stop and remove it");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
    }
    Ok(())
}
