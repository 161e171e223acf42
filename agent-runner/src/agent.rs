//! The tool loop of one work item: build the conversation (replaying the subtask's journal, so
//! a reclaimed item continues where the dead agent stopped), call the model within the pool's
//! rate limits and the task's budget, run the tools it asks for, and journal every step.
//!
//! A model call in flight is raced against the task's cancel key, the item's deadline and the
//! agent's shutdown: a cancelled or late call is dropped at once (with its retry waits, which
//! run inside it), its reservation and rate-limit tokens given back, and the attempt fails as
//! Cancelled or DeadlineExceeded. On shutdown the call may still finish for
//! [`ModelSettings::drain_on_stop`] (its answer is paid for, so it is journaled for whoever
//! continues); past that it is dropped the same way and the item is released unfailed, to be
//! continued from its journal.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maos_core::coord::budget::{Limit, Reservation, ReserveOutcome, Spend};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::journal::{EntryKind, Journal};
use maos_core::coord::mailbox::Cursor;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Admission, RateLimiter};
use maos_core::coord::{AgentName, CoordError, Task};
use maos_core::price::{BilledTokens, PriceTable};
use serde_json::json;

use crate::claude::types::{
    ContentBlock, Message, MessageResponse, MessagesRequest, Role, StopReason, TextBlock, Thinking,
};
use crate::replay::{self, Replayed, Tail};

/// A failure outside the subtask's control: the item stays pending and is reclaimed later.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Redis failed.
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// The subtask's journal holds an entry that is not what this agent writes.
    #[error("the journal of subtask {subtask} has an unreadable entry: {detail}")]
    CorruptJournal {
        /// The subtask.
        subtask: String,
        /// What could not be read.
        detail: String,
    },
}
use crate::claude::sse::Progress;
use crate::claude::{ClaudeClient, ClaudeError};
use crate::mcp::{Granted, McpTools};
use crate::metrics::AgentMetrics;
use crate::tools::{self, ToolContext, ToolOutcome};

/// What the agent is told about its work item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Brief {
    /// The Task's goal.
    pub goal: String,
    /// What this subtask must do (for a plan item: how to plan).
    pub prompt: String,
    /// Results of the subtasks this one depends on (for a synthesize item: all of them).
    pub dependency_results: Vec<(String, String)>,
    /// The planner's bound on the number of subtasks.
    pub max_subtasks: u32,
    /// The MCP tools the Task grants (`spec.tools`): `<server>` or `<server>/<tool>`.
    pub tools: Vec<String>,
    /// The Task's extended-thinking budget, overriding the pool's
    /// ([`ModelSettings::thinking_budget_tokens`]).
    pub thinking_budget_tokens: Option<u32>,
}

/// How the agent calls the model.
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// The model.
    pub model: String,
    /// `max_tokens` of each call for the answer, reserved against the task budget before the
    /// call; a call with thinking may take its thinking budget on top.
    pub max_tokens: u32,
    /// The pool's extended-thinking budget for its agents' calls (a Task's own wins); none:
    /// no thinking.
    pub thinking_budget_tokens: Option<u32>,
    /// The most model calls for one subtask.
    pub max_turns: u32,
    /// Stream answers (progress as text arrives) rather than wait for whole answers.
    pub stream: bool,
    /// The operator's price table: a call's worst-case cost is reserved at these prices, and
    /// its actual cost settled, as the operator prices `status.usage.costUSD`.
    pub prices: PriceTable,
    /// How long a model call in flight may still finish after the agent is told to stop
    /// before it is dropped (keep it below the shutdown grace, less the cleanup).
    pub drain_on_stop: Duration,
}

/// Why a subtask ended without a result (shared with the operator, which reads it back).
pub use maos_core::coord::failure::FailReason;

/// How a work item ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Its result (or plan) is recorded.
    Finished,
    /// The agent is shutting down: the item is unfinished and should be released.
    Interrupted,
    /// It failed; `detail` is short and never holds model output or secrets.
    Failed {
        /// Why.
        reason: FailReason,
        /// Details for the status message.
        detail: String,
    },
}

/// Everything one work item needs.
pub struct WorkItemRun<'a> {
    /// The item.
    pub item: &'a WorkItem,
    /// Its task's keys, the only ones the tools reach.
    pub task: &'a Task,
    /// This agent.
    pub agent: &'a AgentName,
    /// What the agent is told.
    pub brief: &'a Brief,
    /// The pool's model rate limits.
    pub limiter: &'a RateLimiter,
    /// The model.
    pub client: &'a ClaudeClient,
    /// How to call it.
    pub settings: &'a ModelSettings,
    /// Turns true when the agent must stop; checked between turns, and a model call in flight
    /// is dropped [`ModelSettings::drain_on_stop`] after it turns.
    pub stop: Option<&'a tokio::sync::watch::Receiver<bool>>,
    /// Where model calls, tokens and tool errors are counted.
    pub metrics: &'a AgentMetrics,
    /// The pool's MCP servers; the item gets the tools its Task grants.
    pub mcp: &'a McpTools,
}

