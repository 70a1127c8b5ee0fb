//! The shared fixture: a private cluster, the tenancy roles and runtime, and three copies
//! of the same seeded table (tenancy RLS, no RLS, tenaxum's GUC policy).

use std::path::PathBuf;

use anyhow::{Context, Result};
use tenancy_core::ContextKey;
use tenancy_pg::{Cluster, ClusterOptions};
use uuid::Uuid;

/// Database the benchmarks run in.
pub(crate) const DB: &str = "bench";
/// Number of tenants seeded.
pub(crate) const TENANTS: usize = 100;
/// Rows per tenant (ids 1..=ROWS_PER_TENANT).
pub(crate) const ROWS_PER_TENANT: i64 = 1_000;

/// Tables: owner-created, then seeded by the superuser (which bypasses RLS).
const SCHEMA_SQL: &str = r"
CREATE TABLE items (tenant_id uuid NOT NULL, id bigint NOT NULL, payload text NOT NULL,
                    PRIMARY KEY (tenant_id, id));
SELECT tenancy.make_tenant_table('items');

CREATE TABLE items_plain (tenant_id uuid NOT NULL, id bigint NOT NULL, payload text NOT NULL,
                          PRIMARY KEY (tenant_id, id));
GRANT SELECT ON items_plain TO tenancy_app;

CREATE TABLE items_tenaxum (tenant_id uuid NOT NULL, id bigint NOT NULL, payload text NOT NULL,
                            PRIMARY KEY (tenant_id, id));
