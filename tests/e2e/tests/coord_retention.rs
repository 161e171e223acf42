//! Bounded Redis memory against real Redis (standalone and cluster): a task's event stream is
//! trimmed only below what every reading consumer group has acked, its bus is capped, and a
//! finished task's transient keys expire and are dropped while what its status, result and
//! Checkpoints need stays.

#[macro_use]
mod coord_common;

use std::time::{SystemTime, UNIX_EPOCH};

use coord_common::{Fixture, task_uid};
use maos_core::coord::AgentName;
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::journal::EntryKind;
use maos_core::coord::keys::{GROUP_AUDIT, GROUP_OPERATOR};
use maos_core::coord::mailbox::{BUS_MAX_LEN, Cursor};
use maos_core::coord::queue::{EntryId, WorkItem, WorkKind};
use maos_core::coord::{Redis, Task};
use maos_core::dag::SubtaskName;

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

fn subtask(name: &str) -> SubtaskName {
    SubtaskName::new(name).expect("subtask")
}

fn progress(n: usize) -> Event {
    Event::new(
        &agent("a1"),
        "s1",
        1,
        EventKind::Progress {
            message: format!("step {n}"),
        },
    )
}

/// The ids of the stream `key`, oldest first.
async fn stream_ids(redis: &Redis, key: &str) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(&mut redis.connection())
        .await
        .expect("XRANGE");
    reply.ids.into_iter().map(|e| e.id).collect()
}

async fn xlen(redis: &Redis, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut redis.connection())
        .await
        .expect("XLEN")
}

/// `PTTL` of `key`: -2 missing, -1 no expiry, else milliseconds left.
async fn pttl(redis: &Redis, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut redis.connection())
        .await
        .expect("PTTL")
}

async fn registered_with_events(fx: &Fixture, count: usize) -> (Task, Vec<Event>) {
    let task = fx.pool().task(&task_uid());
    task.register(None).await.expect("register");
    let sent: Vec<Event> = (0..count).map(progress).collect();
    for chunk in sent.chunks(100) {
        task.events().publish_many(chunk).await.expect("publish");
    }
    (task, sent)
}

async fn trimming_keeps_every_event_a_reading_group_has_not_acked(fx: &Fixture) {
    let (task, sent) = registered_with_events(fx, 300).await;
    let log = task.events();
    let key = task.keys().events();
    // Nobody has read anything: nothing may go.
    assert_eq!(log.trim_consumed().await.expect("trim"), 0);
    assert_eq!(xlen(&fx.redis, &key).await, 300);

    // The operator is given 100 and acks the first 50 (the rest are folded, not yet written);
    // the audit writer is given and acks 20. Then the operator stops, as if it were killed.
    let mut operator = log.consumer(GROUP_OPERATOR, "operator");
    let given = operator.next(100, None).await.expect("operator reads");
    assert_eq!(given.len(), 100);
    let acked: Vec<EntryId> = given[..50].iter().map(|d| d.entry.clone()).collect();
    operator.ack(&acked).await.expect("operator acks");
    let mut audit = log.consumer(GROUP_AUDIT, "audit");
    let audited = audit.next(20, None).await.expect("audit reads");
    assert_eq!(audited.len(), 20);
    let audited_ids: Vec<EntryId> = audited.iter().map(|d| d.entry.clone()).collect();
    audit.ack(&audited_ids).await.expect("audit acks");
    drop(operator);

    // Meanwhile the agents publish 200 more.
    let more: Vec<Event> = (300..500).map(progress).collect();
    for chunk in more.chunks(100) {
        log.publish_many(chunk).await.expect("publish");
    }
    let trimmed = log.trim_consumed().await.expect("trim");
    // Only what both groups acked: the audit group's first 19 (its last one delivered stays,
    // everything after it is unread by that group).
    assert_eq!(trimmed, 19);
    let ids = stream_ids(&fx.redis, &key).await;
    assert_eq!(ids.first(), Some(&audited[19].entry.to_string()));
    assert_eq!(ids.len(), 500 - 19);

    // The restarted operator is given its 50 unacked entries again, then every later one.
    let mut restarted = log.consumer(GROUP_OPERATOR, "operator");
    let mut seen: Vec<Event> = Vec::new();
    let mut handled: Vec<EntryId> = Vec::new();
    loop {
        let batch = restarted
            .ack_then_next(&handled, 100, None)
            .await
            .expect("operator reads again");
        if batch.is_empty() {
            break;
        }
        handled = batch.iter().map(|d| d.entry.clone()).collect();
        seen.extend(batch.into_iter().map(|d| d.event));
    }
    let expected: Vec<Event> = sent[50..].iter().chain(&more).cloned().collect();
    assert_eq!(seen, expected, "the operator lost or repeated an event");
    // The audit writer still gets every event after its last ack.
    let mut rest: Vec<Event> = Vec::new();
    loop {
        let batch = audit.next(100, None).await.expect("audit reads again");
        if batch.is_empty() {
            break;
        }
        let ids: Vec<EntryId> = batch.iter().map(|d| d.entry.clone()).collect();
        rest.extend(batch.into_iter().map(|d| d.event));
        // Given but not acked yet: the stream must still start at the first of them.
        log.trim_consumed().await.expect("trim");
        let kept = stream_ids(&fx.redis, &key).await;
        assert_eq!(kept.first(), Some(&ids[0].to_string()));
        audit.ack(&ids).await.expect("audit acks");
    }
    let expected: Vec<Event> = sent[20..].iter().chain(&more).cloned().collect();
    assert_eq!(rest, expected, "the audit group lost an event");

    // Both groups have acked everything: all but the newest entry go.
    log.trim_consumed().await.expect("trim");
    assert_eq!(xlen(&fx.redis, &key).await, 1);
}

