//! Checkpoints end to end: the operator, agent pods, a Redis Cluster, the Claude stand-in and a
//! real S3-compatible server (moto), driven with the real kubectl. Save and resume byte for
//! byte, delete, corruption, storage errors, periodic checkpoints with pruning, and recovery of
//! a running Task after Redis loses everything.

use std::time::Duration;

use kube::api::Api;
use maos_core::api::v1alpha1::{Checkpoint, CheckpointPhase, SubtaskPhase, Task};
use maos_core::coord::dump::{self, KeyDump, TaskDump};
use maos_core::coord::{PoolKeys, PoolUid, TaskKeys, TaskUid};
use maos_e2e::stack::{
    CHECKPOINT_BUCKET, Stack, StackConfig, condition, has_condition, pool_manifest,
};
use maos_operator::checkpoint::snapshot;
use maos_operator::checkpoint::store::hex_sha256;

/// Long enough for a whole Task on a loaded 2-core machine.
const TASK_DEADLINE: Duration = Duration::from_secs(180);
const CHECKPOINT_DEADLINE: Duration = Duration::from_secs(60);

fn finished(task: &Task) -> bool {
    condition(task, "Succeeded").is_some_and(|c| c.status != "Unknown")
}

fn succeeded(task: &Task) -> bool {
    has_condition(task, "Succeeded", "True", Some("Completed"))
}

/// A stack with S3 and the pool `work` of `agents` agents.
async fn stack_with_pool(config: StackConfig, agents: u32) -> Stack {
    let stack = Stack::start(config.s3()).await.expect("the stack starts");
    stack
        .apply(&pool_manifest("work", agents, agents))
        .expect("apply the pool");
    stack
}

fn task_manifest(name: &str, pool: &str, subtasks: &[(&str, &[&str])], extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: maos.dev/v1alpha1
kind: Task
metadata:
  name: {name}
spec:
  prompt: Write a short report in parts.
  poolRef: {{name: {pool}}}
  synthesize: true
{extra}  subtasks:
"
    );
    for (subtask, deps) in subtasks {
        yaml.push_str(&format!(
            "  - name: {subtask}\n    prompt: Write part {subtask}.\n    dependsOn: [{}]\n",
            deps.join(", ")
        ));
    }
    yaml
}

fn checkpoint_manifest(name: &str, task: &str, bucket: Option<&str>) -> String {
    let storage = bucket.map_or(String::new(), |b| format!("  storage: {{bucket: {b}}}\n"));
    format!(
        "apiVersion: maos.dev/v1alpha1
kind: Checkpoint
metadata:
  name: {name}
spec:
  taskRef: {{name: {task}}}
{storage}"
    )
}

async fn checkpoint(stack: &Stack, name: &str) -> Option<Checkpoint> {
    let api: Api<Checkpoint> = Api::namespaced(stack.client(), stack.namespace());
    api.get_opt(name).await.expect("get Checkpoint")
}

/// Waits until Checkpoint `name` is Saved or Failed.
async fn wait_checkpoint(stack: &Stack, name: &str) -> Checkpoint {
    stack
        .wait_until(
            &format!("Checkpoint {name} Saved or Failed"),
            CHECKPOINT_DEADLINE,
            || async {
                checkpoint(stack, name).await.filter(|c| {
                    matches!(
                        c.status.as_ref().and_then(|s| s.phase),
                        Some(CheckpointPhase::Saved | CheckpointPhase::Failed)
                    )
                })
            },
        )
        .await
}

fn keys_of(task: &Task) -> TaskKeys {
    let status = task.status.as_ref().expect("status");
    let pool = PoolUid::new(status.pool_uid.as_deref().expect("poolUID")).expect("pool uid");
    let uid = TaskUid::new(task.metadata.uid.as_deref().expect("uid")).expect("task uid");
    PoolKeys::new(&pool).task(&uid)
}

async fn live_dump(stack: &Stack, task: &Task) -> TaskDump {
    dump::read(&stack.redis().await.expect("redis"), &keys_of(task))
        .await
        .expect("read the task's keys")
}

async fn object_bytes(stack: &Stack, key: &str) -> Option<Vec<u8>> {
    let s3 = stack.s3().expect("the stack has S3");
    s3.object(CHECKPOINT_BUCKET, key).await.expect("GetObject")
}

