//! A task's event log: agents publish typed events, the operator (group `operator`) and the audit
//! writer (group `audit`) each consume all of them, at least once.
//!
//! Every event carries a unique id chosen by its publisher, so a consumer that sees an event
//! twice (a redelivery after a crash, a retried publish) can drop the duplicate.
//!
//! Publishing also wakes the operator over Pub/Sub ([`super::wake`]), which then consumes the
//! new events through its group.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use redis::streams::StreamRangeReply;
use redis::{Script, Value};

use super::conn::{Conn, Redis};
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::{AgentName, TaskKeys, field};
use super::queue::EntryId;
use super::script::Call;

// KEYS: the events stream. Deletes the entries every reading group is done with: below each
// group's oldest pending (delivered, unacked) entry, or, with none pending, below its last
// delivered one (what follows it is unread). The stream is kept from the lowest of these, so
// no group loses an entry it has not acked. A group no consumer ever read from (the `audit`
// group until its writer runs) does not hold the stream back. Returns how many went.
static TRIM_CONSUMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end
local floor = false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  if info['consumers'] > 0 or info['pending'] > 0 then
    local keep = info['last-delivered-id']
    if info['pending'] > 0 then
      keep = redis.call('XPENDING', KEYS[1], info['name'])[2]
    end
    if not floor or less(keep, floor) then floor = keep end
  end
end
if not floor then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
",
    )
});

// KEYS: the events stream. ARGV: one JSON event each. Appends the events, then wakes the
// operator with the task's key prefix on `maos:wake` ([`super::wake`]); a wake that cannot be
// sent (an ACL without the channel) is only a lost hint, so it must not fail the append, which
// has happened by then. The channel, the field and the prefix are the function's own, not
// arguments: an agent calls it with arguments of its choosing.
pub(crate) static PUBLISH: Function = Function::new(
    "maos_events_publish",
    r"
local prefix = string.match(KEYS[1], '^(maos:pool:[%w%-]+:{task:[%w%-]+}):events$')
if not prefix then return redis.error_reply('ERR maos_events_publish: not an events key') end
local ids = {}
for i = 1, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
redis.pcall('PUBLISH', 'maos:wake', prefix)
return ids
",
);

/// What happened, as told by an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "PascalCase")]
pub enum EventKind {
    /// The agent started (or resumed) the subtask.
    SubtaskStarted,
    /// A progress note for status.
    Progress {
        /// Short, fixed-form message.
        message: String,
    },
    /// Tokens one model call used.
    TokensUsed {
        /// The model.
        model: String,
        /// Input tokens.
        input: u64,
        /// Output tokens.
        output: u64,
        /// Input tokens read from the prompt cache.
        #[serde(default)]
        cache_read: u64,
        /// Input tokens written to the prompt cache.
        #[serde(default)]
        cache_creation: u64,
    },
    /// The subtask finished and its result is recorded.
    SubtaskSucceeded,
    /// The subtask failed.
    SubtaskFailed {
        /// Why, in a short fixed form.
        reason: String,
    },
    /// The planner submitted a plan.
    PlanSubmitted {
        /// The plan as the planner gave it (validated by the operator).
        plan: serde_json::Value,
    },
    /// The agent sent a message on the task's bus.
    MessageSent {
        /// The receiving agent, `None` for a broadcast.
        to: Option<String>,
    },
    /// The agent called a tool of an MCP server (never with its arguments or result).
    ToolCalled {
        /// The pool's name for the server.
        server: String,
        /// The server's name for the tool.
        tool: String,
        /// How long the call took, in milliseconds.
        duration_ms: u64,
        /// `ok`, `error` (the tool said so), `timeout`, `unavailable` or `failed`.
        outcome: String,
    },
}

/// One event about a subtask.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the publisher; consumers deduplicate on it.
    pub id: String,
    /// The publishing agent.
    pub agent: String,
    /// The subtask.
    pub subtask: String,
    /// The attempt.
    pub attempt: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// A new event with a fresh unique id.
    pub fn new(agent: &AgentName, subtask: &str, attempt: u32, kind: EventKind) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            agent: agent.as_str().to_owned(),
            subtask: subtask.to_owned(),
            attempt,
            kind,
        }
    }
}

/// An event delivered to a consumer, with the stream id to ack it by.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivered {
    /// The stream entry id; pass it to [`EventConsumer::ack`].
    pub entry: EntryId,
    /// The event.
    pub event: Event,
}

/// Bytes reserved per `XADD` beyond its key: the fixed arguments and a typical event's JSON.
const EVENT_BYTES_HINT: usize = 384;

/// A task's event stream.
#[derive(Clone, Debug)]
pub struct EventLog {
    redis: Redis,
    keys: TaskKeys,
}

impl EventLog {
    /// The event log of the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// The keys of the log's task.
    pub fn keys(&self) -> &TaskKeys {
        &self.keys
    }

