//! Tenant storage: the shared database, tenant schemas, dedicated databases cloned from a
//! template, the warm pool of spares, and dropping storage.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tenancy_catalog::{self as catalog, ClusterRecord, Tenant};
use tenancy_core::Placement;
use tenancy_sdk::{PoolOptions, TenantPool};
use uuid::Uuid;

use super::Provisioner;
use crate::conn::{config_for, connect};
use crate::storage::{self, database_name_for, schema_name_for};
use crate::{AppMigrations, Error};

impl Provisioner {
    /// Creates the tenant's storage at the app's latest version. Idempotent.
    pub(super) async fn create_storage(
        &self,
        tenant: &Tenant,
        app: &AppMigrations,
    ) -> Result<(), Error> {
        let cluster = self.cluster(tenant.cluster_id).await?;
        match tenant.placement {
            Placement::Pooled => self.ensure_shared(&cluster, app).await,
            Placement::Schema => {
                let schema = tenant
                    .schema_name
                    .clone()
                    .unwrap_or_else(|| schema_name_for(tenant.id));
                let mut owner = self.login(&cluster, Role::Owner, &cluster.dbname).await?;
                // A spare of the warm pool at the latest version, renamed to the tenant's
                // schema; none (or the schema exists: a re-run step): created here.
                if self.inner.cfg.warm_pool.schemas > 0
                    && app.latest() > 0
                    && storage::claim_spare_schema(&mut owner, &schema, app.latest()).await?
                {
                    self.inner.claims[0].fetch_add(1, Ordering::Relaxed);
                    self.inner.refill_wake.notify_one();
                    return Ok(());
                }
                storage::migrate_schema(&mut owner, &schema, true, app).await?;
                Ok(())
            }
            Placement::Dedicated => {
                // A copy of the cluster's template (bootstrapped, migrated, no secrets),
                // then what a copy does not carry: database privileges and its own keys.
                let db = tenant
                    .database_name
                    .clone()
                    .unwrap_or_else(|| database_name_for(tenant.id));
                let (template, strategy) = self.ensure_template(&cluster, app).await?;
                if self.inner.cfg.warm_pool.databases > 0 {
                    // A finalised spare (own keys, privileges) cloned from the current
                    // template, renamed to the tenant's database. None, or the database
                    // exists (a re-run step): the path below.
                    let mut admin = self.login(&cluster, Role::Admin, "postgres").await?;
                    let tag = storage::spare_database_tag(&template, &self.inner.key);
                    if storage::claim_spare_database(&mut admin, &db, &tag).await? {
                        self.inner.claims[1].fetch_add(1, Ordering::Relaxed);
                        self.inner.refill_wake.notify_one();
                        return Ok(());
                    }
                }
                {
                    let admin = self.login(&cluster, Role::Admin, "postgres").await?;
                    self.clone_template(&admin, cluster.id, &db, &template, strategy)
                        .await?;
                }
                let mut owner = connect(&config_for(
                    &cluster,
                    &self.inner.access.owner,
                    &db,
                    &self.inner.access.tls,
                ))
                .await?;
                let version = storage::finalize_clone(&owner, &self.inner.key).await?;
                if version.unwrap_or(0) < app.latest() {
                    // Not a clone of the current template (a database left by an earlier
                    // attempt or version): bring it up the long way, idempotently.
                    drop(owner);
                    let admin = connect(&config_for(
                        &cluster,
                        &self.inner.access.admin,
                        &db,
                        &self.inner.access.tls,
                    ))
                    .await?;
                    tenancy_sdk::bootstrap::bootstrap_database(&admin, &db).await?;
                    drop(admin);
                    owner = connect(&config_for(
                        &cluster,
                        &self.inner.access.owner,
                        &db,
                        &self.inner.access.tls,
                    ))
                    .await?;
                    tenancy_sdk::bootstrap::install_runtime(&owner, &self.inner.key).await?;
                    storage::migrate_schema(&mut owner, "public", false, app).await?;
                }
                Ok(())
            }
        }
    }

