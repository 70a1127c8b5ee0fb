//! [`Tenancy`]: the configured resolvers, the catalog caches and the router; the rules
//! that turn what a request says into one active [`Tenant`] or a problem.
//!
//! Sources are of two kinds. *Credentials* (JWT, API key, the trusted gateway header, an
//! application's [`SessionSource`]) authenticate the caller for a tenant. *Selectors*
//! (subdomain, verified custom domain, path prefix) only say which tenant the caller
//! means: anyone can type a host name or a path, so a selector never authenticates. A
//! request reaches a tenant only when a credential named it and every selector agrees.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::HeaderName;
use tenancy_core::{Slug, TenantId, TenantState};
use tenancy_sdk::{PgConfig, Router, TenantTx};

use tenancy_insights::anomaly::AccessKind;

use crate::access::{AccessSink, Caller, Sink};
use crate::api_key::{ApiKey, API_KEY_PREFIX};
use crate::catalog::Catalog;
use crate::jwt::{JwtConfig, JwtVerifier, TenantClaim, VerifiedToken};
use crate::tenant::Via;
use crate::{ConfigError, HttpError, SourceKind, TenancyLayer, Tenant};

mod public_route;

use public_route::PublicRoute;

/// What an application's own credential check found: the tenant it authenticates the
/// caller for, who the caller is, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// The tenant the caller is authenticated for.
    pub tenant: TenantId,
    /// Who is calling (shown by [`Tenant::subject`]).
    pub subject: String,
    /// What the caller may do ([`Tenant::require_scope`]); empty means nothing that
    /// needs a scope.
    pub scopes: Vec<String>,
}

impl Session {
    /// A session of `subject` for `tenant`, without scopes.
    pub fn new(tenant: TenantId, subject: impl Into<String>) -> Self {
        Session {
            tenant,
            subject: subject.into(),
            scopes: Vec::new(),
        }
    }

    /// Sets the scopes.
    pub fn with_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// An authenticating source of the application's own (a session cookie checked against
/// its session store, a client certificate, …). What it returns is trusted like a
/// verified JWT: it authenticates the caller for that tenant. Add it with
/// [`Source::session`].
pub trait SessionSource: fmt::Debug + Send + Sync + 'static {
    /// `Ok(None)` when the request presents no such credential; an error (normally
    /// [`HttpError::InvalidCredentials`]) when it presents one that is not valid;
    /// otherwise the session it proves.
    fn authenticate<'a>(
        &'a self,
        parts: &'a Parts,
    ) -> BoxFuture<'a, Result<Option<Session>, HttpError>>;
}

