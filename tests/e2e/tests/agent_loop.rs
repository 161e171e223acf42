//! The agent's tool loop against real Redis (standalone and cluster) and the Claude stand-in:
//! a whole subtask through tools, a plan, model failures, invalid tool input, the budget, and
//! a takeover that continues a dead agent's conversation from its journal.

#[macro_use]
mod coord_common;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coord_common::{Fixture, eventually, task_uid};
use maos_agent_runner::agent::{self, Brief, Ending, FailReason, ModelSettings, WorkItemRun};
use maos_agent_runner::claude::{ApiKey, ClaudeClient, ClientConfig, RetryPolicy};
use maos_agent_runner::mcp::McpTools;
use maos_agent_runner::metrics::AgentMetrics;
use maos_core::coord::budget::{BudgetUsage, Limits};
use maos_core::coord::events::EventKind;
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Bucket, RateLimiter, RateLimits};
use maos_core::coord::{AgentName, Pool, Task};
use maos_core::dag::SubtaskName;
use maos_core::price::{BilledTokens, default_price_table};
use maos_e2e::claude_standin::{
    Behaviour, ClaudeStandIn, Fault, MaosAgent, MessagesRequest, Outcome, Reply, Scripted,
    StandInConfig,
};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-agent-loop-RECOGNISABLE";

struct Setup {
    standin: ClaudeStandIn,
    client: ClaudeClient,
    task: Task,
    limiter: RateLimiter,
}

async fn setup(fx: &Fixture, behaviour: impl Behaviour + 'static, budget: Option<u64>) -> Setup {
    setup_with(fx, behaviour, Limits::from(budget), Duration::ZERO).await
}

/// [`setup`] with both budget limits and the stand-in's answers taking `latency`.
async fn setup_with(
    fx: &Fixture,
    behaviour: impl Behaviour + 'static,
    budget: Limits,
    latency: Duration,
) -> Setup {
    let mut config = StandInConfig::new(KEY);
    config.behaviour = Arc::new(behaviour);
    config.latency = latency;
    let standin = ClaudeStandIn::start(config).expect("stand-in");
    let mut client_config = ClientConfig::new(standin.base_url(), ApiKey::new(KEY).expect("key"));
    client_config.retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let client = ClaudeClient::new(client_config).expect("client");
    let pool = fx.pool();
    let task = pool.task(&task_uid());
    task.register(budget).await.expect("register");
    let limiter = pool.rate_limiter(RateLimits {
        requests: Bucket::unlimited(),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::unlimited(),
    });
    Setup {
        standin,
        client,
        task,
        limiter,
    }
}

fn item(task: &Task, subtask: &str, kind: WorkKind, attempt: u32) -> WorkItem {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    WorkItem {
        task: task.keys().task().clone(),
        subtask: SubtaskName::new(subtask).expect("name"),
        attempt,
        kind,
        deadline_ms: now + 60_000,
    }
}

fn brief() -> Brief {
    Brief {
        goal: "Compare vector databases.".into(),
        prompt: "Benchmark Qdrant.".into(),
        dependency_results: vec![],
        max_subtasks: 6,
        tools: Vec::new(),
        thinking_budget_tokens: None,
    }
}

fn settings() -> ModelSettings {
    ModelSettings {
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1024,
        thinking_budget_tokens: None,
        max_turns: 10,
        stream: true,
        prices: maos_core::price::default_price_table(),
        drain_on_stop: Duration::ZERO,
    }
}

async fn run(
    s: &Setup,
    agent_name: &str,
    item: &WorkItem,
    brief: &Brief,
    settings: &ModelSettings,
) -> Ending {
    let agent = AgentName::new(agent_name).expect("agent");
    agent::run(WorkItemRun {
        item,
        task: &s.task,
        agent: &agent,
        brief,
        limiter: &s.limiter,
        client: &s.client,
        settings,
        stop: None,
        metrics: &AgentMetrics::default(),
        mcp: &McpTools::none(),
    })
    .await
    .expect("no coordination failure")
}

