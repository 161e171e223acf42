//! The store behind a lock, and the fan-out of its changes to live watches: every write's
//! events are broadcast while the lock is held, so a watch that replays history and then
//! subscribes under the same lock sees every change exactly once, in order.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventType, Store, WatchEvent};

/// The shared store and its change feed.
pub struct Hub {
    store: Mutex<Store>,
    changes: broadcast::Sender<Arc<WatchEvent>>,
    expiry: tokio::sync::watch::Sender<u64>,
}

/// A watch's starting point: the retained changes to replay, then the live feed.
pub struct Subscription {
    /// Changes after the requested resourceVersion, oldest first.
    pub replay: Vec<Arc<WatchEvent>>,
    /// Changes from now on.
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// Changes when the test hook expires every watch (they must answer 410 and end).
    pub expiry: tokio::sync::watch::Receiver<u64>,
    /// The resourceVersion the watch is known to be current with.
    pub rv: u64,
}

impl Hub {
    /// A hub over `store`, buffering up to `capacity` changes per slow watcher.
    pub fn new(store: Store, capacity: usize) -> Self {
        let (changes, _) = broadcast::channel(capacity.max(16));
        let (expiry, _) = tokio::sync::watch::channel(0);
        Hub {
            store: Mutex::new(store),
            changes,
            expiry,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-written: every mutation
        // builds the new object first and inserts it last.
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs a read against the store.
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.lock())
    }

    /// Runs a write against the store and publishes the changes it made.
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let mut store = self.lock();
        let result = f(&mut store);
        for event in store.take_pending() {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(event);
        }
        result
    }

    /// Starts a watch after `rv`; `None` starts from now with nothing to replay.
    pub fn subscribe(&self, rv: Option<u64>) -> Result<Subscription, ApiError> {
        let store = self.lock();
        let current = store.resource_version();
        let replay = match rv {
            // A version from the future (e.g. from before a testbed restart) cannot be resumed
            // from: 410 makes the client relist, where a real server would time out.
            Some(rv) if rv > current => {
                return Err(ApiError::Gone(format!(
                    "too large resource version: {rv}, current: {current}"
                )));
            }
            Some(rv) => store.events_since(rv)?,
            None => Vec::new(),
        };
        Ok(Subscription {
            replay,
            live: self.changes.subscribe(),
            expiry: self.expiry.subscribe(),
            rv: rv.unwrap_or(current).max(current),
        })
    }

    /// Reads a snapshot with `read` and starts a watch from exactly that point, atomically.
    pub fn snapshot_and_subscribe<T>(&self, read: impl FnOnce(&Store) -> T) -> (T, Subscription) {
        let store = self.lock();
        let snapshot = read(&store);
        let subscription = Subscription {
            replay: Vec::new(),
            live: self.changes.subscribe(),
            expiry: self.expiry.subscribe(),
            rv: store.resource_version(),
        };
        (snapshot, subscription)
    }

    /// Test hook: drops the watch history and ends every open watch with 410 Gone, so clients
    /// must relist, as after an etcd compaction they could not keep up with.
    pub fn expire_watches(&self) {
        self.write(Store::compact);
        self.expiry.send_modify(|epoch| *epoch += 1);
    }
}

/// Which changes one watch wants.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    /// The resource's storage key.
    pub storage_key: String,
    /// The namespace, or all namespaces.
    pub namespace: Option<String>,
    /// Label selector.
    pub labels: LabelSelector,
    /// Field selector.
    pub fields: FieldSelector,
    /// The watch is on core/v1 Events: selectors see (and clients get) the core shape.
    pub core_events: bool,
}