/// One way of finding the tenant of a request. Credentials ([`Source::Jwt`],
/// [`Source::ApiKey`], [`Source::TrustedHeader`], [`Source::Session`]) authenticate the
/// caller; selectors ([`Source::Subdomain`], [`Source::CustomDomain`],
/// [`Source::PathPrefix`]) only pick a tenant and must agree with the credential. Order
/// matters only for which error is reported first.
#[derive(Debug)]
#[non_exhaustive]
pub enum Source {
    /// Credential: `Authorization: Bearer <JWT>`, verified (see [`crate::jwt`]). Scopes
    /// come from the standard claims `scope` (space-separated) or `scp` (array).
    Jwt(JwtConfig),
    /// Selector: `<slug>.<base domain>` in the `Host` header.
    Subdomain {
        /// The base domain, e.g. `app.example.com`.
        base_domain: String,
    },
    /// Selector: a verified custom domain in the `Host` header (catalog lookup, cached).
    CustomDomain,
    /// Credential: `X-Api-Key: tnk_…` or `Authorization: Bearer tnk_…`.
    ApiKey,
    /// Credential: a header set by a trusted internal gateway that authenticated the
    /// caller, holding a tenant id or slug (and optionally a second header with the
    /// caller's space-separated scopes). Only for services that are not reachable
    /// except through that gateway, which must strip client-sent copies.
    TrustedHeader {
        /// Header name, e.g. `x-tenant-id`.
        header: HeaderName,
        /// Header with the caller's scopes, e.g. `x-tenant-scopes`.
        scopes: Option<HeaderName>,
    },
    /// Selector: `/<prefix>/<tenant id or slug>/…`; the prefix and tenant are stripped
    /// from the path before routing.
    PathPrefix {
        /// The prefix, e.g. `/t`.
        prefix: String,
    },
    /// Credential: the application's own ([`SessionSource`]).
    Session(Arc<dyn SessionSource>),
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
    /// The trusted-header source, without scopes: enable it only behind a gateway that
    /// authenticates the caller and sets (and strips client-sent copies of) the header.
    pub fn trusted_header(header: &str) -> Result<Self, ConfigError> {
        Ok(Source::TrustedHeader {
            header: header_name(header)?,
            scopes: None,
        })
    }
    /// The trusted-header source with a second header carrying the caller's scopes
    /// (space-separated), set by the same gateway.
    pub fn trusted_header_with_scopes(header: &str, scopes: &str) -> Result<Self, ConfigError> {
        Ok(Source::TrustedHeader {
            header: header_name(header)?,
            scopes: Some(header_name(scopes)?),
        })
    }
    /// An authenticating source of the application's own.
    pub fn session(source: impl SessionSource) -> Self {
        Source::Session(Arc::new(source))
    }
    /// The path-prefix source.
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        Source::PathPrefix {
            prefix: prefix.into(),
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(name)
        .map_err(|e| ConfigError::Invalid(format!("header name {name:?}: {e}")))
}

/// A credential source ready to use.
#[derive(Debug)]
enum Credential {
    Jwt(Box<JwtVerifier>),
    ApiKey,
    TrustedHeader {
        header: HeaderName,
        scopes: Option<HeaderName>,
    },
    Session(Arc<dyn SessionSource>),
}

/// A selector ready to use.
#[derive(Debug)]
enum Selector {
    Subdomain { suffix: String, base: String },
    CustomDomain,
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
    /// Credential sources in order.
    credentials: Vec<Credential>,
    /// Selectors in order.
    selectors: Vec<Selector>,
    /// Routes served without a tenant.
    public: Vec<PublicRoute>,
    /// Some selector reads the Host header (subdomain, custom domain).
    host_sources: bool,
    /// Cached catalog lookups.
    catalog: Arc<Catalog>,
    /// Opens tenant transactions.
    router: Router,
    /// GET, HEAD and OPTIONS requests get read-only transactions.
    read_only_safe_methods: bool,
    /// Where access events go, if anywhere.
    access: Option<Sink>,
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
    catalog: PgConfig,
    sources: Vec<Source>,
    public: Vec<String>,
    cache_ttl: Duration,
    listen: bool,
    read_only_safe_methods: bool,
    access: Option<Sink>,
}

impl TenancyBuilder {
    /// Declares a route public: a request whose path is exactly `path` (as received,
    /// compared byte for byte; `{name}` matches one segment of letters, digits and
    /// `-._~`) is served without resolving a tenant. It gets no [`Tenant`], no tenant
    /// id and no transaction: the [`crate::Tx`] and [`Tenant`] extractors refuse with
    /// 401 there. Every other path, including other spellings of this one (`//x`,
    /// `/x/`, `/%78`, `/t/acme/x`), needs a credential.
    pub fn public(mut self, path: impl Into<String>) -> Self {
        self.public.push(path.into());
        self
    }

    /// Whether requests with a safe method (GET, HEAD, OPTIONS) get a read-only
    /// transaction (default: yes). A read-only transaction refuses writes, and its commit
    /// is queued instead of awaited, which saves a round trip per request. Turn it off if
    /// GET handlers must write (an access log row, a counter).
    pub fn read_only_safe_methods(mut self, on: bool) -> Self {
        self.read_only_safe_methods = on;
        self
    }

    /// Adds a source (order matters only for which error is reported first). At least
    /// one must be a credential.
    pub fn source(mut self, s: Source) -> Self {
        self.sources.push(s);
        self
    }

