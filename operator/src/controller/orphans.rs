//! Cleanup that could not wait: a deleted Task or AgentPool whose Redis keys could not be removed
//! within the cleanup timeout (Redis unreachable) is let go rather than held by its finalizer,
//! and what it left is written down in a ConfigMap in the operator's namespace; a sweep removes
//! those keys once Redis answers again, and forgets each entry it cleaned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use maos_core::coord::acl::Acl;
use maos_core::coord::{CoordError, Pool, PoolUid, Redis, TaskUid};
use maos_core::meta::{LABEL_MANAGED_BY, MANAGED_BY};
use serde::{Deserialize, Serialize};

use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Context, Error, now};

/// How often the sweep looks again while orphans are written down.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// The least time one cleanup attempt gets, even past the timeout (an operator that was down
/// longer than the timeout still tries once before it lets an object go).
const LEAST_ATTEMPT: Duration = Duration::from_secs(10);

/// What a deleted object left in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Orphan {
    /// A Task's keys (and its work items in its pool's queue).
    #[serde(rename = "Task", rename_all = "camelCase")]
    Task {
        /// The Task's namespace.
        namespace: String,
        /// The Task's name.
        name: String,
        /// The Task's uid, which names its keys.
        task_uid: String,
        /// The uid of the pool it ran on, which names its queue.
        pool_uid: String,
        /// When it was let go.
        since: Timestamp,
    },
    /// An AgentPool's keys and its Redis ACL user.
    #[serde(rename = "AgentPool", rename_all = "camelCase")]
    Pool {
        /// The pool's namespace.
        namespace: String,
        /// The pool's name.
        name: String,
        /// The pool's uid, which names its keys and user.
        pool_uid: String,
        /// When it was let go.
        since: Timestamp,
    },
}

impl Orphan {
    /// Its key in the ConfigMap: kind and uid.
    fn key(&self) -> String {
        match self {
            Orphan::Task { task_uid, .. } => format!("task.{task_uid}"),
            Orphan::Pool { pool_uid, .. } => format!("pool.{pool_uid}"),
        }
    }

    /// Removes what it left; the number of keys removed.
    async fn remove(&self, redis: &Redis) -> Result<u64, Error> {
        match self {
            Orphan::Task {
                task_uid, pool_uid, ..
            } => remove_task_keys(redis, pool_uid, task_uid).await,
            Orphan::Pool { pool_uid, .. } => remove_pool_keys(redis, pool_uid).await,
        }
    }
}

/// Removes a Task's work items from its pool's queue and every key of the Task.
pub(crate) async fn remove_task_keys(
    redis: &Redis,
    pool_uid: &str,
    task_uid: &str,
) -> Result<u64, Error> {
    let pool = Pool::new(redis.clone(), &PoolUid::new(pool_uid)?);
    let task_uid = TaskUid::new(task_uid)?;
    pool.queue().purge_task(&task_uid).await?;
    Ok(pool.task(&task_uid).delete_all().await?)
}

/// Removes a pool's Redis ACL user and every key of the pool.
pub(crate) async fn remove_pool_keys(redis: &Redis, pool_uid: &str) -> Result<u64, Error> {
    let coord = Pool::new(redis.clone(), &PoolUid::new(pool_uid)?);
    Acl::new(redis.clone())
        .delete_pool_user(coord.keys())
        .await?;
    Ok(coord.delete_keys().await?)
}

/// Whether a deletion that began at `deleted_at` has waited for Redis longer than `timeout`
/// by `now`, so its object should be let go.
fn past_timeout(deleted_at: Timestamp, now: Timestamp, timeout: Duration) -> bool {
    let timeout = SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX);
    deleted_at
        .checked_add(timeout)
        .is_ok_and(|deadline| now >= deadline)
}

/// Runs a deleted object's Redis cleanup `work` until the object's cleanup deadline (and for at
/// least [`LEAST_ATTEMPT`]): a Redis that does not answer at all would otherwise keep one
/// attempt waiting through every retry of the coordination layer.
async fn bounded<T>(
    deleted_at: Timestamp,
    now: Timestamp,
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let left = SignedDuration::try_from(timeout)
        .ok()
        .and_then(|t| deleted_at.checked_add(t).ok())
        .map_or(Duration::MAX, |deadline| {
            Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO)
        })
        .max(LEAST_ATTEMPT);
    tokio::time::timeout(left, work)
        .await
        .unwrap_or(Err(Error::CleanupTimedOut(left)))
}

/// A deleted object's Redis cleanup: `work`, bounded by the object's cleanup deadline; when Redis
/// does not answer by then the object is let go instead of held by its finalizer (which would
/// block its namespace's deletion and every GitOps sync that removes it): `orphan` is written
/// down for the sweep, with a log line and a `CleanupAbandoned` Warning Event.
pub(crate) async fn clean_or_let_go<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    orphan: Orphan,
    work: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let timeout = ctx.settings.cleanup_timeout;
    let deleted_at = object
        .meta()
        .deletion_timestamp
        .as_ref()
        .map_or_else(now, |t| t.0);
    match bounded(deleted_at, now(), timeout, work).await {
        Err(error) if is_unreachable(&error) && past_timeout(deleted_at, now(), timeout) => {
            ctx.settings.orphans.record(&orphan).await?;
            let kind = K::kind(&());
            let message = format!(
                "Redis did not answer for {}s after the {kind} was deleted ({error}); it is let go and what it left in Redis is removed once Redis answers",
                timeout.as_secs()
            );
            let name = object.meta().name.as_deref().unwrap_or_default();
            tracing::warn!(%kind, object = name, "{message}");
            ctx.event(
                object,
                EventType::Warning,
                "CleanupAbandoned",
                "Cleanup",
                message,
            )
            .await;
            Ok(Action::await_change())
        }
        outcome => outcome,
    }
}

