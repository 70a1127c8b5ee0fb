//! The SDK client: an in-process [`Snapshot`] swapped atomically, kept fresh by
//! `LISTEN tenancy_config` (coalesced, targeted reloads) and a periodic full refresh.
//!
//! Evaluation never waits for the network: it reads the current snapshot (one atomic
//! load) and evaluates in memory. When the catalog is unreachable the client keeps
//! serving the last snapshot, reports itself stale in [`Status`], and reconnects with
//! backoff; after reconnecting it reloads everything, because notifications sent while
//! it was away are lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use serde_json::Value;
use tenancy_conn::{Notifications, PgConfig};
use tenancy_core::TenantId;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::engine::{ExplainError, Explanation, LimitExceeded, Resolved, Snapshot};
use crate::error::ConfigError;
use crate::load::{self, CHANNEL};
use crate::model::{EntitlementValue, FlagKey, VariantKey};

/// How the client keeps its snapshot fresh.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The snapshot is reported stale when the listener is disconnected or the last
    /// successful full refresh is older than this. A full refresh runs every half of it.
    pub max_staleness: Duration,
    /// At most one reload per this window: a notification arriving sooner after the
    /// previous reload waits for the rest of the window, so a burst of changes costs one
    /// reload, while an isolated change is applied at once.
    pub coalesce: Duration,
    /// First reconnect delay; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            max_staleness: Duration::from_secs(60),
            coalesce: Duration::from_millis(2),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// What the client knows about its own freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Highest change version in the snapshot.
    pub version: i64,
    /// Whether the listener connection is up.
    pub connected: bool,
    /// Whether the snapshot may be out of date (disconnected, or no full refresh within
    /// `max_staleness`).
    pub stale: bool,
    /// Time since the last successful full load.
    pub since_refresh: Duration,
    /// The last error talking to the catalog, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Health {
    connected: bool,
    last_refresh: Instant,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    /// The current snapshot; readers load it lock-free.
    snapshot: ArcSwap<Snapshot>,
    /// Freshness facts, written by the worker, read by `status()`.
    health: Mutex<Health>,
    /// Bumped on every swap, so watchers (and tests) can wait for changes.
    generation: watch::Sender<u64>,
    /// Options.
    opts: ClientOptions,
}

impl Inner {
    /// Serving `snapshot`, just loaded.
    fn new(snapshot: Snapshot, opts: ClientOptions) -> Arc<Inner> {
        let (generation, _) = watch::channel(0);
        Arc::new(Inner {
            snapshot: ArcSwap::from_pointee(snapshot),
            health: Mutex::new(Health {
                connected: true,
                last_refresh: Instant::now(),
                last_error: None,
            }),
            generation,
            opts,
        })
    }
}

/// The SDK's configuration client. Cheap to clone; the background worker stops when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct ConfigClient {
    inner: Arc<Inner>,
}

/// A live listener connection: the notifications on [`CHANNEL`], and the session that
/// reads what they announce.
type Session = Notifications;

async fn open_session(config: &PgConfig) -> Result<Session, ConfigError> {
    tenancy_conn::listen(config, &[CHANNEL])
        .await
        .map_err(|source| ConfigError::Connect {
            what: "connecting the configuration listener",
            source,
        })
}

impl ConfigClient {
    /// Connects as the configuration reader role (`tenancy_config_reader`, created by
    /// the bootstrap: it may read every tenant's configuration, which the runtime role
    /// cannot), listens, loads the first snapshot and starts the background worker. Fails when the
    /// catalog cannot be reached now: there is nothing to serve yet.
    pub async fn connect(
        config: impl Into<PgConfig>,
        opts: ClientOptions,
    ) -> Result<ConfigClient, ConfigError> {
        let config = config.into();
        let session = open_session(&config).await?;
        let data = load::load_all(session.client()).await?;
        let inner = Inner::new(Snapshot::build(data), opts);
        tokio::spawn(worker(Arc::downgrade(&inner), config, session));
        Ok(ConfigClient { inner })
    }

    /// A client serving a fixed snapshot, with no worker (tests, offline tools).
    pub fn from_snapshot(snapshot: Snapshot) -> ConfigClient {
        let opts = ClientOptions {
            max_staleness: Duration::MAX,
            ..ClientOptions::default()
        };
        ConfigClient {
            inner: Inner::new(snapshot, opts),
        }
    }

