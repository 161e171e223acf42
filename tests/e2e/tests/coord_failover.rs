//! Redis Cluster failover under load: a master is killed while agents write shared state by CAS
//! and enqueue work; the layer rides out the failover inside its retries, operations resume,
//! and every write acknowledged by a replica (WAIT 1) before the kill survives.

mod coord_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use coord_common::{eventually, task_uid, unique};
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::state::CasOutcome;
use maos_core::coord::{AgentName, Pool, PoolUid, Redis, RedisConfig, Topology};
use maos_core::dag::SubtaskName;
use maos_e2e::launch::redis::RedisCluster;

/// Writes made and replicated before the kill.
const BEFORE_KILL: u64 = 200;
/// Successful CAS writes required after the kill to call operations resumed.
const AFTER_KILL: u64 = 50;

fn work(i: u64) -> WorkItem {
    WorkItem {
        task: task_uid(),
        subtask: SubtaskName::new(&format!("s{i}")).expect("subtask"),
        attempt: 1,
        kind: WorkKind::Work,
        deadline_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_master_loses_no_replicated_write_and_operations_resume() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("launcher")
        .expect("start cluster");
    let redis = Redis::connect(RedisConfig::new(Topology::Cluster, cluster.urls()))
        .await
        .expect("connect");
    let pool = Pool::new(redis.clone(), &PoolUid::new(&unique("pool")).expect("uid"));
    let queue = pool.queue();
    queue.ensure_group().await.expect("group");
    let task = pool.task(&task_uid());
    let state = task.state();

    // Phase 1: writes acknowledged by a replica before anything fails.
    for i in 0..BEFORE_KILL {
        state
            .put(&format!("k{i}"), format!("v{i}").as_bytes())
            .await
            .expect("put");
    }
    let items: Vec<WorkItem> = (0..BEFORE_KILL).map(work).collect();
    queue.enqueue_many(&items).await.expect("enqueue");
    let mut con = redis.connection();
    // WAIT goes to every master (the reply is the minimum): each has a replica with our writes.
    let replicated: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut con)
        .await
        .expect("WAIT");
    assert!(replicated >= 1, "writes not replicated before the kill");

    // Phase 2: writers keep going while the task's master dies.
    let stop = Arc::new(AtomicBool::new(false));
    let cas_ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (state, stop, cas_ok, errors) = (
            state.clone(),
            Arc::clone(&stop),
            Arc::clone(&cas_ok),
            Arc::clone(&errors),
        );
        writers.push(tokio::spawn(async move {
            let key = format!("counter-{w}");
            while !stop.load(Ordering::SeqCst) {
                let current = match state.get(&key).await {
                    Ok(c) => c,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                };
                let next = current.version + 1;
                match state
                    .cas(&key, current.version, next.to_string().as_bytes())
                    .await
                {
                    Ok(CasOutcome::Written { .. }) => {
                        cas_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(CasOutcome::Conflict { .. }) => {}
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    let enqueued = Arc::new(AtomicU64::new(0));
    let enqueuer = {
        let (queue, stop, enqueued, errors) = (
            queue.clone(),
            Arc::clone(&stop),
            Arc::clone(&enqueued),
            Arc::clone(&errors),
        );
        tokio::spawn(async move {
            let mut i = BEFORE_KILL;
            while !stop.load(Ordering::SeqCst) {
                match queue.enqueue(&work(i)).await {
                    Ok(_) => {
                        enqueued.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    eventually("writers to be under way", Duration::from_secs(10), || {
        let n = cas_ok.load(Ordering::SeqCst);
        async move { (n >= 10).then_some(()) }
    })
    .await;

    let victim = cluster.master_of_key(&task.keys().kv()).expect("master");
    cluster.kill_node(victim);
    let at_kill = cas_ok.load(Ordering::SeqCst);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_healthy(Duration::from_secs(60))
            .map(|()| cluster)
    })
    .await
    .expect("waiter")
    .expect("cluster heals after failover");
    assert_ne!(
        cluster
            .master_of_key(&task.keys().kv())
            .expect("new master"),
        victim
    );
    eventually(
        "CAS writes to resume after failover",
        Duration::from_secs(30),
        || {
            let n = cas_ok.load(Ordering::SeqCst);
            async move { (n >= at_kill + AFTER_KILL).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("writer");
    }
    enqueuer.await.expect("enqueuer");

    // Transient failures were retried inside the layer: none reached the callers.
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "errors surfaced to callers"
    );
    // Every replicated phase-1 write survived the failover.
    for i in 0..BEFORE_KILL {
        let got = state.get(&format!("k{i}")).await.expect("get");
        assert_eq!(got.value, Some(format!("v{i}").into_bytes()), "k{i}");
        assert_eq!(got.version, 1, "k{i}");
    }
    let claimed = queue
        .claim(
            &AgentName::new("after-failover").expect("name"),
            10_000,
            None,
        )
        .await
        .expect("claim");
    let claimed_names: std::collections::HashSet<String> = claimed
        .iter()
        .map(|c| c.item.subtask.as_str().to_owned())
        .collect();
    for i in 0..BEFORE_KILL {
        assert!(
            claimed_names.contains(&format!("s{i}")),
            "work item s{i} lost"
        );
    }
    // Counters stay consistent: each is the number of versions written to it.
    for w in 0..4 {
        let got = state.get(&format!("counter-{w}")).await.expect("get");
        let value: u64 = got
            .value
            .as_deref()
            .map(|v| {
                std::str::from_utf8(v)
                    .expect("utf8")
                    .parse()
                    .expect("number")
            })
            .unwrap_or(0);
        assert_eq!(value, got.version, "counter-{w}");
    }
}
