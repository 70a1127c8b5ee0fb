//! Tokens and bindings as an attacker meets them: harvested, replayed, left in logs or
//! activity views, made under hostile session settings or look-alike operators.

use tenancy_sdk::bootstrap;
use tenancy_sdk::TenantId;

use crate::context::count_tenant;
use crate::support::*;

/// A token of the kid the tests sign with, as it would appear inside any text.
const TOKEN_PREFIX: &str = "v1.test.";

/// While many transactions of tenant A run through the SDK (read-write, read-only, opened
/// by a statement, by `batch_execute` and by `client()`), a second runtime-role session
/// polls `pg_stat_activity`, which shows every session of its role, and never sees a token.
#[tokio::test]
async fn another_runtime_session_never_sees_a_token_in_pg_stat_activity() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 6);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        let spy = runtime_client(&db).await;
        let done = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for w in 0..6 {
            let pool = pool.clone();
            workers.push(tokio::spawn(async move {
                for i in 0..40 {
                    let mut tx = match (w + i) % 3 {
                        0 => pool.begin(a).await,
                        _ => pool.begin_read_only(a).await,
                    }
                    .expect("begin");
                    match i % 4 {
                        0 => {
                            tx.client().await.expect("client");
                            // Idle inside the transaction: its last query stays on show.
                            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        }
                        1 => tx
                            .batch_execute("SELECT 1 /* spied */")
                            .await
                            .expect("batch"),
                        _ => {}
                    }
                    let n: i64 = tx
                        .query_one("SELECT count(*) /* spied */ FROM customers", &[])
                        .await
                        .expect("count")
                        .get(0);
                    assert_eq!(n, 2);
                    tx.commit().await.expect("commit");
                }
            }));
        }
        let watcher = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let (mut polls, mut seen_sdk) = (0u32, 0u32);
                while !done.load(Ordering::Relaxed) {
                    let rows = spy
                        .query(
                            "SELECT coalesce(query, '') FROM pg_stat_activity \
                              WHERE pid <> pg_backend_pid() AND datname = current_database()",
                            &[],
                        )
                        .await
                        .expect("pg_stat_activity");
                    polls += 1;
                    for r in rows {
                        let q: String = r.get(0);
                        assert!(
                            !q.contains(TOKEN_PREFIX),
                            "{imp:?}: pg_stat_activity shows a token to another runtime session: {q}"
                        );
                        if q.contains("spied") || q.contains("tenancy.enter") {
                            seen_sdk += 1;
                        }
                    }
                }
                (polls, seen_sdk)
            })
        };
        for w in workers {
            w.await.expect("worker");
        }
        done.store(true, Ordering::Relaxed);
        let (polls, seen_sdk) = watcher.await.expect("watcher");
        assert!(
            polls > 10 && seen_sdk > 0,
            "{imp:?}: the spy saw too little to tell ({polls} polls, {seen_sdk} SDK statements)"
        );
    }
}

/// Injected SQL in tenant A's transaction ends it and opens one for B with a token of B
/// issued for the same connection before A's (one it could have seen earlier): refused on
/// both implementations, whether the token comes as a literal in one message or as a
/// parameter.
#[tokio::test]
async fn a_harvested_token_replayed_by_injected_sql_in_another_tenants_transaction_is_refused() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let (a, b) = (TenantId::new_random(), TenantId::new_random());
        seed(&pool, b, 2).await;
        for as_parameter in [false, true] {
            // A token of B for this connection, issued after the last opening and before A's.
            let issued = now_micros();
            let mut tx = pool.begin(a).await.expect("begin a");
            let pid: i32 = tx
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .expect("pid")
                .get(0);
            let harvested = key().sign(b, pid, issued, 60_000_000);
            let replay = if as_parameter {
                tx.batch_execute("COMMIT; BEGIN")
                    .await
                    .expect("commit, begin");
                tx.query_one("SELECT tenancy.enter($1)", &[&harvested.as_str()])
                    .await
                    .map(|_| ())
            } else {
                tx.batch_execute(&format!(
                    "COMMIT; BEGIN; SELECT tenancy.enter('{}')",
                    harvested.as_str()
                ))
                .await
            };
            if replay.is_ok() {
                let n: i64 = tx
                    .query_one("SELECT count(*) FROM customers", &[])
                    .await
                    .expect("count")
                    .get(0);
                panic!(
                    "{imp:?}: a replayed token of B opened B's rows to A's injected SQL ({n} rows)"
                );
            }
            let err = replay.expect_err("refused");
            // PL/pgSQL: the pool entered the connection with its session context, which
            // then takes no v1 token at all.
            let expected = match imp {
                bootstrap::ContextImpl::Native => "already used",
                bootstrap::ContextImpl::PlPgSql => "enters tenants with its session context",
            };
            assert!(
                format!("{err:?}").contains(expected),
                "{imp:?}, parameter {as_parameter}: {err:?}"
            );
            drop(tx);
        }
        assert_eq!(
            visible_tenants(&pool, b).await.len(),
            2,
            "{imp:?}: B's own transactions still work"
        );
    }
}