/// The system prompt of a work item of `kind`.
pub fn system_prompt(kind: WorkKind) -> String {
    let role = match kind {
        WorkKind::Plan => {
            "You are the planner of a team of AI agents working on one goal in parallel. Split the goal into subtasks that other agents can work on independently, as many in parallel as the goal allows, and submit them with submit_plan."
        }
        WorkKind::Work => {
            "You are one of a team of AI agents working on one goal in parallel. You work on one subtask. Use the shared state and messages to coordinate with the other agents when useful, and finish with complete_subtask, giving a complete, self-contained result."
        }
        WorkKind::Synthesize => {
            "You are the final agent of a team of AI agents that worked on one goal in parallel. You receive every subtask's result. Merge them into one complete answer to the goal and give it with complete_subtask."
        }
    };
    format!("{role}\nBe concise and factual. Tool results are JSON.")
}

/// The goal's section of the first user message: the same for every agent of the Task, so
/// it ends the prefix they all share (tools, system prompt, goal).
fn goal_section(goal: &str) -> String {
    format!("# Goal\n{goal}\n")
}

/// The first user message: the goal, the subtask, and the results it builds on.
pub fn first_message(kind: WorkKind, brief: &Brief) -> String {
    let mut text = goal_section(&brief.goal);
    match kind {
        WorkKind::Plan => text.push_str(&format!(
            "\n# Your task\nPlan this goal into at most {} subtasks.\n{}\n",
            brief.max_subtasks, brief.prompt
        )),
        WorkKind::Work | WorkKind::Synthesize => {
            text.push_str(&format!("\n# Your subtask\n{}\n", brief.prompt))
        }
    }
    if !brief.dependency_results.is_empty() {
        text.push_str("\n# Results you build on\n");
        for (name, result) in &brief.dependency_results {
            text.push_str(&format!("\n## {name}\n{result}\n"));
        }
    }
    text
}

/// What a retry is told about the attempt before it, as a section of the opening message.
fn failure_section(last_failure: Option<&str>) -> String {
    match last_failure {
        Some(reason) => format!(
            "\n# The previous attempt failed\n{}\nAvoid what made it fail.\n",
            truncate(reason, 500)
        ),
        None => String::new(),
    }
}

/// Most bus messages put into the opening message.
const OPENING_MESSAGES: usize = 50;
/// Longest bus message quoted in the opening message.
const OPENING_MESSAGE_CHARS: usize = 2_000;

