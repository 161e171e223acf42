//! What the stand-in answers: a [`Behaviour`] turns a checked request into an [`Outcome`]
//! (a reply, or a fault the real API can produce), so each test scripts the model it needs.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};

use super::wire::{MessagesRequest, StopReason};

/// One content block the model answers with.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// Text.
    Text(String),
    /// A tool call; the stand-in gives it a fresh `toolu_` id.
    ToolUse {
        /// The tool's name.
        name: String,
        /// Its input.
        input: Value,
    },
}

/// A model answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The content blocks.
    pub blocks: Vec<Block>,
    /// Why the model stopped; `None` derives it (tool_use if a tool is called, else end_turn).
    pub stop_reason: Option<StopReason>,
}

impl Reply {
    /// A plain text answer that ends the turn.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            blocks: vec![Block::Text(text.into())],
            stop_reason: None,
        }
    }

    /// A single tool call.
    pub fn tool(name: impl Into<String>, input: Value) -> Self {
        Self {
            blocks: vec![Block::ToolUse {
                name: name.into(),
                input,
            }],
            stop_reason: None,
        }
    }

    /// The same answer with an explicit stop reason (e.g. `refusal`, `pause_turn`).
    pub fn stopping(mut self, reason: StopReason) -> Self {
        self.stop_reason = Some(reason);
        self
    }
}

/// A failure the real API or the network between can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// An HTTP error status with the real API's error body (429, 500, 502, 503, 504, 529, 400, ...).
    Status {
        /// The status code.
        status: u16,
        /// Seconds for a `retry-after` header, if any.
        retry_after: Option<u64>,
    },
    /// The connection is cut after the response headers, before the body completes.
    ResetConnection,
    /// Nothing is answered for this long (for client time-outs).
    Hang(Duration),
    /// A 200 whose body is not valid JSON.
    MalformedBody,
    /// A stream that sends an `error` event (overloaded) after it started.
    StreamError,
}

impl Fault {
    /// 529 Overloaded.
    pub const OVERLOADED: Fault = Fault::Status {
        status: 529,
        retry_after: None,
    };

    /// 429 with a `retry-after` of `seconds`.
    pub fn rate_limited(seconds: u64) -> Self {
        Fault::Status {
            status: 429,
            retry_after: Some(seconds),
        }
    }
}

/// What one request gets.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A model answer.
    Reply(Reply),
    /// A failure.
    Fail(Fault),
}

/// Decides the outcome of each request.
pub trait Behaviour: Send + Sync {
    /// The outcome of `request`, the `call`-th request the stand-in received (from 1).
    fn respond(&self, request: &MessagesRequest, call: u64) -> Outcome;
}

impl<F> Behaviour for F
where
    F: Fn(&MessagesRequest, u64) -> Outcome + Send + Sync,
{
    fn respond(&self, request: &MessagesRequest, call: u64) -> Outcome {
        self(request, call)
    }
}

/// Plays a fixed list of outcomes in order, then hands over to a fallback behaviour.
pub struct Scripted {
    queue: Mutex<VecDeque<Outcome>>,
    fallback: Box<dyn Behaviour>,
}

impl Scripted {
    /// `outcomes` first, then `fallback`.
    pub fn new(
        outcomes: impl IntoIterator<Item = Outcome>,
        fallback: impl Behaviour + 'static,
    ) -> Self {
        Self {
            queue: Mutex::new(outcomes.into_iter().collect()),
            fallback: Box::new(fallback),
        }
    }
}

impl Behaviour for Scripted {
    fn respond(&self, request: &MessagesRequest, call: u64) -> Outcome {
        let next = self.queue.lock().ok().and_then(|mut q| q.pop_front());
        next.unwrap_or_else(|| self.fallback.respond(request, call))
    }
}

/// The tool a planner agent answers through (DESIGN.md §5).
pub const SUBMIT_PLAN: &str = "submit_plan";
/// The tool a working agent finishes a subtask with (DESIGN.md §5).
pub const COMPLETE_SUBTASK: &str = "complete_subtask";

/// How the subtasks of a stand-in plan depend on each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanShape {
    /// All independent: the most parallel plan.
    Parallel,
    /// Each depends on the one before: no parallelism at all.
    Chain,
}

/// One tool call a stand-in agent makes while working a subtask. In string values of `input`,
/// `{topic}` is replaced by the first line of the subtask's prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkCall {
    /// The tool.
    pub tool: String,
    /// Its input.
    pub input: Value,
}

