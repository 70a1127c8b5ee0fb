//! Isolation between tenants through every CRUD path, as the runtime role.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::Rng;
use tenancy_sdk::TenantId;
use tokio_postgres::error::SqlState;

use crate::support::*;

#[tokio::test]
async fn each_tenant_sees_and_changes_only_its_own_rows() {
    let db = fresh_db().await;
    let pool = pool(&db, 4);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    seed(&pool, a, 3).await;
    let b_ids = seed(&pool, b, 2).await;

    assert_eq!(visible_tenants(&pool, a).await, vec![a.as_uuid(); 3]);
    assert_eq!(visible_tenants(&pool, b).await, vec![b.as_uuid(); 2]);

    // A reads B's row by primary key: nothing.
    let mut tx = pool.begin(a).await.expect("begin");
    assert!(tx
        .query_opt("SELECT name FROM customers WHERE id = $1", &[&b_ids[0]])
        .await
        .expect("select")
        .is_none());
    // UPDATE and DELETE without WHERE touch only A's rows.
    assert_eq!(
        tx.execute("UPDATE customers SET name = 'renamed by a'", &[])
            .await
            .expect("update"),
        3
    );
    // Targeting B's row by id affects nothing.
    assert_eq!(
        tx.execute(
            "UPDATE customers SET name = 'x' WHERE id = $1",
            &[&b_ids[0]]
        )
        .await
        .expect("update"),
        0
    );
    assert_eq!(
        tx.execute("DELETE FROM customers WHERE id = $1", &[&b_ids[1]])
            .await
            .expect("delete"),
        0
    );
    assert_eq!(
        tx.execute("DELETE FROM customers", &[])
            .await
            .expect("delete"),
        3
    );
    tx.commit().await.expect("commit");

    let mut tx = pool.begin(b).await.expect("begin");
    let rows = tx
        .query("SELECT name FROM customers ORDER BY name", &[])
        .await
        .expect("select");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        vec!["customer 0".to_string(), "customer 1".to_string()]
    );
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn update_that_moves_a_row_to_another_tenant_is_refused() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let a_ids = seed(&pool, a, 2).await;
    for sql in [
        "UPDATE customers SET tenant_id = $1 WHERE id = $2",
        "UPDATE customers SET tenant_id = $1",
    ] {
        let mut tx = pool.begin(a).await.expect("begin");
        let err = if sql.contains("$2") {
            tx.execute(sql, &[&b.as_uuid(), &a_ids[0]]).await
        } else {
            tx.execute(sql, &[&b.as_uuid()]).await
        }
        .expect_err("moving a row must fail");
        assert_eq!(
            err.sqlstate(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{err}"
        );
        drop(tx);
    }
    assert!(visible_tenants(&pool, b).await.is_empty());
    assert_eq!(visible_tenants(&pool, a).await.len(), 2);
}

#[tokio::test]
async fn insert_with_a_foreign_tenant_id_is_refused() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let mut tx = pool.begin(a).await.expect("begin");
    let err = tx
        .execute(
            "INSERT INTO customers (tenant_id, email, name) VALUES ($1, 'x@y', 'planted')",
            &[&b.as_uuid()],
        )
        .await
        .expect_err("insert for another tenant must fail");
    assert_eq!(err.sqlstate(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    // The failed transaction cannot be committed by accident.
    assert!(matches!(
        tx.commit().await,
        Err(tenancy_sdk::Error::Aborted)
    ));
    assert!(visible_tenants(&pool, b).await.is_empty());
}

#[tokio::test]
async fn unique_and_foreign_key_conflicts_reveal_nothing_about_other_tenants() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let b_ids = seed(&pool, b, 1).await;

    // Same email as B's customer: keys include tenant_id, so no collision, no oracle.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute(
        "INSERT INTO customers (email, name) VALUES ($1, 'mine')",
        &[&format!("c0@{b}.example")],
    )
    .await
    .expect("A may use an email B also uses");
    tx.commit().await.expect("commit");

    // Referencing B's customer fails exactly like referencing an id that does not exist.
    let mut errors = Vec::new();
    for target in [b_ids[0], uuid::Uuid::new_v4()] {
        let mut tx = pool.begin(a).await.expect("begin");
        let err = tx
            .execute(
                "INSERT INTO invoices (customer_id, amount_cents) VALUES ($1, 100)",
                &[&target],
            )
            .await
            .expect_err("foreign key must fail");
        assert_eq!(err.sqlstate(), Some(&SqlState::FOREIGN_KEY_VIOLATION));
        let tokio_err = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<tokio_postgres::Error>())
            .expect("db error");
        let dbe = tokio_err.as_db_error().expect("db error");
        // RLS suppresses the row values in the detail; nothing names B or its data.
        let detail = dbe.detail().unwrap_or_default().to_owned();
        assert!(
            !detail.contains(&b.to_string()),
            "detail leaks B's tenant id: {detail}"
        );
        errors.push((
            dbe.message().replace(&target.to_string(), "<id>"),
            detail
                .replace(&target.to_string(), "<id>")
                .replace(&a.to_string(), "<a>"),
        ));
        drop(tx);
    }
    assert_eq!(
        errors[0], errors[1],
        "B's existing row must be indistinguishable from a missing one"
    );
}

