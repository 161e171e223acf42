//! A task's keys against real Redis (standalone and cluster): results, budget, events,
//! messages, journals, cancellation and cleanup.

#[macro_use]
mod coord_common;

use std::collections::HashSet;
use std::sync::Arc;

use coord_common::{Fixture, task_uid};
use maos_core::coord::AgentName;
use maos_core::coord::budget::{BudgetUsage, Limit, Limits, ReserveOutcome, Spend};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::journal::EntryKind;
use maos_core::coord::keys::{GROUP_AUDIT, GROUP_OPERATOR};
use maos_core::coord::mailbox::Cursor;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::results::RecordOutcome;
use maos_core::dag::SubtaskName;

fn agent(name: &str) -> AgentName {
    AgentName::new(name).expect("agent name")
}

fn subtask(name: &str) -> SubtaskName {
    SubtaskName::new(name).expect("subtask")
}

async fn two_agents_completing_the_same_attempt_record_exactly_one_result(fx: &Fixture) {
    let results = Arc::new(fx.pool().task(&task_uid()).results());
    let mut racers = Vec::new();
    for name in ["agent-a", "agent-b"] {
        let results = Arc::clone(&results);
        racers.push(tokio::spawn(async move {
            results
                .record(
                    &subtask("s1"),
                    1,
                    &agent(name),
                    &format!("answer from {name}"),
                )
                .await
                .expect("record")
        }));
    }
    let mut outcomes = Vec::new();
    for r in racers {
        outcomes.push(r.await.expect("racer"));
    }
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, RecordOutcome::Won))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let stored = results
        .get(&subtask("s1"))
        .await
        .expect("get")
        .expect("a result");
    let loser = outcomes
        .iter()
        .find_map(|o| match o {
            RecordOutcome::Lost { recorded } => Some(recorded.clone()),
            RecordOutcome::Won => None,
        })
        .expect("one loser");
    assert_eq!(loser, stored);
    assert_eq!(stored.result, format!("answer from {}", stored.agent));
    assert_eq!(results.all().await.expect("all").len(), 1);
}

async fn later_attempt_cannot_replace_a_recorded_result(fx: &Fixture) {
    let results = fx.pool().task(&task_uid()).results();
    let a = agent("slow");
    assert_eq!(
        results
            .record(&subtask("s1"), 1, &a, "first")
            .await
            .expect("record"),
        RecordOutcome::Won
    );
    // The same call again (a retry after a lost reply) still reports the truth.
    assert_eq!(
        results
            .record(&subtask("s1"), 1, &a, "first")
            .await
            .expect("record"),
        RecordOutcome::Won
    );
    let second = results
        .record(&subtask("s1"), 2, &agent("fast"), "second")
        .await
        .expect("record");
    assert!(matches!(second, RecordOutcome::Lost { recorded } if recorded.result == "first"));
}

async fn twenty_concurrent_reservations_against_a_budget_for_ten_admit_exactly_ten(fx: &Fixture) {
    let budget = Arc::new(fx.pool().task(&task_uid()).budget());
    budget.set_limit(10_000).await.expect("limit");
    let mut calls = Vec::new();
    for _ in 0..20 {
        let budget = Arc::clone(&budget);
        calls.push(tokio::spawn(async move {
            budget.reserve(1_000).await.expect("reserve")
        }));
    }
    let mut reserved = Vec::new();
    for c in calls {
        if let ReserveOutcome::Reserved(r) = c.await.expect("call") {
            reserved.push(r);
        }
    }
    assert_eq!(reserved.len(), 10);
    assert_eq!(
        budget.usage().await.expect("usage"),
        BudgetUsage {
            limit: Some(10_000),
            reserved: 10_000,
            spent: 0,
            ..BudgetUsage::default()
        }
    );
    // Settling below the reservation frees the difference for another call.
    let first = reserved.pop().expect("one");
    assert_eq!(budget.settle(first, 400).await.expect("settle").tokens, 400);
    assert!(matches!(
        budget.reserve(600).await.expect("reserve"),
        ReserveOutcome::Reserved(_)
    ));
    assert_eq!(
        budget.reserve(1).await.expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Tokens,
            remaining: 0
        }
    );
}

