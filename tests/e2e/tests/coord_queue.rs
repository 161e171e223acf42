//! The work queue against real Redis (standalone and cluster): enqueue, claim, ack, heartbeats,
//! dead-agent detection and the atomic reclaim of a dead agent's work.

#[macro_use]
mod coord_common;

use std::time::Duration;

use coord_common::{Fixture, eventually, task_uid};
use maos_core::coord::AgentName;
use maos_core::coord::queue::{QueueStats, WorkItem, WorkKind, WorkQueue};
use maos_core::dag::SubtaskName;

/// Heartbeat age after which the tests call an agent dead.
const THRESHOLD: Duration = Duration::from_secs(1);
/// How long a test waits for something that should happen within the threshold.
const PATIENCE: Duration = Duration::from_secs(10);

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

fn item(subtask: &str) -> WorkItem {
    WorkItem {
        task: task_uid(),
        subtask: SubtaskName::new(subtask).expect("subtask"),
        attempt: 1,
        kind: WorkKind::Work,
        deadline_ms: 1_900_000_000_000,
    }
}

async fn queue(fx: &Fixture) -> WorkQueue {
    let q = fx.pool().queue();
    q.ensure_group().await.expect("group");
    q
}

async fn enqueued_item_is_claimed_once_with_its_fields(fx: &Fixture) {
    let q = queue(fx).await;
    let sent = item("research-a");
    q.enqueue(&sent).await.expect("enqueue");
    let got = q.claim(&agent("a1"), 10, None).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item, sent);
    // Nobody else gets it while a1 holds it.
    assert!(
        q.claim(&agent("a2"), 10, None)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 0,
            pending: 1
        }
    );
    q.ack(&[got[0].id.clone()]).await.expect("ack");
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 0,
            pending: 0
        }
    );
}

async fn batch_of_items_is_claimed_in_order_and_counted(fx: &Fixture) {
    let q = queue(fx).await;
    let items: Vec<WorkItem> = (0..150).map(|i| item(&format!("s{i}"))).collect();
    q.enqueue_many(&items).await.expect("enqueue");
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 150,
            pending: 0
        }
    );
    let first = q.claim(&agent("a1"), 100, None).await.expect("claim");
    assert_eq!(first.len(), 100);
    let names: Vec<&str> = first.iter().map(|c| c.item.subtask.as_str()).collect();
    let want: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
    assert_eq!(names, want);
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 50,
            pending: 100
        }
    );
    let ids: Vec<_> = first.iter().map(|c| c.id.clone()).collect();
    q.ack(&ids).await.expect("ack");
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 50,
            pending: 0
        }
    );
}

async fn blocking_claim_wakes_when_work_arrives(fx: &Fixture) {
    let q = queue(fx).await;
    let claimer = WorkQueue::new(
        fx.redis
            .dedicated(Duration::from_secs(10))
            .await
            .expect("dedicated connection"),
        q.keys().clone(),
    );
    let waiting = tokio::spawn(async move {
        claimer
            .claim(&agent("a1"), 1, Some(Duration::from_secs(10)))
            .await
            .expect("claim")
    });
    // Enqueue only once the claim is really blocked in Redis, so the test proves the wake-up.
    let work = q.keys().work();
    eventually("the claim to block", PATIENCE, || {
        let blocked = fx.blocked_clients_on_node_of(&work);
        async move { (blocked >= 1).then_some(()) }
    })
    .await;
    // The claim is blocked on its own connection; the shared one still serves the enqueue.
    q.enqueue(&item("late")).await.expect("enqueue");
    let got = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("claim returned")
        .expect("task");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.subtask.as_str(), "late");
}

