//! `tenant_import`: rows per second bringing a 1,000,000-row single-tenant database of the
//! example app (its four tables without `tenant_id`) into the shared model as one pooled
//! tenant, against `pg_dump | psql` of the same database into a scratch database, on the
//! same cluster, in the same run, alternating run by run.
//!
//! - ours: `tenancy_transfer::legacy::import_database` into a freshly provisioned pooled
//!   tenant: the tables compared with the app's, every table streamed out of one
//!   REPEATABLE READ snapshot with `COPY … TO STDOUT` into a staging table of the pooled
//!   database (checksummed on the way), then inserted with one set-based
//!   `INSERT … SELECT … RETURNING` per table through the tenant's `TenantTx` (runtime
//!   role, row-level security forced, foreign keys checked row by row, indexes of the
//!   shared tables maintained), the returned rows compared by count and checksum, the
//!   next table staged while one is inserted, one commit. The pooled tables are emptied after
//!   each run so every run loads into tables of the same size.
//! - baseline: `pg_dump SOURCE | psql SCRATCH` (plain format: the COPY data, then the
//!   indexes and foreign keys built once at the end), a new scratch database each run.
//!
//! - dedicated (in `params`): the same import into a freshly provisioned dedicated tenant,
//!   whose empty tables are loaded by the owner login the way `pg_restore` loads: keys,
//!   indexes and foreign keys recorded and dropped, one binary COPY per table with the
//!   tenant's id added, keys and indexes rebuilt and foreign keys validated set-based, the
//!   rows read back and compared by count and checksum, the schema compared with what was
//!   recorded, one commit.
//!
//! Reported: median rows per second of each over the runs; `ratio` = pooled / baseline
//! (the headline), `dedicated_ratio` in `params`; the time of each step of the last run of
//! each placement. The dry run's source scans (`inspect`) are timed once and reported in
//! `params`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_core::{ContextKey, Placement, TenantId};
use tenancy_pg::{Cluster, PgBinaries};
use tenancy_provision::{
    AppMigration, AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner,
};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, Router, RouterOptions};
use tenancy_transfer::legacy::{self, LegacyOptions};
use tokio_postgres::Client;

use crate::report::Report;
use crate::setup::{catalog_on, on_ephemeral_cluster, CATALOG_DB};

const SOURCE_DB: &str = "legacy_source";
/// Rows of the source: 50,000 customers, 100,000 invoices, 800,000 line items, 50,000
/// deliveries.
const ROWS: u64 = 1_000_000;

