//! Wake-ups: "this task's event stream just grew", told to the operator over one Pub/Sub
//! channel, so it holds one connection for every running Task rather than one blocking read
//! each.
//!
//! The publisher sends the task's key prefix on [`WAKE_CHANNEL`] in the same script as the
//! events' `XADD` (see [`super::events::EventLog::publish_many`]). A wake-up is only a hint:
//! the events themselves stay in the stream and are consumed through the operator's group, so
//! a lost message (the subscriber was reconnecting, a node failed over) costs latency until
//! the next periodic reconcile, never an event. A subscriber that (re)connects should treat
//! every task as woken.
//!
//! Why classic Pub/Sub rather than blocking stream reads or sharded Pub/Sub: `XREAD` over many
//! streams is refused across slots (CROSSSLOT), and a cluster spreads Tasks over every slot, so
//! blocking reads need a connection per Task; sharded channels would need a subscription per
//! Task on its slot's master, re-made after every failover or resharding. A classic message
//! reaches subscribers on any node of a cluster, so one subscription on any node hears every
//! Task. Its cost, each message relayed over the cluster bus to every node, is one small
//! message per batch of events: negligible next to the events themselves.

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::config::node_client;
use super::conn::Redis;
use super::error::{CoordError, CoordResult};

/// The Pub/Sub channel wake-ups go to; pool users may publish on it (and only on it).
pub const WAKE_CHANNEL: &str = "maos:wake";

/// How often an idle subscription checks that its connection still answers: a server that
/// stops without closing the socket (a frozen node, a cut network) is noticed within this and
/// the reply timeout.
const PING_EVERY: Duration = Duration::from_secs(10);

/// A live subscription to [`WAKE_CHANNEL`] on one node.
pub struct Wakes {
    sink: redis::aio::PubSubSink,
    messages: Pin<Box<dyn Stream<Item = redis::Msg> + Send>>,
    reply_timeout: Duration,
}

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakes").finish_non_exhaustive()
    }
}

impl Redis {
    /// Subscribes to wake-ups on the first node (in the configured order) that accepts; on a
    /// cluster any node hears every publish.
    pub async fn subscribe_wakes(&self) -> CoordResult<Wakes> {
        const OP: &str = "subscribe to wake-ups";
        let config = self.config();
        let mut last = None;
        for url in &config.nodes {
            let attempt = async {
                let client = node_client(config, url)?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(WAKE_CHANNEL).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(config.connection_timeout + config.response_timeout, attempt)
                .await
            {
                Ok(Ok(pubsub)) => {
                    let (sink, stream) = pubsub.split();
                    return Ok(Wakes {
                        sink,
                        messages: Box::pin(stream),
                        reply_timeout: config.response_timeout,
                    });
                }
                Ok(Err(err)) => last = Some(CoordError::from_redis(OP, err)),
                Err(_) => last = Some(CoordError::protocol(OP, format!("{url} did not answer"))),
            }
        }
        Err(last.unwrap_or_else(|| CoordError::protocol(OP, "no Redis node is configured")))
    }
}

impl Wakes {
    /// The key prefix of the next task woken; `None` once the connection is lost (subscribe
    /// again, and treat every task as woken: messages sent meanwhile are gone).
    pub async fn next(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(PING_EVERY, self.messages.next()).await {
                Ok(Some(message)) => match message.get_payload::<String>() {
                    Ok(prefix) => return Some(prefix),
                    Err(err) => {
                        tracing::debug!(error = %err, "ignoring a wake-up that is not text");
                    }
                },
                Ok(None) => return None,
                Err(_) => {
                    let ping = tokio::time::timeout(self.reply_timeout, self.sink.ping::<()>());
                    if !matches!(ping.await, Ok(Ok(()))) {
                        return None;
                    }
                }
            }
        }
    }
}
