//! TLS to PostgreSQL: tenant pools (spliced openings over TLS), certificate checks and
//! client certificates, against a private cluster serving TLS with a CA made for it.
//! The runtime role logs in over TCP with a client certificate only (pg_hba `cert`);
//! the superuser with a password.

use std::path::{Path, PathBuf};

use tenancy_pg::{Cluster, ClusterOptions, ClusterTls};
use tenancy_sdk::bootstrap::{self, ContextImpl, OWNER_ROLE, RUNTIME_ROLE};
use tenancy_sdk::{
    ClusterCredentials, PgConfig, PoolOptions, RootCerts, Router, RouterOptions, SslMode, TenantId,
    TenantPool, Tls, TlsSettings,
};
use tokio::sync::OnceCell;

use crate::support::{key, APP_SCHEMA};

const DB: &str = "tls_app";
const SUPERUSER_PASSWORD: &str = "tls-test-password";

/// The TLS cluster of this test process, with a database set up like `fresh_db`'s and
/// a client certificate for the runtime role.
struct TlsEnv {
    cluster: Cluster,
    ca: PathBuf,
    app_cert: PathBuf,
    app_key: PathBuf,
}

static ENV: OnceCell<TlsEnv> = OnceCell::const_new();

async fn env() -> &'static TlsEnv {
    ENV.get_or_init(|| async {
        let cluster = Cluster::start(ClusterOptions {
            tls: Some(ClusterTls {
                cert_roles: vec![RUNTIME_ROLE.into()],
            }),
            ..ClusterOptions::for_tests()
        })
        .await
        .expect("TLS cluster");
        let su = cluster.connect("postgres").await.expect("superuser");
        for sql in [
            format!(
                "ALTER ROLE {} PASSWORD '{SUPERUSER_PASSWORD}'",
                cluster.superuser()
            ),
            format!("CREATE DATABASE {DB}"),
        ] {
            su.batch_execute(&sql).await.expect("set-up");
        }
        let su = cluster.connect(DB).await.expect("superuser");
        bootstrap::bootstrap_cluster(&su).await.expect("roles");
        bootstrap::bootstrap_database(&su, DB)
            .await
            .expect("database");
        let mut owner = tenancy_pg::connect(&cluster.config_as(OWNER_ROLE, DB))
            .await
            .expect("owner");
        bootstrap::install_runtime(&owner, &key())
            .await
            .expect("runtime");
        tenancy_catalog::migrate(&mut owner).await.expect("catalog");
        owner.batch_execute(APP_SCHEMA).await.expect("app schema");
        let ca = cluster.tls_ca_file().expect("CA file");
        let (app_cert, app_key) = cluster
            .issue_client_cert(RUNTIME_ROLE)
            .expect("client certificate");
        TlsEnv {
            cluster,
            ca,
            app_cert,
            app_key,
        }
    })
    .await
}

impl TlsEnv {
    /// The runtime role over TCP to `localhost`, verify-full, with its client certificate.
    fn app_url(&self) -> String {
        format!(
            "host=localhost port={} user={RUNTIME_ROLE} dbname={DB} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            self.cluster.port(),
            self.ca.display(),
            self.app_cert.display(),
            self.app_key.display()
        )
    }

    /// The superuser over TCP to `localhost` with a password, and `extra` settings.
    fn su_url(&self, extra: &str) -> String {
        self.su_url_to("host=localhost", extra)
    }

    /// The superuser over TCP with a password, to `host` (`host=… hostaddr=…`).
    fn su_url_to(&self, host: &str, extra: &str) -> String {
        format!(
            "{host} port={} user={} password={SUPERUSER_PASSWORD} dbname=postgres {extra}",
            self.cluster.port(),
            self.cluster.superuser(),
        )
    }
}

/// Whether the connection `client` is on uses TLS, as the server sees it.
async fn server_sees_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