ALTER TABLE items_tenaxum ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON items_tenaxum
    USING (tenant_id = current_setting('app.tenant_id', true)::uuid)
    WITH CHECK (tenant_id = current_setting('app.tenant_id', true)::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON items_tenaxum TO tenancy_app;
";

/// Everything the benchmarks share.
#[derive(Debug)]
pub(crate) struct Env {
    /// The private cluster (stopped when dropped).
    pub cluster: Cluster,
    /// The context key installed in `bench`.
    pub key: ContextKey,
    /// Seeded tenant ids.
    pub tenants: Vec<Uuid>,
    /// Postmaster pid, to sum server CPU over its children.
    pub postmaster_pid: Option<u32>,
    /// The runtime role's password, set on a TLS cluster (whose TCP logins need one).
    app_password: Option<String>,
}

impl Env {
    /// Which signed-context implementation the bench database has.
    pub(crate) async fn context_impl(&self) -> Result<tenancy_sdk::bootstrap::ContextImpl> {
        let su = self
            .cluster
            .connect(DB)
            .await
            .context("connecting as the superuser")?;
        tenancy_sdk::bootstrap::context_impl(&su)
            .await?
            .context("the tenancy runtime is not installed in the bench database")
    }

    /// Starts the cluster, bootstraps tenancy and seeds the tables.
    pub(crate) async fn start() -> Result<Env> {
        Env::start_with(None).await
    }

    /// Like [`Env::start`], on a cluster serving TLS when `tls` is given.
    pub(crate) async fn start_with(tls: Option<tenancy_pg::ClusterTls>) -> Result<Env> {
        let force = match std::env::var("TENANCY_BENCH_CONTEXT").as_deref() {
            Ok("plpgsql") => Some(tenancy_sdk::bootstrap::ContextImpl::PlPgSql),
            _ => None,
        };
        Env::start_context(tls, force).await
    }

    /// Like [`Env::start_with`], with the context implementation `force`d (`None`: the
    /// native one where the server offers it).
    pub(crate) async fn start_context(
        tls: Option<tenancy_pg::ClusterTls>,
        force: Option<tenancy_sdk::bootstrap::ContextImpl>,
    ) -> Result<Env> {
        let with_tls = tls.is_some();
        let cluster = Cluster::start(ClusterOptions {
            ephemeral: true,
            settings: vec![("max_connections".into(), "200".into())],
            tls,
            ..Default::default()
        })
        .await
        .context("starting a private PostgreSQL cluster")?;

        let su = cluster
            .connect("postgres")
            .await
            .context("connecting as the superuser")?;
        su.batch_execute(&format!("CREATE DATABASE {DB}"))
            .await
            .context("creating database bench")?;
        tenancy_sdk::bootstrap::bootstrap_cluster(&su)
            .await
            .context("creating the tenancy roles")?;
        let app_password = if with_tls {
            let p = format!("{:032x}", rand::random::<u128>());
            su.batch_execute(&format!("ALTER ROLE tenancy_app PASSWORD '{p}'"))
                .await
                .context("setting the runtime role's password")?;
            Some(p)
        } else {
            None
        };
        let su_bench = cluster
            .connect(DB)
            .await
            .context("connecting to bench as the superuser")?;
        tenancy_sdk::bootstrap::bootstrap_database(&su_bench, DB)
            .await
            .context("preparing database bench for tenancy")?;

        let owner = tenancy_pg::connect(&cluster.config_as(tenancy_sdk::bootstrap::OWNER_ROLE, DB))
            .await
            .context("connecting as tenancy_owner")?;
        let key = ContextKey::from_bytes(
            "bench".parse().context("parsing the key id")?,
            rand::random(),
        );
        // TENANCY_BENCH_CONTEXT=plpgsql measures the PL/pgSQL context where the native one
        // could be installed.
        tenancy_sdk::bootstrap::install_runtime_with(&owner, &key, force)
            .await
            .context("installing the tenancy runtime")?;
        owner
            .batch_execute(SCHEMA_SQL)
            .await
            .context("creating the benchmark tables")?;

        let tenants: Vec<Uuid> = (0..TENANTS).map(|_| Uuid::new_v4()).collect();
        for table in ["items", "items_plain", "items_tenaxum"] {
            let sql = format!(
                "INSERT INTO {table} (tenant_id, id, payload) \
                 SELECT t, g, t::text || ':' || g FROM unnest($1::uuid[]) AS t, generate_series(1, $2::bigint) AS g"
            );
            su_bench
                .execute(&sql, &[&tenants, &ROWS_PER_TENANT])
                .await
                .with_context(|| format!("seeding {table}"))?;
        }
        su_bench
            .batch_execute("VACUUM ANALYZE")
            .await
            .context("vacuuming the seeded tables")?;

        let postmaster_pid = read_postmaster_pid(cluster.data_dir().join("postmaster.pid"));
        Ok(Env {
            cluster,
            key,
            tenants,
            postmaster_pid,
            app_password,
        })
    }

    /// Connection settings for the runtime role on `bench`.
    pub(crate) fn app_config(&self) -> tokio_postgres::Config {
        self.cluster
            .config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE, DB)
    }

    /// Connection settings for the runtime role on `bench` over TCP to `localhost` with
    /// `sslmode=verify-full` (a cluster started with TLS).
    pub(crate) fn app_tls_config(&self) -> Result<tenancy_sdk::PgConfig> {
        let ca = self
            .cluster
            .tls_ca_file()
            .context("the cluster was started without TLS")?;
        let password = self.app_password.as_deref().unwrap_or_default();
        tenancy_sdk::PgConfig::parse(&format!(
            "host=localhost port={} user={} password={password} dbname={DB} application_name=tenancy sslmode=verify-full sslrootcert={}",
            self.cluster.port(),
            tenancy_sdk::bootstrap::RUNTIME_ROLE,
            ca.display()
        ))
        .context("building the TLS connection settings")
    }
}

fn read_postmaster_pid(path: PathBuf) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The payload seeded for (`tenant`, `id`): lets every variant check it got the right row.
pub(crate) fn expected_payload(tenant: Uuid, id: i64) -> String {
    format!("{tenant}:{id}")
}

/// Starts a private cluster with `options`, runs `body` on it, and stops the cluster
/// whatever `body` returned.
pub(crate) async fn on_private_cluster<T>(
    options: ClusterOptions,
    body: impl AsyncFnOnce(&Cluster) -> Result<T>,
) -> Result<T> {
    let cluster = Cluster::start(options)
        .await
        .context("starting a private PostgreSQL cluster")?;
    let result = body(&cluster).await;
    cluster.stop().await;
    result
}

/// [`on_private_cluster`] on a throw-away cluster with the default settings.
pub(crate) async fn on_ephemeral_cluster<T>(
    body: impl AsyncFnOnce(&Cluster) -> Result<T>,
) -> Result<T> {
    on_private_cluster(
        ClusterOptions {
            ephemeral: true,
            ..Default::default()
        },
        body,
    )
    .await
}