async fn a_group_no_consumer_ever_read_does_not_hold_back_trimming(fx: &Fixture) {
    let (task, _) = registered_with_events(fx, 50).await;
    let log = task.events();
    let mut operator = log.consumer(GROUP_OPERATOR, "operator");
    let given = operator.next(100, None).await.expect("operator reads");
    let ids: Vec<EntryId> = given.iter().map(|d| d.entry.clone()).collect();
    operator.ack(&ids).await.expect("operator acks");
    // The audit group exists (created at registration) but has no writer yet.
    assert_eq!(log.trim_consumed().await.expect("trim"), 49);
    let key = task.keys().events();
    assert_eq!(stream_ids(&fx.redis, &key).await, vec![ids[49].to_string()]);
    // Once its writer reads, the audit group holds the stream like any other.
    let mut audit = log.consumer(GROUP_AUDIT, "audit");
    assert_eq!(audit.next(10, None).await.expect("audit reads").len(), 1);
    log.publish_many(&(50..60).map(progress).collect::<Vec<_>>())
        .await
        .expect("publish");
    let given = operator.next(100, None).await.expect("operator reads");
    let ids: Vec<EntryId> = given.iter().map(|d| d.entry.clone()).collect();
    operator.ack(&ids).await.expect("operator acks");
    assert_eq!(log.trim_consumed().await.expect("trim"), 0);
    assert_eq!(xlen(&fx.redis, &key).await, 11);
}