async fn objects_under(stack: &Stack, prefix: &str) -> Vec<String> {
    let s3 = stack.s3().expect("the stack has S3");
    let listed = s3
        .client()
        .list_objects_v2()
        .bucket(CHECKPOINT_BUCKET)
        .prefix(prefix)
        .send()
        .await
        .expect("list objects");
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

/// The keys whose content a restore must reproduce exactly (`meta` names the new Task, and the
/// event groups' positions move as the new operator folds).
fn data_keys(dump: &TaskDump) -> Vec<(String, KeyDump)> {
    dump.keys
        .iter()
        .filter(|(name, _)| name.as_str() != "meta")
        .map(|(name, value)| {
            let value = match value {
                KeyDump::Stream { entries, .. } => KeyDump::Stream {
                    entries: entries.clone(),
                    last_id: String::new(),
                    groups: Default::default(),
                },
                other => other.clone(),
            };
            (name.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_checkpoint_resumes_a_deleted_task_byte_for_byte_and_goes_with_its_object() {
    let stack = stack_with_pool(StackConfig::new("e2e-ckpt-resume"), 2).await;
    stack
        .apply(&task_manifest(
            "source",
            "work",
            &[("intro", &[]), ("body", &["intro"])],
            "",
        ))
        .expect("apply the task");
    let source = stack
        .wait_task("source", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&source), "{:?}", source.status);
    let result = source
        .status
        .as_ref()
        .and_then(|s| s.result.clone())
        .expect("a result");
    let live = live_dump(&stack, &source).await;

    stack
        .apply(&checkpoint_manifest("source-done", "source", None))
        .expect("apply the checkpoint");
    let saved = wait_checkpoint(&stack, "source-done").await;
    let status = saved.status.clone().expect("status");
    assert_eq!(status.phase, Some(CheckpointPhase::Saved), "{status:?}");
    let key = format!("{}/source/source-done.json.zst", stack.namespace());
    assert_eq!(
        status.location.as_deref(),
        Some(format!("s3://{CHECKPOINT_BUCKET}/{key}").as_str())
    );
    assert_eq!(status.task_uid, source.metadata.uid);
    assert!(status.saved_at.is_some() && status.duration_ms.is_some());
    let bytes = object_bytes(&stack, &key).await.expect("the object exists");
    assert_eq!(status.size_bytes, Some(bytes.len() as u64));
    assert_eq!(status.sha256.as_deref(), Some(hex_sha256(&bytes).as_str()));
    let stored = snapshot::decode(bytes.as_slice()).expect("a readable snapshot");
    assert_eq!(status.entries, Some(stored.state.entries()));
    assert!(stored.state.entries() > 10, "{:?}", stored.state.entries());
    assert_eq!(
        stored.state, live,
        "the snapshot holds exactly the live keys"
    );
    assert_eq!(stored.spec, source.spec);
    assert_eq!(
        snapshot::encode(&stored, Vec::new()).expect("encode"),
        bytes,
        "the same state encodes to the same bytes"
    );
    let columns = stack
        .kubectl(&["get", "ckpt", "source-done"], None)
        .expect("kubectl get ckpt");
    assert!(
        columns.contains("Saved") && columns.contains("source"),
        "{columns}"
    );

    // The Task goes, with all of its keys; its Checkpoint stays.
    stack
        .kubectl(&["delete", "mtask", "source", "--wait=true"], None)
        .expect("delete the task");
    let uid = source.metadata.uid.clone().expect("uid");
    stack
        .wait_until("the source task's keys removed", TASK_DEADLINE, || async {
            stack
                .keys_matching(&format!("*{{task:{uid}}}*"))
                .await
                .expect("scan")
                .is_empty()
                .then_some(())
        })
        .await;
    let calls_before = stack.standin().requests().len();

    stack
        .apply(&task_manifest(
            "copy",
            "work",
            &[("intro", &[]), ("body", &["intro"])],
            "  resumeFrom: {checkpoint: source-done}\n",
        ))
        .expect("apply the resumed task");
    let copy = stack
        .wait_task("copy", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&copy), "{:?}", copy.status);
    let copy_status = copy.status.as_ref().expect("status");
    assert_eq!(copy_status.result.as_deref(), Some(result.as_str()));
    assert!(
        has_condition(&copy, "Accepted", "True", Some("Resumed")),
        "{:?}",
        copy_status.conditions
    );
    assert!(
        copy_status
            .subtasks
            .iter()
            .all(|s| s.phase == SubtaskPhase::Succeeded)
    );
    assert_eq!(
        stack.standin().requests().len(),
        calls_before,
        "a finished Task resumes without a single model call"
    );
    let restored = live_dump(&stack, &copy).await;
    assert_eq!(
        data_keys(&restored),
        data_keys(&stored.state),
        "the restored state is the saved state, byte for byte"
    );
    let events = stack.events_for("Task", "copy").await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Resumed")),
        "{events:?}"
    );
    let config_map = stack
        .kubectl(
            &[
                "get",
                "configmap",
                "copy-result",
                "-o",
                "jsonpath={.data.result}",
            ],
            None,
        )
        .expect("the resumed Task's result ConfigMap");
    assert_eq!(config_map.trim(), result.trim());

    // Deleting the Checkpoint deletes its object.
    stack
        .kubectl(&["delete", "ckpt", "source-done", "--wait=true"], None)
        .expect("delete the checkpoint");
    assert!(checkpoint(&stack, "source-done").await.is_none());
    assert_eq!(object_bytes(&stack, &key).await, None, "the object is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_restores_nothing_and_a_missing_bucket_fails_the_checkpoint() {
    let stack = stack_with_pool(StackConfig::new("e2e-ckpt-corrupt"), 1).await;
    stack
        .apply(&task_manifest("origin", "work", &[("only", &[])], ""))
        .expect("apply the task");
    let origin = stack
        .wait_task("origin", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&origin), "{:?}", origin.status);

    // A bucket that does not exist: Failed, naming it.
    stack
        .apply(&checkpoint_manifest(
            "nowhere",
            "origin",
            Some("no-such-bucket"),
        ))
        .expect("apply the checkpoint");
    let failed = wait_checkpoint(&stack, "nowhere").await;
    let status = failed.status.clone().expect("status");
    assert_eq!(status.phase, Some(CheckpointPhase::Failed));
    let succeeded_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .expect("Succeeded condition");
    assert_eq!(succeeded_condition.status, "False");
    assert_eq!(succeeded_condition.reason, "BucketNotFound");
    assert!(
        succeeded_condition.message.contains("no-such-bucket"),
        "{}",
        succeeded_condition.message
    );
    // A Checkpoint of a Task that does not exist fails too.
    stack
        .apply(&checkpoint_manifest("orphan", "no-such-task", None))
        .expect("apply the checkpoint");
    let orphan = wait_checkpoint(&stack, "orphan").await;
    assert!(
        orphan
            .status
            .as_ref()
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "TaskNotFound")),
        "{:?}",
        orphan.status
    );

    // A good checkpoint whose object is then changed.
    stack
        .apply(&checkpoint_manifest("good", "origin", None))
        .expect("apply the checkpoint");
    let good = wait_checkpoint(&stack, "good").await;
    assert_eq!(
        good.status.as_ref().and_then(|s| s.phase),
        Some(CheckpointPhase::Saved)
    );
    let key = format!("{}/origin/good.json.zst", stack.namespace());
    let mut bytes = object_bytes(&stack, &key).await.expect("the object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    stack
        .s3()
        .expect("s3")
        .client()
        .put_object()
        .bucket(CHECKPOINT_BUCKET)
        .key(&key)
        .body(bytes.into())
        .send()
        .await
        .expect("overwrite the object");

    stack
        .apply(&task_manifest(
            "from-corrupt",
            "work",
            &[("only", &[])],
            "  resumeFrom: {checkpoint: good}\n",
        ))
        .expect("apply the resumed task");
    let task = stack
        .wait_task("from-corrupt", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        has_condition(&task, "Succeeded", "False", Some("CheckpointCorrupt")),
        "{:?}",
        task.status
    );
    let message = &condition(&task, "Succeeded").expect("condition").message;
    assert!(
        message.contains("sha256") && message.contains("nothing was restored"),
        "{message}"
    );
    let uid = task.metadata.uid.clone().expect("uid");
    assert_eq!(
        stack
            .keys_matching(&format!("*{{task:{uid}}}*"))
            .await
            .expect("scan"),
        Vec::<String>::new(),
        "nothing of the corrupt snapshot reached Redis"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_storage_credentials_fail_the_checkpoint_with_access_denied() {
    let stack = stack_with_pool(
        StackConfig::new("e2e-ckpt-denied").operator_env("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        1,
    )
    .await;
    stack
        .apply(&task_manifest("guarded", "work", &[("only", &[])], ""))
        .expect("apply the task");
    stack
        .wait_task("guarded", "registered", TASK_DEADLINE, |t| {
            t.status.as_ref().is_some_and(|s| s.pool_uid.is_some())
        })
        .await;
    stack
        .apply(&checkpoint_manifest("denied", "guarded", None))
        .expect("apply the checkpoint");
    let denied = wait_checkpoint(&stack, "denied").await;
    let status = denied.status.clone().expect("status");
    assert_eq!(status.phase, Some(CheckpointPhase::Failed));
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .expect("condition");
    assert_eq!(failed.reason, "AccessDenied", "{failed:?}");
    assert!(failed.message.contains("credentials"), "{}", failed.message);
    let events = stack
        .events_for("Checkpoint", "denied")
        .await
        .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("AccessDenied")
                && e.type_.as_deref() == Some("Warning")),
        "{events:?}"
    );
}

/// A chain of `n` subtasks.
fn chain(n: usize) -> Vec<(String, Vec<String>)> {
    (1..=n)
        .map(|i| {
            let deps = if i == 1 {
                vec![]
            } else {
                vec![format!("step-{}", i - 1)]
            };
            (format!("step-{i}"), deps)
        })
        .collect()
}

fn chain_manifest(name: &str, n: usize, extra: &str) -> String {
    let owned = chain(n);
    let borrowed: Vec<(&str, Vec<&str>)> = owned
        .iter()
        .map(|(s, d)| (s.as_str(), d.iter().map(String::as_str).collect()))
        .collect();
    let refs: Vec<(&str, &[&str])> = borrowed.iter().map(|(s, d)| (*s, d.as_slice())).collect();
    task_manifest(name, "work", &refs, extra)
}

async fn periodic_checkpoints(stack: &Stack, task: &str) -> Vec<Checkpoint> {
    let api: Api<Checkpoint> = Api::namespaced(stack.client(), stack.namespace());
    let mut list = api
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("{}={task}", maos_core::meta::LABEL_TASK)),
        )
        .await
        .expect("list checkpoints")
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checkpoints_keep_the_newest_three_crs_and_objects() {
    let stack = stack_with_pool(
        StackConfig::new("e2e-ckpt-periodic").claude_latency(Duration::from_millis(700)),
        1,
    )
    .await;
    stack
        .apply(&chain_manifest(
            "long",
            8,
            "  checkpoint: {intervalSeconds: 5, keep: 3}\n",
        ))
        .expect("apply the task");
    let task = stack
        .wait_task("long", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&task), "{:?}", task.status);

    let prefix = format!("{}/long/", stack.namespace());
    let kept = stack
        .wait_until(
            "exactly 3 Saved checkpoints and 3 objects",
            CHECKPOINT_DEADLINE,
            || async {
                let crs = periodic_checkpoints(&stack, "long").await;
                let objects = objects_under(&stack, &prefix).await;
                let all_saved = crs.iter().all(|c| {
                    c.status.as_ref().and_then(|s| s.phase) == Some(CheckpointPhase::Saved)
                });
                (crs.len() == 3 && objects.len() == 3 && all_saved).then_some((crs, objects))
            },
        )
        .await;
    let (crs, objects) = kept;
    let names: Vec<String> = crs.iter().filter_map(|c| c.metadata.name.clone()).collect();
    assert!(
        names.iter().all(|n| n.starts_with("long-ckpt-")),
        "{names:?}"
    );
    assert_ne!(
        names[0], "long-ckpt-00001",
        "older checkpoints were pruned: {names:?}"
    );
    let expected_objects: Vec<String> = names
        .iter()
        .map(|n| format!("{prefix}{n}.json.zst"))
        .collect();
    assert_eq!(objects, expected_objects);
    for c in &crs {
        let owner = c.metadata.owner_references.as_ref().expect("owned");
        assert_eq!(owner[0].uid, task.metadata.uid.clone().expect("uid"));
    }
    let newest = names.last().cloned().expect("a newest");
    let task = stack
        .wait_task(
            "long",
            "lastCheckpoint is the newest",
            CHECKPOINT_DEADLINE,
            |t| {
                t.status
                    .as_ref()
                    .and_then(|s| s.last_checkpoint.as_ref())
                    .is_some_and(|l| l.name == newest)
            },
        )
        .await;
    assert!(succeeded(&task));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_redis_state_is_flushed_is_restored_from_its_checkpoint_and_completes() {
    let stack = stack_with_pool(
        StackConfig::new("e2e-ckpt-flush").claude_latency(Duration::from_millis(700)),
        1,
    )
    .await;
    stack
        .apply(&chain_manifest(
            "survivor",
            6,
            "  checkpoint: {intervalSeconds: 5, keep: 2}\n",
        ))
        .expect("apply the task");
    // Flushed once a checkpoint holds finished work and more is running.
    let before = stack
        .wait_task(
            "survivor",
            "a checkpoint after step-1 and step-2 running",
            TASK_DEADLINE,
            |t| {
                let Some(status) = t.status.as_ref() else {
                    return false;
                };
                let phase = |name: &str| {
                    status
                        .subtasks
                        .iter()
                        .find(|s| s.name == name)
                        .map(|s| s.phase)
                };
                status.last_checkpoint.is_some()
                    && phase("step-1") == Some(SubtaskPhase::Succeeded)
                    && phase("step-3") != Some(SubtaskPhase::Succeeded)
            },
        )
        .await;
    assert!(!finished(&before));
    stack.flush_redis().await.expect("FLUSHALL");

    let task = stack
        .wait_task("survivor", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(
        succeeded(&task),
        "the Task completes after the restore: {:?}",
        task.status
    );
    let events = stack.events_for("Task", "survivor").await.expect("events");
    let restored = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("StateRestored"))
        .unwrap_or_else(|| panic!("a StateRestored Event: {events:?}"));
    let note = restored.message.clone().unwrap_or_default();
    assert!(
        note.contains("restored from Checkpoint survivor-ckpt-"),
        "{note}"
    );
    assert!(
        task.status
            .as_ref()
            .is_some_and(|s| s.result.as_deref().is_some_and(|r| !r.is_empty()))
    );
}

/// Messages in a recorded model request.
fn message_count(request: &maos_e2e::claude_standin::RecordedRequest) -> usize {
    request
        .body
        .as_ref()
        .and_then(|b| b.get("messages"))
        .and_then(|m| m.as_array())
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_taken_mid_subtask_resumes_a_new_task_that_continues_the_conversation() {
    const STEP_2: &str = "Write part step-2.";
    let stack = stack_with_pool(
        StackConfig::new("e2e-ckpt-midway")
            // Slow calls, so the snapshot lands well inside step-2's conversation.
            .claude_latency(Duration::from_millis(2500)),
        1,
    )
    .await;
    stack
        .apply(&chain_manifest("midway", 3, ""))
        .expect("apply the task");
    stack
        .wait_until("step-2's second model call", TASK_DEADLINE, || async {
            (stack.model_requests_mentioning(STEP_2).len() >= 2).then_some(())
        })
        .await;
    stack
        .apply(&checkpoint_manifest("midway-now", "midway", None))
        .expect("apply the checkpoint");
    let saved = wait_checkpoint(&stack, "midway-now").await;
    assert_eq!(
        saved.status.as_ref().and_then(|s| s.phase),
        Some(CheckpointPhase::Saved),
        "{:?}",
        saved.status
    );
    let key = format!("{}/midway/midway-now.json.zst", stack.namespace());
    let stored = snapshot::decode(
        object_bytes(&stack, &key)
            .await
            .expect("the object")
            .as_slice(),
    )
    .expect("a snapshot");
    let journaled = match stored.state.keys.get("journal:step-2") {
        Some(KeyDump::Stream { entries, .. }) => entries.len(),
        other => panic!("step-2's journal is in the snapshot: {other:?}"),
    };
    assert!(
        journaled >= 2,
        "an opening and a model response: {journaled}"
    );
    let step_2_done = matches!(stored.state.keys.get("results"),
        Some(KeyDump::Hash { fields }) if fields.contains_key("step-2"));
    assert!(!step_2_done, "the snapshot was taken while step-2 ran");

    // The source goes; a new Task resumes from the snapshot.
    stack
        .kubectl(&["delete", "mtask", "midway", "--wait=true"], None)
        .expect("delete the task");
    let calls_before = stack.standin().requests().len();
    stack
        .apply(&chain_manifest(
            "midway-2",
            3,
            "  resumeFrom: {checkpoint: midway-now}\n",
        ))
        .expect("apply the resumed task");
    let task = stack
        .wait_task("midway-2", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&task), "{:?}", task.status);
    let step_1 = task
        .status
        .as_ref()
        .and_then(|s| s.subtasks.iter().find(|s| s.name == "step-1"))
        .expect("step-1");
    let step_1_before = stored
        .status
        .subtasks
        .iter()
        .find(|s| s.name == "step-1")
        .expect("step-1 in the snapshot");
    assert_eq!(
        (step_1.attempts, &step_1.agent),
        (step_1_before.attempts, &step_1_before.agent),
        "step-1 was not run again"
    );
    let resumed_calls: Vec<_> = stack.standin().requests()[calls_before..]
        .iter()
        .filter(|r| maos_e2e::stack::conversation_text(r).contains(STEP_2))
        .cloned()
        .collect();
    let first = resumed_calls
        .first()
        .expect("step-2 called the model again");
    assert!(
        message_count(first) >= 3,
        "step-2 continued its journaled conversation ({} messages in its first call)",
        message_count(first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_whose_task_means_something_else_is_refused_unless_allowed() {
    let stack = stack_with_pool(StackConfig::new("e2e-ckpt-mismatch"), 2).await;
    stack
        .apply(&task_manifest("origin", "work", &[("intro", &[])], ""))
        .expect("apply the task");
    let origin = stack
        .wait_task("origin", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&origin), "{:?}", origin.status);
    stack
        .apply(&checkpoint_manifest("origin-done", "origin", None))
        .expect("apply the checkpoint");
    wait_checkpoint(&stack, "origin-done").await;

    let other = |name: &str, allow: bool| {
        format!(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {{name: {name}}}
spec:
  prompt: Plan a garden.
  poolRef: {{name: work}}
  synthesize: true
  resumeFrom: {{checkpoint: origin-done, allowSpecChange: {allow}}}
  subtasks:
  - {{name: intro, prompt: Write part intro.}}
"
        )
    };
    stack
        .apply(&other("elsewhere", false))
        .expect("apply a task with another goal");
    let refused = stack
        .wait_task("elsewhere", "finished", TASK_DEADLINE, finished)
        .await;
    let succeeded_condition = condition(&refused, "Succeeded").expect("Succeeded");
    assert_eq!(
        (
            succeeded_condition.status.as_str(),
            succeeded_condition.reason.as_str()
        ),
        ("False", "CheckpointMismatch"),
        "{succeeded_condition:?}"
    );
    assert!(
        succeeded_condition.message.contains("spec.prompt")
            && succeeded_condition.message.contains("Task origin")
            && succeeded_condition.message.contains("allowSpecChange"),
        "{}",
        succeeded_condition.message
    );
    let uid = refused.metadata.uid.clone().expect("uid");
    assert!(
        stack
            .keys_matching(&format!("*{{task:{uid}}}*"))
            .await
            .expect("scan")
            .is_empty(),
        "a refused resume restores nothing"
    );

    stack
        .apply(&other("allowed", true))
        .expect("apply the same with allowSpecChange");
    let allowed = stack
        .wait_task("allowed", "finished", TASK_DEADLINE, finished)
        .await;
    assert!(succeeded(&allowed), "{:?}", allowed.status);
    assert!(
        has_condition(&allowed, "Accepted", "True", Some("Resumed")),
        "{:?}",
        allowed.status
    );
}