const SOURCE_SCHEMA: &str = "
CREATE SCHEMA invoicing;
CREATE TABLE invoicing.customers (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE invoicing.invoices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid NOT NULL REFERENCES invoicing.customers, number text NOT NULL UNIQUE,
    status text NOT NULL DEFAULT 'draft', currency text NOT NULL DEFAULT 'EUR', sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON invoicing.invoices (customer_id);
CREATE TABLE invoicing.line_items (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoicing.invoices ON DELETE CASCADE,
    description text NOT NULL, quantity integer NOT NULL, unit_price_cents bigint NOT NULL);
CREATE INDEX ON invoicing.line_items (invoice_id);
CREATE TABLE invoicing.deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id uuid NOT NULL REFERENCES invoicing.invoices ON DELETE CASCADE,
    job_id uuid NOT NULL UNIQUE, recipient text NOT NULL, sent_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON invoicing.deliveries (invoice_id);
INSERT INTO invoicing.customers (name, email)
    SELECT 'customer ' || g, 'c' || g || '@example.test' FROM generate_series(1, 50000) g;
INSERT INTO invoicing.invoices (customer_id, number, status, sent_at)
    SELECT c.id, 'INV-' || k || '-' || c.email, CASE WHEN k = 1 THEN 'sent' ELSE 'draft' END,
           CASE WHEN k = 1 THEN now() END
      FROM invoicing.customers c, generate_series(1, 2) k;
INSERT INTO invoicing.line_items (invoice_id, description, quantity, unit_price_cents)
    SELECT i.id, 'item ' || k || ' of ' || i.number, k, k * 1250
      FROM invoicing.invoices i, generate_series(1, 8) k;
INSERT INTO invoicing.deliveries (invoice_id, job_id, recipient)
    SELECT i.id, gen_random_uuid(), 'billing@example.test'
      FROM invoicing.invoices i WHERE i.status = 'sent';
";

const TABLES: [&str; 4] = ["customers", "invoices", "line_items", "deliveries"];

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark `runs` times and writes `target/bench/tenant_import.json`.
pub(crate) async fn run(runs: usize) -> Result<()> {
    on_ephemeral_cluster(async |cluster| measure(cluster, runs).await).await
}

async fn measure(cluster: &Cluster, runs: usize) -> Result<()> {
    println!(
        "== tenant_import: a {ROWS}-row single-tenant database into a pooled tenant vs pg_dump | psql"
    );
    let InvoicingEnv {
        key,
        su,
        mut owner,
        access,
        provisioner,
    } = invoicing_env(cluster, &[SOURCE_DB]).await?;
    // One transaction carries the whole import: no pool deadline or statement timeout.
    let router = runtime_router(
        cluster,
        &key,
        RouterOptions {
            pool: tenancy_sdk::PoolOptions {
                transaction_deadline: Duration::ZERO,
                statement_timeout: Duration::ZERO,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;

    println!("generating the source database ({ROWS} rows)…");
    let source = cluster.connect(SOURCE_DB).await?;
    source
        .batch_execute(SOURCE_SCHEMA)
        .await
        .context("generating the source")?;
    source
        .batch_execute("VACUUM ANALYZE")
        .await
        .context("vacuuming the source")?;
    let counted = count(&source, "invoicing").await?;
    anyhow::ensure!(counted == ROWS, "the source holds {counted} rows");

    let bins = PgBinaries::locate()?;
    let host = cluster.socket_dir().display().to_string();
    let port = cluster.port().to_string();
    let user = cluster.superuser().to_owned();

    let mut ours_rps = Vec::new();
    let mut base_rps = Vec::new();
    let mut ours_s = Vec::new();
    let mut base_s = Vec::new();
    let mut dedicated_s = Vec::new();
    let mut dedicated_rps = Vec::new();
    let mut phases = json!({});
    let mut inspect_s = None;
    for run in 0..runs {
        // Baseline: pg_dump | psql into a new scratch database.
        let scratch = format!("scratch_{run}");
        su.batch_execute(&format!("CREATE DATABASE {scratch}"))
            .await
            .context("creating the scratch database")?;
        let (dump, psql) = (client_bin(&bins, "pg_dump"), client_bin(&bins, "psql"));
        let (h, p, u, s) = (host.clone(), port.clone(), user.clone(), scratch.clone());
        let elapsed = tokio::task::spawn_blocking(move || -> Result<Duration> {
            let t = Instant::now();
            let mut d = Command::new(dump)
                .args(["-h", &h, "-p", &p, "-U", &u, "-d", SOURCE_DB])
                .stdout(Stdio::piped())
                .spawn()
                .context("starting pg_dump")?;
            let out = d.stdout.take().context("pg_dump's output")?;
            let status = Command::new(psql)
                .args([
                    "-h",
                    &h,
                    "-p",
                    &p,
                    "-U",
                    &u,
                    "-d",
                    &s,
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                ])
                .stdin(out)
                .stdout(Stdio::null())
                .status()
                .context("running psql")?;
            let dumped = d.wait().context("waiting for pg_dump")?;
            anyhow::ensure!(
                status.success() && dumped.success(),
                "pg_dump | psql failed: {dumped}, {status}"
            );
            Ok(t.elapsed())
        })
        .await??;
        let scratch_client = cluster.connect(&scratch).await?;
        let loaded = count(&scratch_client, "invoicing").await?;
        anyhow::ensure!(loaded == ROWS, "pg_dump | psql loaded {loaded} rows");
        drop(scratch_client);
        su.batch_execute(&format!("DROP DATABASE {scratch} WITH (FORCE)"))
            .await
            .context("dropping the scratch database")?;
        base_s.push(elapsed.as_secs_f64());
        base_rps.push(ROWS as f64 / elapsed.as_secs_f64());

        // Ours: a new pooled tenant, the import, then the shared tables emptied again.
        let tenant = provision(
            &provisioner,
            &mut owner,
            &format!("imported-{run}"),
            Placement::Pooled,
        )
        .await?;
        if inspect_s.is_none() {
            let target = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, CATALOG_DB)).await?;
            let t = Instant::now();
            let report = legacy::inspect(&source, &target, &LegacyOptions::default()).await?;
            inspect_s = Some(t.elapsed().as_secs_f64());
            anyhow::ensure!(!report.blocked(), "the source does not fit:\n{report}");
        }
        let (summary, elapsed) = timed_import(&router, &owner, &access, &source, tenant)
            .await
            .context("importing the source")?;
        anyhow::ensure!(
            summary.rows() == ROWS,
            "the import verified {} rows",
            summary.rows()
        );
        let su_cat = cluster.connect(CATALOG_DB).await?;
        let in_target = count(&su_cat, "invoicing").await?;
        anyhow::ensure!(in_target == ROWS, "the pooled tables hold {in_target} rows");
        for sql in [
            "TRUNCATE invoicing.customers, invoicing.invoices, invoicing.line_items, invoicing.deliveries",
            "VACUUM ANALYZE invoicing.customers, invoicing.invoices, invoicing.line_items, invoicing.deliveries",
        ] {
            su_cat
                .batch_execute(sql)
                .await
                .context("emptying the pooled tables")?;
        }
        ours_s.push(elapsed.as_secs_f64());
        ours_rps.push(ROWS as f64 / elapsed.as_secs_f64());
        phases["pooled"] = steps(&summary);

        // A new dedicated tenant (its own database), loaded with its keys rebuilt.
        let tenant = provision(
            &provisioner,
            &mut owner,
            &format!("imported-dedicated-{run}"),
            Placement::Dedicated,
        )
        .await?;
        let (summary, elapsed) = timed_import(&router, &owner, &access, &source, tenant)
            .await
            .context("importing the source into a dedicated tenant")?;
        anyhow::ensure!(
            summary.rows() == ROWS && summary.rebuilt,
            "the dedicated import verified {} rows (keys rebuilt: {})",
            summary.rows(),
            summary.rebuilt
        );
        dedicated_s.push(elapsed.as_secs_f64());
        dedicated_rps.push(ROWS as f64 / elapsed.as_secs_f64());
        phases["dedicated"] = steps(&summary);
        println!(
            "run {}: pg_dump | psql {:.2} s ({:.0} rows/s); pooled {:.2} s ({:.0} rows/s); dedicated {:.2} s ({:.0} rows/s)",
            run + 1,
            base_s[run],
            base_rps[run],
            ours_s[run],
            ours_rps[run],
            dedicated_s[run],
            dedicated_rps[run]
        );
        println!("  steps: {phases}");
    }
    let (ours, baseline) = (median(&ours_rps), median(&base_rps));
    let dedicated = median(&dedicated_rps);
    let report = Report {
        name: "tenant_import".into(),
        unit: "rows/s importing a 1,000,000-row single-tenant database (higher is better)".into(),
        ours,
        baseline,
        baseline_name: "pg_dump | psql into a scratch database (PostgreSQL 15, same cluster)"
            .into(),
        ratio: ours / baseline,
        params: json!({
            "rows": ROWS,
            "runs": runs,
            "tables": {"customers": 50_000, "invoices": 100_000, "line_items": 800_000, "deliveries": 50_000},
            "ours_seconds": ours_s,
            "baseline_seconds": base_s,
            "ours_rows_per_s": ours_rps,
            "dedicated_rows_per_s_median": dedicated,
            "dedicated_ratio": dedicated / baseline,
            "dedicated_seconds": dedicated_s,
            "dedicated_rows_per_s": dedicated_rps,
            "steps_seconds_last_run": phases,
            "baseline_rows_per_s": base_rps,
            "dry_run_inspect_seconds": inspect_s,
            "postgres_bin": bins.dir().display().to_string(),
            "dedicated_includes": "table comparison, keys, indexes and foreign keys recorded and dropped, one binary COPY per table out of one snapshot with the tenant's id added, keys and indexes rebuilt, foreign keys validated, rows read back and compared by count and checksum, schema compared with the recorded one, commit",
            "ours_includes": "table comparison, COPY out of one snapshot into staging tables, one set-based INSERT … RETURNING per table through the TenantTx (RLS, per-row foreign key checks, indexes of the shared tables), checksums of the rows read and of the rows returned, commit",
        }),
    };
    let path = report.write()?;
    println!(
        "pooled {ours:.0} rows/s, pg_dump | psql {baseline:.0} rows/s, ratio {:.2}; dedicated {dedicated:.0} rows/s, ratio {:.2}; written to {}",
        report.ratio,
        dedicated / baseline,
        path.display()
    );
    Ok(())
}

/// The seconds of each step of an import.
fn steps(s: &legacy::LegacySummary) -> serde_json::Value {
    serde_json::Value::Array(
        s.phases
            .iter()
            .map(|(name, d)| json!([name, (d.as_secs_f64() * 1000.0).round() / 1000.0]))
            .collect(),
    )
}

/// A client program of the server's version: beside the server binaries, else in the
/// distribution's directory of that version, else on `PATH`.
pub(crate) fn client_bin(bins: &PgBinaries, name: &str) -> std::path::PathBuf {
    let beside = bins.bin(name);
    if beside.exists() {
        return beside;
    }
    let debian =
        std::path::PathBuf::from(format!("/usr/lib/postgresql/{}/bin/{name}", bins.major()));
    if debian.exists() {
        return debian;
    }
    std::path::PathBuf::from(name)
}

/// Rows of the four tables in `schema`.
async fn count(c: &Client, schema: &str) -> Result<u64> {
    let mut n = 0u64;
    for t in TABLES {
        let sql = format!("SELECT count(*) FROM {schema}.{t}");
        let r: i64 = c.query_one(sql.as_str(), &[]).await?.get(0);
        n += u64::try_from(r).unwrap_or(0);
    }
    Ok(n)
}

/// The benchmark cluster set up for the example app: the catalog in [`CATALOG_DB`]
/// (also region `eu-west`'s shared database), more empty databases, and a provisioner of
/// the invoicing tables.
pub(crate) struct InvoicingEnv {
    pub key: ContextKey,
    /// The superuser on `postgres`.
    pub su: Client,
    /// The owner on the catalog.
    pub owner: Client,
    pub access: ClusterAccess,
    pub provisioner: Provisioner,
}

/// Sets up an [`InvoicingEnv`] on `cluster`, creating `databases` too.
pub(crate) async fn invoicing_env(cluster: &Cluster, databases: &[&str]) -> Result<InvoicingEnv> {
    let key = ContextKey::from_bytes("bench".parse().context("key id")?, rand::random());
    let su = cluster.connect("postgres").await?;
    for db in std::iter::once(&CATALOG_DB).chain(databases) {
        su.batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .with_context(|| format!("creating database {db}"))?;
    }
    let owner = catalog_on(cluster, &su, &key).await?;
    let access = ClusterAccess::local(cluster.superuser());
    let provisioner = invoicing_provisioner(cluster, &access, &key)?;
    Ok(InvoicingEnv {
        key,
        su,
        owner,
        access,
        provisioner,
    })
}

/// A router of the runtime role over the catalog.
pub(crate) fn runtime_router(
    cluster: &Cluster,
    key: &ContextKey,
    opts: RouterOptions,
) -> Result<Router> {
    Ok(Router::new(
        cluster.config_as(RUNTIME_ROLE, CATALOG_DB),
        key.clone(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        opts,
    )?)
}

fn invoicing_provisioner(
    cluster: &Cluster,
    access: &ClusterAccess,
    key: &ContextKey,
) -> Result<Provisioner> {
    Ok(Provisioner::new(
        cluster.config_as(OWNER_ROLE, CATALOG_DB),
        access.clone(),
        key.clone(),
        ProvisionConfig {
            app_migrations: AppMigrations::new(vec![AppMigration {
                version: 1,
                name: "0001_invoicing".into(),
                sql: include_str!("../../../examples/invoicing/migrations/0001_invoicing.sql")
                    .into(),
            }])?,
            plans: [("free".to_owned(), serde_json::Map::new())].into(),
            ..Default::default()
        },
    )?)
}

/// A tenant provisioned at `placement` (driven to active).
pub(crate) async fn provision(
    p: &Provisioner,
    catalog: &mut Client,
    slug: &str,
    placement: Placement,
) -> Result<TenantId> {
    let req = ProvisionRequest {
        tenant: tenancy_catalog::NewTenant {
            id: None,
            slug: slug.parse()?,
            display_name: slug.to_owned(),
            plan: "free".parse()?,
            region: "eu-west".parse()?,
            placement,
        },
        billing_customer: None,
        billing_subscription: None,
    };
    let (t, wf) = p.provision(catalog, &req, "bench").await?;
    let wf = p.drive(catalog, wf.id, Duration::from_secs(120)).await?;
    anyhow::ensure!(
        wf.status.to_string() == "succeeded",
        "provisioning {slug}: {wf:?}"
    );
    Ok(t.id)
}

/// `legacy::import_database` of `source` into `tenant`, and how long it took.
async fn timed_import(
    router: &Router,
    owner: &Client,
    access: &ClusterAccess,
    source: &Client,
    tenant: TenantId,
) -> Result<(legacy::LegacySummary, Duration)> {
    let t = Instant::now();
    let summary = legacy::import_database(
        router,
        owner,
        access,
        source,
        tenant,
        &LegacyOptions::default(),
        &tenancy_transfer::NoProgress,
    )
    .await?;
    Ok((summary, t.elapsed()))
}
