//! The Redis launcher starts real servers on loopback, forms a healthy cluster, and leaves no
//! process behind.

use std::time::Duration;

use maos_e2e::launch::redis::{RedisCluster, RedisServer};

fn process_exists(pid: u32) -> bool {
    // /proc/<pid> disappears once the killed child has been reaped.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn standalone_server_answers_and_is_killed_on_drop() {
    let server = RedisServer::start().expect("start redis-server");
    let client = redis::Client::open(server.url()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let pong: String = redis::cmd("PING").query(&mut con).expect("ping");
    assert_eq!(pong, "PONG");
    let bind: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("bind")
        .query(&mut con)
        .expect("config get");
    assert_eq!(bind.get(1).map(String::as_str), Some("127.0.0.1"));
    let pid = server.pid().expect("running");
    drop(con);
    drop(server);
    assert!(
        !process_exists(pid),
        "redis-server {pid} outlived its handle"
    );
}

#[test]
fn cluster_has_three_masters_with_one_replica_each_and_all_slots() {
    let cluster = RedisCluster::start().expect("start cluster");
    assert_eq!(cluster.urls().len(), 6);
    let client = redis::Client::open(cluster.urls()[0].as_str()).expect("url");
    let mut con = client.get_connection().expect("connect");
    let info: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut con)
        .expect("cluster info");
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    assert!(info.contains("cluster_known_nodes:6"), "{info}");
    assert!(info.contains("cluster_size:3"), "{info}");
    // And as a person would check it, with the real redis-cli.
    let cli = std::process::Command::new("redis-cli")
        .args([
            "-c",
            "-p",
            &cluster.ports()[0].to_string(),
            "cluster",
            "info",
        ])
        .output()
        .expect("redis-cli runs");
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("cluster_state:ok"),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut con)
        .expect("cluster nodes");
    assert_eq!(nodes.lines().filter(|l| l.contains("slave")).count(), 3);
    let pids: Vec<u32> = cluster.node_pids().into_iter().flatten().collect();
    assert_eq!(pids.len(), 6);
    drop(con);
    drop(cluster);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "cluster node {pid} outlived its handle"
        );
    }
}

#[test]
fn killed_master_is_replaced_by_its_replica() {
    let mut cluster = RedisCluster::start().expect("start cluster");
    let key = "{failover-probe}";
    let master = cluster.master_of_key(key).expect("master of key");
    cluster.kill_node(master);
    assert_eq!(cluster.node_pids()[master], None);
    cluster
        .wait_healthy(Duration::from_secs(30))
        .expect("cluster heals after failover");
    let new_master = cluster.master_of_key(key).expect("new master");
    assert_ne!(new_master, master);
}
