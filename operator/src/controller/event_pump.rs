//! The event pump: wakes the Task controller as soon as a running Task's events stream grows,
//! so status follows the agents within a round trip rather than at the next periodic
//! reconcile.
//!
//! One subscription per controller scope hears every Task ([`maos_core::coord::wake`]):
//! publishers send the Task's key prefix, and the registry maps it back to the Task. A Task is
//! registered while it runs (its [`Registration`] lives in the Task's memory) and forgotten
//! when the registration drops. The operator's Redis sockets therefore do not grow with the
//! number of running Tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::ObjectRef;
use maos_core::api::v1alpha1::Task;
use maos_core::coord::Redis;

use super::Context;

/// How long to wait before subscribing again after the subscription failed or was lost.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The running Tasks a wake-up may name, by their Redis key prefix.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    tasks: Mutex<HashMap<String, ObjectRef<Task>>>,
}

impl Registry {
    fn insert(&self, prefix: &str, task: ObjectRef<Task>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.insert(prefix.to_owned(), task);
        }
    }

    fn remove(&self, prefix: &str) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.remove(prefix);
        }
    }

    fn get(&self, prefix: &str) -> Option<ObjectRef<Task>> {
        self.tasks.lock().ok()?.get(prefix).cloned()
    }

    fn all(&self) -> Vec<ObjectRef<Task>> {
        self.tasks
            .lock()
            .map(|tasks| tasks.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// A running Task's place in the registry; dropping it stops the wake-ups.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    prefix: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(&self.prefix);
    }
}

/// Registers the Task for wake-ups when its events stream grows, unless it already is.
pub(crate) fn ensure(
    ctx: &Arc<Context>,
    pump: &mut Option<Registration>,
    coord: &maos_core::coord::Task,
    task: &Task,
) {
    if pump.is_some() {
        return;
    }
    let prefix = coord.keys().prefix().to_owned();
    ctx.wakes.insert(&prefix, ObjectRef::from_obj(task));
    *pump = Some(Registration {
        registry: Arc::clone(&ctx.wakes),
        prefix,
    });
}

/// Listens for wake-ups and forwards them to the Task controller, until the controller is
/// gone; after every subscription every registered Task is woken, since wake-ups sent while
/// there was none are lost.
pub(crate) async fn listen(
    redis: Redis,
    registry: Arc<Registry>,
    wake: UnboundedSender<ObjectRef<Task>>,
) {
    loop {
        let mut wakes = match redis.subscribe_wakes().await {
            Ok(wakes) => wakes,
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to wake-ups; relying on periodic reconciles until it can");
                tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                continue;
            }
        };
        for task in registry.all() {
            if wake.unbounded_send(task).is_err() {
                return;
            }
        }
        while let Some(prefix) = wakes.next().await {
            if let Some(task) = registry.get(&prefix)
                && wake.unbounded_send(task).is_err()
            {
                return;
            }
        }
        tracing::info!("lost the wake-up subscription; subscribing again");
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
