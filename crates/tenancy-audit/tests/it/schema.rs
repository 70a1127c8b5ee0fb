//! The tenant log's table refuses exactly what the shared column checks refuse: its one
//! CHECK (a function of the row: the C one of the tenancy_context library where the
//! database has it, else the PL/pgSQL one; both tested) against the control log's table,
//! which keeps the catalog fragment's column checks; the C and PL/pgSQL functions give the
//! same verdict on every case; and an installed table of the fragment's shape, or of the
//! other function's CHECK, is brought to the right CHECK once.

use tenancy_pg::testing::TestDb;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::support::{fresh_db, owner};

/// The C check, as the bootstrap creates it from the library (`bootstrap::NATIVE_SQL`): for a
/// database whose server offers an older tenancy_context extension without it.
const CREATE_NATIVE_CHECK: &str = "
CREATE FUNCTION tenancy.audit_event_valid_native(e record) RETURNS boolean
    LANGUAGE C IMMUTABLE PARALLEL SAFE AS 'tenancy_context', 'tenancy_audit_event_valid';
ALTER FUNCTION tenancy.audit_event_valid_native(record) OWNER TO tenancy_owner;
GRANT EXECUTE ON FUNCTION tenancy.audit_event_valid_native(record) TO tenancy_app;";

/// The C check leaves the database (as `runtime.sql` takes functions out of the
/// extension), with the CHECK that calls it.
const DROP_NATIVE_CHECK: &str = "
ALTER TABLE tenancy.audit_events DROP CONSTRAINT IF EXISTS audit_events_valid;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                WHERE e.extname = 'tenancy_context' AND d.deptype = 'e'
                  AND d.objid = 'tenancy.audit_event_valid_native(record)'::regprocedure) THEN
        ALTER EXTENSION tenancy_context DROP FUNCTION tenancy.audit_event_valid_native(record);
    END IF;
END
$$;
DROP FUNCTION tenancy.audit_event_valid_native(record);";

async fn has_native_check(c: &Client) -> bool {
    c.query_one(
        "SELECT to_regprocedure('tenancy.audit_event_valid_native(record)') IS NOT NULL",
        &[],
    )
    .await
    .expect("look up the C check")
    .get(0)
}

/// The definition of the table's CHECK.
async fn check_def(c: &Client) -> String {
    c.query_one(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
          WHERE conrelid = 'tenancy.audit_events'::regclass AND conname = 'audit_events_valid'",
        &[],
    )
    .await
    .expect("the CHECK")
    .get(0)
}

/// The oid of the table's CHECK (a new one each time it is made again).
async fn check_oid(c: &Client) -> u32 {
    c.query_one(
        "SELECT oid FROM pg_constraint WHERE conname = 'audit_events_valid' \
           AND conrelid = 'tenancy.audit_events'::regclass",
        &[],
    )
    .await
    .expect("constraint oid")
    .get(0)
}

/// A fresh database whose events' CHECK calls the C function (`native`) or the PL/pgSQL
/// one, chosen by the install itself from what the database has; `None` for `native` when
/// this build has no library for the server.
async fn db_with_check(native: bool) -> Option<TestDb> {
    let db = fresh_db().await;
    if native && tenancy_pg::native_context_library(db.cluster.major_version()).is_none() {
        assert!(
            !tenancy_pg::native_required(),
            "TENANCY_REQUIRE_NATIVE=1, but this build has no native library for the server"
        );
        eprintln!("no native library for this server: the C check is not tested here");
        return None;
    }
    let su = db.connect_superuser().await.expect("superuser");
    if has_native_check(&su).await != native {
        su.batch_execute(if native {
            CREATE_NATIVE_CHECK
        } else {
            DROP_NATIVE_CHECK
        })
        .await
        .expect("switch the C check");
    }
    tenancy_audit::install(&owner(&db).await)
        .await
        .expect("install");
    let def = check_def(&su).await;
    let expected = if native {
        "CHECK (tenancy.audit_event_valid_native(audit_events.*))"
    } else {
        "CHECK (tenancy.audit_event_valid(audit_events.*))"
    };
    assert_eq!(def, expected);
    Some(db)
}

/// The columns a case sets, in this order.
const COLUMNS: &str = "tenant_id, actor_kind, actor_subject, actor_key_id, action, target, \
                       request_id, trace_id, outcome, chain_pos, prev_hash, hash";

