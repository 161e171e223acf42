//! A task's whole state read as one dump and written back under another task uid, against real
//! Redis (standalone and cluster): what checkpoints store and restore.

#[macro_use]
mod coord_common;

use coord_common::{Fixture, task_uid};
use maos_core::coord::AgentName;
use maos_core::coord::dump::{self, KeyDump};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::journal::EntryKind;
use maos_core::coord::keys::{GROUP_OPERATOR, field};
use maos_core::dag::SubtaskName;

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

fn subtask(name: &str) -> SubtaskName {
    SubtaskName::new(name).expect("subtask")
}

/// A task with something in every kind of key.
async fn busy_task(fx: &Fixture) -> maos_core::coord::Task {
    let task = fx.pool().task(&task_uid());
    task.register(Some(10_000)).await.expect("register");
    let state = task.state();
    state.put("notes/a", b"alpha").await.expect("put");
    state
        .put("notes/b", "βeta ✓".as_bytes())
        .await
        .expect("put");
    state.put("notes/b", b"beta v2").await.expect("put again");
    let a = agent("agent-a");
    let events = task.events();
    events
        .publish(&Event::new(&a, "s1", 1, EventKind::SubtaskStarted))
        .await
        .expect("publish");
    events
        .publish(&Event::new(&a, "s1", 1, EventKind::SubtaskSucceeded))
        .await
        .expect("publish");
    task.mailbox()
        .send(&a, None, "hello everyone")
        .await
        .expect("send");
    let journal = task.journal(&subtask("s1"));
    journal
        .append(1, &EntryKind::Opening, "the opening")
        .await
        .expect("append");
    journal
        .append(1, &EntryKind::ModelResponse, "{\"content\":[]}")
        .await
        .expect("append");
    task.journal(&subtask("s2"))
        .append(1, &EntryKind::Opening, "another")
        .await
        .expect("append");
    task.results()
        .record(&subtask("s1"), 1, &a, "the answer")
        .await
        .expect("record");
    task.budget().reserve(100).await.expect("reserve");
    task
}

async fn a_dump_restored_under_another_uid_reads_back_identical(fx: &Fixture) {
    let source = busy_task(fx).await;
    let original = dump::read(&fx.redis, source.keys()).await.expect("read");
    assert!(original.has_meta());
    for key in [
        "meta",
        "kv",
        "kv:ver",
        "events",
        "bus",
        "results",
        "budget",
        "spend",
        "journals",
        "journal:s1",
        "journal:s2",
    ] {
        assert!(
            original.keys.contains_key(key),
            "{key} missing from the dump: {:?}",
            original.keys.keys().collect::<Vec<_>>()
        );
    }
    let Some(KeyDump::Stream {
        entries, groups, ..
    }) = original.keys.get("events")
    else {
        panic!("events is not a stream");
    };
    assert_eq!(entries.len(), 2);
    assert!(groups.contains_key(GROUP_OPERATOR), "{groups:?}");

    let target = fx.pool().task(&task_uid());
    let written = dump::restore(&fx.redis, target.keys(), &original)
        .await
        .expect("restore");
    assert_eq!(written, original.entries());
    let copy = dump::read(&fx.redis, target.keys())
        .await
        .expect("read copy");
    // Identical except that meta names the new task.
    let mut expected = original.clone();
    if let Some(KeyDump::Hash { fields }) = expected.keys.get_mut("meta") {
        fields.insert(
            field::META_TASK.to_owned(),
            target.keys().task().as_str().to_owned(),
        );
        fields.insert(
            field::META_POOL.to_owned(),
            target.keys().pool().as_str().to_owned(),
        );
    }
    assert_eq!(copy, expected);

    // The restored task works: state reads, the journal replays, new entries go after old ones.
    assert_eq!(
        target.state().get("notes/b").await.expect("get").value,
        Some(b"beta v2".to_vec())
    );
    let conversation = target
        .journal(&subtask("s1"))
        .read_all()
        .await
        .expect("journal");
    assert_eq!(conversation.entries.len(), 2);
    target
        .events()
        .publish(&Event::new(
            &agent("agent-b"),
            "s2",
            1,
            EventKind::SubtaskStarted,
        ))
        .await
        .expect("publish after the restore");
    // The source is untouched.
    assert_eq!(
        dump::read(&fx.redis, source.keys()).await.expect("read"),
        original
    );
}

async fn a_restore_replaces_what_the_target_had_and_a_reread_is_stable(fx: &Fixture) {
    let source = busy_task(fx).await;
    let original = dump::read(&fx.redis, source.keys()).await.expect("read");
    let target = busy_task(fx).await;
    target.state().put("stale", b"x").await.expect("put");
    target
        .journal(&subtask("old"))
        .append(1, &EntryKind::Opening, "stale journal")
        .await
        .expect("append");
    dump::restore(&fx.redis, target.keys(), &original)
        .await
        .expect("restore");
    assert_eq!(target.state().get("stale").await.expect("get").value, None);
    let copy = dump::read(&fx.redis, target.keys()).await.expect("read");
    assert!(!copy.keys.contains_key("journal:old"));
    // Restoring the same dump again gives the same state (a retried restore).
    dump::restore(&fx.redis, target.keys(), &original)
        .await
        .expect("restore again");
    assert_eq!(
        dump::read(&fx.redis, target.keys()).await.expect("read"),
        copy
    );
}

async fn a_dump_naming_a_key_outside_a_task_is_refused_before_anything_is_written(fx: &Fixture) {
    let source = busy_task(fx).await;
    let mut bad = dump::read(&fx.redis, source.keys()).await.expect("read");
    bad.keys.insert(
        "../../other".to_owned(),
        KeyDump::String {
            value: "x".to_owned(),
        },
    );
    let target = busy_task(fx).await;
    let before = dump::read(&fx.redis, target.keys()).await.expect("read");
    let err = dump::restore(&fx.redis, target.keys(), &bad)
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("../../other"), "{err}");
    assert_eq!(
        dump::read(&fx.redis, target.keys()).await.expect("read"),
        before,
        "nothing was written"
    );
}

async fn a_task_without_state_dumps_empty(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let empty = dump::read(&fx.redis, task.keys()).await.expect("read");
    assert!(!empty.has_meta());
    assert_eq!(empty.entries(), 0);
}

async fn an_empty_event_stream_keeps_its_groups_through_a_restore(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    task.register(None).await.expect("register");
    let original = dump::read(&fx.redis, task.keys()).await.expect("read");
    let Some(KeyDump::Stream {
        entries, groups, ..
    }) = original.keys.get("events")
    else {
        panic!("the registered task's event stream is in the dump: {original:?}");
    };
    assert!(entries.is_empty());
    assert_eq!(groups.len(), 2, "{groups:?}");
    let target = fx.pool().task(&task_uid());
    dump::restore(&fx.redis, target.keys(), &original)
        .await
        .expect("restore");
    // The restored groups work: an event published now reaches the operator group.
    let a = agent("agent-a");
    target
        .events()
        .publish(&Event::new(&a, "s1", 1, EventKind::SubtaskStarted))
        .await
        .expect("publish");
    let mut consumer = target.events().consumer(GROUP_OPERATOR, "operator");
    let got = consumer.next(10, None).await.expect("consume");
    assert_eq!(got.len(), 1);
}

both_backends!(
    an_empty_event_stream_keeps_its_groups_through_a_restore,
    a_dump_restored_under_another_uid_reads_back_identical,
    a_restore_replaces_what_the_target_had_and_a_reread_is_stable,
    a_dump_naming_a_key_outside_a_task_is_refused_before_anything_is_written,
    a_task_without_state_dumps_empty,
);
