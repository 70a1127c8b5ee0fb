//! The `migrate` benchmark: `tenancy migrate` over 1,000 and 5,000 schema tenants of a
//! 20-table app — the no-op run and one `ALTER TABLE … ADD COLUMN` across all of them —
//! against django-tenants `migrate_schemas --executor=multiprocessing` (installed from
//! PyPI into a venv) doing the same on the same number of schemas, on the same cluster.
//!
//! Setup is not measured. Our first tenant schema is created by the real provisioning
//! code (`storage::migrate_schema`); django's first tenant by django-tenants itself. The
//! others are cloned from it by a PL/pgSQL function (`CREATE TABLE … (LIKE … INCLUDING
//! ALL)`, foreign keys, policies, grants, version marker / django's migration records),
//! several per transaction on two connections, and registered in the catalog (ours) or
//! in django's tenant table. The drift check then confirms our clones are identical to a
//! schema built by the migrations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_catalog::{LedgerOutcome, LedgerUpdate, NewCluster};
use tenancy_core::{ContextKey, Placement, TenantId};
use tenancy_migrate::{MigrationSet, Migrator, Options as RunOptions};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_provision::{AppMigration, AppMigrations, ClusterAccess};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE};
use tokio::process::Command;

use crate::django;
use crate::report::Report;
use crate::setup::on_private_cluster;
use crate::stats::median;

const TABLES: usize = 20;
const DB: &str = "tenancy";
const DJANGO_DB: &str = "django_migrate";
const DJANGO_ROLE: &str = "django_migrate";

/// Settings of the benchmark.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Numbers of schema tenants to measure, ascending (e.g. 1000, 5000).
    pub schemas: Vec<usize>,
    /// Schemas django-tenants migrates (the baseline).
    pub django_schemas: usize,
    /// Repetitions of each measurement (median reported).
    pub runs: usize,
    /// Connections per cluster for tenancy migrate.
    pub concurrency: usize,
    /// Targets pipelined per connection.
    pub pipeline: usize,
}

/// The clone function, in a schema of its own (setup only).
const CLONE_FN: &str = r#"
CREATE SCHEMA IF NOT EXISTS tenancy_bench;
GRANT USAGE ON SCHEMA tenancy_bench TO PUBLIC;
CREATE OR REPLACE FUNCTION tenancy_bench.clone_schema(src text, dst text, rls boolean) RETURNS void
LANGUAGE plpgsql AS $f$
DECLARE r record;
BEGIN
  EXECUTE format('CREATE SCHEMA %I', dst);
  -- Tables through pg_depend (indexed by namespace); pg_class.relnamespace has no index.
  FOR r IN SELECT t.relname FROM (SELECT c.oid, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = src::regnamespace
                AND d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND c.relkind = 'r') t ORDER BY t.oid LOOP
    EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)', dst, r.relname, src, r.relname);
  END LOOP;
  FOR r IN SELECT c.relname, con.conname, pg_get_constraintdef(con.oid) AS def
             FROM (SELECT c.oid, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = src::regnamespace
                AND d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND c.relkind = 'r') c JOIN pg_constraint con ON con.conrelid = c.oid
            WHERE con.contype = 'f' ORDER BY con.oid LOOP
    EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', dst, r.relname, r.conname,
                   replace(r.def, quote_ident(src) || '.', quote_ident(dst) || '.'));
  END LOOP;
  IF rls THEN
    FOR r IN SELECT c.relname, p.polname, pg_get_expr(p.polqual, p.polrelid) AS q, pg_get_expr(p.polwithcheck, p.polrelid) AS w
               FROM (SELECT c.oid, c.relname FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
              WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = src::regnamespace
                AND d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND c.relkind = 'r') c JOIN pg_policy p ON p.polrelid = c.oid LOOP
      EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY', dst, r.relname);
      EXECUTE format('CREATE POLICY %I ON %I.%I AS PERMISSIVE FOR ALL TO PUBLIC USING (%s) WITH CHECK (%s)',
                     r.polname, dst, r.relname, r.q, r.w);
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO tenancy_app', dst);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO tenancy_app', dst);
  END IF;
  EXECUTE format('COMMENT ON SCHEMA %I IS %L', dst, obj_description(src::regnamespace, 'pg_namespace'));
  IF to_regclass(format('%I.django_migrations', src)) IS NOT NULL THEN
    EXECUTE format('INSERT INTO %I.django_migrations OVERRIDING SYSTEM VALUE SELECT * FROM %I.django_migrations', dst, src);
    EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, ''id''), (SELECT max(id) FROM %I.django_migrations))',
                   format('%I.django_migrations', dst), dst);
  END IF;
