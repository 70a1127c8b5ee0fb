//! A per-tenant, tamper-evident audit log on PostgreSQL.
//!
//! - [`install`] creates `tenancy.audit_events` in a tenant database (as the owner role):
//!   a tenant table (row-level security on the signed context) that the runtime role may
//!   insert into and read, never update, delete or truncate.
//! - [`record`] appends an [`Event`] inside a [`TenantTx`], so the event exists exactly when
//!   the change it describes committed. Recording takes no per-tenant lock: concurrent
//!   transactions of one tenant do not wait for each other.
//! - [`seal`] (owner role, one pass at a time per database) links events into one hash
//!   chain per tenant, in insertion order, taking only events whose inserting transaction
//!   has ended (see [`seal`] for why none is ever passed over).
//! - [`Signer`] signs [`Checkpoint`]s (Ed25519: tenant, chain position, head hash, time);
//!   [`checkpoint`] stores them in the catalog and can append them to a JSON-lines file
//!   kept outside the database.
//! - [`verify_chain`] recomputes a chain and names the first event that was modified,
//!   deleted, inserted or reordered, and a tail cut off behind a checkpoint;
//!   [`verify_database`] runs it on a live database, [`export`] / [`read_export`] carry
//!   everything it needs to an offline check.
//!
//! - [`record_control`] appends to the control plane's own log
//!   (`tenancy_catalog.audit_log`, [`Log::Control`]) in the catalog transaction of a
//!   control-plane change; it is sealed, checkpointed and verified like a tenant log, under
//!   its own hash and signature domains.
//! - [`purge`] removes a prefix of a tenant's chain older than its retention behind a
//!   signed anchor, recorded in the control log; verification starts the remaining chain
//!   from the anchor.
//!
//! It does not decide what an application audits, which retention applies or whether a
//! legal hold stops a purge (the control plane does), nor encrypt event values.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tenancy_sdk::TenantTx;

mod chain;
mod checkpoint;
mod control;
mod export;
mod log;
mod purge;
mod seal;
mod verify;

pub use chain::{event_hash, event_hash_in, Recorded, StoredEvent, GENESIS};
pub use checkpoint::{
    append_jsonl, checkpoint, checkpoint_log, load_anchors, load_checkpoints, load_log_checkpoints,
    read_jsonl, sign_heads, store_checkpoint, store_checkpoint_in, Checkpoint, Signer,
};
pub use control::{digest, record_control};
pub use export::{export, read_export, Export};
pub use log::{Log, PLATFORM};
pub use purge::{purge, Purged};
pub use seal::{seal, seal_log, SealReport};
pub use verify::{
    load_events, load_log_events, load_page, verify_chain, verify_chain_in, verify_database,
    verify_log, TamperKind, Tampering, Trust, Verdict,
};

/// The SQL that creates the audit table, its policies and its append-only trigger; run it
/// as the owner role after the tenancy runtime is installed, e.g. with [`install`]. Its
/// columns are the catalog's [`tenancy_catalog::AUDIT_EVENT_COLUMNS`], those of the
/// control plane's log.
pub fn audit_sql() -> String {
    include_str!("../sql/audit.sql").replace(
        tenancy_catalog::AUDIT_EVENT_COLUMNS_MARKER,
        tenancy_catalog::AUDIT_EVENT_COLUMNS.trim_end(),
    )
}

/// The SQL that creates the catalog's audit tables (`tenancy_catalog.audit_checkpoints`,
/// `audit_anchors` and the control plane's log `audit_log`): the catalog's migration
/// `0011_audit`, which is idempotent; run it as the owner role on the catalog
/// database, e.g. with [`install_catalog`].
pub const CHECKPOINTS_SQL: &str = tenancy_catalog::AUDIT_MIGRATION_SQL;

/// Installs (or updates) the catalog's audit tables. `catalog` must be connected
/// as the owner role to the catalog database, after the catalog migrations. Idempotent.
pub async fn install_catalog(
    catalog: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    catalog.batch_execute(CHECKPOINTS_SQL).await
}

/// Installs (or updates) the audit table. `owner` must be connected as the owner role to
/// the tenant database. Idempotent.
pub async fn install(owner: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    owner.batch_execute(&audit_sql()).await
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An event or argument was refused before reaching the database.
    #[error("invalid audit input: {0}")]
    Invalid(String),
    /// A statement inside the tenant transaction failed.
    #[error("recording the audit event: {0}")]
    Tx(#[from] tenancy_sdk::Error),
    /// A database call failed.
    #[error("{what}: {source}")]
    Db {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A key, checkpoint or export file is malformed.
    #[error("{0}")]
    Format(String),
}

pub(crate) fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Db { what, source }
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A signed-in user of the tenant.
    User,
    /// An API key.
    ApiKey,
    /// A platform administrator.
    Admin,
    /// A background worker.
    Worker,
    /// The system itself (scheduler, control plane).
    System,
}

impl ActorKind {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Admin => "admin",
            ActorKind::Worker => "worker",
            ActorKind::System => "system",
        }
    }
}

/// How the action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and failed.
    Failure,
    /// It was refused (permission, policy).
    Denied,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

/// The actor of an event: a kind, the subject (user id, admin principal, worker name) and
/// the API key id when one was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// Who, in the application's terms.
    pub subject: Option<String>,
    /// The API key that authenticated it, if any.
    pub key_id: Option<String>,
}

impl Actor {
    /// An actor of this kind and subject.
    pub fn new(kind: ActorKind, subject: impl Into<String>) -> Self {
        Actor {
            kind,
            subject: Some(subject.into()),
            key_id: None,
        }
    }
}