/// Whether `error` is Redis failing to answer (down, unreachable, failing over), the one kind
/// of failure letting an object go can work around.
fn is_unreachable(error: &Error) -> bool {
    matches!(
        error,
        Error::Coord(CoordError::ConnectionLost { .. } | CoordError::ClusterUnavailable { .. })
            | Error::CleanupTimedOut(_)
    )
}

/// The orphans ConfigMap of this operator.
pub struct Orphans {
    api: Api<ConfigMap>,
    name: String,
    /// Whether entries may be written down: read at start and after each recording, so an
    /// operator with nothing orphaned asks the API server nothing.
    pending: AtomicBool,
}

impl std::fmt::Debug for Orphans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orphans")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Orphans {
    /// The ConfigMap `name` in `namespace` (the operator's own).
    pub fn new(client: kube::Client, namespace: &str, name: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            pending: AtomicBool::new(true),
        }
    }

    /// Writes `orphan` down (creating the ConfigMap if it is missing).
    pub async fn record(&self, orphan: &Orphan) -> Result<(), Error> {
        let value = serde_json::to_string(orphan).unwrap_or_default();
        let patch = serde_json::json!({ "data": { orphan.key(): value } });
        self.pending.store(true, Ordering::SeqCst);
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some(BTreeMap::from([(
                            LABEL_MANAGED_BY.to_owned(),
                            MANAGED_BY.to_owned(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(orphan.key(), value)])),
                    ..ConfigMap::default()
                };
                match self.api.create(&PostParams::default(), &map).await {
                    Ok(_) => Ok(()),
                    // Created meanwhile by another recording: add the entry to it.
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        self.api
                            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await?;
                        Ok(())
                    }
                    Err(error) => Err(error.into()),
                }
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Removes the keys of every orphan written down and forgets those it cleaned; how many
    /// are left (those Redis still does not answer for, and entries it cannot read).
    pub async fn sweep(&self, redis: &Redis) -> Result<usize, Error> {
        if !self.pending.swap(false, Ordering::SeqCst) {
            return Ok(0);
        }
        let outcome = self.sweep_entries(redis).await;
        if !matches!(outcome, Ok(0)) {
            self.pending.store(true, Ordering::SeqCst);
        }
        outcome
    }

    async fn sweep_entries(&self, redis: &Redis) -> Result<usize, Error> {
        let Some(map) = self.api.get_opt(&self.name).await? else {
            return Ok(0);
        };
        let entries = map.data.unwrap_or_default();
        let mut left = 0;
        for (key, value) in &entries {
            let orphan: Orphan = match serde_json::from_str(value) {
                Ok(orphan) => orphan,
                Err(error) => {
                    tracing::warn!(%key, %error, "an entry of the orphans ConfigMap cannot be read; leaving it");
                    left += 1;
                    continue;
                }
            };
            match orphan.remove(redis).await {
                Ok(keys) => {
                    let forget = serde_json::json!({ "data": { key: null } });
                    self.api
                        .patch(&self.name, &PatchParams::default(), &Patch::Merge(&forget))
                        .await?;
                    tracing::info!(
                        ?orphan,
                        keys,
                        "swept the Redis keys of an object deleted while Redis was unreachable"
                    );
                }
                Err(error) => {
                    tracing::debug!(?orphan, %error, "orphaned keys not swept yet");
                    left += 1;
                }
            }
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).expect("valid timestamp")
    }

    #[test]
    fn an_object_is_let_go_once_it_waited_the_timeout() {
        let timeout = Duration::from_secs(600);
        assert!(!past_timeout(at(0), at(599), timeout));
        assert!(past_timeout(at(0), at(600), timeout));
        assert!(!past_timeout(at(0), at(0), Duration::MAX));
    }

    #[test]
    fn only_an_unreachable_redis_lets_an_object_go() {
        let lost = Error::Coord(CoordError::ConnectionLost {
            op: "task delete",
            source: redis::RedisError::from((redis::ErrorKind::Io, "refused")),
        });
        assert!(is_unreachable(&lost));
        assert!(!is_unreachable(&Error::MissingMetadata("uid")));
        assert!(!is_unreachable(&Error::AgentsStillWorking("t".into())));
    }

    #[test]
    fn an_orphan_is_written_with_its_kind_and_read_back() {
        let orphan = Orphan::Task {
            namespace: "team-a".into(),
            name: "research".into(),
            task_uid: "uid-1".into(),
            pool_uid: "uid-p".into(),
            since: at(0),
        };
        assert_eq!(orphan.key(), "task.uid-1");
        let text = serde_json::to_string(&orphan).expect("json");
        assert!(text.contains(r#""kind":"Task""#), "{text}");
        assert!(text.contains(r#""taskUid":"uid-1""#), "{text}");
        assert_eq!(serde_json::from_str::<Orphan>(&text).expect("back"), orphan);
    }
}
