//! Access signals for anomaly detection: with a sink set
//! ([`crate::TenancyBuilder::access_sink`]), the layer records one
//! [`AccessEvent`] per request it answered for a resolved tenant and one per
//! `tenant-mismatch` refusal (for the credential's tenant), with the credential, the
//! client network and the user agent as fingerprints, never in clear and never a secret.
//! Without a sink, the cost is one branch per request.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::HttpBody as _;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::USER_AGENT;
use http::request::Parts;
use tenancy_core::TenantId;
use tenancy_insights::anomaly::{
    network_of, unix_now, AccessEvent, AccessKind, AnomalyFeed, Fingerprint,
};

use crate::Tenant;

/// Where the layer records access events. Called on the request's task, after the answer
/// is known: keep it cheap and never block (take a short lock, push to a bounded
/// channel, or aggregate per thread).
pub trait AccessSink: Send + Sync + 'static {
    /// One event.
    fn record(&self, event: &AccessEvent);
}

/// The detector of `tenancy-insights`, fed directly (its lock is held for one
/// observation).
impl AccessSink for AnomalyFeed {
    fn record(&self, event: &AccessEvent) {
        AnomalyFeed::record(self, event);
    }
}

/// An [`AccessSink`] as the layer holds it (a sink need not be `Debug`).
#[derive(Clone)]
pub(crate) struct Sink(pub(crate) Arc<dyn AccessSink>);

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessSink")
    }
}

/// What the layer knows of the caller before the request goes to the handler: its
/// network (from axum's `ConnectInfo`, when the server provides it) and its user agent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Caller {
    network: Option<Fingerprint>,
    agent: Option<Fingerprint>,
}

impl Caller {
    /// The caller of the request whose head is `parts`.
    pub(crate) fn of(parts: &Parts) -> Self {
        Caller {
            network: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| network_of(c.0.ip())),
            agent: parts
                .headers
                .get(USER_AGENT)
                .map(|v| Fingerprint::of_bytes(v.as_bytes())),
        }
    }

    /// The event of a request for `tenant` by `subject` (the credential's subject: a JWT
    /// `sub`, `api_key:<id>`, a session's subject).
    pub(crate) fn event(
        self,
        tenant: TenantId,
        subject: Option<&str>,
        kind: AccessKind,
    ) -> AccessEvent {
        let who = subject.map(Fingerprint::of);
        AccessEvent {
            at: unix_now(),
            tenant,
            credential: who,
            subject: who,
            network: self.network,
            agent: self.agent,
            kind,
        }
    }
}

/// A request being recorded: kept by the layer from resolution to the answer.
#[derive(Debug)]
pub(crate) struct Recording {
    sink: Sink,
    caller: Caller,
    tenant: Tenant,
    id_lookup: bool,
}

impl Recording {
    /// Starts recording the request whose head is `parts`, resolved to `tenant`.
    pub(crate) fn start(sink: &Sink, parts: &Parts, tenant: &Tenant) -> Self {
        Recording {
            sink: sink.clone(),
            caller: Caller::of(parts),
            tenant: tenant.clone(),
            id_lookup: id_lookup(&parts.method, parts.uri.path()),
        }
    }

    /// Records the answer. The layer does not see the rows the handler read: `rows` is
    /// 0; `bytes` is the body's length when it is known up front.
    pub(crate) fn answered(&self, resp: &Response) {
        let kind = AccessKind::Response {
            status: resp.status().as_u16(),
            id_lookup: self.id_lookup,
            rows: 0,
            bytes: resp.body().size_hint().exact().unwrap_or(0),
        };
        let t = &self.tenant;
        self.sink
            .0
            .record(&self.caller.event(t.id(), t.subject(), kind));
    }
}

/// Whether a request looks one object up by its id: a GET whose last path segment is a
/// number or a UUID (`GET /orders/42`). A 404 on such a request is what enumeration
/// produces.
pub(crate) fn id_lookup(method: &http::Method, path: &str) -> bool {
    if *method != http::Method::GET {
        return false;
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    (!last.is_empty() && last.len() <= 20 && last.bytes().all(|b| b.is_ascii_digit()))
        || (last.len() == 36 && uuid::Uuid::try_parse(last).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lookups_are_gets_of_a_number_or_a_uuid() {
        let get = http::Method::GET;
        assert!(id_lookup(&get, "/orders/42"));
        assert!(id_lookup(
            &get,
            "/orders/67e55044-10b1-426f-9247-bb680e5fe0c8"
        ));
        assert!(!id_lookup(&get, "/orders"));
        assert!(!id_lookup(&get, "/orders/"));
        assert!(!id_lookup(&get, "/orders/recent"));
        assert!(!id_lookup(&http::Method::DELETE, "/orders/42"));
    }

    #[test]
    fn the_caller_is_fingerprinted_never_kept() {
        let mut req = http::Request::builder()
            .header("user-agent", "curl/8.0")
            .body(())
            .expect("request");
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 1, 2, 3], 4000))));
        let (parts, ()) = req.into_parts();
        let c = Caller::of(&parts);
        assert_eq!(
            c.network,
            Some(network_of("10.1.2.99".parse().expect("ip")))
        );
        assert_eq!(c.agent, Some(Fingerprint::of("curl/8.0")));
        let t = TenantId::new_random();
        let e = c.event(t, Some("api_key:k1"), AccessKind::TenantMismatch);
        assert_eq!(e.tenant, t);
        assert_eq!(e.credential, Some(Fingerprint::of("api_key:k1")));
        assert_eq!(e.subject, e.credential);
        assert!(e.at > 1_700_000_000);
        let none = Caller::of(&http::Request::new(()).into_parts().0);
        assert_eq!((none.network, none.agent), (None, None));
    }
}
