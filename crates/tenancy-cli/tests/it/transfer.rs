//! `tenancy tenants export | import` through the binary: a large tenant's round trip with
//! the process's peak memory measured (it must not grow with the tenant), each export
//! recorded in the control log and the tenant's audit log, and a damaged
//! archive refused before any tenant is created. `tenancy import --from-database`: a
//! single-tenant database checked, imported as a new tenant, and a second run a no-op.

use std::collections::BTreeMap;
use std::time::Duration;

use tenancy_core::{Placement, TenantId};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_provision::{
    AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner,
};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, ContextKey, Router, RouterOptions};
use tokio_postgres::Client;

static TEMPLATE: TemplateDb = TemplateDb::new("cli_transfer_tpl");
const KEY_HEX: &str = "7a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn key() -> ContextKey {
    ContextKey::from_hex("xfer".parse().expect("kid"), KEY_HEX).expect("key")
}

struct Deployment {
    db: TestDb,
    catalog: Client,
    provisioner: Provisioner,
    router: Router,
}

async fn deployment() -> Deployment {
    let db = tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), "").await;
    let catalog = tenancy_test_support::connect(db.config_as(OWNER_ROLE)).await;
    tenancy_catalog::add_region(&catalog, &"eu-west".parse().expect("r"), "EU")
        .await
        .expect("region");
    tenancy_catalog::add_cluster(
        &catalog,
        &tenancy_catalog::NewCluster {
            name: "pg-eu-west".into(),
            region: "eu-west".parse().expect("r"),
            location: tenancy_catalog::ClusterLocation {
                host: db.cluster.socket_dir().display().to_string(),
                port: db.cluster.port(),
                dbname: db.name.clone(),
            },
            capacity: 1000,
        },
    )
    .await
    .expect("cluster");
    let provisioner = Provisioner::new(
        db.config_as(OWNER_ROLE),
        ClusterAccess::local(db.cluster.superuser()),
        key(),
        ProvisionConfig {
            app_migrations: AppMigrations::generated(3),
            plans: BTreeMap::from([("free".to_owned(), serde_json::Map::new())]),
            registration_receivers: vec![],
            event_receivers: vec![],
            retention: Duration::ZERO,
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            outbox_max_attempts: 3,
            webhook_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            warm_pool: tenancy_provision::WarmPool::DISABLED,
            ..Default::default()
        },
    )
    .expect("provisioner");
    let router = Router::new(
        db.config_as(RUNTIME_ROLE),
        key(),
        ClusterCredentials {
            user: RUNTIME_ROLE.into(),
            password: None,
        },
        RouterOptions::default(),
    )
    .expect("router");
    Deployment {
        db,
        catalog,
        provisioner,
        router,
    }
}

impl Deployment {
    async fn tenant(&mut self, slug: &str, placement: Placement) -> TenantId {
        let req = ProvisionRequest {
            tenant: tenancy_catalog::NewTenant {
                id: None,
                slug: slug.parse().expect("slug"),
                display_name: slug.to_owned(),
                plan: "free".parse().expect("plan"),
                region: "eu-west".parse().expect("region"),
                placement,
            },
            billing_customer: None,
            billing_subscription: None,
        };
        let (t, wf) = self
            .provisioner
            .provision(&mut self.catalog, &req, "test")
            .await
            .expect("provision");
        self.provisioner
            .drive(&mut self.catalog, wf.id, Duration::from_secs(60))
            .await
            .expect("drive");
        t.id
    }

    /// `n` rows in each of t00, t01 (→ t00), t02 (→ t01), written by the server.
    async fn fill(&self, tenant: TenantId, n: i64) {
        let mut tx = self.router.begin(tenant).await.expect("begin");
        tx.execute(
            "INSERT INTO t00 (name, amount) SELECT 'row ' || g || repeat(' pad', 8), g / 3.0 FROM generate_series(1, $1::bigint) g",
            &[&n],
        )
        .await
        .expect("t00");
        for (child, parent) in [("t01", "t00"), ("t02", "t01")] {
            let sql = format!(
                "INSERT INTO {child} (name, parent_id) SELECT name || ' child', id FROM {parent}"
            );
            tx.execute(sql.as_str(), &[]).await.expect("child rows");
        }
        tx.commit().await.expect("commit");
    }