#[tokio::test]
async fn without_context_nothing_is_visible_and_nothing_can_be_written() {
    let db = fresh_db().await;
    let pool = pool(&db, 2);
    let a = TenantId::new_random();
    seed(&pool, a, 3).await;
    let client = runtime_client(&db).await;

    // A connection that just served tenant A (committed), then runs without a context.
    enter_by_hand(&client, a).await.expect("enter");
    let n: i64 = client
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 3);
    client.batch_execute("COMMIT").await.expect("commit");

    for in_tx in [false, true] {
        if in_tx {
            client.batch_execute("BEGIN").await.expect("begin");
        }
        let n: i64 = client
            .query_one("SELECT count(*) FROM customers", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0, "no context must mean no rows (in_tx={in_tx})");
        let ctx: Option<uuid::Uuid> = client
            .query_one("SELECT tenancy.current_tenant_id()", &[])
            .await
            .expect("ctx")
            .get(0);
        assert_eq!(ctx, None);
        if in_tx {
            client.batch_execute("ROLLBACK").await.expect("rollback");
        }
    }
    let err = client
        .execute(
            "INSERT INTO customers (email, name) VALUES ('x@y', 'no context')",
            &[],
        )
        .await
        .expect_err("insert without context");
    // The default tenant is NULL: refused by the policy's WITH CHECK (or NOT NULL).
    assert!(
        matches!(err.code(), Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::NOT_NULL_VIOLATION),
        "{err:?}"
    );
    let err = client
        .execute(
            "INSERT INTO customers (tenant_id, email, name) VALUES ($1, 'x@y', 'no context')",
            &[&a.as_uuid()],
        )
        .await
        .expect_err("insert naming a tenant without context");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(
        client
            .execute("UPDATE customers SET name = 'x'", &[])
            .await
            .expect("update"),
        0
    );
    assert_eq!(
        client
            .execute("DELETE FROM customers", &[])
            .await
            .expect("delete"),
        0
    );
    let err = client
        .batch_execute("TRUNCATE customers")
        .await
        .expect_err("truncate");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(
        visible_tenants(&pool, a).await.len(),
        3,
        "A's rows are untouched"
    );
}

