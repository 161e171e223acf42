//! The tools a MAOS agent offers the model: their JSON schemas, the checking of the model's
//! input, and their effects on the task's shared state, bus, events and results.
//!
//! A tool only ever reaches the task of the work item the agent holds: a key the model names is
//! a field inside that task's state hash, never a Redis key. Input that does not check out
//! becomes a `tool_result` with `is_error: true` that tells the model what to fix.

use maos_core::api::v1alpha1::SubtaskSpec;
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::mailbox::Cursor;
use maos_core::coord::queue::WorkKind;
use maos_core::coord::results::RecordOutcome;
use maos_core::coord::state::CasOutcome;
use maos_core::coord::{AgentName, CoordError, Task};
use maos_core::dag::SubtaskName;
use serde_json::{Value, json};

use crate::claude::types::Tool;

/// Reads one shared-state key.
pub const READ_STATE: &str = "read_state";
/// Writes one shared-state key with compare-and-set.
pub const WRITE_STATE: &str = "write_state";
/// Lists shared-state keys by prefix.
pub const LIST_STATE: &str = "list_state";
/// Sends a message to the task's other agents.
pub const SEND_MESSAGE: &str = "send_message";
/// Reads messages sent to this agent.
pub const READ_MESSAGES: &str = "read_messages";
/// Reports progress for the Task's status.
pub const REPORT_PROGRESS: &str = "report_progress";
/// Finishes the subtask with its result.
pub const COMPLETE_SUBTASK: &str = "complete_subtask";
/// Answers a plan item with the subtask DAG.
pub const SUBMIT_PLAN: &str = "submit_plan";

/// Longest shared-state key a model may name.
const MAX_KEY_CHARS: usize = 512;
/// Longest message a model may send.
const MAX_MESSAGE_CHARS: usize = 16_384;
/// Longest progress note.
const MAX_NOTE_CHARS: usize = 200;
/// Most messages one read_messages returns.
const READ_MESSAGES_BATCH: usize = 100;

/// A checked tool call.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolCall {
    /// Read `key`.
    ReadState {
        /// The state key.
        key: String,
    },
    /// Write `value` to `key` if it is still at `expected_version`.
    WriteState {
        /// The state key.
        key: String,
        /// The new value.
        value: String,
        /// The version read before (0: the key must not exist yet).
        expected_version: u64,
    },
    /// List keys starting with `prefix`.
    ListState {
        /// The prefix ("" lists every key).
        prefix: String,
    },
    /// Send `text` to one agent, or to all when `to` is `None`.
    SendMessage {
        /// The receiving agent.
        to: Option<String>,
        /// The message.
        text: String,
    },
    /// Read new messages.
    ReadMessages,
    /// Report progress.
    ReportProgress {
        /// Percent done, 0 to 100.
        percent: u8,
        /// A short note (kept in the audit trail, never in the Task's status).
        note: String,
    },
    /// Finish the subtask.
    CompleteSubtask {
        /// The result.
        result: String,
    },
    /// Answer a plan item.
    SubmitPlan {
        /// The planned subtasks.
        subtasks: Vec<SubtaskSpec>,
    },
}

