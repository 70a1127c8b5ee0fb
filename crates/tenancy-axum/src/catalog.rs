//! Cached catalog lookups for the request path: tenants by id and slug, verified custom
//! domains (the configuration service's `config_domains`, read-only here: a host resolves
//! only while its row is `verified`), API keys. Every lookup goes through the catalog's
//! lookup functions (the runtime role reads no catalog table) and yields one tenant's
//! route, never a list, a name or a billing link. Entries expire after a TTL and are dropped as soon as the catalog
//! announces a change on [`tenancy_catalog::CHANGES_CHANNEL`] (a dedicated `LISTEN`
//! connection); while that connection is down every cache is cleared on reconnect.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use tenancy_catalog::{ApiKeyGrant, CatalogError, TenantRoute};
use tenancy_core::{Slug, TenantId};
use tenancy_sdk::PgConfig;
use tenancy_sdk::Router;
use tokio::task::AbortHandle;

use crate::pool::{self, PlainPool};
use crate::HttpError;

/// foldhash's fast hasher, seeded at random per map: keys come from requests (slugs, host
/// names, key ids), and SipHash cost about as much as the lookup around it.
type Map<K, V> = RwLock<HashMap<K, (V, Instant), foldhash::fast::RandomState>>;

/// The caches and the catalog connections behind them.
#[derive(Debug)]
pub(crate) struct Catalog {
    /// Plain runtime-role connections to the catalog database.
    pool: PlainPool,
    /// How long an entry is trusted without a change notification.
    ttl: Duration,
    /// Tenant routes by id (shared with the requests that use them, never copied).
    tenants: Map<TenantId, Arc<TenantRoute>>,
    /// Tenant ids by slug (slugs never move to another tenant, but are removed on change).
    slugs: Map<Slug, TenantId>,
    /// Verified domains → tenant; `None` caches "no verified tenant here" (pending,
    /// disabled or unknown), dropped on `domain:<host>` when that changes.
    domains: Map<String, Option<TenantId>>,
    /// API keys by key id: hash of the key and what it grants.
    api_keys: Map<String, ([u8; 32], ApiKeyGrant)>,
    /// The SDK router, whose own tenant cache must forget changed tenants too.
    router: Router,
    /// The listener task, stopped when the catalog is dropped.
    listener: Mutex<Option<AbortHandle>>,
}

impl Drop for Catalog {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock() {
            if let Some(h) = l.take() {
                h.abort();
            }
        }
    }
}

fn catalog_err(e: CatalogError) -> HttpError {
    HttpError::Internal(format!("catalog lookup failed: {e}"))
}

fn get_fresh<K, Q, V>(m: &Map<K, V>, k: &Q, ttl: Duration) -> Option<V>
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
    V: Clone,
{
    let m = m.read().ok()?;
    let (v, at) = m.get(k)?;
    (at.elapsed() < ttl).then(|| v.clone())
}

fn put<K: std::hash::Hash + Eq, V>(m: &Map<K, V>, k: K, v: V) {
    if let Ok(mut m) = m.write() {
        m.insert(k, (v, Instant::now()));
    }
}

impl Catalog {
    pub(crate) fn new(
        config: PgConfig,
        router: Router,
        ttl: Duration,
    ) -> Result<Arc<Self>, crate::ConfigError> {
        Ok(Arc::new(Catalog {
            pool: pool::build(config, 8)?,
            ttl,
            tenants: RwLock::default(),
            slugs: RwLock::default(),
            domains: RwLock::default(),
            api_keys: RwLock::default(),
            router,
            listener: Mutex::new(None),
        }))
    }

    async fn conn(&self) -> Result<tenancy_conn::PlainConn, HttpError> {
        self.pool
            .get()
            .await
            .map_err(|e| HttpError::Unavailable(format!("catalog connection: {e}")))
    }

    /// The tenant with this id, or `None` when the catalog has no such tenant.
    pub(crate) async fn tenant(&self, id: TenantId) -> Result<Option<Arc<TenantRoute>>, HttpError> {
        if let Some(t) = get_fresh(&self.tenants, &id, self.ttl) {
            return Ok(Some(t));
        }
        // Boxed, like every catalog read below: the rare path, which inline would make
        // every request's future kilobytes larger.
        Box::pin(self.load_tenant(id)).await
    }

