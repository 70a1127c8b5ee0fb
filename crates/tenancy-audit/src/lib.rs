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
//!   kept outside the database. The same key signs documents the control plane hands
//!   out (a tenant's compliance report) under their own domain
//!   ([`Signer::sign_document`], [`verify_document`]).
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

use std::fmt::Write as _;
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
    append_jsonl, checkpoint, checkpoint_log, key_id, load_anchors, load_checkpoints,
    load_log_checkpoints, read_jsonl, sign_heads, store_checkpoint, store_checkpoint_in,
    verify_document, Checkpoint, Signer, DOCUMENT_DOMAIN,
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
/// the tenant database. Idempotent. The table's CHECK calls the C function of the
/// tenancy_context library (`tenancy.audit_event_valid_native`, extension version 1.2)
/// where the database has it, else the PL/pgSQL function with the same rules; run it again
/// after the bootstrap brought the C function to move the CHECK to it.
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

/// The columns an event's INSERT can name, in this order: the first four always, each
/// later one only when the event has a value for it.
const INSERT_COLUMNS: usize = 12;

/// A parameter of an event's INSERT.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// An event checked and ready to go into `log`'s table for one tenant: its INSERT (or
/// its tenancy.audit_append call) and the values their parameters borrow.
///
/// The INSERT names only the columns the event has a value for: an absent optional field
/// is the column's NULL without being bound, so the server checks, binds and projects
/// fewer parameters (each named column also costs a column-privilege check for the
/// runtime role). An application records events of a few shapes, so it prepares a few
/// statements per connection.
pub(crate) struct Insert<'a> {
    event: &'a Event,
    log: Log,
    tenant: uuid::Uuid,
    /// The stored names of the actor kind and the outcome.
    names: (&'static str, &'static str),
}

fn present<T: tokio_postgres::types::ToSql + Sync>(v: &Option<T>) -> Option<Param<'_>> {
    v.as_ref().map(|v| v as Param<'_>)
}

impl<'a> Insert<'a> {
    /// Refuses what the table would refuse ([`Event::check`]), else the INSERT of `event`
    /// into `log`'s chain of `tenant`.
    pub(crate) fn new(log: Log, tenant: uuid::Uuid, event: &'a Event) -> Result<Self, Error> {
        event.check()?;
        Ok(Insert {
            event,
            log,
            tenant,
            names: (event.actor.kind.as_str(), event.outcome.as_str()),
        })
    }

    /// The INSERT; its parameters are [`Insert::params`].
    pub(crate) fn sql(&self) -> String {
        let mut sql = String::with_capacity(256);
        sql.push_str("INSERT INTO ");
        sql.push_str(self.log.table());
        sql.push_str(" (");
        let mut n = 0;
        for (name, _) in self.columns().iter().filter(|(_, v)| v.is_some()) {
            if n > 0 {
                sql.push_str(", ");
            }
            sql.push_str(name);
            n += 1;
        }
        sql.push_str(") VALUES (");
        for i in 1..=n {
            if i > 1 {
                sql.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(sql, "${i}");
        }
        sql.push(')');
        sql
    }

    /// Every column an event has, with its value when it has one.
    fn columns(&self) -> [(&'static str, Option<Param<'_>>); INSERT_COLUMNS] {
        let e = self.event;
        [
            ("tenant_id", Some(&self.tenant)),
            ("actor_kind", Some(&self.names.0)),
            ("action", Some(&e.action)),
            ("outcome", Some(&self.names.1)),
            ("actor_subject", present(&e.actor.subject)),
            ("actor_key_id", present(&e.actor.key_id)),
            ("target", present(&e.target)),
            ("before", present(&e.before)),
            ("after", present(&e.after)),
            ("request_id", present(&e.request_id)),
            ("trace_id", present(&e.trace_id)),
            ("client_addr", present(&e.client_addr)),
        ]
    }

    /// The parameters of [`Insert::sql`]: the first `n` of the array.
    pub(crate) fn params(&self) -> ([Param<'_>; INSERT_COLUMNS], usize) {
        let mut out: [Param<'_>; INSERT_COLUMNS] = [&self.tenant; INSERT_COLUMNS];
        let mut n = 0;
        for value in self.columns().into_iter().filter_map(|(_, v)| v) {
            out[n] = value;
            n += 1;
        }
        (out, n)
    }
}

/// The call that appends an event to the tenant log where the database has
/// `tenancy.audit_append` (the tenancy_context extension from version 1.3): the same
/// insertion, checks and errors as [`Insert`]'s INSERT for the runtime role, without the
/// server's planner and executor (a fraction of the server's cost). Every field is bound,
/// NULL where the event has none, so an application prepares this one statement.
pub(crate) const APPEND_SQL: &str =
    "SELECT tenancy.audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// NULL parameters of [`APPEND_SQL`], by type.
static NO_TEXT: Option<&str> = None;
static NO_JSON: Option<&serde_json::Value> = None;
static NO_ADDR: Option<&IpAddr> = None;

fn or_null<'b, T: tokio_postgres::types::ToSql + Sync>(
    v: &'b Option<T>,
    null: Param<'static>,
) -> Param<'b> {
    match v {
        Some(v) => v,
        None => null,
    }
}

impl Insert<'_> {
    /// The parameters of [`APPEND_SQL`], in its order (that of [`Insert::columns`]).
    fn append_params(&self) -> [Param<'_>; INSERT_COLUMNS] {
        let e = self.event;
        [
            &self.tenant,
            &self.names.0,
            &e.action,
            &self.names.1,
            or_null(&e.actor.subject, &NO_TEXT),
            or_null(&e.actor.key_id, &NO_TEXT),
            or_null(&e.target, &NO_TEXT),
            or_null(&e.before, &NO_JSON),
            or_null(&e.after, &NO_JSON),
            or_null(&e.request_id, &NO_TEXT),
            or_null(&e.trace_id, &NO_TEXT),
            or_null(&e.client_addr, &NO_ADDR),
        ]
    }
}

