//! Agent overhead: the time an agent spends per turn on everything but waiting for the model
//! (journal, budget, rate limits, tools, events), measured against a 0-latency Claude stand-in
//! and a real redis-server; and the memory of one idle `maos-agent` process.
//!
//! Prints a Markdown section for BENCHMARKS.md (`make bench` collects it). Targets (DESIGN.md):
//! overhead p95 ≤ 5 ms per turn; idle agent RSS ≤ 20 MiB.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maos_agent_runner::agent::{self, Brief, Ending, ModelSettings, WorkItemRun};
use maos_agent_runner::claude::{ApiKey, ClaudeClient, ClientConfig};
use maos_agent_runner::mcp::McpTools;
use maos_agent_runner::metrics::AgentMetrics;
use maos_core::api::v1alpha1::SubtaskSpec;
use maos_core::coord::plan::Goal;
use maos_core::coord::queue::{WorkItem, WorkKind};
use maos_core::coord::ratelimit::{Bucket, RateLimits};
use maos_core::coord::{AgentName, Pool, PoolUid, Redis, RedisConfig, TaskUid, Topology};
use maos_core::dag::SubtaskName;
use maos_e2e::claude_standin::{ClaudeStandIn, StandInConfig};
use maos_e2e::launch::redis::RedisServer;