/// The tools offered for a work item of `kind`.
pub fn definitions(kind: WorkKind) -> Vec<Tool> {
    let tool = |name: &str, description: &str, schema: Value| Tool {
        name: name.to_owned(),
        description: description.to_owned(),
        input_schema: schema,
    };
    let mut tools = vec![
        tool(
            READ_STATE,
            "Read one key of the task's shared state, which every agent of the task can read and write. Returns the value and its version; version 0 means the key was never written. Read a key before writing it, to get the version write_state needs.",
            json!({"type": "object", "properties": {"key": {"type": "string", "description": "The key, e.g. findings/pricing."}}, "required": ["key"], "additionalProperties": false}),
        ),
        tool(
            LIST_STATE,
            "List the keys of the task's shared state that start with a prefix.",
            json!({"type": "object", "properties": {"prefix": {"type": "string", "description": "The prefix; empty lists every key."}}, "required": ["prefix"], "additionalProperties": false}),
        ),
        tool(
            READ_MESSAGES,
            "Read the messages other agents of this task sent since you last read.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        tool(
            REPORT_PROGRESS,
            "Report how far along the subtask is. Call it at milestones, not every turn.",
            json!({"type": "object", "properties": {
                "percent": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent done."},
                "note": {"type": "string", "description": "A short note of at most 200 characters."}
            }, "required": ["percent"], "additionalProperties": false}),
        ),
    ];
    match kind {
        WorkKind::Plan => tools.push(tool(
            SUBMIT_PLAN,
            "Submit the plan: the subtasks that together reach the goal. Subtasks without dependencies run in parallel, so prefer independent subtasks. Names are lowercase DNS labels (letters, digits, '-'); dependsOn lists the names a subtask needs the results of. Do not add a final merging subtask: MAOS adds one.",
            json!({"type": "object", "properties": {"subtasks": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "Unique lowercase name, e.g. compare-pricing."},
                    "prompt": {"type": "string", "description": "What the agent working this subtask must do, self-contained."},
                    "dependsOn": {"type": "array", "items": {"type": "string"}, "description": "Names of subtasks whose results this one needs."}
                },
                "required": ["name", "prompt"], "additionalProperties": false
            }}}, "required": ["subtasks"], "additionalProperties": false}),
        )),
        WorkKind::Work | WorkKind::Synthesize => {
            tools.push(tool(
                WRITE_STATE,
                "Write one key of the task's shared state with compare-and-set: the write happens only if the key is still at expectedVersion (0 for a key never written). If another agent wrote it first you get its current value and version back: merge and try again.",
                json!({"type": "object", "properties": {
                    "key": {"type": "string"},
                    "value": {"type": "string", "description": "The new value (at most 1 MiB)."},
                    "expectedVersion": {"type": "integer", "minimum": 0, "description": "The version you read."}
                }, "required": ["key", "value", "expectedVersion"], "additionalProperties": false}),
            ));
            tools.push(tool(
                SEND_MESSAGE,
                "Send a message to the other agents of this task: to one agent (its name), or to all when 'to' is omitted.",
                json!({"type": "object", "properties": {
                    "to": {"type": "string", "description": "The receiving agent; omit to broadcast."},
                    "text": {"type": "string"}
                }, "required": ["text"], "additionalProperties": false}),
            ));
            tools.push(tool(
                COMPLETE_SUBTASK,
                "Finish the subtask with its result. Call it exactly once, when the result is complete; the result is what dependent subtasks and the final answer see.",
                json!({"type": "object", "properties": {"result": {"type": "string", "description": "The complete result."}}, "required": ["result"], "additionalProperties": false}),
            ));
        }
    }
    tools
}

/// Why the model's tool input was refused; the message goes back to the model.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolInputError(pub String);

/// Checks the model's call of `name` with `input`, for a work item of `kind`.
pub fn parse(name: &str, input: &Value, kind: WorkKind) -> Result<ToolCall, ToolInputError> {
    let offered = definitions(kind).iter().any(|t| t.name == name);
    if !offered {
        return Err(ToolInputError(format!(
            "there is no tool named {name:?} for this subtask"
        )));
    }
    let Some(object) = input.as_object() else {
        return Err(ToolInputError("the input must be a JSON object".to_owned()));
    };
    let known: &[&str] = match name {
        READ_STATE => &["key"],
        WRITE_STATE => &["key", "value", "expectedVersion"],
        LIST_STATE => &["prefix"],
        SEND_MESSAGE => &["to", "text"],
        READ_MESSAGES => &[],
        REPORT_PROGRESS => &["percent", "note"],
        COMPLETE_SUBTASK => &["result"],
        _ => &["subtasks"],
    };
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ToolInputError(format!(
            "unknown field {unknown:?}; the fields are {known:?}"
        )));
    }
    Ok(match name {
        READ_STATE => ToolCall::ReadState { key: state_key(input)? },
        WRITE_STATE => ToolCall::WriteState {
            key: state_key(input)?,
            value: string(input, "value", usize::MAX)?,
            expected_version: input["expectedVersion"]
                .as_u64()
                .ok_or_else(|| ToolInputError("expectedVersion must be a whole number of at least 0 (the version read_state returned)".to_owned()))?,
        },
        LIST_STATE => ToolCall::ListState {
            prefix: match &input["prefix"] {
                Value::Null => String::new(),
                Value::String(prefix) if prefix.chars().count() <= MAX_KEY_CHARS => prefix.clone(),
                _ => return Err(ToolInputError(format!("prefix must be a string of at most {MAX_KEY_CHARS} characters"))),
            },
        },
        SEND_MESSAGE => ToolCall::SendMessage {
            to: match &input["to"] {
                Value::Null => None,
                Value::String(to) if !to.is_empty() => Some(to.clone()),
                _ => return Err(ToolInputError("to must be an agent's name, or omitted to broadcast".to_owned())),
            },
            text: non_empty(input, "text", MAX_MESSAGE_CHARS)?,
        },
        READ_MESSAGES => ToolCall::ReadMessages,
        REPORT_PROGRESS => ToolCall::ReportProgress {
            percent: input["percent"]
                .as_u64()
                .filter(|p| *p <= 100)
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| ToolInputError("percent must be a whole number from 0 to 100".to_owned()))?,
            note: match &input["note"] {
                Value::Null => String::new(),
                _ => string(input, "note", MAX_NOTE_CHARS)?,
            },
        },
        COMPLETE_SUBTASK => ToolCall::CompleteSubtask { result: non_empty(input, "result", usize::MAX)? },
        _ => {
            let subtasks: Vec<SubtaskSpec> = serde_json::from_value(input["subtasks"].clone()).map_err(|err| {
                ToolInputError(format!("subtasks must be a list of {{name, prompt, dependsOn}} objects: {err}"))
            })?;
            if subtasks.is_empty() {
                return Err(ToolInputError("a plan needs at least one subtask".to_owned()));
            }
            ToolCall::SubmitPlan { subtasks }
        }
    })
}

