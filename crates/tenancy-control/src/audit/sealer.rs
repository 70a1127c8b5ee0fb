//! The sealer task of `tenancy serve`: every `audit.seal_interval_secs`, it seals the
//! control log (catalog) and every tenant log (each cluster's shared database and each
//! dedicated tenant database), signs a checkpoint for every chain that grew, stores and
//! publishes them (JSON-lines file; `audit.checkpoint` webhooks through the outbox, in
//! the transaction that stores them), and purges tenant logs past their plan's retention
//! unless the tenant is on legal hold.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;
use tenancy_audit::{Actor, ActorKind, Checkpoint, Log, Signer};
use tenancy_catalog::{ClusterRecord, OutboxMessage};
use tenancy_conn::PgConfig;
use tenancy_provision::{config_for, ClusterAccess};
use tokio::sync::watch;
use tokio_postgres::Client;
use uuid::Uuid;

use super::AuditConfig;

/// A webhook receiver of checkpoints: its name and URL (its key is the outbox's).
#[derive(Debug, Clone)]
pub struct CheckpointReceiver {
    /// The receiver's configured name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

/// Seals, checkpoints, publishes and purges; cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The catalog (owner role).
    catalog: PgConfig,
    /// How to log in to tenant clusters (the owner role seals and purges).
    access: ClusterAccess,
    /// The checkpoint and anchor signing key.
    signer: Signer,
    /// Interval, retention, publication.
    config: AuditConfig,
    /// Receivers of `audit.checkpoint` webhooks (empty: none).
    receivers: Vec<CheckpointReceiver>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("public_key", &self.inner.signer.public_key_hex())
            .finish_non_exhaustive()
    }
}

/// What one [`Sealer::pass`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Events sealed (every log).
    pub sealed: u64,
    /// Checkpoints signed.
    pub checkpoints: Vec<Checkpoint>,
    /// Tenant logs purged: (tenant, events removed).
    pub purged: Vec<(Uuid, u64)>,
    /// Databases that could not be sealed (logged; retried next pass).
    pub failed: usize,
}

/// The running task; [`SealerTask::stop`] ends it after the pass under way.
#[derive(Debug)]
pub struct SealerTask {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl SealerTask {
    /// Stops the task and waits for it (a pass under way is cut: each of its steps is a
    /// transaction, so nothing is left half-done).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// One tenant database to seal: its cluster and database name.
type Target = (ClusterRecord, String);

impl Sealer {
    /// A sealer on this catalog and these clusters.
    pub fn new(
        catalog: PgConfig,
        access: ClusterAccess,
        signer: Signer,
        config: AuditConfig,
        receivers: Vec<CheckpointReceiver>,
    ) -> Sealer {
        Sealer {
            inner: Arc::new(Inner {
                catalog,
                access,
                signer,
                config,
                receivers,
            }),
        }
    }

    /// The public key checkpoints are signed with (hex).
    pub fn public_key_hex(&self) -> String {
        self.inner.signer.public_key_hex()
    }

    /// The checkpoint signing key (it also signs tenants' compliance reports, under
    /// another domain: [`Signer::sign_document`]).
    pub fn signer(&self) -> &Signer {
        &self.inner.signer
    }

    /// Connects as the runtime role to a tenant database (what `tenancy check`'s probe
    /// needs: it tries cross-tenant access as that role, in transactions it rolls back).
    pub async fn runtime_db(&self, cluster: &ClusterRecord, dbname: &str) -> Result<Client> {
        self.connect_as(cluster, &self.inner.access.runtime, dbname)
            .await
    }

    /// Connects as `login` to database `dbname` of `cluster`.
    async fn connect_as(
        &self,
        cluster: &ClusterRecord,
        login: &tenancy_sdk::Login,
        dbname: &str,
    ) -> Result<Client> {
        let cfg = config_for(cluster, login, dbname, &self.inner.access.tls);
        self.connect(&cfg).await
    }

    /// The configuration.
    pub fn config(&self) -> &AuditConfig {
        &self.inner.config
    }