/// The bus messages an agent finds when it starts, as a section of the opening message.
fn messages_section(messages: &[maos_core::coord::mailbox::Message]) -> String {
    if messages.is_empty() {
        return String::new();
    }
    let mut text = String::from("\n# Messages from the other agents so far\n");
    for message in messages {
        let body: String = message.body.chars().take(OPENING_MESSAGE_CHARS).collect();
        text.push_str(&format!("\n- from {}: {body}\n", message.from));
    }
    text
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn failed(reason: FailReason, detail: impl Into<String>) -> Ending {
    Ending::Failed {
        reason,
        detail: detail.into(),
    }
}

/// Works one item to its end. Coordination failures are errors (the item stays pending and is
/// reclaimed); everything about the subtask itself is an [`Ending`].
pub async fn run(work: WorkItemRun<'_>) -> Result<Ending, AgentError> {
    let WorkItemRun {
        item,
        task,
        agent,
        brief,
        limiter,
        client,
        settings,
        stop,
        metrics,
        mcp,
    } = work;
    let journal = task.journal(&item.subtask);
    let mailbox = task.mailbox();
    let events = task.events();
    let started = Event::new(
        agent,
        item.subtask.as_str(),
        item.attempt,
        EventKind::SubtaskStarted,
    );
    // Independent round trips, sent together.
    let bus_start = Cursor::start();
    let (recorded, inbox, announced) = tokio::join!(
        journal.read_all(),
        mailbox.read_since(agent, &bus_start, OPENING_MESSAGES),
        events.publish(&started),
    );
    let (recorded, inbox) = (recorded?, inbox?);
    announced?;
    let mut cursor = Cursor::start();
    // Only the attempt in progress is replayed: a failed attempt's conversation ends with its
    // marker, and the retry starts afresh, told why the last one failed.
    let live = recorded.live();
    // The opening message as the model first saw it: from the journal on a takeover, else
    // built now (goal, subtask, dependency results, messages so far) and journaled first.
    let opening = match live.iter().find(|e| e.kind == EntryKind::Opening) {
        Some(entry) => entry.body.clone(),
        None => {
            cursor = inbox.cursor;
            let mut text = first_message(item.kind, brief);
            text.push_str(&failure_section(recorded.last_failure()));
            text.push_str(&messages_section(&inbox.messages));
            journal
                .append(item.attempt, &EntryKind::Opening, &text)
                .await?;
            text
        }
    };
    let Replayed {
        mut messages,
        last_stop,
        mut turns,
    } = replay::replay(
        Message::user_text(opening),
        live.iter().map(|e| (&e.kind, e.body.as_str())),
    )
    .map_err(|detail| AgentError::CorruptJournal {
        subtask: item.subtask.to_string(),
        detail,
    })?;
    let mut tools = tools::definitions(item.kind);
    tools.extend(mcp.definitions(&brief.tools));
    let system = vec![TextBlock::new(system_prompt(item.kind)).cached()];
    let thinking = brief
        .thinking_budget_tokens
        .or(settings.thinking_budget_tokens)
        .map(Thinking::enabled);
    let per_call_max_tokens = call_max_tokens(settings.max_tokens, thinking);

    // A takeover goes on from where the dead agent stopped: unanswered tool calls, a final
    // answer it did not record, a result it recorded but did not report.
    let mut next = replay::tail(&messages, last_stop);
    loop {
        match next {
            Tail::Call => {}
            Tail::Finished => return Ok(Ending::Finished),
            Tail::RunTools => {
                let mut ctx = tool_context(task, agent, item, brief, &mut cursor);
                let granted = Mcp {
                    tools: mcp,
                    granted: &brief.tools,
                };
                if let Some(ending) =
                    run_tools(item, &journal, &mut ctx, &granted, &mut messages, metrics).await?
                {
                    return Ok(ending);
                }
            }
            Tail::Stopped(stop) => match stop {
                // The API paused a long turn: sending the conversation back continues it.
                Some(StopReason::PauseTurn) => {}
                Some(StopReason::Refusal) => {
                    return Ok(failed(
                        FailReason::NoAnswer,
                        "the model declined the subtask",
                    ));
                }
                Some(StopReason::MaxTokens) => {
                    return Ok(failed(
                        FailReason::ModelError,
                        "the model's answer exceeded max_tokens",
                    ));
                }
                _ => return finish_without_tool(&messages, item, task, agent).await,
            },
        }
        if stop.is_some_and(|stop| *stop.borrow()) {
            return Ok(Ending::Interrupted);
        }
        if now_ms() >= item.deadline_ms {
            return Ok(failed(
                FailReason::DeadlineExceeded,
                "the subtask's deadline passed",
            ));
        }
        if turns >= settings.max_turns {
            return Ok(failed(
                FailReason::MaxTurnsExceeded,
                format!("no result after {turns} model calls"),
            ));
        }
        let request = MessagesRequest {
            model: settings.model.clone(),
            max_tokens: per_call_max_tokens,
            system: system.clone(),
            messages: with_cache_breakpoints(&messages, &brief.goal),
            tools: tools.clone(),
            tool_choice: None,
            stream: settings.stream,
            stop_sequences: Vec::new(),
            temperature: None,
            thinking,
        };
        let estimated_input = estimate_tokens(&request);
        let max_tokens = u64::from(per_call_max_tokens);
        let want = Spend {
            tokens: max_tokens + estimated_input,
            cost_micro_usd: settings
                .prices
                .price(&settings.model)
                .map(|price| price.worst_case_micro_usd(estimated_input, max_tokens)),
        };
        let admitted = admit(
            task,
            limiter,
            item,
            stop,
            (estimated_input, max_tokens),
            want,
            &settings.model,
        )
        .await?;
        let reservation = match admitted {
            Admitted::Go(reservation) => reservation,
            Admitted::End(ending) => return Ok(ending),
        };
        let call = async {
            if settings.stream {
                stream_with_progress(client, &request, task, agent, item, turns + 1).await
            } else {
                client.send(&request).await
            }
        };
        // An answer that is ready wins over a reason to drop it: it is paid for.
        let answer = tokio::select! {
            biased;
            answer = call => answer,
            dropped = must_drop(task, item, stop, settings.drain_on_stop) => {
                metrics.model_request("Dropped");
                task.budget().settle(reservation, 0).await?;
                limiter.refund(estimated_input, max_tokens).await?;
                return Ok(dropped.ending());
            }
        };
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                metrics.model_request(err.reason());
                task.budget().settle(reservation, 0).await?;
                limiter.refund(estimated_input, max_tokens).await?;
                return Ok(model_failure(&err, item));
            }
        };
        metrics.model_request("ok");
        metrics.add_tokens(
            response.usage.input_tokens,
            response.usage.output_tokens,
            response.usage.cache_read_input_tokens,
            response.usage.cache_creation_input_tokens,
        );
        let billed = BilledTokens {
            input: response.usage.input_tokens,
            output: response.usage.output_tokens,
            cache_read: response.usage.cache_read_input_tokens,
            cache_write: response.usage.cache_creation_input_tokens,
        };
        // Priced by the model that answered, as the operator prices the TokensUsed event.
        let used = Spend {
            tokens: billed.input + billed.output + billed.cache_read + billed.cache_write,
            cost_micro_usd: settings
                .prices
                .price(&response.model)
                .map(|price| price.cost_micro_usd(billed)),
        };
        let tokens_used = Event::new(
            agent,
            item.subtask.as_str(),
            item.attempt,
            EventKind::TokensUsed {
                model: response.model.clone(),
                input: response.usage.input_tokens,
                output: response.usage.output_tokens,
                cache_read: response.usage.cache_read_input_tokens,
                cache_creation: response.usage.cache_creation_input_tokens,
            },
        );
        let body = replay::turn_body(&response);
        // Four independent writes: sent together, they share round trips on the multiplexed
        // connection instead of queueing one behind the other.
        let budget = task.budget();
        let (settled, refunded, published, journaled) = tokio::join!(
            budget.settle(reservation, used),
            // The limiter took estimates (max_tokens as output); give back what was not used.
            limiter.refund(
                estimated_input.saturating_sub(
                    response.usage.input_tokens + response.usage.cache_creation_input_tokens,
                ),
                max_tokens.saturating_sub(response.usage.output_tokens),
            ),
            events.publish(&tokens_used),
            journal.append(item.attempt, &EntryKind::ModelResponse, &body),
        );
        settled?;
        refunded?;
        published?;
        journaled?;
        turns += 1;
        replay::push(&mut messages, response.to_message());
        next = replay::tail(&messages, response.stop_reason);
    }
}

