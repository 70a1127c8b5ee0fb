//! Tests of the access model and of the access tables and management functions against a
//! real cluster, as the runtime role in tenant transactions. The request-level behaviour
//! (RequirePermission, the extractor, claim mapping, API keys, the HTTP routes) is tested
//! over HTTP in `examples/invoicing/tests/it/access.rs`.

use tenancy_access::{
    check_key_scopes, create_role, grant, list_grants, AccessError, AccessModel, By, ClaimRoles,
    Permissions,
};
use tenancy_core::{ContextKey, TenantId};
use tenancy_pg::testing::{TemplateDb, TestDb};
use tenancy_sdk::bootstrap::RUNTIME_ROLE;
use tenancy_sdk::{PoolOptions, TenantPool};

static TEMPLATE: TemplateDb = TemplateDb::new("access_tpl");

fn key() -> ContextKey {
    ContextKey::from_hex(
        "test".parse().expect("kid"),
        "1f1c2b4a5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f702",
    )
    .expect("key")
}

/// A fresh database with the runtime, the catalog, the audit log and the access tables
/// (each installed twice: installing is idempotent).
async fn fresh_db() -> TestDb {
    tenancy_test_support::fresh_catalog_db_with(&TEMPLATE, key(), async |owner| {
        for _ in 0..2 {
            tenancy_audit::install(owner).await?;
            tenancy_access::install(owner).await?;
        }
        Ok(())
    })
    .await
}

fn pool(db: &TestDb) -> TenantPool {
    TenantPool::new(db.config_as(RUNTIME_ROLE), key(), PoolOptions::default()).expect("pool")
}

fn model() -> tenancy_access::Access {
    AccessModel::new()
        .permissions(["invoices:read", "invoices:create"])
        .member(["invoices:read", "invoices:create"])
        .viewer(["invoices:read"])
        .build()
        .expect("model")
}

#[test]
fn the_model_refuses_undeclared_and_malformed_names_at_startup() {
    let err = |m: AccessModel| m.build().expect_err("refused").to_string();
    assert!(
        err(AccessModel::new().permissions(["Invoices:Create"])).contains("\"Invoices:Create\"")
    );
    assert!(err(AccessModel::new().permissions(["invoices"])).contains("\"invoices\""));
    assert!(err(AccessModel::new().permissions(["invoices:read\0"])).contains("invoices:read"));
    assert!(err(AccessModel::new().permissions(["a:b"]).viewer(["a:c"]))
        .contains("viewer holds \"a:c\""));
    assert!(err(AccessModel::new()
        .issuer(ClaimRoles::new("iss", "roles"))
        .issuer(ClaimRoles::new("iss", "groups")))
    .contains("\"iss\""));
    assert!(
        err(AccessModel::new().issuer(ClaimRoles::new("iss", "roles").map("x", "Not A Role")))
            .contains("Not A Role")
    );
    let access = model();
    assert!(access.declares("access:manage"), "every model declares it");
    assert!(access
        .require("invoices:delete")
        .expect_err("undeclared")
        .to_string()
        .contains("\"invoices:delete\""));
    assert_eq!(
        access
            .require("invoices:create")
            .expect("declared")
            .permission(),
        "invoices:create"
    );
}

#[test]
fn key_scopes_are_declared_permissions_within_the_creators() {
    let access = model();
    let all = Permissions::all(&access);
    let scopes = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        check_key_scopes(&access, &all, &scopes(&["invoices:read", "invoices:read"]))
            .expect("within"),
        scopes(&["invoices:read"])
    );
    for bad in [&["*"][..], &["invoices:*"], &["invoices:delete"]] {
        assert!(matches!(
            check_key_scopes(&access, &all, &scopes(bad)),
            Err(AccessError::UnknownPermission { .. })
        ));
    }
}

#[tokio::test]
async fn access_tables_hold_only_the_transactions_tenant_rows() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let access = model();
    let (a, b) = (TenantId::new_random(), TenantId::new_random());
    let all = Permissions::all(&access);
    let by = By::platform_admin("ops@example", None);
    let mut tx = pool.begin(a).await.expect("begin a");
    create_role(
        &mut tx,
        &access,
        &all,
        &by,
        "billing",
        &["invoices:create".into()],
    )
    .await
    .expect("role");
    assert!(grant(&mut tx, &access, &all, &by, "bob", "billing")
        .await
        .expect("grant"));
    tx.commit().await.expect("commit");
    // Tenant b sees none of a's rows, cannot grant a's custom role, and cannot write rows
    // naming a.
    let mut tx = pool.begin(b).await.expect("begin b");
    assert!(list_grants(&mut tx).await.expect("grants").is_empty());
    let n: i64 = tx
        .query_one("SELECT count(*) FROM tenancy.access_roles", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    assert!(matches!(
        grant(&mut tx, &access, &all, &by, "bob", "billing").await,
        Err(AccessError::UnknownRole { .. })
    ));
    tx.rollback().await.expect("rollback");
    let mut tx = pool.begin(b).await.expect("begin b");
    let forged = tx
        .execute(
            "INSERT INTO tenancy.access_grants (tenant_id, subject, role) VALUES ($1, 'eve', 'owner')",
            &[&a.as_uuid()],
        )
        .await;
    assert!(
        forged.is_err(),
        "row-level security refuses another tenant's row"
    );
    drop(tx);
    let mut tx = pool.begin(a).await.expect("begin a");
    let grants = list_grants(&mut tx).await.expect("grants");
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].subject.as_str(), grants[0].role.as_str()),
        ("bob", "billing")
    );
}

#[tokio::test]
async fn a_grant_and_its_audit_event_exist_exactly_when_the_transaction_commits() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let access = model();
    let t = TenantId::new_random();
    let all = Permissions::all(&access);
    let by = By::platform_admin("ops@example", Some("req-1"));
    let count = async |pool: &TenantPool| -> (i64, i64) {
        let mut tx = pool.begin(t).await.expect("begin");
        let r = tx
            .query_one(
                "SELECT (SELECT count(*) FROM tenancy.access_grants),
                        (SELECT count(*) FROM tenancy.audit_events WHERE action = 'access.grant'
                            AND actor_kind = 'admin' AND actor_subject = 'ops@example'
                            AND request_id = 'req-1')",
                &[],
            )
            .await
            .expect("count");
        (r.get(0), r.get(1))
    };
    let mut tx = pool.begin(t).await.expect("begin");
    grant(&mut tx, &access, &all, &by, "bob", "viewer")
        .await
        .expect("grant");
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&pool).await, (0, 0), "rolled back: neither");
    let mut tx = pool.begin(t).await.expect("begin");
    grant(&mut tx, &access, &all, &by, "bob", "viewer")
        .await
        .expect("grant");
    tx.commit().await.expect("commit");
    assert_eq!(count(&pool).await, (1, 1), "committed: both");
}
