//! What the operator needs from the coordination layer, against real Redis (standalone and
//! cluster): dispatch that enqueues each attempt at most once, cleanup of the dispatch markers,
//! a snapshot of the pool's agents, the count of a task's work still held by agents, and
//! wake-ups when a task's events stream grows.

#[macro_use]
mod coord_common;

use std::collections::BTreeSet;
use std::time::Duration;

use coord_common::{Fixture, task_uid};
use maos_core::coord::acl::Acl;
use maos_core::coord::events::{Event, EventKind, EventLog};
use maos_core::coord::functions;
use maos_core::coord::queue::{AgentState, EntryId, QueueStats, WorkItem, WorkKind, WorkQueue};
use maos_core::coord::wake::Wakes;
use maos_core::coord::{AgentName, CoordError, Pool, Redis, TaskUid};
use maos_core::dag::SubtaskName;

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

fn attempt_of(task: &TaskUid, subtask: &str, attempt: u32) -> WorkItem {
    WorkItem {
        task: task.clone(),
        subtask: SubtaskName::new(subtask).expect("subtask"),
        attempt,
        kind: WorkKind::Work,
        deadline_ms: 1_900_000_000_000,
    }
}

async fn queue(fx: &Fixture) -> WorkQueue {
    let q = fx.pool().queue();
    q.ensure_group().await.expect("group");
    q
}

async fn waiting_and_pending(q: &WorkQueue) -> (u64, u64) {
    let QueueStats { waiting, pending } = q.stats().await.expect("stats");
    (waiting, pending)
}

/// The Redis server's clock in ms, as TIME reports it.
async fn server_time_ms(fx: &Fixture) -> u64 {
    let mut con = fx.redis.connection();
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut con)
        .await
        .expect("TIME");
    secs * 1000 + micros / 1000
}

/// The fields of the pool's `dispatched` hash.
async fn dispatch_markers(fx: &Fixture, q: &WorkQueue) -> Vec<String> {
    let mut con = fx.redis.connection();
    let mut fields: Vec<String> = redis::cmd("HKEYS")
        .arg(q.keys().dispatched())
        .query_async(&mut con)
        .await
        .expect("HKEYS");
    fields.sort();
    fields
}

fn event() -> Event {
    Event::new(&agent("a1"), "s1", 1, EventKind::SubtaskStarted)
}

async fn the_same_attempt_is_enqueued_only_once(fx: &Fixture) {
    let q = queue(fx).await;
    let item = attempt_of(&task_uid(), "research-a", 1);
    let first = q.enqueue_once(&item).await.expect("enqueue once");
    assert!(first.is_some());
    assert_eq!(q.enqueue_once(&item).await.expect("enqueue again"), None);
    assert_eq!(waiting_and_pending(&q).await, (1, 0));
    let got = q.claim(&agent("a1"), 10, None).await.expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(Some(got[0].id.clone()), first);
    assert_eq!(got[0].item, item);
}

async fn a_later_attempt_of_the_same_subtask_is_enqueued_again(fx: &Fixture) {
    let q = queue(fx).await;
    let task = task_uid();
    let first = q
        .enqueue_once(&attempt_of(&task, "research-a", 1))
        .await
        .expect("attempt 1");
    let second = q
        .enqueue_once(&attempt_of(&task, "research-a", 2))
        .await
        .expect("attempt 2");
    assert!(first.is_some() && second.is_some());
    assert_ne!(first, second);
    assert_eq!(waiting_and_pending(&q).await, (2, 0));
}

async fn enqueue_many_once_skips_attempts_already_dispatched(fx: &Fixture) {
    let q = queue(fx).await;
    let task = task_uid();
    let (a, b) = (attempt_of(&task, "a", 1), attempt_of(&task, "b", 1));
    assert!(q.enqueue_once(&a).await.expect("enqueue a").is_some());
    let ids = q
        .enqueue_many_once(&[a.clone(), b.clone(), b.clone()])
        .await
        .expect("enqueue many");
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], None, "a was dispatched before");
    assert!(ids[1].is_some(), "b is new");
    assert_eq!(ids[2], None, "b was dispatched by the same batch");
    let got = q.claim(&agent("a1"), 10, None).await.expect("claim");
    let names: Vec<&str> = got.iter().map(|c| c.item.subtask.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
}