/// [`run`] on a task of its own, with `stop`, spawned: the test acts while it works.
fn spawn_run(
    s: &Setup,
    item: &WorkItem,
    settings: ModelSettings,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> tokio::task::JoinHandle<Ending> {
    let (task, limiter, client, item) = (
        s.task.clone(),
        s.limiter.clone(),
        s.client.clone(),
        item.clone(),
    );
    tokio::spawn(async move {
        let agent = AgentName::new("agent-a").expect("agent");
        let brief = brief();
        agent::run(WorkItemRun {
            item: &item,
            task: &task,
            agent: &agent,
            brief: &brief,
            limiter: &limiter,
            client: &client,
            settings: &settings,
            stop: stop.as_ref(),
            metrics: &AgentMetrics::default(),
            mcp: &McpTools::none(),
        })
        .await
        .expect("no coordination failure")
    })
}

/// Every call hangs a minute (then fails with 504), far longer than any test waits.
fn hang(_: &MessagesRequest, _: u64) -> Outcome {
    Outcome::Fail(Fault::Hang(Duration::from_secs(60)))
}

/// Waits until the stand-in holds `count` requests with their bodies.
async fn calls_arrived(s: &Setup, count: usize) {
    eventually("the model calls", Duration::from_secs(20), || async {
        (s.standin
            .requests()
            .iter()
            .filter(|r| r.body.is_some())
            .count()
            >= count)
            .then_some(())
    })
    .await;
}

/// Waits until the stand-in saw the client give up on its first call (connection closed
/// before any answer); returns how long after `since` it did.
async fn first_call_abandoned(s: &Setup, since: std::time::Instant) -> Duration {
    let abandoned = eventually(
        "the call dropped by the client",
        Duration::from_secs(20),
        || async { s.standin.requests().first().and_then(|r| r.abandoned_at) },
    )
    .await;
    assert_eq!(s.standin.requests()[0].status, 0, "no answer was sent");
    abandoned.saturating_duration_since(since)
}

/// Far less than the hang (60 s), the retries after it, and any default time-out: a call
/// that ends within it was dropped, not waited out.
const DROPPED_WITHIN: Duration = Duration::from_secs(15);

async fn nothing_reserved(s: &Setup) -> BudgetUsage {
    let usage = s.task.budget().usage().await.expect("usage");
    assert_eq!(
        (usage.reserved, usage.cost_reserved_micro_usd),
        (0, 0),
        "the dropped call's reservation was given back: {usage:?}"
    );
    usage
}

async fn a_call_in_flight_is_dropped_when_its_task_is_cancelled(fx: &Fixture) {
    let s = setup(fx, hang, Some(1_000_000)).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let running = spawn_run(&s, &work, settings(), None);
    calls_arrived(&s, 1).await;

    let cancelled_at = std::time::Instant::now();
    s.task
        .cancel("Cancelled: spec.shutdown is Terminate")
        .await
        .expect("cancel");
    let ending = tokio::time::timeout(DROPPED_WITHIN, running)
        .await
        .expect("the run ends while its call would still hang")
        .expect("run");
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::Cancelled, "{detail}");
    assert!(detail.contains("during a model call"), "{detail}");
    let dropped_after = first_call_abandoned(&s, cancelled_at).await;
    eprintln!("cancel → call dropped: {dropped_after:?}");
    let usage = nothing_reserved(&s).await;
    assert_eq!(usage.spent, 0, "{usage:?}");
    assert_eq!(s.standin.requests().len(), 1, "no retry, no further call");
}

async fn a_retry_wait_is_dropped_when_its_task_is_cancelled(fx: &Fixture) {
    // The API asks for a 30 s pause before the retry, which the client honours.
    let s = setup(
        fx,
        |_: &MessagesRequest, _: u64| Outcome::Fail(Fault::rate_limited(30)),
        Some(1_000_000),
    )
    .await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let running = spawn_run(&s, &work, settings(), None);
    eventually(
        "the first call refused",
        Duration::from_secs(20),
        || async {
            s.standin
                .requests()
                .first()
                .filter(|r| r.status == 429)
                .map(|_| ())
        },
    )
    .await;

    s.task.cancel("Cancelled: deleted").await.expect("cancel");
    let ending = tokio::time::timeout(DROPPED_WITHIN, running)
        .await
        .expect("the run ends within the retry wait")
        .expect("run");
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::Cancelled, "{detail}");
    assert_eq!(s.standin.requests().len(), 1, "the retry was never sent");
    nothing_reserved(&s).await;
}

