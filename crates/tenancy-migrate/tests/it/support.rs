//! A catalog that is also region eu-west's shared database, tenants provisioned by the
//! real provisioning engine, and helpers to look inside their schemas.

use std::time::Duration;

use tenancy_catalog::NewCluster;
use tenancy_core::{Placement, TenantId};
use tenancy_migrate::{MigrationSet, Migrator, Options};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_provision::{
    AppMigration, AppMigrations, ClusterAccess, ProvisionConfig, ProvisionRequest, Provisioner,
};
use tenancy_sdk::bootstrap::OWNER_ROLE;
use tenancy_sdk::ContextKey;
use tokio_postgres::Client;

static TEMPLATE: TemplateDb = TemplateDb::new("migrate_tpl");

pub(crate) fn key() -> ContextKey {
    ContextKey::from_hex(
        "mig".parse().expect("kid"),
        "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    )
    .expect("key")
}

pub(crate) use tenancy_test_support::connect;

/// Version 1: two generated tenant tables.
pub(crate) fn v1() -> Vec<AppMigration> {
    let mut g = AppMigrations::generated(2).all().to_vec();
    g[0].name = "0001_init".into();
    g
}

/// Version 2: one ADD COLUMN.
pub(crate) fn v2() -> AppMigration {
    AppMigration {
        version: 2,
        name: "0002_notes".into(),
        sql: "ALTER TABLE t01 ADD COLUMN notes text NOT NULL DEFAULT ''".into(),
    }
}

pub(crate) fn set(ms: Vec<AppMigration>) -> MigrationSet {
    MigrationSet::from_app(
        AppMigrations::new(ms).expect("migrations"),
        "test migrations",
    )
}

pub(crate) struct Env {
    pub db: TestDb,
    pub catalog: Client,
    pub cluster_id: uuid::Uuid,
}

impl Env {
    pub(crate) async fn new() -> Env {
        let db = tenancy_test_support::fresh_catalog_db(&TEMPLATE, key(), "").await;
        let catalog = connect(db.config_as(OWNER_ROLE)).await;
        tenancy_catalog::add_region(&catalog, &"eu-west".parse().expect("region"), "EU")
            .await
            .expect("region");
        let cluster = tenancy_catalog::add_cluster(
            &catalog,
            &NewCluster {
                name: "pg-eu".into(),
                region: "eu-west".parse().expect("region"),
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
        Env {
            db,
            catalog,
            cluster_id: cluster.id,
        }
    }

    pub(crate) fn access(&self) -> ClusterAccess {
        ClusterAccess::local(self.db.cluster.superuser())
    }

    pub(crate) fn migrator(&self, ms: Vec<AppMigration>) -> Migrator {
        Migrator::new(self.db.config_as(OWNER_ROLE), self.access(), set(ms))
    }

    /// A provisioning engine that loaded the app at `ms`.
    pub(crate) fn provisioner(&self, ms: Vec<AppMigration>) -> Provisioner {
        Provisioner::new(
            self.db.config_as(OWNER_ROLE),
            self.access(),
            key(),
            ProvisionConfig {
                app_migrations: AppMigrations::new(ms).expect("migrations"),
                poll_interval: Duration::from_millis(20),
                ..Default::default()
            },
        )
        .expect("provisioner")
    }

    /// Provisions tenants with the app at `ms` through the real engine and waits.
    pub(crate) async fn provision(
        &mut self,
        ms: Vec<AppMigration>,
        tenants: &[(&str, Placement)],
    ) -> Vec<TenantId> {
        let p = self.provisioner(ms);
        self.provision_with(&p, tenants).await
    }

    /// Provisions tenants through `p` and waits until each is active.
    pub(crate) async fn provision_with(
        &mut self,
        p: &Provisioner,
        tenants: &[(&str, Placement)],
    ) -> Vec<TenantId> {
        let mut ids = Vec::new();
        let mut wfs = Vec::new();
        for (slug, placement) in tenants {
            let req = ProvisionRequest {
                tenant: tenancy_catalog::NewTenant {
                    id: None,
                    slug: slug.parse().expect("slug"),
                    display_name: slug.to_string(),
                    plan: "free".parse().expect("plan"),
                    region: "eu-west".parse().expect("region"),
                    placement: *placement,
                },
                billing_customer: None,
                billing_subscription: None,
            };
            let (t, wf) = p
                .provision(&mut self.catalog, &req, "test")
                .await
                .expect("provision");
            ids.push(t.id);
            wfs.push(wf.id);
        }
        let mut driver = connect(self.db.config_as(OWNER_ROLE)).await;
        for wf in wfs {
            let w = p
                .drive(&mut driver, wf, Duration::from_secs(60))
                .await
                .expect("drive");
            assert_eq!(
                w.status,
                tenancy_catalog::WorkflowStatus::Succeeded,
                "{w:?}"
            );
        }
        ids
    }

    /// A connection to a tenant's database as the superuser (schema tenants: the shared db).
    pub(crate) async fn tenant_db(&self, id: TenantId, placement: Placement) -> (Client, String) {
        match placement {
            Placement::Dedicated => (
                self.db
                    .cluster
                    .connect(&tenancy_provision::storage::database_name_for(id))
                    .await
                    .expect("dedicated"),
                "public".into(),
            ),
            _ => (
                self.db.connect_superuser().await.expect("su"),
                tenancy_provision::storage::schema_name_for(id),
            ),
        }
    }
}

/// The marker version of `schema` and whether `t01.notes` exists there.
pub(crate) async fn state_of(client: &Client, schema: &str) -> (i32, bool) {
    let v = tenancy_provision::storage::schema_version(client, schema)
        .await
        .expect("version")
        .expect("schema exists");
    let has: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                WHERE c.relnamespace = $1::text::regnamespace AND c.relname = 't01' AND a.attname = 'notes' AND NOT a.attisdropped)",
            &[&schema],
        )
        .await
        .expect("column")
        .get(0);
    (v, has)
}

/// Ledger version of a target.
pub(crate) async fn ledger_version(catalog: &Client, target: uuid::Uuid) -> Option<i32> {
    catalog
        .query_opt(
            "SELECT version FROM tenancy_catalog.app_migration_targets WHERE target_id = $1",
            &[&target],
        )
        .await
        .expect("ledger")
        .map(|r| r.get(0))
}

pub(crate) fn opts() -> Options {
    Options {
        concurrency: 2,
        pipeline: 4,
        recycle_after: 3,
        ..Default::default()
    }
}
