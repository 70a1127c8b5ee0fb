//! The tenancy_context extension itself (extensions/tenancy_context), on a cluster started
//! by this crate: what CREATE EXTENSION needs, what it creates, and that the library it
//! loads verifies tokens. The SDK's context suite then runs on databases whose bootstrap
//! created the extension (tenancy-sdk's `support::fresh_native_db`).

use tenancy_core::{ContextKey, TenantId};
use tenancy_pg::testing::TemplateDb;
use tenancy_pg::Cluster;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

static PLAIN: TemplateDb = TemplateDb::new("harness_ext_tpl");

const KEY_HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// What tenancy's bootstrap makes before the extension: its roles, the schema `tenancy`
/// owned by the owner role, and the key table the library reads (the runtime's own
/// layout), here with one key.
async fn prepare(su: &Client, key: &ContextKey) {
    let material = hex_bytes(&key.material_hex());
    let pad = |b: u8| -> Vec<u8> {
        let mut p = material.clone();
        p.resize(64, 0);
        p.iter().map(|x| x ^ b).collect()
    };
    su.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_owner') THEN CREATE ROLE tenancy_owner; END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tenancy_app') THEN CREATE ROLE tenancy_app LOGIN; END IF;
         END $$;",
    )
    .await
    .expect("roles");
    let db: String = su
        .query_one("SELECT current_database()::text", &[])
        .await
        .expect("db")
        .get(0);
    su.batch_execute(&format!(
        "GRANT CREATE ON DATABASE \"{db}\" TO tenancy_owner;
         CREATE SCHEMA tenancy AUTHORIZATION tenancy_owner;
         CREATE SCHEMA tenancy_private AUTHORIZATION tenancy_owner;
         CREATE TABLE tenancy_private.context_keys (kid text PRIMARY KEY, ipad bytea NOT NULL, opad bytea NOT NULL);
         ALTER TABLE tenancy_private.context_keys OWNER TO tenancy_owner;
         GRANT USAGE ON SCHEMA tenancy TO tenancy_app;"
    ))
    .await
    .expect("schemas");
    su.execute(
        "INSERT INTO tenancy_private.context_keys VALUES ($1, $2, $3)",
        &[&key.kid().as_str(), &pad(0x36), &pad(0x5c)],
    )
    .await
    .expect("key");
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// Whether the cluster offers the extension. A cluster started here on PostgreSQL 18+
/// always does (extension_control_path); on 14–17 only after `make install`, which
/// `.ci/run` does and `TENANCY_REQUIRE_NATIVE=1` therefore expects.
async fn offered(cluster: &Cluster) -> bool {
    let su = cluster.connect("postgres").await.expect("superuser");
    let offered: Option<String> = su
        .query_opt(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'tenancy_context'",
            &[],
        )
        .await
        .expect("available extensions")
        .map(|r| r.get(0));
    if let Some(v) = &offered {
        assert_eq!(v, tenancy_pg::EXTENSION_VERSION, "default version");
    }
    let must = cluster.major_version() >= 18 || tenancy_pg::native_required();
    assert!(
        offered.is_some() || !must,
        "PostgreSQL {} does not offer the tenancy_context extension; install it with \
         `make -C extensions/tenancy_context PG_CONFIG=<that server's pg_config> install`",
        cluster.major_version()
    );
    offered.is_some()
}

