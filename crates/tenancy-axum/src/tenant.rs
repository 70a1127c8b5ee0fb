//! The resolved tenant of a request, job or task, and what is scoped by it: the current
//! tenant of a task, spawned tasks, cache keys.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tenancy_catalog::TenantRoute as CatalogTenant;
use tenancy_core::{Slug, TenantId};
use tracing::Instrument;

use crate::jwt::VerifiedToken;
use crate::HttpError;

/// Where the tenant of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// A verified JWT claim.
    Jwt,
    /// A subdomain of the configured base domain.
    Subdomain,
    /// A verified custom domain.
    CustomDomain,
    /// A tenant API key.
    ApiKey,
    /// A header set by a trusted gateway.
    TrustedHeader,
    /// A path prefix (`/t/<tenant>/…`).
    PathPrefix,
    /// The application's own credential ([`crate::SessionSource`]).
    Session,
    /// A signed job envelope.
    Job,
    /// Opened by the application itself ([`crate::Tenancy::scope_for`]).
    Application,
}

impl SourceKind {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Jwt => "jwt",
            SourceKind::Subdomain => "subdomain",
            SourceKind::CustomDomain => "custom_domain",
            SourceKind::ApiKey => "api_key",
            SourceKind::TrustedHeader => "trusted_header",
            SourceKind::PathPrefix => "path_prefix",
            SourceKind::Session => "session",
            SourceKind::Job => "job",
            SourceKind::Application => "application",
        }
    }
}

/// The set of sources that named a tenant, in the order the resolvers are configured
/// (each kind once). Inline: building a [`Tenant`] per request allocates only its shared
/// body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Via {
    kinds: [SourceKind; Via::KINDS],
    len: u8,
}

impl Default for Via {
    fn default() -> Self {
        Via {
            kinds: [SourceKind::Application; Via::KINDS],
            len: 0,
        }
    }
}

impl Via {
    /// How many kinds there are.
    const KINDS: usize = 9;

    /// Only `kind`.
    pub(crate) fn one(kind: SourceKind) -> Self {
        let mut v = Via::default();
        v.push(kind);
        v
    }

    /// Adds `kind` unless it is there already (there are `KINDS` kinds, so it always
    /// fits).
    pub(crate) fn push(&mut self, kind: SourceKind) {
        let n = usize::from(self.len);
        if !self.kinds[..n].contains(&kind) && n < self.kinds.len() {
            self.kinds[n] = kind;
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[SourceKind] {
        &self.kinds[..usize::from(self.len)]
    }
}

/// The tenant a request (or job, or task) acts for, as resolved and checked by the layer:
/// it exists and is active. Only this crate builds it, so holding one means resolution
/// happened. Extract it in a handler with `tenant: Tenant`. Cloning it is cheap (one
/// shared body).
#[derive(Clone)]
pub struct Tenant {
    inner: Arc<Inner>,
}

struct Inner {
    /// The catalog record it was checked against (shared with the catalog cache).
    record: Arc<CatalogTenant>,
    /// The sources that named it (all agreed).
    via: Via,
    /// Who is calling, when a credential said so (`sub`, or `api_key:<id>`).
    subject: Option<Arc<str>>,
    /// What the credential allows; `None` is nothing (shared with the credential's cache
    /// entry where there is one).
    scopes: Option<Arc<[String]>>,
    /// The verified JWT, when one named the tenant (shared with the token cache), for
    /// claim mappings such as roles per issuer.
    token: Option<Arc<VerifiedToken>>,
}

impl PartialEq for Tenant {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&*self.inner, &*other.inner);
        a.record.id == b.record.id
            && a.record.slug == b.record.slug
            && a.via == b.via
            && a.subject == b.subject
            && a.scopes == b.scopes
    }
}