async fn dead_agent_work_is_requeued_with_next_attempt(fx: &Fixture) {
    let q = queue(fx).await;
    let (dead, alive) = (agent("dies"), agent("lives"));
    q.heartbeat(&dead).await.expect("hb");
    q.heartbeat(&alive).await.expect("hb");
    q.enqueue(&item("x")).await.expect("enqueue");
    let held = q.claim(&dead, 1, None).await.expect("claim");
    assert_eq!(held.len(), 1);
    // `lives` keeps beating, `dies` does not.
    let found = eventually("the silent agent to be reported dead", PATIENCE, || {
        let q = q.clone();
        let alive = alive.clone();
        async move {
            q.heartbeat(&alive).await.expect("hb");
            let dead = q.dead_agents(THRESHOLD).await.expect("dead agents");
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert_eq!(found, vec![dead.clone()]);

    let moved = q.reclaim(&dead).await.expect("reclaim");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].old_id, held[0].id);
    assert_eq!(moved[0].attempt, 2);
    let retaken = q.claim(&alive, 10, None).await.expect("claim");
    assert_eq!(retaken.len(), 1);
    assert_eq!(retaken[0].item.attempt, 2);
    assert_eq!(retaken[0].item.subtask, held[0].item.subtask);
    assert_eq!(retaken[0].item.task, held[0].item.task);
    // The dead agent is forgotten, so it is not reported (or reclaimed) again.
    assert!(q.dead_agents(THRESHOLD).await.expect("dead").is_empty());
}

async fn racing_reapers_requeue_each_entry_exactly_once(fx: &Fixture) {
    let q = queue(fx).await;
    let dead = agent("dies");
    q.heartbeat(&dead).await.expect("hb");
    let items: Vec<WorkItem> = (0..5).map(|i| item(&format!("s{i}"))).collect();
    q.enqueue_many(&items).await.expect("enqueue");
    assert_eq!(q.claim(&dead, 5, None).await.expect("claim").len(), 5);
    eventually("the agent to be reported dead", PATIENCE, || {
        let q = q.clone();
        async move {
            let dead = q.dead_agents(THRESHOLD).await.expect("dead agents");
            (!dead.is_empty()).then_some(())
        }
    })
    .await;
    let (q1, q2) = (q.clone(), q.clone());
    let (d1, d2) = (dead.clone(), dead.clone());
    let (a, b) = tokio::join!(
        tokio::spawn(async move { q1.reclaim(&d1).await.expect("reclaim 1") }),
        tokio::spawn(async move { q2.reclaim(&d2).await.expect("reclaim 2") }),
    );
    let (a, b) = (a.expect("reaper 1"), b.expect("reaper 2"));
    assert_eq!(a.len() + b.len(), 5, "each entry moved exactly once");
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 5,
            pending: 0
        }
    );
    let retaken = q.claim(&agent("next"), 100, None).await.expect("claim");
    assert_eq!(retaken.len(), 5);
    let mut names: Vec<&str> = retaken.iter().map(|c| c.item.subtask.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["s0", "s1", "s2", "s3", "s4"]);
    assert!(retaken.iter().all(|c| c.item.attempt == 2));
}

async fn agent_that_claims_without_ever_beating_is_found_dead(fx: &Fixture) {
    let q = queue(fx).await;
    let ghost = agent("ghost");
    q.enqueue(&item("x")).await.expect("enqueue");
    assert_eq!(q.claim(&ghost, 1, None).await.expect("claim").len(), 1);
    let found = eventually("the ghost to be reported dead", PATIENCE, || {
        let q = q.clone();
        async move {
            let dead = q.dead_agents(THRESHOLD).await.expect("dead agents");
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert_eq!(found, vec![ghost.clone()]);
    let moved = q.reclaim(&ghost).await.expect("reclaim");
    assert_eq!(moved.len(), 1);
}

async fn live_agent_is_not_reported_dead(fx: &Fixture) {
    let q = queue(fx).await;
    let a = agent("busy");
    q.heartbeat(&a).await.expect("hb");
    q.enqueue(&item("x")).await.expect("enqueue");
    assert_eq!(q.claim(&a, 1, None).await.expect("claim").len(), 1);
    assert!(
        q.dead_agents(Duration::from_secs(60))
            .await
            .expect("dead")
            .is_empty()
    );
}

async fn reclaiming_an_agent_with_nothing_pending_moves_nothing(fx: &Fixture) {
    let q = queue(fx).await;
    q.enqueue(&item("x")).await.expect("enqueue");
    assert!(
        q.reclaim(&agent("nobody"))
            .await
            .expect("reclaim")
            .is_empty()
    );
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 1,
            pending: 0
        }
    );
}

async fn entry_not_written_by_maos_is_dropped_not_delivered(fx: &Fixture) {
    let q = queue(fx).await;
    let mut con = fx.redis.connection();
    let _: String = redis::cmd("XADD")
        .arg(q.keys().work())
        .arg("*")
        .arg("junk")
        .arg("1")
        .query_async(&mut con)
        .await
        .expect("xadd junk");
    q.enqueue(&item("real")).await.expect("enqueue");
    let got = q.claim(&agent("a1"), 10, None).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.subtask.as_str(), "real");
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 0,
            pending: 1
        }
    );
}