/// A valid unsealed event's values for [`COLUMNS`] after `tenant_id`, with `changes`
/// (column, SQL expression) applied.
fn values(changes: &[(&str, &str)]) -> Vec<String> {
    let mut v: Vec<(&str, String)> = [
        ("actor_kind", "'user'"),
        ("actor_subject", "'user-1'"),
        ("actor_key_id", "NULL"),
        ("action", "'note.create'"),
        ("target", "'note:1'"),
        ("request_id", "'req-1'"),
        ("trace_id", "NULL"),
        ("outcome", "'success'"),
        ("chain_pos", "NULL"),
        ("prev_hash", "NULL"),
        ("hash", "NULL"),
    ]
    .into_iter()
    .map(|(c, e)| (c, e.to_owned()))
    .collect();
    for (column, expr) in changes {
        let slot = v
            .iter_mut()
            .find(|(c, _)| c == column)
            .unwrap_or_else(|| panic!("no column {column}"));
        slot.1 = (*expr).to_owned();
    }
    v.into_iter().map(|(_, e)| e).collect()
}

/// Inserts one row into `table` (each case in a tenant of its own, so a chain position
/// never meets another case's); `Ok` or the SQLSTATE it was refused with.
async fn insert(owner: &Client, table: &str, changes: &[(&str, &str)]) -> Result<(), SqlState> {
    let sql = format!(
        "INSERT INTO {table} ({COLUMNS}) VALUES ('{}', {})",
        Uuid::new_v4(),
        values(changes).join(", ")
    );
    owner
        .batch_execute(&sql)
        .await
        .map_err(|e| e.code().cloned().unwrap_or_else(|| panic!("{sql}: {e}")))
}

const HASH: &str = "'\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea";
const HASH_31: &str = "'\\x00000000000000000000000000000000000000000000000000000000000000'::bytea";
const HASH_33: &str =
    "'\\x000000000000000000000000000000000000000000000000000000000000000000'::bytea";

/// Events (changes to a valid one) and whether the rules accept them.
fn cases() -> Vec<(bool, Vec<(&'static str, &'static str)>)> {
    let ok = true;
    let refused = false;
    vec![
        (ok, vec![]),
        // Actor kinds and outcomes: the fixed sets.
        (ok, vec![("actor_kind", "'api_key'")]),
        (ok, vec![("actor_kind", "'admin'")]),
        (ok, vec![("actor_kind", "'worker'")]),
        (ok, vec![("actor_kind", "'system'")]),
        (refused, vec![("actor_kind", "'robot'")]),
        (refused, vec![("actor_kind", "'User'")]),
        (ok, vec![("outcome", "'failure'")]),
        (ok, vec![("outcome", "'denied'")]),
        (refused, vec![("outcome", "'maybe'")]),
        (refused, vec![("outcome", "''")]),
        // Actions: a letter, then letters, digits and `_ . : / -`, at most 128.
        (ok, vec![("action", "'a'")]),
        (ok, vec![("action", "'Z9_.:/-x'")]),
        (ok, vec![("action", "repeat('a', 128)")]),
        (refused, vec![("action", "repeat('a', 129)")]),
        (refused, vec![("action", "''")]),
        (refused, vec![("action", "'9lives'")]),
        (refused, vec![("action", "'_x'")]),
        (refused, vec![("action", "'has space'")]),
        (refused, vec![("action", "'a' || chr(10)")]),
        (refused, vec![("action", "'caf' || chr(233)")]),
        (refused, vec![("action", "'a+b'")]),
        // Bounded texts, in bytes (é is two).
        (ok, vec![("actor_subject", "repeat('s', 1024)")]),
        (refused, vec![("actor_subject", "repeat('s', 1025)")]),
        (ok, vec![("actor_subject", "repeat(chr(233), 512)")]),
        (refused, vec![("actor_subject", "repeat(chr(233), 513)")]),
        (ok, vec![("actor_subject", "NULL"), ("target", "NULL")]),
        (ok, vec![("actor_key_id", "repeat('k', 256)")]),
        (refused, vec![("actor_key_id", "repeat('k', 257)")]),
        (ok, vec![("target", "repeat('t', 1024)")]),
        (refused, vec![("target", "repeat('t', 1025)")]),
        (ok, vec![("request_id", "repeat('r', 256)")]),
        (refused, vec![("request_id", "repeat('r', 257)")]),
        (ok, vec![("trace_id", "repeat('0', 256)")]),
        (refused, vec![("trace_id", "repeat('0', 257)")]),
        // One bad field among good ones, and among empty ones.
        (
            refused,
            vec![("actor_key_id", "repeat('k', 257)"), ("trace_id", "NULL")],
        ),
        (
            refused,
            vec![
                ("actor_subject", "NULL"),
                ("target", "NULL"),
                ("request_id", "NULL"),
                ("trace_id", "repeat('0', 257)"),
            ],
        ),
        // Chain fields: all or none, a position from 1, 32-byte hashes.
        (
            ok,
            vec![("chain_pos", "1"), ("prev_hash", HASH), ("hash", HASH)],
        ),
        (
            refused,
            vec![("chain_pos", "0"), ("prev_hash", HASH), ("hash", HASH)],
        ),
        (refused, vec![("chain_pos", "1")]),
        (refused, vec![("prev_hash", HASH), ("hash", HASH)]),
        (refused, vec![("chain_pos", "1"), ("hash", HASH)]),
        (refused, vec![("chain_pos", "1"), ("prev_hash", HASH)]),
        (refused, vec![("hash", HASH)]),
        (
            refused,
            vec![("chain_pos", "1"), ("prev_hash", HASH), ("hash", HASH_31)],
        ),
        (
            refused,
            vec![("chain_pos", "1"), ("prev_hash", HASH_33), ("hash", HASH)],
        ),
        (
            refused,
            vec![
                ("chain_pos", "1"),
                ("prev_hash", HASH),
                ("hash", HASH),
                ("action", "''"),
            ],
        ),
    ]
}

