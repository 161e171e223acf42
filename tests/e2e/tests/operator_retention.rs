//! Bounded Redis memory end to end (operator, agent pods, real Redis, Claude stand-in, kubectl):
//! finished Tasks give back their conversations, events, messages and dispatch markers after
//! `--finished-task-retention-seconds` and keep only what their status, result and Checkpoints
//! need; a running Task's event stream is trimmed as the operator folds it, and an operator
//! that is down meanwhile loses none of the events published while it was.

use std::time::Duration;

use kube::api::{Api, ListParams};
use maos_core::api::v1alpha1::{Checkpoint, CheckpointPhase, SubtaskPhase, Task};
use maos_core::coord::events::{Event, EventKind};
use maos_core::coord::{AgentName, PoolKeys, PoolUid, TaskKeys, TaskUid};
use maos_e2e::stack::{
    RedisUsage, Stack, StackConfig, condition, has_condition, pool_manifest, subtask,
};

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(180);
/// Long enough for 200 small Tasks on a loaded 2-core machine.
const MANY_DEADLINE: Duration = Duration::from_secs(600);
/// How many Tasks the memory test runs.
const TASKS: usize = 200;
/// What a finished Task keeps (the part of its keys after the hash tag).
const RETAINED: [&str; 7] = [
    "meta", "kv", "kv:ver", "results", "budget", "spend", "cancel",
];

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

fn succeeded(task: &Task) -> bool {
    has_condition(task, "Succeeded", "True", Some("Completed"))
}

/// A Task of one subtask, no synthesis: the smallest that runs a model call.
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

fn keys_of(task: &Task) -> TaskKeys {
    let status = task.status.as_ref().expect("status");
    let pool = PoolUid::new(status.pool_uid.as_deref().expect("poolUID")).expect("pool uid");
    let uid = TaskUid::new(task.metadata.uid.as_deref().expect("uid")).expect("task uid");
    PoolKeys::new(&pool).task(&uid)
}

/// The part of a task's key after its hash tag (`meta`, `events`, `journal:greet`), or `None`
/// for a key that is not a task's.
fn task_key_kind(key: &str) -> Option<&str> {
    key.contains("{task:")
        .then(|| key.split_once("}:").map(|(_, kind)| kind))
        .flatten()
}

/// Every task key in Redis that a finished Task should have given back.
async fn transient_task_keys(stack: &Stack) -> Vec<String> {
    stack
        .keys_matching("maos:pool:*")
        .await
        .expect("scan")
        .into_iter()
        .filter(|k| task_key_kind(k).is_some_and(|kind| !RETAINED.contains(&kind)))
        .collect()
}

/// Every enqueue-once marker of every pool.
async fn dispatch_markers(stack: &Stack) -> u64 {
    let redis = stack.redis().await.expect("redis");
    let mut total = 0;
    for key in stack
        .keys_matching("maos:{pool:*}:dispatched")
        .await
        .expect("scan")
    {
        let markers: u64 = redis::cmd("HLEN")
            .arg(&key)
            .query_async(&mut redis.connection())
            .await
            .expect("HLEN");
        total += markers;
    }
    total
}