async fn connect_err(url: &str) -> String {
    let cfg = PgConfig::parse(url).expect("settings");
    match tenancy_conn::connect(&cfg).await {
        Ok(_) => panic!("connected with {url}"),
        Err(e) => e.to_string(),
    }
}

/// A CA the server's certificate was not issued by.
fn other_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "some other CA");
    let cert = params.self_signed(&key).expect("self-signed");
    let path = dir.join(format!("other-ca-{}.crt", std::process::id()));
    std::fs::write(&path, cert.pem()).expect("write CA");
    path
}

#[tokio::test]
async fn tenant_transactions_run_over_verify_full_with_a_client_certificate() {
    let env = env().await;
    let owner = tenancy_pg::connect(&env.cluster.config_as(OWNER_ROLE, DB))
        .await
        .expect("owner");
    assert_eq!(
        bootstrap::context_impl(&owner).await.expect("impl"),
        Some(ContextImpl::Native),
        "the TLS cluster loads the native context, so the implicit read-only opening is what runs"
    );
    let cfg = PgConfig::parse(&env.app_url()).expect("settings");
    assert_eq!(cfg.ssl_mode(), SslMode::VerifyFull);
    let pool = TenantPool::new(
        cfg,
        key(),
        PoolOptions {
            max_size: 2,
            ..Default::default()
        },
    )
    .expect("pool");
    let (a, b) = (TenantId::new_random(), TenantId::new_random());

    // Read-write: BEGIN and the context spliced in front of the INSERT, over TLS.
    let mut tx = pool.begin(a).await.expect("begin");
    tx.execute(
        "INSERT INTO customers (email, name) VALUES ('x@a.example', 'over tls')",
        &[],
    )
    .await
    .expect("insert");
    let ssl: bool = tx
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl, "the tenant connection is encrypted");
    tx.commit().await.expect("commit");

    // Read-only on the native context: the opening shares the statement's Sync.
    for _ in 0..3 {
        let mut tx = pool.begin_read_only(a).await.expect("begin");
        let names: Vec<String> = tx
            .query("SELECT name FROM customers", &[])
            .await
            .expect("read")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(names, vec!["over tls".to_owned()]);
        tx.commit().await.expect("commit");
    }
    let mut tx = pool.begin_read_only(b).await.expect("begin");
    assert!(tx
        .query("SELECT name FROM customers", &[])
        .await
        .expect("read")
        .is_empty());
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let env = env().await;
    let other = other_ca(env.ca.parent().expect("dir"));
    for mode in ["verify-ca", "verify-full"] {
        let e =
            connect_err(&env.su_url(&format!("sslmode={mode} sslrootcert={}", other.display())))
                .await;
        assert!(
            e.contains("TLS handshake with localhost")
                && e.contains("not signed by a CA in sslrootcert"),
            "{e}"
        );
    }
    // The tenant pool reports the same when a transaction needs a connection.
    let url = env
        .app_url()
        .replace(&env.ca.display().to_string(), &other.display().to_string());
    let e = pool_connect_error(&url).await;
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_lacks_and_verify_ca_accepts_it() {
    let env = env().await;
    let wrong = "host=not-the-server.invalid hostaddr=127.0.0.1";
    let ca = env.ca.display();
    let e =
        connect_err(&env.su_url_to(wrong, &format!("sslmode=verify-full sslrootcert={ca}"))).await;
    assert!(
        e.contains("does not name the host \"not-the-server.invalid\""),
        "{e}"
    );
    let cfg =
        PgConfig::parse(&env.su_url_to(wrong, &format!("sslmode=verify-ca sslrootcert={ca}")))
            .expect("settings");
    let client = tenancy_conn::connect(&cfg).await.expect("verify-ca");
    assert!(server_sees_tls(&client).await);
    // The address the certificate names passes verify-full.
    let cfg = PgConfig::parse(&env.su_url_to(
        "host=127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={ca}"),
    ))
    .expect("settings");
    let client = tenancy_conn::connect(&cfg)
        .await
        .expect("verify-full by address");
    assert!(server_sees_tls(&client).await);
}