async fn a_reservation_never_settled_lapses_at_its_deadline_and_is_given_back(fx: &Fixture) {
    let budget = fx.pool().task(&task_uid()).budget();
    budget.set_limit(1_000).await.expect("limit");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    // An agent killed mid-call: its reservation is never settled. Its item's deadline is past.
    let ReserveOutcome::Reserved(_killed) = budget
        .reserve_until(800, now_ms.saturating_sub(1))
        .await
        .expect("reserve")
    else {
        panic!("the first reservation fits");
    };
    // One of a live call, lapsing an hour from now, is kept whatever the others do.
    let ReserveOutcome::Reserved(live) = budget
        .reserve_until(100, now_ms + 3_600_000)
        .await
        .expect("reserve")
    else {
        panic!("the lapsed reservation was given back");
    };
    assert_eq!(
        budget.usage().await.expect("usage").reserved,
        100,
        "only the live call's reservation holds budget"
    );
    let ReserveOutcome::Reserved(more) = budget.reserve(900).await.expect("reserve") else {
        panic!("what the lapsed reservation held is free again");
    };
    assert_eq!(
        budget.reserve(1).await.expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Tokens,
            remaining: 0
        }
    );
    budget.settle(live, 50).await.expect("settle");
    budget.settle(more, 0).await.expect("settle");
    assert_eq!(
        budget.usage().await.expect("usage"),
        BudgetUsage {
            limit: Some(1_000),
            reserved: 0,
            spent: 50,
            ..BudgetUsage::default()
        }
    );
}

async fn spent_budget_refuses_further_reservations(fx: &Fixture) {
    let budget = fx.pool().task(&task_uid()).budget();
    budget.set_limit(100).await.expect("limit");
    let ReserveOutcome::Reserved(r) = budget.reserve(100).await.expect("reserve") else {
        panic!("the first reservation fits");
    };
    budget.settle(r, 100).await.expect("settle");
    assert_eq!(
        budget.reserve(1).await.expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Tokens,
            remaining: 0
        }
    );
    assert_eq!(
        budget.usage().await.expect("usage"),
        BudgetUsage {
            limit: Some(100),
            reserved: 0,
            spent: 100,
            ..BudgetUsage::default()
        }
    );
}

async fn task_without_a_budget_reserves_freely_and_tracks_spend(fx: &Fixture) {
    let budget = fx.pool().task(&task_uid()).budget();
    let ReserveOutcome::Reserved(r) = budget.reserve(5_000_000).await.expect("reserve") else {
        panic!("no limit means no refusal");
    };
    budget.settle(r, 42).await.expect("settle");
    assert_eq!(
        budget.usage().await.expect("usage"),
        BudgetUsage {
            limit: None,
            reserved: 0,
            spent: 42,
            ..BudgetUsage::default()
        }
    );
}

fn spend(tokens: u64, cost_micro_usd: Option<u64>) -> Spend {
    Spend {
        tokens,
        cost_micro_usd,
    }
}

async fn a_reservation_needs_both_limits_and_takes_nothing_when_either_refuses(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    task.register(Limits {
        tokens: Some(10_000),
        cost_micro_usd: Some(5_000),
    })
    .await
    .expect("register");
    let budget = task.budget();
    let ReserveOutcome::Reserved(first) = budget
        .reserve(spend(1_000, Some(4_000)))
        .await
        .expect("reserve")
    else {
        panic!("both limits cover the first call");
    };
    // Tokens to spare, but not the money: refused, and nothing of it is held.
    assert_eq!(
        budget
            .reserve(spend(1_000, Some(2_000)))
            .await
            .expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Cost,
            remaining: 1_000
        }
    );
    // The money, but not the tokens.
    assert_eq!(
        budget
            .reserve(spend(9_500, Some(0)))
            .await
            .expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Tokens,
            remaining: 9_000
        }
    );
    // A call whose cost cannot be known cannot be kept within a cost limit.
    assert_eq!(
        budget.reserve(spend(1, None)).await.expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::CostUnknown,
            remaining: 0
        }
    );
    assert_eq!(
        budget.usage().await.expect("usage"),
        BudgetUsage {
            limit: Some(10_000),
            reserved: 1_000,
            spent: 0,
            cost_limit_micro_usd: Some(5_000),
            cost_reserved_micro_usd: 4_000,
            cost_spent_micro_usd: 0,
        }
    );
    // Settled with what the answer cost: the rest of the worst case is free again.
    assert_eq!(
        budget
            .settle(first, spend(800, Some(3_000)))
            .await
            .expect("settle"),
        spend(800, Some(3_000))
    );
    assert!(matches!(
        budget
            .reserve(spend(1_000, Some(2_000)))
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved(_)
    ));
    let usage = budget.usage().await.expect("usage");
    assert_eq!(
        (usage.cost_reserved_micro_usd, usage.cost_spent_micro_usd),
        (2_000, 3_000)
    );
}

