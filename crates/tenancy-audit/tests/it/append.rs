//! `tenancy.audit_append` (the tenancy_context extension from version 1.3), the C insertion
//! `record` uses where the database has it: the row it stores is the INSERT's, and it
//! refuses what the runtime role's INSERT refuses (another tenant, no context, missing
//! fields, invalid ones, a read-only transaction, missing privileges), and a table whose
//! shape it does not know.

use tenancy_audit::{Actor, ActorKind, Event};
use tenancy_core::TenantId;
use tokio_postgres::types::ToSql;

use crate::support::{self, event, fresh_db, owner, pool};

const CALL: &str = "SELECT tenancy.audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

/// Whether the database has tenancy.audit_append. Where it has not, the server's default
/// version of the extension predates 1.3 (its installed extension files are older) and
/// the native context is not required (CI installs the current extension).
async fn has_append(owner: &tokio_postgres::Client) -> bool {
    let row = owner
        .query_one(
            "SELECT to_regprocedure('tenancy.audit_append(uuid,text,text,text,text,text,text,jsonb,jsonb,text,text,inet)') IS NOT NULL, \
                    coalesce((SELECT pg_catalog.string_to_array(default_version, '.')::int[] >= '{1,3}' \
                                FROM pg_catalog.pg_available_extensions WHERE name = 'tenancy_context'), false)",
            &[],
        )
        .await
        .expect("looking for tenancy.audit_append");
    let (has, offered): (bool, bool) = (row.get(0), row.get(1));
    if !has {
        assert!(
            !offered,
            "the server's default tenancy_context is 1.3 or later, but the bootstrap did not bring tenancy.audit_append"
        );
        assert!(
            !tenancy_pg::native_required(),
            "TENANCY_REQUIRE_NATIVE=1 and no tenancy.audit_append"
        );
        eprintln!("this server's tenancy_context predates 1.3: record uses the INSERT");
    }
    has
}

