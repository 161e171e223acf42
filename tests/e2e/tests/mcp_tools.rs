//! An agent's MCP tools against real MCP servers no one here wrote: the reference
//! `@modelcontextprotocol/server-everything` (npm) and a fixture built with the official Python
//! SDK (`mcp` from PyPI) that checks a bearer token and counts its calls. Listing, calls with
//! structured input and output, tool errors, a slow tool past its timeout, a header from the
//! environment the server checks, a changed tool list, a server that dies and comes back, and
//! through the agent's tool loop: only the granted tools are offered, each call is an event, and
//! an agent that takes over a subtask does not make a journaled call again.

#[macro_use]
mod coord_common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coord_common::{Fixture, eventually, task_uid};
use maos_agent_runner::agent::{self, Brief, Ending, ModelSettings, WorkItemRun};
use maos_agent_runner::claude::{ApiKey, ClaudeClient, ClientConfig, RetryPolicy};
use maos_agent_runner::mcp::McpTools;
use maos_agent_runner::metrics::AgentMetrics;
use maos_core::coord::budget::Limits;
use maos_core::coord::events::EventKind;
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Bucket, RateLimits};
use maos_core::coord::{AgentName, Task};
use maos_core::dag::SubtaskName;
use maos_core::mcp::{HeaderConfig, ServerConfig};
use maos_e2e::claude_standin::{
    ClaudeStandIn, Fault, MaosAgent, Outcome, Reply, Scripted, StandInConfig, WorkCall,
};
use maos_e2e::launch::mcp::McpServerProcess;
use serde_json::{Value, json};

const TOKEN: &str = "fixture-token-RECOGNISABLE";
const TOKEN_ENV: &str = "MAOS_MCP_HEADER_0_0";
const KEY: &str = "sk-ant-mcp-tools";
/// Far more than connecting to a server on loopback takes.
const PATIENCE: Duration = Duration::from_secs(30);

fn server(name: &str, url: String, timeout_seconds: u32) -> ServerConfig {
    ServerConfig {
        name: name.to_owned(),
        url,
        headers: Vec::new(),
        allowed_tools: Vec::new(),
        timeout_seconds,
    }
}

fn fixture_config(fixture: &McpServerProcess) -> ServerConfig {
    let mut config = server("fixture", fixture.url(), 5);
    config.headers = vec![HeaderConfig {
        name: "Authorization".into(),
        env: TOKEN_ENV.into(),
    }];
    config
}

/// The header value as the pod's environment holds it (from the Secret).
fn env_with(token: &'static str) -> impl Fn(&str) -> Option<String> {
    move |name| (name == TOKEN_ENV).then(|| format!("Bearer {token}"))
}

async fn up(tools: &McpTools) {
    eventually("the MCP servers connected", PATIENCE, || async {
        tools.servers().iter().all(|s| s.is_up()).then_some(())
    })
    .await;
}

fn names(tools: &McpTools, granted: &[&str]) -> Vec<String> {
    let granted: Vec<String> = granted.iter().map(|g| (*g).to_owned()).collect();
    tools
        .definitions(&granted)
        .into_iter()
        .map(|t| t.name)
        .collect()
}

fn granted(entries: &[&str]) -> Vec<String> {
    entries.iter().map(|e| (*e).to_owned()).collect()
}

