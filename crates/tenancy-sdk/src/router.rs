//! The router: tenant → catalog record → cluster pool → `TenantTx`.
//!
//! Placement decides where the transaction opens: pooled tenants in the cluster's shared
//! database, schema tenants there too with their schema first on the `search_path`
//! ([`TenantPool::begin_in_schema`]), dedicated tenants in their own database on the
//! cluster (one pool per database).
//!
//! While a move's cutover holds a tenant (its route says `cutover`), opening a transaction
//! for it waits, bounded by [`RouterOptions::cutover_wait`], and then opens where the
//! catalog points once the cutover ended: the new placement, or the old one when the
//! move was undone. A waiting opening reads the route again as soon as the catalog
//! announces a change of any tenant ([`Router::listen_for_changes`]), and every few
//! milliseconds regardless. A move announces its target before its cutover
//! (`moving:<cluster>:<database>`): the router opens a few connections to it ahead, so
//! the transactions that waited do not each connect once the catalog switched.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tenancy_catalog::{CatalogError, ClusterRoute, TenantRoute};
use tenancy_core::{ContextKey, Placement, RegionId, TenantId};
use uuid::Uuid;

use tenancy_conn::{PgConfig, Tls};

use crate::pool::{build_pool, Pool, PoolOptions, Pooler, TenantPool};
use crate::FastMap;
use crate::{Error, TenantTx};

/// Credentials of the runtime role on tenant clusters (the catalog stores only where a
/// cluster is, never how to log in).
#[derive(Clone)]
pub struct ClusterCredentials {
    /// Role name (normally `tenancy_app`).
    pub user: String,
    /// Password, when the cluster asks for one.
    pub password: Option<String>,
}

impl std::fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCredentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Router settings.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// The regions this process may open tenant data in. `None` allows every region, but a
    /// tenant is still only opened on a cluster of its own region.
    pub allowed_regions: Option<Vec<RegionId>>,
    /// How long a tenant's catalog record is cached.
    pub cache_ttl: Duration,
    /// Settings of each cluster's pool.
    pub pool: PoolOptions,
    /// How connections to tenant clusters are secured (`sslmode`, `sslrootcert`, client
    /// certificate), the same for every cluster: the catalog says where a cluster is,
    /// this says how to trust it (built with [`Tls::new`], which reads the certificate
    /// files). The default is libpq's: `prefer`, unverified.
    pub cluster_tls: Tls,
    /// How long opening a transaction waits for a move's cutover of its tenant to end
    /// (the copy catching up, the two sides verified, the catalog switching), re-reading
    /// the tenant's route every few milliseconds; then [`Error::Cutover`].
    pub cutover_wait: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            allowed_regions: None,
            cache_ttl: Duration::from_secs(5),
            pool: PoolOptions::default(),
            cluster_tls: Tls::default(),
            cutover_wait: Duration::from_secs(5),
        }
    }
}

/// A cluster and, for dedicated tenants, the database on it (`None`: the shared one).
type PoolKey = (Uuid, Option<String>);

/// How often an opening waiting out a cutover reads its tenant's route again when no
/// catalog change wakes it sooner.
const CUTOVER_POLL: Duration = Duration::from_millis(10);

/// Connections opened ahead on the pool of a move's target (at most the pool's size):
/// enough for a few transactions waiting out the cutover to find one ready; more connect
/// as usual.
const PREWARM_CONNECTIONS: usize = 4;

#[derive(Debug)]
struct Inner {
    /// Catalog connections (runtime role: it reads no catalog table, only one tenant's
    /// route and one cluster's address at a time, through the catalog's lookup
    /// functions; no tenant context is involved).
    catalog: Pool,
    /// Context key for every cluster.
    key: ContextKey,
    /// Login for tenant clusters.
    creds: ClusterCredentials,
    /// Region policy, cache TTL, pool settings.
    opts: RouterOptions,
    /// Cached tenant routes with the time they were read (shared, not copied, per
    /// request).
    tenants: RwLock<FastMap<TenantId, (Arc<TenantRoute>, Instant)>>,
    /// One pool per (cluster, database), created on first use: the shared database of
    /// each cluster (`None`) and each dedicated tenant's own database.
    pools: RwLock<FastMap<PoolKey, (Arc<ClusterRoute>, TenantPool)>>,
    /// Woken on every catalog change the router hears of: openings waiting out a
    /// cutover read their route again at once.
    changed: tokio::sync::Notify,
}