END $f$;
"#;

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("..").join("..");
    root.canonicalize().unwrap_or(root)
}

/// Clones `src` into each of `dsts` on two connections, `per_tx` per transaction.
async fn clone_all(
    a: &tokio_postgres::Client,
    b: &tokio_postgres::Client,
    src: &str,
    dsts: &[String],
    rls: bool,
) -> Result<()> {
    let per_tx = 8;
    let chunks: Vec<&[String]> = dsts.chunks(per_tx).collect();
    let (left, right) = chunks.split_at(chunks.len() / 2);
    let (x, y) = tokio::join!(
        clone_part(a, src, left, rls),
        clone_part(b, src, right, rls)
    );
    x?;
    y?;
    Ok(())
}

/// Clones on one connection, one transaction per chunk.
async fn clone_part(
    client: &tokio_postgres::Client,
    src: &str,
    part: &[&[String]],
    rls: bool,
) -> Result<()> {
    for chunk in part {
        let mut sql = String::new();
        for d in *chunk {
            sql.push_str(&format!(
                "SELECT tenancy_bench.clone_schema('{src}', '{d}', {rls});"
            ));
        }
        client
            .batch_execute(&sql)
            .await
            .context("cloning schemas")?;
    }
    Ok(())
}

struct Ours {
    /// Catalog (= shared database), owner role.
    catalog: tokio_postgres::Config,
    access: ClusterAccess,
    cluster_id: uuid::Uuid,
    /// Migrations so far (grows by one ADD COLUMN per measured ALTER run).
    migrations: Vec<AppMigration>,
    /// Schema tenants created so far.
    tenants: usize,
    /// The schema the others are cloned from (kept at the current version).
    source: String,
}

impl Ours {
    fn migrator(&self) -> Migrator {
        let app = AppMigrations::new(self.migrations.clone()).unwrap_or_default();
        Migrator::new(
            self.catalog.clone(),
            self.access.clone(),
            MigrationSet::from_app(app, "generated 20-table app"),
        )
    }
}

