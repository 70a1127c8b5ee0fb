//! `tenancy serve` on a catalog reached over TLS: a `postgres://` URL with
//! `sslmode=verify-full` and `sslrootcert`, to a cluster that refuses plaintext TCP.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tenancy_sdk::bootstrap::{self, CONFIG_READER_ROLE, OWNER_ROLE};

#[tokio::test]
async fn tenancy_serve_builds_and_serves_on_a_catalog_reached_over_verify_full() {
    let cluster = tenancy_pg::Cluster::start(tenancy_pg::ClusterOptions {
        tls: Some(tenancy_pg::ClusterTls::default()),
        ..tenancy_pg::ClusterOptions::for_tests()
    })
    .await
    .expect("TLS cluster");
    let su = cluster.connect("postgres").await.expect("superuser");
    su.batch_execute("CREATE DATABASE catalog")
        .await
        .expect("database");
    bootstrap::bootstrap_cluster(&su).await.expect("roles");
    su.batch_execute(&format!(
        "ALTER ROLE {OWNER_ROLE} PASSWORD 'owner-pw'; ALTER ROLE {CONFIG_READER_ROLE} PASSWORD 'reader-pw'"
    ))
    .await
    .expect("passwords");
    let su_cat = cluster.connect("catalog").await.expect("superuser");
    bootstrap::bootstrap_database(&su_cat, "catalog")
        .await
        .expect("bootstrap");
    let ca = cluster.tls_ca_file().expect("CA");
    let config = tenancy_control::ControlConfig {
        listen: "127.0.0.1:0".into(),
        database_url: Some(secrecy::SecretString::from(format!(
            "postgres://{OWNER_ROLE}:owner-pw@localhost:{}/catalog?sslmode=verify-full&sslrootcert={}",
            cluster.port(),
            ca.display()
        ))),
        context_key_id: "ctl".into(),
        context_key_hex: Some(secrecy::SecretString::from("ab".repeat(32))),
        config_reader_password: Some(secrecy::SecretString::from("reader-pw")),
        cluster_admin_user: cluster.superuser().to_owned(),
        workers: 1,
        ..tenancy_control::ControlConfig::default()
    };
    let app = tenancy_control::build(config).await.expect("build");
    let port = app.port();
    let stopper = app.stopper();
    let running = tokio::spawn(app.run_until_stopped());

    // A request that reads the catalog.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        b"GET /v1/signup/availability?slug=umbrella HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut reply = String::new();
    s.read_to_string(&mut reply).await.expect("read");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    // Every TCP session of the control plane on the catalog is encrypted.
    let (plain, tls): (i64, i64) = {
        let row = su_cat
            .query_one(
                "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl) \
                   FROM pg_catalog.pg_stat_activity a JOIN pg_catalog.pg_stat_ssl s USING (pid) \
                  WHERE a.client_addr IS NOT NULL AND a.usename IN ($1, $2)",
                &[&OWNER_ROLE, &CONFIG_READER_ROLE],
            )
            .await
            .expect("sessions");
        (row.get(0), row.get(1))
    };
    assert_eq!(plain, 0);
    assert!(
        tls >= 2,
        "owner and configuration reader sessions over TLS: {tls}"
    );
    let _ = stopper.send(true);
    running.await.expect("task").expect("served");
}