/// PL/pgSQL keeps the single-use mark in a session setting the runtime role can write. A
/// made-up mark (however high), or a genuine one copied from another connection, counts as
/// no mark: it locks nobody out, neither set in a session nor as a role default for every
/// new connection. What it can do is what RESET does (the residual documented in
/// runtime.sql): an unexpired token of this very backend, issued before the last one
/// accepted, is admitted again, on a connection that entered with tokens (the pool's
/// connections enter with the session context and take no v1 token). This test pins that
/// extent; no SQL can read a token (see the `pg_stat_activity` test).
#[tokio::test]
async fn plpgsql_a_made_up_or_copied_single_use_mark_locks_nobody_out() {
    let db = fresh_db_plpgsql().await;
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let pool = pool(&db, 1);
    seed(&pool, b, 2).await;
    let other = runtime_client(&db).await;
    enter_by_hand(&other, a)
        .await
        .expect("enter on another connection");
    other.batch_execute("COMMIT").await.expect("commit");
    let copied: String = other
        .query_one("SELECT current_setting('tenancy.last_issued')", &[])
        .await
        .expect("mark")
        .get(0);
    let huge = format!("9223372036854775807.{}", "0".repeat(64));
    for mark in [huge.clone(), copied, String::new()] {
        let mut tx = pool.begin(a).await.expect("begin a");
        tx.batch_execute(&format!("SET tenancy.last_issued = '{mark}'"))
            .await
            .expect("write the mark");
        tx.commit().await.expect("commit");
        assert_eq!(
            visible_tenants(&pool, b).await.len(),
            2,
            "the SDK's next opening after mark {mark:?}"
        );
        // The extent: with the mark gone, an unexpired token of this backend issued before
        // the last accepted one enters again.
        let issued = now_micros() - 1_000;
        let mut tx = pool.begin(a).await.expect("begin a");
        let pid: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let older = key().sign(b, pid, issued, 60_000_000);
        let replay = tx
            .batch_execute(&format!(
                "COMMIT; SET tenancy.last_issued = '{mark}'; BEGIN; SELECT tenancy.enter('{}')",
                older.as_str()
            ))
            .await;
        // The pool's connections enter with the session context, which takes no v1 token
        // at all: the residual is gone there.
        let err = replay.expect_err("a v1 token on a session-context connection");
        assert!(
            format!("{err:?}").contains("enters tenants with its session context"),
            "{err:?}"
        );
        let _ = tx.rollback().await;
        // On a connection that entered with tokens only (no session context), the
        // residual remains: a reset mark re-admits an older token of the same backend.
        let plain = runtime_client(&db).await;
        enter_by_hand(&plain, a).await.expect("enter a by hand");
        let pid: i32 = plain
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let older = key().sign(b, pid, now_micros() - 1_000_000, 60_000_000);
        plain
            .batch_execute(&format!(
                "COMMIT; SET tenancy.last_issued = '{mark}'; BEGIN; SELECT tenancy.enter('{}')",
                older.as_str()
            ))
            .await
            .expect("a reset mark re-admits an older token of the same backend");
        plain.batch_execute("ROLLBACK").await.expect("rollback");
    }
    // A role default for every new connection of this database (set here by the superuser;
    // the runtime role may set its own defaults).
    let su = db.connect_superuser().await.expect("superuser");
    su.batch_execute(&format!(
        "ALTER ROLE {} IN DATABASE {} SET tenancy.last_issued = '{huge}'",
        tenancy_sdk::bootstrap::RUNTIME_ROLE,
        db.name
    ))
    .await
    .expect("role default");
    let fresh = tenancy_sdk::TenantPool::new(
        db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
        key(),
        Default::default(),
    )
    .expect("pool");
    assert_eq!(visible_tenants(&fresh, b).await.len(), 2);
    assert_eq!(visible_tenants(&fresh, b).await.len(), 2);
}

