//! A catalog that is also region eu-west's shared database, a provisioner that makes
//! tenants of every placement on it, and the example rows the tests move around.

use std::collections::BTreeMap;
use std::time::Duration;

use tenancy_core::{Placement, TenantId};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_provision::{
    AppMigration, AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner,
};
use tenancy_sdk::bootstrap::{OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ClusterCredentials, ContextKey, Router, RouterOptions};
use tokio_postgres::Client;

static TEMPLATE: TemplateDb = TemplateDb::new("transfer_tpl");

const KEY_HEX: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn key() -> ContextKey {
    ContextKey::from_hex("xfer".parse().expect("kid"), KEY_HEX).expect("key")
}

/// The app: three generated tables (`t00` ← `t01` ← `t02`, composite foreign keys,
/// identity keys), then a table of awkward types at version 2.
pub(crate) fn app() -> AppMigrations {
    let mut ms = AppMigrations::generated(3).all().to_vec();
    ms.push(AppMigration {
        version: 2,
        name: "0002_kinds".into(),
        sql: "CREATE TABLE kinds (
                tenant_id uuid NOT NULL,
                id bigint GENERATED ALWAYS AS IDENTITY,
                doc jsonb, raw bytea, tags int[], span interval, ratio float8, flag boolean,
                note text, at timestamptz, day date, price numeric,
                note_len int GENERATED ALWAYS AS (length(note)) STORED,
                PRIMARY KEY (tenant_id, id)
              );"
        .into(),
    });
    AppMigrations::new(ms).expect("migrations")
}

/// One test's deployment: catalog, provisioner, router.
pub(crate) struct Env {
    /// Kept for the test's lifetime.
    pub _db: TestDb,
    pub catalog: Client,
    pub provisioner: Provisioner,
    pub router: Router,
    pub access: ClusterAccess,
}

pub(crate) async fn env() -> Env {
    env_with(app()).await
}

/// [`env`] with another app.
pub(crate) async fn env_with(app_migrations: AppMigrations) -> Env {
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
    let access = ClusterAccess::local(db.cluster.superuser());
    let provisioner = Provisioner::new(
        db.config_as(OWNER_ROLE),
        access.clone(),
        key(),
        ProvisionConfig {
            app_migrations,
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
        RouterOptions {
            cache_ttl: Duration::ZERO,
            ..Default::default()
        },
    )
    .expect("router");
    Env {
        _db: db,
        catalog,
        provisioner,
        router,
        access,
    }
}

impl Env {
    /// A new active tenant.
    pub(crate) async fn tenant(&mut self, slug: &str, placement: Placement) -> TenantId {
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
        let wf = self
            .provisioner
            .drive(&mut self.catalog, wf.id, Duration::from_secs(60))
            .await
            .expect("drive");
        assert_eq!(wf.status.to_string(), "succeeded", "{wf:?}");
        t.id
    }

    /// Writes `n` rows per generated table (each `t01` row points at a `t00` row, each
    /// `t02` row at a `t01` row) and a few rows of awkward values, tagged with `tag`.
    pub(crate) async fn fill(&self, tenant: TenantId, tag: &str, n: i64) {
        let mut tx = self.router.begin(tenant).await.expect("begin");
        tx.execute(
            "INSERT INTO t00 (name, amount) SELECT $1 || ' ' || g, g / 7.0 FROM generate_series(1, $2::bigint) g",
            &[&tag, &n],
        )
        .await
        .expect("t00");
        for (child, parent) in [("t01", "t00"), ("t02", "t01")] {
            let sql = format!(
                "INSERT INTO {child} (name, parent_id) SELECT name || ' child', id FROM {parent} ORDER BY id"
            );
            tx.execute(sql.as_str(), &[]).await.expect("child rows");
        }
        tx.execute(
            "INSERT INTO kinds (doc, raw, tags, span, ratio, flag, note, at, day, price) VALUES
               ('{\"a\": [1, 2.50, null], \"b\": \"x\\\\y \\\"q\\\" \\n\"}', '\\x00ff5c0a', '{1,NULL,3}', '1 day 02:03:04.5',
                0.1, true, $1 || E' tab\\t newline\\n backslash\\\\ quote'' é 🦀', '2024-02-29 23:59:59.999999+05:30', '2000-01-01', 12345678901234567890.0123456789),
               (NULL, NULL, NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL),
               ('[]', '', '{}', '-1 year', '-Infinity', false, '', 'infinity', '-infinity', 'NaN')",
            &[&tag],
        )
        .await
        .expect("kinds");
        tx.commit().await.expect("commit");
    }

    /// Per table: (rows, checksum) of the tenant's rows as the archive writes them.
    pub(crate) async fn contents(&self, tenant: TenantId) -> Vec<(String, i64, String)> {
        let mut tx = self.router.begin(tenant).await.expect("begin");
        tx.batch_execute(tenancy_transfer::format::SESSION_SETTINGS)
            .await
            .expect("settings");
        let mut out = Vec::new();
        for t in ["kinds", "t00", "t01", "t02"] {
            let sql = format!("SELECT (to_jsonb(r) - 'tenant_id')::text FROM {t} r");
            let rows = tx.query(sql.as_str(), &[]).await.expect("rows");
            let mut sum = tenancy_transfer::format::RowChecksum::default();
            for r in &rows {
                sum.add(r.get::<_, &str>(0).as_bytes());
            }
            out.push((t.to_owned(), rows.len() as i64, sum.hex()));
        }
        tx.rollback().await.expect("rollback");
        out
    }

    /// Rows of every tenant table visible to the tenant.
    pub(crate) async fn row_count(&self, tenant: TenantId) -> i64 {
        self.contents(tenant).await.iter().map(|c| c.1).sum()
    }

    pub(crate) async fn export(&self, tenant: TenantId) -> Vec<u8> {
        let mut out = Vec::new();
        tenancy_transfer::export(
            &self.router,
            &self.catalog,
            tenant,
            &mut out,
            &tenancy_transfer::NoProgress,
        )
        .await
        .expect("export");
        out
    }

    pub(crate) async fn import(
        &self,
        tenant: TenantId,
        archive: &[u8],
    ) -> Result<tenancy_transfer::ImportSummary, tenancy_transfer::Error> {
        tenancy_transfer::import(
            &self.router,
            &self.catalog,
            &self.access,
            tenant,
            archive,
            &tenancy_transfer::NoProgress,
        )
        .await
    }
}

/// The frames of an archive: (tag, payload), after the 10 lead bytes.
pub(crate) fn frames(archive: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 10;
    while i < archive.len() {
        let len = u32::from_be_bytes(archive[i + 1..i + 5].try_into().expect("len")) as usize;
        out.push((archive[i], archive[i + 5..i + 5 + len].to_vec()));
        i += 5 + len;
    }
    out
}

/// Byte offset of the first occurrence of `needle`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the archive")
}