async fn a_wait_for_the_pools_rate_limit_ends_when_its_task_is_cancelled(fx: &Fixture) {
    let mut s = setup(fx, MaosAgent::default(), None).await;
    // One call a minute: the second waits for the bucket to refill.
    s.limiter = fx.pool().rate_limiter(RateLimits {
        requests: Bucket::per_minute(1),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::unlimited(),
    });
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let running = spawn_run(&s, &work, settings(), None);
    calls_arrived(&s, 1).await;
    eventually(
        "the first answer journaled",
        Duration::from_secs(20),
        || async {
            let journal = s.task.journal(&work.subtask).read_all().await.ok()?;
            (journal.entries.len() >= 3).then_some(())
        },
    )
    .await;

    s.task.cancel("Cancelled: deleted").await.expect("cancel");
    let ending = tokio::time::timeout(DROPPED_WITHIN, running)
        .await
        .expect("the run ends while the bucket is still empty")
        .expect("run");
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::Cancelled, "{detail}");
    assert_eq!(s.standin.requests().len(), 1, "no second call");
}

/// A limiter whose output bucket holds exactly one call's `max_tokens`: a call that is not
/// made must give its take back, or the next call waits a minute for the bucket to refill.
fn one_call_of_output(fx: &Fixture, s: &Setup) -> RateLimiter {
    Pool::new(fx.redis.clone(), s.task.keys().pool()).rate_limiter(RateLimits {
        requests: Bucket::unlimited(),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::per_minute(u64::from(settings().max_tokens)),
    })
}

/// Runs an item of a fresh task of the same pool and budget `budget`, and says whether its
/// first call went out at once (within [`DROPPED_WITHIN`], far less than a refill).
async fn next_task_calls_at_once(fx: &Fixture, s: &mut Setup, budget: Option<u64>) -> bool {
    s.task = Pool::new(fx.redis.clone(), s.task.keys().pool()).task(&task_uid());
    s.task.register(budget).await.expect("register");
    let before = s.standin.requests().len();
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let running = spawn_run(s, &work, settings(), None);
    let called = tokio::time::timeout(DROPPED_WITHIN, async {
        while s.standin.requests().len() == before {
            // A poll interval; the condition is re-checked each round.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    running.abort();
    called
}

async fn a_call_not_made_for_a_cancel_gives_back_its_budget_and_rate_limit(fx: &Fixture) {
    let mut s = setup(fx, MaosAgent::default(), Some(1_000_000)).await;
    s.limiter = one_call_of_output(fx, &s);
    s.task.cancel("Cancelled: deleted").await.expect("cancel");
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &settings()).await;
    assert!(
        matches!(
            ending,
            Ending::Failed {
                reason: FailReason::Cancelled,
                ..
            }
        ),
        "{ending:?}"
    );
    assert!(s.standin.requests().is_empty(), "no call was made");
    nothing_reserved(&s).await;
    assert!(
        next_task_calls_at_once(fx, &mut s, Some(1_000_000)).await,
        "the cancelled item kept the rate limiter's output tokens"
    );
}

async fn a_call_the_budget_refuses_gives_back_its_rate_limit(fx: &Fixture) {
    let mut s = setup(fx, MaosAgent::default(), Some(100)).await;
    s.limiter = one_call_of_output(fx, &s);
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &settings()).await;
    assert!(
        matches!(
            ending,
            Ending::Failed {
                reason: FailReason::BudgetExceeded,
                ..
            }
        ),
        "{ending:?}"
    );
    assert!(s.standin.requests().is_empty(), "no call was made");
    assert!(
        next_task_calls_at_once(fx, &mut s, Some(1_000_000)).await,
        "the refused item kept the rate limiter's output tokens"
    );
}

async fn a_call_in_flight_past_the_items_deadline_fails_with_deadline_exceeded(fx: &Fixture) {
    let s = setup(fx, hang, Some(1_000_000)).await;
    let mut work = item(&s.task, "bench", WorkKind::Work, 1);
    let deadline_at = std::time::Instant::now() + Duration::from_secs(2);
    work.deadline_ms = agent::now_ms() + 2_000;
    let running = spawn_run(&s, &work, settings(), None);
    let ending = tokio::time::timeout(DROPPED_WITHIN, running)
        .await
        .expect("the run ends at its deadline, not after the hang")
        .expect("run");
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::DeadlineExceeded, "{detail}");
    assert!(detail.contains("during a model call"), "{detail}");
    let late = first_call_abandoned(&s, deadline_at).await;
    eprintln!("deadline → call dropped: {late:?}");
    nothing_reserved(&s).await;
    assert!(
        agent::now_ms() >= work.deadline_ms,
        "it did not end before its deadline"
    );
}

