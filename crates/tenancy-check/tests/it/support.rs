//! Shared templates and helpers.

use std::sync::atomic::{AtomicU32, Ordering};

use tenancy_check::{audit, Options, Report, Severity};
use tenancy_pg::testing::{SetupError, TemplateDb, TestDb};
use tenancy_pg::Cluster;

use crate::corpus::{self, Case};

/// An empty database.
static PLAIN: TemplateDb = TemplateDb::new("check_plain_tpl");
/// A tenancy-managed database with two tenant tables and rows of a real tenant.
static MANAGED: TemplateDb = TemplateDb::new("check_managed_tpl");

static N: AtomicU32 = AtomicU32::new(0);

/// The context key installed in the managed template.
pub(crate) const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Role names unique to this test process and call.
pub(crate) fn unique_roles(tag: &str) -> (String, String) {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::process::id();
    (
        format!("ck_{tag}_{p}_{n}_app"),
        format!("ck_{tag}_{p}_{n}_own"),
    )
}

pub(crate) async fn plain() -> TestDb {
    PLAIN
        .fresh(|_c: &'static Cluster, _db: String| async move { Ok(()) })
        .await
        .expect("plain database")
}

pub(crate) async fn managed() -> TestDb {
    MANAGED
        .fresh(|cluster, db| managed_setup(cluster, db, false))
        .await
        .expect("managed database")
}

/// Builds the managed template; `extension`: with the native context as the
/// tenancy_context extension, created before the runtime as the SDK's bootstrap does.
async fn managed_setup(
    cluster: &'static Cluster,
    db: String,
    extension: bool,
) -> Result<(), SetupError> {
    let c = cluster.connect(&db).await?;
    c.batch_execute(include_str!("../../../tenancy-sdk/sql/bootstrap.sql"))
        .await?;
    c.batch_execute(
        &include_str!("../../../tenancy-sdk/sql/database.sql")
            .replace(":dbname", &format!("\"{db}\"")),
    )
    .await?;
    c.batch_execute("SET ROLE tenancy_owner").await?;
    if extension {
        c.batch_execute("CREATE EXTENSION tenancy_context").await?;
    }
    c.batch_execute(include_str!("../../../tenancy-sdk/sql/runtime.sql"))
        .await?;
    c.batch_execute(&format!(
        "SELECT tenancy.install_context_key('k1', '{KEY_HEX}')"
    ))
    .await?;
    c.batch_execute(
                "CREATE TABLE public.docs (tenant_id uuid NOT NULL, id bigint NOT NULL, title text NOT NULL, PRIMARY KEY (tenant_id, id)); \
                 SELECT tenancy.make_tenant_table('public.docs'); \
                 CREATE TABLE public.comments (tenant_id uuid NOT NULL, id bigint NOT NULL, doc_id bigint NOT NULL, body text, \
                   PRIMARY KEY (tenant_id, id), FOREIGN KEY (tenant_id, doc_id) REFERENCES public.docs (tenant_id, id)); \
                 SELECT tenancy.make_tenant_table('public.comments'); \
                 RESET ROLE; \
                 INSERT INTO public.docs (tenant_id, id, title) VALUES ('6d1f3a52-0f7e-4b7a-9a57-3c1b2f9e8d01', 1, 'real'); \
                 INSERT INTO public.comments (tenant_id, id, doc_id, body) VALUES ('6d1f3a52-0f7e-4b7a-9a57-3c1b2f9e8d01', 1, 1, 'real');",
            )
            .await?;
    Ok::<(), SetupError>(())
}

/// The managed database with the native signed context (the C functions the SDK's
/// bootstrap installs where the server can load tenancy's library), or `None` when this
/// build has no native library.
pub(crate) async fn managed_native() -> Option<TestDb> {
    let db = managed().await;
    if tenancy_pg::native_context_library(db.cluster.major_version()).is_none() {
        assert!(
            !tenancy_pg::native_required(),
            "TENANCY_REQUIRE_NATIVE=1, but this build has no native library for the server"
        );
        return None;
    }
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(tenancy_sdk::bootstrap::NATIVE_SQL)
        .await
        .expect("native context");
    Some(db)
}

/// The managed database with the native signed context as the tenancy_context extension,
/// or `None` when the server does not offer the extension (PostgreSQL 14–17 without
/// `make install`; a cluster tenancy started on 18+ always offers it).
pub(crate) async fn managed_extension() -> Option<TestDb> {
    static MANAGED_EXT: TemplateDb = TemplateDb::new("check_managed_ext_tpl");
    let cluster = tenancy_pg::testing::cluster().await.expect("cluster");
    let offered = tenancy_test_support::context_extension_offered(
        &cluster.connect("postgres").await.expect("superuser"),
    )
    .await;
    assert!(
        offered || cluster.major_version() < 18 || !tenancy_pg::native_required(),
        "a PostgreSQL 18+ cluster started by tenancy must offer the tenancy_context extension"
    );
    if !offered {
        return None;
    }
    Some(
        MANAGED_EXT
            .fresh(|cluster, db| managed_setup(cluster, db, true))
            .await
            .expect("managed database with the extension"),
    )
}

/// The managed database with each implementation of the signed context (the native one
/// from the library and, where the server offers it, as the extension).
pub(crate) async fn managed_both() -> Vec<TestDb> {
    let mut out = vec![managed().await];
    out.extend(managed_native().await);
    out.extend(managed_extension().await);
    out
}

/// A fresh database with a case applied; returns (db, runtime role).
pub(crate) async fn with_case(case: &Case) -> (TestDb, String) {
    let db = plain().await;
    let (app, owner) = unique_roles(case.name);
    let c = db.connect_superuser().await.expect("superuser");
    c.batch_execute(&corpus::setup_sql(case, &app, &owner, &db.name))
        .await
        .unwrap_or_else(|e| panic!("case {}: {e:?}", case.name));
    (db, app)
}

pub(crate) fn opts(role: &str) -> Options {
    Options {
        runtime_role: Some(role.to_owned()),
        ..Options::default()
    }
}

pub(crate) async fn audit_as(db: &TestDb, role: &str) -> Report {
    let c = db.connect_superuser().await.expect("superuser");
    audit(&c, &opts(role)).await.expect("audit")
}

pub(crate) fn errors(r: &Report) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {}", f.rule, f.object, f.message))
        .collect()
}

pub(crate) fn sev(s: &str) -> Severity {
    match s {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    }
}