    /// Runs `tenancy tenants ARGV…`: (exit code, stdout, stderr, peak resident memory in
    /// KiB, read from the process's VmHWM while it runs).
    async fn tenancy(&self, argv: &[&str]) -> (Option<i32>, String, String, u64) {
        self.run(&["tenants"], argv).await
    }

    /// Runs `tenancy COMMAND --database-url … ARGV…`, measured as [`Self::tenancy`].
    async fn run(&self, command: &[&str], argv: &[&str]) -> (Option<i32>, String, String, u64) {
        let url = self.db.cluster.url_as(OWNER_ROLE, &self.db.name);
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenancy"))
            .args(command)
            .args(["--database-url", &url])
            .args(argv)
            .env_remove("DATABASE_URL")
            .env("TENANCY_CONTEXT_KEY_ID", "xfer")
            .env("TENANCY_CONTEXT_KEY_HEX", KEY_HEX)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tenancy");
        let pid = child.id().expect("pid");
        let done = tokio::spawn(child.wait_with_output());
        let mut peak = 0u64;
        while !done.is_finished() {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                {
                    peak = peak.max(kib);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let out = done.await.expect("join").expect("tenancy ran");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            peak,
        )
    }
}

async fn summary(path: &std::path::Path) -> tenancy_transfer::Summary {
    let f = tokio::fs::File::open(path).await.expect("archive");
    tenancy_transfer::verify_archive(tokio::io::BufReader::new(f), &tenancy_transfer::NoProgress)
        .await
        .expect("a valid archive")
        .summary
}

#[tokio::test]
async fn a_large_tenant_round_trips_through_the_binary_in_bounded_memory() {
    let mut d = deployment().await;
    let small = d.tenant("small", Placement::Pooled).await;
    let large = d.tenant("large", Placement::Pooled).await;
    d.fill(small, 1_000).await;
    d.fill(large, 100_000).await;
    let dir = std::env::temp_dir().join(format!("tenancy-cli-transfer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = |n: &str| dir.join(n).to_str().expect("utf8").to_owned();

    let (code, _, err, small_export) = d
        .tenancy(&["export", "small", "--out", &path("small.tx")])
        .await;
    assert_eq!(code, Some(0), "{err}");
    // Recorded as the API records an export: `tenant.export` by the operator, in the
    // control log and in the tenant's own audit log, with the archive's digests and rows.
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(path("small.tx")).expect("archive"),
        ))
    };
    let digest = summary(dir.join("small.tx").as_path()).await.digest;
    for table in ["tenancy_catalog.audit_log", "tenancy.audit_events"] {
        let rows = d
            .catalog
            .query(
                &format!(
                    "SELECT actor_kind, actor_subject, after FROM {table}
                      WHERE tenant_id = $1 AND action = 'tenant.export'"
                ),
                &[&small.as_uuid()],
            )
            .await
            .expect("events");
        assert_eq!(rows.len(), 1, "{table}");
        let (kind, subject, after): (String, String, serde_json::Value) =
            (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!(kind, "admin", "{table}");
        assert!(subject.starts_with("cli:"), "{table}: {subject}");
        assert_eq!(after["sha256"], sha256.as_str(), "{table}: {after}");
        assert_eq!(after["digest"], digest.as_str(), "{table}: {after}");
        assert_eq!(after["rows"], 3000, "{table}: {after}");
        assert_eq!(after["via"], "cli", "{table}: {after}");
    }
    let (code, out, err, large_export) = d
        .tenancy(&["export", "large", "--out", &path("large.tx")])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("300000 rows"), "{out}");
    let size = std::fs::metadata(path("large.tx")).expect("archive").len();
    eprintln!(
        "export: archive {size} bytes; peak RSS {small_export} KiB (3,000 rows) vs {large_export} KiB (300,000 rows)"
    );
    // The archive is far larger than the growth allowed: the rows were streamed, not held.
    assert!(size > 30 << 20, "archive of {size} bytes");
    assert!(
        large_export < small_export + 16 * 1024,
        "peak RSS grew from {small_export} KiB to {large_export} KiB for a {size}-byte archive"
    );

