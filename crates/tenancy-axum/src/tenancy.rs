//! [`Tenancy`]: the configured resolvers, the catalog caches and the router; the rules
//! that turn what a request says into one active [`Tenant`] or a problem.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::HeaderName;
use tenancy_core::{Slug, TenantId, TenantState};
use tenancy_sdk::{Router, TenantTx};

use crate::api_key::{ApiKey, API_KEY_PREFIX};
use crate::catalog::Catalog;
use crate::jwt::{JwtConfig, JwtVerifier, TenantClaim};
use crate::tenant::Via;
use crate::{ConfigError, HttpError, SourceKind, TenancyLayer, Tenant};

/// One way of finding the tenant of a request. Sources are tried in the configured
/// order; every source that finds something must agree.
#[derive(Debug)]
#[non_exhaustive]
pub enum Source {
    /// `Authorization: Bearer <JWT>`, verified (see [`crate::jwt`]).
    Jwt(JwtConfig),
    /// `<slug>.<base domain>` in the `Host` header.
    Subdomain {
        /// The base domain, e.g. `app.example.com`.
        base_domain: String,
    },
    /// A verified custom domain in the `Host` header (catalog lookup, cached).
    CustomDomain,
    /// `X-Api-Key: tnk_…` or `Authorization: Bearer tnk_…`.
    ApiKey,
    /// A header set by a trusted internal gateway, holding a tenant id or slug. Only for
    /// services that are not reachable except through that gateway.
    TrustedHeader {
        /// Header name, e.g. `x-tenant-id`.
        header: HeaderName,
    },
    /// `/<prefix>/<tenant id or slug>/…`; the prefix and tenant are stripped from the
    /// path before routing.
    PathPrefix {
        /// The prefix, e.g. `/t`.
        prefix: String,
    },
}

impl Source {
    /// The JWT source.
    pub fn jwt(config: JwtConfig) -> Self {
        Source::Jwt(config)
    }
    /// The subdomain source.
    pub fn subdomain(base_domain: impl Into<String>) -> Self {
        Source::Subdomain {
            base_domain: base_domain.into(),
        }
    }
    /// The verified-custom-domain source.
    pub fn custom_domain() -> Self {
        Source::CustomDomain
    }
    /// The API key source.
    pub fn api_key() -> Self {
        Source::ApiKey
    }
    /// The trusted-header source: enable it only behind a gateway that sets (and strips
    /// client-sent copies of) the header.
    pub fn trusted_header(header: &str) -> Result<Self, ConfigError> {
        let header = HeaderName::try_from(header)
            .map_err(|e| ConfigError::Invalid(format!("header name {header:?}: {e}")))?;
        Ok(Source::TrustedHeader { header })
    }
    /// The path-prefix source.
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        Source::PathPrefix {
            prefix: prefix.into(),
        }
    }
}

/// A source ready to use.
#[derive(Debug)]
enum Resolver {
    Jwt(Box<JwtVerifier>),
    Subdomain { suffix: String, base: String },
    CustomDomain,
    ApiKey,
    TrustedHeader(HeaderName),
    PathPrefix(String),
}

/// The outcome of resolution.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The tenant.
    pub(crate) tenant: Tenant,
    /// Bytes of the path to strip (path-prefix source).
    pub(crate) strip: Option<usize>,
}

#[derive(Debug)]
struct Inner {
    /// Sources in order.
    resolvers: Vec<Resolver>,
    /// Some source reads the Host header (subdomain, custom domain).
    host_sources: bool,
    /// Cached catalog lookups.
    catalog: Arc<Catalog>,
    /// Opens tenant transactions.
    router: Router,
    /// GET, HEAD and OPTIONS requests get read-only transactions.
    read_only_safe_methods: bool,
}

/// The tenancy request layer's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tenancy {
    inner: Arc<Inner>,
}