#[tokio::test]
async fn the_tenant_log_refuses_exactly_what_the_column_checks_refuse() {
    for native in [false, true] {
        let Some(db) = db_with_check(native).await else {
            continue;
        };
        refuses_what_the_column_checks_refuse(&owner(&db).await).await;
    }
}

async fn refuses_what_the_column_checks_refuse(owner: &Client) {
    let cases = cases();
    for (accepted, changes) in &cases {
        let control = insert(owner, "tenancy_catalog.audit_log", changes).await;
        let tenant = insert(owner, "tenancy.audit_events", changes).await;
        assert_eq!(tenant, control, "{changes:?}");
        if *accepted {
            assert_eq!(tenant, Ok(()), "{changes:?}");
        } else {
            assert_eq!(tenant, Err(SqlState::CHECK_VIOLATION), "{changes:?}");
        }
    }

    // The sealer's UPDATE is held to the same rules: the append-only trigger lets a
    // first sealing through, and the check refuses malformed chain fields.
    for (accepted, set) in [
        (
            false,
            format!("chain_pos = 1, prev_hash = {HASH}, hash = {HASH_31}"),
        ),
        (
            false,
            format!("chain_pos = 0, prev_hash = {HASH}, hash = {HASH}"),
        ),
        (false, format!("chain_pos = 1, hash = {HASH}")),
        (
            true,
            format!("chain_pos = 1, prev_hash = {HASH}, hash = {HASH}"),
        ),
    ] {
        let mut outcomes = Vec::new();
        for table in ["tenancy_catalog.audit_log", "tenancy.audit_events"] {
            let tenant = Uuid::new_v4();
            owner
                .batch_execute(&format!(
                    "INSERT INTO {table} ({COLUMNS}) VALUES ('{tenant}', {})",
                    values(&[]).join(", ")
                ))
                .await
                .expect("insert an unsealed event");
            let r = owner
                .batch_execute(&format!(
                    "UPDATE {table} SET {set} WHERE tenant_id = '{tenant}'"
                ))
                .await
                .map_err(|e| e.code().cloned());
            outcomes.push(r);
        }
        assert_eq!(outcomes[0], outcomes[1], "{set}");
        if accepted {
            assert_eq!(outcomes[1], Ok(()), "{set}");
        } else {
            assert_eq!(outcomes[1], Err(Some(SqlState::CHECK_VIOLATION)), "{set}");
        }
    }
}

/// The table's constraints but its NOT NULLs (which PostgreSQL 18 lists as constraints).
async fn constraints(owner: &Client) -> Vec<(String, String)> {
    owner
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
              WHERE conrelid = 'tenancy.audit_events'::regclass AND contype <> 'n' ORDER BY conname",
            &[],
        )
        .await
        .expect("constraints")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// A table created with the fragment's constraints (as installed before the table had