/// The conversation as sent, with prompt-caching breakpoints where they pay, besides the
/// system prompt's (which caches the tools before it too): after the goal, which every agent of
/// the Task sends after the same tools and system prompt, so they share that prefix; and at the
/// end, so each call reads what the call before it wrote. Three of the API's four.
fn with_cache_breakpoints(messages: &[Message], goal: &str) -> Vec<Message> {
    let mut messages = messages.to_vec();
    let shared = goal_section(goal);
    if let Some(first) = messages.first_mut() {
        let rest = match first.content.as_slice() {
            [ContentBlock::Text { text, .. }] => text
                .strip_prefix(&shared)
                .filter(|rest| !rest.trim().is_empty())
                .map(str::to_owned),
            _ => None,
        };
        if let Some(rest) = rest {
            first.content = vec![
                ContentBlock::text(shared).cached(),
                ContentBlock::text(rest),
            ];
        }
    }
    if let Some(last) = messages.last_mut().filter(|m| m.role == Role::User)
        && let Some(block) = last.content.pop()
    {
        last.content.push(block.cached());
    }
    messages
}

/// The `max_tokens` of a call: the answer's, and with thinking the thinking budget on top, as
/// the API counts thinking in `max_tokens` and wants the budget below it.
fn call_max_tokens(answer: u32, thinking: Option<Thinking>) -> u32 {
    answer.saturating_add(thinking.map_or(0, |t| t.budget_tokens()))
}

/// What the subtask is told when the budget refuses its next call.
fn budget_refusal(limit: Limit, remaining: u64, model: &str) -> String {
    match limit {
        Limit::Tokens => {
            format!("the task's token budget is spent ({remaining} tokens left)")
        }
        Limit::Cost => format!(
            "the task's cost budget is spent (${:.6} left)",
            remaining as f64 / 1_000_000.0
        ),
        Limit::CostUnknown => format!(
            "the task has a cost budget but model {model} has no price in the operator's price table, so no call can be kept within it"
        ),
    }
}

/// How often a model call in flight asks whether its task was cancelled: a cancelled call is
/// dropped within about this long.
const CANCEL_POLL: Duration = Duration::from_millis(250);

/// Why a model call in flight was dropped.
#[derive(Debug)]
enum Dropped {
    /// The agent is stopping and the call outlasted the drain.
    Stopped,
    /// The task was cancelled (the cancel key's reason).
    Cancelled(String),
    /// The item's deadline passed.
    DeadlinePassed,
}

impl Dropped {
    /// How the attempt ends: a stop leaves the item for a successor, unfailed.
    fn ending(self) -> Ending {
        match self {
            Dropped::Stopped => Ending::Interrupted,
            Dropped::Cancelled(reason) => failed(
                FailReason::Cancelled,
                format!(
                    "task cancelled during a model call: {}",
                    truncate(&reason, 100)
                ),
            ),
            Dropped::DeadlinePassed => failed(
                FailReason::DeadlineExceeded,
                "the subtask's deadline passed during a model call",
            ),
        }
    }
}

