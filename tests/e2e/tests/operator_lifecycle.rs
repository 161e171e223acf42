//! What users do to a Task while it lives, end to end with the real kubectl: suspend and resume
//! it, terminate it, delete it mid-run (its Redis state goes with it), and create it before its
//! pool exists.

use std::time::{Duration, Instant};

use maos_core::api::v1alpha1::{SubtaskPhase, Task, TaskPhase};
use maos_e2e::stack::{Stack, StackConfig, condition, has_condition, pool_manifest, subtask};

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(120);
/// How long a test watches that something does not happen.
const OBSERVATION: Duration = Duration::from_secs(3);
/// The stand-in's latency where a subtask must still be running when the test acts.
const SLOW_CALLS: Duration = Duration::from_secs(2);

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

fn running(task: &Task) -> Vec<String> {
    task.status
        .iter()
        .flat_map(|s| &s.subtasks)
        .filter(|s| s.phase == SubtaskPhase::Running)
        .map(|s| s.name.clone())
        .collect()
}

/// A Task on pool `default` with two independent subtasks; `extra` adds spec lines.
fn two_part_task(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: {name}
spec:
  prompt: Write a short report.
  poolRef: {{name: default}}
  synthesize: false
{extra}  subtasks:
  - {{name: left, prompt: Research the left side.}}
  - {{name: right, prompt: Research the right side.}}
"
    )
}

/// Model calls made for the two parts of [`two_part_task`].
fn part_calls(stack: &Stack) -> usize {
    stack
        .model_requests_mentioning("Research the left side.")
        .len()
        + stack
            .model_requests_mentioning("Research the right side.")
            .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_task_dispatches_nothing_until_resumed_then_completes() {
    let stack = Stack::start(StackConfig::new("e2e-suspend"))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 2))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: paused
spec:
  prompt: Compare three message brokers.
  poolRef: {name: default}
  suspend: true
