//! `tenancy serve` and `tenancy migrate` behind PgBouncer in transaction mode: their
//! catalog connections need a session of their own (LISTEN, prepared statements, advisory
//! locks), so both refuse the pooler and name the fix instead of failing later with a
//! lost prepared statement.

use tenancy_pg::{Cluster, ClusterOptions, PgBouncer, PgBouncerOptions};
use tenancy_sdk::bootstrap::{self, OWNER_ROLE};

use crate::bootstrap::tenancy;

#[tokio::test]
async fn serve_and_migrate_refuse_a_transaction_pooler_and_name_the_fix() {
    let cluster = Cluster::start(ClusterOptions::for_tests())
        .await
        .expect("cluster");
    let su = cluster.connect("postgres").await.expect("superuser");
    bootstrap::bootstrap_cluster(&su).await.expect("roles");
    let bouncer = PgBouncer::start(
        &cluster,
        PgBouncerOptions {
            users: vec![OWNER_ROLE.to_owned()],
            ..Default::default()
        },
    )
    .await
    .expect("pgbouncer");
    let url = bouncer.url_as(OWNER_ROLE, "postgres");
    // The same URL works as a plain connection: the refusal is the check, not a failure.
    let plain = tenancy_pg::connect(&bouncer.config_as(OWNER_ROLE, "postgres"))
        .await
        .expect("a plain connection through pgbouncer");
    plain.simple_query("SELECT 1").await.expect("query");

    let o = tenancy(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("DATABASE_URL", &url),
            ("TENANCY_CONTEXT_KEY_HEX", &"ab".repeat(32)),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("through a connection pooler") && err.contains("reaches PostgreSQL directly"),
        "{err}"
    );

    let o = tenancy(&["migrate"], &[("DATABASE_URL", &url)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("through a connection pooler") && err.contains("reaches PostgreSQL directly"),
        "{err}"
    );
    bouncer.stop().await;
}