async fn purging_a_task_removes_its_waiting_and_claimed_items_only(fx: &Fixture) {
    let q = queue(fx).await;
    let (doomed, kept) = (task_uid(), task_uid());
    let mut items = Vec::new();
    for i in 0..3 {
        items.push(WorkItem {
            task: doomed.clone(),
            ..item(&format!("d{i}"))
        });
    }
    for i in 0..2 {
        items.push(WorkItem {
            task: kept.clone(),
            ..item(&format!("k{i}"))
        });
    }
    q.enqueue_many(&items).await.expect("enqueue");
    let held = q.claim(&agent("a1"), 1, None).await.expect("claim");
    assert_eq!(held[0].item.task, doomed);
    assert_eq!(q.purge_task(&doomed).await.expect("purge"), 3);
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 2,
            pending: 0
        }
    );
    // The agent that held a purged item acks it without harm.
    q.ack(&[held[0].id.clone()]).await.expect("ack");
    let rest = q.claim(&agent("a2"), 10, None).await.expect("claim");
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|c| c.item.task == kept));
}

async fn purge_walks_a_queue_longer_than_one_batch(fx: &Fixture) {
    let q = queue(fx).await;
    let (doomed, kept) = (task_uid(), task_uid());
    let items: Vec<WorkItem> = (0..1100)
        .map(|i| WorkItem {
            task: if i % 2 == 0 {
                doomed.clone()
            } else {
                kept.clone()
            },
            ..item(&format!("s{i}"))
        })
        .collect();
    q.enqueue_many(&items).await.expect("enqueue");
    assert_eq!(q.purge_task(&doomed).await.expect("purge"), 550);
    assert_eq!(
        q.stats().await.expect("stats"),
        QueueStats {
            waiting: 550,
            pending: 0
        }
    );
}

async fn claim_on_a_queue_without_its_group_creates_it_and_delivers_earlier_items(fx: &Fixture) {
    // No ensure_group: as after a flushed Redis or a cleanup that removed the stream.
    let q = fx.pool().queue();
    q.enqueue(&item("early")).await.expect("enqueue");
    let got = q.claim(&agent("a1"), 10, None).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.subtask.as_str(), "early");
}

both_backends!(
    claim_on_a_queue_without_its_group_creates_it_and_delivers_earlier_items,
    purge_walks_a_queue_longer_than_one_batch,
    purging_a_task_removes_its_waiting_and_claimed_items_only,
    enqueued_item_is_claimed_once_with_its_fields,
    batch_of_items_is_claimed_in_order_and_counted,
    blocking_claim_wakes_when_work_arrives,
    dead_agent_work_is_requeued_with_next_attempt,
    racing_reapers_requeue_each_entry_exactly_once,
    agent_that_claims_without_ever_beating_is_found_dead,
    live_agent_is_not_reported_dead,
    reclaiming_an_agent_with_nothing_pending_moves_nothing,
    entry_not_written_by_maos_is_dropped_not_delivered,
);
