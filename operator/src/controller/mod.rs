//! The controllers, in the kube-rs shape: one reconciler per kind reads the world, calls the
//! pure decisions (`lifecycle`, `scheduler`, `status`, `autoscale`) and applies what they
//! decide. [`Context`] carries what every reconcile needs.

mod backoff;
mod cached_read;
pub mod checkpoint;
mod checkpoint_state;
mod event_pump;
mod expectations;
mod newest_checkpoints;
pub mod orphans;
mod owned;
pub mod pool;
mod result;
pub mod task;
mod task_checkpoints;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use maos_core::coord::{CoordError, Redis};

use crate::metrics::Metrics;
use crate::pod::{AgentEnvironment, PodError};
use maos_core::price::PriceTable;

/// Name of the operator in Events and field managers.
pub const CONTROLLER_NAME: &str = "maos-operator";

/// Settings the controllers run with, from the operator's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where and how agent pods reach Redis and Claude.
    pub agents: AgentEnvironment,
    /// Model prices for `status.usage.costUSD`.
    pub prices: PriceTable,
    /// Shortest time between two status writes of one Task (phase changes go out at once).
    pub status_interval: Duration,
    /// How long a deleted Task waits for agents still working it before its keys go anyway.
    pub cleanup_grace: Duration,
    /// How long a deleted Task or AgentPool waits for an unreachable Redis before it goes.
    pub cleanup_timeout: Duration,
    /// Where objects let go while Redis was unreachable are written down.
    pub orphans: Arc<orphans::Orphans>,
    /// How long a finished Task keeps its conversations, events and messages in Redis.
    pub finished_task_retention: Duration,
    /// Where checkpoints are stored.
    pub store: crate::checkpoint::store::Store,
}

/// The reflectors' stores the controllers read instead of asking the API server.
pub struct Caches {
    /// Every AgentPool in scope.
    pub pools: kube::runtime::reflector::Store<maos_core::api::v1alpha1::AgentPool>,
    /// Every pod labelled with a pool, in scope.
    pub pods: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
}

/// What every reconcile needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The operator's Redis connection (its own ACL user reaches every key).
    pub redis: Redis,
    /// Settings.
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Task uid → its newest Saved Checkpoint, kept by the Checkpoint controller for the
    /// Tasks' `status.lastCheckpoint`. Decisions that must not act on what this process has
    /// seen so far (recovery, pruning) list from the API instead.
    pub(crate) newest_checkpoints: Mutex<HashMap<String, maos_core::api::v1alpha1::LastCheckpoint>>,
    /// Per-Task memory between reconciles (the working status, the event pump).
    pub(crate) tasks: Mutex<HashMap<String, task::TaskMemory>>,
    /// Tasks (`<namespace>/<name>`) a Checkpoint is reading (status, then keys), with how many
    /// readers: their event streams are not trimmed meanwhile, so a snapshot holds every event
    /// after the status it stores.
    pub(crate) checkpoint_reads: Mutex<HashMap<String, usize>>,
    /// Per-pool memory between reconciles (idle times).
    pub(crate) pools: Mutex<HashMap<String, pool::PoolMemory>>,
    /// Every AgentPool, kept by a reflector: a Task's pool, whether it still exists and whether
    /// it can run agents.
    pub(crate) pool_cache: kube::runtime::reflector::Store<maos_core::api::v1alpha1::AgentPool>,
    /// Every agent pod (labelled with its pool), kept by the pool controller's pod watch: the
    /// pool controller reads its pods here, not from the API, on each heartbeat.
    pub(crate) pod_cache: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Pod>,
    /// Consecutive reconcile failures per object, for the error policy's backoff.
    pub(crate) backoff: backoff::Backoff,
    /// The running Tasks that wake-ups may name (see [`event_pump`]).
    pub(crate) wakes: Arc<event_pump::Registry>,
    /// Wakes the Task controller for one Task (event pumps send here).
    pub(crate) wake: futures::channel::mpsc::UnboundedSender<
        kube::runtime::reflector::ObjectRef<maos_core::api::v1alpha1::Task>,
    >,
}

impl Context {
    /// A context; `wake` feeds the Task controller's `reconcile_on`.
    pub fn new(
        client: kube::Client,
        redis: Redis,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
        wake: futures::channel::mpsc::UnboundedSender<
            kube::runtime::reflector::ObjectRef<maos_core::api::v1alpha1::Task>,
        >,
        caches: Caches,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.to_owned(),
                instance,
            },
        );
        Self {
            client,
            redis,
            settings,
            metrics,
            recorder,
            newest_checkpoints: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            checkpoint_reads: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            pool_cache: caches.pools,
            pod_cache: caches.pods,
            backoff: backoff::Backoff::default(),
            wakes: Arc::default(),
            wake,
        }
    }

    /// Forwards wake-ups from Redis to the Task controller until the controller is gone: run
    /// it beside the controllers, one per context.
    pub fn wake_ups(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        event_pump::listen(
            self.redis.clone(),
            Arc::clone(&self.wakes),
            self.wake.clone(),
        )
    }

    /// Marks Task `namespace`/`name` as read by a Checkpoint until the guard is dropped.
    pub(crate) fn checkpoint_read(&self, namespace: &str, name: &str) -> CheckpointRead<'_> {
        let task = format!("{namespace}/{name}");
        if let Ok(mut reads) = self.checkpoint_reads.lock() {
            *reads.entry(task.clone()).or_default() += 1;
        }
        CheckpointRead { ctx: self, task }
    }

    /// Whether a Checkpoint is reading Task `namespace`/`name` now.
    pub(crate) fn checkpoint_reading(&self, namespace: &str, name: &str) -> bool {
        self.checkpoint_reads.lock().map_or(true, |reads| {
            reads.contains_key(&format!("{namespace}/{name}"))
        })
    }

    /// Where checkpoints are stored.
    pub fn store(&self) -> &crate::checkpoint::store::Store {
        &self.settings.store
    }

    /// Publishes an Event about `object`; a failure is logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let reference: ObjectReference = object.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %err, reason, "publishing an Event failed");
        }
    }
}

