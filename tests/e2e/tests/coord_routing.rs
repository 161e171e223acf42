//! Direct-to-master routing on a real 6-node Redis Cluster: single-slot calls skip the cluster
//! client, a slot moved to another master is followed (the call is sent again through the
//! cluster client, then the table is read again), and `WAIT` still counts the writes that went
//! out on the direct connections.

mod coord_common;

use std::time::Duration;

use coord_common::{Fixture, eventually, task_uid};
use maos_core::coord::keys::slot_of;
use maos_core::coord::state::CasOutcome;
use maos_e2e::launch::redis::RedisCluster;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn cluster_of(fx: &Fixture) -> &RedisCluster {
    match &fx.backend {
        coord_common::Backend::Cluster(c) => c,
        coord_common::Backend::Standalone(_) => panic!("these tests need the cluster"),
    }
}

fn node(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .expect("node url")
        .get_connection()
        .expect("connect to node")
}

fn node_id(url: &str) -> String {
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query(&mut node(url))
        .expect("CLUSTER MYID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_slot_calls_go_straight_to_the_master() {
    let fx = Fixture::cluster().await;
    let state = fx.pool().task(&task_uid()).state();
    let before = fx.redis.route_stats().expect("cluster handles route");

    let mut version = 0;
    for i in 0..200u32 {
        match state
            .cas("counter", version, i.to_string().as_bytes())
            .await
            .expect("cas")
        {
            CasOutcome::Written { version: v } => version = v,
            other => panic!("uncontended CAS lost: {other:?}"),
        }
    }

    let after = fx.redis.route_stats().expect("stats");
    assert!(
        after.direct - before.direct >= 200,
        "only {} of 200 CAS calls went direct",
        after.direct - before.direct
    );
    assert_eq!(
        after.rerouted, before.rerouted,
        "nothing moved, nothing rerouted"
    );
    assert_eq!(state.get("counter").await.expect("get").version, version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_moved_to_another_master_is_followed() {
    let fx = Fixture::cluster().await;
    let cluster = cluster_of(&fx);
    let urls = cluster.urls();
    let task = fx.pool().task(&task_uid());
    let kv = task.keys().kv();
    let slot = slot_of(&kv);
    let source = cluster.master_of_key(&kv).expect("master of the task");
    let target = (0..3).find(|&i| i != source).expect("another master");
    let (source_id, target_id) = (node_id(&urls[source]), node_id(&urls[target]));

    // The slot is empty (the task has written nothing), so it moves without MIGRATE: the
    // importing/migrating handshake, then every master learns the new owner.
    let setslot = |url: &str, args: &[&str]| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot);
        for a in args {
            cmd.arg(*a);
        }
        let () = cmd.query(&mut node(url)).expect("CLUSTER SETSLOT");
    };
    setslot(&urls[target], &["IMPORTING", &source_id]);
    setslot(&urls[source], &["MIGRATING", &target_id]);
    setslot(&urls[target], &["NODE", &target_id]);
    setslot(&urls[source], &["NODE", &target_id]);
    for (i, url) in urls.iter().enumerate().take(3) {
        if i != source && i != target {
            setslot(url, &["NODE", &target_id]);
        }
    }

    let before = fx.redis.route_stats().expect("stats");
    let state = task.state();
    state
        .put("moved", b"here")
        .await
        .expect("put after the move");
    let after_first = fx.redis.route_stats().expect("stats");
    assert!(
        after_first.rerouted > before.rerouted,
        "the stale table should have sent the put to the old master: {before:?} → {after_first:?}"
    );
    let stored: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&kv)
        .arg("moved")
        .query(&mut node(&urls[target]))
        .expect("HGET on the new master");
    assert_eq!(
        stored.as_deref(),
        Some(&b"here"[..]),
        "value is on the new master"
    );

    // Once the table is read again, calls go direct to the new master.
    eventually("calls to go direct again", Duration::from_secs(10), || {
        let state = state.clone();
        let redis = fx.redis.clone();
        async move {
            let before = redis.route_stats()?;
            state.put("moved", b"again").await.ok()?;
            let after = redis.route_stats()?;
            (after.direct > before.direct && after.rerouted == before.rerouted).then_some(())
        }
    })
    .await;
    assert!(fx.redis.route_stats().expect("stats").table_loads >= 2);
    let stored: Option<Vec<u8>> = redis::cmd("HGET")
        .arg(&kv)
        .arg("moved")
        .query(&mut node(&urls[target]))
        .expect("HGET on the new master");
    assert_eq!(stored.as_deref(), Some(&b"again"[..]));
}

/// Resumes a stopped process when the test ends, however it ends.
struct Resume(Pid);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_counts_the_writes_of_the_direct_connections() {
    let fx = Fixture::cluster().await;
    let cluster = cluster_of(&fx);
    let task = fx.pool().task(&task_uid());
    let state = task.state();
    let master = cluster.master_of_key(&task.keys().kv()).expect("master");
    // Node i + 3 replicates node i in a fresh cluster.
    let replica_pid = cluster.node_pids()[master + 3].expect("replica runs");

    state.put("k", b"replicated").await.expect("put");
    // Redis 7 lets WAIT wait for everything the master had written when the connection's
    // previous command ran, so a PING first makes this a check that the replica is caught up.
    let mut raw = node(&cluster.urls()[master]);
    let () = redis::cmd("PING").query(&mut raw).expect("PING");
    let caught_up: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut raw)
        .expect("WAIT");
    assert_eq!(caught_up, 1, "a healthy replica acknowledges the write");

    let pid = Pid::from_raw(i32::try_from(replica_pid).expect("pid"));
    kill(pid, Signal::SIGSTOP).expect("stop the replica");
    let _resume = Resume(pid);
    let before = fx.redis.route_stats().expect("stats");
    state.put("k", b"not yet replicated").await.expect("put");
    assert!(
        fx.redis.route_stats().expect("stats").direct > before.direct,
        "the write went over the direct connection"
    );
    // The cluster client's own connection to that master saw nothing since the replica caught
    // up, so WAIT sent only there would count the stopped replica.
    let mut con = fx.redis.connection();
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(300)
        .query_async(&mut con)
        .await
        .expect("WAIT");
    assert_eq!(
        replicated, 0,
        "the stopped replica has not acknowledged the write"
    );
}