/// Records `event` in `tx`, the transaction of the change it describes: it commits or
/// rolls back with it. The row-level security policy refuses an event for any tenant but
/// the transaction's. No lock beyond the inserted row is taken.
///
/// Where the database has `tenancy.audit_append` ([`TenantTx::has_audit_append`]) the
/// event goes through it (one statement of every event, with the INSERT's checks and
/// errors, at a fraction of its server cost), else through an INSERT naming the fields
/// the event has.
pub async fn record(tx: &mut TenantTx, event: &Event) -> Result<(), Error> {
    let insert = Insert::new(Log::Tenant, tx.tenant().as_uuid(), event)?;
    if tx.has_audit_append() {
        tx.execute(APPEND_SQL, &insert.append_params()).await?;
        return Ok(());
    }
    let (params, n) = insert.params();
    tx.execute(&insert.sql(), &params[..n]).await?;
    Ok(())
}

/// Records `event` as the last statement of `tx` and commits, in one round trip: the
/// event's statement and the COMMIT are sent together
/// ([`TenantTx::execute_and_commit`]). The same outcome as [`record`] then
/// `commit`: the event and the change both commit, or, if the event is refused or the
/// commit fails, neither does and the error is returned.
///
/// Use it when the event is the transaction's last statement, which it usually is (the
/// change, then its event, then the commit); an audited write then costs the same number
/// of round trips as the write alone.
pub async fn record_and_commit(tx: TenantTx, event: &Event) -> Result<(), Error> {
    let insert = Insert::new(Log::Tenant, tx.tenant().as_uuid(), event)?;
    if tx.has_audit_append() {
        tx.execute_and_commit(APPEND_SQL, &insert.append_params())
            .await?;
        return Ok(());
    }
    let (params, n) = insert.params();
    tx.execute_and_commit(&insert.sql(), &params[..n]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_names_the_fields_an_event_has_and_binds_as_many_parameters() {
        let tenant = uuid::Uuid::nil();
        let bare = Event::new(
            Actor {
                kind: ActorKind::System,
                subject: None,
                key_id: None,
            },
            "a.b",
        );
        let i = Insert::new(Log::Tenant, tenant, &bare).expect("insert");
        assert_eq!(
            i.sql(),
            "INSERT INTO tenancy.audit_events (tenant_id, actor_kind, action, outcome) \
             VALUES ($1, $2, $3, $4)"
        );
        assert_eq!(i.params().1, 4);
        let some = Event::new(Actor::new(ActorKind::User, "u"), "a.b")
            .after(serde_json::json!({}))
            .client_addr(IpAddr::from([192, 0, 2, 1]));
        let i = Insert::new(Log::Control, tenant, &some).expect("insert");
        assert_eq!(
            i.sql(),
            "INSERT INTO tenancy_catalog.audit_log (tenant_id, actor_kind, action, outcome, \
             actor_subject, after, client_addr) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        assert_eq!(i.params().1, 7);
        // The call binds every column, in the INSERT's order, NULL where the event has none.
        assert_eq!(APPEND_SQL.matches('$').count(), INSERT_COLUMNS);
        let all = i.append_params();
        let named = i.params();
        let text = |p: Param<'_>| format!("{p:?}");
        assert_eq!(text(all[0]), text(named.0[0]));
        assert_eq!(text(all[4]), text(named.0[4]), "actor_subject");
        assert_eq!(text(all[8]), text(named.0[5]), "after");
        assert_eq!(text(all[11]), text(named.0[6]), "client_addr");
        for absent in [5, 6, 7, 9, 10] {
            assert_eq!(text(all[absent]), "None", "column {absent}");
        }
        // A refused event makes no INSERT.
        assert!(Insert::new(Log::Tenant, tenant, &Event::new(bare.actor.clone(), "9")).is_err());
    }
}