/// A refused opening is logged with its statement (`log_min_error_statement`): the
/// statement shows a placeholder, never the token. Tokens that expire before they arrive
/// make every opening of a pool fail, on both implementations and through every way a
/// transaction opens.
#[tokio::test]
async fn a_refused_opening_leaves_no_token_in_the_server_log() {
    for (imp, db) in fresh_dbs().await {
        if imp == bootstrap::ContextImpl::PlPgSql {
            refused_session_openings_leave_no_secret_in_the_server_log(&db).await;
            continue;
        }
        let expired = tenancy_sdk::TenantPool::new(
            db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
            key(),
            tenancy_sdk::PoolOptions {
                max_size: 1,
                token_ttl: std::time::Duration::from_micros(1),
                ..Default::default()
            },
        )
        .expect("pool");
        let a = TenantId::new_random();
        for way in 0..4 {
            let mut tx = match way {
                0 | 3 => expired.begin(a).await,
                _ => expired.begin_read_only(a).await,
            }
            .expect("begin");
            let refused = match way {
                0 | 1 => tx.query("SELECT 1", &[]).await.map(|_| ()),
                2 => tx.batch_execute("SELECT 1").await,
                _ => tx.client().await.map(|_| ()),
            };
            let err = refused.expect_err("an expired token");
            assert!(
                format!("{err:?}").contains("expired"),
                "{imp:?} way {way}: {err:?}"
            );
            drop(tx);
        }
        let log = std::fs::read_to_string(db.cluster.data_dir().join("tenancy-postgres.log"))
            .expect("server log");
        assert!(
            log.contains("tenant context token has expired"),
            "{imp:?}: the refusals are in the log"
        );
        assert!(
            !log.contains(&format!("{TOKEN_PREFIX}{a}")),
            "{imp:?}: a token of the SDK is in the server log"
        );
    }
}

/// The PL/pgSQL pool enters with its session context, whose secrets do not expire: here
/// injected SQL burns the secret of the pool's one connection before every opening, with
/// a refusal of its own. The connection is retired at once, the next tenant's opening of
/// every kind runs on a new one without an error, and the log shows no bound value.
async fn refused_session_openings_leave_no_secret_in_the_server_log(
    db: &tenancy_pg::testing::TestDb,
) {
    let pool = pool(db, 1);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, b, 1).await;
    for way in 0..4 {
        let mut tx = pool.begin(a).await.expect("begin a");
        tx.query("SELECT 1", &[]).await.expect("a");
        let burnt = tx
            .batch_execute("SELECT tenancy.enter_session(0, 0, 0, 0)")
            .await;
        assert!(
            format!("{burnt:?}").contains("wrong session secret"),
            "{burnt:?}"
        );
        drop(tx);
        let mut tx = match way {
            0 | 3 => pool.begin(b).await,
            _ => pool.begin_read_only(b).await,
        }
        .expect("begin b");
        match way {
            0 | 1 => tx.query("SELECT 1", &[]).await.map(|_| ()),
            2 => tx.batch_execute("SELECT 1").await,
            _ => tx.client().await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("way {way}: a burnt secret failed the next tenant: {e:?}"));
        drop(tx);
    }
    let log = std::fs::read_to_string(db.cluster.data_dir().join("tenancy-postgres.log"))
        .expect("server log");
    assert!(
        log.contains("wrong session secret"),
        "the refusals are in the log"
    );
    assert!(
        !log.contains("parameters: $1"),
        "bound values are in the server log"
    );
    for line in log
        .lines()
        .filter(|l| l.contains("STATEMENT:") && l.contains("tenancy.enter_session("))
    {
        assert!(
            line.contains("enter_session($1") || line.contains("enter_session(0, 0, 0, 0)"),
            "a session opening with its values in the log: {line}"
        );
    }
}