    async fn load_tenant(&self, id: TenantId) -> Result<Option<Arc<TenantRoute>>, HttpError> {
        let c = self.conn().await?;
        match tenancy_catalog::tenant_route(&c, id).await {
            Ok(Some(t)) => {
                let t = Arc::new(t);
                put(&self.tenants, id, Arc::clone(&t));
                put(&self.slugs, t.slug.clone(), id);
                Ok(Some(t))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(catalog_err(e)),
        }
    }

    /// The id of the tenant with this slug.
    pub(crate) async fn tenant_id_by_slug(
        &self,
        slug: &Slug,
    ) -> Result<Option<TenantId>, HttpError> {
        if let Some(id) = get_fresh(&self.slugs, slug, self.ttl) {
            return Ok(Some(id));
        }
        Box::pin(self.load_tenant_by_slug(slug)).await
    }

    async fn load_tenant_by_slug(&self, slug: &Slug) -> Result<Option<TenantId>, HttpError> {
        let c = self.conn().await?;
        match tenancy_catalog::tenant_route_by_slug(&c, slug).await {
            Ok(Some(t)) => {
                let id = t.id;
                put(&self.slugs, slug.clone(), id);
                put(&self.tenants, id, Arc::new(t));
                Ok(Some(id))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(catalog_err(e)),
        }
    }

    /// The tenant of a verified custom domain.
    pub(crate) async fn tenant_for_domain(
        &self,
        host: &str,
    ) -> Result<Option<TenantId>, HttpError> {
        if let Some(v) = get_fresh(&self.domains, host, self.ttl) {
            return Ok(v);
        }
        Box::pin(self.load_domain(host)).await
    }

    async fn load_domain(&self, host: &str) -> Result<Option<TenantId>, HttpError> {
        let c = self.conn().await?;
        let v = tenancy_catalog::tenant_for_domain(&c, host)
            .await
            .map_err(catalog_err)?;
        put(&self.domains, host.to_owned(), v);
        Ok(v)
    }

    /// Authenticates an API key (cached by key id and hash; revocation is announced).
    pub(crate) async fn api_key(
        &self,
        key_id: &str,
        hash: &[u8; 32],
    ) -> Result<Option<ApiKeyGrant>, HttpError> {
        if let Some((h, grant)) = get_fresh(&self.api_keys, key_id, self.ttl) {
            if bool::from(subtle::ConstantTimeEq::ct_eq(h.as_slice(), hash.as_slice())) {
                return Ok(Some(grant));
            }
        }
        Box::pin(self.load_api_key(key_id, hash)).await
    }

    async fn load_api_key(
        &self,
        key_id: &str,
        hash: &[u8; 32],
    ) -> Result<Option<ApiKeyGrant>, HttpError> {
        let c = self.conn().await?;
        let grant = tenancy_catalog::authenticate_api_key(&c, key_id, hash)
            .await
            .map_err(catalog_err)?;
        if let Some(g) = &grant {
            put(&self.api_keys, key_id.to_owned(), (*hash, g.clone()));
        }
        Ok(grant)
    }

    /// Applies one change notification.
    fn apply(&self, payload: &str) {
        tracing::debug!(payload, "catalog change");
        if let Some(id) = payload.strip_prefix("tenant:") {
            if let Ok(id) = id.parse::<TenantId>() {
                if let Ok(mut m) = self.tenants.write() {
                    m.remove(&id);
                }
                if let Ok(mut m) = self.slugs.write() {
                    m.retain(|_, (v, _)| *v != id);
                }
                self.router.invalidate(id);
            }
        } else if let Some(d) = payload.strip_prefix("domain:") {
            if let Ok(mut m) = self.domains.write() {
                m.remove(d);
            }
        } else if let Some(k) = payload.strip_prefix("api_key:") {
            self.forget_api_key(k);
        } else if payload.starts_with("moving:") {
            self.router.on_change(payload);
        }
    }

    /// Drops the cached grant of API key `key_id`.
    pub(crate) fn forget_api_key(&self, key_id: &str) {
        if let Ok(mut m) = self.api_keys.write() {
            m.remove(key_id);
        }
    }

    /// Forgets everything (after the change feed was interrupted).
    fn clear(&self) {
        let ids: Vec<TenantId> = self
            .tenants
            .read()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.router.invalidate(id);
        }
        if let Ok(mut m) = self.tenants.write() {
            m.clear();
        }
        if let Ok(mut m) = self.slugs.write() {
            m.clear();
        }
        if let Ok(mut m) = self.domains.write() {
            m.clear();
        }
        if let Ok(mut m) = self.api_keys.write() {
            m.clear();
        }
    }

    /// Starts the change listener (needs a Tokio runtime).
    pub(crate) fn start_listener(self: &Arc<Self>, config: PgConfig) {
        let weak = Arc::downgrade(self);
        let handle = tokio::spawn(listen(weak, config)).abort_handle();
        if let Ok(mut l) = self.listener.lock() {
            *l = Some(handle);
        }
    }
}

async fn listen(weak: Weak<Catalog>, config: PgConfig) {
    loop {
        match tenancy_conn::listen(&config, &[tenancy_catalog::CHANGES_CHANNEL]).await {
            Ok(mut changes) => {
                // Changes may have been missed while we were not listening.
                match weak.upgrade() {
                    Some(c) => c.clear(),
                    None => return,
                }
                while let Some(payload) = changes.recv().await {
                    match weak.upgrade() {
                        Some(c) => c.apply(&payload),
                        None => return,
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "catalog change feed: cannot listen; retrying"),
        }
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