fn string(input: &Value, field: &str, max_chars: usize) -> Result<String, ToolInputError> {
    match &input[field] {
        Value::String(text) if text.chars().count() <= max_chars => Ok(text.clone()),
        Value::String(_) => Err(ToolInputError(format!(
            "{field} must be at most {max_chars} characters"
        ))),
        Value::Null => Err(ToolInputError(format!("{field} is required"))),
        _ => Err(ToolInputError(format!("{field} must be a string"))),
    }
}

fn non_empty(input: &Value, field: &str, max_chars: usize) -> Result<String, ToolInputError> {
    let text = string(input, field, max_chars)?;
    if text.trim().is_empty() {
        return Err(ToolInputError(format!("{field} must not be empty")));
    }
    Ok(text)
}

fn state_key(input: &Value) -> Result<String, ToolInputError> {
    non_empty(input, "key", MAX_KEY_CHARS)
}

/// What the agent holds while running tools for one work item.
pub struct ToolContext<'a> {
    /// The task of the work item; the only task the tools can reach.
    pub task: &'a Task,
    /// This agent.
    pub agent: &'a AgentName,
    /// The subtask worked.
    pub subtask: &'a SubtaskName,
    /// The attempt.
    pub attempt: u32,
    /// The planner's bound on the number of subtasks.
    pub max_subtasks: u32,
    /// Where this agent has read the bus up to.
    pub cursor: &'a mut Cursor,
}

/// What running a tool did.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolOutcome {
    /// Tell the model `content`; the conversation goes on.
    Reply {
        /// The tool_result content.
        content: String,
        /// Whether it is an error the model should correct.
        is_error: bool,
    },
    /// The subtask is finished (its result or plan is recorded); `content` is the tool_result.
    Finished {
        /// The tool_result content.
        content: String,
    },
}

impl ToolOutcome {
    fn ok(value: Value) -> Self {
        Self::Reply {
            content: value.to_string(),
            is_error: false,
        }
    }

    fn error(message: impl Into<String>) -> Self {
        Self::Reply {
            content: message.into(),
            is_error: true,
        }
    }
}