    /// Publishes `event`.
    pub async fn publish(&self, event: &Event) -> CoordResult<EntryId> {
        let ids = self.publish_many(std::slice::from_ref(event)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| CoordError::protocol("publish event", "XADD returned no id"))
    }

    /// Publishes `events` in one round trip, and wakes whoever waits on the task
    /// ([`super::wake`]).
    pub async fn publish_many(&self, events: &[Event]) -> CoordResult<Vec<EntryId>> {
        const OP: &str = "publish event";
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.keys.events();
        // The JSON is written straight into the command's buffer, sized for typical events:
        // publishing is the hottest path of the bus, and allocations were most of its client
        // CPU.
        let mut call = Call::new(&PUBLISH, &[&key], events.len() * EVENT_BYTES_HINT);
        for event in events {
            call = call
                .json_arg(event)
                .map_err(|e| CoordError::protocol(OP, e.to_string()))?;
        }
        let ids: Vec<String> = self
            .redis
            .run(OP, |mut c| {
                let call = &call;
                async move { call.invoke(&mut c).await }
            })
            .await?;
        if ids.len() != events.len() {
            return Err(CoordError::protocol(
                OP,
                format!("{} events sent, {} ids returned", events.len(), ids.len()),
            ));
        }
        Ok(ids.into_iter().map(EntryId::from_raw).collect())
    }

    /// The id of the newest event, or `None` if the stream is empty or missing.
    pub async fn newest(&self) -> CoordResult<Option<EntryId>> {
        let key = self.keys.events();
        let reply: StreamRangeReply = self
            .redis
            .run("newest event", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("XREVRANGE")
                        .arg(key)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .next()
            .map(|e| EntryId::from_raw(e.id)))
    }

    /// Deletes the events that every consumer group reading the stream has acked, keeping
    /// each group's pending and unread entries; returns how many it deleted. A group that no
    /// consumer has read from yet does not count (the `audit` group has no writer yet; it
    /// would otherwise keep every event). One script, so no read or ack interleaves with it.
    pub async fn trim_consumed(&self) -> CoordResult<u64> {
        let key = self.keys.events();
        self.redis
            .run("trim events", |mut c| {
                let key = &key;
                async move { Call::new(&TRIM_CONSUMED, &[key], 0).invoke(&mut c).await }
            })
            .await
    }

    /// A consumer `consumer` in `group` (one of [`super::keys::EVENT_GROUPS`]).
    pub fn consumer(&self, group: &'static str, consumer: &str) -> EventConsumer {
        EventConsumer {
            log: self.clone(),
            group,
            consumer: consumer.to_owned(),
            backlog_done: false,
        }
    }
}

/// A named consumer of one group: it first re-reads what it was given before and never acked
/// (after a crash), then new events.
#[derive(Clone, Debug)]
pub struct EventConsumer {
    log: EventLog,
    group: &'static str,
    consumer: String,
    backlog_done: bool,
}

impl EventConsumer {
    /// The event log it consumes.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Up to `count` events, waiting up to `block` for new ones (`None`: do not wait).
    ///
    /// An entry that is not a valid event (not written by this layer) is acked and dropped.
    pub async fn next(
        &mut self,
        count: usize,
        block: Option<std::time::Duration>,
    ) -> CoordResult<Vec<Delivered>> {
        self.ack_then_next(&[], count, block).await
    }

    /// Acks `handled` and reads up to `count` more events in the same round trip (one
    /// pipeline: XACK, then XREADGROUP), for a consumer that handles batch after batch.
    pub async fn ack_then_next(
        &mut self,
        handled: &[EntryId],
        count: usize,
        block: Option<std::time::Duration>,
    ) -> CoordResult<Vec<Delivered>> {
        if !self.backlog_done {
            let backlog = self.read(handled, "0", count, None).await?;
            if !backlog.is_empty() {
                return Ok(backlog);
            }
            self.backlog_done = true;
            return self.read(&[], ">", count, block).await;
        }
        self.read(handled, ">", count, block).await
    }

    async fn read(
        &self,
        handled: &[EntryId],
        from: &str,
        count: usize,
        block: Option<std::time::Duration>,
    ) -> CoordResult<Vec<Delivered>> {
        const OP: &str = "consume events";
        let key = self.log.keys.events();
        let mut pipe = redis::pipe();
        if !handled.is_empty() {
            let ack = pipe.cmd("XACK").arg(&key).arg(self.group);
            for e in handled {
                ack.arg(e.as_str());
            }
            ack.ignore();
        }
        let read = pipe
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count.max(1));
        if let Some(block) = block {
            read.arg("BLOCK").arg(block.as_millis().max(1) as u64);
        }
        read.arg("STREAMS").arg(&key).arg(from);
        // Walked as a raw reply: no map per entry, and the event bytes are moved, not copied.
        let (reply,): (Value,) = self
            .log
            .redis
            .run(OP, |mut c: Conn| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut delivered = Vec::new();
        let mut malformed = Vec::new();
        for (id, fields) in stream_entries(reply) {
            let event = fields
                .into_iter()
                .find(|(name, _)| name.as_slice() == field::EVENT.as_bytes())
                .and_then(|(_, raw)| serde_json::from_slice::<Event>(&raw).ok());
            match event {
                Some(event) => delivered.push(Delivered {
                    entry: EntryId::from_raw(id),
                    event,
                }),
                None => malformed.push(EntryId::from_raw(id)),
            }
        }
        if !malformed.is_empty() {
            self.ack(&malformed).await?;
        }
        Ok(delivered)
    }