async fn a_stop_during_a_call_past_the_drain_releases_the_item_unfailed(fx: &Fixture) {
    let s = setup(fx, hang, Some(1_000_000)).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut no_drain = settings();
    no_drain.drain_on_stop = Duration::ZERO;
    let running = spawn_run(&s, &work, no_drain, Some(stopped));
    calls_arrived(&s, 1).await;

    let stopped_at = std::time::Instant::now();
    stop.send(true).expect("the run listens");
    let ending = tokio::time::timeout(DROPPED_WITHIN, running)
        .await
        .expect("the run ends while its call would still hang")
        .expect("run");
    // Not a failure: the item is released and continued from its journal by a successor.
    assert_eq!(ending, Ending::Interrupted);
    eprintln!(
        "stop → call dropped: {:?}",
        first_call_abandoned(&s, stopped_at).await
    );
    nothing_reserved(&s).await;
    let journal = s
        .task
        .journal(&work.subtask)
        .read_all()
        .await
        .expect("journal");
    assert_eq!(journal.entries.len(), 1, "only the opening message");
    assert_eq!(
        journal.last_failure(),
        None,
        "no failure marker ends the attempt"
    );
}

async fn a_call_that_answers_within_the_drain_is_journaled_before_the_agent_stops(fx: &Fixture) {
    let s = setup_with(
        fx,
        MaosAgent::default(),
        Limits::default(),
        Duration::from_millis(1_500),
    )
    .await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut drain = settings();
    drain.drain_on_stop = Duration::from_secs(60);
    let running = spawn_run(&s, &work, drain, Some(stopped));
    calls_arrived(&s, 1).await;
    stop.send(true).expect("the run listens");
    let ending = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the run ends after the answer")
        .expect("run");
    assert_eq!(ending, Ending::Interrupted);
    let requests = s.standin.requests();
    assert_eq!(requests.len(), 1, "no call after the stop");
    assert_eq!(
        (requests[0].status, requests[0].abandoned_at),
        (200, None),
        "the call in flight was let finish"
    );
    let journal = s
        .task
        .journal(&work.subtask)
        .read_all()
        .await
        .expect("journal");
    assert!(
        journal
            .entries
            .iter()
            .any(|e| e.kind == maos_core::coord::journal::EntryKind::ModelResponse),
        "the paid-for answer is journaled for the successor: {:?}",
        journal.entries.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );
}

/// Sonnet's worst case for one call of `settings()` with `input` tokens (micro-dollars).
fn worst_case(input: u64) -> u64 {
    default_price_table()
        .price("claude-sonnet-4-5")
        .expect("priced")
        .worst_case_micro_usd(input, 1024)
}

async fn a_cost_budget_that_cannot_cover_the_worst_case_refuses_the_call_unmade(fx: &Fixture) {
    // 1024 output tokens at $15/Mtok alone are $0.01536.
    let limits = Limits {
        tokens: None,
        cost_micro_usd: Some(15_000),
    };
    let s = setup_with(fx, MaosAgent::default(), limits, Duration::ZERO).await;
    assert!(worst_case(0) > 15_000);
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &settings()).await;
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::BudgetExceeded, "{detail}");
    assert!(detail.contains("cost budget"), "{detail}");
    assert!(
        s.standin.requests().is_empty(),
        "the model was never called"
    );
    nothing_reserved(&s).await;
}