#[tokio::test]
async fn runtime_role_has_only_the_privileges_it_needs() {
    let db = fresh_db().await;
    let su = db.connect_superuser().await.expect("su");
    let row = su
        .query_one(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb,
                    (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
                    (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid),
                    has_table_privilege(r.oid, 'customers', 'TRUNCATE'),
                    has_table_privilege(r.oid, 'customers', 'REFERENCES'),
                    has_table_privilege(r.oid, 'customers', 'TRIGGER'),
                    has_schema_privilege(r.oid, 'public', 'CREATE'),
                    has_schema_privilege(r.oid, 'tenancy', 'CREATE'),
                    has_schema_privilege(r.oid, 'tenancy_private', 'USAGE'),
                    has_database_privilege(r.oid, current_database(), 'TEMP')
             FROM pg_roles r WHERE rolname = 'tenancy_app'",
            &[],
        )
        .await
        .expect("role");
    for i in [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12] {
        assert!(
            !row.get::<_, bool>(i),
            "runtime role attribute/privilege #{i} must be false"
        );
    }
    assert_eq!(
        row.get::<_, i64>(4),
        0,
        "runtime role must not be a member of any role"
    );
    assert_eq!(row.get::<_, i64>(5), 0, "runtime role must own nothing");
    let forced: Vec<(String, bool, bool)> = su
        .query("SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname IN ('customers', 'invoices')", &[])
        .await
        .expect("rls")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(forced.len(), 2);
    assert!(
        forced.iter().all(|(_, on, force)| *on && *force),
        "{forced:?}"
    );
    // The runtime role cannot read the signing key.
    let app = runtime_client(&db).await;
    let err = app
        .query("SELECT * FROM tenancy_private.context_keys", &[])
        .await
        .expect_err("key must be unreadable");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
}

#[tokio::test]
async fn make_tenant_table_refuses_keys_without_the_tenant_column() {
    let db = fresh_db().await;
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    owner
        .batch_execute("CREATE TABLE bad_pk (tenant_id uuid, id int PRIMARY KEY)")
        .await
        .expect("create");
    let err = tenancy_sdk::bootstrap::make_tenant_table(&owner, "bad_pk")
        .await
        .expect_err("must refuse");
    assert!(
        format!("{:?}", err).contains("does not include tenant_id"),
        "{err:?}"
    );
    owner
        .batch_execute("CREATE TABLE bad_fk (tenant_id uuid, id int, customer_id uuid REFERENCES customers_id_only(id), PRIMARY KEY (tenant_id, id))")
        .await
        .expect_err("referenced table does not exist");
    // Nothing was half-done: RLS stays off on the refused table.
    let rls: bool = owner
        .query_one(
            "SELECT relrowsecurity FROM pg_class WHERE relname = 'bad_pk'",
            &[],
        )
        .await
        .expect("q")
        .get(0);
    assert!(!rls);
}

#[tokio::test]
async fn many_tasks_interleaving_tenants_on_a_small_pool_never_see_foreign_rows() {
    let db = fresh_db().await;
    let pool = pool(&db, 3);
    let tenants: Vec<TenantId> = (0..4).map(|_| TenantId::new_random()).collect();
    for t in &tenants {
        seed(&pool, *t, 5).await;
    }
    let foreign = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..12u64 {
        let (pool, tenants, foreign, checked) = (
            pool.clone(),
            tenants.clone(),
            foreign.clone(),
            checked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..250u64 {
                let (pick, action) = {
                    let mut rng = rand::thread_rng();
                    (rng.gen_range(0..tenants.len()), rng.gen_range(0..10))
                };
                let t = tenants[pick];
                let mut tx = pool.begin(t).await.expect("begin");
                let rows = tx.query("SELECT tenant_id FROM customers", &[]).await.expect("select");
                let bad = rows.iter().filter(|r| r.get::<_, uuid::Uuid>(0) != t.as_uuid()).count() as u64;
                foreign.fetch_add(bad, Ordering::Relaxed);
                checked.fetch_add(rows.len() as u64, Ordering::Relaxed);
                match action {
                    0 => drop(tx), // abandoned: rolled back on drop
                    1 => {
                        let _ = tx.execute("SELECT 1/0", &[]).await; // error, then rollback
                        let _ = tx.commit().await;
                    }
                    2 => {
                        tx.execute(
                            "INSERT INTO invoices (customer_id, amount_cents) SELECT id, $1 FROM customers LIMIT 1",
                            &[&((task * 1000 + i) as i64)],
                        )
                        .await
                        .expect("insert");
                        tx.commit().await.expect("commit");
                    }
                    _ => tx.commit().await.expect("commit"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(foreign.load(Ordering::Relaxed), 0, "foreign rows observed");
    assert!(
        checked.load(Ordering::Relaxed) >= 3000 * 5,
        "the loop really read rows"
    );
    // Invoices too: each tenant's invoices reference only its own customers.
    for t in &tenants {
        let mut tx = pool.begin(*t).await.expect("begin");
        let n: i64 = tx
            .query_one(
                "SELECT count(*) FROM invoices i WHERE i.tenant_id <> $1",
                &[&t.as_uuid()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(n, 0);
        tx.commit().await.expect("commit");
    }
}

#[tokio::test]
async fn schema_placement_resolves_names_in_the_tenant_schema_and_rls_still_holds() {
    let db = fresh_db().await;
    let owner = connect(db.config_as(tenancy_sdk::bootstrap::OWNER_ROLE)).await;
    for s in ["tenant_a", "tenant_b"] {
        owner
            .batch_execute(&format!(
                "CREATE SCHEMA {s}; GRANT USAGE ON SCHEMA {s} TO tenancy_app;
                 CREATE TABLE {s}.notes (tenant_id uuid NOT NULL, id int NOT NULL, body text, PRIMARY KEY (tenant_id, id));
                 SELECT tenancy.make_tenant_table('{s}.notes');"
            ))
            .await
            .expect("schema");
    }
    let pool = pool(&db, 2);
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    for (t, s) in [(a, "tenant_a"), (b, "tenant_b")] {
        let mut tx = pool.begin_in_schema(t, s).await.expect("begin");
        tx.execute("INSERT INTO notes (id, body) VALUES (1, $1)", &[&s])
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    let mut tx = pool.begin_in_schema(a, "tenant_a").await.expect("begin");
    let body: String = tx
        .query_one("SELECT body FROM notes", &[])
        .await
        .expect("own")
        .get(0);
    assert_eq!(body, "tenant_a");
    // Naming B's schema explicitly, or switching search_path, reaches nothing.
    let n: i64 = tx
        .query_one("SELECT count(*) FROM tenant_b.notes", &[])
        .await
        .expect("other")
        .get(0);
    assert_eq!(n, 0);
    tx.batch_execute("SET LOCAL search_path = tenant_b")
        .await
        .expect("set");
    let n: i64 = tx
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .expect("other")
        .get(0);
    assert_eq!(n, 0);
    tx.commit().await.expect("commit");
    assert!(matches!(
        pool.begin_in_schema(a, "x; DROP TABLE y").await,
        Err(tenancy_sdk::Error::Invalid(_))
    ));
}