    /// Starts the periodic task (`None` when `seal_interval_secs` is 0).
    pub fn spawn(&self) -> Option<SealerTask> {
        let every = self.inner.config.seal_interval_secs;
        if every == 0 {
            return None;
        }
        let (stop, mut rx) = watch::channel(false);
        let me = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                // A pass is cut at shutdown: each of its steps is a transaction, and a
                // purge cut between its anchor and its delete leaves events the anchor
                // still verifies (the next pass deletes them).
                let pass = tokio::select! {
                    r = me.pass(true) => r,
                    _ = rx.wait_for(|s| *s) => return,
                };
                match pass {
                    Ok(r) if r.sealed > 0 || !r.purged.is_empty() => tracing::info!(
                        sealed = r.sealed,
                        checkpoints = r.checkpoints.len(),
                        purged = r.purged.len(),
                        "audit sealer pass"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %tenancy_conn::ErrorText(e.as_ref()), "audit sealer pass failed; retried next interval")
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(every)) => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        });
        Some(SealerTask { stop, handle })
    }

    async fn connect(&self, cfg: &PgConfig) -> Result<Client> {
        let (client, conn) = cfg.connect_raw().await.with_context(|| {
            format!(
                "connecting to database {:?}",
                cfg.pg().get_dbname().unwrap_or("")
            )
        })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Connects as the owner role to a tenant database, installing the audit table
    /// there when it is missing (a database made before the audit log, or a dedicated
    /// tenant's).
    pub async fn tenant_db(&self, cluster: &ClusterRecord, dbname: &str) -> Result<Client> {
        let client = self
            .connect_as(cluster, &self.inner.access.owner, dbname)
            .await?;
        let has: bool = client
            .query_one(
                "SELECT to_regclass('tenancy.audit_events') IS NOT NULL",
                &[],
            )
            .await
            .context("looking for the audit table")?
            .get(0);
        if !has {
            tenancy_audit::install(&client)
                .await
                .with_context(|| format!("installing the audit table in {dbname}"))?;
        }
        Ok(client)
    }

    /// Every tenant database: each cluster's shared database and each dedicated tenant
    /// database that is in service.
    async fn targets(&self, catalog: &Client) -> Result<Vec<Target>> {
        let clusters = tenancy_catalog::list_clusters(catalog).await?;
        let dedicated = catalog
            .query(
                "SELECT cluster_id, database_name FROM tenancy_catalog.tenants \
                  WHERE placement = 'dedicated' AND database_name IS NOT NULL \
                    AND state IN ('active', 'suspended', 'deleting')",
                &[],
            )
            .await
            .context("listing dedicated tenant databases")?;
        let mut out = Vec::new();
        for c in &clusters {
            out.push((c.clone(), c.dbname.clone()));
            for r in &dedicated {
                if r.get::<_, Uuid>(0) == c.id {
                    out.push((c.clone(), r.get(1)));
                }
            }
        }
        Ok(out)
    }

    /// One pass over every log: seal, sign and publish checkpoints, then (with `purge`)
    /// purge what retention allows.
    pub async fn pass(&self, purge: bool) -> Result<PassReport> {
        let mut report = PassReport::default();
        let mut catalog = self.connect(&self.inner.catalog).await?;
        report.sealed += tenancy_audit::seal_log(&mut catalog, Log::Control, 5000)
            .await?
            .sealed;
        let cps =
            tenancy_audit::sign_heads(Log::Control, &catalog, &catalog, &self.inner.signer).await?;
        self.store_and_publish(&mut catalog, &cps).await?;
        report.checkpoints.extend(cps);
        let mut dbs = Vec::new();
        for (cluster, dbname) in self.targets(&catalog).await? {
            let sealed = async {
                let mut db = self.tenant_db(&cluster, &dbname).await?;
                let sealed = tenancy_audit::seal_log(&mut db, Log::Tenant, 5000).await?;
                let cps = tenancy_audit::sign_heads(Log::Tenant, &db, &catalog, &self.inner.signer)
                    .await?;
                anyhow::Ok((db, sealed.sealed, cps))
            }
            .await;
            match sealed {
                Ok((db, n, cps)) => {
                    report.sealed += n;
                    self.store_and_publish(&mut catalog, &cps).await?;
                    report.checkpoints.extend(cps);
                    dbs.push(db);
                }
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(cluster = %cluster.name, database = %dbname, error = %tenancy_conn::ErrorText(e.as_ref()), "sealing a tenant database's audit log failed");
                }
            }
        }
        if purge {
            for db in &mut dbs {
                report.purged.extend(self.purge_db(db, &mut catalog).await?);
            }
        }
        Ok(report)
    }

