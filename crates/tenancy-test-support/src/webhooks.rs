//! A local Standard Webhooks receiver for the tests of what sends webhooks (provisioning's
//! registration and event receivers, the control plane's events): it checks every
//! message's signature with the receiver's secret, records the ones that verify, and can
//! be told to fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde_json::Value;
use tenancy_core::TenantId;
use tenancy_provision::webhook;

/// A received message: its `webhook-id` and its body.
pub type Message = (String, Value);

/// A receiver listening on a local port (`POST /hook`), serving until the test process ends.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    /// Where it listens.
    pub url: String,
    /// The secret senders sign with.
    pub secret: SecretString,
    /// While set, every correctly signed message is answered 503 and not recorded.
    pub fail: Arc<AtomicBool>,
    /// How many messages had a signature that did not verify (answered 401).
    pub bad_signatures: Arc<AtomicU64>,
    received: Arc<Mutex<Vec<Message>>>,
}

impl WebhookReceiver {
    /// Starts a receiver with a fresh secret.
    ///
    /// # Panics
    /// When no local port can be bound (a test set-up failure).
    pub async fn start() -> Self {
        let secret = webhook::generate_secret();
        let key = webhook::decode_secret(&secret).expect("secret");
        let received: Arc<Mutex<Vec<Message>>> = Arc::default();
        let fail = Arc::new(AtomicBool::new(false));
        let bad = Arc::new(AtomicU64::new(0));
        let (r, f, b) = (received.clone(), fail.clone(), bad.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (r, f, b, key) = (r.clone(), f.clone(), b.clone(), key.clone());
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let ok = webhook::verify(
                        &key,
                        &h("webhook-id"),
                        &h("webhook-timestamp"),
                        &h("webhook-signature"),
                        &body,
                        webhook::unix_now(),
                        Duration::from_secs(300),
                    );
                    if !ok {
                        b.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::UNAUTHORIZED;
                    }
                    if f.load(Ordering::Relaxed) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Ok(mut g) = r.lock() {
                        g.push((h("webhook-id"), v));
                    }
                    StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            secret,
            fail,
            bad_signatures: bad,
            received,
        }
    }

    /// This receiver as provisioning's configuration names one.
    pub fn as_receiver(&self, name: &str) -> tenancy_provision::Receiver {
        tenancy_provision::Receiver {
            name: name.to_owned(),
            url: self.url.clone(),
            secret: self.secret.clone(),
        }
    }

    /// The messages recorded so far, in the order they came.
    pub fn messages(&self) -> Vec<Message> {
        self.received.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Distinct webhook ids of the events of `event_type` about `tenant` (`data.id`).
    pub fn distinct(&self, event_type: &str, tenant: TenantId) -> usize {
        let tenant = tenant.to_string();
        let mut ids: Vec<String> = self
            .messages()
            .into_iter()
            .filter(|(_, v)| v["type"] == event_type && v["data"]["id"] == tenant.as_str())
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }
}
