//! The event pump: one task per running Task that blocks on its events stream and wakes the
//! Task controller as soon as the stream grows, so status follows the agents within a round
//! trip rather than at the next periodic reconcile.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use maos_core::api::v1alpha1::Task;
use maos_core::coord::queue::EntryId;
use tokio::task::JoinHandle;

use super::Context;

/// How long one blocking read of the events stream waits.
const PUMP_BLOCK: Duration = Duration::from_secs(5);

/// Starts the task that wakes the controller when the Task's events stream grows.
pub(crate) fn ensure(
    ctx: &Arc<Context>,
    pump: &mut Option<JoinHandle<()>>,
    coord: &maos_core::coord::Task,
    task: &Task,
) {
    if pump.as_ref().is_some_and(|p| !p.is_finished()) {
        return;
    }
    let events = coord.events();
    let redis = ctx.redis.clone();
    let wake = ctx.wake.clone();
    let reference = ObjectRef::from_obj(task);
    let keys = coord.keys().clone();
    *pump = Some(tokio::spawn(async move {
        let dedicated = match redis.dedicated(PUMP_BLOCK).await {
            Ok(redis) => redis,
            Err(err) => {
                tracing::warn!(error = %err, "the event pump could not connect; relying on periodic reconciles");
                return;
            }
        };
        let events_blocking = maos_core::coord::events::EventLog::new(dedicated, keys);
        let mut after = match events.newest().await {
            Ok(Some(id)) => id,
            _ => EntryId::zero(),
        };
        loop {
            match events_blocking.wait_after(&after, PUMP_BLOCK).await {
                Ok(Some(newest)) => {
                    after = newest;
                    if wake.unbounded_send(reference.clone()).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::debug!(error = %err, "event pump read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }));
}
