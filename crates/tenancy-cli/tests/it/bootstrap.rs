//! `tenancy bootstrap` on a server tenancy did not start, as a role with only CREATEROLE
//! and ownership of the database (what a managed service grants): refusals that say what
//! to fix, `--dry-run` that changes nothing, a set-up the runtime role works on, a second
//! run that changes nothing, a half-finished run completed by the next, and `tenancy
//! serve` / `tenancy migrate` naming the command on a server that was not set up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_sdk::bootstrap::{self, server, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{ContextKey, PoolOptions, TenantId, TenantPool};

/// Runs the `tenancy` binary with `args`, without any tenancy variable of the caller's
/// environment, plus `env`.
pub(crate) fn tenancy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenancy"));
    c.args(args);
    for v in [
        "DATABASE_URL",
        "TENANCY_DATABASE_URL",
        "TENANCY_CONTEXT_KEY_HEX",
        "TENANCY_CONFIG",
        "TENANCY_OWNER_PASSWORD",
        "TENANCY_RUNTIME_PASSWORD",
        "TENANCY_WORKER_PASSWORD",
        "TENANCY_CONFIG_READER_PASSWORD",
    ] {
        c.env_remove(v);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run tenancy")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Everything a bootstrap run could change, read as the superuser.
async fn fingerprint(su: &tokio_postgres::Client) -> Vec<String> {
    let mut out = Vec::new();
    for q in [
        "SELECT rolname || ':' || coalesce(rolpassword, '-') || ':' || rolsuper || rolbypassrls || rolinherit
           FROM pg_authid WHERE rolname LIKE 'tenancy%' ORDER BY 1",
        "SELECT kid || ':' || encode(ipad, 'hex') FROM tenancy_private.context_keys ORDER BY 1",
        "SELECT version::text || checksum FROM tenancy_catalog.schema_migrations ORDER BY version",
        "SELECT n.nspname || '.' || c.relname || ':' || pg_get_userbyid(c.relowner) || ':' || coalesce(c.relacl::text, '')
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname IN ('tenancy', 'tenancy_private', 'tenancy_catalog', 'public') ORDER BY 1",
        "SELECT p.oid::regprocedure::text || ':' || pg_get_userbyid(p.proowner) || ':' || md5(p.prosrc)
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname IN ('tenancy', 'tenancy_private', 'tenancy_catalog') ORDER BY 1",
        "SELECT datname || ':' || coalesce(datacl::text, '') FROM pg_database WHERE datname = 'app'",
        "SELECT nspname || ':' || pg_get_userbyid(nspowner) || ':' || coalesce(nspacl::text, '') FROM pg_namespace ORDER BY 1",
    ] {
        // Before the first run some of these relations do not exist yet.
        match su.query(q, &[]).await {
            Ok(rows) => out.extend(rows.iter().map(|r| r.get::<_, String>(0))),
            Err(e) => out.push(format!("{q}: {e}")),
        }
    }
    out
}

async fn role_exists(su: &tokio_postgres::Client, role: &str) -> bool {
    su.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
        &[&role],
    )
    .await
    .expect("role")
    .get(0)
}

fn key_from(stdout: &str) -> ContextKey {
    let hex = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("TENANCY_CONTEXT_KEY_HEX="))
        .unwrap_or_else(|| panic!("no context key printed:\n{stdout}"));
    ContextKey::from_hex("k1".parse().expect("kid"), hex).expect("printed key")
}