    /// The current snapshot: one atomic load, no lock, no allocation. Hold it for a
    /// consistent view across several evaluations.
    #[inline]
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.inner.snapshot.load()
    }

    /// Freshness of the snapshot.
    pub fn status(&self) -> Status {
        let version = self.inner.snapshot.load().version();
        let (connected, since, err) = match self.inner.health.lock() {
            Ok(h) => (h.connected, h.last_refresh.elapsed(), h.last_error.clone()),
            Err(_) => (false, Duration::MAX, Some("status lock poisoned".into())),
        };
        Status {
            version,
            connected,
            stale: !connected || since > self.inner.opts.max_staleness,
            since_refresh: since,
            last_error: err,
        }
    }

    /// A receiver that sees a new generation number after every snapshot swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Waits until the snapshot includes change `version`, or `timeout` passes; returns
    /// whether it did.
    pub async fn wait_for_version(&self, version: i64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.snapshot().version() >= version {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.snapshot().version() >= version,
            }
        }
    }

    /// Whether a flag is on for a tenant (`false` for an unknown flag).
    #[inline]
    pub fn is_enabled(&self, tenant: TenantId, flag: &str) -> bool {
        self.snapshot()
            .is_enabled(tenant, flag, OffsetDateTime::now_utc())
    }

    /// A flag's variant and value for a tenant.
    pub fn variant(&self, tenant: TenantId, flag: &str) -> Option<(VariantKey, Value)> {
        self.snapshot()
            .flag(tenant, flag, OffsetDateTime::now_utc())
            .map(|e| (e.variant.clone(), e.value.clone()))
    }

    /// A tenant's entitlement value.
    pub fn entitlement(&self, tenant: TenantId, key: &str) -> Option<Resolved<EntitlementValue>> {
        self.snapshot()
            .entitlement(tenant, key, OffsetDateTime::now_utc())
    }

    /// Whether the tenant's plan (with region and overrides) grants a feature.
    pub fn has_feature(&self, tenant: TenantId, key: &str) -> bool {
        self.snapshot()
            .has_feature(tenant, key, OffsetDateTime::now_utc())
    }

    /// The tenant's limit (`None` = unlimited; unknown limits are 0).
    pub fn limit(&self, tenant: TenantId, key: &str) -> Option<u64> {
        self.snapshot()
            .limit(tenant, key, OffsetDateTime::now_utc())
    }

    /// Checks that reaching `requested` stays within the tenant's limit.
    pub fn check_limit(
        &self,
        tenant: TenantId,
        key: &str,
        requested: u64,
    ) -> Result<(), LimitExceeded> {
        self.snapshot()
            .check_limit(tenant, key, requested, OffsetDateTime::now_utc())
    }

    /// A tenant's setting value.
    pub fn setting(&self, tenant: TenantId, key: &str) -> Option<Value> {
        self.snapshot()
            .setting(tenant, key)
            .map(|r| r.value.clone())
    }

    /// Explains a flag, entitlement or setting (`kind` is `flag`, `entitlement` or
    /// `setting`).
    pub fn explain(
        &self,
        kind: &str,
        tenant: TenantId,
        key: &str,
    ) -> Result<Explanation, ExplainError> {
        let snap = self.snapshot();
        let now = OffsetDateTime::now_utc();
        match kind {
            "flag" => snap.explain_flag(tenant, key, now),
            "entitlement" => snap.explain_entitlement(tenant, key, now),
            _ => snap.explain_setting(tenant, key),
        }
    }

    fn swap(inner: &Inner, snap: Snapshot) {
        inner.snapshot.store(Arc::new(snap));
        inner.generation.send_modify(|g| *g += 1);
    }
}

fn set_health(inner: &Inner, f: impl FnOnce(&mut Health)) {
    if let Ok(mut h) = inner.health.lock() {
        f(&mut h);
    }
}

/// What a batch of notifications asks for.
#[derive(Debug, Default)]
struct Pending {
    everything: bool,
    flags: BTreeSet<FlagKey>,
    tenants: BTreeSet<TenantId>,
}

impl Pending {
    fn add(&mut self, payload: &str) {
        match payload.split_once(':') {
            Some(("flag", k)) => match k.parse() {
                Ok(k) => {
                    self.flags.insert(k);
                }
                Err(_) => self.everything = true,
            },
            Some(("tenant", t)) => match t.parse() {
                Ok(t) => {
                    self.tenants.insert(t);
                }
                Err(_) => self.everything = true,
            },
            // `all`, plans, regions, definitions, or anything this version does not know.
            _ => self.everything = true,
        }
    }
}