/// Builds a [`Tenancy`].
#[derive(Debug)]
pub struct TenancyBuilder {
    router: Router,
    catalog: tokio_postgres::Config,
    sources: Vec<Source>,
    cache_ttl: Duration,
    listen: bool,
    read_only_safe_methods: bool,
}

impl TenancyBuilder {
    /// Whether requests with a safe method (GET, HEAD, OPTIONS) get a read-only
    /// transaction (default: yes). A read-only transaction refuses writes, and its commit
    /// is queued instead of awaited, which saves a round trip per request. Turn it off if
    /// GET handlers must write (an access log row, a counter).
    pub fn read_only_safe_methods(mut self, on: bool) -> Self {
        self.read_only_safe_methods = on;
        self
    }

    /// Adds a source (order matters only for which error is reported first).
    pub fn source(mut self, s: Source) -> Self {
        self.sources.push(s);
        self
    }

    /// How long catalog answers are cached without a change notification (default 30 s).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Whether to `LISTEN` for catalog changes (default on).
    pub fn listen_for_changes(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// Builds it; with change listening on, must run inside a Tokio runtime.
    pub fn build(self) -> Result<Tenancy, ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::Invalid(
                "configure at least one tenant source".into(),
            ));
        }
        let mut resolvers = Vec::new();
        for s in self.sources {
            resolvers.push(match s {
                Source::Jwt(c) => Resolver::Jwt(Box::new(JwtVerifier::new(c)?)),
                Source::Subdomain { base_domain } => {
                    let base = base_domain.trim_matches('.').to_ascii_lowercase();
                    if base.is_empty() {
                        return Err(ConfigError::Invalid(
                            "subdomain source: empty base domain".into(),
                        ));
                    }
                    Resolver::Subdomain {
                        suffix: format!(".{base}"),
                        base,
                    }
                }
                Source::CustomDomain => Resolver::CustomDomain,
                Source::ApiKey => Resolver::ApiKey,
                Source::TrustedHeader { header } => Resolver::TrustedHeader(header),
                Source::PathPrefix { prefix } => {
                    let p = format!("/{}", prefix.trim_matches('/'));
                    if p == "/" {
                        return Err(ConfigError::Invalid(
                            "path-prefix source: empty prefix".into(),
                        ));
                    }
                    Resolver::PathPrefix(p)
                }
            });
        }
        let catalog = Catalog::new(self.catalog.clone(), self.router.clone(), self.cache_ttl)?;
        if self.listen {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(ConfigError::Invalid(
                    "Tenancy::build with change listening must run inside a Tokio runtime".into(),
                ));
            }
            catalog.start_listener(self.catalog);
        }
        let host_sources = resolvers
            .iter()
            .any(|r| matches!(r, Resolver::Subdomain { .. } | Resolver::CustomDomain));
        Ok(Tenancy {
            inner: Arc::new(Inner {
                resolvers,
                host_sources,
                catalog,
                router: self.router,
                read_only_safe_methods: self.read_only_safe_methods,
            }),
        })
    }
}

fn host_of(parts: &Parts) -> Option<Cow<'_, str>> {
    let raw = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())?;
    // Strip a port; IPv6 literals ([::1]:80) are never tenant hosts.
    if raw.starts_with('[') {
        return None;
    }
    let host = raw.rsplit_once(':').map_or(raw, |(h, _)| h);
    let host = host.trim_end_matches('.');
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    })
}

fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Tenancy {
    /// Starts building: `router` opens tenant transactions; `catalog` connects (as the
    /// runtime role) to the catalog database for tenant, domain and API key lookups.
    pub fn builder(router: Router, catalog: tokio_postgres::Config) -> TenancyBuilder {
        TenancyBuilder {
            router,
            catalog,
            sources: Vec::new(),
            cache_ttl: Duration::from_secs(30),
            listen: true,
            read_only_safe_methods: true,
        }
    }

    /// The tower layer.
    pub fn layer(&self) -> TenancyLayer {
        TenancyLayer::new(self.clone())
    }

    /// The SDK router.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Opens a transaction for `tenant` (for tasks and jobs; handlers use [`crate::Tx`]).
    pub async fn begin(&self, tenant: &Tenant) -> Result<TenantTx, HttpError> {
        Ok(self.inner.router.begin(tenant.id()).await?)
    }

    /// Opens a read-only transaction for `tenant`.
    pub async fn begin_read_only(&self, tenant: &Tenant) -> Result<TenantTx, HttpError> {
        Ok(self.inner.router.begin_read_only(tenant.id()).await?)
    }

    /// Whether a request with `method` gets a read-only transaction.
    pub(crate) fn read_only_for(&self, method: &http::Method) -> bool {
        self.inner.read_only_safe_methods
            && matches!(
                *method,
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            )
    }

    /// A [`Tenant`] for `id`, checked like a request's (exists, active), for work the
    /// application starts itself.
    pub async fn scope_for(&self, id: TenantId) -> Result<Tenant, HttpError> {
        self.checked(id, Via::one(SourceKind::Application), None, None)
            .await
    }

    pub(crate) async fn checked(
        &self,
        id: TenantId,
        via: Via,
        subject: Option<Arc<str>>,
        scopes: Option<Vec<String>>,
    ) -> Result<Tenant, HttpError> {
        let Some(t) = self.inner.catalog.tenant(id).await? else {
            return Err(HttpError::TenantNotFound);
        };
        match t.state {
            TenantState::Active => Ok(Tenant::new(t, via, subject, scopes)),
            TenantState::Suspended => Err(HttpError::TenantSuspended),
            TenantState::Provisioning => Err(HttpError::TenantProvisioning),
            TenantState::Deleting | TenantState::Deleted => Err(HttpError::TenantDeleted),
        }
    }

    /// Resolves the tenant of a request (see the crate docs for the rules).
    pub(crate) async fn resolve(&self, parts: &Parts) -> Result<Resolved, HttpError> {
        // Every source's answer, mapped to a tenant id (None: names no tenant), is checked
        // against the first one as it comes; nothing is collected.
        let mut agreed = Agreement::default();
        let mut subject = None;
        let mut scopes = None;
        let mut strip = None;
        let host = if self.inner.host_sources {
            host_of(parts)
        } else {
            None
        };
        let bearer = bearer(parts);
        for r in &self.inner.resolvers {
            match r {
                Resolver::Jwt(v) => {
                    let Some(token) = bearer.filter(|t| !t.starts_with(API_KEY_PREFIX)) else {
                        continue;
                    };
                    let t = v.verify(token)?;
                    let Some(value) = &t.tenant else {
                        return Err(HttpError::InvalidCredentials {
                            reason: "token does not name a tenant".into(),
                        });
                    };
                    let id = match &v.claim {
                        TenantClaim::Id(_) => value.parse::<TenantId>().ok(),
                        TenantClaim::Slug(_) => self.slug_id(value).await?,
                    };
                    subject = Some(Arc::clone(&t.caller));
                    agreed.note(SourceKind::Jwt, id);
                }
                Resolver::Subdomain { suffix, base } => {
                    let Some(h) = &host else { continue };
                    if h == base {
                        continue;
                    }
                    if let Some(label) = h.strip_suffix(suffix.as_str()) {
                        if !label.contains('.') {
                            if let Ok(slug) = label.parse::<Slug>() {
                                let id = self.inner.catalog.tenant_id_by_slug(&slug).await?;
                                agreed.note(SourceKind::Subdomain, id);
                            }
                        }
                    }
                }
                Resolver::CustomDomain => {
                    let Some(h) = &host else { continue };
                    let is_base = self.inner.resolvers.iter().any(|r| match r {
                        Resolver::Subdomain { suffix, base } => {
                            h == base || h.ends_with(suffix.as_str())
                        }
                        _ => false,
                    });
                    let is_local = h == "localhost" || h.parse::<std::net::IpAddr>().is_ok();
                    if !is_base && !is_local && h.contains('.') {
                        // An unverified/unknown custom domain is just a host name, not a
                        // claim.
                        if let Some(id) = self.inner.catalog.tenant_for_domain(h).await? {
                            agreed.note(SourceKind::CustomDomain, Some(id));
                        }
                    }
                }
                Resolver::ApiKey => {
                    let text = parts
                        .headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .or(bearer.filter(|t| t.starts_with(API_KEY_PREFIX)));
                    let Some(text) = text else { continue };
                    let invalid = || HttpError::InvalidCredentials {
                        reason: "API key is not valid".into(),
                    };
                    let key = ApiKey::parse(text.trim()).ok_or_else(invalid)?;
                    let grant = self
                        .inner
                        .catalog
                        .api_key(key.key_id(), &key.hash())
                        .await?
                        .ok_or_else(invalid)?;
                    subject = Some(Arc::from(format!("api_key:{}", key.key_id())));
                    scopes = Some(grant.scopes);
                    agreed.note(SourceKind::ApiKey, Some(grant.tenant_id));
                }
                Resolver::TrustedHeader(name) => {
                    let Some(v) = parts.headers.get(name) else {
                        continue;
                    };
                    let id = match v.to_str() {
                        Ok(s) => self.named_id(s.trim()).await?,
                        Err(_) => None,
                    };
                    agreed.note(SourceKind::TrustedHeader, id);
                }
                Resolver::PathPrefix(prefix) => {
                    let path = parts.uri.path();
                    let Some(rest) = path.strip_prefix(prefix.as_str()) else {
                        continue;
                    };
                    let Some(rest) = rest.strip_prefix('/') else {
                        continue;
                    };
                    let seg = rest.split('/').next().unwrap_or_default();
                    if seg.is_empty() {
                        continue;
                    }
                    strip = Some(prefix.len() + 1 + seg.len());
                    let id = self.named_id(seg).await?;
                    agreed.note(SourceKind::PathPrefix, id);
                }
            }
        }
        let Some(first) = agreed.first else {
            return Err(HttpError::Unauthenticated);
        };
        // Disagreement is reported before existence, so a 403 here says nothing about
        // whether the other tenant exists.
        if agreed.mismatch {
            return Err(HttpError::TenantMismatch);
        }
        let Some(id) = first else {
            return Err(HttpError::TenantNotFound);
        };
        let tenant = self.checked(id, agreed.via, subject, scopes).await?;
        Ok(Resolved { tenant, strip })
    }

    /// The tenant a header value or path segment names: an id, or a slug looked up in
    /// the catalog; `None` for text that names no tenant.
    async fn named_id(&self, text: &str) -> Result<Option<TenantId>, HttpError> {
        match text.parse::<TenantId>() {
            Ok(id) => Ok(Some(id)),
            Err(_) => self.slug_id(text).await,
        }
    }

    /// The tenant with the slug `text`; `None` when it is no valid slug or no tenant's.
    async fn slug_id(&self, text: &str) -> Result<Option<TenantId>, HttpError> {
        match text.parse::<Slug>() {
            Ok(slug) => self.inner.catalog.tenant_id_by_slug(&slug).await,
            Err(_) => Ok(None),
        }
    }
}

/// The answers of the sources so far: which named a tenant, the first answer, and whether
/// a later one differed.
#[derive(Default)]
struct Agreement {
    via: Via,
    /// The first answer (`Some(None)`: a source named no existing tenant).
    first: Option<Option<TenantId>>,
    mismatch: bool,
}

impl Agreement {
    fn note(&mut self, kind: SourceKind, id: Option<TenantId>) {
        self.via.push(kind);
        match self.first {
            None => self.first = Some(id),
            Some(f) if f != id => self.mismatch = true,
            Some(_) => {}
        }
    }
}