/// Runs a checked call. A refusal the model can fix (a value too large, a plan with a cycle)
/// comes back as an error reply; only coordination failures are errors.
///
/// `tool_use_id` keys effects that must not happen twice: a replayed call (its result lost
/// when an agent died) sends no second message.
pub async fn execute(
    call: ToolCall,
    tool_use_id: &str,
    ctx: &mut ToolContext<'_>,
) -> Result<ToolOutcome, CoordError> {
    let state = ctx.task.state();
    Ok(match call {
        ToolCall::ReadState { key } => {
            let read = state.get(&key).await?;
            let value = read.value.map(|v| String::from_utf8_lossy(&v).into_owned());
            ToolOutcome::ok(json!({"key": key, "value": value, "version": read.version}))
        }
        ToolCall::WriteState {
            key,
            value,
            expected_version,
        } => match state.cas(&key, expected_version, value.as_bytes()).await {
            Ok(CasOutcome::Written { version }) => {
                ToolOutcome::ok(json!({"written": true, "key": key, "version": version}))
            }
            Ok(CasOutcome::Conflict { current }) => ToolOutcome::ok(json!({
                "written": false,
                "reason": "another agent wrote this key first; merge with the current value and write again with its version",
                "key": key,
                "currentValue": current.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                "currentVersion": current.version,
            })),
            Err(err @ (CoordError::ValueTooLarge { .. } | CoordError::InvalidStateKey { .. })) => {
                ToolOutcome::error(err.to_string())
            }
            Err(err) => return Err(err),
        },
        ToolCall::ListState { prefix } => {
            let keys = state.list(&prefix).await?;
            ToolOutcome::ok(json!({"keys": keys}))
        }
        ToolCall::SendMessage { to, text } => {
            let to_agent = match to.as_deref().map(AgentName::new).transpose() {
                Ok(to) => to,
                Err(_) => {
                    return Ok(ToolOutcome::error(
                        "to must be an agent's name (lowercase letters, digits, '-' and '.')",
                    ));
                }
            };
            let sent = ctx
                .task
                .mailbox()
                .send_once(tool_use_id, ctx.agent, to_agent.as_ref(), &text)
                .await?;
            if sent.is_some() {
                let event = Event::new(
                    ctx.agent,
                    ctx.subtask.as_str(),
                    ctx.attempt,
                    EventKind::MessageSent { to: to.clone() },
                );
                ctx.task.events().publish(&event).await?;
            }
            ToolOutcome::ok(json!({"sent": true, "to": to}))
        }
        ToolCall::ReadMessages => {
            let inbox = ctx
                .task
                .mailbox()
                .read_since(ctx.agent, ctx.cursor, READ_MESSAGES_BATCH)
                .await?;
            *ctx.cursor = inbox.cursor;
            let messages: Vec<Value> = inbox
                .messages
                .iter()
                .map(|m| json!({"from": m.from, "to": m.to, "text": m.body}))
                .collect();
            ToolOutcome::ok(json!({"messages": messages}))
        }
        ToolCall::ReportProgress { percent, note } => {
            // Status shows only the number; the note stays in the event stream (audit).
            let message = if note.is_empty() {
                format!("{percent}%")
            } else {
                format!("{percent}%: {note}")
            };
            let event = Event::new(
                ctx.agent,
                ctx.subtask.as_str(),
                ctx.attempt,
                EventKind::Progress { message },
            );
            ctx.task.events().publish(&event).await?;
            ToolOutcome::ok(json!({"reported": percent}))
        }
        ToolCall::CompleteSubtask { result } => {
            match ctx
                .task
                .results()
                .record(ctx.subtask, ctx.attempt, ctx.agent, &result)
                .await?
            {
                RecordOutcome::Won => ToolOutcome::Finished {
                    content: json!({"recorded": true}).to_string(),
                },
                // Someone else finished it first (a reclaimed duplicate): theirs stands.
                RecordOutcome::Lost { .. } => ToolOutcome::Finished {
                    content:
                        json!({"recorded": false, "reason": "this subtask already has a result"})
                            .to_string(),
                },
            }
        }
        ToolCall::SubmitPlan { subtasks } => {
            if subtasks.len() > ctx.max_subtasks as usize {
                return Ok(ToolOutcome::error(format!(
                    "the plan has {} subtasks; at most {} are allowed",
                    subtasks.len(),
                    ctx.max_subtasks
                )));
            }
            if let Err(errors) = maos_core::validate::check_subtasks(&subtasks, "subtasks") {
                return Ok(ToolOutcome::error(format!(
                    "the plan is not valid: {errors}"
                )));
            }
            let plan = Value::Array(
                subtasks
                    .iter()
                    .map(|s| json!({"name": s.name, "prompt": s.prompt, "dependsOn": s.depends_on}))
                    .collect(),
            );
            let recorded = ctx
                .task
                .results()
                .record(ctx.subtask, ctx.attempt, ctx.agent, &plan.to_string())
                .await?;
            if recorded == RecordOutcome::Won {
                let event = Event::new(
                    ctx.agent,
                    ctx.subtask.as_str(),
                    ctx.attempt,
                    EventKind::PlanSubmitted { plan },
                );
                ctx.task.events().publish(&event).await?;
            }
            ToolOutcome::Finished {
                content: json!({"accepted": true}).to_string(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_items_offer_submit_plan_and_no_writes() {
        let names: Vec<String> = definitions(WorkKind::Plan)
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert!(names.contains(&SUBMIT_PLAN.to_owned()));
        assert!(!names.contains(&WRITE_STATE.to_owned()));
        assert!(!names.contains(&COMPLETE_SUBTASK.to_owned()));
    }

    #[test]
    fn work_items_offer_every_tool_but_submit_plan() {
        let names: Vec<String> = definitions(WorkKind::Work)
            .into_iter()
            .map(|t| t.name)
            .collect();
        for tool in [
            READ_STATE,
            WRITE_STATE,
            LIST_STATE,
            SEND_MESSAGE,
            READ_MESSAGES,
            REPORT_PROGRESS,
            COMPLETE_SUBTASK,
        ] {
            assert!(names.contains(&tool.to_owned()), "{tool}");
        }
        assert!(!names.contains(&SUBMIT_PLAN.to_owned()));
    }

    #[test]
    fn every_schema_is_an_object_schema() {
        for kind in [WorkKind::Plan, WorkKind::Work, WorkKind::Synthesize] {
            for tool in definitions(kind) {
                assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
                assert!(!tool.description.is_empty());
            }
        }
    }

    #[test]
    fn a_write_needs_key_value_and_version() {
        let call = parse(
            WRITE_STATE,
            &json!({"key": "a", "value": "v", "expectedVersion": 0}),
            WorkKind::Work,
        );
        assert_eq!(
            call,
            Ok(ToolCall::WriteState {
                key: "a".into(),
                value: "v".into(),
                expected_version: 0
            })
        );
        let missing = parse(
            WRITE_STATE,
            &json!({"key": "a", "value": "v"}),
            WorkKind::Work,
        )
        .expect_err("refused");
        assert!(missing.0.contains("expectedVersion"), "{missing}");
        let negative = parse(
            WRITE_STATE,
            &json!({"key": "a", "value": "v", "expectedVersion": -1}),
            WorkKind::Work,
        );
        assert!(negative.is_err());
    }

    #[test]
    fn unknown_tools_and_fields_are_refused_with_a_reason() {
        assert!(
            parse("rm_rf", &json!({}), WorkKind::Work)
                .expect_err("refused")
                .0
                .contains("no tool")
        );
        assert!(
            parse(READ_STATE, &json!({"key": "a", "extra": 1}), WorkKind::Work)
                .expect_err("refused")
                .0
                .contains("extra")
        );
        assert!(parse(READ_STATE, &json!("a"), WorkKind::Work).is_err());
        assert!(
            parse(SUBMIT_PLAN, &json!({"subtasks": []}), WorkKind::Work).is_err(),
            "not offered for work items"
        );
    }

    #[test]
    fn a_model_chosen_key_is_just_text() {
        // Isolation: the key is a field inside the task's hash, so Redis key syntax is harmless.
        for key in ["../x", "maos:*", "{task:other}:kv"] {
            assert_eq!(
                parse(READ_STATE, &json!({"key": key}), WorkKind::Work),
                Ok(ToolCall::ReadState { key: key.into() })
            );
        }
    }

    #[test]
    fn progress_is_bounded() {
        assert!(parse(REPORT_PROGRESS, &json!({"percent": 101}), WorkKind::Work).is_err());
        assert!(
            parse(
                REPORT_PROGRESS,
                &json!({"percent": 50, "note": "x".repeat(201)}),
                WorkKind::Work
            )
            .is_err()
        );
        assert_eq!(
            parse(REPORT_PROGRESS, &json!({"percent": 50}), WorkKind::Work),
            Ok(ToolCall::ReportProgress {
                percent: 50,
                note: String::new()
            })
        );
    }

    #[test]
    fn a_plan_parses_into_subtask_specs() {
        let call = parse(
            SUBMIT_PLAN,
            &json!({"subtasks": [{"name": "a", "prompt": "x"}, {"name": "b", "prompt": "y", "dependsOn": ["a"]}]}),
            WorkKind::Plan,
        )
        .expect("valid");
        let ToolCall::SubmitPlan { subtasks } = call else {
            panic!("a plan")
        };
        assert_eq!(subtasks[1].depends_on, vec!["a".to_owned()]);
    }

    #[test]
    fn an_empty_result_is_refused() {
        assert!(parse(COMPLETE_SUBTASK, &json!({"result": "  "}), WorkKind::Work).is_err());
    }
}