fn sqlstate(err: &tokio_postgres::Error) -> String {
    err.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// The twelve arguments of an event of `tenant` with the given actor kind and action.
struct Args {
    tenant: Option<uuid::Uuid>,
    kind: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    target: Option<String>,
    after: Option<serde_json::Value>,
    request_id: Option<String>,
}

impl Args {
    fn new(tenant: TenantId) -> Self {
        Args {
            tenant: Some(tenant.as_uuid()),
            kind: Some("user".into()),
            action: Some("note.create".into()),
            outcome: Some("success".into()),
            target: Some("note:1".into()),
            after: Some(serde_json::json!({ "id": 1 })),
            request_id: Some("req-1".into()),
        }
    }

    async fn call(&self, client: &tokio_postgres::Client) -> Result<u64, tokio_postgres::Error> {
        let none: Option<String> = None;
        let no_json: Option<serde_json::Value> = None;
        let no_addr: Option<std::net::IpAddr> = None;
        let params: [&(dyn ToSql + Sync); 12] = [
            &self.tenant,
            &self.kind,
            &self.action,
            &self.outcome,
            &none,
            &none,
            &self.target,
            &no_json,
            &self.after,
            &self.request_id,
            &none,
            &no_addr,
        ];
        client.execute(CALL, &params).await
    }
}

/// Every stored column but the database's own (seq, xid, occurred_at) as text.
const ROW: &str =
    "SELECT tenant_id::text, actor_kind, actor_subject, actor_key_id, action, target, \
    before::text, after::text, request_id, trace_id, client_addr::text, outcome, \
    chain_pos, prev_hash, hash, sealed_at::text \
    FROM tenancy.audit_events WHERE tenant_id = $1 ORDER BY seq";

#[tokio::test]
async fn record_appends_the_row_the_insert_would_store() {
    let db = fresh_db().await;
    let mut owner = owner(&db).await;
    let native = has_append(&owner).await;
    let pool = pool(&db, 1);
    let t = TenantId::new_random();
    let mut full = event("note.create", 7)
        .before(serde_json::json!({ "id": 7, "body": null }))
        .trace_id("trace-7");
    full.actor = Actor {
        kind: ActorKind::ApiKey,
        subject: Some("svc".into()),
        key_id: Some("key-1".into()),
    };
    let bare = Event::new(
        Actor {
            kind: ActorKind::System,
            subject: None,
            key_id: None,
        },
        "tick",
    );
    for e in [&full, &bare] {
        // Through record (tenancy.audit_append where the database has it)…
        let mut tx = pool.begin(t).await.expect("begin");
        assert_eq!(tx.has_audit_append(), native);
        tenancy_audit::record(&mut tx, e).await.expect("record");
        tx.commit().await.expect("commit");
        // … and through the INSERT the owner sends for the tenant: the same row.
        let tx = owner.transaction().await.expect("owner tx");
        let (sql, n) = owner_insert(e);
        let params = owner_params(t, e);
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|b| b.as_ref() as &(dyn ToSql + Sync))
            .collect();
        assert_eq!(params.len(), n);
        tx.execute(sql.as_str(), &params)
            .await
            .expect("owner insert");
        tx.commit().await.expect("commit");
    }
    let rows = owner.query(ROW, &[&t.as_uuid()]).await.expect("rows");
    assert_eq!(rows.len(), 4);
    for pair in rows.chunks(2) {
        for c in 0..16 {
            assert_eq!(
                pair[0].get::<_, Option<RawText>>(c).map(|v| v.0),
                pair[1].get::<_, Option<RawText>>(c).map(|v| v.0),
                "column {c}"
            );
        }
    }
    assert_eq!(
        rows[0].get::<_, Option<String>>(7).as_deref(),
        Some(r#"{"id": 7, "body": "note 7"}"#)
    );
    assert_eq!(rows[2].get::<_, Option<String>>(2), None);
    // Sealed and verified like any other.
    support::seal_all(&mut owner).await;
    let verdicts =
        tenancy_audit::verify_database(&owner, None, None, &[], &tenancy_audit::Trust::AnyKey)
            .await
            .expect("verify");
    assert!(
        verdicts.iter().all(|v| v.intact() && v.sealed == 4),
        "{verdicts:?}"
    );
}

/// Any column's value (its type and binary form), for comparing rows column by column.
struct RawText(String);

impl<'a> tokio_postgres::types::FromSql<'a> for RawText {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawText(format!("{ty}:{raw:?}")))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

fn owner_insert(e: &Event) -> (String, usize) {
    let mut cols = vec!["tenant_id", "actor_kind", "action", "outcome"];
    let optional = [
        ("actor_subject", e.actor.subject.is_some()),
        ("actor_key_id", e.actor.key_id.is_some()),
        ("target", e.target.is_some()),
        ("before", e.before.is_some()),
        ("after", e.after.is_some()),
        ("request_id", e.request_id.is_some()),
        ("trace_id", e.trace_id.is_some()),
        ("client_addr", e.client_addr.is_some()),
    ];
    cols.extend(optional.iter().filter(|(_, has)| *has).map(|(c, _)| *c));
    let values: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    (
        format!(
            "INSERT INTO tenancy.audit_events ({}) VALUES ({})",
            cols.join(", "),
            values.join(", ")
        ),
        cols.len(),
    )
}

fn owner_params(t: TenantId, e: &Event) -> Vec<Box<dyn ToSql + Sync + Send>> {
    let mut p: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(t.as_uuid()),
        Box::new(e.actor.kind.as_str()),
        Box::new(e.action.clone()),
        Box::new(e.outcome.as_str()),
    ];
    let texts = [&e.actor.subject, &e.actor.key_id, &e.target];
    p.extend(
        texts
            .into_iter()
            .flatten()
            .map(|v| Box::new(v.clone()) as _),
    );
    p.extend(
        [&e.before, &e.after]
            .into_iter()
            .flatten()
            .map(|v| Box::new(v.clone()) as _),
    );
    p.extend(
        [&e.request_id, &e.trace_id]
            .into_iter()
            .flatten()
            .map(|v| Box::new(v.clone()) as _),
    );
    p.extend(e.client_addr.iter().map(|v| Box::new(*v) as _));
    p
}

