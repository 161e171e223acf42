//! How a subtask's journal becomes the conversation the model sees again, and where that
//! conversation stands: an agent that takes over a reclaimed attempt goes on from exactly the
//! point the dead agent reached — running the tool calls it left unanswered, finishing from a
//! final answer it journaled, or calling the model — and never sends two messages of one role
//! in a row.

use maos_core::coord::journal::EntryKind;
use serde::{Deserialize, Serialize};

use crate::claude::types::{ContentBlock, Message, MessageResponse, Role, StopReason};
use crate::tools;

/// One model turn as the journal keeps it: what the model said and why it stopped, so a
/// takeover treats the turn exactly as the agent that received it would have.
#[derive(Debug, Serialize, Deserialize)]
struct JournaledTurn {
    content: Vec<ContentBlock>,
    stop_reason: Option<StopReason>,
}

/// The journal body of a model response.
pub fn turn_body(response: &MessageResponse) -> String {
    let turn = JournaledTurn {
        content: response.content.clone(),
        stop_reason: response.stop_reason,
    };
    // Serializing these types cannot fail (string keys, no non-finite floats).
    serde_json::to_string(&turn).unwrap_or_default()
}

/// Appends `message`, merging it into the last message when both have one role: a paused turn
/// and its continuation are one assistant turn, tool results after a turn are one user turn.
/// Empty text blocks (an answer may hold them; the API refuses them back) are left out, and so
/// is a message left with nothing: its turn is over, and nothing of it goes back. Every other
/// block (thinking with its signature, too) goes back exactly as it came.
pub fn push(messages: &mut Vec<Message>, mut message: Message) {
    message.content.retain(|block| !block.is_empty_text());
    if message.content.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == message.role => last.content.extend(message.content),
        _ => messages.push(message),
    }
}

/// A journal read back as a conversation.
#[derive(Debug)]
pub struct Replayed {
    /// The conversation: the opening message, then alternating turns.
    pub messages: Vec<Message>,
    /// Why the model stopped, when the journal ends with its turn.
    pub last_stop: Option<StopReason>,
    /// How many model turns the journal holds.
    pub turns: u32,
}

/// The conversation a journal records after the opening message `first`. An unreadable entry
/// is returned as its error text.
pub fn replay<'a>(
    first: Message,
    entries: impl IntoIterator<Item = (&'a EntryKind, &'a str)>,
) -> Result<Replayed, String> {
    let mut replayed = Replayed {
        messages: vec![first],
        last_stop: None,
        turns: 0,
    };
    for (kind, body) in entries {
        match kind {
            // The opening message is `first`; an attempt's end is not part of its conversation.
            EntryKind::Opening | EntryKind::Ended => {}
            EntryKind::ModelResponse => {
                let turn: JournaledTurn =
                    serde_json::from_str(body).map_err(|e| format!("model response: {e}"))?;
                push(
                    &mut replayed.messages,
                    Message {
                        role: Role::Assistant,
                        content: turn.content,
                    },
                );
                replayed.last_stop = turn.stop_reason;
                replayed.turns = replayed.turns.saturating_add(1);
            }
            EntryKind::ToolResult { .. } => {
                let block: ContentBlock =
                    serde_json::from_str(body).map_err(|e| format!("tool result: {e}"))?;
                push(
                    &mut replayed.messages,
                    Message {
                        role: Role::User,
                        content: vec![block],
                    },
                );
                replayed.last_stop = None;
            }
        }
    }
    Ok(replayed)
}

/// What the conversation needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// A model call: the user spoke last and every tool call is answered.
    Call,
    /// The last model turn's tool calls that have no result yet must run.
    RunTools,
    /// The last model turn ended without tool calls, for this reason.
    Stopped(Option<StopReason>),
    /// A finishing tool (`complete_subtask`, an accepted `submit_plan`) was answered: the
    /// item's result is recorded.
    Finished,
}

fn tool_uses(message: &Message) -> impl Iterator<Item = (&str, &str)> {
    message.content.iter().filter_map(|block| match block {
        ContentBlock::ToolUse { id, name, .. } => Some((id.as_str(), name.as_str())),
        _ => None,
    })
}

/// The result answering tool use `id` in `message`, with whether it is an error.
fn result_for<'m>(message: &'m Message, id: &str) -> Option<(&'m str, bool)> {
    message.content.iter().find_map(|block| match block {
        ContentBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
            ..
        } if tool_use_id == id => Some((content.as_str(), *is_error)),
        _ => None,
    })
}

/// Whether tool use `id` of the last model turn already has its result in `messages`.
pub fn is_answered(messages: &[Message], id: &str) -> bool {
    messages
        .last()
        .is_some_and(|last| last.role == Role::User && result_for(last, id).is_some())
}

