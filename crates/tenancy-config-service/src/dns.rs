//! DNS TXT lookups for custom-domain ownership checks, behind a trait so tests (and
//! operators with their own DNS API) can supply another resolver.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// A boxed future, as the trait returns (keeps the trait object-safe without a macro).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DnsError(pub String);

/// Something that can read the TXT records of a DNS name.
pub trait TxtResolver: Send + Sync + fmt::Debug {
    /// The TXT records at `name` (each record's strings joined); an empty list when the
    /// name exists without TXT records or does not exist.
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

/// The real resolver: hickory-resolver with the system configuration
/// (`/etc/resolv.conf`).
#[derive(Clone)]
pub struct SystemResolver {
    inner: TokioResolver,
}

impl fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SystemResolver")
    }
}

impl SystemResolver {
    /// Reads the system's resolver configuration.
    pub fn from_system() -> Result<SystemResolver, DnsError> {
        let inner = TokioResolver::builder_tokio()
            .map_err(|e| DnsError(format!("reading the system DNS configuration: {e}")))?
            .build()
            .map_err(|e| DnsError(format!("building the DNS resolver: {e}")))?;
        Ok(SystemResolver { inner })
    }
}

impl TxtResolver for SystemResolver {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            // A trailing dot makes the name fully qualified: no search-domain guesses.
            let fq = format!("{}.", name.trim_end_matches('.'));
            match self.inner.txt_lookup(fq.as_str()).await {
                Ok(lookup) => Ok(lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s).into_owned())
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(DnsError(e.to_string())),
            }
        })
    }
}

/// An in-memory resolver: records set by the caller (tests, local development).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    records: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl StaticResolver {
    /// An empty resolver.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Adds a TXT record at `name`.
    pub fn add_txt(&self, name: &str, value: &str) {
        if let Ok(mut m) = self.records.lock() {
            m.entry(name.trim_end_matches('.').to_ascii_lowercase())
                .or_default()
                .push(value.to_owned());
        }
    }
}

impl TxtResolver for StaticResolver {
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let found = self
            .records
            .lock()
            .map(|m| m.get(&key).cloned().unwrap_or_default())
            .map_err(|_| DnsError("static resolver poisoned".into()));
        Box::pin(async move { found })
    }
}

/// A resolver that cannot resolve anything, with the reason (a server whose system DNS
/// configuration could not be read still starts; verifications then fail with this
/// reason instead of claiming that the record is missing).
#[derive(Debug, Clone)]
pub struct UnavailableResolver {
    reason: String,
}

impl UnavailableResolver {
    /// A resolver that fails every lookup with `reason`.
    pub fn new(reason: impl Into<String>) -> UnavailableResolver {
        UnavailableResolver {
            reason: reason.into(),
        }
    }
}

impl TxtResolver for UnavailableResolver {
    fn txt<'a>(&'a self, _name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        let e = DnsError(format!("DNS is not available: {}", self.reason));
        Box::pin(async move { Err(e) })
    }
}