/// its own CHECK) keeps its events and gets the CHECK and the partial unique index on
/// the next install; later installs leave them as they are.
#[tokio::test]
async fn install_brings_a_table_of_the_fragments_shape_to_one_check() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    let tenant = Uuid::new_v4();
    owner
        .batch_execute(&format!(
            "DROP TABLE tenancy.audit_events CASCADE;
             CREATE TABLE tenancy.audit_events ({});
             INSERT INTO tenancy.audit_events ({COLUMNS}) VALUES ('{tenant}', {});
             INSERT INTO tenancy.audit_events ({COLUMNS}) VALUES ('{tenant}', {});",
            tenancy_catalog::AUDIT_EVENT_COLUMNS,
            values(&[]).join(", "),
            values(&[("chain_pos", "1"), ("prev_hash", HASH), ("hash", HASH)]).join(", "),
        ))
        .await
        .expect("a table of the fragment's shape");
    assert!(constraints(&owner).await.len() > 5);

    tenancy_audit::install(&owner).await.expect("install");
    let after = constraints(&owner).await;
    let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["audit_events_valid"], "{after:?}");
    // Without a key, rows are identified by all their columns for logical replication.
    let identity: i8 = owner
        .query_one(
            "SELECT relreplident::\"char\" FROM pg_class WHERE oid = 'tenancy.audit_events'::regclass",
            &[],
        )
        .await
        .expect("replica identity")
        .get(0);
    assert_eq!(identity as u8, b'f');
    let first = check_oid(&owner).await;
    let index: String = owner
        .query_one(
            "SELECT pg_get_indexdef('tenancy.audit_events_chain_pos_key'::regclass)",
            &[],
        )
        .await
        .expect("index")
        .get(0);
    assert!(
        index.starts_with("CREATE UNIQUE INDEX") && index.contains("WHERE (chain_pos IS NOT NULL)"),
        "{index}"
    );
    let count: i64 = owner
        .query_one(
            "SELECT count(*) FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 2);

    // Installing again changes nothing (no new constraint, no revalidation).
    tenancy_audit::install(&owner).await.expect("install again");
    assert_eq!(check_oid(&owner).await, first);
    assert_eq!(constraints(&owner).await, after);
    // A second sealed event at the same position is refused by the partial index.
    let err = owner
        .batch_execute(&format!(
            "INSERT INTO tenancy.audit_events ({COLUMNS}) VALUES ('{tenant}', {})",
            values(&[("chain_pos", "1"), ("prev_hash", HASH), ("hash", HASH)]).join(", ")
        ))
        .await
        .expect_err("a second event at position 1");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
}

/// The C function and the PL/pgSQL one give the same verdict on every case, on rows the
/// table's NOT NULL columns would not let through, and on no row at all; a row of another
/// shape is an error for the C function, never a pass.
#[tokio::test]
async fn the_c_and_plpgsql_checks_agree_on_every_case() {
    let Some(db) = db_with_check(true).await else {
        return;
    };
    let owner = owner(&db).await;
    // The table's columns without its constraints, so that every case can be a row.
    owner
        .batch_execute("CREATE TEMP TABLE cases AS SELECT * FROM tenancy.audit_events WITH NO DATA")
        .await
        .expect("cases table");
    let mut all = cases();
    all.extend([
        (true, vec![("actor_kind", "NULL")]),
        (true, vec![("outcome", "NULL")]),
        (true, vec![("action", "NULL")]),
        (
            true,
            vec![
                ("action", "NULL"),
                ("actor_kind", "NULL"),
                ("outcome", "NULL"),
            ],
        ),
        (false, vec![("action", "NULL"), ("actor_kind", "'robot'")]),
        (false, vec![("outcome", "NULL"), ("action", "'a b'")]),
        (
            false,
            vec![("chain_pos", "-1"), ("prev_hash", HASH), ("hash", HASH)],
        ),
        (
            true,
            vec![
                ("chain_pos", "9223372036854775807"),
                ("prev_hash", HASH),
                ("hash", HASH),
            ],
        ),
        (
            false,
            vec![("action", "'a' || chr(45) || chr(47) || chr(127)")],
        ),
        (false, vec![("action", "'Ab' || chr(91)")]),
        (false, vec![("action", "'Ab' || chr(96)")]),
        (false, vec![("action", "'Ab' || chr(64)")]),
        (true, vec![("action", "'zZ09_.:/-'")]),
        (false, vec![("action", "'a' || chr(44)")]),
    ]);
    for (accepted, changes) in &all {
        owner
            .batch_execute(&format!(
                "TRUNCATE cases; INSERT INTO cases ({COLUMNS}) VALUES ('{}', {})",
                Uuid::new_v4(),
                values(changes).join(", ")
            ))
            .await
            .expect("a case");
        let row = owner
            .query_one(
                "SELECT tenancy.audit_event_valid(ROW(c.*)::tenancy.audit_events), \
                        tenancy.audit_event_valid_native(ROW(c.*)::tenancy.audit_events) FROM cases c",
                &[],
            )
            .await
            .expect("both verdicts");
        let (plpgsql, c): (bool, bool) = (row.get(0), row.get(1));
        assert_eq!(plpgsql, *accepted, "PL/pgSQL on {changes:?}");
        assert_eq!(c, *accepted, "C on {changes:?}");
    }
    let row = owner
        .query_one(
            "SELECT tenancy.audit_event_valid(NULL::tenancy.audit_events), \
                    tenancy.audit_event_valid_native(NULL::tenancy.audit_events)",
            &[],
        )
        .await
        .expect("verdicts on no row");
    assert_eq!((row.get::<_, bool>(0), row.get::<_, bool>(1)), (true, true));
    owner
        .batch_execute(
            "CREATE TEMP TABLE other (actor_kind text, outcome text, action varchar); \
             CREATE TEMP TABLE narrow AS SELECT tenant_id, actor_kind, outcome, action \
               FROM tenancy.audit_events WITH NO DATA; \
             INSERT INTO narrow VALUES (gen_random_uuid(), 'user', 'success', 'a.b')",
        )
        .await
        .expect("tables of other shapes");
    for other in [
        "ROW(1, 'x')",
        "ROW('user'::text, 'success'::text, 'a'::varchar)::pg_temp.other",
        "(SELECT n FROM pg_temp.narrow n)",
    ] {
        let err = owner
            .query_one(
                &format!("SELECT tenancy.audit_event_valid_native({other})"),
                &[],
            )
            .await
            .expect_err("a row of another shape");
        assert_eq!(
            err.code(),
            Some(&SqlState::DATATYPE_MISMATCH),
            "{other}: {err}"
        );
    }
}