/// At `extra_float_digits = -15` the text of a float epoch is `2e+09`: a binding that
/// hashed it would stay valid on its backend for years, with no token. The binding hashes
/// the transaction start's binary value, so a binding copied into a later transaction
/// sees nothing.
#[tokio::test]
async fn plpgsql_a_binding_made_at_extra_float_digits_minus_15_is_void_in_the_next_transaction() {
    let db = fresh_db_plpgsql().await;
    let pool = pool(&db, 1);
    let b = TenantId::new_random();
    seed(&pool, b, 2).await;
    let conn = runtime_client(&db).await;
    conn.batch_execute("SET extra_float_digits = -15")
        .await
        .expect("set");
    enter_by_hand(&conn, b).await.expect("enter b");
    let binding: String = conn
        .query_one("SELECT current_setting('tenancy.ctx')", &[])
        .await
        .expect("ctx")
        .get(0);
    conn.batch_execute("COMMIT").await.expect("commit");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    conn.batch_execute("BEGIN").await.expect("begin");
    conn.query_one("SELECT set_config('tenancy.ctx', $1, true)", &[&binding])
        .await
        .expect("set");
    assert_eq!(
        count_tenant(&conn, b).await,
        0,
        "a binding from an earlier transaction still grants B's rows"
    );
    conn.batch_execute("ROLLBACK").await.expect("rollback");
}