async fn memory_usage(stack: &Stack, key: &str) -> u64 {
    let redis = stack.redis().await.expect("redis");
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query_async::<Option<u64>>(&mut redis.connection())
        .await
        .expect("MEMORY USAGE")
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_finished_tasks_give_back_all_but_their_retained_keys_after_the_retention() {
    let stack = Stack::start(
        StackConfig::new("e2e-retention-many")
            .standalone_redis()
            .operator_arg("--finished-task-retention-seconds=2"),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 4, 4))
        .expect("apply the pool");

    // One Task first: it loads the scripts, connects the agents, and shows what one finished
    // Task keeps once its retention ended.
    stack.apply(&small_task("warm-up")).expect("apply warm-up");
    let warm_up = stack.wait_task_finished("warm-up", TASK_DEADLINE).await;
    assert!(succeeded(&warm_up), "{:?}", warm_up.status);
    let warm_up_prefix = keys_of(&warm_up).prefix().to_owned();
    stack
        .wait_until(
            "the warm-up Task's retention to end",
            TASK_DEADLINE,
            || async {
                (transient_task_keys(&stack).await.is_empty()
                    && dispatch_markers(&stack).await == 0)
                    .then_some(())
            },
        )
        .await;
    let kept = stack
        .keys_matching(&format!("{warm_up_prefix}:*"))
        .await
        .expect("scan");
    assert!(
        kept.iter().any(|k| k.ends_with(":meta")) && kept.iter().any(|k| k.ends_with(":results")),
        "a finished Task keeps its identity and results: {kept:?}"
    );
    let mut kept_bytes = 0;
    for key in &kept {
        kept_bytes += memory_usage(&stack, key).await;
    }
    let start = stack.redis_usage().await.expect("usage");

    let manifests: Vec<String> = (0..TASKS)
        .map(|i| small_task(&format!("t{i:03}")))
        .collect();
    stack
        .apply(&manifests.join("---\n"))
        .expect("apply 200 Tasks");
    let tasks: Api<Task> = Api::namespaced(stack.client(), stack.namespace());
    let all_done = stack
        .wait_until("200 Tasks finished", MANY_DEADLINE, || async {
            let listed = tasks.list(&ListParams::default()).await.ok()?;
            let ours: Vec<Task> = listed
                .items
                .into_iter()
                .filter(|t| t.metadata.name.as_deref() != Some("warm-up"))
                .collect();
            (ours.len() == TASKS && ours.iter().all(finished)).then_some(ours)
        })
        .await;
    let failed: Vec<&Task> = all_done.iter().filter(|t| !succeeded(t)).collect();
    assert!(failed.is_empty(), "Tasks that did not succeed: {failed:?}");
    let at_finish = stack.redis_usage().await.expect("usage");

    // Memory comes back: no conversation, event stream, bus or marker of a finished Task stays,
    // and what stays is what the warm-up Task kept, 200 times.
    let allowed_keys = start.keys + (TASKS * kept.len()) as u64;
    // What the warm-up Task's kept keys take, twice over for each Task (allocator rounding,
    // names and results of other lengths), plus 256 KiB for what Redis itself moves (client
    // buffers, its own bookkeeping). A Task's conversation and events alone are several times
    // what it keeps.
    let allowed_memory = start.used_memory + TASKS as u64 * kept_bytes * 2 + (256 << 10);
    let after: RedisUsage = stack
        .wait_until(
            "Redis memory and keys back within bounds",
            Duration::from_secs(120),
            || async {
                if !transient_task_keys(&stack).await.is_empty()
                    || dispatch_markers(&stack).await != 0
                {
                    return None;
                }
                // UNLINK frees large values on a background thread: used_memory follows.
                let usage = stack.redis_usage().await.ok()?;
                (usage.keys <= allowed_keys && usage.used_memory <= allowed_memory).then_some(usage)
            },
        )
        .await;
    eprintln!(
        "redis after warm-up: {start:?}; after {TASKS} Tasks finished: {at_finish:?}; after the \
         retention: {after:?}; one finished Task keeps {} keys, {kept_bytes} bytes",
        kept.len()
    );

    // Status and result need nothing of what went.
    let task = stack.task("t000").await.expect("get t000");
    let status = task.status.as_ref().expect("status");
    assert!(
        status
            .result
            .as_deref()
            .is_some_and(|r| r.contains("Stand-in answer to:")),
        "{status:?}"
    );
    assert_eq!(
        subtask(&task, "greet").map(|s| s.phase),
        Some(SubtaskPhase::Succeeded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_is_checkpointed_and_resumed_after_its_retention() {
    let stack = Stack::start(
        StackConfig::new("e2e-retention-ckpt")
            .standalone_redis()
            .s3()
            .operator_arg("--finished-task-retention-seconds=1"),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: source
spec:
  prompt: Write a short report in parts.
  poolRef: {name: default}
  synthesize: true
  subtasks:
  - {name: intro, prompt: Write the introduction.}
  - {name: body, prompt: Write the body., dependsOn: [intro]}
",
        )
        .expect("apply the task");
    let source = stack.wait_task_finished("source", TASK_DEADLINE).await;
    assert!(succeeded(&source), "{:?}", source.status);
    let result = source
        .status
        .as_ref()
        .and_then(|s| s.result.clone())
        .expect("status.result");
    let prefix = keys_of(&source).prefix().to_owned();
    stack
        .wait_until(
            "the source Task's retention to end",
            TASK_DEADLINE,
            || async {
                let keys = stack
                    .keys_matching(&format!("{prefix}:*"))
                    .await
                    .expect("scan");
                keys.iter()
                    .all(|k| task_key_kind(k).is_some_and(|kind| RETAINED.contains(&kind)))
                    .then_some(())
            },
        )
        .await;

    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Checkpoint
metadata:
  name: source-later
spec:
  taskRef: {name: source}
",
        )
        .expect("apply the checkpoint");
    let checkpoints: Api<Checkpoint> = Api::namespaced(stack.client(), stack.namespace());
    let saved = stack
        .wait_until(
            "Checkpoint source-later finished",
            TASK_DEADLINE,
            || async {
                checkpoints
                    .get_opt("source-later")
                    .await
                    .ok()
                    .flatten()
                    .filter(|c| {
                        matches!(
                            c.status.as_ref().and_then(|s| s.phase),
                            Some(CheckpointPhase::Saved | CheckpointPhase::Failed)
                        )
                    })
            },
        )
        .await;
    assert_eq!(
        saved.status.as_ref().and_then(|s| s.phase),
        Some(CheckpointPhase::Saved),
        "{:?}",
        saved.status
    );

    let calls_before = stack.standin().requests().len();
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: copy
spec:
  prompt: Write a short report in parts.
  poolRef: {name: default}
  synthesize: true
  resumeFrom: {checkpoint: source-later}
  subtasks:
  - {name: intro, prompt: Write the introduction.}
  - {name: body, prompt: Write the body., dependsOn: [intro]}
",
        )
        .expect("apply the resumed task");
    let copy = stack.wait_task_finished("copy", TASK_DEADLINE).await;
    assert!(succeeded(&copy), "{:?}", copy.status);
    assert_eq!(
        copy.status.as_ref().and_then(|s| s.result.as_deref()),
        Some(result.as_str())
    );
    assert_eq!(
        stack.standin().requests().len(),
        calls_before,
        "a finished Task resumes without a model call, its retention over or not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_tasks_events_are_trimmed_and_none_is_lost_while_the_operator_is_down() {
    const BURST: u64 = 300;
    const MODEL: &str = "trim-probe";
    // The one model call stays in flight for the whole test: the Task keeps running.
    let mut stack = Stack::start(
        StackConfig::new("e2e-retention-trim")
            .standalone_redis()
            .claude_latency(Duration::from_secs(900)),
    )
    .await
    .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("apply the pool");
    stack.apply(&small_task("long")).expect("apply the task");
    let task = stack
        .wait_task("long", "greet running", TASK_DEADLINE, |t| {
            subtask(t, "greet").is_some_and(|s| s.phase == SubtaskPhase::Running)
        })
        .await;
    let keys = keys_of(&task);
    let redis = stack.redis().await.expect("redis");
    let log = maos_core::coord::Task::new(redis.clone(), keys.clone()).events();
    let xlen = || {
        let (redis, key) = (redis.clone(), keys.events());
        async move {
            redis::cmd("XLEN")
                .arg(&key)
                .query_async::<u64>(&mut redis.connection())
                .await
                .expect("XLEN")
        }
    };
    // Events as the agent working `greet` publishes them; each counts one token for MODEL, so
    // the status's usage for MODEL counts exactly the events folded.
    let burst = || {
        let probe = AgentName::new("trim-probe").expect("name");
        (0..BURST)
            .map(|_| {
                Event::new(
                    &probe,
                    "greet",
                    1,
                    EventKind::TokensUsed {
                        model: MODEL.to_owned(),
                        input: 1,
                        output: 0,
                        cache_read: 0,
                        cache_creation: 0,
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let folded = |t: &Task| {
        t.status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .and_then(|u| u.by_model.iter().find(|m| m.model == MODEL))
            .map_or(0, |m| m.input_tokens)
    };

    log.publish_many(&burst()).await.expect("publish");
    stack
        .wait_task("long", "the first burst folded", TASK_DEADLINE, |t| {
            folded(t) == BURST
        })
        .await;
    stack
        .wait_until("the folded events trimmed", TASK_DEADLINE, || async {
            (xlen().await < BURST / 2).then_some(())
        })
        .await;

    // The operator goes down; the agents go on publishing.
    stack.operator(0).kill();
    let before = xlen().await;
    log.publish_many(&burst()).await.expect("publish");
    assert_eq!(
        xlen().await,
        before + BURST,
        "nothing publishes past what no one has read"
    );
    stack.operator(0).restart().expect("restart the operator");
    stack.wait_leader(Duration::from_secs(60)).await;
    let task = stack
        .wait_task("long", "the second burst folded", TASK_DEADLINE, |t| {
            folded(t) >= 2 * BURST
        })
        .await;
    assert_eq!(
        folded(&task),
        2 * BURST,
        "every event was folded exactly once"
    );
    stack
        .wait_until("the second burst trimmed", TASK_DEADLINE, || async {
            (xlen().await < BURST / 2).then_some(())
        })
        .await;
    assert!(!finished(&task), "the Task is still running");
}