const KEY: &str = "sk-ant-bench";
const SUBTASKS: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Where in a subtask an overhead sample falls: before its first call, between two calls (the
/// answer's writes, the tools, the next call's checks), after its last.
const POSITIONS: [&str; 3] = [
    "before the first call (journal read, opening, checks)",
    "between two calls (writes, tools, checks)",
    "after the last call (writes, complete_subtask)",
];

async fn overhead() -> (Vec<(usize, Duration)>, Vec<Duration>) {
    let server = RedisServer::start().expect("redis-server starts");
    let redis = Redis::connect(RedisConfig::new(Topology::Standalone, [server.url()]))
        .await
        .expect("connect");
    let standin = ClaudeStandIn::start(StandInConfig::new(KEY)).expect("stand-in");
    let client = ClaudeClient::new(ClientConfig::new(
        standin.base_url(),
        ApiKey::new(KEY).expect("key"),
    ))
    .expect("client");
    let pool = Pool::new(redis, &PoolUid::new("bench-pool").expect("uid"));
    let unlimited = RateLimits {
        requests: Bucket::unlimited(),
        input_tokens: Bucket::unlimited(),
        output_tokens: Bucket::unlimited(),
    };
    // The real limiter runs its script on every turn; unlimited buckets would skip it.
    let limits = RateLimits {
        requests: Bucket::per_minute(100_000_000),
        input_tokens: Bucket::per_minute(1_000_000_000),
        output_tokens: Bucket::per_minute(1_000_000_000),
    };
    let limiter = pool.rate_limiter(if std::env::var_os("MAOS_BENCH_NO_RATELIMIT").is_some() {
        unlimited
    } else {
        limits
    });
    let settings = ModelSettings {
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1024,
        thinking_budget_tokens: None,
        max_turns: 10,
        stream: false,
        prices: maos_core::price::default_price_table(),
        drain_on_stop: Duration::ZERO,
    };
    let metrics = AgentMetrics::default();
    let agent = AgentName::new("bench-agent").expect("agent");
    let mut overheads = Vec::new();
    for i in 0..SUBTASKS {
        let task = pool.task(&TaskUid::new(&format!("bench-task-{i}")).expect("uid"));
        task.register(Some(10_000_000)).await.expect("register");
        task.plan()
            .set_goal(&Goal {
                prompt: "Benchmark the agent.".into(),
                max_subtasks: 4,
                tools: Vec::new(),
                thinking_budget_tokens: None,
            })
            .await
            .expect("goal");
        let spec = SubtaskSpec {
            name: "work".into(),
            prompt: "Do the work.".into(),
            depends_on: vec![],
            voters: None,
        };
        task.plan()
            .set_subtasks(std::slice::from_ref(&spec))
            .await
            .expect("plan");
        let item = WorkItem {
            task: task.keys().task().clone(),
            subtask: SubtaskName::new("work").expect("name"),
            attempt: 1,
            kind: WorkKind::Work,
            deadline_ms: u64::MAX,
        };
        let brief = Brief {
            goal: "Benchmark the agent.".into(),
            prompt: spec.prompt.clone(),
            dependency_results: vec![],
            max_subtasks: 4,
            tools: Vec::new(),
            thinking_budget_tokens: None,
        };
        let before = standin.requests().len();
        let started = Instant::now();
        let ending = agent::run(WorkItemRun {
            item: &item,
            task: &task,
            agent: &agent,
            brief: &brief,
            limiter: &limiter,
            client: &client,
            settings: &settings,
            stop: None,
            metrics: &metrics,
            mcp: &McpTools::none(),
        })
        .await
        .expect("no coordination failure");
        let ended = Instant::now();
        assert_eq!(ending, Ending::Finished);
        let requests = &standin.requests()[before..];
        // Agent time: before the first call, between an answer and the next call, after the last.
        let mut previous = started;
        for (index, request) in requests.iter().enumerate() {
            let position = if index == 0 { 0 } else { 1 };
            overheads.push((position, request.at.duration_since(previous)));
            previous = request.answered_at.expect("answered");
        }
        overheads.push((2, ended.duration_since(previous)));
    }
    let model: Vec<Duration> = standin
        .requests()
        .iter()
        .filter_map(|r| Some(r.answered_at?.duration_since(r.at)))
        .collect();
    (overheads, model)
}

fn idle_rss_kib() -> Option<u64> {
    let server = RedisServer::start().ok()?;
    let dir = std::env::temp_dir().join(format!("maos-bench-rss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let log = dir.join("agent.log");
    let mut child = Command::new(maos_e2e::binaries::agent().ok()?)
        .env_clear()
        .env("MAOS_AGENT_NAME", "idle-agent")
        .env("MAOS_POOL_UID", "bench-rss")
        .env("MAOS_REDIS_URLS", server.url())
        .env("MAOS_HTTP_ADDR", "127.0.0.1:0")
        .env("ANTHROPIC_API_KEY", KEY)
        .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).ok()?)
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("agent ready")
    {
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let it idle through a few claim and heartbeat rounds before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    // `cargo bench` passes --bench; nothing else is configurable.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (samples, mut model) = runtime.block_on(overhead());
    let mut overheads: Vec<Duration> = samples.iter().map(|(_, d)| *d).collect();
    overheads.sort();
    model.sort();
    let rss = idle_rss_kib();
    println!("## Agent overhead (agent-runner)\n");
    println!(
        "{SUBTASKS} subtasks of 4 model calls and 4 tool calls each (write_state, send_message, read_messages, complete_subtask), one agent in-process, real redis-server, 0-latency Claude stand-in over HTTP. Overhead is the agent's own time per turn: everything but waiting for the model (journal, budget, rate limiter, tools, events).\n"
    );
    println!("| what | p50 ms | p95 ms | p99 ms | samples | target |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| agent overhead per turn | {} | {} | {} | {} | p95 ≤ 5 ms |",
        ms(percentile(&overheads, 0.5)),
        ms(percentile(&overheads, 0.95)),
        ms(percentile(&overheads, 0.99)),
        overheads.len()
    );
    for (position, what) in POSITIONS.iter().enumerate() {
        let mut these: Vec<Duration> = samples
            .iter()
            .filter(|(p, _)| *p == position)
            .map(|(_, d)| *d)
            .collect();
        these.sort();
        println!(
            "| of which {what} | {} | {} | {} | {} | |",
            ms(percentile(&these, 0.5)),
            ms(percentile(&these, 0.95)),
            ms(percentile(&these, 0.99)),
            these.len()
        );
    }
    println!(
        "| stand-in answer time (reference) | {} | {} | {} | {} | |",
        ms(percentile(&model, 0.5)),
        ms(percentile(&model, 0.95)),
        ms(percentile(&model, 0.99)),
        model.len()
    );
    match rss {
        Some(kib) => println!(
            "\nIdle `maos-agent` (release build) RSS after 3 s idle: **{:.1} MiB** (target ≤ 20 MiB).\n",
            kib as f64 / 1024.0
        ),
        None => println!(
            "\nIdle `maos-agent` RSS: not measured (the release binary is not built; `make bench` builds it).\n"
        ),
    }
}