async fn a_cost_budget_is_settled_with_what_each_answer_cost_at_the_operators_prices(fx: &Fixture) {
    let limits = Limits {
        tokens: None,
        cost_micro_usd: Some(10_000_000),
    };
    let s = setup_with(fx, MaosAgent::default(), limits, Duration::ZERO).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &settings()).await,
        Ending::Finished
    );
    // What the operator will charge: each TokensUsed event at the table's price.
    let price = default_price_table()
        .price("claude-sonnet-4-5")
        .expect("priced")
        .clone();
    let mut consumer = s.task.events().consumer(GROUP_OPERATOR, "test");
    let charged: u64 = consumer
        .next(100, None)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|d| match d.event.kind {
            EventKind::TokensUsed {
                input,
                output,
                cache_read,
                cache_creation,
                ..
            } => Some(price.cost_micro_usd(BilledTokens {
                input,
                output,
                cache_read,
                cache_write: cache_creation,
            })),
            _ => None,
        })
        .sum();
    let usage = nothing_reserved(&s).await;
    assert!(charged > 0);
    assert_eq!(usage.cost_spent_micro_usd, charged, "{usage:?}");
    assert_eq!(usage.cost_limit_micro_usd, Some(10_000_000));
}

async fn a_cost_budget_refuses_a_model_without_a_price_naming_it(fx: &Fixture) {
    let limits = Limits {
        tokens: None,
        cost_micro_usd: Some(10_000_000),
    };
    let s = setup_with(fx, MaosAgent::default(), limits, Duration::ZERO).await;
    let mut unpriced = settings();
    // A model the API serves (the stand-in refuses made-up ones) that the built-in price table
    // has no price for.
    unpriced.model = "claude-3-haiku-20240307".into();
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &unpriced).await;
    let Ending::Failed { reason, detail } = &ending else {
        panic!("{ending:?}");
    };
    assert_eq!(*reason, FailReason::BudgetExceeded, "{detail}");
    assert!(
        detail.contains("claude-3-haiku-20240307") && detail.contains("no price"),
        "{detail}"
    );
    assert!(
        s.standin.requests().is_empty(),
        "the model was never called"
    );

    // Without a cost budget the same model works: only its cost goes uncounted.
    let free = setup(fx, MaosAgent::default(), None).await;
    let work = item(&free.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&free, "agent-a", &work, &brief(), &unpriced).await,
        Ending::Finished
    );
}

async fn a_subtask_is_worked_through_tools_to_its_result(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), None).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &settings()).await,
        Ending::Finished
    );

    let result = s
        .task
        .results()
        .get(&work.subtask)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(
        result.result,
        "Stand-in answer to: Compare vector databases."
    );
    let state = s
        .task
        .state()
        .get("notes/Compare vector databases.")
        .await
        .expect("read");
    assert_eq!(state.version, 1, "write_state was applied once");
    let journal = s
        .task
        .journal(&work.subtask)
        .read_all()
        .await
        .expect("journal");
    assert_eq!(
        journal.entries.len(),
        9,
        "the opening message, four model responses and four tool results"
    );
    assert_eq!(s.standin.requests().len(), 4);

    // What the operator folds into status: started, tokens per call, progress, a message sent.
    let mut consumer = s.task.events().consumer(GROUP_OPERATOR, "test");
    let kinds: Vec<String> = consumer
        .next(100, None)
        .await
        .expect("events")
        .into_iter()
        .map(|d| {
            serde_json::to_value(&d.event.kind).expect("json")["type"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("SubtaskStarted"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "TokensUsed").count(),
        4,
        "{kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k == "Progress"),
        "streamed text is reported as progress: {kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "MessageSent"), "{kinds:?}");
}

async fn a_plan_item_records_the_plan(fx: &Fixture) {
    let s = setup(
        fx,
        MaosAgent {
            plan_size: 3,
            ..MaosAgent::default()
        },
        None,
    )
    .await;
    let plan = item(&s.task, "plan", WorkKind::Plan, 1);
    assert_eq!(
        run(&s, "planner", &plan, &brief(), &settings()).await,
        Ending::Finished
    );
    let recorded = s
        .task
        .results()
        .get(&plan.subtask)
        .await
        .expect("read")
        .expect("recorded");
    let subtasks: Value = serde_json::from_str(&recorded.result).expect("plan json");
    assert_eq!(subtasks.as_array().map(Vec::len), Some(3));
    assert_eq!(subtasks[0]["name"], "part-1");
}

async fn a_bad_request_fails_the_subtask_without_retrying(fx: &Fixture) {
    let s = setup(
        fx,
        Scripted::new(
            [Outcome::Fail(Fault::Status {
                status: 400,
                retry_after: None,
            })],
            MaosAgent::default(),
        ),
        None,
    )
    .await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &settings()).await;
    let Ending::Failed { reason, detail } = ending else {
        panic!("failed expected")
    };
    assert_eq!(reason, FailReason::ModelRequestRejected);
    assert!(detail.contains("400") && !detail.contains(KEY), "{detail}");
    assert_eq!(s.standin.requests().len(), 1);
}

async fn invalid_tool_input_is_an_error_result_and_the_agent_goes_on(fx: &Fixture) {
    let s = setup(
        fx,
        Scripted::new(
            [Outcome::Reply(Reply::tool(
                "write_state",
                json!({"key": "a"}),
            ))],
            MaosAgent::default(),
        ),
        None,
    )
    .await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &settings()).await,
        Ending::Finished
    );
    let second = s.standin.requests()[1].body.clone().expect("body");
    let result = second["messages"][2]["content"][0].clone();
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["is_error"], true);
    assert!(
        result["content"]
            .as_str()
            .is_some_and(|c| c.contains("value")),
        "{result}"
    );
}