#[tokio::test]
async fn the_runtime_role_without_its_client_certificate_is_refused() {
    let env = env().await;
    let url = format!(
        "host=localhost port={} user={RUNTIME_ROLE} dbname={DB} sslmode=verify-full sslrootcert={}",
        env.cluster.port(),
        env.ca.display()
    );
    let e = connect_err(&url).await;
    assert!(e.contains("certificate"), "{e}");
    // A client certificate for another role does not log in as the runtime role.
    let (cert, key_file) = env
        .cluster
        .issue_client_cert("someone_else")
        .expect("certificate");
    let e = connect_err(&format!(
        "{url} sslcert={} sslkey={}",
        cert.display(),
        key_file.display()
    ))
    .await;
    assert!(e.contains("certificate authentication failed"), "{e}");
}

#[tokio::test]
async fn settings_that_cannot_work_are_refused_before_connecting() {
    let env = env().await;
    let e = PgConfig::parse(&env.su_url("sslmode=verify-full"))
        .expect_err("no root certificate")
        .to_string();
    assert!(e.contains("needs sslrootcert"), "{e}");
    let e = PgConfig::parse(&env.su_url("sslmode=verify-ca sslrootcert=/nonexistent/ca.pem"))
        .expect_err("missing file")
        .to_string();
    assert!(
        e.contains("sslrootcert=/nonexistent/ca.pem") && e.contains("cannot read"),
        "{e}"
    );
    let e = PgConfig::parse(&env.su_url(&format!(
        "sslmode=verify-full sslrootcert={} sslcert={}",
        env.ca.display(),
        env.app_cert.display()
    )))
    .expect_err("certificate without key")
    .to_string();
    assert!(e.contains("sslcert is given without sslkey"), "{e}");
    // A private key others may read is refused, as libpq does.
    let loose = env
        .ca
        .with_file_name(format!("loose-{}.key", std::process::id()));
    std::fs::copy(&env.app_key, &loose).expect("copy key");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let e = PgConfig::parse(&format!(
        "{} sslcert={} sslkey={}",
        env.su_url(&format!(
            "sslmode=verify-full sslrootcert={}",
            env.ca.display()
        )),
        env.app_cert.display(),
        loose.display()
    ))
    .expect_err("loose key")
    .to_string();
    assert!(e.contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn prefer_uses_tls_when_offered_and_unix_sockets_never_do() {
    let env = env().await;
    let cfg = PgConfig::parse(&env.su_url("sslmode=prefer")).expect("settings");
    let client = tenancy_conn::connect(&cfg).await.expect("prefer");
    assert!(server_sees_tls(&client).await);
    // libpq's rule: a Unix socket carries no TLS whatever sslmode says (the server
    // offers none there); the socket's own permissions protect it.
    let cfg = PgConfig::parse(&format!(
        "host={} port={} user={} dbname=postgres sslmode=verify-full sslrootcert={}",
        env.cluster.socket_dir().display(),
        env.cluster.port(),
        env.cluster.superuser(),
        env.ca.display()
    ))
    .expect("settings");
    let client = tenancy_conn::connect(&cfg).await.expect("socket");
    assert!(!server_sees_tls(&client).await);
}

#[tokio::test]
async fn require_against_a_server_without_tls_fails_clearly() {
    let cluster = Cluster::start(ClusterOptions {
        tcp_port: Some(0),
        ..ClusterOptions::for_tests()
    })
    .await
    .expect("plain cluster");
    let url = format!(
        "host=127.0.0.1 port={} user={} password=x dbname=postgres",
        cluster.port(),
        cluster.superuser()
    );
    for mode in ["require", "verify-full"] {
        let mut url = format!("{url} sslmode={mode}");
        if mode == "verify-full" {
            url.push_str(&format!(" sslrootcert={}", env().await.ca.display()));
        }
        let e = connect_err(&url).await;
        assert!(
            e.contains("does not accept TLS connections")
                && e.contains(&format!("sslmode={mode} requires TLS")),
            "{e}"
        );
    }
    // A tenant pool says the same when it opens a connection.
    let e = pool_connect_error(&format!("{url} sslmode=require")).await;
    assert!(e.contains("does not accept TLS connections"), "{e}");
}

#[tokio::test]
async fn the_router_reaches_tenant_clusters_with_its_cluster_tls_settings() {
    let env = env().await;
    let mut owner = tenancy_pg::connect(&env.cluster.config_as(OWNER_ROLE, DB))
        .await
        .expect("owner");
    let region: tenancy_core::RegionId = "tls-region".parse().expect("region");
    tenancy_catalog::add_region(&owner, &region, "TLS")
        .await
        .expect("region");
    // The catalog says where the cluster is: a host name its certificate lists.
    tenancy_catalog::add_cluster(
        &owner,
        &tenancy_catalog::NewCluster {
            name: "pg-tls".into(),
            region: region.clone(),
            location: tenancy_catalog::ClusterLocation {
                host: "localhost".into(),
                port: env.cluster.port(),
                dbname: DB.into(),
            },
            capacity: 10,
        },
    )
    .await
    .expect("cluster");
    let tenant = tenancy_catalog::create_tenant(
        &mut owner,
        &tenancy_catalog::NewTenant {
            id: None,
            slug: "tls-acme".parse().expect("slug"),
            display_name: "TLS Acme".into(),
            plan: "pro".parse().expect("plan"),
            region,
            placement: tenancy_core::Placement::Pooled,
        },
        "test",
    )
    .await
    .expect("tenant")
    .id;
    tenancy_catalog::set_state(
        &mut owner,
        tenant,
        tenancy_core::TenantState::Active,
        "test",
        "ready",
    )
    .await
    .expect("activate");

    let cluster_tls = |root: &Path| {
        Tls::new(TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCerts::File(root.to_owned())),
            client_cert: Some(env.app_cert.clone()),
            client_key: Some(env.app_key.clone()),
        })
        .expect("cluster TLS")
    };
    let router = |tls: Tls| {
        Router::new(
            PgConfig::parse(&env.app_url()).expect("catalog settings"),
            key(),
            ClusterCredentials {
                user: RUNTIME_ROLE.into(),
                password: None,
            },
            RouterOptions {
                cluster_tls: tls,
                ..Default::default()
            },
        )
        .expect("router")
    };
    let mut tx = router(cluster_tls(&env.ca))
        .begin(tenant)
        .await
        .expect("begin");
    let ssl: bool = tx
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0);
    assert!(ssl);
    tx.commit().await.expect("commit");

    // Another CA: the tenant cluster is not trusted.
    let other = other_ca(env.ca.parent().expect("dir"));
    let e = match router(cluster_tls(&other)).begin(tenant).await {
        Ok(mut tx) => tx
            .query("SELECT 1", &[])
            .await
            .expect_err("untrusted cluster")
            .to_string(),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("not signed by a CA in sslrootcert"), "{e}");
}

/// The error a tenant pool built from `url` gives for the first transaction, whose
/// connection must fail (a pool accepts the settings; connecting is what fails).
async fn pool_connect_error(url: &str) -> String {
    let pool = TenantPool::new(
        PgConfig::parse(url).expect("settings"),
        key(),
        PoolOptions::default(),
    )
    .expect("a pool accepts the settings");
    match pool.begin(TenantId::new_random()).await {
        Ok(mut tx) => tx
            .query("SELECT 1", &[])
            .await
            .expect_err("the connection must fail")
            .to_string(),
        Err(e) => e.to_string(),
    }
}
