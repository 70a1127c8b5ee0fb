//! Workers, the outbox loop, the warm-pool refill loop and the purge scheduler.

use std::time::Duration;

use serde_json::json;
use tenancy_catalog::{self as catalog, WorkflowKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::Provisioner;
use crate::Error;

impl Provisioner {
    /// Queues a purge workflow for every soft-deleted tenant whose retention is over and
    /// that has no legal hold. Returns how many were queued.
    pub async fn schedule_purges(&self, client: &mut Client) -> Result<usize, Error> {
        let due = catalog::purge_due(client, 100).await?;
        for t in &due {
            self.enqueue(
                client,
                *t,
                WorkflowKind::Purge,
                &json!({}),
                "tenancy-purge-scheduler",
            )
            .await?;
        }
        Ok(due.len())
    }

    /// Starts `n` workers, the outbox loop and the purge scheduler.
    pub fn spawn_workers(&self, n: usize) -> Workers {
        let (stop, stop_rx) = watch::channel(false);
        let mut handles = Vec::new();
        for i in 0..n {
            let me = self.clone();
            let rx = stop_rx.clone();
            handles.push(tokio::spawn(async move { me.worker_loop(i, rx).await }));
        }
        let me = self.clone();
        let rx = stop_rx.clone();
        handles.push(tokio::spawn(async move { me.outbox_loop(rx).await }));
        if self.inner.cfg.warm_pool.enabled() {
            let me = self.clone();
            let rx = stop_rx.clone();
            handles.push(tokio::spawn(async move { me.refill_loop(rx).await }));
        }
        let me = self.clone();
        handles.push(tokio::spawn(async move { me.purge_loop(stop_rx).await }));
        Workers {
            stop,
            handles,
            workers: n,
        }
    }

    /// The catalog connection a loop keeps in `client`: the one there while it is open,
    /// else a new one.
    async fn open_catalog<'a>(
        &self,
        client: &'a mut Option<Client>,
    ) -> Result<&'a mut Client, Error> {
        let c = match client.take().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => self.catalog_client().await?,
        };
        Ok(client.insert(c))
    }

    async fn worker_loop(&self, i: usize, mut stop: watch::Receiver<bool>) {
        let mut client: Option<Client> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let c = match self.open_catalog(&mut client).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(worker = i, error = %tenancy_conn::ErrorText(&e), "worker cannot reach the catalog");
                    tokio::time::sleep(self.inner.cfg.poll_interval).await;
                    continue;
                }
            };
            let notified = self.inner.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step_once(c, None).await {
                Ok(Some(_)) => continue,
                Ok(None) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(self.inner.cfg.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(Error::InjectedCrash(step)) => {
                    tracing::warn!(worker = i, step, "worker killed by an injected crash");
                    // Close the connection without committing, like a dying process.
                    drop(client.take());
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = i, error = %tenancy_conn::ErrorText(&e), "worker step failed");
                    client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn outbox_loop(&self, mut stop: watch::Receiver<bool>) {
        let mut client: Option<Client> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let Ok(c) = self.open_catalog(&mut client).await else {
                tokio::time::sleep(self.inner.cfg.poll_interval).await;
                continue;
            };
            let notified = self.inner.outbox_wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.deliver_outbox_once(c).await {
                Ok(true) => continue,
                Ok(false) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(self.inner.cfg.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %tenancy_conn::ErrorText(&e), "webhook delivery failed");
                    client = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Keeps the warm pool full: a pass at start, after every claim and periodically.
    async fn refill_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            // Failures are logged per cluster; the next pass retries.
            let _ = self.refill_warm_pool().await;
            tokio::select! {
                _ = self.inner.refill_wake.notified() => {}
                _ = tokio::time::sleep(self.inner.cfg.poll_interval * 10) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn purge_loop(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            match self.catalog_client().await {
                Ok(mut c) => {
                    if let Err(e) = self.schedule_purges(&mut c).await {
                        tracing::warn!(error = %tenancy_conn::ErrorText(&e), "purge scheduling failed");
                    }
                    // The old copies of moved tenants, once kept long enough.
                    if let Err(e) = self.drop_moved_sources().await {
                        tracing::warn!(error = %tenancy_conn::ErrorText(&e), "dropping moved tenants' old copies failed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %tenancy_conn::ErrorText(&e), "purge scheduler cannot reach the catalog")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.inner.cfg.poll_interval * 10) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Running workers; stop them with [`Workers::stop`].
#[derive(Debug)]
pub struct Workers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
    workers: usize,
}

impl Workers {
    /// Workflow workers still running (a worker ends after an injected crash).
    pub fn alive(&self) -> usize {
        self.handles[..self.workers]
            .iter()
            .filter(|h| !h.is_finished())
            .count()
    }

    /// Stops every loop and waits for them (a step under way finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}