async fn a_spent_budget_ends_the_subtask_with_budget_exceeded(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), Some(1_500)).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let ending = run(&s, "agent-a", &work, &brief(), &settings()).await;
    assert!(
        matches!(
            ending,
            Ending::Failed {
                reason: FailReason::BudgetExceeded,
                ..
            }
        ),
        "{ending:?}"
    );
}

async fn a_takeover_continues_the_dead_agents_conversation(fx: &Fixture) {
    // The first agent's third model call never returns: it "dies" there.
    let hang_third = |request: &MessagesRequest, call: u64| {
        if call == 3 {
            Outcome::Fail(Fault::Hang(Duration::from_secs(60)))
        } else {
            MaosAgent::default().respond(request, call)
        }
    };
    let s = setup(fx, hang_third, None).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let journal = s.task.journal(&work.subtask);
    let first = {
        let (task, limiter, client) = (s.task.clone(), s.limiter.clone(), s.client.clone());
        let work = work.clone();
        tokio::spawn(async move {
            let agent = AgentName::new("agent-a").expect("agent");
            let (brief, settings) = (brief(), settings());
            agent::run(WorkItemRun {
                item: &work,
                task: &task,
                agent: &agent,
                brief: &brief,
                limiter: &limiter,
                client: &client,
                settings: &settings,
                stop: None,
                metrics: &AgentMetrics::default(),
                mcp: &McpTools::none(),
            })
            .await
        })
    };
    // Kill it only once its third call (the one that never returns) reached the stand-in:
    // the journal then holds two answers and two tool results, and no later call can be the
    // one that hangs.
    eventually(
        "the first agent's third call",
        Duration::from_secs(20),
        || async { (s.standin.requests().len() >= 3).then_some(()) },
    )
    .await;
    // The opening message, two answers and two tool results.
    assert_eq!(journal.read_all().await.expect("journal").entries.len(), 5);
    first.abort();

    let second = item(&s.task, "bench", WorkKind::Work, 2);
    assert_eq!(
        run(&s, "agent-b", &second, &brief(), &settings()).await,
        Ending::Finished
    );
    let takeover = s.standin.requests()[3].body.clone().expect("body");
    assert_eq!(
        takeover["messages"].as_array().map(Vec::len),
        Some(5),
        "the takeover sent the whole earlier conversation"
    );
    assert_eq!(takeover["messages"][1]["content"][0]["name"], "write_state");
    assert_eq!(
        s.task
            .state()
            .get("notes/Compare vector databases.")
            .await
            .expect("read")
            .version,
        1,
        "write_state applied exactly once"
    );
    let result = s
        .task
        .results()
        .get(&second.subtask)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(result.agent, "agent-b");
}