async fn purging_a_task_forgets_its_dispatched_attempts_only(fx: &Fixture) {
    let q = queue(fx).await;
    let (doomed, kept) = (task_uid(), task_uid());
    // More markers than one HSCAN batch, so the purge has to walk the hash.
    let mut items: Vec<WorkItem> = (0..1200)
        .map(|i| attempt_of(&doomed, &format!("s{i}"), 1))
        .collect();
    items.push(attempt_of(&kept, "s0", 1));
    let ids = q.enqueue_many_once(&items).await.expect("enqueue");
    assert!(ids.iter().all(Option::is_some));
    assert_eq!(q.purge_task(&doomed).await.expect("purge"), 1200);
    let prefix = format!("{doomed}/");
    let markers = dispatch_markers(fx, &q).await;
    assert!(
        !markers.iter().any(|m| m.starts_with(&prefix)),
        "markers of the purged task remain"
    );
    assert_eq!(markers, vec![format!("{kept}/s0/1")]);
    // The purged task's attempt can be dispatched again (a task re-created with the same uid
    // is not expected, but nothing of the old one may linger).
    assert!(
        q.enqueue_once(&attempt_of(&doomed, "s0", 1))
            .await
            .expect("enqueue after purge")
            .is_some()
    );
    assert_eq!(
        q.enqueue_once(&attempt_of(&kept, "s0", 1))
            .await
            .expect("kept task"),
        None
    );
}

async fn agents_lists_heartbeats_pending_work_and_the_server_clock(fx: &Fixture) {
    let q = queue(fx).await;
    let (busy, idle, ghost) = (agent("busy"), agent("idle"), agent("ghost"));
    q.heartbeat(&busy).await.expect("hb");
    q.heartbeat(&idle).await.expect("hb");
    let task = task_uid();
    let items: Vec<WorkItem> = (0..3)
        .map(|i| attempt_of(&task, &format!("s{i}"), 1))
        .collect();
    q.enqueue_many(&items).await.expect("enqueue");
    assert_eq!(q.claim(&busy, 2, None).await.expect("claim").len(), 2);
    // `ghost` holds work but never beat (it died before its first heartbeat).
    assert_eq!(q.claim(&ghost, 1, None).await.expect("claim").len(), 1);

    let before = server_time_ms(fx).await;
    let snapshot = q.agents().await.expect("agents");
    let after = server_time_ms(fx).await;

    assert!(
        before <= snapshot.now_ms && snapshot.now_ms <= after,
        "{before} <= {} <= {after}",
        snapshot.now_ms
    );
    let names: Vec<&str> = snapshot.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, vec!["busy", "ghost", "idle"]);
    let by_name = |name: &str| -> &AgentState {
        snapshot
            .agents
            .iter()
            .find(|a| a.name == name)
            .expect("agent listed")
    };
    for beating in ["busy", "idle"] {
        let beat = by_name(beating)
            .last_heartbeat_ms
            .expect("a heartbeat time");
        // Beats are stamped with the same server clock, shortly before the snapshot.
        assert!(
            beat <= snapshot.now_ms && snapshot.now_ms - beat < PATIENCE.as_millis() as u64,
            "{beating}: beat {beat}, now {}",
            snapshot.now_ms
        );
    }
    assert_eq!(by_name("busy").pending, 2);
    assert_eq!(by_name("idle").pending, 0);
    assert_eq!(by_name("ghost").last_heartbeat_ms, None);
    assert_eq!(by_name("ghost").pending, 1);
}

async fn agents_of_a_pool_without_a_work_stream_are_its_heartbeats(fx: &Fixture) {
    // No ensure_group, nothing enqueued: there is no stream and no group.
    let q = fx.pool().queue();
    assert!(q.agents().await.expect("agents").agents.is_empty());
    q.heartbeat(&agent("a1")).await.expect("hb");
    let snapshot = q.agents().await.expect("agents");
    assert_eq!(snapshot.agents.len(), 1);
    assert_eq!(snapshot.agents[0].name, "a1");
    assert!(snapshot.agents[0].last_heartbeat_ms.is_some());
    assert_eq!(snapshot.agents[0].pending, 0);
}