#[tokio::test]
async fn bootstrap_sets_up_a_server_without_superuser_idempotently_and_serve_says_what_to_run() {
    // A server tenancy did not start: its own cluster (roles are cluster-wide), an admin
    // with CREATEROLE only that owns database `app`, and a schema tenancy_catalog left by
    // an earlier run as another role.
    let cluster = Cluster::start(ClusterOptions::for_tests())
        .await
        .expect("cluster");
    let su = cluster.connect("postgres").await.expect("superuser");
    su.batch_execute(
        "CREATE ROLE admin LOGIN CREATEROLE NOSUPERUSER NOCREATEDB;
         CREATE ROLE intruder LOGIN;",
    )
    .await
    .expect("admin");
    su.batch_execute("CREATE DATABASE app OWNER admin")
        .await
        .expect("app");
    let su_app = cluster.connect("app").await.expect("superuser on app");
    su_app
        .batch_execute("GRANT CREATE ON DATABASE app TO intruder")
        .await
        .expect("grant");
    let intruder = tenancy_pg::connect(&cluster.config_as("intruder", "app"))
        .await
        .expect("intruder");
    intruder
        .batch_execute(
            "CREATE SCHEMA tenancy_catalog;
             CREATE TABLE tenancy_catalog.schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms double precision NOT NULL);",
        )
        .await
        .expect("partial catalog");
    let admin_url = cluster.url_as("admin", "app");
    let owner_url = cluster.url_as(OWNER_ROLE, "app");

    // Not set up: serve and migrate name what is missing and the command to run.
    let o = tenancy(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", &owner_url),
            ("TENANCY_CONTEXT_KEY_HEX", &"ab".repeat(32)),
        ],
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("not set up for tenancy") && err.contains("tenancy bootstrap --database-url"),
        "{err}"
    );
    let o = tenancy(&["migrate"], &[("DATABASE_URL", &owner_url)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("tenancy bootstrap --database-url"), "{err}");

    // The schema another role left cannot be taken over: refused, with what to run, and
    // nothing changed.
    let o = tenancy(&["bootstrap", "--database-url", &admin_url], &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("schema tenancy_catalog") && err.contains(r#"GRANT "intruder" TO "admin""#),
        "{err}"
    );
    assert!(!role_exists(&su, OWNER_ROLE).await, "nothing changed");

    // Custom role names are refused clearly.
    let o = tenancy(
        &[
            "bootstrap",
            "--database-url",
            &admin_url,
            "--runtime-role",
            "app_rt",
        ],
        &[],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("custom role names are not supported"), "{err}");

    su.batch_execute("GRANT intruder TO admin")
        .await
        .expect("grant intruder");

    // --dry-run prints the SQL, secrets redacted, and changes nothing.
    let before = fingerprint(&su_app).await;
    let o = tenancy(
        &["bootstrap", "--database-url", &admin_url, "--dry-run"],
        &[("TENANCY_RUNTIME_PASSWORD", "s3cret-runtime")],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for needle in [
        "CREATE ROLE tenancy_owner",
        "ALTER ROLE \"tenancy_app\" PASSWORD '<redacted>'",
        "GRANT tenancy_owner TO \"admin\"",
        "ALTER SCHEMA %I OWNER TO tenancy_owner",
        "SET LOCAL ROLE tenancy_owner",
        "tenancy.install_context_key('k1', '<redacted>')",
        "CREATE TABLE tenancy_catalog.regions",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from\n{out}");
    }
    assert!(!out.contains("s3cret-runtime"), "{out}");
    assert!(
        !role_exists(&su, OWNER_ROLE).await,
        "dry run changed nothing"
    );
    assert_eq!(fingerprint(&su_app).await, before);

    // The real run, as the admin: everything set up, the left-over schema handed over.
    let o = tenancy(
        &["bootstrap", "--database-url", &admin_url],
        &[("TENANCY_RUNTIME_PASSWORD", "s3cret-runtime")],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains("s3cret-runtime") && !err.contains("s3cret-runtime"));
    assert!(out.contains("TENANCY_OWNER_PASSWORD="), "{out}");
    assert!(
        !out.lines()
            .any(|l| l.trim().starts_with("TENANCY_RUNTIME_PASSWORD=")),
        "a given password is not generated: {out}"
    );
    // Native where the server offers the trusted tenancy_context extension, else
    // PL/pgSQL (C functions need a superuser); the report says which one it installed.
    let installed = match bootstrap::context_impl(&su_app).await.expect("impl") {
        Some(bootstrap::ContextImpl::Native) => "signed context: native",
        Some(bootstrap::ContextImpl::PlPgSql) => "signed context: PL/pgSQL",
        None => panic!("no context installed"),
    };
    assert!(out.contains(installed), "{out}");
    assert!(out.contains("user=tenancy_owner dbname=app"), "{out}");
    let key = key_from(&out);
    let owner_of_catalog: String = su_app
        .query_one(
            "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'tenancy_catalog'",
            &[],
        )
        .await
        .expect("catalog owner")
        .get(0);
    assert_eq!(owner_of_catalog, OWNER_ROLE);
    let applied: i64 = su_app
        .query_one(
            "SELECT count(*) FROM tenancy_catalog.schema_migrations",
            &[],
        )
        .await
        .expect("catalog")
        .get(0);
    assert_eq!(applied as usize, tenancy_catalog::MIGRATIONS.len());
    let (superuser, bypass): (bool, bool) = {
        let r = su
            .query_one(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1",
                &[&RUNTIME_ROLE],
            )
            .await
            .expect("runtime role");
        (r.get(0), r.get(1))
    };
    assert!(!superuser && !bypass);

    // The runtime role works: a tenant table made by the owner, rows written and read
    // through TenantTx with the printed key, and each tenant sees only its own.
    let owner = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, "app"))
        .await
        .expect("owner");
    owner
        .batch_execute(
            "CREATE TABLE notes (tenant_id uuid NOT NULL, id int NOT NULL, body text NOT NULL, PRIMARY KEY (tenant_id, id));
             SELECT tenancy.make_tenant_table('notes');",
        )
        .await
        .expect("tenant table");
    let pool = |key: ContextKey| {
        TenantPool::new(
            cluster.config_as(RUNTIME_ROLE, "app"),
            key,
            PoolOptions {
                max_size: 2,
                ..Default::default()
            },
        )
        .expect("pool")
    };
    let p = pool(key.clone());
    let (a, b) = (
        TenantId::from_uuid(uuid::Uuid::new_v4()).expect("a"),
        TenantId::from_uuid(uuid::Uuid::new_v4()).expect("b"),
    );
    let mut tx = p.begin(a).await.expect("begin a");
    tx.execute("INSERT INTO notes (id, body) VALUES (1, 'of a')", &[])
        .await
        .expect("insert as a");
    tx.commit().await.expect("commit");
    for (t, n) in [(a, 1), (b, 0)] {
        let mut tx = p.begin(t).await.expect("begin");
        let rows = tx
            .query("SELECT body FROM notes", &[])
            .await
            .expect("select");
        assert_eq!(rows.len(), n);
        tx.commit().await.expect("commit");
    }

    // A second run changes nothing: roles, passwords, key, catalog, privileges, owners.
    let before = fingerprint(&su_app).await;
    let o = tenancy(&["bootstrap", "--database-url", &admin_url], &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("context key kept"), "{out}");
    assert!(!out.contains("generated passwords"), "{out}");
    assert_eq!(
        fingerprint(&su_app).await,
        before,
        "a second run is a no-op"
    );
    let mut tx = p.begin(a).await.expect("begin after rerun");
    assert_eq!(
        tx.query("SELECT body FROM notes", &[])
            .await
            .expect("select")
            .len(),
        1,
        "the installed key still works"
    );
    tx.commit().await.expect("commit");

    // tenancy migrate on a catalog older than this binary says how to bring it up.
    let latest = tenancy_catalog::MIGRATIONS
        .last()
        .expect("migrations")
        .version;
    let row = su_app
        .query_one(
            "DELETE FROM tenancy_catalog.schema_migrations WHERE version = $1 RETURNING name, checksum, duration_ms",
            &[&latest],
        )
        .await
        .expect("pretend an older catalog");
    let o = tenancy(&["migrate"], &[("DATABASE_URL", &owner_url)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "the catalog is at version {} and this tenancy needs {latest}",
            latest - 1
        )) && err.contains("tenancy bootstrap --database-url"),
        "{err}"
    );
    su_app
        .execute(
            "INSERT INTO tenancy_catalog.schema_migrations (version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4)",
            &[&latest, &row.get::<_, String>(0), &row.get::<_, String>(1), &row.get::<_, f64>(2)],
        )
        .await
        .expect("restore");

    // A run that stopped after its first phase (roles and schemas committed, no runtime,
    // no catalog) is completed by the next.
    su.batch_execute("CREATE DATABASE app2 OWNER admin")
        .await
        .expect("app2");
    let mut admin2 = tenancy_pg::connect(&cluster.config_as("admin", "app2"))
        .await
        .expect("admin on app2");
    let state = server::inspect(&admin2).await.expect("inspect");
    let plan = server::plan(
        &state,
        &server::RolePasswords::default(),
        None,
        ContextKey::from_bytes("k1".parse().expect("kid"), [7; 32]),
    )
    .expect("plan");
    server::apply_setup(&mut admin2, &plan)
        .await
        .expect("phase 1 only");
    assert!(bootstrap::context_impl(&admin2)
        .await
        .expect("impl")
        .is_none());
    let o = tenancy(
        &[
            "bootstrap",
            "--database-url",
            &cluster.url_as("admin", "app2"),
        ],
        &[],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(bootstrap::context_impl(&admin2)
        .await
        .expect("impl")
        .is_some());
    assert!(server::missing(&admin2).await.expect("missing").is_none());

    // Set up, `tenancy serve` starts and registers the clusters its configuration declares.
    let dir = std::env::temp_dir().join(format!("tenancy-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("tenancy.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:0\"\nworkers = 1\n[region_names]\neu-west = \"Europe\"\n\
             [[clusters]]\nname = \"pg-eu-1\"\nregion = \"eu-west\"\nurl = \"host={} port={} dbname=app\"\ncapacity = 100\n",
            cluster.data_dir().display(),
            cluster.port()
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenancy"))
        .args(["serve", "--config"])
        .arg(&file)
        .env("DATABASE_URL", &owner_url)
        .env("TENANCY_CONTEXT_KEY_HEX", key.material_hex())
        .env("TENANCY_CLUSTER_ADMIN_USER", "admin")
        .env_remove("TENANCY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let started = Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(60) {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("tenancy control plane on") => {
                up = true;
                break;
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    let _ = child.kill();
    let status = child.wait();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(up, "serve did not start ({status:?}):\n{err}");
    let r = su_app
        .query_one(
            "SELECT c.region || ':' || c.dbname || ':' || c.capacity || ':' || r.display_name
               FROM tenancy_catalog.clusters c JOIN tenancy_catalog.regions r ON r.id = c.region
              WHERE c.name = 'pg-eu-1'",
            &[],
        )
        .await
        .expect("declared cluster registered");
    assert_eq!(r.get::<_, String>(0), "eu-west:app:100:Europe");
    let _ = std::fs::remove_dir_all(&dir);
    drop(p);
    cluster.stop().await;
}

/// A server that takes TCP connections over TLS only: `tenancy bootstrap` connects with
/// `sslmode=verify-full` (the CA from `sslrootcert`, the host name checked), and the
/// connection string it prints for `tenancy serve` keeps those settings.
#[tokio::test]
async fn bootstrap_reaches_a_tls_only_server_with_verify_full_and_keeps_tls_in_what_it_prints() {
    let cluster = Cluster::start(ClusterOptions {
        tls: Some(tenancy_pg::ClusterTls::default()),
        ..ClusterOptions::for_tests()
    })
    .await
    .expect("TLS cluster");
    let su = cluster.connect("postgres").await.expect("superuser");
    for sql in [
        format!(
            "ALTER ROLE {} PASSWORD 'bootstrap-tls'",
            cluster.superuser()
        ),
        "CREATE DATABASE app".to_owned(),
    ] {
        su.batch_execute(&sql).await.expect("set-up");
    }
    let ca = cluster.tls_ca_file().expect("CA file");
    let url = |mode: &str| {
        format!(
            "host=localhost port={} user={} password=bootstrap-tls dbname=app sslmode={mode} sslrootcert={}",
            cluster.port(),
            cluster.superuser(),
            ca.display()
        )
    };

    // Over plaintext the server refuses TCP: the failure names the connection, nothing is
    // created.
    let out = tenancy(&["bootstrap", "--database-url", &url("disable")], &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "plaintext must fail: {err}");
    assert!(err.contains("connecting to --database-url"), "{err}");
    assert!(!role_exists(&su, RUNTIME_ROLE).await, "nothing created");

    let out = tenancy(&["bootstrap", "--database-url", &url("verify-full")], &[]);
    let (stdout, err) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "bootstrap over TLS: {stdout}\n{err}"
    );
    assert!(
        role_exists(&su, RUNTIME_ROLE).await,
        "roles created over TLS"
    );
    assert!(
        stdout.contains("sslmode=verify-full")
            && stdout.contains(&format!("sslrootcert={}", ca.display())),
        "the printed connection string keeps TLS: {stdout}"
    );
    cluster.stop().await;
}