async fn setup_ours(cluster: &Cluster) -> Result<Ours> {
    let su = cluster.connect("postgres").await?;
    bootstrap::bootstrap_cluster(&su).await?;
    su.batch_execute(&format!("CREATE DATABASE {DB}")).await?;
    let su = cluster.connect(DB).await?;
    bootstrap::bootstrap_database(&su, DB).await?;
    su.batch_execute(CLONE_FN)
        .await
        .context("creating the clone function")?;
    let key = ContextKey::from_bytes("b1".parse().context("kid")?, rand::random());
    let catalog = cluster.config_as(OWNER_ROLE, DB);
    let mut owner = tenancy_pg::connect(&catalog).await?;
    bootstrap::install_runtime(&owner, &key).await?;
    tenancy_catalog::migrate(&mut owner).await?;
    let region = "eu-west".parse().context("region")?;
    tenancy_catalog::add_region(&owner, &region, "EU").await?;
    let c = tenancy_catalog::add_cluster(
        &owner,
        &NewCluster {
            name: "bench".into(),
            region,
            location: tenancy_catalog::ClusterLocation {
                host: cluster.socket_dir().display().to_string(),
                port: cluster.port(),
                dbname: DB.into(),
            },
            capacity: 1_000_000,
        },
    )
    .await?;
    let mut migrations = AppMigrations::generated(TABLES).all().to_vec();
    migrations[0].name = "0001_generated_20_tables".into();
    // The pooled tables and the source schema, by the provisioning code itself.
    let app = AppMigrations::new(migrations.clone())?;
    tenancy_provision::storage::migrate_schema(&mut owner, "public", false, &app).await?;
    let source = "tenancy_bench_source".to_owned();
    tenancy_provision::storage::migrate_schema(&mut owner, &source, true, &app).await?;
    tenancy_catalog::write_ledger(
        &owner,
        &[LedgerUpdate {
            target_id: c.id,
            kind: Placement::Pooled,
            tenant_id: None,
            cluster_id: c.id,
            outcome: LedgerOutcome::At {
                version: 1,
                checksum: migrations[0].checksum(),
                duration_ms: None,
            },
        }],
    )
    .await?;
    tenancy_catalog::record_app_migration_sources(&owner, &app.sources()).await?;
    Ok(Ours {
        catalog,
        access: ClusterAccess::local(cluster.superuser()),
        cluster_id: c.id,
        migrations,
        tenants: 0,
        source,
    })
}

