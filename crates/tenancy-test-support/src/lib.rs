//! What the integration tests of several crates set up the same way, on the test
//! process's shared cluster ([`tenancy_pg::testing`]): a clone of a template database
//! that holds tenancy's roles and database privileges, the runtime with a context key and
//! the catalog, and plain connections driven on the current runtime. With the `webhooks`
//! feature, a local webhook receiver that verifies signatures ([`webhooks`]).

#[cfg(feature = "webhooks")]
pub mod webhooks;

use tenancy_core::ContextKey;
use tenancy_pg::testing::{SetupError, TemplateDb, TestDb};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE};
use tokio_postgres::{Client, NoTls};

/// Opens a plain connection with `cfg` and drives it on the current runtime.
///
/// # Panics
/// When the connection cannot be opened (a test set-up failure).
pub async fn connect(cfg: tokio_postgres::Config) -> Client {
    let (client, conn) = cfg.connect(NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A fresh clone of `template`, built once per test process: the cluster's and the
/// database's bootstrap, the runtime with `key`, the catalog's migrations, then `app_sql`
/// run as the owner role (empty: nothing).
///
/// # Panics
/// When the template or the clone cannot be made (a test set-up failure).
pub async fn fresh_catalog_db(
    template: &'static TemplateDb,
    key: ContextKey,
    app_sql: &'static str,
) -> TestDb {
    fresh_catalog_db_with(template, key, async |owner: &mut Client| {
        if !app_sql.is_empty() {
            owner.batch_execute(app_sql).await?;
        }
        Ok(())
    })
    .await
}

/// [`fresh_catalog_db`] with `app` run on the owner's connection instead of SQL (an
/// application's own migrations, say).
///
/// # Panics
/// When the template or the clone cannot be made (a test set-up failure).
pub async fn fresh_catalog_db_with(
    template: &'static TemplateDb,
    key: ContextKey,
    app: impl AsyncFnOnce(&mut Client) -> Result<(), SetupError>,
) -> TestDb {
    let db = template
        .fresh(|cluster, db| async move {
            let su = cluster.connect(&db).await?;
            bootstrap::bootstrap_cluster(&su).await?;
            bootstrap::bootstrap_database(&su, &db).await?;
            let mut owner = connect(cluster.config_as(OWNER_ROLE, &db)).await;
            bootstrap::install_runtime(&owner, &key).await?;
            tenancy_catalog::migrate(&mut owner).await?;
            app(&mut owner).await
        })
        .await
        .expect("fresh database");
    bootstrap_clone(&db).await;
    db
}

/// Sets the database-level privileges of a clone of a template database (they are not
/// copied from the template).
///
/// # Panics
/// When the superuser cannot connect or the bootstrap fails.
pub async fn bootstrap_clone(db: &TestDb) {
    let su = db.connect_superuser().await.expect("superuser");
    bootstrap::bootstrap_database(&su, &db.name)
        .await
        .expect("bootstrap clone");
}

/// Whether the server `client` is connected to offers the `tenancy_context` extension
/// (a server tenancy started on PostgreSQL 18+ always does; 14–17 after `make install`).
///
/// # Panics
/// When the catalog of available extensions cannot be read.
pub async fn context_extension_offered(client: &Client) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'tenancy_context')",
            &[],
        )
        .await
        .expect("available extensions")
        .get(0)
}