async fn the_bus_keeps_about_its_cap_of_newest_messages(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let mailbox = task.mailbox();
    let from = agent("a1");
    let total = BUS_MAX_LEN + 1_000;
    for start in (0..total).step_by(250) {
        // Many sends in flight on the multiplexed connection, half through the once-only script.
        let sends = (start..(start + 250).min(total)).map(|i| {
            let (mailbox, from) = (&mailbox, &from);
            async move {
                if i % 2 == 0 {
                    mailbox
                        .send(from, None, &format!("m{i}"))
                        .await
                        .expect("send");
                } else {
                    mailbox
                        .send_once(&format!("tool-{i}"), from, None, &format!("m{i}"))
                        .await
                        .expect("send once")
                        .expect("sent");
                }
            }
        });
        futures::future::join_all(sends).await;
    }
    // Sent alone after the others, which arrive in any order within their batch: it is the
    // newest message.
    mailbox.send(&from, None, "the newest").await.expect("send");
    let len = xlen(&fx.redis, &task.keys().bus()).await as usize;
    // `MAXLEN ~` trims whole stream nodes only, so a little more than the cap may stay.
    assert!(
        (BUS_MAX_LEN..BUS_MAX_LEN + 500).contains(&len),
        "the bus holds {len} messages"
    );
    // A reader from the start gets the newest messages, the last one included.
    let mut cursor = Cursor::start();
    let mut last = None;
    loop {
        let inbox = mailbox
            .read_since(&agent("a2"), &cursor, 1_000)
            .await
            .expect("read");
        if inbox.messages.is_empty() {
            break;
        }
        last = inbox.messages.last().map(|m| m.body.clone());
        cursor = inbox.cursor;
    }
    assert_eq!(last.as_deref(), Some("the newest"));
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

async fn a_finished_tasks_transient_keys_expire_and_retiring_keeps_only_what_it_needs(
    fx: &Fixture,
) {
    let pool = fx.pool();
    let uid = task_uid();
    let task = pool.task(&uid);
    task.register(Some(1_000)).await.expect("register");
    // A model call's spend, so every retained key exists.
    let maos_core::coord::budget::ReserveOutcome::Reserved(call) =
        task.budget().reserve(10).await.expect("reserve")
    else {
        panic!("the budget covers 10 tokens");
    };
    task.budget().settle(call, 5).await.expect("settle");
    task.state().put("k", b"v").await.expect("put");
    task.results()
        .record(&subtask("s1"), 1, &agent("a"), "the answer")
        .await
        .expect("record");
    task.events().publish(&progress(0)).await.expect("publish");
    task.mailbox()
        .send_once("tool-1", &agent("a"), None, "hi")
        .await
        .expect("send");
    task.journal(&subtask("s1"))
        .append(1, &EntryKind::ModelResponse, "x")
        .await
        .expect("append");
    task.cancel("Cancelled").await.expect("cancel");
    let queue = pool.queue();
    queue.ensure_group().await.expect("group");
    queue
        .enqueue_once(&WorkItem {
            task: uid.clone(),
            subtask: subtask("s2"),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: 0,
        })
        .await
        .expect("enqueue")
        .expect("enqueued");
    let keys = task.keys().clone();
    let journal = keys.journal(&subtask("s1"));

    let at = unix_ms() + 600_000;
    // events, bus, applied, journal index and one journal
    assert_eq!(task.expire_transient_at(at).await.expect("expire"), 5);
    for key in keys.transient().iter().chain([&journal]) {
        let left = pttl(&fx.redis, key).await;
        assert!(
            left > 590_000 && left <= 600_000,
            "{key} expires in {left} ms"
        );
    }
    for key in keys.retained() {
        assert_eq!(pttl(&fx.redis, &key).await, -1, "{key} must not expire");
    }
    // Repeated (an operator restarted later), the expiry stays where it was.
    let before = pttl(&fx.redis, &keys.events()).await;
    task.expire_transient_at(at).await.expect("expire again");
    assert!(pttl(&fx.redis, &keys.events()).await <= before);

    assert_eq!(pool.retire_task(&uid).await.expect("retire"), 5);
    for key in keys.transient().iter().chain([&journal]) {
        assert_eq!(pttl(&fx.redis, key).await, -2, "{key} is still there");
    }
    for key in keys.retained() {
        assert_eq!(pttl(&fx.redis, &key).await, -1, "{key} was dropped");
    }
    assert!(task.exists().await.expect("exists"));
    assert_eq!(
        task.results()
            .get(&subtask("s1"))
            .await
            .expect("get")
            .map(|r| r.result)
            .as_deref(),
        Some("the answer")
    );
    let markers: Vec<String> = redis::cmd("HKEYS")
        .arg(pool.keys().dispatched())
        .query_async(&mut fx.redis.connection())
        .await
        .expect("HKEYS");
    assert!(markers.is_empty(), "dispatch markers left: {markers:?}");
    assert_eq!(queue.stats().await.expect("stats").waiting, 0);
    // Safe to repeat; deleting the Task still removes what stayed.
    assert_eq!(pool.retire_task(&uid).await.expect("retire again"), 0);
    pool.delete_task(&uid).await.expect("delete");
    let left: Vec<String> = fx
        .all_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(&format!("{{task:{uid}}}")))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

async fn an_expiry_in_the_past_drops_the_transient_keys_at_once(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    task.register(None).await.expect("register");
    task.events().publish(&progress(0)).await.expect("publish");
    task.journal(&subtask("s1"))
        .append(1, &EntryKind::ModelResponse, "x")
        .await
        .expect("append");
    task.expire_transient_at(unix_ms() - 1_000)
        .await
        .expect("expire");
    assert_eq!(pttl(&fx.redis, &task.keys().events()).await, -2);
    assert_eq!(
        pttl(&fx.redis, &task.keys().journal(&subtask("s1"))).await,
        -2
    );
    assert!(task.exists().await.expect("exists"));
}

both_backends!(
    trimming_keeps_every_event_a_reading_group_has_not_acked,
    a_group_no_consumer_ever_read_does_not_hold_back_trimming,
    the_bus_keeps_about_its_cap_of_newest_messages,
    a_finished_tasks_transient_keys_expire_and_retiring_keeps_only_what_it_needs,
    an_expiry_in_the_past_drops_the_transient_keys_at_once,
);