/// A deterministic stand-in for Claude working as a MAOS agent, for `make demo` and the e2e
/// tests. Offered `submit_plan`, it plans `plan_size` subtasks shaped by `plan_shape`. Offered
/// `complete_subtask`, it first makes each of `work_calls` whose tool is offered, one per turn,
/// then completes the subtask with an answer derived from the prompt. After a tool result for
/// `submit_plan` or `complete_subtask` it ends its turn.
#[derive(Clone, Debug)]
pub struct MaosAgent {
    /// How many subtasks a plan has.
    pub plan_size: usize,
    /// How they depend on each other.
    pub plan_shape: PlanShape,
    /// Tool calls made before completing a subtask.
    pub work_calls: Vec<WorkCall>,
}

impl Default for MaosAgent {
    fn default() -> Self {
        Self {
            plan_size: 4,
            plan_shape: PlanShape::Parallel,
            work_calls: vec![
                WorkCall {
                    tool: "write_state".into(),
                    input: json!({"key": "notes/{topic}", "value": "Working on: {topic}", "expectedVersion": 0}),
                },
                WorkCall {
                    tool: "send_message".into(),
                    input: json!({"text": "Started: {topic}"}),
                },
                WorkCall {
                    tool: "read_messages".into(),
                    input: json!({}),
                },
            ],
        }
    }
}

impl Behaviour for MaosAgent {
    fn respond(&self, request: &MessagesRequest, _call: u64) -> Outcome {
        let finished = last_tool_called(request)
            .is_some_and(|tool| tool == SUBMIT_PLAN || tool == COMPLETE_SUBTASK);
        if finished {
            return Outcome::Reply(Reply::text("Done."));
        }
        let topic = first_line(&request.first_user_text());
        if request.offers_tool(SUBMIT_PLAN) {
            let subtasks: Vec<Value> = (1..=self.plan_size)
                .map(|i| {
                    let depends_on: Vec<String> = match self.plan_shape {
                        PlanShape::Chain if i > 1 => vec![format!("part-{}", i - 1)],
                        _ => Vec::new(),
                    };
                    json!({
                        "name": format!("part-{i}"),
                        "prompt": format!("Work on part {i} of {} of: {topic}", self.plan_size),
                        "dependsOn": depends_on,
                    })
                })
                .collect();
            return Outcome::Reply(Reply::tool(SUBMIT_PLAN, json!({ "subtasks": subtasks })));
        }
        if request.offers_tool(COMPLETE_SUBTASK) {
            let offered: Vec<&WorkCall> = self
                .work_calls
                .iter()
                .filter(|call| request.offers_tool(&call.tool))
                .collect();
            let step = tool_results_so_far(request);
            if let Some(call) = offered.get(step) {
                return Outcome::Reply(Reply::tool(
                    call.tool.clone(),
                    fill_topic(&call.input, &topic),
                ));
            }
            return Outcome::Reply(Reply::tool(
                COMPLETE_SUBTASK,
                json!({ "result": format!("Stand-in answer to: {topic}") }),
            ));
        }
        Outcome::Reply(Reply::text(format!("Stand-in answer to: {topic}")))
    }
}

/// The name of the tool the last tool_result answers, if the conversation ends with one.
fn last_tool_called(request: &MessagesRequest) -> Option<String> {
    let results = request.last_tool_results();
    let answered = results.first()?["tool_use_id"].as_str()?;
    request
        .messages
        .iter()
        .rev()
        .filter(|m| m["role"] == "assistant")
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .find(|b| b["type"] == "tool_use" && b["id"] == answered)
        .and_then(|b| b["name"].as_str().map(str::to_owned))
}

/// How many tool results the conversation holds: the turn a scripted agent is at.
fn tool_results_so_far(request: &MessagesRequest) -> usize {
    request
        .messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|b| b["type"] == "tool_result")
        .count()
}

fn fill_topic(input: &Value, topic: &str) -> Value {
    match input {
        Value::String(text) => Value::String(text.replace("{topic}", topic)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_topic(v, topic)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_topic(v, topic)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Injects the fault a `[[fault:<kind>]]` marker in a conversation's text names, once per
/// conversation (so the client's retry then succeeds), and otherwise defers to `inner`;
/// `[[fault:<kind>*<n>]]` fails the first `n` calls of the conversation instead. Kinds:
/// `429`, `500`, `502`, `503`, `504`, `529`, `400`, `401`, `403`, `404`, `slow` (no answer for
/// 30 s), `malformed`, `cut` (connection cut), `stream` (a stream that fails midway). Lets an
/// end-to-end test inject faults through a Task's prompt.
///
/// A conversation is its system prompt and opening message, less the account of a previous
/// failed attempt that an agent adds when it retries (the [`RETRY_SECTION`] heading and what
/// follows it up to the next heading): the attempts of one subtask share one count.
pub struct FaultMarkers<B> {
    inner: B,
    /// Marker and conversation text → how many times it has fired.
    fired: Mutex<std::collections::HashMap<String, u32>>,
}

impl<B> FaultMarkers<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            fired: Mutex::new(std::collections::HashMap::new()),
        }
    }
}

