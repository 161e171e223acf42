//! Redis memory of finished Tasks (issue #17): the whole stack (`maos_e2e::stack::Stack`, a
//! standalone redis-server, release `maos-operator` and `maos-agent`) runs 200 one-subtask
//! Tasks to completion with `--finished-task-retention-seconds` set, and records Redis's
//! `used_memory` and key count before them, once they have all finished (their conversations,
//! events and dispatch markers still held), and once the retention is over (only what their
//! status, result and Checkpoints need kept).
//!
//! Prints a Markdown section for BENCHMARKS.md (`make bench` collects it). Nothing is
//! asserted: `tests/e2e/tests/operator_retention.rs` checks the bound.

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, ListParams};
use maos_core::api::v1alpha1::Task;
use maos_e2e::procfs;
use maos_e2e::stack::{RedisUsage, Stack, StackConfig, condition, pool_manifest};

/// Tasks measured.
const TASKS: usize = 200;
/// Agents of the pool.
const AGENTS: u32 = 4;
/// The retention: long enough that no Task's ends before the last one finishes.
const RETENTION_SECONDS: u64 = 120;
/// Longest the bench waits for any one step.
const PATIENCE: Duration = Duration::from_secs(900);
/// How often it looks.
const POLL: Duration = Duration::from_millis(250);
/// Key kinds (after the task's hash tag) a finished Task keeps.
const RETAINED: [&str; 6] = ["meta", "kv", "kv:ver", "results", "budget", "cancel"];

fn small_task(name: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: {name}
spec:
  prompt: Say hello.
  poolRef: {{name: default}}
  synthesize: false
  subtasks:
  - {{name: greet, prompt: Greet the reader.}}
"
    )
}

async fn poll<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Task keys a finished Task gives back after the retention (journals, events, bus, …) and
/// enqueue-once markers, counted.
async fn transient(stack: &Stack) -> usize {
    let keys = stack.keys_matching("maos:*").await.expect("scan");
    let task_keys = keys
        .iter()
        .filter(|k| k.contains("{task:"))
        .filter_map(|k| k.split_once("}:").map(|(_, kind)| kind))
        .filter(|kind| !RETAINED.contains(kind))
        .count();
    let markers = keys.iter().filter(|k| k.ends_with(":dispatched")).count();
    task_keys + markers
}

async fn finished_tasks(tasks: &Api<Task>) -> usize {
    tasks
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|t| condition(t, "Succeeded").is_some_and(|c| c.status != "Unknown"))
                .count()
        })
        .unwrap_or(0)
}

struct Measured {
    start: RedisUsage,
    finished: RedisUsage,
    retained: RedisUsage,
    run: Duration,
    wait: Duration,
}

async fn run() -> Measured {
    let stack = Stack::start(
        StackConfig::new("bench-redis-memory")
            .standalone_redis()
            .operator_arg(format!(
                "--finished-task-retention-seconds={RETENTION_SECONDS}"
            )),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", AGENTS, AGENTS))
        .expect("apply the pool");
    let tasks: Api<Task> = Api::namespaced(stack.client(), stack.namespace());
    // The agents connected and the scripts loaded before the baseline: one Task first, whose
    // retention is not waited for (it counts in both later measurements alike).
    stack.apply(&small_task("warm-up")).expect("apply warm-up");
    poll("the warm-up Task", || async {
        (finished_tasks(&tasks).await == 1).then_some(())
    })
    .await;
    let start = stack.redis_usage().await.expect("usage");

    let manifests: Vec<String> = (0..TASKS)
        .map(|i| small_task(&format!("t{i:03}")))
        .collect();
    let started = Instant::now();
    stack.apply(&manifests.join("---\n")).expect("apply Tasks");
    poll("every Task finished", || async {
        (finished_tasks(&tasks).await == TASKS + 1).then_some(())
    })
    .await;
    let run = started.elapsed();
    let finished = stack.redis_usage().await.expect("usage");
    eprintln!("redis_memory bench: {TASKS} Tasks finished in {run:?}; waiting for the retention");

    let started = Instant::now();
    poll("the retention over", || async {
        (transient(&stack).await == 0).then_some(())
    })
    .await;
    // UNLINK frees large values on a background thread: used_memory is read once it is done.
    let redis = stack.redis().await.expect("redis");
    poll("lazy frees done", || async {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut redis.connection())
            .await
            .ok()?;
        info.lines()
            .any(|l| l.trim() == "lazyfree_pending_objects:0")
            .then_some(())
    })
    .await;
    let retained = stack.redis_usage().await.expect("usage");
    let wait = started.elapsed();
    Measured {
        start,
        finished,
        retained,
        run,
        wait,
    }
}

fn per_task(after: u64, before: u64) -> String {
    format!("{:.0}", (after as f64 - before as f64) / TASKS as f64)
}

fn report(m: &Measured, load_before: &str, load_after: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Redis memory of finished Tasks\n");
    let _ = writeln!(
        out,
        "{TASKS} one-subtask Tasks (stand-in model, {AGENTS} agents, standalone redis-server, \
         release binaries) run to completion with `--finished-task-retention-seconds={RETENTION_SECONDS}`; \
         `used_memory` (INFO memory) and `DBSIZE` before them (after one warm-up Task, whose keys \
         are in the first row and whose retention ends with the others', so the last row's \
         per-Task figures are low by its share, about 70 bytes), when all have finished, and \
         when the retention is over. Load average {load_before} before, {load_after} after.\n"
    );
    let _ = writeln!(out, "| when | used_memory (bytes) | keys |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (when, u) in [
        ("before the Tasks", m.start),
        ("all finished, retention running", m.finished),
        ("retention over", m.retained),
    ] {
        let _ = writeln!(out, "| {when} | {} | {} |", u.used_memory, u.keys);
    }
    let _ = writeln!(
        out,
        "\nPer finished Task: {} bytes and {} keys while its retention runs (journals, events, \
         bus, dispatch markers: what `main` before #17 kept until the Task was deleted); {} bytes \
         and {} keys after it (identity and plan, results, budget, shared state). The Tasks ran \
         in {:.1} s; the retention ended {:.1} s after the last finished.\n",
        per_task(m.finished.used_memory, m.start.used_memory),
        per_task(m.finished.keys, m.start.keys),
        per_task(m.retained.used_memory, m.start.used_memory),
        per_task(m.retained.keys, m.start.keys),
        m.run.as_secs_f64(),
        m.wait.as_secs_f64(),
    );
    out
}

fn main() {
    // `cargo bench` passes --bench; nothing else is configurable.
    let load_before = procfs::load_average();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let measured = runtime.block_on(run());
    print!(
        "{}",
        report(&measured, &load_before, &procfs::load_average())
    );
}