async fn twenty_concurrent_reservations_against_a_cost_budget_for_ten_admit_exactly_ten(
    fx: &Fixture,
) {
    let task = fx.pool().task(&task_uid());
    // A cost limit alone: no token limit holds anything back.
    task.register(Limits {
        tokens: None,
        cost_micro_usd: Some(10_000),
    })
    .await
    .expect("register");
    let budget = Arc::new(task.budget());
    let mut calls = Vec::new();
    for _ in 0..20 {
        let budget = Arc::clone(&budget);
        calls.push(tokio::spawn(async move {
            budget
                .reserve(spend(1_000_000, Some(1_000)))
                .await
                .expect("reserve")
        }));
    }
    let mut granted = 0;
    for call in calls {
        match call.await.expect("call") {
            ReserveOutcome::Reserved(_) => granted += 1,
            refused => assert_eq!(
                refused,
                ReserveOutcome::Exhausted {
                    limit: Limit::Cost,
                    remaining: 0
                }
            ),
        }
    }
    assert_eq!(granted, 10);
    let usage = budget.usage().await.expect("usage");
    assert_eq!(usage.cost_reserved_micro_usd, 10_000, "{usage:?}");
    assert_eq!(usage.reserved, 10_000_000, "{usage:?}");
}

async fn a_cost_as_large_as_the_schema_allows_is_counted_exactly(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    // maxCostUSD "999999999.999999": more digits than Lua prints a number with.
    let most = maos_core::price::micro_usd("999999999.999999").expect("valid");
    task.register(Limits {
        tokens: None,
        cost_micro_usd: Some(most),
    })
    .await
    .expect("register");
    let budget = task.budget();
    let ReserveOutcome::Reserved(call) = budget
        .reserve(spend(1, Some(most - 1)))
        .await
        .expect("reserve")
    else {
        panic!("the limit covers it");
    };
    assert_eq!(
        budget.usage().await.expect("usage").cost_reserved_micro_usd,
        most - 1
    );
    budget
        .settle(call, spend(1, Some(most - 7)))
        .await
        .expect("settle");
    let usage = budget.usage().await.expect("usage");
    assert_eq!(
        (usage.cost_reserved_micro_usd, usage.cost_spent_micro_usd),
        (0, most - 7)
    );
    assert_eq!(
        budget.reserve(spend(1, Some(8))).await.expect("reserve"),
        ReserveOutcome::Exhausted {
            limit: Limit::Cost,
            remaining: 7
        }
    );
}

fn event(kind: EventKind) -> Event {
    Event::new(&agent("a1"), "s1", 1, kind)
}

async fn every_group_receives_every_event_once_acked(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    task.register(None).await.expect("register");
    let log = task.events();
    let sent = vec![
        event(EventKind::SubtaskStarted),
        event(EventKind::TokensUsed {
            model: "claude-sonnet-4-5".to_owned(),
            input: 10,
            output: 5,
            cache_read: 0,
            cache_creation: 0,
        }),
        event(EventKind::SubtaskSucceeded),
    ];
    log.publish_many(&sent).await.expect("publish");
    for group in [GROUP_OPERATOR, GROUP_AUDIT] {
        let mut consumer = log.consumer(group, "c1");
        let got = consumer.next(100, None).await.expect("consume");
        let events: Vec<Event> = got.iter().map(|d| d.event.clone()).collect();
        assert_eq!(events, sent, "group {group}");
        let ids: Vec<_> = got.iter().map(|d| d.entry.clone()).collect();
        consumer.ack(&ids).await.expect("ack");
        assert!(consumer.next(100, None).await.expect("consume").is_empty());
    }
    let unique: HashSet<&str> = sent.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(unique.len(), sent.len(), "event ids are unique");
}