",
        )
        .expect("kubectl apply the suspended task");

    let held = stack
        .wait_task("paused", "Suspended=True", TASK_DEADLINE, |t| {
            has_condition(t, "Suspended", "True", None)
        })
        .await;
    assert_eq!(
        held.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Suspended),
        "the phase column shows a held Task as Suspended: {:?}",
        held.status
    );
    // An observation window, not synchronisation: nothing may start while it lasts.
    let watched = Instant::now();
    while watched.elapsed() < OBSERVATION {
        let task = stack.task("paused").await.expect("get the task");
        let started: Vec<_> = task
            .status
            .iter()
            .flat_map(|s| &s.subtasks)
            .filter(|s| s.phase != SubtaskPhase::Pending || s.started_at.is_some())
            .collect();
        assert!(
            started.is_empty(),
            "a suspended Task dispatched: {started:?}"
        );
        assert!(
            stack.standin().requests().is_empty(),
            "an agent called the model for a suspended Task"
        );
        assert!(!finished(&task), "{:?}", task.status);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    stack
        .kubectl(
            &[
                "patch",
                "task",
                "paused",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"suspend":false}}"#,
            ],
            None,
        )
        .expect("kubectl patch suspend false");
    let task = stack
        .wait_task("paused", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
    let suspended = condition(&task, "Suspended").expect("Suspended condition");
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_str()),
        ("False", "Finished"),
        "{suspended:?}"
    );
    assert!(!suspended.message.is_empty(), "{suspended:?}");
    let reasons: Vec<String> = stack
        .events_for("Task", "paused")
        .await
        .expect("list the Task's Events")
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for expected in ["Suspended", "Resumed"] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} Event among {reasons:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_terminate_cancels_a_running_task_and_stops_its_agents() {
    let stack = Stack::start(StackConfig::new("e2e-terminate").claude_latency(SLOW_CALLS))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("kubectl apply the pool");
    stack
        .apply(&two_part_task("halted", ""))
        .expect("kubectl apply the task");
    let task = stack
        .wait_task("halted", "a subtask running", TASK_DEADLINE, |t| {
            !running(t).is_empty()
        })
        .await;
    let was_running = running(&task);

    stack
        .kubectl(
            &[
                "patch",
                "task",
                "halted",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"shutdown":"Terminate"}}"#,
            ],
            None,
        )
        .expect("kubectl patch shutdown Terminate");
    let task = stack
        .wait_task("halted", "finished", Duration::from_secs(60), finished)
        .await;
    let calls_when_cancelled = part_calls(&stack);
    let succeeded = condition(&task, "Succeeded").expect("Succeeded condition");
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "Cancelled"),
        "{succeeded:?}"
    );
    assert_eq!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Cancelled),
        "a user's shutdown is shown as Cancelled, not Failed"
    );
    for name in &was_running {
        let entry = subtask(&task, name).expect("status entry");
        assert_eq!(entry.phase, SubtaskPhase::Cancelled, "{entry:?}");
    }
    assert!(
        task.status
            .as_ref()
            .and_then(|s| s.result.as_ref())
            .is_none(),
        "a terminated Task has no result"
    );

    // The agents stop between model calls: at most the call each had just begun follows.
    // Working on, each would make a call every 2 s.
    let watched = Instant::now();
    while watched.elapsed() < 2 * SLOW_CALLS + OBSERVATION {
        let calls = part_calls(&stack);
        assert!(
            calls <= calls_when_cancelled + 2,
            "the agents kept calling the model after the Task was cancelled: {calls_when_cancelled} → {calls}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_terminate_drops_the_model_call_in_flight() {
    let stack = Stack::start(StackConfig::new("e2e-terminate-call"))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    // The stand-in hangs 30 s on this subtask's first call.
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: hung
spec:
  prompt: Write a short report.
  poolRef: {name: default}
  synthesize: false
  subtasks:
  - {name: waiting, prompt: 'Wait for the slow source. [[fault:slow]]'}
",
        )
        .expect("kubectl apply the task");
    let hanging = stack
        .wait_until("the agent's call to hang", TASK_DEADLINE, || async {
            stack
                .model_requests_mentioning("Wait for the slow source.")
                .into_iter()
                .next()
        })
        .await;

    stack
        .kubectl(
            &[
                "patch",
                "task",
                "hung",
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"shutdown":"Terminate"}}"#,
            ],
            None,
        )
        .expect("kubectl patch shutdown Terminate");
    let patched = Instant::now();
    let task = stack
        .wait_task("hung", "finished", Duration::from_secs(60), finished)
        .await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded condition");
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "Cancelled"),
        "{succeeded:?}"
    );
    // The agent gave the call up (closed its connection) long before the hang's 30 s ended,
    // and said so: the item ended as Cancelled during the call.
    let dropped = stack
        .wait_until(
            "the hung call to be dropped",
            Duration::from_secs(20),
            || async {
                stack
                    .model_requests_mentioning("Wait for the slow source.")
                    .into_iter()
                    .next()
                    .and_then(|r| r.abandoned_at.map(|at| (r, at)))
            },
        )
        .await;
    assert_eq!(dropped.0.status, 0, "the hang never answered");
    eprintln!(
        "Terminate → call dropped {:?} after the patch ({:?} after it was sent)",
        dropped.1.saturating_duration_since(patched),
        dropped.1.duration_since(hanging.at)
    );
    let task_uid = task.metadata.uid.clone().expect("uid");
    let pool_uid = task
        .status
        .as_ref()
        .and_then(|s| s.pool_uid.clone())
        .expect("poolUID");
    let reasons = stack
        .wait_until(
            "the agent's account of the item",
            Duration::from_secs(20),
            || async {
                let events = stack.task_events(&pool_uid, &task_uid).await.ok()?;
                let reasons: Vec<String> = events
                    .iter()
                    .filter(|e| e["type"] == "SubtaskFailed")
                    .filter_map(|e| e["reason"].as_str().map(str::to_owned))
                    .collect();
                (!reasons.is_empty()).then_some(reasons)
            },
        )
        .await;
    assert!(
        reasons
            .iter()
            .all(|r| r.starts_with("Cancelled: task cancelled during a model call")),
        "{reasons:?}"
    );
    assert_eq!(
        stack
            .model_requests_mentioning("Wait for the slow source.")
            .len(),
        1,
        "the dropped call was not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_deleted_mid_run_leaves_no_redis_key_and_no_queue_entry() {
    let stack = Stack::start(StackConfig::new("e2e-delete").claude_latency(SLOW_CALLS))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    stack
        .apply(&two_part_task("doomed", "  parallelism: 1\n"))
        .expect("kubectl apply the task");
    let task = stack
        .wait_task("doomed", "a subtask running", TASK_DEADLINE, |t| {
            !running(t).is_empty()
        })
        .await;
    let task_uid = task.metadata.uid.clone().expect("uid");
    let pool_uid = task
        .status
        .as_ref()
        .and_then(|s| s.pool_uid.clone())
        .expect("status.poolUID");
    let pattern = format!("maos:pool:{pool_uid}:{{task:{task_uid}}}*");
    assert!(
        !stack
            .keys_matching(&pattern)
            .await
            .expect("scan")
            .is_empty(),
        "the running Task has keys in Redis ({pattern})"
    );
    let (items, markers) = stack
        .queue_entries_of_task(&pool_uid, &task_uid)
        .await
        .expect("read the queue");
    assert!(
        !items.is_empty() && !markers.is_empty(),
        "the running Task has queue entries"
    );

    stack
        .kubectl(&["delete", "task", "doomed", "--timeout=90s"], None)
        .expect("kubectl delete the task");
    let gone = stack
        .kubectl(&["get", "task", "doomed"], None)
        .expect_err("the Task is gone");
    assert!(gone.stderr().contains("NotFound"), "{}", gone.stderr());

    // Nothing of the Task stays in Redis, and nothing comes back once its agent stops.
    let watched = Instant::now();
    while watched.elapsed() < 2 * SLOW_CALLS + OBSERVATION {
        let keys = stack.keys_matching(&pattern).await.expect("scan");
        assert!(keys.is_empty(), "keys of the deleted Task: {keys:?}");
        let (items, markers) = stack
            .queue_entries_of_task(&pool_uid, &task_uid)
            .await
            .expect("read the queue");
        assert!(
            items.is_empty() && markers.is_empty(),
            "queue entries of the deleted Task: {items:?} {markers:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_waits_with_pool_not_found_then_completes_once_the_pool_exists() {
    let stack = Stack::start(StackConfig::new("e2e-late-pool"))
        .await
        .expect("the stack starts");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: early
spec:
  prompt: Say hello.
  poolRef: {name: late}
  synthesize: false
  subtasks:
  - {name: greet, prompt: Greet the user.}
",
        )
        .expect("kubectl apply the task");
    let task = stack
        .wait_task("early", "Accepted=False PoolNotFound", TASK_DEADLINE, |t| {
            has_condition(t, "Accepted", "False", Some("PoolNotFound"))
        })
        .await;
    assert!(!finished(&task), "PoolNotFound is not final");
    let accepted = condition(&task, "Accepted").expect("Accepted");
    assert!(accepted.message.contains("late"), "{}", accepted.message);
    assert_eq!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(maos_core::api::v1alpha1::TaskPhase::Pending)
    );

    stack
        .apply(&pool_manifest("late", 1, 1))
        .expect("kubectl apply the pool");
    let task = stack
        .wait_task("early", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "True", Some("Completed")),
        "{:?}",
        task.status
    );
    assert!(has_condition(&task, "Accepted", "True", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_edited_by_hand_is_written_back_by_the_operator() {
    let stack = Stack::start(StackConfig::new("e2e-status-owner"))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply the pool");
    stack
        .apply(&two_part_task("owned", ""))
        .expect("kubectl apply the task");
    let done = stack
        .wait_task("owned", "finished", TASK_DEADLINE, finished)
        .await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Succeeded)
    );

    // What a user (or a script gone wrong) might do: claim the Task failed.
    stack
        .kubectl(
            &[
                "patch",
                "mtask",
                "owned",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Failed","progress":"0/2"}}"#,
            ],
            None,
        )
        .expect("kubectl patch the status");
    let restored = stack
        .wait_task("owned", "the operator's status back", TASK_DEADLINE, |t| {
            t.status.as_ref().is_some_and(|s| {
                s.phase == Some(TaskPhase::Succeeded) && s.progress.as_deref() == Some("2/2")
            })
        })
        .await;
    assert!(
        has_condition(&restored, "Succeeded", "True", Some("Completed")),
        "{:?}",
        restored.status
    );
    let succeeded_events = stack
        .events_for("Task", "owned")
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Succeeded"))
        .map(|e| e.count.unwrap_or(1))
        .sum::<i32>();
    assert_eq!(
        succeeded_events, 1,
        "writing status back is not a second success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_pool_is_deleted_under_it_fails_as_pool_deleted_and_leaves_no_keys() {
    let stack = Stack::start(StackConfig::new("e2e-pool-deleted").claude_latency(SLOW_CALLS))
        .await
        .expect("the stack starts");
    stack
        .apply(&pool_manifest("default", 2, 2))
        .expect("kubectl apply the pool");
    stack
        .apply(&two_part_task("orphan", ""))
        .expect("kubectl apply the task");
    stack
        .wait_task("orphan", "a part running", TASK_DEADLINE, |t| {
            !running(t).is_empty()
        })
        .await;

    stack
        .kubectl(&["delete", "apool", "default", "--wait=false"], None)
        .expect("kubectl delete the pool");
    let task = stack
        .wait_task("orphan", "finished", TASK_DEADLINE, finished)
        .await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded");
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("False", "PoolDeleted"),
        "{succeeded:?}"
    );
    assert!(
        succeeded.message.contains("AgentPool default"),
        "{}",
        succeeded.message
    );
    assert_eq!(
        task.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Failed)
    );
    let uid = task.metadata.uid.clone().expect("uid");
    stack
        .wait_until("the task's keys removed", TASK_DEADLINE, || async {
            stack
                .keys_matching(&format!("*{{task:{uid}}}*"))
                .await
                .expect("scan")
                .is_empty()
                .then_some(())
        })
        .await;

    // A new pool of the same name is another pool: the failed Task stays failed.
    stack
        .apply(&pool_manifest("default", 1, 1))
        .expect("kubectl apply a new pool");
    stack
        .wait_until("the new pool's agent", TASK_DEADLINE, || async {
            stack
                .agent_pods("default")
                .ok()
                .filter(|pods| !pods.is_empty())
        })
        .await;
    let later = stack.task("orphan").await.expect("the task");
    assert_eq!(
        later.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Failed)
    );
    assert_eq!(
        later.status.as_ref().and_then(|s| s.pool_uid.clone()),
        task.status.as_ref().and_then(|s| s.pool_uid.clone())
    );
}