impl WatchFilter {
    /// Whether an object passes the selectors.
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.core_events {
            let view = super::events::core_view(object);
            return self.labels.matches(&view) && self.fields.matches(&view);
        }
        self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watch should see for `event`, if any: an object that starts matching
    /// is `ADDED`, one that stops matching is `DELETED`, as kube-apiserver reports them.
    pub fn translate(&self, event: &WatchEvent) -> Option<EventType> {
        if event.storage_key != self.storage_key {
            return None;
        }
        if let Some(ns) = &self.namespace
            && *ns != event.namespace
        {
            return None;
        }
        let now = self.matches_object(&event.object);
        let before = event
            .previous
            .as_deref()
            .is_some_and(|p| self.matches_object(p));
        match event.event_type {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => (now || before).then_some(EventType::Deleted),
            EventType::Modified => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resource::builtin_resources;
    use crate::apiserver::store::UpdateTarget;
    use serde_json::json;

    fn configmaps() -> crate::apiserver::resource::ResourceInfo {
        builtin_resources()
            .into_iter()
            .find(|r| r.plural == "configmaps")
            .unwrap()
    }

    #[tokio::test]
    async fn subscriber_sees_replayed_then_live_changes_in_order() {
        let hub = Hub::new(Store::new(100), 64);
        let cm = configmaps();
        let first = hub
            .write(|s| {
                s.create(
                    &cm,
                    json!({"metadata": {"name": "a", "namespace": "default"}}),
                    "u1",
                    "t",
                )
            })
            .unwrap();
        let start: u64 = first["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        hub.write(|s| {
            s.create(
                &cm,
                json!({"metadata": {"name": "b", "namespace": "default"}}),
                "u2",
                "t",
            )
        })
        .unwrap();
        let mut sub = hub.subscribe(Some(start - 1)).unwrap();
        hub.write(|s| {
            s.create(
                &cm,
                json!({"metadata": {"name": "c", "namespace": "default"}}),
                "u3",
                "t",
            )
        })
        .unwrap();
        let replayed: Vec<&str> = sub
            .replay
            .iter()
            .map(|e| e.object["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(replayed, vec!["a", "b"]);
        let live = sub.live.recv().await.unwrap();
        assert_eq!(live.object["metadata"]["name"], "c");
    }

    #[test]
    fn a_version_from_the_future_is_gone() {
        let hub = Hub::new(Store::new(100), 64);
        let current = hub.read(Store::resource_version);
        assert_eq!(
            hub.subscribe(Some(current + 5)).err().map(|e| e.code()),
            Some(410)
        );
        assert!(hub.subscribe(Some(current)).is_ok());
    }

    #[test]
    fn expiring_watches_makes_older_versions_gone() {
        let hub = Hub::new(Store::new(100), 64);
        hub.write(|s| {
            s.create(
                &configmaps(),
                json!({"metadata": {"name": "a", "namespace": "default"}}),
                "u1",
                "t",
            )
        })
        .unwrap();
        let before = hub.subscribe(Some(0)).unwrap();
        hub.expire_watches();
        assert!(before.expiry.has_changed().unwrap());
        assert_eq!(hub.subscribe(Some(1)).err().map(|e| e.code()), Some(410));
    }

    #[test]
    fn selector_watch_sees_objects_entering_and_leaving_as_added_and_deleted() {
        let hub = Hub::new(Store::new(100), 64);
        let cm = configmaps();
        let filter = WatchFilter {
            storage_key: cm.storage_key(),
            namespace: Some("default".into()),
            labels: LabelSelector::parse("app=web").unwrap(),
            fields: FieldSelector::default(),
            core_events: false,
        };
        let created = hub
            .write(|s| {
                s.create(
                    &cm,
                    json!({"metadata": {"name": "a", "namespace": "default"}}),
                    "u1",
                    "t",
                )
            })
            .unwrap();
        let mut labelled = (*created).clone();
        labelled["metadata"]["labels"] = json!({"app": "web"});
        let labelled = hub
            .write(|s| s.update(&cm, labelled, UpdateTarget::Main))
            .unwrap();
        let mut unlabelled = (*labelled).clone();
        unlabelled["metadata"]["labels"] = json!({});
        hub.write(|s| s.update(&cm, unlabelled, UpdateTarget::Main))
            .unwrap();
        let seen: Vec<Option<EventType>> = hub
            .read(|s| s.events_since(0))
            .unwrap()
            .iter()
            .map(|e| filter.translate(e))
            .collect();
        assert_eq!(
            seen,
            vec![None, Some(EventType::Added), Some(EventType::Deleted)]
        );
    }
}
