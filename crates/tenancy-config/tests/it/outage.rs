//! A catalog outage: the client keeps serving its last snapshot and says it is stale.

use std::time::Duration;

use tenancy_config::model::Flag;
use tenancy_config::{ClientOptions, ConfigClient};
use tenancy_config_service::{ChangeMeta, Store};
use tenancy_pg::{Cluster, ClusterOptions};
use tenancy_sdk::bootstrap::{CONFIG_READER_ROLE, OWNER_ROLE};

use crate::support::*;

#[tokio::test]
async fn catalog_outage_serves_last_snapshot_and_reports_stale() {
    // A private cluster this test may stop.
    let cluster = Cluster::start(ClusterOptions::for_tests())
        .await
        .expect("cluster");
    let su = cluster.connect("postgres").await.expect("superuser");
    su.batch_execute("CREATE DATABASE app")
        .await
        .expect("create database");
    install(&cluster, "app").await.expect("install");
    let t = tenant_on(cluster.config_as(OWNER_ROLE, "app"), "pro", "eu-west").await;
    let store = Store::new(cluster.config_as(OWNER_ROLE, "app"), 2).expect("store");
    let mut f = Flag::boolean("f".parse().expect("key"));
    f.default_variant = "on".parse().expect("v");
    store
        .put_flag(&f, &ChangeMeta::new("test", ""))
        .await
        .expect("flag");
    let client = ConfigClient::connect(
        cluster.config_as(CONFIG_READER_ROLE, "app"),
        ClientOptions {
            max_staleness: Duration::from_secs(30),
            ..fast_opts()
        },
    )
    .await
    .expect("client");
    assert!(client.is_enabled(t, "f"));
    assert!(!client.status().stale);

    cluster.stop().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !client.status().stale {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never noticed the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = client.status();
    assert!(!st.connected);
    assert!(st.last_error.is_some(), "{st:?}");
    // Still serving the last snapshot.
    assert!(client.is_enabled(t, "f"));
    // Reconnect attempts keep failing without disturbing evaluation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.is_enabled(t, "f"));
    assert!(client.status().stale);
    // Writes fail as "unavailable" (503 over HTTP), not as bad requests.
    let err = store
        .put_flag(&f, &ChangeMeta::new("test", ""))
        .await
        .expect_err("catalog is down");
    assert!(err.is_unavailable(), "{err}");
    let problem = tenancy_config_service::ApiError::from(err).0;
    assert_eq!(problem.status, 503);
}

#[tokio::test]
async fn listener_reconnects_and_reloads_what_it_missed() {
    let db = fresh_db().await;
    let store = store(&db);
    let t = tenant(&db, "pro", "eu-west").await;
    store
        .put_flag(
            &Flag::boolean("f".parse().expect("key")),
            &ChangeMeta::new("test", ""),
        )
        .await
        .expect("flag");
    // A slow first reconnect, so the change below surely happens while it is away.
    let client = ConfigClient::connect(
        db.config_as(CONFIG_READER_ROLE),
        ClientOptions {
            backoff: Duration::from_millis(500),
            ..fast_opts()
        },
    )
    .await
    .expect("client");
    assert!(!client.is_enabled(t, "f"));
    // Cut the listener's connection; change the flag while it is away.
    let su = db.connect_superuser().await.expect("superuser");
    let mut f = Flag::boolean("f".parse().expect("key"));
    f.default_variant = "on".parse().expect("v");
    su.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND usename = $1 AND pid <> pg_backend_pid()",
        &[&CONFIG_READER_ROLE],
    )
    .await
    .expect("terminate listener");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.status().connected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the client did not notice"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(client.status().stale);
    let v = store
        .put_flag(&f, &ChangeMeta::new("test", "while the listener was away"))
        .await
        .expect("flag");
    // After reconnecting, the client reloads everything, including the missed change.
    assert!(
        client.wait_for_version(v, Duration::from_secs(10)).await,
        "{:?}",
        client.status()
    );
    assert!(client.is_enabled(t, "f"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while client.status().stale {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still stale: {:?}",
            client.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