    // Into a dedicated tenant, through the binary, measured the same way.
    d.tenant("copy-small", Placement::Dedicated).await;
    d.tenant("copy-large", Placement::Dedicated).await;
    let (code, _, err, small_import) = d
        .tenancy(&["import", &path("small.tx"), "--tenant", "copy-small"])
        .await;
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err, large_import) = d
        .tenancy(&["import", &path("large.tx"), "--tenant", "copy-large"])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("imported 300000 rows"), "{out}");
    eprintln!(
        "import: peak RSS {small_import} KiB (3,000 rows) vs {large_import} KiB (300,000 rows)"
    );
    assert!(
        large_import < small_import + 16 * 1024,
        "peak RSS grew from {small_import} KiB to {large_import} KiB for a {size}-byte archive"
    );
    // The copy, exported again, has the same counts and checksums as the original.
    let (code, _, err, _) = d
        .tenancy(&["export", "copy-large", "--out", &path("copy.tx")])
        .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        summary(dir.join("large.tx").as_path()).await.tables,
        summary(dir.join("copy.tx").as_path()).await.tables
    );
    // An existing --out is refused, not overwritten.
    let (code, _, err, _) = d
        .tenancy(&["export", "small", "--out", &path("small.tx")])
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the file exists"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test]
async fn a_damaged_archive_is_refused_before_any_tenant_is_created() {
    let mut d = deployment().await;
    let source = d.tenant("source", Placement::Pooled).await;
    d.fill(source, 50).await;
    let dir = std::env::temp_dir().join(format!("tenancy-cli-transfer-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let full = dir.join("full.tx");
    let (code, _, err, _) = d
        .tenancy(&["export", "source", "--out", full.to_str().expect("utf8")])
        .await;
    assert_eq!(code, Some(0), "{err}");
    let bytes = std::fs::read(&full).expect("archive");
    let cut = dir.join("cut.tx");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).expect("write");
    let (code, _, err, _) = d
        .tenancy(&[
            "import",
            cut.to_str().expect("utf8"),
            "--tenant",
            "fresh-copy",
            "--placement",
            "schema",
        ])
        .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let missing =
        tenancy_catalog::get_tenant_by_slug(&d.catalog, &"fresh-copy".parse().expect("slug")).await;
    assert!(missing.is_err(), "a tenant was created: {missing:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The generated app's three tables before tenants: identity keys, foreign keys on `id`.
const SINGLE_TENANT_SCHEMA: &str = "
CREATE TABLE t00 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                  amount numeric(12,2) NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE t01 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                  amount numeric(12,2) NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(),
                  parent_id bigint REFERENCES t00);
CREATE TABLE t02 (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                  amount numeric(12,2) NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(),
                  parent_id bigint REFERENCES t01);
INSERT INTO t00 (name, amount) SELECT 'legacy ' || g, g / 4.0 FROM generate_series(1, 2000) g;
INSERT INTO t01 (name, parent_id) SELECT name || ' child', id FROM t00;
INSERT INTO t02 (name, parent_id) SELECT name || ' child', id FROM t01;
";

#[tokio::test]
async fn a_single_tenant_database_is_checked_imported_and_a_second_run_does_nothing() {
    let mut d = deployment().await;
    // The app's tables exist in the pooled database once a pooled tenant was provisioned.
    d.tenant("first", Placement::Pooled).await;
    let workers = d.provisioner.spawn_workers(1);
    let admin = tenancy_test_support::connect(d.db.cluster.config("postgres")).await;
    let (good, bad) = (format!("{}_good", d.db.name), format!("{}_bad", d.db.name));
    for db in [&good, &bad] {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .expect("source database");
    }
    tenancy_test_support::connect(d.db.cluster.config(&good))
        .await
        .batch_execute(SINGLE_TENANT_SCHEMA)
        .await
        .expect("good source");
    tenancy_test_support::connect(d.db.cluster.config(&bad))
        .await
        .batch_execute(&format!(
            "{SINGLE_TENANT_SCHEMA} ALTER TABLE t01 ADD COLUMN fax text; ALTER TABLE t02 ALTER COLUMN name TYPE varchar(80);"
        ))
        .await
        .expect("bad source");
    let su = d.db.cluster.superuser().to_owned();
    let from = |db: &str| d.db.cluster.url_as(&su, db);

    // A dry run of an incompatible source: exit 1, every problem with what to do, and
    // nothing created.
    let (code, out, err, _) = d
        .run(
            &["import"],
            &[
                "--from-database",
                &from(&bad),
                "--tenant",
                "legacy-bad",
                "--dry-run",
            ],
        )
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("BLOCKER t01.fax: the app has no such column"),
        "{out}"
    );
    assert!(out.contains("BLOCKER t02.name"), "{out}");
    assert!(out.contains("do: "), "{out}");
    // Without --dry-run the same source is refused the same way.
    let (code, out, err, _) = d
        .run(
            &["import"],
            &["--from-database", &from(&bad), "--tenant", "legacy-bad"],
        )
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("nothing was imported"), "{out}");
    let none =
        tenancy_catalog::get_tenant_by_slug(&d.catalog, &"legacy-bad".parse().expect("slug")).await;
    assert!(
        none.is_err(),
        "a tenant was created for a refused source: {none:?}"
    );

    // A clean dry run, then the import: a new pooled tenant with every row, verified.
    let (code, out, err, _) = d
        .run(
            &["import"],
            &[
                "--from-database",
                &from(&good),
                "--tenant",
                "legacy-one",
                "--dry-run",
            ],
        )
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("the import would proceed"), "{out}");
    let (code, out, err, _) = d
        .run(
            &["import"],
            &["--from-database", &from(&good), "--tenant", "legacy-one"],
        )
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("imported 6000 rows"), "{out}");
    let t = tenancy_catalog::get_tenant_by_slug(&d.catalog, &"legacy-one".parse().expect("slug"))
        .await
        .expect("the imported tenant");
    let mut tx = d.router.begin(t.id).await.expect("begin");
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM t02 JOIN t01 ON t01.id = t02.parent_id JOIN t00 ON t00.id = t01.parent_id),
                    (SELECT sum(amount)::text FROM t00)",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(row.get::<_, i64>(0), 2000, "every chain of keys kept");
    assert_eq!(row.get::<_, String>(1), "500250.00");
    // The identity sequences were raised: the tenant keeps inserting.
    let id: i64 = tx
        .query_one("INSERT INTO t00 (name) VALUES ('after') RETURNING id", &[])
        .await
        .expect("insert after the import")
        .get(0);
    assert!(id > 2000, "new id {id}");
    tx.commit().await.expect("commit");

    // The same source again: recorded as done, nothing to do, no tenant made.
    let (code, out, err, _) = d
        .run(
            &["import"],
            &["--from-database", &from(&good), "--tenant", "legacy-two"],
        )
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("nothing to do"), "{out}");
    let none =
        tenancy_catalog::get_tenant_by_slug(&d.catalog, &"legacy-two".parse().expect("slug")).await;
    assert!(none.is_err(), "{none:?}");
    workers.stop().await;
}