    /// Acks handled events in one round trip.
    pub async fn ack(&self, entries: &[EntryId]) -> CoordResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let key = self.log.keys.events();
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&key).arg(self.group);
        for e in entries {
            cmd.arg(e.as_str());
        }
        self.log
            .redis
            .run("ack events", |mut c| {
                let cmd = &cmd;
                async move { cmd.query_async::<()>(&mut c).await }
            })
            .await
    }
}

/// A stream entry as read: its id and its (field, value) pairs.
type RawEntry = (String, Vec<(Vec<u8>, Vec<u8>)>);

/// The entries of an XREAD/XREADGROUP reply (one stream asked for), as (id, fields); entries
/// whose shape is wrong are skipped, and a deleted entry (nil fields) has no fields.
fn stream_entries(reply: Value) -> Vec<RawEntry> {
    fn bytes(value: Value) -> Option<Vec<u8>> {
        match value {
            Value::BulkString(b) => Some(b),
            Value::SimpleString(s) => Some(s.into_bytes()),
            _ => None,
        }
    }
    fn items(value: Value) -> Vec<Value> {
        match value {
            Value::Array(items) | Value::Set(items) => items,
            _ => Vec::new(),
        }
    }
    // RESP2: [[key, entries]]; RESP3: {key: entries}.
    let streams: Vec<Value> = match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, entries)| entries).collect(),
        other => items(other)
            .into_iter()
            .filter_map(|stream| items(stream).into_iter().nth(1))
            .collect(),
    };
    let mut out = Vec::new();
    for entries in streams {
        for entry in items(entries) {
            let mut parts = items(entry).into_iter();
            let Some(id) = parts.next().and_then(bytes) else {
                continue;
            };
            let Ok(id) = String::from_utf8(id) else {
                continue;
            };
            let mut fields = Vec::new();
            let mut flat = parts.next().map(items).unwrap_or_default().into_iter();
            while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                if let (Some(name), Some(value)) = (bytes(name), bytes(value)) {
                    fields.push((name, value));
                }
            }
            out.push((id, fields));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_function_spells_the_protocols_names() {
        assert!(
            PUBLISH
                .body()
                .contains(&format!("'{}'", super::super::wake::WAKE_CHANNEL))
        );
        assert!(PUBLISH.body().contains(&format!("'{}'", field::EVENT)));
        let keys = TaskKeys::new(
            &super::super::PoolUid::new("pool-1").expect("uid"),
            &super::super::TaskUid::new("task-1").expect("uid"),
        );
        assert_eq!(format!("{}:events", keys.prefix()), keys.events());
    }

    #[test]
    fn event_encodes_with_a_type_tag_and_round_trips() {
        let agent = AgentName::new("a1").expect("name");
        let event = Event::new(
            &agent,
            "s1",
            2,
            EventKind::Progress {
                message: "halfway".to_owned(),
            },
        );
        let json = serde_json::to_value(&event).expect("encode");
        assert_eq!(json["type"], "Progress");
        assert_eq!(json["message"], "halfway");
        assert_eq!(json["attempt"], 2);
        let back: Event = serde_json::from_value(json).expect("decode");
        assert_eq!(back, event);
    }

    #[test]
    fn stream_replies_are_walked_in_resp2_and_resp3_shape() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entries = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("event"), bulk("{}")]),
            ]),
            // A deleted entry still pending: no fields.
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("key"), entries.clone()])]);
        let resp3 = Value::Map(vec![(bulk("key"), entries)]);
        for reply in [resp2, resp3] {
            let out = stream_entries(reply);
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].0, "1-0");
            assert_eq!(out[0].1, vec![(b"event".to_vec(), b"{}".to_vec())]);
            assert!(out[1].1.is_empty());
        }
        assert!(stream_entries(Value::Nil).is_empty());
    }

    #[test]
    fn every_event_gets_its_own_id() {
        let agent = AgentName::new("a1").expect("name");
        let a = Event::new(&agent, "s1", 1, EventKind::SubtaskStarted);
        let b = Event::new(&agent, "s1", 1, EventKind::SubtaskStarted);
        assert_ne!(a.id, b.id);
    }
}
