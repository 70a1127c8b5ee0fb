//! Tests of the access model and of the access tables and management functions against a
//! real cluster, as the runtime role in tenant transactions. The request-level behaviour
//! (RequirePermission, the extractor, claim mapping, API keys, the HTTP routes) is tested
//! over HTTP in `examples/invoicing/tests/it/access.rs`.

use tenancy_access::{
    check_key_scopes, create_role, grant, list_grants, list_roles, AccessError, AccessModel, By,
    Change, ClaimRoles, PageRequest, Permissions,
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
        Change::new(&mut tx, &access, &all, &by),
        "billing",
        &["invoices:create".into()],
    )
    .await
    .expect("role");
    assert!(
        grant(Change::new(&mut tx, &access, &all, &by), "bob", "billing")
            .await
            .expect("grant")
    );
    tx.commit().await.expect("commit");
    // Tenant b sees none of a's rows, cannot grant a's custom role, and cannot write rows
    // naming a.
    let mut tx = pool.begin(b).await.expect("begin b");
    assert!(list_grants(&mut tx, &PageRequest::first())
        .await
        .expect("grants")
        .items
        .is_empty());
    let n: i64 = tx
        .query_one("SELECT count(*) FROM tenancy.access_roles", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
    assert!(matches!(
        grant(Change::new(&mut tx, &access, &all, &by), "bob", "billing").await,
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
    let grants = list_grants(&mut tx, &PageRequest::first())
        .await
        .expect("grants")
        .items;
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
    grant(Change::new(&mut tx, &access, &all, &by), "bob", "viewer")
        .await
        .expect("grant");
    tx.rollback().await.expect("rollback");
    assert_eq!(count(&pool).await, (0, 0), "rolled back: neither");
    let mut tx = pool.begin(t).await.expect("begin");
    grant(Change::new(&mut tx, &access, &all, &by), "bob", "viewer")
        .await
        .expect("grant");
    tx.commit().await.expect("commit");
    assert_eq!(count(&pool).await, (1, 1), "committed: both");
}

/// Every page of a list, following `next_after` from the first page.
macro_rules! all_pages {
    ($tx:expr, $limit:expr, |$page:ident| $list:expr) => {{
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let $page = PageRequest::parse(after.as_deref(), Some($limit)).expect("page");
            let got = $list.await.expect("list");
            assert!(got.items.len() <= $limit as usize);
            items.extend(got.items);
            pages += 1;
            match got.next_after {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        (items, pages)
    }};
}

#[tokio::test]
async fn grant_and_role_lists_page_through_every_item_once_in_order() {
    let db = fresh_db().await;
    let pool = pool(&db);
    let access = model();
    let all = Permissions::all(&access);
    let by = By::platform_admin("ops", None);
    let t = TenantId::new_random();
    let mut tx = pool.begin(t).await.expect("begin");
    // Subjects with the cursor's separator, multibyte text and a common prefix.
    let subjects = ["a.b", "a", "ab", "zoë", "api_key:0011223344556677"];
    for s in subjects {
        for role in ["viewer", "member"] {
            assert!(grant(Change::new(&mut tx, &access, &all, &by), s, role)
                .await
                .expect("grant"));
        }
    }
    for name in ["r3", "r1", "r2"] {
        create_role(
            Change::new(&mut tx, &access, &all, &by),
            name,
            &["invoices:read".to_owned()],
        )
        .await
        .expect("role");
    }
    let (grants, pages) = all_pages!(tx, 3, |page| list_grants(&mut tx, &page));
    assert_eq!(grants.len(), 10);
    assert_eq!(pages, 4, "10 grants in pages of 3");
    let unpaged = list_grants(&mut tx, &PageRequest::parse(None, Some(200)).expect("page"))
        .await
        .expect("one page");
    assert_eq!(unpaged.next_after, None);
    assert_eq!(grants, unpaged.items, "paging neither skips nor repeats");
    let (roles, _) = all_pages!(tx, 2, |page| list_roles(&mut tx, &access, &page));
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["owner", "admin", "member", "viewer", "r1", "r2", "r3"]
    );
    // A cursor of one page size is good for any other.
    let (roles, _) = all_pages!(tx, 1, |page| list_roles(&mut tx, &access, &page));
    assert_eq!(roles.len(), 7);
    // Bad input names its field.
    for (after, limit, field) in [
        (None, Some(0), "limit"),
        (None, Some(201), "limit"),
        (Some(""), None, "after"),
        (Some("x".repeat(2000).as_str()), None, "after"),
    ] {
        match PageRequest::parse(after, limit) {
            Err(AccessError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{after:?} {limit:?}: {other:?}"),
        }
    }
    // A well-formed cursor is a position even if no page returned it (hex that is not
    // UTF-8 included): what a client can spell from the documented pattern is accepted.
    for good in ["ff.viewer", "00.viewer", "6100.viewer"] {
        let page = PageRequest::parse(Some(good), None).expect("size is fine");
        assert!(list_grants(&mut tx, &page).await.is_ok(), "{good}");
    }
    for bad in ["zz.viewer", "61", "6.viewer", "61.Viewer"] {
        let page = PageRequest::parse(Some(bad), None).expect("size is fine");
        match list_grants(&mut tx, &page).await {
            Err(AccessError::Invalid { field, .. }) => assert_eq!(field, "after", "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    let page = PageRequest::parse(Some("Not-A-Role"), None).expect("size is fine");
    assert!(matches!(
        list_roles(&mut tx, &access, &page).await,
        Err(AccessError::Invalid { field, .. }) if field == "after"
    ));
}
