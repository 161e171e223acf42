//! Tool effects applied at most once per tool-use id, against real Redis (standalone and
//! cluster): a replayed send_message sends nothing, and cleanup removes the record.

#[macro_use]
mod coord_common;

use coord_common::{Fixture, task_uid};
use maos_core::coord::AgentName;
use maos_core::coord::mailbox::Cursor;

async fn a_replayed_send_sends_nothing(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let (alice, bob) = (
        AgentName::new("alice").expect("name"),
        AgentName::new("bob").expect("name"),
    );
    let mailbox = task.mailbox();
    assert!(
        mailbox
            .send_once("toolu_1", &alice, None, "hello")
            .await
            .expect("send")
            .is_some()
    );
    assert!(
        mailbox
            .send_once("toolu_1", &alice, None, "hello")
            .await
            .expect("send")
            .is_none()
    );
    assert!(
        mailbox
            .send_once("toolu_2", &alice, None, "again")
            .await
            .expect("send")
            .is_some()
    );
    let inbox = mailbox
        .read_since(&bob, &Cursor::start(), 100)
        .await
        .expect("read");
    let bodies: Vec<&str> = inbox.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["hello", "again"]);
}

async fn cleanup_removes_the_applied_effects(fx: &Fixture) {
    let task = fx.pool().task(&task_uid());
    let alice = AgentName::new("alice").expect("name");
    task.mailbox()
        .send_once("toolu_1", &alice, None, "hello")
        .await
        .expect("send");
    task.delete_all().await.expect("cleanup");
    let applied = task.keys().applied();
    assert!(
        !fx.all_keys().await.contains(&applied),
        "{applied} survived cleanup"
    );
    // After cleanup the same id is new again (a recreated task starts clean).
    assert!(
        task.mailbox()
            .send_once("toolu_1", &alice, None, "hello")
            .await
            .expect("send")
            .is_some()
    );
}

both_backends!(
    a_replayed_send_sends_nothing,
    cleanup_removes_the_applied_effects
);
