//! `maos-agent` as a process, as it runs in a pod: it works queued items, exits 0 on SIGTERM
//! having released its work (dropping a model call that outlasts its grace, unfailed), a
//! SIGKILLed agent's item is reclaimed and finished by another agent that continues the
//! conversation, the API key appears in none of its output, and an agent that finds no function
//! library waits for the operator to load it.

#[macro_use]
mod coord_common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use coord_common::{Backend, Fixture, eventually, task_uid};
use maos_core::api::v1alpha1::SubtaskSpec;
use maos_core::coord::acl::Acl;
use maos_core::coord::events::EventKind;
use maos_core::coord::functions;
use maos_core::coord::keys::GROUP_OPERATOR;
use maos_core::coord::plan::Goal;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::{Pool, Task};
use maos_core::dag::SubtaskName;
use maos_e2e::claude_standin::{
    ClaudeStandIn, Fault, MaosAgent, MessagesRequest, Outcome, StandInConfig,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const KEY: &str = "sk-ant-process-RECOGNISABLE-42";

fn urls(fx: &Fixture) -> (String, bool) {
    match &fx.backend {
        Backend::Standalone(server) => (server.url(), false),
        Backend::Cluster(cluster) => (cluster.urls().join(","), true),
    }
}

/// A `maos-agent` process that is killed when the test ends, however it ends.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `maos-agent` named `name`, with its stderr captured to a file beside the test.
fn spawn_agent(
    fx: &Fixture,
    pool: &Pool,
    standin: &ClaudeStandIn,
    name: &str,
    log: &std::path::Path,
) -> AgentProcess {
    spawn_agent_with(fx, pool, standin, name, log, &[])
}

/// [`spawn_agent`] with `extra` environment variables.
fn spawn_agent_with(
    fx: &Fixture,
    pool: &Pool,
    standin: &ClaudeStandIn,
    name: &str,
    log: &std::path::Path,
    extra: &[(&str, &str)],
) -> AgentProcess {
    let (redis_urls, cluster) = urls(fx);
    let stderr = std::fs::File::create(log).expect("log file");
    Command::new(maos_e2e::binaries::agent().expect("maos-agent is built"))
        .env_clear()
        .envs(extra.iter().copied())
        .env("MAOS_AGENT_NAME", name)
        .env("MAOS_POOL_UID", pool.keys().pool().as_str())
        .env("MAOS_REDIS_URLS", redis_urls)
        .env("MAOS_REDIS_CLUSTER", cluster.to_string())
        .env("MAOS_HEARTBEAT_SECONDS", "1")
        .env("MAOS_HTTP_ADDR", "127.0.0.1:0")
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_BASE_URL", standin.base_url())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map(AgentProcess)
        .expect("maos-agent starts")
}

async fn queued_task(pool: &Pool) -> (Task, WorkItem) {
    let task = pool.task(&task_uid());
    task.register(None).await.expect("register");
    task.plan()
        .set_goal(&Goal {
            prompt: "Compare vector databases.".into(),
            max_subtasks: 4,
            tools: Vec::new(),
            thinking_budget_tokens: None,
        })
        .await
        .expect("goal");
    let spec = SubtaskSpec {
        name: "bench".into(),
        prompt: "Benchmark Qdrant.".into(),
        depends_on: vec![],
        voters: None,
    };
    task.plan().set_subtasks(&[spec]).await.expect("plan");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let item = WorkItem {
        task: task.keys().task().clone(),
        subtask: SubtaskName::new("bench").expect("name"),
        attempt: 1,
        kind: WorkKind::Work,
        deadline_ms: now + 120_000,
    };
    pool.queue().ensure_group().await.expect("group");
    pool.queue().enqueue(&item).await.expect("enqueue");
    (task, item)
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the agent's `/metrics`, at the address its log says it serves on.
async fn scrape_metrics(log: &std::path::Path) -> String {
    let addr = eventually(
        "the agent's HTTP address in its log",
        Duration::from_secs(10),
        || async {
            let text = std::fs::read_to_string(log).ok()?;
            let line = text
                .lines()
                .find(|l| l.contains("serving /healthz and /metrics"))?;
            let addr = line
                .split("addr=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_owned();
            Some(addr)
        },
    )
    .await;
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

fn temp_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "maos-agent-{name}-{}-{}.log",
        std::process::id(),
        coord_common::unique("log")
    ))
}

async fn an_agent_works_a_queued_item_and_exits_cleanly_on_sigterm(fx: &Fixture) {
    let standin = ClaudeStandIn::start(StandInConfig::new(KEY)).expect("stand-in");
    let pool = fx.pool();
    let (task, item) = queued_task(&pool).await;
    let log = temp_log("clean");
    let mut agent = spawn_agent(fx, &pool, &standin, "agent-a", &log);

    let result = eventually("the result", Duration::from_secs(30), || async {
        task.results().get(&item.subtask).await.ok().flatten()
    })
    .await;
    assert_eq!(
        result.result,
        "Stand-in answer to: Compare vector databases."
    );
    assert_eq!(result.agent, "agent-a");

    let metrics = scrape_metrics(&log).await;
    assert!(
        metrics.contains("maos_agent_model_requests_total{outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("maos_agent_subtasks_total{outcome=\"Finished\"} 1"),
        "{metrics}"
    );

    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(
        wait_exit(&mut agent.0, Duration::from_secs(15)),
        Some(0),
        "exits 0 on SIGTERM"
    );
    let stats = pool.queue().stats().await.expect("stats");
    assert_eq!(stats.pending, 0, "nothing is left pending: {stats:?}");
    let beating = pool
        .queue()
        .dead_agents(Duration::ZERO)
        .await
        .expect("heartbeats");
    assert!(
        beating.is_empty(),
        "the agent left the heartbeats: {beating:?}"
    );

    let output = std::fs::read_to_string(&log).expect("log");
    assert!(output.contains("agent ready"), "{output}");
    assert!(
        !output.contains(KEY),
        "the API key leaked into the agent's output"
    );
    let _ = std::fs::remove_file(log);
}

async fn a_killed_agents_item_is_reclaimed_and_finished_by_another(fx: &Fixture) {
    // Each model call takes a while, so the first agent can be killed mid-conversation.
    let mut config = StandInConfig::new(KEY);
    config.latency = Duration::from_millis(400);
    config.behaviour = Arc::new(MaosAgent::default());
    let standin = ClaudeStandIn::start(config).expect("stand-in");
    let pool = fx.pool();
    let (task, item) = queued_task(&pool).await;
    let (log_a, log_b) = (temp_log("a"), temp_log("b"));
    let mut first = spawn_agent(fx, &pool, &standin, "agent-a", &log_a);
    let journal = task.journal(&item.subtask);
    eventually(
        "two tool calls journaled",
        Duration::from_secs(30),
        || async { (journal.read_all().await.ok()?.entries.len() >= 5).then_some(()) },
    )
    .await;
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();
    let killed_at = Instant::now();

    // The operator's job, done by hand: find the dead agent and move its work back.
    let dead = eventually("agent-a declared dead", Duration::from_secs(15), || async {
        let dead = pool
            .queue()
            .dead_agents(Duration::from_secs(3))
            .await
            .ok()?;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    let reclaimed = pool.queue().reclaim(&dead[0]).await.expect("reclaim");
    assert_eq!(reclaimed.len(), 1);

    let mut second = spawn_agent(fx, &pool, &standin, "agent-b", &log_b);
    let result = eventually("the result", Duration::from_secs(30), || async {
        task.results().get(&item.subtask).await.ok().flatten()
    })
    .await;
    assert_eq!((result.agent.as_str(), result.attempt), ("agent-b", 2));
    assert_eq!(
        task.state()
            .get("notes/Compare vector databases.")
            .await
            .expect("read")
            .version,
        1,
        "write_state applied once"
    );
    // The second agent's first call carries the whole conversation the first one had.
    let takeover = standin
        .requests()
        .into_iter()
        .filter(|r| r.at > killed_at)
        .find_map(|r| r.body)
        .expect("the second agent called the model");
    assert!(
        takeover["messages"]
            .as_array()
            .is_some_and(|m| m.len() >= 5),
        "the takeover did not continue the conversation: {takeover}"
    );
    assert_eq!(takeover["messages"][1]["content"][0]["name"], "write_state");

    kill(Pid::from_raw(second.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(wait_exit(&mut second.0, Duration::from_secs(15)), Some(0));
    for log in [log_a, log_b] {
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !output.contains(KEY),
            "the API key leaked into an agent's output"
        );
        let _ = std::fs::remove_file(log);
    }
}

async fn an_agent_stopped_mid_call_drops_it_past_its_grace_and_releases_the_item_unfailed(
    fx: &Fixture,
) {
    let mut config = StandInConfig::new(KEY);
    config.behaviour =
        Arc::new(|_: &MessagesRequest, _: u64| Outcome::Fail(Fault::Hang(Duration::from_secs(60))));
    let standin = ClaudeStandIn::start(config).expect("stand-in");
    let pool = fx.pool();
    let (task, _) = queued_task(&pool).await;
    task.budget().set_limit(1_000_000).await.expect("budget");
    let log = temp_log("stopped");
    // A 12 s grace leaves nothing after the cleanup: the call in flight is dropped at once.
    let mut agent = spawn_agent_with(
        fx,
        &pool,
        &standin,
        "agent-a",
        &log,
        &[("MAOS_SHUTDOWN_GRACE_SECONDS", "12")],
    );
    eventually("the hanging call", Duration::from_secs(30), || async {
        standin.requests().into_iter().find(|r| r.body.is_some())
    })
    .await;

    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(
        wait_exit(&mut agent.0, Duration::from_secs(20)),
        Some(0),
        "exits 0 on SIGTERM"
    );
    // Settled before it left (an agent that just exits leaves its reservation held) ...
    let usage = task.budget().usage().await.expect("usage");
    assert_eq!(usage.reserved, 0, "{usage:?}");
    // ... and released: the item is back on the queue for another agent, not failed.
    let stats = pool.queue().stats().await.expect("stats");
    assert_eq!((stats.waiting, stats.pending), (1, 0), "{stats:?}");
    let mut operator = task.events().consumer(GROUP_OPERATOR, "test");
    let failures: Vec<String> = operator
        .next(100, None)
        .await
        .expect("events")
        .into_iter()
        .filter_map(|d| match d.event.kind {
            EventKind::SubtaskFailed { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert!(failures.is_empty(), "reported failed: {failures:?}");
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].abandoned_at.is_some(), "the call was closed");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(output.contains("released held work items"), "{output}");
    let _ = std::fs::remove_file(log);
}

async fn an_agent_as_its_pool_user_waits_for_the_function_library_and_then_works(fx: &Fixture) {
    let standin = ClaudeStandIn::start(StandInConfig::new(KEY)).expect("stand-in");
    let pool = fx.pool();
    let (task, item) = queued_task(&pool).await;
    let creds = Acl::new(fx.redis.clone())
        .create_pool_user(pool.keys(), &Acl::generate_password())
        .await
        .expect("pool user");
    // A Redis that restarted empty, before the operator's next check.
    let mut con = fx.redis.connection();
    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .expect("FUNCTION FLUSH");
    let log = temp_log("no-library");
    let mut agent = spawn_agent_with(
        fx,
        &pool,
        &standin,
        "agent-a",
        &log,
        &[
            ("MAOS_REDIS_USERNAME", &creds.username),
            ("MAOS_REDIS_PASSWORD", creds.password.expose()),
        ],
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.0.try_wait().expect("wait").is_none(),
        "the agent waits for the library rather than exit: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        task.results()
            .get(&item.subtask)
            .await
            .expect("get")
            .is_none()
    );

    functions::ensure_loaded(&fx.redis, false)
        .await
        .expect("the operator loads the library");
    let result = eventually("the result", Duration::from_secs(60), || async {
        task.results().get(&item.subtask).await.ok().flatten()
    })
    .await;
    assert_eq!(result.agent, "agent-a");
    kill(Pid::from_raw(agent.0.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(
        wait_exit(&mut agent.0, Duration::from_secs(15)),
        Some(0),
        "exits 0 on SIGTERM"
    );
    let _ = std::fs::remove_file(log);
}

both_backends!(
    an_agent_stopped_mid_call_drops_it_past_its_grace_and_releases_the_item_unfailed,
    an_agent_works_a_queued_item_and_exits_cleanly_on_sigterm,
    a_killed_agents_item_is_reclaimed_and_finished_by_another,
    an_agent_as_its_pool_user_waits_for_the_function_library_and_then_works,
);