#[tokio::test]
async fn audit_append_refuses_what_the_runtime_roles_insert_refuses() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    if !has_append(&owner).await {
        return;
    }
    let pool = pool(&db, 1);
    let (t, other) = (TenantId::new_random(), TenantId::new_random());

    // (arguments, the SQLSTATE expected)
    let mut cases: Vec<(Args, &str, &str)> = Vec::new();
    let mut a = Args::new(t);
    a.tenant = Some(other.as_uuid());
    cases.push((a, "42501", "another tenant's id"));
    let mut a = Args::new(t);
    a.tenant = None;
    cases.push((a, "42501", "no tenant"));
    let mut a = Args::new(t);
    a.kind = None;
    cases.push((a, "23502", "no actor kind"));
    let mut a = Args::new(t);
    a.action = None;
    cases.push((a, "23502", "no action"));
    let mut a = Args::new(t);
    a.outcome = None;
    cases.push((a, "23502", "no outcome"));
    let mut a = Args::new(t);
    a.kind = Some("root".into());
    cases.push((a, "23514", "an unknown actor kind"));
    let mut a = Args::new(t);
    a.outcome = Some("maybe".into());
    cases.push((a, "23514", "an unknown outcome"));
    let mut a = Args::new(t);
    a.action = Some("a".repeat(129));
    cases.push((a, "23514", "an action of 129 bytes"));
    let mut a = Args::new(t);
    a.action = Some("drop table".into());
    cases.push((a, "23514", "an action with a space"));
    let mut a = Args::new(t);
    a.action = Some("é".into());
    cases.push((a, "23514", "a non-ASCII action"));
    let mut a = Args::new(t);
    a.target = Some("x".repeat(1025));
    cases.push((a, "23514", "a target of 1025 bytes"));
    let mut a = Args::new(t);
    a.request_id = Some("r".repeat(100_000));
    cases.push((a, "23514", "a huge request id"));
    for (args, code, what) in &cases {
        let mut tx = pool.begin(t).await.expect("begin");
        let err = args
            .call(tx.client().await.expect("client"))
            .await
            .expect_err(what);
        assert_eq!(sqlstate(&err), *code, "{what}: {err:?}");
        drop(tx);
    }
    // A huge `after` is stored (TOASTed) and read back whole.
    let mut big = Args::new(t);
    big.after = Some(serde_json::json!({ "blob": "z".repeat(3_000_000) }));
    let mut tx = pool.begin(t).await.expect("begin");
    big.call(tx.client().await.expect("client"))
        .await
        .expect("a huge after");
    tx.commit().await.expect("commit");
    let n: i32 = owner
        .query_one(
            "SELECT octet_length(after->>'blob') FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&t.as_uuid()],
        )
        .await
        .expect("read back")
        .get(0);
    assert_eq!(n, 3_000_000);

    // No context: a runtime-role connection that entered no tenant.
    let plain = support::connect(db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE)).await;
    let err = Args::new(t).call(&plain).await.expect_err("no context");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    // The owner role has no context either (it inserts with the INSERT).
    let err = Args::new(t).call(&owner).await.expect_err("owner");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    // A read-only transaction, with the tenant entered.
    let mut tx = pool.begin(t).await.expect("begin");
    tx.batch_execute("SET TRANSACTION READ ONLY")
        .await
        .expect("read only");
    let client = tx.client().await.expect("client");
    let err = Args::new(t).call(client).await.expect_err("read-only");
    assert_eq!(sqlstate(&err), "25006", "{err:?}");
    drop(tx);

    // Nothing but the one huge event was stored.
    let stored: i64 = owner
        .query_one("SELECT count(*) FROM tenancy.audit_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn audit_append_needs_the_insert_privilege_and_the_table_it_knows() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    if !has_append(&owner).await {
        return;
    }
    let pool = pool(&db, 1);
    let t = TenantId::new_random();
    // One call in a transaction of its own, committed when it succeeds.
    let call = || {
        let pool = &pool;
        async move {
            let mut tx = pool.begin(t).await.expect("begin");
            let r = Args::new(t).call(tx.client().await.expect("client")).await;
            if r.is_ok() {
                tx.commit().await.expect("commit");
            }
            r
        }
    };
    call().await.expect("the installed table");

    // Without INSERT on a column it gives a value: refused, as the INSERT would be.
    owner
        .batch_execute("REVOKE INSERT (target) ON tenancy.audit_events FROM tenancy_app")
        .await
        .expect("revoke");
    let err = call().await.expect_err("no privilege on target");
    assert_eq!(sqlstate(&err), "42501", "{err:?}");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
    owner
        .batch_execute("GRANT INSERT (target) ON tenancy.audit_events TO tenancy_app")
        .await
        .expect("grant");
    call().await.expect("granted again");

    // A table changed in a way it does not know: refused (never an insertion that skips
    // a trigger, a constraint or an index), and accepted again once undone.
    let changes = [
        (
            "CREATE FUNCTION tenancy.audit_seen() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'; \
             CREATE TRIGGER audit_seen BEFORE INSERT ON tenancy.audit_events FOR EACH ROW EXECUTE FUNCTION tenancy.audit_seen()",
            "DROP TRIGGER audit_seen ON tenancy.audit_events",
        ),
        (
            "ALTER TABLE tenancy.audit_events ADD CONSTRAINT audit_short CHECK (octet_length(action) < 500)",
            "ALTER TABLE tenancy.audit_events DROP CONSTRAINT audit_short",
        ),
        (
            "CREATE INDEX audit_lower ON tenancy.audit_events (lower(action))",
            "DROP INDEX tenancy.audit_lower",
        ),
        (
            "ALTER TABLE tenancy.audit_events ADD COLUMN extra text DEFAULT 'x'",
            "ALTER TABLE tenancy.audit_events DROP COLUMN extra",
        ),
    ];
    for (change, undo) in changes {
        owner.batch_execute(change).await.expect(change);
        let err = call().await.expect_err(change);
        assert_eq!(sqlstate(&err), "55000", "{change}: {err:?}");
        owner.batch_execute(undo).await.expect(undo);
        call().await.expect(undo);
    }
    // An index on plain columns gets each appended row.
    owner
        .batch_execute("CREATE INDEX audit_by_action ON tenancy.audit_events (action, tenant_id)")
        .await
        .expect("index");
    call().await.expect("with one more index");
    let rows = owner
        .simple_query(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; \
             SELECT count(*) FROM tenancy.audit_events WHERE action = 'note.create'",
        )
        .await
        .expect("through the index");
    let through_index = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    let stored: i64 = owner
        .query_one("SELECT count(*) FROM tenancy.audit_events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 2 + changes.len() as i64 + 1);
    assert_eq!(through_index, Some(stored.to_string()));
}