/// The heading under which a retrying agent tells the model why the last attempt failed.
pub const RETRY_SECTION: &str = "\n# The previous attempt failed\n";

/// `text` without its retry section.
fn without_retry_section(text: &str) -> String {
    let Some(start) = text.find(RETRY_SECTION) else {
        return text.to_owned();
    };
    let rest = &text[start + RETRY_SECTION.len()..];
    let end = rest
        .find("\n# ")
        .map_or(text.len(), |at| start + RETRY_SECTION.len() + at);
    format!("{}{}", &text[..start], &text[end..])
}

impl<B: Behaviour> Behaviour for FaultMarkers<B> {
    fn respond(&self, request: &MessagesRequest, call: u64) -> Outcome {
        let text = without_retry_section(&format!(
            "{}\n{}",
            request.system,
            request.first_user_text()
        ));
        for marker in text
            .match_indices("[[fault:")
            .map(|(start, _)| &text[start..])
        {
            let Some(end) = marker.find("]]") else {
                continue;
            };
            let spec = &marker["[[fault:".len()..end];
            let Some((fault, times)) = parse_fault_spec(spec) else {
                continue;
            };
            let key = format!("{spec}\u{0}{text}");
            let fires = self
                .fired
                .lock()
                .map(|mut fired| {
                    let count = fired.entry(key).or_insert(0);
                    let fires = *count < times;
                    if fires {
                        *count += 1;
                    }
                    fires
                })
                .unwrap_or(false);
            if fires {
                return Outcome::Fail(fault);
            }
        }
        self.inner.respond(request, call)
    }
}

/// A marker's `<kind>` or `<kind>*<n>`: the fault and how many calls it fails.
fn parse_fault_spec(spec: &str) -> Option<(Fault, u32)> {
    let (kind, times) = match spec.split_once('*') {
        Some((kind, n)) => (kind, n.parse().ok()?),
        None => (spec, 1),
    };
    Some((fault_named(kind)?, times))
}

fn fault_named(kind: &str) -> Option<Fault> {
    let status = |status| Fault::Status {
        status,
        retry_after: None,
    };
    Some(match kind {
        "429" => Fault::rate_limited(1),
        "400" => status(400),
        "401" => status(401),
        "403" => status(403),
        "404" => status(404),
        "500" => status(500),
        "502" => status(502),
        "503" => status(503),
        "504" => status(504),
        "529" => status(529),
        "slow" => Fault::Hang(Duration::from_secs(30)),
        "malformed" => Fault::MalformedBody,
        "cut" => Fault::ResetConnection,
        "stream" => Fault::StreamError,
        _ => return None,
    })
}

/// The first line of prose: blank lines and Markdown headings are skipped.
fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or_default();
    line.chars().take(200).collect()
}