/// The content of the last model turn, if the model has spoken.
pub fn last_turn(messages: &[Message]) -> Option<&Message> {
    messages.iter().rev().find(|m| m.role == Role::Assistant)
}

/// The text of the model's final answer: its turn when the conversation ends with one (a turn
/// of only empty text left nothing, so an earlier turn's text is no answer).
pub fn final_answer(messages: &[Message]) -> String {
    messages
        .last()
        .filter(|m| m.role == Role::Assistant)
        .map(Message::text)
        .unwrap_or_default()
}

/// Where `messages` stands; `last_stop` is why the model stopped, when its turn is last.
pub fn tail(messages: &[Message], last_stop: Option<StopReason>) -> Tail {
    let Some(last) = messages.last() else {
        return Tail::Call;
    };
    // The model spoke last but said nothing that goes back (only empty text): its turn ended.
    if last.role == Role::User && last_stop.is_some() {
        return Tail::Stopped(last_stop);
    }
    if last.role == Role::Assistant {
        // A turn cut short (max_tokens) or declined may hold a partial tool call: not run.
        let cut = matches!(last_stop, Some(StopReason::MaxTokens | StopReason::Refusal));
        return if tool_uses(last).next().is_some() && !cut {
            Tail::RunTools
        } else {
            Tail::Stopped(last_stop)
        };
    }
    let Some(turn) = messages.len().checked_sub(2).map(|at| &messages[at]) else {
        return Tail::Call;
    };
    if tool_uses(turn).any(|(id, _)| result_for(last, id).is_none()) {
        Tail::RunTools
    } else if finished_by_tool(messages) {
        Tail::Finished
    } else {
        Tail::Call
    }
}

/// Whether the user's last message answers a finishing tool call of the turn before it
/// without an error: the item's result (or plan) is recorded.
pub fn finished_by_tool(messages: &[Message]) -> bool {
    let [.., turn, last] = messages else {
        return false;
    };
    last.role == Role::User
        && tool_uses(turn).any(|(id, name)| {
            (name == tools::COMPLETE_SUBTASK || name == tools::SUBMIT_PLAN)
                && result_for(last, id).is_some_and(|(_, is_error)| !is_error)
        })
}