    /// How long catalog answers are cached without a change notification (default 30 s).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Records access signals into `sink` (see [`crate::access`]): one event per request
    /// answered for a resolved tenant and one per `tenant-mismatch` refusal. Give it a
    /// `tenancy_insights::anomaly::AnomalyFeed` to detect access anomalies. The client
    /// network comes from axum's `ConnectInfo<SocketAddr>` (serve with
    /// `into_make_service_with_connect_info`). Default: none, which costs one branch
    /// per request.
    pub fn access_sink(mut self, sink: Arc<dyn AccessSink>) -> Self {
        self.access = Some(Sink(sink));
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
        let mut credentials = Vec::new();
        let mut selectors = Vec::new();
        for s in self.sources {
            match s {
                Source::Jwt(c) => credentials.push(Credential::Jwt(Box::new(JwtVerifier::new(c)?))),
                Source::ApiKey => credentials.push(Credential::ApiKey),
                Source::TrustedHeader { header, scopes } => {
                    credentials.push(Credential::TrustedHeader { header, scopes })
                }
                Source::Session(s) => credentials.push(Credential::Session(s)),
                Source::Subdomain { base_domain } => {
                    let base = base_domain.trim_matches('.').to_ascii_lowercase();
                    if base.is_empty() {
                        return Err(ConfigError::Invalid(
                            "subdomain source: empty base domain".into(),
                        ));
                    }
                    selectors.push(Selector::Subdomain {
                        suffix: format!(".{base}"),
                        base,
                    });
                }
                Source::CustomDomain => selectors.push(Selector::CustomDomain),
                Source::PathPrefix { prefix } => {
                    let p = format!("/{}", prefix.trim_matches('/'));
                    if p == "/" {
                        return Err(ConfigError::Invalid(
                            "path-prefix source: empty prefix".into(),
                        ));
                    }
                    selectors.push(Selector::PathPrefix(p));
                }
            }
        }
        // Host names and paths are typed by the caller: without a credential source no
        // request could ever be authenticated, and a configuration that seems to work
        // with selectors alone would be one where anyone can name any tenant.
        if credentials.is_empty() {
            return Err(ConfigError::Invalid(
                "configure at least one credential source (JWT, API key, trusted header or \
                 session); subdomain, custom domain and path prefix only select a tenant"
                    .into(),
            ));
        }
        let public = self
            .public
            .iter()
            .map(|p| PublicRoute::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        let catalog = Catalog::new(self.catalog.clone(), self.router.clone(), self.cache_ttl)?;
        if self.listen {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(ConfigError::Invalid(
                    "Tenancy::build with change listening must run inside a Tokio runtime".into(),
                ));
            }
            catalog.start_listener(self.catalog);
        }
        let host_sources = selectors
            .iter()
            .any(|r| matches!(r, Selector::Subdomain { .. } | Selector::CustomDomain));
        Ok(Tenancy {
            inner: Arc::new(Inner {
                credentials,
                selectors,
                public,
                host_sources,
                catalog,
                router: self.router,
                read_only_safe_methods: self.read_only_safe_methods,
                access: self.access,
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
    /// runtime role) to the catalog database for tenant, domain and API key lookups (TLS
    /// as it says: a [`PgConfig`] parsed from a URL with `sslmode=verify-full`…).
    pub fn builder(router: Router, catalog: impl Into<PgConfig>) -> TenancyBuilder {
        TenancyBuilder {
            router,
            catalog: catalog.into(),
            sources: Vec::new(),
            public: Vec::new(),
            cache_ttl: Duration::from_secs(30),
            listen: true,
            read_only_safe_methods: true,
            access: None,
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

    /// Forgets the cached grant of API key `key_id` in this process, so its next request
    /// is authenticated against the catalog again. Call it once a revocation committed
    /// ([`crate::api_key::revoke_tenant_api_key`]): the catalog's change notification does
    /// the same for every process, but arrives a little later.
    pub fn forget_api_key(&self, key_id: &str) {
        self.inner.catalog.forget_api_key(key_id);
    }

    /// Where access events go, if set ([`TenancyBuilder::access_sink`]).
    pub(crate) fn access_sink(&self) -> Option<&Sink> {
        self.inner.access.as_ref()
    }

    /// Whether `path` is a route declared public ([`TenancyBuilder::public`]).
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.inner.public.iter().any(|r| r.matches(path))
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
        self.checked(id, Via::one(SourceKind::Application), None, None, None)
            .await
    }

    pub(crate) async fn checked(
        &self,
        id: TenantId,
        via: Via,
        subject: Option<Arc<str>>,
        scopes: Option<Arc<[String]>>,
        token: Option<Arc<VerifiedToken>>,
    ) -> Result<Tenant, HttpError> {
        let Some(t) = self.inner.catalog.tenant(id).await? else {
            return Err(HttpError::TenantNotFound);
        };
        match t.state {
            TenantState::Active => Ok(Tenant::new(t, via, subject, scopes, token)),
            TenantState::Suspended => Err(HttpError::TenantSuspended),
            TenantState::Provisioning => Err(HttpError::TenantProvisioning),
            TenantState::Deleting | TenantState::Deleted => Err(HttpError::TenantDeleted),
        }
    }

    /// Resolves the tenant of a request (see the crate docs for the rules).
    pub(crate) async fn resolve(&self, parts: &Parts) -> Result<Resolved, HttpError> {
        // Every answer, mapped to a tenant id (None: names no tenant), is checked against
        // the first one as it comes; nothing is collected.
        let mut agreed = Agreement::default();
        let mut subject = None;
        let mut scopes = None;
        let mut verified_jwt = None;
        let bearer = bearer(parts);
        for c in &self.inner.credentials {
            match c {
                Credential::Jwt(v) => {
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
                        TenantClaim::Id(_) => t.tenant_id,
                        TenantClaim::Slug(_) => self.slug_id(value).await?,
                    };
                    subject.get_or_insert_with(|| Arc::clone(&t.caller));
                    merge_scopes(&mut scopes, agreed.first.is_none(), t.scopes.clone());
                    verified_jwt = Some(Arc::clone(&t));
                    agreed.note(SourceKind::Jwt, id);
                }
                Credential::ApiKey => {
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
                    subject.get_or_insert_with(|| Arc::from(format!("api_key:{}", key.key_id())));
                    merge_scopes(
                        &mut scopes,
                        agreed.first.is_none(),
                        shared_scopes(grant.scopes),
                    );
                    agreed.note(SourceKind::ApiKey, Some(grant.tenant_id));
                }
                Credential::TrustedHeader {
                    header,
                    scopes: scopes_header,
                } => {
                    let Some(v) = parts.headers.get(header) else {
                        continue;
                    };
                    let id = match v.to_str() {
                        Ok(s) => self.named_id(s).await?,
                        Err(_) => None,
                    };
                    let granted = scopes_header
                        .as_ref()
                        .and_then(|h| parts.headers.get(h))
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| {
                            shared_scopes(s.split_ascii_whitespace().map(str::to_owned).collect())
                        });
                    merge_scopes(&mut scopes, agreed.first.is_none(), granted);
                    agreed.note(SourceKind::TrustedHeader, id);
                }
                Credential::Session(source) => {
                    let Some(session) = source.authenticate(parts).await? else {
                        continue;
                    };
                    subject.get_or_insert_with(|| Arc::from(session.subject));
                    merge_scopes(
                        &mut scopes,
                        agreed.first.is_none(),
                        shared_scopes(session.scopes),
                    );
                    agreed.note(SourceKind::Session, Some(session.tenant));
                }
            }
        }
        // No credential: refused before any selector is looked at, so an anonymous
        // caller learns nothing about the tenants it names and costs no catalog lookup.
        if agreed.first.is_none() {
            return Err(HttpError::Unauthenticated);
        }
        let mut strip = None;
        let host = if self.inner.host_sources {
            host_of(parts)
        } else {
            None
        };
        for r in &self.inner.selectors {
            match r {
                Selector::Subdomain { suffix, base } => {
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
                Selector::CustomDomain => {
                    let Some(h) = &host else { continue };
                    let is_base = self.inner.selectors.iter().any(|r| match r {
                        Selector::Subdomain { suffix, base } => {
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
                Selector::PathPrefix(prefix) => {
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
        // Disagreement is reported before existence, so a 403 here says nothing about
        // whether the other tenant exists.
        if agreed.mismatch {
            if let (Some(sink), Some(Some(tenant))) = (&self.inner.access, agreed.first) {
                // Recorded for the tenant the first source (a credential) named.
                let kind = AccessKind::TenantMismatch;
                sink.0
                    .record(&Caller::of(parts).event(tenant, subject.as_deref(), kind));
            }
            return Err(HttpError::TenantMismatch);
        }
        let Some(Some(id)) = agreed.first else {
            return Err(HttpError::TenantNotFound);
        };
        let tenant = self
            .checked(id, agreed.via, subject, scopes, verified_jwt)
            .await?;
        Ok(Resolved { tenant, strip })
    }

    /// The tenant a header value or path segment names: an id in its canonical
    /// spelling, or a slug looked up in the catalog; `None` for text that names no
    /// tenant (another spelling of an id included).
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

/// Scopes as shared by a credential: `None` is no scope at all.
fn shared_scopes(scopes: Vec<String>) -> Option<Arc<[String]>> {
    (!scopes.is_empty()).then(|| Arc::from(scopes))
}

/// Adds the scopes of one more credential to `granted`, the scopes of those presented so
/// far (`first`: none was). With more than one credential the request may do only what
/// every one of them allows.
fn merge_scopes(granted: &mut Option<Arc<[String]>>, first: bool, scopes: Option<Arc<[String]>>) {
    if first {
        *granted = scopes;
        return;
    }
    *granted = match (granted.take(), scopes) {
        (Some(a), Some(b)) => {
            // Each scope one credential lists survives if the other grants it too (a
            // wildcard of one keeps the other's narrower scopes).
            let both: Vec<String> = a
                .iter()
                .filter(|s| crate::tenant::grants(&b, s))
                .chain(b.iter().filter(|s| crate::tenant::grants(&a, s)))
                .cloned()
                .collect();
            shared_scopes(both)
        }
        _ => None,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_routes_match_only_their_exact_spelling() {
        let health = PublicRoute::parse("/health").expect("parses");
        assert!(health.matches("/health"));
        for other in [
            "/health/",
            "//health",
            "/Health",
            "/%68ealth",
            "/health/x",
            "/x/../health",
            "/t/acme/health",
            "health",
            "/",
        ] {
            assert!(!health.matches(other), "{other}");
        }
        let invite = PublicRoute::parse("/invites/{token}/accept").expect("parses");
        assert!(invite.matches("/invites/abc-123_x.y~z/accept"));
        for other in [
            "/invites//accept",
            "/invites/../accept",
            "/invites/./accept",
            "/invites/%2e%2e/accept",
            "/invites/a%2Fb/accept",
            "/invites/a;b/accept",
            "/invites/a/b/accept",
            "/invites/a/accept/",
        ] {
            assert!(!invite.matches(other), "{other}");
        }
        let root = PublicRoute::parse("/").expect("parses");
        assert!(root.matches("/") && !root.matches("//"));
        for bad in [
            "health", "/a//b", "/a/../b", "/a/./b", "/%61", "/{*rest}", "/{}", "/a/",
        ] {
            assert!(PublicRoute::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_credentials_allow_only_what_each_allows() {
        let mut s = None;
        merge_scopes(&mut s, true, shared_scopes(vec!["*".into()]));
        merge_scopes(&mut s, false, shared_scopes(vec!["invoices:read".into()]));
        assert_eq!(s.as_deref(), Some(&["invoices:read".to_owned()][..]));
        let mut s = None;
        merge_scopes(&mut s, true, shared_scopes(vec!["invoices:read".into()]));
        merge_scopes(&mut s, false, None);
        assert_eq!(s, None);
        // The first credential's scopes stand alone.
        let mut s = shared_scopes(vec!["stale".into()]);
        merge_scopes(&mut s, true, None);
        assert_eq!(s, None);
    }
}