/// The stop reason a reply implies when it names none.
pub fn stop_reason_of(reply: &Reply) -> StopReason {
    reply.stop_reason.unwrap_or_else(|| {
        if reply
            .blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
        {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claude_standin::wire::parse_request;

    fn request(tools: &[&str]) -> MessagesRequest {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"name": t, "input_schema": {"type": "object"}}))
            .collect();
        let body = json!({"model": "m", "max_tokens": 10, "tools": tools,
                          "messages": [{"role": "user", "content": "Compare databases.\nMore detail."}]});
        parse_request(body.to_string().as_bytes()).expect("valid")
    }

    #[test]
    fn the_maos_agent_plans_when_offered_submit_plan() {
        let agent = MaosAgent {
            plan_size: 3,
            ..MaosAgent::default()
        };
        let Outcome::Reply(reply) = agent.respond(&request(&[SUBMIT_PLAN]), 1) else {
            panic!("a reply");
        };
        let Block::ToolUse { name, input } = &reply.blocks[0] else {
            panic!("a tool call");
        };
        assert_eq!(name, SUBMIT_PLAN);
        assert_eq!(input["subtasks"].as_array().map(Vec::len), Some(3));
        assert_eq!(stop_reason_of(&reply), StopReason::ToolUse);
    }

    #[test]
    fn the_maos_agent_completes_a_subtask_from_its_prompt() {
        let Outcome::Reply(reply) = MaosAgent::default().respond(&request(&[COMPLETE_SUBTASK]), 1)
        else {
            panic!("a reply");
        };
        assert_eq!(
            reply.blocks,
            vec![Block::ToolUse {
                name: COMPLETE_SUBTASK.into(),
                input: json!({"result": "Stand-in answer to: Compare databases."})
            }]
        );
    }

    #[test]
    fn a_chain_plan_makes_each_part_wait_for_the_one_before() {
        let agent = MaosAgent {
            plan_size: 3,
            plan_shape: PlanShape::Chain,
            ..MaosAgent::default()
        };
        let Outcome::Reply(reply) = agent.respond(&request(&[SUBMIT_PLAN]), 1) else {
            panic!("a reply");
        };
        let Block::ToolUse { input, .. } = &reply.blocks[0] else {
            panic!("a tool call");
        };
        assert_eq!(input["subtasks"][0]["dependsOn"], json!([]));
        assert_eq!(input["subtasks"][2]["dependsOn"], json!(["part-2"]));
    }

    #[test]
    fn offered_work_tools_are_called_one_per_turn_before_completing() {
        let agent = MaosAgent::default();
        let mut body = json!({"model": "m", "max_tokens": 10,
            "tools": [{"name": COMPLETE_SUBTASK, "input_schema": {"type": "object"}},
                      {"name": "write_state", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "Topic A"}]});
        let parse = |body: &Value| parse_request(body.to_string().as_bytes()).expect("valid");
        let Outcome::Reply(first) = agent.respond(&parse(&body), 1) else {
            panic!("reply")
        };
        assert_eq!(
            first.blocks,
            vec![Block::ToolUse {
                name: "write_state".into(),
                input: json!({"key": "notes/Topic A", "value": "Working on: Topic A", "expectedVersion": 0})
            }]
        );
        body["messages"] = json!([
            {"role": "user", "content": "Topic A"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "write_state", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
        ]);
        let Outcome::Reply(second) = agent.respond(&parse(&body), 2) else {
            panic!("reply")
        };
        assert!(
            matches!(&second.blocks[0], Block::ToolUse { name, .. } if name == COMPLETE_SUBTASK)
        );
        body["messages"] = json!([
            {"role": "user", "content": "Topic A"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": COMPLETE_SUBTASK, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "recorded"}]}
        ]);
        assert_eq!(
            agent.respond(&parse(&body), 3),
            Outcome::Reply(Reply::text("Done."))
        );
    }

    #[test]
    fn a_fault_marker_fails_the_first_call_of_a_conversation_only() {
        let markers = FaultMarkers::new(MaosAgent::default());
        let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Plan this [[fault:529]]"}]});
        let req = parse_request(body.to_string().as_bytes()).expect("valid");
        assert_eq!(markers.respond(&req, 1), Outcome::Fail(Fault::OVERLOADED));
        assert!(matches!(markers.respond(&req, 2), Outcome::Reply(_)));
    }

    #[test]
    fn the_attempts_of_one_subtask_share_a_fault_count_whatever_their_retry_section_says() {
        let markers = FaultMarkers::new(MaosAgent::default());
        let request = |opening: &str| {
            let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": opening}]});
            parse_request(body.to_string().as_bytes()).expect("valid")
        };
        let first = request("# Goal\nFetch [[fault:malformed*2]]\n");
        let retry = request(
            "# Goal\nFetch [[fault:malformed*2]]\n\n# The previous attempt failed\nModelError: x\n",
        );
        let other = request("# Goal\nFetch [[fault:malformed*2]]\n\n# Messages\nhi\n");
        assert_eq!(
            markers.respond(&first, 1),
            Outcome::Fail(Fault::MalformedBody)
        );
        assert_eq!(
            markers.respond(&retry, 2),
            Outcome::Fail(Fault::MalformedBody)
        );
        assert!(
            matches!(markers.respond(&retry, 3), Outcome::Reply(_)),
            "third call of one conversation"
        );
        assert_eq!(
            markers.respond(&other, 4),
            Outcome::Fail(Fault::MalformedBody),
            "another section is another conversation"
        );
    }

    #[test]
    fn a_fault_marker_with_a_count_fails_that_many_calls_then_answers() {
        let markers = FaultMarkers::new(MaosAgent::default());
        let body = json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Plan this [[fault:503*3]]"}]});
        let req = parse_request(body.to_string().as_bytes()).expect("valid");
        let unavailable = Fault::Status {
            status: 503,
            retry_after: None,
        };
        for call in 1..=3 {
            assert_eq!(
                markers.respond(&req, call),
                Outcome::Fail(unavailable.clone()),
                "call {call}"
            );
        }
        assert!(matches!(markers.respond(&req, 4), Outcome::Reply(_)));
    }

    #[test]
    fn a_script_plays_in_order_then_falls_back() {
        let script = Scripted::new([Outcome::Fail(Fault::OVERLOADED)], MaosAgent::default());
        let req = request(&[]);
        assert_eq!(script.respond(&req, 1), Outcome::Fail(Fault::OVERLOADED));
        assert!(matches!(script.respond(&req, 2), Outcome::Reply(_)));
    }
}