/// Resolves when the model call in flight must be dropped: the task's cancel key is set (asked
/// every [`CANCEL_POLL`]), the item's deadline passes, or `drain` after `stop` turns true.
/// Never resolves otherwise, so the call it races decides.
async fn must_drop(
    task: &Task,
    item: &WorkItem,
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
    drain: Duration,
) -> Dropped {
    let deadline = tokio::time::sleep(Duration::from_millis(
        item.deadline_ms.saturating_sub(now_ms()),
    ));
    let stopped = async {
        let Some(stop) = stop else {
            return std::future::pending().await;
        };
        let mut stop = stop.clone();
        if stop.wait_for(|stop| *stop).await.is_err() {
            // The sender is gone: nobody can ask this agent to stop any more.
            return std::future::pending().await;
        }
        tokio::time::sleep(drain).await;
    };
    let cancelled = async {
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + CANCEL_POLL, CANCEL_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match task.cancelled().await {
                Ok(Some(reason)) => return reason,
                Ok(None) => {}
                // Redis failing is no reason to drop a call that may still answer; the next
                // turn's journal write will meet the failure if it lasts.
                Err(err) => {
                    tracing::debug!(error = %err, "asking whether the task was cancelled failed")
                }
            }
        }
    };
    tokio::select! {
        () = deadline => Dropped::DeadlinePassed,
        () = stopped => Dropped::Stopped,
        reason = cancelled => Dropped::Cancelled(reason),
    }
}

/// The tools' view of a work item: its task, this agent, and the agent's place on the bus.
fn tool_context<'a>(
    task: &'a Task,
    agent: &'a AgentName,
    item: &'a WorkItem,
    brief: &Brief,
    cursor: &'a mut Cursor,
) -> ToolContext<'a> {
    ToolContext {
        task,
        agent,
        subtask: &item.subtask,
        attempt: item.attempt,
        max_subtasks: brief.max_subtasks,
        cursor,
    }
}

/// How often streamed text is reported as progress.
const STREAM_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Streams one answer, publishing a Progress event at most once a second while text arrives.
/// The events say how much text arrived, never the text: status messages hold no model output.
async fn stream_with_progress(
    client: &ClaudeClient,
    request: &MessagesRequest,
    task: &Task,
    agent: &AgentName,
    item: &WorkItem,
    turn: u32,
) -> Result<MessageResponse, ClaudeError> {
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (events, agent, subtask, attempt) = (
        task.events(),
        agent.clone(),
        item.subtask.to_string(),
        item.attempt,
    );
    let publisher = tokio::spawn(async move {
        let mut total = 0usize;
        let mut last: Option<std::time::Instant> = None;
        while let Some(chars) = arrivals.recv().await {
            total += chars;
            if last.is_none_or(|at| at.elapsed() >= STREAM_PROGRESS_EVERY) {
                last = Some(std::time::Instant::now());
                let message = format!("turn {turn}: {total} characters of answer so far");
                let event = Event::new(&agent, &subtask, attempt, EventKind::Progress { message });
                if let Err(err) = events.publish(&event).await {
                    tracing::debug!(error = %err, "publishing stream progress failed");
                }
            }
        }
    });
    let answer = client
        .stream(request, |progress| {
            let chars = match progress {
                Progress::Text(piece) | Progress::ToolInput(piece) | Progress::Thinking(piece) => {
                    piece.chars().count()
                }
                Progress::Nothing => 0,
            };
            let _ = arrived.send(chars);
        })
        .await;
    drop(arrived);
    let _ = publisher.await;
    answer
}

/// The model ended its turn without calling the finishing tool: its text is the result of a
/// work item; a plan item has no plan, and fails for the reason its last plan was refused.
async fn finish_without_tool(
    messages: &[Message],
    item: &WorkItem,
    task: &Task,
    agent: &AgentName,
) -> Result<Ending, AgentError> {
    if item.kind == WorkKind::Plan {
        return Ok(match replay::plan_refusal(messages) {
            Some(refusal) => failed(FailReason::PlanRejected, truncate(refusal, 300)),
            None => failed(
                FailReason::NoAnswer,
                "the model ended without submitting a plan",
            ),
        });
    }
    let text = replay::final_answer(messages);
    if text.trim().is_empty() {
        return Ok(failed(
            FailReason::NoAnswer,
            "the model ended without an answer",
        ));
    }
    task.results()
        .record(&item.subtask, item.attempt, agent, &text)
        .await?;
    Ok(Ending::Finished)
}

/// Runs the tool calls of the last model turn that have no result yet, journals each result,
/// and appends them as one user message. Returns the ending if a tool finished the item.
async fn run_tools(
    item: &WorkItem,
    journal: &Journal,
    ctx: &mut ToolContext<'_>,
    mcp: &Mcp<'_>,
    messages: &mut Vec<Message>,
    metrics: &AgentMetrics,
) -> Result<Option<Ending>, AgentError> {
    let calls: Vec<(String, String, serde_json::Value)> = replay::last_turn(messages)
        .into_iter()
        .flat_map(|turn| &turn.content)
        .filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, input } if !replay::is_answered(messages, id) => {
                Some((id.clone(), name.clone(), input.clone()))
            }
            _ => None,
        })
        .collect();
    // A takeover may find some results journaled: a finishing one among them still counts.
    let mut finished = replay::finished_by_tool(messages);
    let mut results = Vec::new();
    for (id, name, input) in calls {
        let outcome = match mcp.tools.find(mcp.granted, &name) {
            Some(tool) => call_mcp(item, ctx, &tool, &input, metrics).await?,
            None => match tools::parse(&name, &input, item.kind) {
                Ok(call) => tools::execute(call, &id, ctx).await?,
                Err(refused) => ToolOutcome::Reply {
                    content: refused.to_string(),
                    is_error: true,
                },
            },
        };
        let (content, is_error) = match outcome {
            ToolOutcome::Reply { content, is_error } => {
                if is_error {
                    metrics.tool_error(&name);
                }
                (content, is_error)
            }
            ToolOutcome::Finished { content } => {
                finished = true;
                (content, false)
            }
        };
        let result = ContentBlock::ToolResult {
            tool_use_id: id.clone(),
            content,
            is_error,
            cache_control: None,
        };
        let body = json!(result).to_string();
        journal
            .append(
                item.attempt,
                &EntryKind::ToolResult { tool_use_id: id },
                &body,
            )
            .await?;
        results.push(result);
    }
    if !results.is_empty() {
        replay::push(
            messages,
            Message {
                role: Role::User,
                content: results,
            },
        );
    }
    Ok(finished.then_some(Ending::Finished))
}