async fn pending_for_task_counts_only_that_tasks_claimed_unacked_items(fx: &Fixture) {
    let q = queue(fx).await;
    let (mine, other) = (task_uid(), task_uid());
    q.enqueue_many(&[
        attempt_of(&mine, "m1", 1),
        attempt_of(&other, "o1", 1),
        attempt_of(&mine, "m2", 1),
    ])
    .await
    .expect("enqueue");
    let held = q.claim(&agent("a1"), 3, None).await.expect("claim");
    assert_eq!(held.len(), 3);
    // Waiting items of the task are not being worked on, so they do not count.
    q.enqueue_many(&[attempt_of(&mine, "m3", 1), attempt_of(&other, "o2", 1)])
        .await
        .expect("enqueue");
    assert_eq!(q.pending_for_task(&mine).await.expect("pending"), 2);
    assert_eq!(q.pending_for_task(&other).await.expect("pending"), 1);
    assert_eq!(q.pending_for_task(&task_uid()).await.expect("pending"), 0);

    let held_of_mine: Vec<EntryId> = held
        .iter()
        .filter(|c| c.item.task == mine)
        .map(|c| c.id.clone())
        .collect();
    q.ack(&held_of_mine[..1]).await.expect("ack");
    assert_eq!(q.pending_for_task(&mine).await.expect("pending"), 1);
    q.ack(&held_of_mine[1..]).await.expect("ack");
    assert_eq!(q.pending_for_task(&mine).await.expect("pending"), 0);
    assert_eq!(q.pending_for_task(&other).await.expect("pending"), 1);
}

async fn pending_for_task_walks_more_pending_items_than_one_batch(fx: &Fixture) {
    let q = queue(fx).await;
    let (mine, other) = (task_uid(), task_uid());
    let items: Vec<WorkItem> = (0..1100)
        .map(|i| attempt_of(if i % 2 == 0 { &mine } else { &other }, &format!("s{i}"), 1))
        .collect();
    q.enqueue_many(&items).await.expect("enqueue");
    assert_eq!(
        q.claim(&agent("a1"), 1100, None)
            .await
            .expect("claim")
            .len(),
        1100
    );
    assert_eq!(q.pending_for_task(&mine).await.expect("pending"), 550);
}

async fn pending_for_task_on_a_pool_without_a_work_stream_is_zero(fx: &Fixture) {
    let q = fx.pool().queue();
    assert_eq!(q.pending_for_task(&task_uid()).await.expect("pending"), 0);
}

async fn newest_event_is_the_last_published_and_none_without_a_stream(fx: &Fixture) {
    let log = fx.pool().task(&task_uid()).events();
    assert_eq!(log.newest().await.expect("newest"), None);
    let ids = log
        .publish_many(&[event(), event(), event()])
        .await
        .expect("publish");
    assert_eq!(log.newest().await.expect("newest"), ids.last().cloned());
}

/// Waits for wake-ups until each of `prefixes` has come (other tests' wake-ups may come too:
/// a cluster's nodes are shared by every test in this binary).
async fn woken(wakes: &mut Wakes, prefixes: &[&str]) {
    let mut missing: BTreeSet<&str> = prefixes.iter().copied().collect();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !missing.is_empty() {
        let next = tokio::time::timeout_at(deadline, wakes.next())
            .await
            .unwrap_or_else(|_| panic!("no wake-up for {missing:?} in {PATIENCE:?}"))
            .expect("the subscription stays up");
        missing.remove(next.as_str());
    }
}

async fn publishing_events_wakes_a_subscriber_with_the_tasks_prefix(fx: &Fixture) {
    let mut wakes = fx.redis.subscribe_wakes().await.expect("subscribe");
    // Tasks on different slots: on a cluster their events land on different masters, while
    // the subscription is on one node.
    let logs: Vec<EventLog> = (0..6)
        .map(|_| fx.pool().task(&task_uid()).events())
        .collect();
    for log in &logs {
        log.publish(&event()).await.expect("publish");
    }
    let prefixes: Vec<&str> = logs.iter().map(|l| l.keys().prefix()).collect();
    woken(&mut wakes, &prefixes).await;
    // A batch is one publish, and still every event is in the stream.
    let log = fx.pool().task(&task_uid()).events();
    let ids = log
        .publish_many(&[event(), event(), event()])
        .await
        .expect("publish many");
    assert_eq!(ids.len(), 3);
    assert_eq!(log.newest().await.expect("newest"), ids.last().cloned());
    woken(&mut wakes, &[log.keys().prefix()]).await;
}