    /// Stores checkpoints and queues their `audit.checkpoint` webhooks in one catalog
    /// transaction, then appends them to the publication file.
    async fn store_and_publish(&self, catalog: &mut Client, cps: &[Checkpoint]) -> Result<()> {
        if cps.is_empty() {
            return Ok(());
        }
        let tx = catalog.transaction().await?;
        for c in cps {
            tenancy_audit::store_checkpoint_in(&tx, c).await?;
            if !self.inner.config.webhook {
                continue;
            }
            for r in &self.inner.receivers {
                let payload = json!({
                    "type": "audit.checkpoint",
                    "timestamp": time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                    "data": c,
                });
                tenancy_catalog::enqueue_outbox(
                    &tx,
                    &OutboxMessage {
                        webhook_id: format!(
                            "msg_audit_{}_{}_{}_{}_{}",
                            c.log.as_str(),
                            c.tenant.simple(),
                            c.chain_pos,
                            &c.public_key[..16],
                            r.name
                        ),
                        receiver: r.name.clone(),
                        url: r.url.clone(),
                        tenant_id: tenancy_core::TenantId::from_uuid(c.tenant).ok(),
                        event_type: "audit.checkpoint".into(),
                        payload,
                        attempts: 0,
                    },
                )
                .await?;
            }
        }
        tx.commit().await.context("committing audit checkpoints")?;
        if let Some(path) = &self.inner.config.publish_file {
            tenancy_audit::append_jsonl(path, cps)?;
        }
        Ok(())
    }

    /// Purges, in one tenant database, every tenant's events older than its plan's
    /// retention, unless it is on legal hold. Tenants the catalog does not know are left
    /// alone.
    async fn purge_db(&self, db: &mut Client, catalog: &mut Client) -> Result<Vec<(Uuid, u64)>> {
        let oldest = db
            .query(
                "SELECT tenant_id, min(occurred_at) FROM tenancy.audit_events \
                  WHERE chain_pos IS NOT NULL GROUP BY tenant_id",
                &[],
            )
            .await
            .context("reading the oldest audit events")?;
        if oldest.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = oldest.iter().map(|r| r.get(0)).collect();
        let info: HashMap<Uuid, (String, bool)> = catalog
            .query(
                "SELECT id, plan, legal_hold FROM tenancy_catalog.tenants WHERE id = ANY($1)",
                &[&ids],
            )
            .await
            .context("reading tenants' plans and legal holds")?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let now = time::OffsetDateTime::now_utc();
        let actor = Actor::new(ActorKind::Worker, "worker:audit-sealer");
        let mut out = Vec::new();
        for r in &oldest {
            let (tenant, first): (Uuid, time::OffsetDateTime) = (r.get(0), r.get(1));
            let Some((plan, hold)) = info.get(&tenant) else {
                continue;
            };
            let Some(days) = self.inner.config.retention(plan) else {
                continue;
            };
            let cutoff = now - time::Duration::days(days as i64);
            if *hold || first >= cutoff {
                continue;
            }
            // The hold is read again, under the tenant row's lock, by `purge_one`.
            if let Some(n) = self.purge_one(db, catalog, tenant, cutoff, &actor).await? {
                out.push((tenant, n));
            }
        }
        Ok(out)
    }

    /// Purges one tenant's events older than `cutoff`, unless a legal hold is set (read
    /// under a share lock of its catalog row in the transaction that stores the anchor,
    /// so a hold set meanwhile either stops the purge or waits for that decision).
    async fn purge_one(
        &self,
        db: &mut Client,
        catalog: &mut Client,
        tenant: Uuid,
        cutoff: time::OffsetDateTime,
        actor: &Actor,
    ) -> Result<Option<u64>> {
        Ok(tenancy_audit::purge(
            db,
            catalog,
            tenant,
            cutoff,
            &self.inner.signer,
            actor,
            Some(NO_LEGAL_HOLD),
        )
        .await?
        .map(|p| p.removed))
    }
}

/// The purge's condition: the tenant exists and has no legal hold (row share-locked).
const NO_LEGAL_HOLD: &str =
    "SELECT NOT legal_hold FROM tenancy_catalog.tenants WHERE id = $1 FOR SHARE";