/// A Checkpoint's read of one Task, from before its status is read until its keys are: the
/// Task's events are not trimmed while it lives.
pub(crate) struct CheckpointRead<'a> {
    ctx: &'a Context,
    task: String,
}

impl Drop for CheckpointRead<'_> {
    fn drop(&mut self) {
        if let Ok(mut reads) = self.ctx.checkpoint_reads.lock()
            && let Some(count) = reads.get_mut(&self.task)
        {
            *count -= 1;
            if *count == 0 {
                reads.remove(&self.task);
            }
        }
    }
}

/// Why a reconcile failed; the variant name is the metric label and the log's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Redis failed a call (after the coordination layer's own retries).
    #[error("Redis: {0}")]
    Coord(#[from] CoordError),
    /// Adding or removing a finalizer failed, or the work inside it did.
    #[error("{0}")]
    Finalizer(String),
    /// The object lacks metadata the API server always sets.
    #[error("the object has no {0}; was it read from the API server?")]
    MissingMetadata(&'static str),
    /// An agent pod could not be built.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// A subtask name is not a valid DNS label (only a bug can make one of MAOS's own names so).
    #[error("subtask name: {0}")]
    Name(#[from] maos_core::dag::NameError),
    /// Object storage failed a call.
    #[error("checkpoint storage: {0}")]
    Store(#[from] crate::checkpoint::store::StoreError),
    /// Redis did not answer a deleted object's cleanup before its cleanup timeout.
    #[error("Redis did not answer the cleanup within {0:?}")]
    CleanupTimedOut(Duration),
    /// A deleted Task is still worked by an agent; its keys go once the agent stops.
    #[error("agents still work Task {0}; waiting before its keys are removed")]
    AgentsStillWorking(String),
}

impl Error {
    /// A short CamelCase label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Coord(err) => err.reason(),
            Error::Finalizer(_) => "Finalizer",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Pod(_) => "PodTemplate",
            Error::Name(_) => "InvalidName",
            Error::AgentsStillWorking(_) => "AgentsStillWorking",
            Error::CleanupTimedOut(_) => "CleanupTimedOut",
            Error::Store(err) => err.reason(),
        }
    }

    /// How long to wait before the first retry (later ones back off from it).
    pub fn retry_after(&self) -> Duration {
        match self {
            Error::AgentsStillWorking(_) => Duration::from_secs(1),
            Error::Coord(_) => Duration::from_secs(2),
            Error::Store(_) => Duration::from_secs(10),
            _ => Duration::from_secs(5),
        }
    }
}

/// The span one reconcile runs in: the controller, the object and its generation, and a
/// random reconcile id that ties the reconcile's log lines together (controller-rs records an
/// OpenTelemetry trace id there; the operator exports no traces, so an id of its own serves).
pub(crate) fn reconcile_span<K: Resource>(controller: &'static str, object: &K) -> tracing::Span {
    let meta = object.meta();
    tracing::info_span!(
        "reconcile",
        controller,
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        object = meta.name.as_deref().unwrap_or_default(),
        generation = meta.generation.unwrap_or_default(),
        reconcile_id = %format_args!("{:016x}", fastrand::u64(..)),
    )
}

/// Turns kube-runtime's finalizer error into ours, keeping the inner error's message.
pub(crate) fn from_finalizer(err: kube::runtime::finalizer::Error<Error>) -> Error {
    use kube::runtime::finalizer::Error as F;
    match err {
        F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
        other => Error::Finalizer(other.to_string()),
    }
}

/// The error policy of both controllers: log, count, and try again later.
pub fn error_policy<K>(controller: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action
where
    K: Resource,
{
    move |object, error, ctx| {
        let name = object.meta().name.clone().unwrap_or_default();
        match error {
            Error::AgentsStillWorking(_) => {
                tracing::debug!(controller, object = %name, "{error}")
            }
            _ => {
                tracing::warn!(controller, object = %name, reason = error.reason(), "reconcile failed: {error}")
            }
        }
        ctx.metrics.reconcile_error(controller, error.reason());
        match error {
            // Waiting for agents to let go is not a failure: polled at its own pace.
            Error::AgentsStillWorking(_) => Action::requeue(error.retry_after()),
            _ => {
                let uid = object.meta().uid.clone().unwrap_or(name);
                Action::requeue(ctx.backoff.failed(&uid, error.retry_after()))
            }
        }
    }
}

/// Records a reconcile's outcome for the error policy's backoff: a success starts it over.
pub(crate) fn note_outcome<T>(ctx: &Context, uid: Option<&str>, result: &Result<T, Error>) {
    if let (Some(uid), Ok(_)) = (uid, result) {
        ctx.backoff.succeeded(uid);
    }
}

/// The current time.
pub(crate) fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}