/// Why the planner's last `submit_plan` was refused, if it was (the tool's error text).
pub fn plan_refusal(messages: &[Message]) -> Option<&str> {
    messages.windows(2).rev().find_map(|pair| {
        let (turn, results) = (&pair[0], &pair[1]);
        if turn.role != Role::Assistant || results.role != Role::User {
            return None;
        }
        tool_uses(turn)
            .filter(|(_, name)| *name == tools::SUBMIT_PLAN)
            .filter_map(|(id, _)| result_for(results, id))
            .filter(|(_, is_error)| *is_error)
            .map(|(content, _)| content)
            .last()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn opening() -> Message {
        Message::user_text("go")
    }

    fn turn(content: serde_json::Value, stop: &str) -> (EntryKind, String) {
        (
            EntryKind::ModelResponse,
            json!({"content": content, "stop_reason": stop}).to_string(),
        )
    }

    fn result(id: &str, is_error: bool) -> (EntryKind, String) {
        (
            EntryKind::ToolResult {
                tool_use_id: id.into(),
            },
            json!({"type": "tool_result", "tool_use_id": id, "content": "{}", "is_error": is_error})
                .to_string(),
        )
    }

    fn tool_use(id: &str, name: &str) -> serde_json::Value {
        json!({"type": "tool_use", "id": id, "name": name, "input": {}})
    }

    fn replayed(journal: &[(EntryKind, String)]) -> Replayed {
        replay(opening(), journal.iter().map(|(k, b)| (k, b.as_str()))).expect("replays")
    }

    fn assert_alternates(messages: &[Message]) {
        assert_eq!(messages[0].role, Role::User);
        for pair in messages.windows(2) {
            assert_ne!(pair[0].role, pair[1].role, "two turns of one role in a row");
        }
    }

    /// A whole attempt: a turn with two tool calls, their results, a paused turn and its
    /// continuation, a turn calling complete_subtask, and its result.
    fn attempt() -> Vec<(EntryKind, String)> {
        vec![
            (EntryKind::Opening, "go".into()),
            turn(
                json!([tool_use("t1", "read_state"), tool_use("t2", "list_state")]),
                "tool_use",
            ),
            result("t1", false),
            result("t2", false),
            turn(json!([{"type": "text", "text": "thinking "}]), "pause_turn"),
            turn(json!([{"type": "text", "text": "more"}]), "end_turn"),
            turn(json!([tool_use("t3", tools::COMPLETE_SUBTASK)]), "tool_use"),
            result("t3", false),
        ]
    }

    #[test]
    fn an_attempt_cut_after_any_entry_replays_alternating_and_goes_on_from_where_it_stopped() {
        let journal = attempt();
        let expected = [
            Tail::Call,                                 // the opening only
            Tail::RunTools,                             // tool calls, no results
            Tail::RunTools,                             // one of two results
            Tail::Call,                                 // both results
            Tail::Stopped(Some(StopReason::PauseTurn)), // a paused turn: call again
            Tail::Stopped(Some(StopReason::EndTurn)),   // a final answer: finish from it
            Tail::RunTools,                             // complete_subtask not yet run
            Tail::Finished,                             // its result recorded
        ];
        for (cut, want) in expected.iter().enumerate() {
            let replayed = replayed(&journal[..=cut]);
            assert_alternates(&replayed.messages);
            assert_eq!(
                tail(&replayed.messages, replayed.last_stop),
                *want,
                "cut after entry {cut}"
            );
        }
        let all = replayed(&journal);
        assert_eq!(all.turns, 4);
        assert_eq!(
            all.messages.len(),
            5,
            "the paused turn and its continuation are one"
        );
        assert!(is_answered(&all.messages, "t3"));
        assert!(
            !is_answered(&all.messages, "t1"),
            "only the last turn's results count"
        );
    }

    #[test]
    fn a_refused_plan_is_the_reason_a_planner_ends_without_one() {
        let refusal = (
            EntryKind::ToolResult {
                tool_use_id: "p1".into(),
            },
            json!({"type": "tool_result", "tool_use_id": "p1", "is_error": true,
                   "content": "the plan has 6 subtasks; at most 3 are allowed"})
            .to_string(),
        );
        let journal = vec![
            turn(json!([tool_use("p1", tools::SUBMIT_PLAN)]), "tool_use"),
            refusal,
            turn(json!([{"type": "text", "text": "Done."}]), "end_turn"),
        ];
        let replayed = replayed(&journal);
        assert_eq!(
            plan_refusal(&replayed.messages),
            Some("the plan has 6 subtasks; at most 3 are allowed")
        );
        assert_eq!(
            tail(&replayed.messages, replayed.last_stop),
            Tail::Stopped(Some(StopReason::EndTurn)),
            "a refused plan does not finish the item"
        );
        assert_eq!(plan_refusal(&self::replayed(&attempt()).messages), None);
    }

    #[test]
    fn empty_text_blocks_of_an_answer_are_never_sent_back() {
        let journal = vec![
            turn(
                json!([{"type": "text", "text": ""}, tool_use("t1", "read_state")]),
                "tool_use",
            ),
            result("t1", false),
        ];
        let replayed = replayed(&journal);
        assert_alternates(&replayed.messages);
        assert_eq!(
            replayed.messages[1].content,
            vec![ContentBlock::ToolUse {
                id: "t1".into(),
                name: "read_state".into(),
                input: json!({}),
            }]
        );
        assert_eq!(tail(&replayed.messages, replayed.last_stop), Tail::Call);
    }

    #[test]
    fn an_answer_of_only_empty_text_ends_the_turn_and_leaves_a_valid_conversation() {
        let journal = vec![
            turn(
                json!([{"type": "text", "text": "Reading."}, tool_use("t1", "read_state")]),
                "tool_use",
            ),
            result("t1", false),
            turn(json!([{"type": "text", "text": ""}]), "end_turn"),
        ];
        let replayed = replayed(&journal);
        assert_alternates(&replayed.messages);
        assert!(
            replayed.messages.iter().all(
                |m| !m.content.is_empty() && !m.content.iter().any(ContentBlock::is_empty_text)
            ),
            "{:?}",
            replayed.messages
        );
        assert_eq!(replayed.turns, 2);
        assert_eq!(
            tail(&replayed.messages, replayed.last_stop),
            Tail::Stopped(Some(StopReason::EndTurn))
        );
        assert_eq!(
            final_answer(&replayed.messages),
            "",
            "an earlier turn's text is no answer"
        );
    }

    #[test]
    fn thinking_blocks_are_replayed_exactly_as_they_came() {
        let thinking =
            json!({"type": "thinking", "thinking": "Check a first.", "signature": "c2lnbmVk"});
        let redacted = json!({"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"});
        let journal = vec![
            turn(
                json!([thinking, redacted, tool_use("t1", "read_state")]),
                "tool_use",
            ),
            result("t1", false),
        ];
        let replayed = replayed(&journal);
        let sent = serde_json::to_value(&replayed.messages[1].content).expect("serializes");
        assert_eq!(sent[0], thinking);
        assert_eq!(sent[1], redacted);
    }

    #[test]
    fn a_corrupt_journal_entry_is_an_error() {
        let journal = [(
            EntryKind::ModelResponse,
            json!([{"type": "text"}]).to_string(),
        )];
        assert!(replay(opening(), journal.iter().map(|(k, b)| (k, b.as_str()))).is_err());
    }
}