async fn messages_sent_before_the_start_are_in_the_opening_message(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), None).await;
    let other = AgentName::new("agent-z").expect("agent");
    s.task
        .mailbox()
        .send(&other, None, "The sources list is in state key sources.")
        .await
        .expect("send");
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &settings()).await,
        Ending::Finished
    );
    let first = s.standin.requests()[0].body.clone().expect("body");
    // The opening message's text blocks (the goal is a block of its own, a cache breakpoint).
    let opening: String = first["messages"][0]["content"]
        .as_array()
        .expect("blocks")
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert!(
        opening.contains("from agent-z: The sources list is in state key sources."),
        "{opening}"
    );
    // read_messages then starts after what the opening message already showed.
    let read = s
        .standin
        .requests()
        .iter()
        .filter_map(|r| r.body.clone())
        .flat_map(|b| b["messages"].as_array().cloned().unwrap_or_default())
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|block| {
            block["type"] == "tool_result"
                && block["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("\"messages\""))
        })
        .expect("a read_messages result");
    assert_eq!(read["content"], "{\"messages\":[]}");
}

/// Every request the stand-in answered was accepted (none refused as malformed).
fn all_accepted(s: &Setup) {
    let statuses: Vec<u16> = s.standin.requests().iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
}

async fn a_subtask_with_thinking_sends_its_signed_thinking_back_every_turn(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), None).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let pool_thinking = ModelSettings {
        thinking_budget_tokens: Some(1024),
        ..settings()
    };
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &pool_thinking).await,
        Ending::Finished
    );
    // The stand-in signs the thinking it emits and refuses a tool loop's turn without it, or
    // with it changed: four accepted calls mean it went back unchanged each time.
    all_accepted(&s);
    let requests = s.standin.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        let body = request.body.as_ref().expect("body");
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 1024})
        );
        assert_eq!(body["max_tokens"], 1024 + 1024, "the answer keeps its room");
        assert!(body.get("temperature").is_none());
    }
    let last = requests.last().and_then(|r| r.body.as_ref()).expect("body");
    let turns: Vec<&Value> = last["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(turns.len(), 3);
    assert!(
        turns.iter().all(|t| t["content"][0]["type"] == "thinking"),
        "{turns:?}"
    );
}

async fn a_tasks_thinking_budget_overrides_its_pools(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), None).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    let pool_thinking = ModelSettings {
        thinking_budget_tokens: Some(1024),
        ..settings()
    };
    let task_thinking = Brief {
        thinking_budget_tokens: Some(3000),
        ..brief()
    };
    assert_eq!(
        run(&s, "agent-a", &work, &task_thinking, &pool_thinking).await,
        Ending::Finished
    );
    all_accepted(&s);
    let first = s.standin.requests()[0].body.clone().expect("body");
    assert_eq!(first["thinking"]["budget_tokens"], 3000);
    assert_eq!(first["max_tokens"], 1024 + 3000);
}

async fn empty_text_blocks_of_answers_are_never_sent_back(fx: &Fixture) {
    let s = setup(fx, MaosAgent::default(), None).await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    // Every answer starts with an empty text block, as the real API's sometimes do.
    let marked = Brief {
        goal: "Compare vector databases. [[answer:empty-text]]".into(),
        ..brief()
    };
    assert_eq!(
        run(&s, "agent-a", &work, &marked, &settings()).await,
        Ending::Finished
    );
    all_accepted(&s);
    assert_eq!(s.standin.requests().len(), 4);
}

async fn an_answer_of_only_empty_text_leaves_a_valid_conversation(fx: &Fixture) {
    let s = setup(
        fx,
        Scripted::new(
            [Outcome::Reply(Reply::text("").stopping(
                maos_e2e::claude_standin::StopReason::PauseTurn,
            ))],
            MaosAgent::default(),
        ),
        None,
    )
    .await;
    let work = item(&s.task, "bench", WorkKind::Work, 1);
    assert_eq!(
        run(&s, "agent-a", &work, &brief(), &settings()).await,
        Ending::Finished
    );
    all_accepted(&s);
    assert_eq!(
        s.standin.requests().len(),
        5,
        "the paused call and four more"
    );
}