/// The MCP tools of a work item: the pool's servers and what its Task grants.
struct Mcp<'a> {
    tools: &'a McpTools,
    granted: &'a [String],
}

/// Calls an MCP tool and says so in the task's events (server, tool, duration, outcome; never
/// the arguments or the result) and the agent's metrics.
async fn call_mcp(
    item: &WorkItem,
    ctx: &ToolContext<'_>,
    tool: &Granted,
    input: &serde_json::Value,
    metrics: &AgentMetrics,
) -> Result<ToolOutcome, AgentError> {
    let report = tool.call(input).await;
    metrics.mcp_call(tool.server.name(), report.outcome, report.duration);
    let event = Event::new(
        ctx.agent,
        item.subtask.as_str(),
        item.attempt,
        EventKind::ToolCalled {
            server: tool.server.name().to_owned(),
            tool: tool.tool.clone(),
            duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            outcome: report.outcome.to_owned(),
        },
    );
    ctx.task.events().publish(&event).await?;
    Ok(ToolOutcome::Reply {
        content: report.text,
        is_error: report.is_error,
    })
}

/// What the checks before a model call decided.
enum Admitted {
    /// Make the call, under this budget reservation (the rate limiter has taken its share).
    Go(Reservation),
    /// Do not: the item ends so.
    End(Ending),
}

/// Asks, before a model call, whether the task was cancelled, whether the pool's rate limit
/// admits the call and whether the task's budget covers it. The three are independent round
/// trips (the cancel key and the budget on the task's slot, the limiter on the pool's), so
/// they are sent together, and what one took is given back when another says no; only a call
/// the rate limit makes wait takes the slower path of asking again.
async fn admit(
    task: &Task,
    limiter: &RateLimiter,
    item: &WorkItem,
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
    (input, output): (u64, u64),
    want: Spend,
    model: &str,
) -> Result<Admitted, AgentError> {
    let budget = task.budget();
    let (cancelled, admission, reserved) = tokio::join!(
        task.cancelled(),
        limiter.acquire(1, input, output),
        budget.reserve_until(want, item.deadline_ms),
    );
    let rate_taken = matches!(admission, Ok(Admission::Go));
    let give_back = |rate: bool, reservation: Option<Reservation>| {
        let budget = &budget;
        async move {
            if rate {
                limiter.refund(input, output).await?;
            }
            if let Some(reservation) = reservation {
                budget.settle(reservation, 0).await?;
            }
            Ok::<_, CoordError>(())
        }
    };
    // A failed round trip fails the item as any coordination failure does, once what the
    // others took is given back (as far as Redis lets it be).
    let reserved = match reserved {
        Ok(reserved) => reserved,
        Err(err) => {
            let _ = give_back(rate_taken, None).await;
            return Err(err.into());
        }
    };
    let reservation = match reserved {
        ReserveOutcome::Reserved(reservation) => reservation,
        ReserveOutcome::Exhausted { limit, remaining } => {
            give_back(rate_taken, None).await?;
            if let Some(ending) = cancel_ending(cancelled?) {
                return Ok(Admitted::End(ending));
            }
            return Ok(Admitted::End(failed(
                FailReason::BudgetExceeded,
                budget_refusal(limit, remaining, model),
            )));
        }
    };
    let cancelled = match cancelled {
        Ok(cancelled) => cancelled,
        Err(err) => {
            let _ = give_back(rate_taken, Some(reservation)).await;
            return Err(err.into());
        }
    };
    if let Some(ending) = cancel_ending(cancelled) {
        give_back(rate_taken, Some(reservation)).await?;
        return Ok(Admitted::End(ending));
    }
    match admission {
        Ok(Admission::Go) => Ok(Admitted::Go(reservation)),
        Ok(Admission::Wait(_)) => {
            // A waiting agent holds no budget another could use meanwhile: it gives the
            // reservation back and takes it again once the limiter admits the call.
            give_back(false, Some(reservation)).await?;
            if let Some(ending) =
                wait_for_rate_limit(limiter, input, output, task, item, stop).await?
            {
                return Ok(Admitted::End(ending));
            }
            match budget.reserve_until(want, item.deadline_ms).await? {
                ReserveOutcome::Reserved(reservation) => Ok(Admitted::Go(reservation)),
                ReserveOutcome::Exhausted { limit, remaining } => {
                    limiter.refund(input, output).await?;
                    Ok(Admitted::End(failed(
                        FailReason::BudgetExceeded,
                        budget_refusal(limit, remaining, model),
                    )))
                }
            }
        }
        Err(err) => {
            let _ = give_back(false, Some(reservation)).await;
            match rate_refusal(&err) {
                Some(ending) => Ok(Admitted::End(ending)),
                None => Err(err.into()),
            }
        }
    }
}