async fn unacked_events_are_redelivered_to_a_restarted_consumer(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    task.register(None).await.expect("register");
    let log = task.events();
    let progress = event(EventKind::Progress {
        message: "halfway".to_owned(),
    });
    log.publish(&progress).await.expect("publish");
    let mut before_crash = log.consumer(GROUP_OPERATOR, "operator-0");
    let got = before_crash.next(10, None).await.expect("consume");
    assert_eq!(got.len(), 1);
    drop(before_crash); // crashed before acking
    let mut restarted = log.consumer(GROUP_OPERATOR, "operator-0");
    let again = restarted.next(10, None).await.expect("consume");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event, progress);
    assert_eq!(again[0].entry, got[0].entry);
    restarted.ack(&[again[0].entry.clone()]).await.expect("ack");
    let mut third = log.consumer(GROUP_OPERATOR, "operator-0");
    assert!(third.next(10, None).await.expect("consume").is_empty());
}

async fn broadcast_reaches_others_and_direct_message_only_its_addressee(fx: &Fixture) {
    let bus = fx.pool().task(&task_uid()).mailbox();
    let (a, b, c) = (agent("a"), agent("b"), agent("c"));
    bus.send(&a, None, "hello all").await.expect("send");
    bus.send(&a, Some(&b), "psst b").await.expect("send");
    let for_b = bus
        .read_since(&b, &Cursor::start(), 100)
        .await
        .expect("read");
    let bodies: Vec<&str> = for_b.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["hello all", "psst b"]);
    assert_eq!(for_b.messages[1].to.as_deref(), Some("b"));
    let for_c = bus
        .read_since(&c, &Cursor::start(), 100)
        .await
        .expect("read");
    let bodies: Vec<&str> = for_c.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["hello all"]);
    // The sender does not read its own broadcast back.
    let for_a = bus
        .read_since(&a, &Cursor::start(), 100)
        .await
        .expect("read");
    assert!(for_a.messages.is_empty());
    // Reading from the returned cursor yields only newer messages.
    bus.send(&c, None, "later").await.expect("send");
    let newer = bus.read_since(&b, &for_b.cursor, 100).await.expect("read");
    let bodies: Vec<&str> = newer.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, vec!["later"]);
}