/// An archive rebuilt from edited frames, with consistent checksums and digest: what a
/// forger who knows the format produces. `edit` gets the header and each table's rows
/// (lines), and returns them changed.
pub(crate) async fn reforge(
    archive: &[u8],
    edit_header: impl Fn(&mut tenancy_transfer::Header),
    edit_row: impl Fn(&str, &str) -> Option<String>,
) -> Vec<u8> {
    use tenancy_transfer::format::{ArchiveWriter, RowChecksum};
    let fs = frames(archive);
    let mut header: tenancy_transfer::Header = serde_json::from_slice(&fs[0].1).expect("header");
    edit_header(&mut header);
    let keep: Vec<String> = header.tables.iter().map(|t| t.name.clone()).collect();
    let mut w = ArchiveWriter::start(Vec::new(), &header)
        .await
        .expect("start");
    let mut sums = Vec::new();
    let mut table = String::new();
    let mut sum = RowChecksum::default();
    for (tag, payload) in &fs[1..] {
        match tag {
            b'T' => {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("t");
                table = v["table"].as_str().expect("name").to_owned();
                sum = RowChecksum::default();
                if keep.contains(&table) {
                    w.frame(b'T', payload).await.expect("frame");
                }
            }
            b'R' if keep.contains(&table) => {
                let text = String::from_utf8(payload.clone()).expect("utf8");
                let mut out = String::new();
                for line in text.lines() {
                    let line = edit_row(&table, line).unwrap_or_else(|| line.to_owned());
                    sum.add(line.as_bytes());
                    out.push_str(&line);
                    out.push('\n');
                }
                w.frame(b'R', out.as_bytes()).await.expect("frame");
            }
            b'E' if keep.contains(&table) => {
                let s = sum.summary(&table);
                w.json(b'E', &s).await.expect("frame");
                sums.push(s);
            }
            _ => {}
        }
    }
    w.finish(sums).await.expect("finish").0
}