/// How an item ends when its task was cancelled with `reason`.
fn cancel_ending(reason: Option<String>) -> Option<Ending> {
    reason.map(|reason| {
        failed(
            FailReason::Cancelled,
            format!("task cancelled: {}", truncate(&reason, 100)),
        )
    })
}

/// How an item ends when the limiter says its call can never go; `None` for other errors.
fn rate_refusal(err: &CoordError) -> Option<Ending> {
    match err {
        // Waiting can never help: the call is larger than a bucket holds.
        CoordError::RateRequestTooLarge {
            bucket,
            requested,
            capacity,
        } => Some(failed(
            FailReason::ModelError,
            format!(
                "a model call needs {requested} {bucket} but the pool's rate limit allows {capacity} per minute"
            ),
        )),
        _ => None,
    }
}

/// The longest a waiting agent sleeps before it asks the pool's rate limiter again.
const RATE_LIMIT_POLL: Duration = Duration::from_millis(500);

/// Waits until the pool's buckets admit the call, or the item's deadline, the task's cancel or
/// the agent's stop (each asked between two naps).
async fn wait_for_rate_limit(
    limiter: &RateLimiter,
    input: u64,
    output: u64,
    task: &Task,
    item: &WorkItem,
    stop: Option<&tokio::sync::watch::Receiver<bool>>,
) -> Result<Option<Ending>, CoordError> {
    loop {
        if stop.is_some_and(|stop| *stop.borrow()) {
            return Ok(Some(Ending::Interrupted));
        }
        let admission = match limiter.acquire(1, input, output).await {
            Ok(admission) => admission,
            Err(err) => return rate_refusal(&err).map(Some).ok_or(err),
        };
        match admission {
            Admission::Go => return Ok(None),
            Admission::Wait(delay) => {
                let left = Duration::from_millis(item.deadline_ms.saturating_sub(now_ms()));
                if left.is_zero() {
                    return Ok(Some(failed(
                        FailReason::DeadlineExceeded,
                        "the subtask's deadline passed while waiting for the pool's rate limit",
                    )));
                }
                // Only a waiting agent asks: the call that goes at once costs no round trip.
                if let Some(reason) = task.cancelled().await? {
                    return Ok(Some(failed(
                        FailReason::Cancelled,
                        format!(
                            "task cancelled while waiting for the pool's rate limit: {}",
                            truncate(&reason, 100)
                        ),
                    )));
                }
                // Asked again at least every RATE_LIMIT_POLL: another agent's call that ends
                // under its reservation refunds tokens long before the bucket refills.
                let jitter = Duration::from_millis(fastrand::u64(0..50));
                let nap = delay.min(left).min(RATE_LIMIT_POLL) + jitter;
                tokio::time::sleep(nap.max(Duration::from_millis(1))).await;
            }
        }
    }
}

/// About four characters a token: enough to take input tokens from the rate limiter and budget
/// before the API counts them exactly.
fn estimate_tokens(request: &MessagesRequest) -> u64 {
    /// Counts what would be written, so the estimate allocates no copy of the conversation.
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Serializing these types cannot fail; a failure would only make the estimate 0.
    let _ = serde_json::to_writer(&mut counter, request);
    u64::try_from(counter.0 / 4).unwrap_or(u64::MAX)
}