#[tokio::test]
async fn create_extension_needs_the_bootstrap_then_enters_signed_tokens_only() {
    let db = PLAIN
        .fresh(|_c: &'static Cluster, _db: String| async move { Ok(()) })
        .await
        .expect("database");
    if !offered(db.cluster).await {
        eprintln!("the server does not offer the tenancy_context extension: nothing to check");
        return;
    }
    let su = db.connect_superuser().await.expect("superuser");

    // Without the bootstrap: refused with what to do, and nothing left behind (not even
    // the schema CREATE EXTENSION makes for a control file's `schema`).
    let err = su
        .batch_execute("CREATE EXTENSION tenancy_context")
        .await
        .expect_err("no tenancy schema yet");
    let msg = err.as_db_error().expect("db error").message().to_owned();
    assert!(
        msg.contains("tenancy_owner") || msg.contains("schema tenancy"),
        "{msg}"
    );
    let leftovers: i64 = su
        .query_one(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'tenancy') \
                  + (SELECT count(*) FROM pg_extension WHERE extname = 'tenancy_context')",
            &[],
        )
        .await
        .expect("leftovers")
        .get(0);
    assert_eq!(leftovers, 0);

    let key = ContextKey::from_hex("k1".parse().expect("kid"), KEY_HEX).expect("key");
    prepare(&su, &key).await;
    // Trusted: the owner role, no superuser, creates it.
    su.batch_execute("SET ROLE tenancy_owner; CREATE EXTENSION tenancy_context; RESET ROLE")
        .await
        .expect("CREATE EXTENSION as tenancy_owner");
    let rows = su
        .query(
            "SELECT p.proname::text, l.lanname::text, pg_get_userbyid(p.proowner)::text, \
                    has_function_privilege('tenancy_app', p.oid, 'EXECUTE'), \
                    NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0), \
                    obj_description(p.oid, 'pg_proc'), e.extversion::text, pg_get_userbyid(e.extowner)::text \
               FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid \
               JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass \
               JOIN pg_language l ON l.oid = p.prolang \
              WHERE e.extname = 'tenancy_context' AND d.deptype = 'e' AND p.pronamespace = 'tenancy'::regnamespace \
              ORDER BY 1",
            &[],
        )
        .await
        .expect("members");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        names,
        [
            "audit_append",
            "audit_event_valid_native",
            "current_tenant_id",
            "enter",
            "enter_pooled",
            "enter_read_only"
        ]
    );
    for r in &rows {
        let name: String = r.get(0);
        assert_eq!(r.get::<_, String>(1), "c", "{name}");
        assert_eq!(r.get::<_, String>(2), "tenancy_owner", "{name}");
        assert!(r.get::<_, bool>(3), "tenancy_app must execute {name}");
        assert!(r.get::<_, bool>(4), "PUBLIC must not execute {name}");
        // The context functions are marked for `tenancy check`; the audit event check and
        // insertion (not context functions) are not.
        let comment: Option<String> = r.get(5);
        assert_eq!(
            comment
                .as_deref()
                .is_some_and(|c| c.starts_with("tenancy:context-")),
            !name.starts_with("audit_"),
            "{name}: {comment:?}"
        );
        assert_eq!(r.get::<_, String>(6), tenancy_pg::EXTENSION_VERSION);
        assert_eq!(r.get::<_, String>(7), "tenancy_owner", "extension owner");
    }

    // The library it loads: a signed token for this backend enters its tenant for the
    // transaction; anything else is refused with 28000 and enters nothing.
    let app = tenancy_pg::connect(&db.config_as("tenancy_app"))
        .await
        .expect("runtime role");
    let pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let tenant = TenantId::new_random();
    let good = key.sign(tenant, pid, now_micros(), 60_000_000);
    let forged = ContextKey::from_bytes("k1".parse().expect("kid"), [7; 32]).sign(
        tenant,
        pid,
        now_micros() + 1,
        60_000_000,
    );
    app.batch_execute("BEGIN").await.expect("begin");
    let err = app
        .query_one("SELECT tenancy.enter($1)", &[&forged.as_str()])
        .await
        .expect_err("forged token");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION)
    );
    app.batch_execute("ROLLBACK").await.expect("rollback");
    app.batch_execute("BEGIN").await.expect("begin");
    let entered: uuid::Uuid = app
        .query_one("SELECT tenancy.enter($1)", &[&good.as_str()])
        .await
        .expect("signed token")
        .get(0);
    let current: Option<uuid::Uuid> = app
        .query_one("SELECT tenancy.current_tenant_id()", &[])
        .await
        .expect("current")
        .get(0);
    assert_eq!(entered.to_string(), tenant.to_string());
    assert_eq!(current, Some(entered));
    app.batch_execute("COMMIT").await.expect("commit");
    let after: Option<uuid::Uuid> = app
        .query_one("SELECT tenancy.current_tenant_id()", &[])
        .await
        .expect("current after commit")
        .get(0);
    assert_eq!(after, None, "the context ends with its transaction");

    // The owner that created it can take it away again.
    su.batch_execute("SET ROLE tenancy_owner; DROP EXTENSION tenancy_context; RESET ROLE")
        .await
        .expect("DROP EXTENSION as tenancy_owner");
}