/// One audit event, as the application describes it. The tenant is the transaction's;
/// the time, the sequence and the chain fields are the database's.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Event {
    /// Who.
    pub actor: Actor,
    /// What, e.g. `invoice.create` (a letter, then letters, digits and `_ . : / -`, at
    /// most 128).
    pub action: String,
    /// On what, e.g. `invoice:2f1c…`.
    pub target: Option<String>,
    /// The state before (or its digest), as the application chooses.
    pub before: Option<serde_json::Value>,
    /// The state after (or its digest).
    pub after: Option<serde_json::Value>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// The trace it ran in.
    pub trace_id: Option<String>,
    /// The client's address.
    pub client_addr: Option<IpAddr>,
    /// How it ended.
    pub outcome: Outcome,
}

impl Event {
    /// A successful `action` by `actor`; set the other fields with the builder methods.
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Event {
            actor,
            action: action.into(),
            target: None,
            before: None,
            after: None,
            request_id: None,
            trace_id: None,
            client_addr: None,
            outcome: Outcome::Success,
        }
    }

    /// Sets the target.
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the state before.
    pub fn before(mut self, before: serde_json::Value) -> Self {
        self.before = Some(before);
        self
    }

    /// Sets the state after.
    pub fn after(mut self, after: serde_json::Value) -> Self {
        self.after = Some(after);
        self
    }

    /// Sets the request id.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the trace id.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }

    /// Sets the client address.
    pub fn client_addr(mut self, addr: IpAddr) -> Self {
        self.client_addr = Some(addr);
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Refuses what the table would refuse, with a message naming the field.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let a = self.action.as_bytes();
        let ok = !a.is_empty()
            && a.len() <= 128
            && a[0].is_ascii_alphabetic()
            && a.iter()
                .all(|&c| c.is_ascii_alphanumeric() || b"_.:/-".contains(&c));
        if !ok {
            return Err(Error::Invalid(format!(
                "action {:?} must start with a letter and have at most 128 letters, digits and `_ . : / -`",
                self.action
            )));
        }
        let limits: [(&str, &Option<String>, usize); 5] = [
            ("actor subject", &self.actor.subject, 1024),
            ("actor key id", &self.actor.key_id, 256),
            ("target", &self.target, 1024),
            ("request id", &self.request_id, 256),
            ("trace id", &self.trace_id, 256),
        ];
        for (name, value, max) in limits {
            if let Some(v) = value {
                if v.len() > max {
                    return Err(Error::Invalid(format!(
                        "{name} is {} bytes; at most {max}",
                        v.len()
                    )));
                }
                if v.contains('\0') {
                    return Err(Error::Invalid(format!("{name} contains a NUL character")));
                }
            }
        }
        Ok(())
    }
}

/// An event checked and ready to go into `log`'s table for one tenant: the INSERT and
/// the values its parameters borrow.
pub(crate) struct Insert<'a> {
    /// The INSERT; its parameters are [`Insert::params`].
    pub(crate) sql: String,
    event: &'a Event,
    tenant: uuid::Uuid,
    /// The stored names of the actor kind and the outcome.
    names: (&'static str, &'static str),
}

impl<'a> Insert<'a> {
    /// Refuses what the table would refuse ([`Event::check`]), else the INSERT of `event`
    /// into `log`'s chain of `tenant`.
    pub(crate) fn new(log: Log, tenant: uuid::Uuid, event: &'a Event) -> Result<Self, Error> {
        event.check()?;
        Ok(Insert {
            sql: format!(
                "INSERT INTO {} \
                 (tenant_id, actor_kind, actor_subject, actor_key_id, action, target, before, \
                  after, request_id, trace_id, client_addr, outcome) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                log.table()
            ),
            event,
            tenant,
            names: (event.actor.kind.as_str(), event.outcome.as_str()),
        })
    }

    /// The parameters of [`Insert::sql`].
    pub(crate) fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        let e = self.event;
        [
            &self.tenant,
            &self.names.0,
            &e.actor.subject,
            &e.actor.key_id,
            &e.action,
            &e.target,
            &e.before,
            &e.after,
            &e.request_id,
            &e.trace_id,
            &e.client_addr,
            &self.names.1,
        ]
    }
}

/// Records `event` in `tx`, the transaction of the change it describes: it commits or
/// rolls back with it. The row-level security policy refuses an event for any tenant but
/// the transaction's. No lock beyond the inserted row is taken.
pub async fn record(tx: &mut TenantTx, event: &Event) -> Result<(), Error> {
    let insert = Insert::new(Log::Tenant, tx.tenant().as_uuid(), event)?;
    tx.execute(&insert.sql, &insert.params()).await?;
    Ok(())
}

/// Records `event` as the last statement of `tx` and commits, in one round trip: the
/// event's INSERT and the COMMIT are sent together
/// ([`TenantTx::execute_and_commit`]). The same outcome as [`record`] then
/// `commit`: the event and the change both commit, or, if the event is refused or the
/// commit fails, neither does and the error is returned.
///
/// Use it when the event is the transaction's last statement, which it usually is (the
/// change, then its event, then the commit); an audited write then costs the same number
/// of round trips as the write alone.
pub async fn record_and_commit(tx: TenantTx, event: &Event) -> Result<(), Error> {
    let insert = Insert::new(Log::Tenant, tx.tenant().as_uuid(), event)?;
    tx.execute_and_commit(&insert.sql, &insert.params()).await?;
    Ok(())
}