/// A table installed while the database had only the PL/pgSQL check gets the C one at the
/// next install once the database has it (the extension updated after the table was
/// made), keeping its events; installs in between and after change nothing.
#[tokio::test]
async fn install_moves_the_check_to_the_c_function_once_the_database_has_it() {
    let Some(db) = db_with_check(false).await else {
        return;
    };
    if tenancy_pg::native_context_library(db.cluster.major_version()).is_none() {
        return;
    }
    let owner = owner(&db).await;
    let su = db.connect_superuser().await.expect("superuser");
    let tenant = Uuid::new_v4();
    owner
        .batch_execute(&format!(
            "INSERT INTO tenancy.audit_events ({COLUMNS}) VALUES ('{tenant}', {})",
            values(&[]).join(", ")
        ))
        .await
        .expect("an event");
    let plpgsql = check_oid(&owner).await;
    tenancy_audit::install(&owner).await.expect("install again");
    assert_eq!(check_oid(&owner).await, plpgsql, "nothing to change");

    su.batch_execute(CREATE_NATIVE_CHECK)
        .await
        .expect("the C check");
    tenancy_audit::install(&owner).await.expect("install");
    assert_eq!(
        check_def(&owner).await,
        "CHECK (tenancy.audit_event_valid_native(audit_events.*))"
    );
    let native = check_oid(&owner).await;
    assert_ne!(native, plpgsql);
    tenancy_audit::install(&owner).await.expect("install again");
    assert_eq!(check_oid(&owner).await, native, "nothing to change");
    let count: i64 = owner
        .query_one(
            "SELECT count(*) FROM tenancy.audit_events WHERE tenant_id = $1",
            &[&tenant],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
    assert_eq!(
        insert(&owner, "tenancy.audit_events", &[("outcome", "'maybe'")]).await,
        Err(SqlState::CHECK_VIOLATION)
    );
    assert_eq!(insert(&owner, "tenancy.audit_events", &[]).await, Ok(()));
}

/// A tenant's events are read through the two partial indexes (sealed by position,
/// unsealed by seq), never by scanning the table: it has no index on its tenant alone.
#[tokio::test]
async fn a_tenants_events_are_read_through_the_partial_indexes() {
    let db = fresh_db().await;
    let owner = owner(&db).await;
    owner
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");
    let tenant = Uuid::new_v4();
    // The query of `load_events`.
    let plan: Vec<String> = owner
        .query(
            &format!(
                "EXPLAIN (COSTS OFF) \
                 SELECT * FROM tenancy.audit_events WHERE tenant_id = '{tenant}' AND chain_pos IS NOT NULL \
                 UNION ALL \
                 SELECT * FROM tenancy.audit_events WHERE tenant_id = '{tenant}' AND chain_pos IS NULL \
                 ORDER BY chain_pos NULLS LAST, seq"
            ),
            &[],
        )
        .await
        .expect("plan")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("audit_events_chain_pos_key"), "{plan}");
    assert!(plan.contains("audit_events_unsealed_idx"), "{plan}");
    assert!(tenancy_audit::load_events(&owner, tenant)
        .await
        .expect("load")
        .is_empty());
}
