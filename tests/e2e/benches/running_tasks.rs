//! The operator holding many running Tasks: its sockets (to Redis and in all), RSS and CPU
//! with 1,000 and then 5,000 Tasks running at once, against the same operator with none in the
//! same run. Target (issue #17): sockets ≤ 4 × masters + a constant at both sizes. Prints a
//! Markdown section for BENCHMARKS.md; nothing is asserted.
//!
//! `MAOS_BENCH_RUNNING_TASKS` overrides the sizes (comma-separated, default `1000,5000`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, PostParams};
use maos_core::api::v1alpha1::{SubtaskPhase, Task};
use maos_e2e::procfs;
use maos_e2e::stack::{Stack, StackConfig, pool_manifest, subtask};
use serde_json::json;

/// A cluster's masters in the testbed.
const MASTERS: usize = 3;
/// How long a step may take before the bench gives up on it.
const PATIENCE: Duration = Duration::from_secs(900);
/// How long the operator is watched once every Task runs (CPU and RSS while it holds them).
const HOLD: Duration = Duration::from_secs(30);

fn sizes() -> Vec<usize> {
    std::env::var("MAOS_BENCH_RUNNING_TASKS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1000, 5000])
}

fn waiting_task(name: &str) -> Task {
    serde_json::from_value(json!({
        "apiVersion": "maos.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {
            "prompt": "Wait.",
            "poolRef": {"name": "hold"},
            "synthesize": false,
            "subtasks": [{"name": "wait", "prompt": "Take your time."}],
        }
    }))
    .expect("a Task")
}

fn is_running(task: &Task) -> bool {
    subtask(task, "wait")
        .is_some_and(|s| matches!(s.phase, SubtaskPhase::Queued | SubtaskPhase::Running))
}

/// What the operator holds at one moment.
struct Sample {
    tasks: usize,
    redis_sockets: usize,
    sockets: usize,
    rss_kib: Option<u64>,
    /// The operator's CPU over [`HOLD`] with every Task running, in CPU seconds per second.
    cpu_share: Option<f64>,
    /// First create → every Task seen running.
    reached_in: Option<Duration>,
}

fn sample(
    stack: &mut Stack,
    tasks: usize,
    cpu_share: Option<f64>,
    reached_in: Option<Duration>,
) -> Sample {
    let ports = stack.redis_backend().ports();
    let pid = stack.operator(0).pid().expect("the operator runs");
    Sample {
        tasks,
        redis_sockets: procfs::loopback_peer_ports(pid)
            .into_iter()
            .filter(|p| ports.contains(p))
            .count(),
        sockets: procfs::open_sockets(pid).unwrap_or(0),
        rss_kib: procfs::status_kib(Some(pid), "VmRSS:"),
        cpu_share,
        reached_in,
    }
}

async fn running_count(api: &Api<Task>) -> Option<usize> {
    let list = api.list(&ListParams::default()).await.ok()?;
    Some(list.items.iter().filter(|t| is_running(t)).count())
}

async fn run() -> String {
    // Model calls that outlast the bench: the pool's one agent holds one subtask, every other
    // Task's subtask waits in the queue, and every Task stays running.
    let mut stack =
        Stack::start(StackConfig::new("bench-running").claude_latency(Duration::from_secs(3600)))
            .await
            .expect("the stack starts");
    stack
        .apply(&pool_manifest("hold", 1, 1))
        .expect("kubectl apply the pool");
    let api: Api<Task> = Api::namespaced(stack.client(), stack.namespace());
    let mut samples = vec![sample(&mut stack, 0, None, None)];
    let mut created = 0;
    for size in sizes() {
        let started = Instant::now();
        let api_ref = &api;
        futures::stream::iter(created..size)
            .map(|i| async move {
                api_ref
                    .create(
                        &PostParams::default(),
                        &waiting_task(&format!("run-{i:05}")),
                    )
                    .await
                    .expect("create a Task");
            })
            .buffer_unordered(16)
            .collect::<Vec<()>>()
            .await;
        created = size;
        let mut reached_in = None;
        while started.elapsed() < PATIENCE {
            if running_count(&api).await == Some(size) {
                reached_in = Some(started.elapsed());
                break;
            }
            // A poll interval: each round lists every Task.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let pid = stack.operator(0).pid().expect("the operator runs");
        let cpu_before = procfs::cpu_time(pid);
        let held = Instant::now();
        tokio::time::sleep(HOLD).await;
        let cpu_share = match (cpu_before, procfs::cpu_time(pid)) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before).as_secs_f64() / held.elapsed().as_secs_f64())
            }
            _ => None,
        };
        samples.push(sample(&mut stack, size, cpu_share, reached_in));
    }
    let peak = stack
        .operator(0)
        .pid()
        .and_then(|pid| procfs::status_kib(Some(pid), "VmHWM:"));
    drop(stack);

    let mut out = String::new();
    let _ = writeln!(out, "## Operator with many running Tasks\n");
    let _ = writeln!(
        out,
        "The whole stack (testbed API server, process kubelet, release operator and agent, \
         6-node Redis Cluster of {MASTERS} masters); a pool of one agent and a stand-in whose \
         calls last an hour, so every one-subtask manual Task created (16 at a time through the \
         API) stays running: one subtask held by the agent, the others queued. Sockets are the \
         operator's /proc/<pid>/fd entries, those to Redis the established ones to a node's \
         port; CPU is the operator's over {}s once every Task runs (each running Task is \
         reconciled at least every 5 s). `scripts/bench.sh running_tasks`. Target: sockets to \
         Redis ≤ 4 × masters + a constant ({}) at 1,000 and at 5,000 Tasks.\n",
        HOLD.as_secs(),
        4 * MASTERS
    );
    let _ = writeln!(
        out,
        "| running Tasks | **sockets to Redis** | sockets in all | RSS MiB | operator CPU (cores) | all running after |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
    for s in &samples {
        let _ = writeln!(
            out,
            "| {} | **{}** | {} | {} | {} | {} |",
            s.tasks,
            s.redis_sockets,
            s.sockets,
            s.rss_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "?".into()),
            s.cpu_share
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "–".into()),
            s.reached_in
                .map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| if s.tasks == 0 {
                    "–".into()
                } else {
                    "not reached".into()
                }),
        );
    }
    if let Some(kib) = peak {
        let _ = writeln!(
            out,
            "\nOperator peak RSS (VmHWM): {:.1} MiB.",
            kib as f64 / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "\nBefore (main at b78140d, a blocking XREAD connection per running Task): 230 \
         sockets to Redis with 40 running Tasks on the same cluster, 3,340 sockets at the \
         peak of the operator bench's 1,000-Task scale run (`tests/operator_sockets.rs` on \
         that commit; BENCHMARKS.md of 2026-12-02).\n"
    );
    out
}

fn main() {
    procfs::print_section(run());
}
