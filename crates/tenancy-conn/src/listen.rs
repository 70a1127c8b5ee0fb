//! `LISTEN` on a connection of its own: the payloads of the notifications on some
//! channels, until the connection drops. Callers that must not miss a change reconnect
//! and treat the gap as "anything may have changed".

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client};

use crate::{quote_ident, ConnError, PgConfig};

/// The notifications of one listening connection.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::UnboundedReceiver<String>,
    /// The listening session; dropping it ends the session.
    client: Client,
    /// Reads the connection's messages into `rx`.
    driver: JoinHandle<()>,
}

impl Notifications {
    /// The next notification's payload; `None` once the connection is gone.
    pub async fn recv(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// The payload of a notification already received, without waiting.
    pub fn try_recv(&mut self) -> Option<String> {
        self.rx.try_recv().ok()
    }

    /// The listening connection, for queries on the same session (reading what a
    /// notification announced, say).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects with `config` and listens on `channels`. Notifications sent before this
/// returns are not delivered.
pub async fn listen(config: &PgConfig, channels: &[&str]) -> Result<Notifications, ConnError> {
    let (client, mut connection) = config.connect_raw().await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listening connection failed");
                    return;
                }
            }
        }
    });
    let sql: String = channels
        .iter()
        .map(|c| format!("LISTEN {};", quote_ident(c)))
        .collect();
    if let Err(source) = client.batch_execute(&sql).await {
        driver.abort();
        return Err(ConnError::Pg {
            host: config
                .pg()
                .get_hosts()
                .first()
                .map(|h| format!("{h:?}"))
                .unwrap_or_default(),
            dbname: config.pg().get_dbname().unwrap_or("").to_owned(),
            user: config.pg().get_user().unwrap_or("").to_owned(),
            detail: crate::error_text(&source),
            source,
        });
    }
    Ok(Notifications { rx, client, driver })
}