    /// The app's migrations at the fleet's version: those this process knows, followed by
    /// the newer ones the catalog's ledger recorded (`tenancy migrate` run since this
    /// process started), remembered for the next call. One indexed catalog query that
    /// finds nothing newer in the usual case.
    pub async fn fleet_app<C: tokio_postgres::GenericClient>(
        &self,
        client: &C,
    ) -> Result<Arc<AppMigrations>, Error> {
        let known = self
            .inner
            .app
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| Arc::new(self.inner.cfg.app_migrations.clone()));
        let newer = catalog::app_migration_sources_after(client, known.latest()).await?;
        if newer.is_empty() {
            return Ok(known);
        }
        let app = Arc::new(known.with_fleet(&newer)?);
        tracing::info!(
            from = known.latest(),
            to = app.latest(),
            "new app migrations recorded by tenancy migrate: new tenants start at the fleet's version"
        );
        if let Ok(mut a) = self.inner.app.write() {
            if a.latest() < app.latest() {
                *a = app.clone();
            }
        }
        Ok(app)
    }

    /// Creates database `name` as a copy of `template` with the database-level grants a
    /// copy does not carry. A template dropped behind our back is forgotten, so the retry
    /// rebuilds it.
    pub(super) async fn clone_template(
        &self,
        admin: &tokio_postgres::Client,
        cluster: Uuid,
        name: &str,
        template: &str,
        strategy: Option<&'static str>,
    ) -> Result<(), Error> {
        if let Err(e) = storage::create_database_from(admin, name, template, strategy).await {
            if storage::is_missing_database(&e) {
                if let Ok(mut m) = self.inner.templates.lock() {
                    m.remove(&cluster);
                }
            }
            return Err(e);
        }
        storage::grant_database(admin, name).await
    }

    /// The cluster's template database for dedicated tenants, built when missing (once
    /// per app version and runtime, by one process at a time: a session advisory lock on
    /// a connection of its own, released with it even if this process dies). The build
    /// happens under another name and is renamed when complete, so a crash mid-build
    /// leaves nothing that looks like a template.
    pub(super) async fn ensure_template(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<(String, Option<&'static str>), Error> {
        let template = storage::template_name_for(app);
        if let Some(t) = self
            .inner
            .templates
            .lock()
            .ok()
            .and_then(|m| m.get(&cluster.id).cloned())
            .filter(|t| t.0 == template)
        {
            return Ok(t);
        }
        let access = &self.inner.access;
        let admin = self
            .inner
            .pools
            .get(cluster, &access.admin, "postgres", &access.tls)
            .await?;
        let version: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(Error::db("reading the server version"))?
            .get(0);
        let strategy = storage::clone_strategy(version);
        if !storage::database_exists(&admin, &template).await? {
            let lock =
                connect(&config_for(cluster, &access.admin, "postgres", &access.tls)).await?;
            lock.execute("SELECT pg_advisory_lock(hashtext($1))", &[&template])
                .await
                .map_err(Error::db("locking the template build"))?;
            if !storage::database_exists(&admin, &template).await? {
                let build = storage::template_build_name(&template);
                storage::drop_database(&admin, &build).await?;
                storage::create_database(&admin, &build).await?;
                {
                    let su =
                        connect(&config_for(cluster, &access.admin, &build, &access.tls)).await?;
                    tenancy_sdk::bootstrap::bootstrap_database(&su, &build).await?;
                }
                {
                    let mut owner =
                        connect(&config_for(cluster, &access.owner, &build, &access.tls)).await?;
                    tenancy_sdk::bootstrap::install_runtime(&owner, &self.inner.key).await?;
                    storage::migrate_schema(&mut owner, "public", false, app).await?;
                    storage::strip_template_secrets(&owner).await?;
                }
                storage::seal_template(&admin, &build, &template).await?;
                tracing::info!(cluster = %cluster.name, template, "built the template database for dedicated tenants");
            }
            drop(lock);
        }
        let out = (template, strategy);
        if let Ok(mut m) = self.inner.templates.lock() {
            m.insert(cluster.id, out.clone());
        }
        Ok(out)
    }

    /// Refills the warm pool of every cluster (see [`crate::WarmPool`]): drops spares of an
    /// older app version or template (and spare databases a crash left unfinished), then
    /// creates spares until each cluster has the configured number. One refiller per
    /// cluster at a time (a session advisory lock in its maintenance database; a cluster
    /// another process is refilling is skipped). Returns the number of spares created.
    pub async fn refill_warm_pool(&self) -> Result<usize, Error> {
        let wp = self.inner.cfg.warm_pool;
        if !wp.enabled() {
            return Ok(0);
        }
        let (clusters, app) = {
            let conn = self.catalog_conn().await?;
            (
                catalog::list_clusters(&conn).await?,
                self.fleet_app(&*conn).await?,
            )
        };
        let mut made = 0;
        let mut first_error = None;
        for cluster in clusters {
            if let Ok(mut m) = self.inner.clusters.write() {
                m.entry(cluster.id).or_insert_with(|| cluster.clone());
            }
            // One cluster failing (unreachable, not bootstrapped) does not starve the others.
            match self.refill_cluster(&cluster, &app).await {
                Ok(n) => made += n,
                Err(e) => {
                    tracing::warn!(cluster = %cluster.name, error = %tenancy_conn::ErrorText(&e), "warm pool refill failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(made),
        }
    }

    pub(super) async fn refill_cluster(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<usize, Error> {
        let wp = self.inner.cfg.warm_pool;
        let access = &self.inner.access;
        let lock = connect(&config_for(cluster, &access.admin, "postgres", &access.tls)).await?;
        let locked: bool = lock
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('tenancy-warm-pool-refill:' || $1))",
                &[&cluster.dbname],
            )
            .await
            .map_err(Error::db("locking the warm pool refill"))?
            .get(0);
        if !locked {
            return Ok(0);
        }
        let mut made = 0;
        let latest = app.latest();
        if wp.schemas > 0 && latest > 0 {
            let mut owner = self
                .inner
                .pools
                .get(cluster, &access.owner, &cluster.dbname, &access.tls)
                .await?;
            let mut ready = 0;
            for (name, version) in storage::spare_schemas(&owner).await? {
                if version == latest {
                    ready += 1;
                } else if version < latest {
                    storage::drop_spare_schema(&mut owner, &name).await?;
                }
            }
            while ready < wp.schemas {
                storage::create_spare_schema(&mut owner, app).await?;
                ready += 1;
                made += 1;
            }
        }
        // Spare databases are cluster-wide: one refiller per cluster for them, even when
        // several catalogs (shared databases) share the cluster.
        let databases_locked = wp.databases > 0
            && lock
                .query_one(
                    "SELECT pg_try_advisory_lock(hashtext('tenancy-warm-pool-refill-databases'))",
                    &[],
                )
                .await
                .map_err(Error::db("locking the warm pool refill"))?
                .get::<_, bool>(0);
        if databases_locked {
            let (template, strategy) = self.ensure_template(cluster, app).await?;
            let tag = storage::spare_database_tag(&template, &self.inner.key);
            let ours = storage::spare_database_key_part(&tag);
            let admin = self
                .inner
                .pools
                .get(cluster, &access.admin, "postgres", &access.tls)
                .await?;
            let mut ready = 0;
            for (name, of) in storage::spare_databases(&admin).await? {
                match of {
                    Some(of) if of == tag => ready += 1,
                    // Another key's (another control plane's): not ours to drop.
                    Some(of) if storage::spare_database_key_part(&of) != ours => {}
                    // Another template (app version, runtime), or unfinished: nobody
                    // else refills this cluster's databases now, so nobody finishes it.
                    _ => storage::drop_spare_database(&admin, &name).await?,
                }
            }
            while ready < wp.databases {
                let name = storage::spare_database_name();
                self.clone_template(&admin, cluster.id, &name, &template, strategy)
                    .await?;
                let version = {
                    // A connection of its own, closed before the spare is marked: a spare
                    // must have no sessions when it is claimed (renamed).
                    let owner =
                        connect(&config_for(cluster, &access.owner, &name, &access.tls)).await?;
                    storage::finalize_clone(&owner, &self.inner.key).await?
                };
                if version.unwrap_or(0) < latest {
                    storage::drop_database(&admin, &name).await?;
                    return Err(Error::NotPossible(format!(
                        "template {template} is not at the app's latest version"
                    )));
                }
                storage::mark_spare_database(&admin, &name, &tag).await?;
                ready += 1;
                made += 1;
            }
        }
        drop(lock);
        if made > 0 {
            tracing::debug!(cluster = %cluster.name, made, "refilled the warm pool");
        }
        Ok(made)
    }

    /// Brings the cluster's shared database to the app's latest version (once per process
    /// and version).
    pub(super) async fn ensure_shared(
        &self,
        cluster: &ClusterRecord,
        app: &AppMigrations,
    ) -> Result<(), Error> {
        if self
            .inner
            .shared_ready
            .lock()
            .map(|s| s.get(&cluster.id).is_some_and(|v| *v >= app.latest()))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut owner = self.login(cluster, Role::Owner, &cluster.dbname).await?;
        storage::migrate_schema(&mut owner, "public", false, app).await?;
        if let Ok(mut s) = self.inner.shared_ready.lock() {
            s.insert(cluster.id, app.latest());
        }
        Ok(())
    }

    /// Removes the tenant's storage: its schema or database; for pooled tenants (only when
    /// purging) its rows. Idempotent.
    pub(super) async fn drop_storage(
        &self,
        tenant: &Tenant,
        purge_rows: bool,
    ) -> Result<(), Error> {
        let cluster = self.cluster(tenant.cluster_id).await?;
        match tenant.placement {
            Placement::Pooled => {
                if purge_rows {
                    let pool = self.runtime_pool(&cluster)?;
                    storage::purge_pooled_rows(&pool, tenant.id).await?;
                }
            }
            Placement::Schema => {
                let schema = tenant
                    .schema_name
                    .clone()
                    .unwrap_or_else(|| schema_name_for(tenant.id));
                let owner = self.login(&cluster, Role::Owner, &cluster.dbname).await?;
                storage::drop_schema(&owner, &schema).await?;
            }
            Placement::Dedicated => {
                let db = tenant
                    .database_name
                    .clone()
                    .unwrap_or_else(|| database_name_for(tenant.id));
                let admin = self.login(&cluster, Role::Admin, "postgres").await?;
                storage::drop_database(&admin, &db).await?;
            }
        }
        Ok(())
    }

    pub(super) fn runtime_pool(&self, cluster: &ClusterRecord) -> Result<TenantPool, Error> {
        let mut m = self
            .inner
            .runtime_pools
            .lock()
            .map_err(|_| Error::Config("runtime pool map poisoned".into()))?;
        if let Some(p) = m.get(&cluster.id) {
            return Ok(p.clone());
        }
        let pool = TenantPool::new(
            config_for(
                cluster,
                &self.inner.access.runtime,
                &cluster.dbname,
                &self.inner.access.tls,
            ),
            self.inner.key.clone(),
            PoolOptions {
                max_size: 2,
                ..Default::default()
            },
        )?;
        m.insert(cluster.id, pool.clone());
        Ok(pool)
    }

    /// A pooled connection to database `db` of `cluster` as the cluster admin or the owner
    /// role, secured as every cluster connection is.
    async fn login(
        &self,
        cluster: &ClusterRecord,
        role: Role,
        db: &str,
    ) -> Result<crate::conn::Object, Error> {
        let login = match role {
            Role::Admin => &self.inner.access.admin,
            Role::Owner => &self.inner.access.owner,
        };
        self.inner
            .pools
            .get(cluster, login, db, &self.inner.access.tls)
            .await
    }
}

/// Which of provisioning's logins a connection to a tenant cluster uses.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// The cluster admin (creates and drops databases).
    Admin,
    /// The owner role (schemas, migrations).
    Owner,
}