/// Session settings at hostile values, on both implementations: the SDK's openings still
/// work under each (set at connection start), and on a plain connection under each a
/// binding copied from an earlier transaction sees nothing and a used token is refused,
/// also after the setting changes back.
#[tokio::test]
async fn hostile_session_settings_neither_break_the_context_nor_keep_a_binding_or_token_valid() {
    let mut settings: Vec<(&str, &str)> = vec![
        ("extra_float_digits", "-15"),
        ("extra_float_digits", "3"),
        ("DateStyle", "SQL, DMY"),
        ("DateStyle", "German"),
        ("TimeZone", "Pacific/Kiritimati"),
        ("TimeZone", "+14"),
        ("TimeZone", "-12"),
        ("IntervalStyle", "sql_standard"),
        ("bytea_output", "escape"),
        ("search_path", "pg_temp, public"),
        ("search_path", "public, pg_catalog"),
        ("search_path", "tenancy, public, pg_catalog"),
        ("standard_conforming_strings", "off"),
    ];
    for (imp, db) in fresh_dbs().await {
        let probe = runtime_client(&db).await;
        // lc_numeric where the server has another locale than C.
        for locale in ["de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "C.UTF-8"] {
            if probe
                .batch_execute(&format!("SET lc_numeric = '{locale}'"))
                .await
                .is_ok()
            {
                settings.push(("lc_numeric", locale));
                break;
            }
        }
        let b = TenantId::new_random();
        seed(&pool(&db, 1), b, 2).await;
        for (name, value) in &settings {
            // Through the SDK, the setting given at connection start.
            let mut cfg = db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE);
            cfg.options(format!("-c {name}={}", value.replace(' ', "\\ ")));
            let hostile =
                tenancy_sdk::TenantPool::new(cfg, key(), Default::default()).expect("pool");
            let a = TenantId::new_random();
            seed(&hostile, a, 3).await;
            for read_only in [false, true] {
                let mut tx = if read_only {
                    hostile.begin_read_only(a).await
                } else {
                    hostile.begin(a).await
                }
                .expect("begin");
                let row = tx
                    .query_one(
                        "SELECT count(*), current_setting($1) FROM customers",
                        &[name],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{imp:?} {name}={value}: {e:?}"));
                tx.commit().await.expect("commit");
                assert_eq!(row.get::<_, i64>(0), 3, "{imp:?} {name}={value}");
            }

            // On a plain connection: a binding and a token of one transaction, replayed in
            // the next one under the same value and under the default.
            let conn = runtime_client(&db).await;
            conn.query_one("SELECT set_config($1, $2, false)", &[name, value])
                .await
                .unwrap_or_else(|e| panic!("{name}={value}: {e:?}"));
            let token = enter_by_hand(&conn, b).await.expect("enter b");
            assert_eq!(count_tenant(&conn, b).await, 2, "{imp:?} {name}={value}");
            let binding: Option<String> = conn
                .query_one("SELECT current_setting('tenancy.ctx', true)", &[])
                .await
                .expect("ctx")
                .get(0);
            conn.batch_execute("COMMIT").await.expect("commit");
            for reset in [false, true] {
                if reset {
                    conn.batch_execute(&format!("RESET {name}"))
                        .await
                        .expect("reset");
                }
                conn.batch_execute("BEGIN").await.expect("begin");
                conn.query_one(
                    "SELECT set_config('tenancy.ctx', $1, true)",
                    &[&binding.clone().unwrap_or_default()],
                )
                .await
                .expect("set");
                assert_eq!(
                    count_tenant(&conn, b).await,
                    0,
                    "{imp:?} {name}={value}: a binding of an earlier transaction (reset {reset})"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
                let err = conn
                    .batch_execute(&format!("BEGIN; SELECT tenancy.enter('{token}')"))
                    .await
                    .expect_err("a used token");
                assert!(
                    format!("{err:?}").contains("already used"),
                    "{imp:?} {name}={value} (reset {reset}): {err:?}"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
            }
        }
    }
}

/// When the connection's statement cache spills, tokio-postgres closes the dropped
/// statements with requests of their own (Close, Sync) written just before the next
/// statement. The opening must still share that statement's Sync: in front of a Close it
/// would end with the Close's Sync (an implicit read-only transaction's context gone
/// before its statement ran, so the statement saw nothing) and a refusal would be reported
/// against the Close instead of the statement.
#[tokio::test]
async fn an_opening_behind_closed_statements_still_carries_the_context() {
    for (imp, db) in fresh_dbs().await {
        let pool = pool(&db, 1);
        let a = TenantId::new_random();
        seed(&pool, a, 2).await;
        for read_only in [true, false] {
            // More distinct statements than the cache holds (256), each in its own
            // transaction so each is opened by its own first statement.
            for i in 0..300 {
                let mut tx = if read_only {
                    pool.begin_read_only(a).await
                } else {
                    pool.begin(a).await
                }
                .expect("begin");
                let sql = format!("SELECT count(*) FROM customers WHERE {i} = {i}");
                let n: i64 = tx
                    .query_one(&sql, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{imp:?} read-only {read_only}, {i}: {e:?}"))
                    .get(0);
                tx.commit().await.expect("commit");
                assert_eq!(n, 2, "{imp:?} read-only {read_only}, statement {i}");
            }
        }
        // A refused opening behind closed statements is reported as the refusal. (The
        // PL/pgSQL session context has no expiry, and its refused opening moves to
        // another connection: see session_context.)
        if imp == bootstrap::ContextImpl::PlPgSql {
            continue;
        }
        let expired = tenancy_sdk::TenantPool::new(
            db.config_as(tenancy_sdk::bootstrap::RUNTIME_ROLE),
            key(),
            tenancy_sdk::PoolOptions {
                max_size: 1,
                token_ttl: std::time::Duration::from_micros(1),
                ..Default::default()
            },
        )
        .expect("pool");
        // The pool's own start-up statement is closed just before the first opening.
        let mut tx = expired.begin(a).await.expect("begin");
        let err = tx.query("SELECT 1", &[]).await.expect_err("expired");
        assert!(
            matches!(&err, tenancy_sdk::Error::ContextRefused(_))
                && format!("{err:?}").contains("expired"),
            "{imp:?}: {err:?}"
        );
    }
}

/// The context functions carry no `SET search_path`: every name in them is
/// schema-qualified. A session whose search_path puts a schema of look-alike operators
/// and functions ahead of pg_catalog (`=`/`<>` that always agree, a constant `sha256`)
/// changes nothing: a forged MAC, a token of another connection and a made-up binding are
/// still refused or see nothing, and a genuine token still enters.
#[tokio::test]
async fn look_alike_operators_ahead_of_pg_catalog_do_not_reach_the_context_functions() {
    for (imp, db) in fresh_dbs().await {
        let su = db.connect_superuser().await.expect("superuser");
        su.batch_execute(&format!(
            "CREATE SCHEMA lure; \
             CREATE FUNCTION lure.agree(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true'; \
             CREATE FUNCTION lure.differ_not(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false'; \
             CREATE FUNCTION lure.differ_not(bytea, bytea) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT false'; \
             CREATE FUNCTION lure.sha256(bytea) RETURNS bytea LANGUAGE sql IMMUTABLE AS 'SELECT ''\\x00''::bytea'; \
             CREATE FUNCTION lure.length(text) RETURNS integer LANGUAGE sql IMMUTABLE AS 'SELECT 101'; \
             CREATE OPERATOR lure.= (LEFTARG = text, RIGHTARG = text, FUNCTION = lure.agree); \
             CREATE OPERATOR lure.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = lure.differ_not); \
             CREATE OPERATOR lure.<> (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = lure.differ_not); \
             GRANT USAGE ON SCHEMA lure TO {role}; \
             GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA lure TO {role}",
            role = bootstrap::RUNTIME_ROLE
        ))
        .await
        .expect("lure schema");
        let pool = pool(&db, 1);
        let b = TenantId::new_random();
        seed(&pool, b, 2).await;
        let conn = runtime_client(&db).await;
        conn.batch_execute("SET search_path = lure, pg_catalog, public")
            .await
            .expect("search_path");
        let pid: i32 = conn
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        let genuine = key().sign(b, pid, now_micros(), 60_000_000);
        let forged = format!(
            "{}{}",
            &genuine.as_str()[..genuine.as_str().len() - 64],
            "f".repeat(64)
        );
        let elsewhere = key().sign(b, pid + 1, now_micros(), 60_000_000);
        for (token, refusal) in [
            (forged.as_str(), "does not verify"),
            (elsewhere.as_str(), "another connection"),
        ] {
            for enter in ["tenancy.enter", "tenancy.enter_read_only"] {
                let err = conn
                    .batch_execute(&format!("BEGIN; SELECT {enter}('{token}')"))
                    .await
                    .expect_err("a token that must be refused");
                assert!(
                    format!("{err:?}").contains(refusal),
                    "{imp:?} {enter}: {err:?}"
                );
                conn.batch_execute("ROLLBACK").await.expect("rollback");
            }
        }
        conn.batch_execute("BEGIN").await.expect("begin");
        conn.query_one(
            "SELECT set_config('tenancy.ctx', $1, true)",
            &[&format!("{b}.{}", "0".repeat(64))],
        )
        .await
        .expect("made-up binding");
        assert_eq!(
            count_tenant(&conn, b).await,
            0,
            "{imp:?}: a made-up binding"
        );
        conn.batch_execute("ROLLBACK").await.expect("rollback");
        conn.batch_execute(&format!(
            "BEGIN; SELECT tenancy.enter('{}')",
            genuine.as_str()
        ))
        .await
        .unwrap_or_else(|e| panic!("{imp:?}: a genuine token under the lure: {e:?}"));
        assert_eq!(
            count_tenant(&conn, b).await,
            2,
            "{imp:?}: the genuine context"
        );
        conn.batch_execute("COMMIT").await.expect("commit");
    }
}