impl Eq for Tenant {}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id())
            .field("slug", self.slug())
            .field("via", &self.via())
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub(crate) fn new(
        record: Arc<CatalogTenant>,
        via: Via,
        subject: Option<Arc<str>>,
        scopes: Option<Arc<[String]>>,
        token: Option<Arc<VerifiedToken>>,
    ) -> Self {
        Tenant {
            inner: Arc::new(Inner {
                record,
                via,
                subject,
                scopes,
                token,
            }),
        }
    }

    /// The tenant id.
    pub fn id(&self) -> TenantId {
        self.inner.record.id
    }

    /// The tenant slug.
    pub fn slug(&self) -> &Slug {
        &self.inner.record.slug
    }

    /// The sources that named the tenant.
    pub fn via(&self) -> &[SourceKind] {
        self.inner.via.as_slice()
    }

    /// The caller, when known.
    pub fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The scopes the credential grants (JWT `scope`/`scp`, the API key's scopes, a
    /// session's); empty when it grants none.
    pub fn scopes(&self) -> &[String] {
        self.inner.scopes.as_deref().unwrap_or_default()
    }

    /// The issuer (`iss`) of the verified JWT that authenticated the caller, if one did.
    pub fn jwt_issuer(&self) -> Option<&str> {
        self.inner.token.as_deref().map(|t| t.issuer.as_str())
    }

    /// A claim of the verified JWT that authenticated the caller (`None` without a JWT
    /// or without that claim). Read it together with [`Tenant::jwt_issuer`]: a claim
    /// means what its issuer says it means.
    pub fn jwt_claim(&self, name: &str) -> Option<&serde_json::Value> {
        self.inner.token.as_deref().and_then(|t| t.claims.get(name))
    }

    /// Refuses (403 `insufficient-scope`) unless the credential grants `scope` (itself,
    /// `*`, or a `prefix:*` wildcard of it). A credential without scopes grants none: a
    /// scope-protected operation is never allowed by omission.
    pub fn require_scope(&self, scope: &str) -> Result<(), HttpError> {
        if grants(self.scopes(), scope) {
            Ok(())
        } else {
            Err(HttpError::InsufficientScope {
                scope: scope.to_owned(),
            })
        }
    }

    /// The tenant of the current task, if it runs inside a request, job or
    /// [`spawn_with_tenant`] task.
    pub fn current() -> Option<Tenant> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with this tenant as the task's current tenant.
    pub(crate) fn scope<F: Future>(self, fut: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, fut)
    }
}

/// Whether `granted` allows `scope`: listed, `*`, or a `prefix:*` wildcard of it.
pub(crate) fn grants(granted: &[String], scope: &str) -> bool {
    granted.iter().any(|s| {
        s == scope
            || s == "*"
            || s.strip_suffix('*')
                .is_some_and(|p| p.ends_with(':') && scope.starts_with(p))
    })
}

tokio::task_local! {
    static CURRENT: Tenant;
}

/// Spawns an in-process task that runs as `tenant`: inside a `task` span with
/// `tenant_id`, with [`Tenant::current`] set. Open its data with
/// [`crate::Tenancy::begin`].
pub fn spawn_with_tenant<F>(tenant: &Tenant, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let span = tracing::info_span!("task", tenant_id = %tenant.id(), tenant = %tenant.slug());
    tokio::spawn(tenant.clone().scope(fut).instrument(span))
}

/// A cache key that belongs to one tenant. It can only be built from a [`Tenant`], so a
/// cached value can never be looked up without naming whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantKey<K> {
    /// Owner of the entry.
    tenant: TenantId,
    /// The application's key within the tenant.
    key: K,
}

impl<K> TenantKey<K> {
    /// A key of `tenant`.
    pub fn new(tenant: &Tenant, key: K) -> Self {
        TenantKey {
            tenant: tenant.id(),
            key,
        }
    }

    /// The tenant the key belongs to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The application's key.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: fmt::Display> fmt::Display for TenantKey<K> {
    /// `t:<tenant id>:<key>`, for external caches (Redis, memcached).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t:{}:{}", self.tenant, self.key)
    }
}

/// A small in-process cache whose entries are keyed by [`TenantKey`].
#[derive(Debug)]
pub struct TenantCache<K, V> {
    /// Entries with their insertion time.
    entries: RwLock<HashMap<TenantKey<K>, (V, Instant)>>,
    /// Entry lifetime.
    ttl: Duration,
}

impl<K: Hash + Eq + Clone, V: Clone> TenantCache<K, V> {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        TenantCache {
            entries: RwLock::new(HashMap::new()),
            ttl,
        }
    }

    /// The value of `key` for `tenant`, if fresh.
    pub fn get(&self, tenant: &Tenant, key: &K) -> Option<V> {
        let k = TenantKey::new(tenant, key.clone());
        let m = self.entries.read().ok()?;
        let (v, at) = m.get(&k)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Stores `value` under `key` for `tenant`.
    pub fn insert(&self, tenant: &Tenant, key: K, value: V) {
        if let Ok(mut m) = self.entries.write() {
            m.insert(TenantKey::new(tenant, key), (value, Instant::now()));
        }
    }

    /// Drops one entry.
    pub fn remove(&self, tenant: &Tenant, key: &K) {
        if let Ok(mut m) = self.entries.write() {
            m.remove(&TenantKey::new(tenant, key.clone()));
        }
    }

    /// Drops every entry of `tenant`.
    pub fn clear_tenant(&self, tenant: TenantId) {
        if let Ok(mut m) = self.entries.write() {
            m.retain(|k, _| k.tenant != tenant);
        }
    }
}