/// How a failed model call ends the attempt. A refusal of the key, the model or the request
/// would be refused again, so it is permanent (the operator fails the subtask at once) and
/// logged once here; anything else may pass on another attempt.
fn model_failure(err: &ClaudeError, item: &WorkItem) -> Ending {
    // The error's text never holds the key (see claude::error); keep it short for status.
    let ClaudeError::Rejected {
        status,
        kind,
        message,
        request_id,
    } = err
    else {
        return failed(
            FailReason::ModelError,
            truncate(&format!("{}: {err}", err.reason()), 300),
        );
    };
    let reason = match status {
        401 | 403 => FailReason::ModelAuthFailed,
        404 => FailReason::ModelNotFound,
        _ => FailReason::ModelRequestRejected,
    };
    tracing::warn!(
        subtask = %item.subtask,
        attempt = item.attempt,
        status,
        kind = %kind,
        request_id = request_id.as_deref().unwrap_or(""),
        reason = reason.as_str(),
        "the Claude API refused the call; the subtask fails without a retry: {}",
        truncate(message, 300)
    );
    failed(
        reason,
        truncate(
            &format!("the Claude API answered {status} {kind}: {message}"),
            300,
        ),
    )
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brief() -> Brief {
        Brief {
            goal: "Compare databases.".into(),
            prompt: "Benchmark Qdrant.".into(),
            dependency_results: vec![("sources".into(), "a list".into())],
            max_subtasks: 6,
            tools: Vec::new(),
            thinking_budget_tokens: None,
        }
    }

    #[test]
    fn the_first_message_holds_goal_subtask_and_dependency_results() {
        let text = first_message(WorkKind::Work, &brief());
        assert!(text.contains("Compare databases."));
        assert!(text.contains("Benchmark Qdrant."));
        assert!(text.contains("## sources\na list"));
        assert!(first_message(WorkKind::Plan, &brief()).contains("at most 6 subtasks"));
    }

    #[test]
    fn the_goal_and_the_end_of_the_conversation_are_cache_breakpoints() {
        let opening = first_message(WorkKind::Work, &brief());
        let mut messages = vec![Message::user_text(opening.clone())];
        let sent = with_cache_breakpoints(&messages, &brief().goal);
        let cached = |block: &ContentBlock| {
            matches!(
                block,
                ContentBlock::Text {
                    cache_control: Some(_),
                    ..
                }
            ) || matches!(
                block,
                ContentBlock::ToolResult {
                    cache_control: Some(_),
                    ..
                }
            )
        };
        assert_eq!(
            sent[0].content,
            vec![
                ContentBlock::text(goal_section(&brief().goal)).cached(),
                ContentBlock::text(&opening[goal_section(&brief().goal).len()..]).cached(),
            ],
            "the goal ends the shared prefix; the opening ends the conversation"
        );
        messages.push(Message {
            role: Role::Assistant,
            content: vec![ContentBlock::ToolUse {
                id: "t1".into(),
                name: "read_state".into(),
                input: json!({}),
            }],
        });
        messages.push(Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: "t1".into(),
                content: "{}".into(),
                is_error: false,
                cache_control: None,
            }],
        });
        let sent = with_cache_breakpoints(&messages, &brief().goal);
        let breakpoints: Vec<(usize, usize)> = sent
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.content.iter().enumerate().map(move |(j, b)| (i, j, b)))
            .filter(|(_, _, b)| cached(b))
            .map(|(i, j, _)| (i, j))
            .collect();
        assert_eq!(breakpoints, [(0, 0), (2, 0)]);
        assert_eq!(
            messages[0].content.len(),
            1,
            "only the request's copy is changed"
        );
    }

    #[test]
    fn a_call_with_thinking_has_its_budget_below_max_tokens_and_keeps_the_answers_room() {
        assert_eq!(call_max_tokens(4_096, None), 4_096);
        let thinking = Thinking::enabled(Thinking::MIN_BUDGET_TOKENS);
        let max = call_max_tokens(4_096, Some(thinking));
        assert_eq!(max, 4_096 + 1_024);
        assert!(thinking.budget_tokens() < max);
    }

    #[test]
    fn a_retry_is_told_why_the_attempt_before_it_failed() {
        assert_eq!(failure_section(None), "");
        let section = failure_section(Some("PlanRejected: the plan has 6 subtasks"));
        assert!(section.contains("previous attempt failed"));
        assert!(section.contains("PlanRejected: the plan has 6 subtasks"));
    }

    fn item() -> WorkItem {
        WorkItem {
            task: maos_core::coord::TaskUid::new("t-1").expect("uid"),
            subtask: maos_core::dag::SubtaskName::new("a").expect("name"),
            kind: WorkKind::Work,
            attempt: 1,
            deadline_ms: 0,
        }
    }

    #[test]
    fn refusals_of_key_model_and_request_are_permanent_and_named() {
        let rejected = |status: u16, message: &str| ClaudeError::Rejected {
            status,
            kind: "error".into(),
            message: message.into(),
            request_id: None,
        };
        let cases = [
            (
                rejected(401, "invalid x-api-key"),
                FailReason::ModelAuthFailed,
            ),
            (rejected(403, "forbidden"), FailReason::ModelAuthFailed),
            (
                rejected(404, "model: claude-nope"),
                FailReason::ModelNotFound,
            ),
            (
                rejected(400, "prompt is too long"),
                FailReason::ModelRequestRejected,
            ),
            (ClaudeError::Timeout, FailReason::ModelError),
        ];
        for (err, want) in cases {
            let Ending::Failed { reason, detail } = model_failure(&err, &item()) else {
                panic!("{err} did not fail the attempt");
            };
            assert_eq!(reason, want, "{err}");
            assert_eq!(reason.is_permanent(), want != FailReason::ModelError);
            if let ClaudeError::Rejected { message, .. } = &err {
                assert!(detail.contains(message.as_str()), "{detail}");
            }
        }
    }
}