#[tokio::test]
async fn the_reference_server_is_listed_and_called_with_structured_input() {
    let everything = McpServerProcess::everything().expect("server-everything");
    let tools = McpTools::start(vec![server("everything", everything.url(), 2)], &|_| None);
    up(&tools).await;

    let all = names(&tools, &["everything"]);
    assert!(all.contains(&"everything__get-sum".to_owned()), "{all:?}");
    assert!(all.contains(&"everything__echo".to_owned()), "{all:?}");
    assert_eq!(
        names(&tools, &["everything/get-sum"]),
        ["everything__get-sum"]
    );
    assert!(
        names(&tools, &[]).is_empty(),
        "a Task that names no tool gets none"
    );
    assert!(names(&tools, &["other"]).is_empty());
    let sum = tools
        .definitions(&granted(&["everything/get-sum"]))
        .remove(0);
    assert_eq!(sum.input_schema["type"], "object");
    assert!(
        sum.input_schema["properties"]["a"].is_object(),
        "{}",
        sum.input_schema
    );

    let get_sum = tools
        .find(&granted(&["everything"]), "everything__get-sum")
        .expect("granted");
    let report = get_sum.call(&json!({"a": 2, "b": 3})).await;
    assert_eq!(
        (report.outcome, report.is_error),
        ("ok", false),
        "{report:?}"
    );
    assert!(report.text.contains('5'), "{report:?}");

    let image = tools
        .find(&granted(&["everything"]), "everything__get-tiny-image")
        .expect("granted")
        .call(&json!({}))
        .await;
    assert!(image.text.contains("[image of type image/png"), "{image:?}");
    assert!(
        image.text.len() < 2_000,
        "the image is described, not inlined"
    );

    // A slow tool past the server's 2 s timeout: abandoned, and the model told so.
    let started = Instant::now();
    let slow = tools
        .find(
            &granted(&["everything"]),
            "everything__trigger-long-running-operation",
        )
        .expect("granted")
        .call(&json!({"duration": 30, "steps": 3}))
        .await;
    assert_eq!((slow.outcome, slow.is_error), ("timeout", true), "{slow:?}");
    assert!(slow.text.contains("timed out after 2 s"), "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tools
            .find(&granted(&["everything/get-sum"]), "everything__echo")
            .is_none(),
        "a tool the Task was not granted cannot be called"
    );
}

#[tokio::test]
async fn the_fixture_checks_the_header_and_its_errors_reach_the_model() {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let tools = McpTools::start(vec![fixture_config(&fixture)], &env_with(TOKEN));
    up(&tools).await;
    let all = granted(&["fixture"]);
    let lookup = tools.find(&all, "fixture__lookup").expect("lookup");
    let found = lookup.call(&json!({"city": "Paris"})).await;
    assert_eq!(found.outcome, "ok", "{found:?}");
    let structured: Value = serde_json::from_str(&found.text).expect("structured output");
    assert_eq!(structured, json!({"city": "Paris", "population": 2102650}));

    let missing = lookup.call(&json!({"city": "Atlantis"})).await;
    assert_eq!(
        (missing.outcome, missing.is_error),
        ("error", true),
        "{missing:?}"
    );
    assert!(
        missing.text.contains("no city named Atlantis"),
        "{missing:?}"
    );
    let failed = tools
        .find(&all, "fixture__fail")
        .expect("fail")
        .call(&json!({"reason": "testing"}))
        .await;
    assert_eq!(
        (failed.outcome, failed.is_error),
        ("error", true),
        "{failed:?}"
    );
    assert_eq!(fixture.calls().expect("calls")["lookup:Paris"], 1);

    // The wrong token: the server refuses it, the agent offers none of its tools and says why.
    let refused = McpTools::start(vec![fixture_config(&fixture)], &env_with("wrong"));
    let why = eventually("the refused server shown down", PATIENCE, || async {
        refused.down().into_iter().next()
    })
    .await;
    assert_eq!(why.0, "fixture");
    assert!(
        why.1.contains("401") || why.1.to_lowercase().contains("unauthorized"),
        "{why:?}"
    );
    assert!(
        !why.1.contains("wrong"),
        "the header's value is never shown: {why:?}"
    );
    assert!(names(&refused, &["fixture"]).is_empty());
    // No value at all for the header: down at once, naming the variable.
    let unset = McpTools::start(vec![fixture_config(&fixture)], &|_| None);
    let why = eventually("the unconfigured server shown down", PATIENCE, || async {
        unset.down().into_iter().next()
    })
    .await;
    assert!(why.1.contains(TOKEN_ENV), "{why:?}");
}

#[tokio::test]
async fn only_the_pools_allowed_tools_are_offered() {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let mut config = fixture_config(&fixture);
    config.allowed_tools = vec!["lookup".into()];
    let tools = McpTools::start(vec![config], &env_with(TOKEN));
    up(&tools).await;
    assert_eq!(names(&tools, &["fixture"]), ["fixture__lookup"]);
    assert!(
        tools
            .find(&granted(&["fixture"]), "fixture__fail")
            .is_none()
    );
}