async fn journal_replays_the_conversation_in_order_and_knows_applied_tool_calls(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let journal = task.journal(&subtask("s1"));
    journal
        .append(
            1,
            &EntryKind::ModelResponse,
            r#"{"role":"assistant","content":[]}"#,
        )
        .await
        .expect("append");
    journal
        .append(
            1,
            &EntryKind::ToolResult {
                tool_use_id: "toolu_01".to_owned(),
            },
            r#"{"ok":true}"#,
        )
        .await
        .expect("append");
    for i in 0..600 {
        journal
            .append(2, &EntryKind::ModelResponse, &format!("turn {i}"))
            .await
            .expect("append");
    }
    let conversation = journal.read_all().await.expect("read");
    assert_eq!(conversation.entries.len(), 602);
    assert_eq!(conversation.entries[0].kind, EntryKind::ModelResponse);
    assert_eq!(conversation.entries[601].body, "turn 599");
    let bodies_in_order = conversation.entries[2..]
        .iter()
        .enumerate()
        .all(|(i, e)| e.body == format!("turn {i}") && e.attempt == 2);
    assert!(bodies_in_order);
    let applied = conversation.tool_result("toolu_01").expect("recorded");
    assert_eq!(applied.body, r#"{"ok":true}"#);
    assert!(conversation.tool_result("toolu_02").is_none());
}

async fn the_operator_ends_an_attempt_the_agent_could_not_end_before_its_retry(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let journal = task.journal(&subtask("stuck"));
    assert!(
        !journal.end_before(2, "nothing yet").await.expect("end"),
        "an empty journal needs no end"
    );
    journal
        .append(1, &EntryKind::Opening, "go")
        .await
        .expect("append");
    assert!(
        journal
            .end_before(2, "DeadlineExceeded: stuck")
            .await
            .expect("end")
    );
    assert!(
        !journal.end_before(2, "again").await.expect("end"),
        "an ended attempt is ended once"
    );
    let conversation = journal.read_all().await.expect("read");
    assert!(conversation.live().is_empty());
    assert_eq!(conversation.last_failure(), Some("DeadlineExceeded: stuck"));
    // The retry started: its own entries are never cut off.
    journal
        .append(2, &EntryKind::Opening, "go again")
        .await
        .expect("append");
    assert!(!journal.end_before(2, "late").await.expect("end"));
    assert_eq!(journal.read_all().await.expect("read").live().len(), 1);
}

async fn cleanup_deletes_every_key_of_the_task_and_nothing_else(fx: &Fixture) {
    let pool = fx.pool();
    let (doomed, kept) = (pool.task(&task_uid()), pool.task(&task_uid()));
    for task in [&doomed, &kept] {
        task.register(Some(1_000)).await.expect("register");
        task.state().put("k", b"v").await.expect("put");
        task.results()
            .record(&subtask("s1"), 1, &agent("a"), "r")
            .await
            .expect("record");
        task.events()
            .publish(&event(EventKind::SubtaskStarted))
            .await
            .expect("publish");
        task.mailbox()
            .send(&agent("a"), None, "hi")
            .await
            .expect("send");
        task.journal(&subtask("s1"))
            .append(1, &EntryKind::ModelResponse, "x")
            .await
            .expect("append");
        task.journal(&subtask("s2"))
            .append(1, &EntryKind::ModelResponse, "y")
            .await
            .expect("append");
        task.cancel("Cancelled").await.expect("cancel");
        assert_eq!(
            task.cancelled().await.expect("cancelled").as_deref(),
            Some("Cancelled")
        );
    }
    let before = fx.all_keys().await;
    let doomed_keys: Vec<&String> = before
        .iter()
        .filter(|k| k.contains(&format!("{{task:{}}}", doomed.keys().task())))
        .collect();
    // meta, kv, kv:ver, events, bus, results, budget, cancel, journal index, 2 journals
    assert_eq!(doomed_keys.len(), 11, "{doomed_keys:?}");
    let deleted = doomed.delete_all().await.expect("cleanup");
    assert_eq!(deleted, 11);
    let after = fx.all_keys().await;
    let remaining: Vec<&String> = after
        .iter()
        .filter(|k| k.contains(&format!("{{task:{}}}", doomed.keys().task())))
        .collect();
    assert!(remaining.is_empty(), "{remaining:?}");
    assert_eq!(after.len(), before.len() - 11);
    assert!(!doomed.exists().await.expect("exists"));
    assert!(kept.exists().await.expect("exists"));
    assert_eq!(
        kept.state().get("k").await.expect("get").value.as_deref(),
        Some(b"v".as_slice())
    );
}

async fn deleting_a_task_from_its_pool_removes_its_queue_items_and_keys(fx: &Fixture) {
    let pool = fx.pool();
    let uid = task_uid();
    let task = pool.task(&uid);
    task.register(None).await.expect("register");
    task.state().put("k", b"v").await.expect("put");
    let queue = pool.queue();
    queue.ensure_group().await.expect("group");
    queue
        .enqueue(&WorkItem {
            task: uid.clone(),
            subtask: subtask("s1"),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: 0,
        })
        .await
        .expect("enqueue");
    pool.delete_task(&uid).await.expect("delete task");
    assert!(!task.exists().await.expect("exists"));
    assert_eq!(task.state().get("k").await.expect("get").value, None);
    assert_eq!(queue.stats().await.expect("stats").waiting, 0);
    // Repeating the cleanup (a finalizer retried) is harmless.
    pool.delete_task(&uid).await.expect("delete task again");
}

both_backends!(
    deleting_a_task_from_its_pool_removes_its_queue_items_and_keys,
    two_agents_completing_the_same_attempt_record_exactly_one_result,
    later_attempt_cannot_replace_a_recorded_result,
    twenty_concurrent_reservations_against_a_budget_for_ten_admit_exactly_ten,
    spent_budget_refuses_further_reservations,
    a_reservation_never_settled_lapses_at_its_deadline_and_is_given_back,
    task_without_a_budget_reserves_freely_and_tracks_spend,
    a_reservation_needs_both_limits_and_takes_nothing_when_either_refuses,
    twenty_concurrent_reservations_against_a_cost_budget_for_ten_admit_exactly_ten,
    a_cost_as_large_as_the_schema_allows_is_counted_exactly,
    every_group_receives_every_event_once_acked,
    unacked_events_are_redelivered_to_a_restarted_consumer,
    broadcast_reaches_others_and_direct_message_only_its_addressee,
    journal_replays_the_conversation_in_order_and_knows_applied_tool_calls,
    the_operator_ends_an_attempt_the_agent_could_not_end_before_its_retry,
    cleanup_deletes_every_key_of_the_task_and_nothing_else,
);