/// Adds schema tenants until there are `n`: clones of the source schema (at the current
/// version), registered as active schema tenants with their ledger rows.
async fn grow_ours(ours: &mut Ours, n: usize) -> Result<()> {
    if n <= ours.tenants {
        return Ok(());
    }
    let add = n - ours.tenants;
    println!("setup: cloning {add} more schema tenants (20 tables each)…");
    let started = Instant::now();
    let ids: Vec<TenantId> = (0..add).map(|_| TenantId::new_random()).collect();
    let schemas: Vec<String> = ids
        .iter()
        .map(|id| tenancy_provision::storage::schema_name_for(*id))
        .collect();
    let a = tenancy_pg::connect(&ours.catalog).await?;
    let b = tenancy_pg::connect(&ours.catalog).await?;
    clone_all(&a, &b, &ours.source, &schemas, true).await?;
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
    let slugs: Vec<String> = (0..add)
        .map(|i| format!("bench-{}", ours.tenants + i))
        .collect();
    a.execute(
        "INSERT INTO tenancy_catalog.tenants (id, slug, display_name, plan, region, placement, cluster_id, state, schema_name)
         SELECT id, slug, slug, 'free', 'eu-west', 'schema', $3, 'active', schema
           FROM unnest($1::uuid[], $2::text[], $4::text[]) AS u(id, slug, schema)",
        &[&uuids, &slugs, &ours.cluster_id, &schemas],
    )
    .await
    .context("registering the tenants")?;
    let version = ours.migrations.last().map_or(0, |m| m.version);
    let checksum = ours
        .migrations
        .last()
        .map(|m| m.checksum())
        .unwrap_or_default();
    let updates: Vec<LedgerUpdate> = ids
        .iter()
        .map(|id| LedgerUpdate {
            target_id: id.as_uuid(),
            kind: Placement::Schema,
            tenant_id: Some(*id),
            cluster_id: ours.cluster_id,
            outcome: LedgerOutcome::At {
                version,
                checksum: checksum.clone(),
                duration_ms: None,
            },
        })
        .collect();
    tenancy_catalog::write_ledger(&a, &updates).await?;
    a.batch_execute(
        "VACUUM ANALYZE tenancy_catalog.tenants, tenancy_catalog.app_migration_targets",
    )
    .await?;
    ours.tenants = n;
    println!(
        "setup: {n} schema tenants ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Our runs over the current tenants: no-op and ADD COLUMN, `runs` times each.
async fn measure_ours(ours: &mut Ours, opts: &Options) -> Result<(f64, f64, serde_json::Value)> {
    let run_opts = RunOptions {
        concurrency: opts.concurrency,
        pipeline: opts.pipeline,
        max_failures: 1,
        ..Default::default()
    };
    let n = ours.tenants;
    let mut noop = Vec::new();
    for _ in 0..opts.runs {
        let s = ours.migrator().run(&run_opts, None).await?;
        anyhow::ensure!(
            s.migrated == 0 && s.skipped == n + 1,
            "no-op run did work: {s:?}"
        );
        noop.push(s.elapsed.as_secs_f64());
    }
    let mut alter = Vec::new();
    let mut slowest = Vec::new();
    for _ in 0..opts.runs {
        let v = ours.migrations.last().map_or(0, |m| m.version) + 1;
        ours.migrations.push(AppMigration {
            version: v,
            name: format!("{v:04}_add_column"),
            sql: format!("ALTER TABLE t00 ADD COLUMN c{v} text"),
        });
        let s = ours.migrator().run(&run_opts, None).await?;
        anyhow::ensure!(
            s.complete() && s.migrated == n + 1,
            "ALTER run incomplete: {s:?}"
        );
        alter.push(s.elapsed.as_secs_f64());
        slowest.push(s.slowest.as_secs_f64() * 1000.0);
        // Keep the clone source at the current version for later growth.
        let mut owner = tenancy_pg::connect(&ours.catalog).await?;
        let app = AppMigrations::new(ours.migrations.clone())?;
        tenancy_provision::storage::migrate_schema(&mut owner, &ours.source, false, &app).await?;
    }
    let noop_m = median(&noop);
    let alter_m = median(&alter);
    println!(
        "tenancy migrate over {n} schema tenants: no-op median {:.3} s {noop:?}, ADD COLUMN median {:.3} s {alter:?}",
        noop_m, alter_m
    );
    Ok((
        noop_m,
        alter_m,
        json!({"noop_s": noop, "alter_s": alter, "alter_slowest_target_ms": slowest}),
    ))
}

/// django-tenants: `n` schemas of the equivalent 20-model app, no-op and one new field,
/// each timed as the `migrate_schemas --executor=multiprocessing` process.
async fn django_baseline(root: &Path, cluster: &Cluster, n: usize) -> Result<serde_json::Value> {
    let python = django::ensure_venv(root).await?;
    let password = format!("pw{:032x}", rand::random::<u128>());
    let su = cluster.connect("postgres").await?;
    su.batch_execute(&format!(
        "CREATE ROLE {DJANGO_ROLE} LOGIN PASSWORD '{password}'"
    ))
    .await?;
    su.batch_execute(&format!("CREATE DATABASE {DJANGO_DB} OWNER {DJANGO_ROLE}"))
        .await?;
    let dsu = cluster.connect(DJANGO_DB).await?;
    dsu.batch_execute(CLONE_FN).await?;

    let dir = root.join("target").join("bench-django-migrate");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    django::write(&dir.join("manage.py"), django::MANAGE)?;
    django::write(
        &dir.join("first_tenant.py"),
        include_str!("django/migrate_tenant.py"),
    )?;
    django::write(&dir.join("benchproj").join("__init__.py"), "")?;
    django::write(&dir.join("benchproj").join("settings.py"), django::SETTINGS)?;
    django::write(&dir.join("customers").join("__init__.py"), "")?;
    django::write(
        &dir.join("customers").join("models.py"),
        django::CUSTOMERS_MODELS,
    )?;
    django::write(
        &dir.join("customers").join("migrations").join("__init__.py"),
        "",
    )?;
    django::write(&dir.join("tenantapp").join("__init__.py"), "")?;
    let models = django::tenant_models(TABLES);
    django::write(&dir.join("tenantapp").join("models.py"), &models)?;
    django::write(
        &dir.join("tenantapp").join("migrations").join("__init__.py"),
        "",
    )?;
    let port = cluster.port();
    let py = |args: &[&str]| {
        django::python_in(&python, &dir, DJANGO_DB, DJANGO_ROLE, &password, port, args)
    };
    django::check(py(django::MAKEMIGRATIONS).output().await?, "makemigrations")?;
    django::check(
        py(&["manage.py", "migrate_schemas", "--shared", "-v", "0"])
            .output()
            .await?,
        "migrate_schemas --shared",
    )?;
    django::check(
        py(&["first_tenant.py", "bench_0000"]).output().await?,
        "creating the first django tenant",
    )?;
    println!("setup: cloning {} django-tenants schemas…", n - 1);
    let started = Instant::now();
    let names: Vec<String> = (1..n).map(|i| format!("bench_{i:04}")).collect();
    // The django role logs in with a password over TCP; clone as the superuser over the
    // socket, acting as that role so it owns the clones.
    let a = cluster.connect(DJANGO_DB).await?;
    let b = cluster.connect(DJANGO_DB).await?;
    a.batch_execute(&format!("SET ROLE {DJANGO_ROLE}")).await?;
    b.batch_execute(&format!("SET ROLE {DJANGO_ROLE}")).await?;
    clone_all(&a, &b, "bench_0000", &names, false).await?;
    a.execute(
        "INSERT INTO customers_client (schema_name, name, created_on) SELECT s, s, current_date FROM unnest($1::text[]) s",
        &[&names],
    )
    .await
    .context("registering django tenants")?;
    println!(
        "setup: django ready ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let time = |args: Vec<&'static str>| {
        let py = &py;
        async move {
            let started = Instant::now();
            let out = py(&args).output().await?;
            let secs = started.elapsed().as_secs_f64();
            django::check(out, "migrate_schemas --executor=multiprocessing")?;
            Ok::<f64, anyhow::Error>(secs)
        }
    };
    let args = vec![
        "manage.py",
        "migrate_schemas",
        "--executor=multiprocessing",
        "-v",
        "0",
    ];
    println!("django-tenants: migrate_schemas (no-op) over {n} schemas…");
    let noop = time(args.clone()).await?;
    // One new field.
    let with_field = models.replacen(
        "class T00(models.Model):\n",
        "class T00(models.Model):\n    note = models.TextField(null=True)\n",
        1,
    );
    django::write(&dir.join("tenantapp").join("models.py"), &with_field)?;
    django::check(
        py(&["manage.py", "makemigrations", "tenantapp", "-v", "0"])
            .output()
            .await?,
        "makemigrations (new field)",
    )?;
    println!("django-tenants: migrate_schemas (one new field) over {n} schemas…");
    let alter = time(args).await?;
    let migrated: i64 = a
        .query_one(
            "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace s ON s.oid = c.relnamespace
              WHERE s.nspname LIKE 'bench\\_%' AND c.relname = 'tenantapp_t00' AND a.attname = 'note'",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(
        migrated == n as i64,
        "django added the field to {migrated} of {n} schemas"
    );
    let version = Command::new(&python)
        .args(["-c", "import importlib.metadata as m, django; print(m.version('django-tenants'), django.__version__)"])
        .output()
        .await?;
    let v = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    println!("django-tenants {v} over {n} schemas: no-op {noop:.2} s, one new field {alter:.2} s");
    Ok(json!({"schemas": n, "noop_s": noop, "alter_s": alter, "versions": v}))
}

/// Runs the benchmark and writes `target/bench/migrate.json`.
pub(crate) async fn run(opts: Options) -> Result<()> {
    anyhow::ensure!(
        !opts.schemas.is_empty()
            && opts.schemas.iter().all(|n| *n >= 1)
            && opts.django_schemas >= 2,
        "--schemas needs counts of at least 1 and --django-schemas at least 2"
    );
    on_private_cluster(
        ClusterOptions {
            ephemeral: true,
            tcp_port: Some(0),
            settings: vec![
                ("max_connections".into(), "200".into()),
                ("max_locks_per_transaction".into(), "1024".into()),
                ("shared_buffers".into(), "512MB".into()),
            ],
            ..Default::default()
        },
        async |cluster| measure(cluster, opts).await,
    )
    .await
}

async fn measure(cluster: &Cluster, opts: Options) -> Result<()> {
    let mut schemas = opts.schemas.clone();
    schemas.sort_unstable();
    let mut ours = setup_ours(cluster).await?;
    let mut per_count = serde_json::Map::new();
    let mut results = Vec::new();
    for &n in &schemas {
        grow_ours(&mut ours, n).await?;
        if n == schemas[0] {
            let t = Instant::now();
            let drift = ours.migrator().check_drift().await?;
            println!(
                "drift check over {} targets: {} differ ({:.2} s)",
                drift.checked,
                drift.drifted.len(),
                t.elapsed().as_secs_f64()
            );
            anyhow::ensure!(
                drift.drifted.is_empty(),
                "cloned schemas drift: {:?}",
                drift.drifted.first()
            );
        }
        let (noop, alter, detail) = measure_ours(&mut ours, &opts).await?;
        per_count.insert(n.to_string(), detail);
        results.push((n, noop, alter));
    }
    let dj = django_baseline(&workspace_root(), cluster, opts.django_schemas).await?;
    let dj_alter = dj["alter_s"].as_f64().unwrap_or(f64::NAN);
    let dj_noop = dj["noop_s"].as_f64().unwrap_or(f64::NAN);
    // Ours at the same number of schemas as django (the closest measured count).
    let &(same_n, same_noop, same_alter) = results
        .iter()
        .min_by_key(|(n, _, _)| n.abs_diff(opts.django_schemas))
        .context("no measurement")?;
    let ratio = dj_alter / same_alter;
    let mut params = serde_json::Map::new();
    params.insert("schemas_compared".into(), json!(same_n));
    params.insert("tables_per_schema".into(), json!(TABLES));
    params.insert("ours_noop_s".into(), json!(same_noop));
    params.insert("ours_alter_s".into(), json!(same_alter));
    params.insert("django_noop_s".into(), json!(dj_noop));
    params.insert("django_alter_s".into(), json!(dj_alter));
    params.insert("noop_ratio".into(), json!(dj_noop / same_noop));
    for (n, noop, alter) in &results {
        params.insert(format!("noop_{n}_s"), json!(noop));
        params.insert(format!("alter_{n}_s"), json!(alter));
    }
    params.insert("runs".into(), json!(opts.runs));
    params.insert("concurrency".into(), json!(opts.concurrency));
    params.insert("pipeline".into(), json!(opts.pipeline));
    params.insert(
        "ours_per_count".into(),
        serde_json::Value::Object(per_count),
    );
    params.insert("django".into(), dj.clone());
    let report = Report {
        name: "migrate".into(),
        unit: format!(
            "seconds for one ALTER TABLE … ADD COLUMN across {same_n} schema tenants (20 tables), median; lower is better; ratio = django-tenants time / ours, > 1 means faster than django-tenants"
        ),
        ours: same_alter,
        baseline: dj_alter,
        baseline_name: format!(
            "django-tenants migrate_schemas --executor=multiprocessing ({}), {} schemas",
            dj["versions"].as_str().unwrap_or("?"),
            opts.django_schemas
        ),
        ratio,
        params: serde_json::Value::Object(params),
    };
    let path = report.write()?;
    println!(
        "ADD COLUMN over {same_n} schemas: ours {same_alter:.3} s vs django-tenants {dj_alter:.2} s → {ratio:.1}x; no-op {same_noop:.3} s vs {dj_noop:.2} s"
    );
    println!("wrote {}", path.display());
    Ok(())
}