async fn a_pool_user_wakes_the_operator_but_cannot_listen(fx: &Fixture) {
    let pool = fx.pool();
    let creds = Acl::new(fx.redis.clone())
        .create_pool_user(pool.keys(), &Acl::generate_password())
        .await
        .expect("create the pool user");
    let agent = Redis::connect(
        fx.config()
            .with_user(creds.username.clone(), creds.password.clone()),
    )
    .await
    .expect("connect as the pool user");
    // As the operator does at start: an agent may call the library, not load it.
    functions::ensure_loaded(&fx.redis, true)
        .await
        .expect("load the function library");
    let mut wakes = fx.redis.subscribe_wakes().await.expect("subscribe");
    let task = task_uid();
    let log = Pool::new(agent.clone(), pool.keys().pool())
        .task(&task)
        .events();
    log.publish(&event())
        .await
        .expect("the pool user publishes");
    woken(&mut wakes, &[log.keys().prefix()]).await;
    // The channel is there to be told, not to listen on: another pool's wake-ups are none of
    // an agent's business.
    let refused = agent
        .subscribe_wakes()
        .await
        .expect_err("a pool user cannot subscribe");
    assert!(
        matches!(refused, CoordError::NoPermission { .. }),
        "{refused}"
    );
}

async fn a_subscription_whose_connection_is_killed_ends(fx: &Fixture) {
    let mut wakes = fx.redis.subscribe_wakes().await.expect("subscribe");
    let urls = match &fx.backend {
        coord_common::Backend::Standalone(s) => vec![s.url()],
        coord_common::Backend::Cluster(c) => c.urls(),
    };
    for url in urls {
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut con = client.get_connection().expect("connect");
        let _: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut con)
            .expect("CLIENT KILL TYPE pubsub");
    }
    let ended = tokio::time::timeout(PATIENCE, wakes.next())
        .await
        .expect("the end is noticed");
    assert_eq!(ended, None, "a killed subscription must say it is gone");
}

async fn an_agent_restarted_under_its_name_gets_back_only_what_it_held(fx: &Fixture) {
    let q = queue(fx).await;
    let task = task_uid();
    q.enqueue_many(&[
        attempt_of(&task, "held", 1),
        attempt_of(&task, "other", 1),
        attempt_of(&task, "waiting", 1),
    ])
    .await
    .expect("enqueue");
    let held = q.claim(&agent("a1"), 1, None).await.expect("claim");
    q.claim(&agent("a2"), 1, None).await.expect("claim");
    // A plain claim never hands a1 its own unacked item again.
    let fresh = q.claim(&agent("a1"), 10, None).await.expect("claim");
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].item.subtask.as_str(), "waiting");
    q.ack(&[fresh[0].id.clone()]).await.expect("ack");

    let resumed = q
        .claim_own_pending(&agent("a1"), 10)
        .await
        .expect("own pending");
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].id, held[0].id);
    assert_eq!(resumed[0].item.subtask.as_str(), "held");
    assert_eq!(resumed[0].item.attempt, 1);
    q.ack(&[resumed[0].id.clone()]).await.expect("ack");
    assert!(
        q.claim_own_pending(&agent("a1"), 10)
            .await
            .expect("own pending")
            .is_empty()
    );
}

both_backends!(
    an_agent_restarted_under_its_name_gets_back_only_what_it_held,
    the_same_attempt_is_enqueued_only_once,
    a_later_attempt_of_the_same_subtask_is_enqueued_again,
    enqueue_many_once_skips_attempts_already_dispatched,
    purging_a_task_forgets_its_dispatched_attempts_only,
    agents_lists_heartbeats_pending_work_and_the_server_clock,
    agents_of_a_pool_without_a_work_stream_are_its_heartbeats,
    pending_for_task_counts_only_that_tasks_claimed_unacked_items,
    pending_for_task_walks_more_pending_items_than_one_batch,
    pending_for_task_on_a_pool_without_a_work_stream_is_zero,
    newest_event_is_the_last_published_and_none_without_a_stream,
    publishing_events_wakes_a_subscriber_with_the_tasks_prefix,
    a_pool_user_wakes_the_operator_but_cannot_listen,
    a_subscription_whose_connection_is_killed_ends,
);