/// Opens tenant transactions on the right cluster, from the catalog.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Inner>,
}

impl Router {
    /// Builds a router that looks tenants up in the catalog through `catalog_config`
    /// (runtime role).
    pub fn new(
        catalog_config: impl Into<PgConfig>,
        key: ContextKey,
        creds: ClusterCredentials,
        opts: RouterOptions,
    ) -> Result<Self, Error> {
        let catalog = build_pool(
            catalog_config.into(),
            &PoolOptions {
                max_size: 4,
                ..opts.pool.clone()
            },
        )?;
        Ok(Router {
            inner: Arc::new(Inner {
                catalog,
                key,
                creds,
                opts,
                tenants: RwLock::new(FastMap::default()),
                pools: RwLock::new(FastMap::default()),
                changed: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Its settings.
    pub fn options(&self) -> &RouterOptions {
        &self.inner.opts
    }

    /// A router to the same catalog with the same key and login whose tenant pools use
    /// `pool` (another transaction deadline or statement timeout, say: an export is one
    /// transaction as long as the tenant is large). It shares this router's catalog
    /// connections, not its tenant pools or cached routes.
    pub fn with_pool_options(&self, pool: PoolOptions) -> Router {
        Router {
            inner: Arc::new(Inner {
                catalog: self.inner.catalog.clone(),
                key: self.inner.key.clone(),
                creds: self.inner.creds.clone(),
                opts: RouterOptions {
                    pool,
                    ..self.inner.opts.clone()
                },
                tenants: RwLock::new(FastMap::default()),
                pools: RwLock::new(FastMap::default()),
                changed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Forgets the cached record of `tenant` (call on a catalog change notification), and
    /// wakes the openings waiting out a cutover to read their route again.
    pub fn invalidate(&self, tenant: TenantId) {
        if let Ok(mut m) = self.inner.tenants.write() {
            m.remove(&tenant);
        }
        self.inner.changed.notify_waiters();
    }

    /// Applies one notification of the catalog's change channel: `tenant:<id>` forgets
    /// that tenant's record ([`Router::invalidate`]); `moving:<cluster>:<database>` (a
    /// move's target, announced before its cutover; an empty database names the
    /// cluster's shared one) opens a few connections to it ahead, in the background.
    /// Other payloads are not the router's.
    pub fn on_change(&self, payload: &str) {
        if let Some(id) = payload
            .strip_prefix("tenant:")
            .and_then(|s| s.parse::<TenantId>().ok())
        {
            self.invalidate(id);
        } else if let Some((cluster, database)) = payload
            .strip_prefix("moving:")
            .and_then(|s| s.split_once(':'))
        {
            let Ok(cluster) = cluster.parse::<Uuid>() else {
                return;
            };
            let database = (!database.is_empty()).then(|| database.to_owned());
            let me = self.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Err(e) = me.prewarm(cluster, database.as_deref()).await {
                        tracing::debug!(%cluster, error = %e, "opening connections to a move's target ahead");
                    }
                });
            }
        }
    }

    /// Opens up to [`PREWARM_CONNECTIONS`] connections of the pool of `cluster`'s
    /// `database` (`None`: the shared one) ahead of use, when the cluster is in a region
    /// this router may open.
    async fn prewarm(&self, cluster: Uuid, database: Option<&str>) -> Result<(), Error> {
        let (route, pool) = self.pool_for(cluster, database).await?;
        let allowed = self
            .inner
            .opts
            .allowed_regions
            .as_ref()
            .is_none_or(|rs| rs.contains(&route.region));
        if allowed {
            pool.warm(PREWARM_CONNECTIONS).await?;
        }
        Ok(())
    }

    /// The tenant's route (state and placement), from cache when fresh.
    pub async fn tenant(&self, id: TenantId) -> Result<TenantRoute, Error> {
        Ok(TenantRoute::clone(&*self.tenant_record(id).await?))
    }

    /// The tenant's route, shared with the cache.
    async fn tenant_record(&self, id: TenantId) -> Result<Arc<TenantRoute>, Error> {
        if let Ok(m) = self.inner.tenants.read() {
            if let Some((t, at)) = m.get(&id) {
                if at.elapsed() < self.inner.opts.cache_ttl {
                    return Ok(Arc::clone(t));
                }
            }
        }
        // Boxed: the catalog read is the rare path, and inline it would make every
        // transaction opening's future several kilobytes larger.
        Box::pin(self.load_tenant(id)).await
    }

    /// A connection to the catalog from the router's own pool.
    async fn catalog_conn(&self) -> Result<deadpool::managed::Object<crate::pool::Manager>, Error> {
        self.inner
            .catalog
            .get()
            .await
            .map_err(|e| Error::Pool(e.to_string()))
    }

    async fn load_tenant(&self, id: TenantId) -> Result<Arc<TenantRoute>, Error> {
        let conn = self.catalog_conn().await?;
        let t = tenancy_catalog::tenant_route(&conn.client, id)
            .await?
            .ok_or_else(|| CatalogError::TenantNotFound(id.to_string()))?;
        let t = Arc::new(t);
        drop(conn);
        if let Ok(mut m) = self.inner.tenants.write() {
            m.insert(id, (Arc::clone(&t), Instant::now()));
        }
        Ok(t)
    }

    async fn pool_for(
        &self,
        cluster_id: Uuid,
        database: Option<&str>,
    ) -> Result<(Arc<ClusterRoute>, TenantPool), Error> {
        if let Ok(m) = self.inner.pools.read() {
            // The shared database's key owns no string (the common case).
            if let Some((c, p)) = m.get(&(cluster_id, database.map(str::to_owned))) {
                return Ok((Arc::clone(c), p.clone()));
            }
        }
        Box::pin(self.create_pool(cluster_id, database)).await
    }

    async fn create_pool(
        &self,
        cluster_id: Uuid,
        database: Option<&str>,
    ) -> Result<(Arc<ClusterRoute>, TenantPool), Error> {
        let key = (cluster_id, database.map(str::to_owned));
        let conn = self.catalog_conn().await?;
        let cluster = tenancy_catalog::cluster_route(&conn.client, cluster_id).await?;
        drop(conn);
        // Behind a transaction pooler, its address when the catalog has one; the cluster's
        // own address otherwise (and always in direct mode).
        let (host, port) = match (&self.inner.opts.pool.pooler, &cluster.pooler) {
            (Pooler::Transaction, Some((host, port))) => (host.as_str(), *port),
            _ => (cluster.host.as_str(), cluster.port),
        };
        let mut cfg = tokio_postgres::Config::new();
        if host.starts_with('/') {
            cfg.host_path(host);
        } else {
            cfg.host(host);
        }
        cfg.port(port)
            .dbname(database.unwrap_or(&cluster.dbname))
            .user(&self.inner.creds.user)
            .application_name("tenancy");
        if let Some(p) = &self.inner.creds.password {
            cfg.password(p);
        }
        let cfg = PgConfig::with_tls(cfg, &self.inner.opts.cluster_tls);
        let pool = TenantPool::new(cfg, self.inner.key.clone(), self.inner.opts.pool.clone())?;
        let mut m = self
            .inner
            .pools
            .write()
            .map_err(|_| Error::Pool("router pool map poisoned".into()))?;
        let entry = m.entry(key).or_insert((Arc::new(cluster), pool));
        Ok((Arc::clone(&entry.0), entry.1.clone()))
    }

    /// Keeps the tenant cache fresh: listens on the catalog's change channel
    /// (`tenancy_catalog_changes`, notified by a trigger on every tenant update) and
    /// forgets a tenant's record as soon as it changes, so a suspension or a placement
    /// change is seen in milliseconds rather than after the cache TTL. The listener ends
    /// when the returned handle is aborted or its connection drops (the TTL still applies).
    pub async fn listen_for_changes(
        &self,
        catalog_config: impl Into<PgConfig>,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let mut changes =
            tenancy_conn::listen(&catalog_config.into(), &["tenancy_catalog_changes"])
                .await
                .map_err(|e| Error::Pool(format!("listening for catalog changes: {e}")))?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(payload) = changes.recv().await {
                me.on_change(&payload);
            }
        }))
    }

    /// Waits until no move's cutover holds `tenant` (its route read again, past the
    /// cache, on every catalog change the router hears of and every [`CUTOVER_POLL`]), at
    /// most [`RouterOptions::cutover_wait`]; returns the route then in force (the new
    /// placement when the move switched, the old one when it was undone).
    async fn wait_for_cutover(&self, tenant: TenantId) -> Result<Arc<TenantRoute>, Error> {
        let started = Instant::now();
        loop {
            // Registered before the read: a change announced during it still wakes us.
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let t = self.load_tenant(tenant).await?;
            if !t.cutover {
                return Ok(t);
            }
            if started.elapsed() >= self.inner.opts.cutover_wait {
                return Err(Error::Cutover {
                    tenant: tenant.to_string(),
                    waited: started.elapsed(),
                });
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(CUTOVER_POLL) => {}
            }
        }
    }

    /// Forgets every cached tenant record (after a burst of catalog changes).
    pub fn invalidate_all(&self) {
        if let Ok(mut m) = self.inner.tenants.write() {
            m.clear();
        }
    }

    /// Opens a transaction for `tenant` where its placement puts it: the cluster's shared
    /// database (pooled), its schema there (schema), or its own database (dedicated).
    /// Refuses tenants that are not active, and clusters outside the tenant's region or
    /// outside the allowed regions.
    pub async fn begin(&self, tenant: TenantId) -> Result<TenantTx, Error> {
        self.open(tenant, false).await
    }

    /// Like [`begin`](Router::begin), read-only (see [`TenantPool::begin_read_only`]).
    pub async fn begin_read_only(&self, tenant: TenantId) -> Result<TenantTx, Error> {
        self.open(tenant, true).await
    }

    async fn open(&self, tenant: TenantId, read_only: bool) -> Result<TenantTx, Error> {
        let mut t = self.tenant_record(tenant).await?;
        if t.cutover {
            t = Box::pin(self.wait_for_cutover(tenant)).await?;
        }
        if !t.state.allows_data_access() {
            return Err(Error::NotActive {
                tenant: tenant.to_string(),
                state: t.state.to_string(),
            });
        }
        let database = match t.placement {
            Placement::Dedicated => Some(t.database_name.as_deref().ok_or_else(|| {
                Error::Invalid(format!(
                    "dedicated tenant {tenant} has no database in the catalog"
                ))
            })?),
            Placement::Pooled | Placement::Schema => None,
        };
        let (cluster, pool) = self.pool_for(t.cluster_id, database).await?;
        let allowed = self
            .inner
            .opts
            .allowed_regions
            .as_ref()
            .is_none_or(|rs| rs.contains(&cluster.region));
        if cluster.region != t.region || !allowed {
            return Err(Error::RegionMismatch {
                tenant: tenant.to_string(),
                tenant_region: t.region.to_string(),
                cluster: cluster.name.clone(),
                cluster_region: cluster.region.to_string(),
            });
        }
        match t.placement {
            Placement::Schema => {
                let schema = t.schema_name.as_deref().ok_or_else(|| {
                    Error::Invalid(format!(
                        "schema tenant {tenant} has no schema in the catalog"
                    ))
                })?;
                pool.open(tenant, Some(schema), read_only).await
            }
            Placement::Pooled | Placement::Dedicated => pool.open(tenant, None, read_only).await,
        }
    }
}