async fn full_refresh(inner: &Inner, client: &Client) -> Result<(), ConfigError> {
    let data = load::load_all(client).await?;
    ConfigClient::swap(inner, Snapshot::build(data));
    set_health(inner, |h| {
        h.last_refresh = Instant::now();
        h.last_error = None;
    });
    Ok(())
}

async fn apply(inner: &Inner, client: &Client, p: Pending) -> Result<(), ConfigError> {
    if p.everything {
        return full_refresh(inner, client).await;
    }
    let current = inner.snapshot.load_full();
    let mut next: Option<Snapshot> = None;
    for key in &p.flags {
        let loaded = load::load_flag(client, key).await?;
        let base = next.as_ref().unwrap_or(&current);
        let (flag, version) = match loaded {
            Some((f, v)) => (Some(f), v),
            None => (None, base.version()),
        };
        next = Some(base.with_flag(key, flag, version));
    }
    for id in &p.tenants {
        let loaded = load::load_tenant(client, *id).await?;
        let version = client
            .query_one(
                "SELECT coalesce(max(version), 0) FROM tenancy_catalog.config_changes",
                &[],
            )
            .await
            .map_err(ConfigError::db("reading the configuration version"))?
            .get::<_, i64>(0);
        let base = next.as_ref().unwrap_or(&current);
        next = Some(base.with_tenant(*id, loaded, version));
    }
    if let Some(n) = next {
        ConfigClient::swap(inner, n);
    }
    Ok(())
}

/// Serves one session until its connection fails; returns the error.
async fn serve(weak: &Weak<Inner>, session: &mut Session) -> Option<String> {
    let period = {
        let inner = weak.upgrade()?;
        (inner.opts.max_staleness / 2).max(Duration::from_millis(100))
    };
    let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut last_apply: Option<Instant> = None;
    loop {
        let coalesce = weak.upgrade()?.opts.coalesce;
        let mut pending = Pending::default();
        tokio::select! {
            note = session.recv() => {
                let Some(first) = note else {
                    return Some("the listener connection closed".into());
                };
                pending.add(&first);
                // Leading edge: an isolated change is applied at once. Trailing edge: a
                // change within `coalesce` of the previous reload waits out the window,
                // and everything that arrived meanwhile costs one reload.
                if let Some(last) = last_apply {
                    let since = last.elapsed();
                    if since < coalesce {
                        tokio::time::sleep(coalesce - since).await;
                    }
                }
                while let Some(more) = session.try_recv() {
                    pending.add(&more);
                }
                let inner = weak.upgrade()?;
                if let Err(e) = apply(&inner, session.client(), pending).await {
                    return Some(e.to_string());
                }
                last_apply = Some(Instant::now());
            }
            _ = refresh.tick() => {
                let inner = weak.upgrade()?;
                if let Err(e) = full_refresh(&inner, session.client()).await {
                    return Some(e.to_string());
                }
            }
        }
    }
}

async fn worker(weak: Weak<Inner>, config: PgConfig, first: Session) {
    let mut session = Some(first);
    let mut delay = match weak.upgrade() {
        Some(i) => i.opts.backoff,
        None => return,
    };
    loop {
        let mut s = match session.take() {
            Some(s) => s,
            None => {
                let attempt = async {
                    let s = open_session(&config).await?;
                    let inner = weak
                        .upgrade()
                        .ok_or(ConfigError::Pool("client dropped".into()))?;
                    full_refresh(&inner, s.client()).await?;
                    Ok::<Session, ConfigError>(s)
                };
                match attempt.await {
                    Ok(s) => {
                        let Some(inner) = weak.upgrade() else { return };
                        set_health(&inner, |h| h.connected = true);
                        delay = inner.opts.backoff;
                        tracing::info!("configuration listener reconnected");
                        s
                    }
                    Err(e) => {
                        let Some(inner) = weak.upgrade() else { return };
                        set_health(&inner, |h| {
                            h.connected = false;
                            h.last_error = Some(e.to_string());
                        });
                        let max = inner.opts.max_backoff;
                        drop(inner);
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(max);
                        continue;
                    }
                }
            }
        };
        let Some(err) = serve(&weak, &mut s).await else {
            return; // The client was dropped.
        };
        let Some(inner) = weak.upgrade() else { return };
        tracing::warn!(error = %err, "configuration snapshot is now stale; serving the last one and reconnecting");
        set_health(&inner, |h| {
            h.connected = false;
            h.last_error = Some(err);
        });
    }
}
