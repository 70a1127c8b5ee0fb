//! Integration tests of the PostgreSQL harness, against real clusters.

mod extension;

use tenancy_pg::testing::TemplateDb;
use tenancy_pg::{Cluster, ClusterOptions};

static TPL: TemplateDb = TemplateDb::new("harness_tpl");

#[tokio::test]
async fn two_clusters_run_at_once_and_stop_cleanly() {
    let a = Cluster::start(ClusterOptions {
        tcp_port: Some(0),
        ..ClusterOptions::for_tests()
    })
    .await
    .expect("cluster a");
    let b = Cluster::start(ClusterOptions::for_tests())
        .await
        .expect("cluster b");
    assert_ne!(a.data_dir(), b.data_dir());
    assert!(a.listens_on_tcp());
    for c in [&a, &b] {
        let client = c.connect("postgres").await.expect("connect");
        let row = client
            .query_one("SHOW server_version_num", &[])
            .await
            .expect("version");
        let v: String = row.get(0);
        assert!(v.parse::<u32>().expect("number") >= 140000);
    }
    // TCP is really listening on loopback.
    let tcp = std::net::TcpStream::connect(("127.0.0.1", a.port()));
    assert!(tcp.is_ok(), "TCP port {} not reachable", a.port());
    let dir = a.data_dir().to_path_buf();
    a.stop().await;
    assert!(
        !dir.exists(),
        "temporary cluster directory {} should be removed",
        dir.display()
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", b.port())).is_err() || !b.listens_on_tcp());
}

#[tokio::test]
async fn fresh_databases_are_clones_of_the_template_and_independent() {
    let setup = |cluster: &'static Cluster, db: String| async move {
        let c = cluster.connect(&db).await?;
        c.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
            .await?;
        Ok(())
    };
    let one = TPL.fresh(setup).await.expect("db one");
    let two = TPL.fresh(setup).await.expect("db two");
    assert_ne!(one.name, two.name);
    let c1 = one.connect_superuser().await.expect("c1");
    c1.batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect("insert");
    let c2 = two.connect_superuser().await.expect("c2");
    let n: i64 = c2
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        n, 1,
        "the second clone must not see the first clone's writes"
    );
}

#[test]
fn missing_binaries_name_the_package_to_install() {
    let empty = std::env::temp_dir().join("tenancy-empty-bin");
    std::fs::create_dir_all(&empty).expect("dir");
    let err =
        tenancy_pg::PgBinaries::locate_in(Some(empty.clone().into()), Some(empty.into()), &[], &[])
            .expect_err("nothing to find");
    let text = err.to_string();
    assert!(text.contains("apt-get install postgresql"), "{text}");
    assert!(text.contains("PG_BIN"), "{text}");
}

#[test]
fn finds_the_installed_binaries() {
    let b = tenancy_pg::PgBinaries::locate().expect("this machine has PostgreSQL server binaries");
    assert!(b.major() >= 14);
    assert!(b.bin("initdb").is_file());
}