/// The (subtask, cache read, cache write) of each TokensUsed event, in order.
async fn cache_use(s: &Setup) -> Vec<(String, u64, u64)> {
    let mut consumer = s.task.events().consumer(GROUP_OPERATOR, "test");
    consumer
        .next(100, None)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|d| match d.event.kind {
            EventKind::TokensUsed {
                cache_read,
                cache_creation,
                ..
            } => Some((d.event.subtask, cache_read, cache_creation)),
            _ => None,
        })
        .collect()
}

async fn each_call_reads_the_prefix_the_call_before_it_wrote_and_agents_share_the_goal(
    fx: &Fixture,
) {
    let s = setup(fx, MaosAgent::default(), None).await;
    for (agent, subtask) in [("agent-a", "first"), ("agent-b", "second")] {
        let work = item(&s.task, subtask, WorkKind::Work, 1);
        assert_eq!(
            run(&s, agent, &work, &brief(), &settings()).await,
            Ending::Finished
        );
    }
    all_accepted(&s);
    let used = cache_use(&s).await;
    let of = |subtask: &str| -> Vec<(u64, u64)> {
        used.iter()
            .filter(|(name, _, _)| name == subtask)
            .map(|(_, read, written)| (*read, *written))
            .collect()
    };
    let first = of("first");
    assert_eq!(first.len(), 4, "{first:?}");
    for pair in first.windows(2) {
        let ((read, written), (next_read, _)) = (pair[0], pair[1]);
        assert!(
            next_read >= read + written && next_read > read,
            "a call reads all the call before it cached, the conversation too: {first:?}"
        );
    }
    // The second agent's first call reads the prefix up to the goal, which the first agent's
    // first call wrote: tools, system prompt and goal, the breakpoint after the goal.
    let second = of("second");
    let requests = s.standin.requests();
    let opening = requests[4]
        .body
        .as_ref()
        .expect("the second agent's first call");
    let parsed =
        maos_e2e::claude_standin::parse_request(opening.to_string().as_bytes()).expect("valid");
    let breakpoints: Vec<u64> = parsed
        .cache_prefixes
        .iter()
        .filter(|p| p.breakpoint)
        .map(|p| p.tokens)
        .collect();
    assert_eq!(
        breakpoints.len(),
        3,
        "system prompt, goal, end: {breakpoints:?}"
    );
    assert_eq!(second[0].0, breakpoints[1], "{second:?} {breakpoints:?}");
    assert!(breakpoints[1] > breakpoints[0]);
}

both_backends!(
    messages_sent_before_the_start_are_in_the_opening_message,
    a_subtask_is_worked_through_tools_to_its_result,
    a_plan_item_records_the_plan,
    a_bad_request_fails_the_subtask_without_retrying,
    invalid_tool_input_is_an_error_result_and_the_agent_goes_on,
    a_spent_budget_ends_the_subtask_with_budget_exceeded,
    a_takeover_continues_the_dead_agents_conversation,
    a_call_in_flight_is_dropped_when_its_task_is_cancelled,
    a_retry_wait_is_dropped_when_its_task_is_cancelled,
    a_wait_for_the_pools_rate_limit_ends_when_its_task_is_cancelled,
    a_call_not_made_for_a_cancel_gives_back_its_budget_and_rate_limit,
    a_call_the_budget_refuses_gives_back_its_rate_limit,
    a_call_in_flight_past_the_items_deadline_fails_with_deadline_exceeded,
    a_stop_during_a_call_past_the_drain_releases_the_item_unfailed,
    a_call_that_answers_within_the_drain_is_journaled_before_the_agent_stops,
    a_cost_budget_that_cannot_cover_the_worst_case_refuses_the_call_unmade,
    a_cost_budget_is_settled_with_what_each_answer_cost_at_the_operators_prices,
    a_cost_budget_refuses_a_model_without_a_price_naming_it,
    a_subtask_with_thinking_sends_its_signed_thinking_back_every_turn,
    a_tasks_thinking_budget_overrides_its_pools,
    empty_text_blocks_of_answers_are_never_sent_back,
    an_answer_of_only_empty_text_leaves_a_valid_conversation,
    each_call_reads_the_prefix_the_call_before_it_wrote_and_agents_share_the_goal,
);
