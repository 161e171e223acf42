//! `Checkpoint`: a snapshot of one Task in object storage, to resume it on an empty Redis.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::schema;

/// The desired state of a Checkpoint: which Task to snapshot and where to store it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "maos.dev",
    version = "v1alpha1",
    kind = "Checkpoint",
    plural = "checkpoints",
    namespaced,
    status = "CheckpointStatus",
    derive = "PartialEq",
    shortname = "ckpt",
    category = "maos",
    doc = "A Checkpoint is a snapshot of one Task (spec, status, shared state, messages, journals and results) in S3-compatible storage, from which a Task can resume.",
    printcolumn(
        name = "Task",
        type_ = "string",
        json_path = ".spec.taskRef.name",
        description = "The Task snapshotted"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.sizeBytes",
        description = "Compressed size in bytes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Checkpoint's spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// The Task (in the Checkpoint's namespace) to snapshot.
    pub task_ref: TaskRef,

    /// Where the snapshot is stored; omitted fields come from the operator's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<CheckpointStorage>,
}

/// A reference to a Task in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    /// Name of the Task.
    #[schemars(length(min = 1, max = MAX_TASK_NAME_LEN))]
    pub name: String,
}

/// What a storage prefix may be: `/`-separated segments of `[A-Za-z0-9._-]`, none starting with
/// `.`, with no leading `/` and no empty segment.
pub const PREFIX_PATTERN: &str =
    r"^([A-Za-z0-9_-][A-Za-z0-9._-]*/)*([A-Za-z0-9_-][A-Za-z0-9._-]*)?$";

/// An S3 bucket and key prefix.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStorage {
    /// The S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63), pattern(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: Option<String>,

    /// The key prefix, e.g. `prod/`; the object is `<prefix><namespace>/<task>/<checkpoint>.json.zst`.
    /// Segments of letters, digits, `-`, `_` and `.` separated by `/`; a segment never starts
    /// with `.` (so no `..`), and the prefix never starts with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_PREFIX_LEN), pattern(PREFIX_PATTERN))]
    pub prefix: Option<String>,
}

/// The observed state of a Checkpoint, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// A one-word summary of the Succeeded condition, for printer columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CheckpointPhase>,

    /// The stored object, e.g. `s3://maos-checkpoints/prod/<ns>/<task>/<checkpoint>.json.zst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LOCATION_LEN))]
    pub location: Option<String>,

    /// Size of the stored (compressed) object in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,

    /// SHA-256 of the stored object, checked before anything is restored from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 64), pattern(r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,

    /// The uid of the Task snapshotted, so a Task recovers only from its own checkpoints (a
    /// later Task of the same name is another Task).
    #[serde(default, rename = "taskUID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LABEL_LEN))]
    pub task_uid: Option<String>,

    /// Number of Redis entries (state keys, messages, journal entries, results) in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,

    /// When the snapshot was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::time")]
    pub saved_at: Option<Time>,

    /// How long taking and storing the snapshot took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,

    /// Succeeded, in the standard Kubernetes form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// A one-word summary of a Checkpoint's Succeeded condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CheckpointPhase {
    /// Not yet started.
    Pending,
    /// The snapshot is being taken and stored.
    Saving,
    /// Stored and verified.
    Saved,
    /// Could not be taken or stored; the Succeeded condition says why.
    Failed,
}