#[tokio::test]
async fn a_changed_tool_list_is_listed_again() {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let tools = McpTools::start(vec![fixture_config(&fixture)], &env_with(TOKEN));
    up(&tools).await;
    assert!(!names(&tools, &["fixture"]).contains(&"fixture__added".to_owned()));
    let grown = tools
        .find(&granted(&["fixture"]), "fixture__grow")
        .expect("grow")
        .call(&json!({}))
        .await;
    assert_eq!(grown.outcome, "ok", "{grown:?}");
    eventually("the new tool offered", PATIENCE, || async {
        names(&tools, &["fixture"])
            .contains(&"fixture__added".to_owned())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_server_that_dies_fails_calls_and_is_reconnected_when_back() {
    let mut fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let tools = McpTools::start(vec![fixture_config(&fixture)], &env_with(TOKEN));
    up(&tools).await;
    let all = granted(&["fixture"]);
    let lookup = tools.find(&all, "fixture__lookup").expect("lookup");
    assert_eq!(lookup.call(&json!({"city": "Lyon"})).await.outcome, "ok");

    fixture.stop();
    let lost = lookup.call(&json!({"city": "Lyon"})).await;
    assert!(lost.is_error, "{lost:?}");
    assert!(
        ["failed", "unavailable", "timeout"].contains(&lost.outcome),
        "{lost:?}"
    );
    fixture.restart().expect("the fixture again");
    let back = eventually(
        "a call through the reconnected server",
        PATIENCE,
        || async {
            let tool = tools.find(&all, "fixture__lookup")?;
            let report = tool.call(&json!({"city": "Lyon"})).await;
            (report.outcome == "ok").then_some(report)
        },
    )
    .await;
    assert!(back.text.contains("522250"), "{back:?}");
}

// ---------------------------------------------------------------------------------------------
// Through the agent's tool loop.

fn item(task: &Task) -> WorkItem {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    WorkItem {
        task: task.keys().task().clone(),
        subtask: SubtaskName::new("census").expect("name"),
        attempt: 1,
        kind: WorkKind::Work,
        deadline_ms: now + 60_000,
    }
}

fn brief(tools: &[&str]) -> Brief {
    Brief {
        goal: "Compare cities.".into(),
        prompt: "Find the population of Oslo.".into(),
        dependency_results: vec![],
        max_subtasks: 4,
        tools: granted(tools),
        thinking_budget_tokens: None,
    }
}

fn settings() -> ModelSettings {
    ModelSettings {
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1024,
        max_turns: 10,
        stream: true,
        prices: maos_core::price::default_price_table(),
        drain_on_stop: Duration::ZERO,
        thinking_budget_tokens: None,
    }
}

/// A stand-in agent that looks Oslo up when it is offered the fixture's lookup.
fn looks_up() -> MaosAgent {
    MaosAgent {
        work_calls: vec![WorkCall {
            tool: "fixture__lookup".into(),
            input: json!({"city": "Oslo"}),
        }],
        ..MaosAgent::default()
    }
}

fn client(standin: &ClaudeStandIn) -> ClaudeClient {
    let mut config = ClientConfig::new(standin.base_url(), ApiKey::new(KEY).expect("key"));
    config.retry = RetryPolicy {
        max_retries: 0,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(5),
    };
    ClaudeClient::new(config).expect("client")
}

async fn run(
    task: &Task,
    fx: &Fixture,
    client: &ClaudeClient,
    agent: &str,
    brief: &Brief,
    mcp: &McpTools,
) -> Ending {
    let limiter = fx.pool().rate_limiter(RateLimits {
        requests: Bucket::unlimited(),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::unlimited(),
    });
    let agent = AgentName::new(agent).expect("agent");
    let work = item(task);
    agent::run(WorkItemRun {
        item: &work,
        task,
        agent: &agent,
        brief,
        limiter: &limiter,
        client,
        settings: &settings(),
        stop: None,
        metrics: &AgentMetrics::default(),
        mcp,
    })
    .await
    .expect("no coordination failure")
}

async fn a_granted_mcp_tool_is_offered_called_and_recorded_as_an_event(fx: &Fixture) {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let tools = McpTools::start(vec![fixture_config(&fixture)], &env_with(TOKEN));
    up(&tools).await;
    let mut config = StandInConfig::new(KEY);
    config.behaviour = Arc::new(looks_up());
    let standin = ClaudeStandIn::start(config).expect("stand-in");
    let task = fx.pool().task(&task_uid());
    task.register(Limits::from(None)).await.expect("register");

    let ending = run(
        &task,
        fx,
        &client(&standin),
        "agent-a",
        &brief(&["fixture/lookup"]),
        &tools,
    )
    .await;
    assert_eq!(ending, Ending::Finished);
    let requests = standin.requests();
    let offered: Vec<String> = requests[0].body.as_ref().expect("body")["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .filter(|n| n.contains("__"))
        .collect();
    assert_eq!(
        offered,
        ["fixture__lookup"],
        "only the granted tool, not fail/slow/grow"
    );
    let answered = requests[1].body.as_ref().expect("body").to_string();
    assert!(
        answered.contains("717710"),
        "the tool's result reached the model: {answered}"
    );
    assert_eq!(fixture.calls().expect("calls")["lookup:Oslo"], 1);

    let mut consumer = task.events().consumer(GROUP_OPERATOR, "test");
    let called: Vec<EventKind> = consumer
        .next(100, None)
        .await
        .expect("events")
        .into_iter()
        .map(|d| d.event.kind)
        .filter(|k| matches!(k, EventKind::ToolCalled { .. }))
        .collect();
    let [
        EventKind::ToolCalled {
            server,
            tool,
            outcome,
            ..
        },
    ] = called.as_slice()
    else {
        panic!("one ToolCalled event: {called:?}");
    };
    assert_eq!(
        (server.as_str(), tool.as_str(), outcome.as_str()),
        ("fixture", "lookup", "ok")
    );
    assert!(
        !format!("{called:?}").contains("Oslo"),
        "no arguments in events"
    );

    // A Task that names no tools gets none, though the pool has them.
    let task = fx.pool().task(&task_uid());
    task.register(Limits::from(None)).await.expect("register");
    let before = standin.requests().len();
    assert_eq!(
        run(&task, fx, &client(&standin), "agent-a", &brief(&[]), &tools).await,
        Ending::Finished
    );
    let body = standin.requests()[before].body.clone().expect("body");
    assert!(
        !body["tools"].to_string().contains("fixture__"),
        "{}",
        body["tools"]
    );
    assert_eq!(fixture.calls().expect("calls")["lookup:Oslo"], 1);
}

async fn a_takeover_does_not_call_a_journaled_tool_again(fx: &Fixture) {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let tools = McpTools::start(vec![fixture_config(&fixture)], &env_with(TOKEN));
    up(&tools).await;
    // The first agent's second model call (after the tool result) never returns: it dies there.
    let mut config = StandInConfig::new(KEY);
    let first_call = Outcome::Reply(Reply::tool("fixture__lookup", json!({"city": "Oslo"})));
    config.behaviour = Arc::new(Scripted::new(
        [
            first_call,
            Outcome::Fail(Fault::Hang(Duration::from_secs(60))),
        ],
        looks_up(),
    ));
    let standin = ClaudeStandIn::start(config).expect("stand-in");
    let task = fx.pool().task(&task_uid());
    task.register(Limits::from(None)).await.expect("register");
    let (first, tools_first) = (client(&standin), tools.clone());
    let (task_first, brief_first) = (task.clone(), brief(&["fixture"]));
    let fx_pool = fx.pool();
    let dying = tokio::spawn(async move {
        let limiter = fx_pool.rate_limiter(RateLimits {
            requests: Bucket::unlimited(),
            input_tokens: Bucket::unlimited(),
            output_tokens: Bucket::unlimited(),
        });
        let agent = AgentName::new("agent-a").expect("agent");
        let work = item(&task_first);
        agent::run(WorkItemRun {
            item: &work,
            task: &task_first,
            agent: &agent,
            brief: &brief_first,
            limiter: &limiter,
            client: &first,
            settings: &settings(),
            stop: None,
            metrics: &AgentMetrics::default(),
            mcp: &tools_first,
        })
        .await
    });
    eventually("the call after the tool result", PATIENCE, || async {
        (standin.requests().len() >= 2).then_some(())
    })
    .await;
    dying.abort();
    assert_eq!(fixture.calls().expect("calls")["lookup:Oslo"], 1);

    let ending = run(
        &task,
        fx,
        &client(&standin),
        "agent-b",
        &brief(&["fixture"]),
        &tools,
    )
    .await;
    assert_eq!(ending, Ending::Finished);
    assert_eq!(
        fixture.calls().expect("calls")["lookup:Oslo"],
        1,
        "the journaled call was not made again"
    );
    let last = standin
        .requests()
        .last()
        .and_then(|r| r.body.clone())
        .expect("body");
    assert!(
        last.to_string().contains("717710"),
        "the takeover's model saw the journaled result"
    );
}

both_backends!(
    a_granted_mcp_tool_is_offered_called_and_recorded_as_an_event,
    a_takeover_does_not_call_a_journaled_tool_again,
);