/// The catalog database of the benchmarks that provision tenants.
pub(crate) const CATALOG_DB: &str = "catalog";

/// Makes [`CATALOG_DB`] of `cluster` (which the caller created, connected as the
/// superuser `su`) a migrated tenancy catalog signed with `key`, with the region
/// `eu-west` and `cluster` itself, over its socket directory, as that region's one
/// cluster. Returns the owner's connection to the catalog.
pub(crate) async fn catalog_on(
    cluster: &Cluster,
    su: &tokio_postgres::Client,
    key: &ContextKey,
) -> Result<tokio_postgres::Client> {
    use tenancy_sdk::bootstrap;
    bootstrap::bootstrap_cluster(su)
        .await
        .context("creating the tenancy roles")?;
    let su_cat = cluster.connect(CATALOG_DB).await?;
    bootstrap::bootstrap_database(&su_cat, CATALOG_DB)
        .await
        .context("preparing the catalog database")?;
    let mut owner =
        tenancy_pg::connect(&cluster.config_as(bootstrap::OWNER_ROLE, CATALOG_DB)).await?;
    bootstrap::install_runtime(&owner, key)
        .await
        .context("installing the tenancy runtime")?;
    tenancy_catalog::migrate(&mut owner)
        .await
        .context("migrating the catalog")?;
    let region = "eu-west".parse().context("region")?;
    tenancy_catalog::add_region(&owner, &region, "EU West").await?;
    tenancy_catalog::add_cluster(
        &owner,
        &tenancy_catalog::NewCluster {
            name: "pg-eu-west".into(),
            region,
            location: tenancy_catalog::ClusterLocation {
                host: cluster.socket_dir().display().to_string(),
                port: cluster.port(),
                dbname: CATALOG_DB.into(),
            },
            capacity: 1_000_000,
        },
    )
    .await?;
    Ok(owner)
}

/// Fails unless `payload` is the one [`expected_payload`] gives for `id` of `tenant`.
pub(crate) fn check_payload(payload: &str, tenant: Uuid, id: i64) -> anyhow::Result<()> {
    anyhow::ensure!(
        payload == expected_payload(tenant, id),
        "wrong row: {payload:?}"
    );
    Ok(())
}

/// Migrates the catalog in the bench database, registers region and cluster `bench` there
/// (this cluster's socket) and each of `tenants` as an active pooled tenant
/// `<slug_prefix>-NNN`.
pub(crate) async fn register_pooled_tenants(
    env: &Env,
    tenants: impl IntoIterator<Item = tenancy_core::TenantId>,
    slug_prefix: &str,
) -> Result<()> {
    use tenancy_catalog::{ClusterLocation, NewCluster, NewTenant};
    use tenancy_core::{Placement, TenantState};

    let mut owner = tenancy_pg::connect(
        &env.cluster
            .config_as(tenancy_sdk::bootstrap::OWNER_ROLE, DB),
    )
    .await
    .context("connecting as the owner")?;
    tenancy_catalog::migrate(&mut owner)
        .await
        .context("migrating the catalog")?;
    let region: tenancy_core::RegionId = "bench".parse().context("region")?;
    tenancy_catalog::add_region(&owner, &region, "Benchmark").await?;
    let location = ClusterLocation {
        host: env.cluster.socket_dir().display().to_string(),
        port: env.cluster.port(),
        dbname: DB.into(),
    };
    let cluster = NewCluster {
        name: "bench".into(),
        region: region.clone(),
        location,
        capacity: 10_000,
    };
    tenancy_catalog::add_cluster(&owner, &cluster).await?;
    for (i, id) in tenants.into_iter().enumerate() {
        let tenant = NewTenant {
            id: Some(id),
            slug: format!("{slug_prefix}-{i:03}").parse()?,
            display_name: format!("{slug_prefix} {i}"),
            plan: "pro".parse()?,
            region: region.clone(),
            placement: Placement::Pooled,
        };
        let t = tenancy_catalog::create_tenant(&mut owner, &tenant, "bench")
            .await
            .context("creating a tenant")?;
        tenancy_catalog::set_state(&mut owner, t.id, TenantState::Active, "bench", "bench").await?;
    }
    Ok(())
}
