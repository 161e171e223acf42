//! A task's message bus between agents: broadcasts and direct messages on one stream, read by
//! each agent from its own cursor.

use redis::streams::StreamRangeReply;

use super::conn::Redis;
use super::entry;
use super::error::CoordResult;
use super::functions::Function;
use super::keys::{AgentName, TaskKeys, field};
use super::queue::EntryId;
use super::script::Call;

/// About how many messages a task's bus keeps (`XADD … MAXLEN ~`): the oldest go beyond it,
/// so a long-running task's bus stays bounded. The bus has no consumer group; each agent reads
/// from its own cursor between turns, so only an agent more than this many messages behind
/// misses the oldest ones.
pub const BUS_MAX_LEN: usize = 10_000;

// KEYS: bus stream. ARGV: the bus cap, then field/value pairs of the entry. The cap is at
// least 1000 whatever the caller says, so a call cannot be used to empty the bus (`MAXLEN ~ 0`).
// Returns the new entry id.
pub(crate) static SEND: Function = Function::new(
    "maos_bus_send",
    r"
local cap = math.max(tonumber(ARGV[1]) or 0, 1000)
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', unpack(ARGV, 2))
",
);

// KEYS: bus stream, applied-effects hash. ARGV: effect id, the bus cap, then field/value pairs
// of the entry (the cap as in SEND). Marks the effect applied and sends in one step, so a replay of the same tool
// call sends nothing. Returns the new entry id, or false when the effect was applied before.
pub(crate) static SEND_ONCE: Function = Function::new(
    "maos_bus_send_once",
    r"
if redis.call('HSETNX', KEYS[2], ARGV[1], '1') == 0 then return false end
local cap = math.max(tonumber(ARGV[2]) or 0, 1000)
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', cap, '*', unpack(ARGV, 3))
",
);

/// Where an agent has read the bus up to; start from [`Cursor::start`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// Before the first message.
    pub fn start() -> Self {
        Self("0-0".to_owned())
    }

    /// The last entry id read.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One message on the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The stream entry id (its position on the bus).
    pub id: EntryId,
    /// The sending agent.
    pub from: String,
    /// The receiving agent, `None` for a broadcast.
    pub to: Option<String>,
    /// The message.
    pub body: String,
}

/// What one read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbox {
    /// Messages for the reader, oldest first: broadcasts from others and messages to it.
    pub messages: Vec<Message>,
    /// Pass this to the next read.
    pub cursor: Cursor,
}

/// A task's message bus.
#[derive(Clone, Debug)]
pub struct Mailbox {
    redis: Redis,
    keys: TaskKeys,
}

impl Mailbox {
    /// The bus of the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// Sends `body` from `from` to `to`, or to every agent of the task when `to` is `None`.
    pub async fn send(
        &self,
        from: &AgentName,
        to: Option<&AgentName>,
        body: &str,
    ) -> CoordResult<EntryId> {
        let key = self.keys.bus();
        let id: String = self
            .redis
            .run("send message", |mut c| {
                let key = &key;
                async move {
                    Call::new(&SEND, &[key], body.len() + 64)
                        .arg(BUS_MAX_LEN)
                        .arg(field::FROM)
                        .arg(from.as_str())
                        .arg(field::TO)
                        .arg(to.map(AgentName::as_str).unwrap_or(""))
                        .arg(field::BODY)
                        .arg(body)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(EntryId::from_raw(id))
    }

    /// Like [`Mailbox::send`], but at most once per `effect` (the model's tool-use id): a
    /// replayed tool call sends nothing and gets `None`.
    pub async fn send_once(
        &self,
        effect: &str,
        from: &AgentName,
        to: Option<&AgentName>,
        body: &str,
    ) -> CoordResult<Option<EntryId>> {
        let (bus, applied) = (self.keys.bus(), self.keys.applied());
        let id: Option<String> = self
            .redis
            .run("send message once", |mut c| {
                let (bus, applied) = (&bus, &applied);
                async move {
                    Call::new(&SEND_ONCE, &[bus, applied], body.len() + 64)
                        .arg(effect)
                        .arg(BUS_MAX_LEN)
                        .arg(field::FROM)
                        .arg(from.as_str())
                        .arg(field::TO)
                        .arg(to.map(AgentName::as_str).unwrap_or(""))
                        .arg(field::BODY)
                        .arg(body)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(id.map(EntryId::from_raw))
    }

    /// Up to `count` bus entries after `cursor`, keeping those meant for `agent` (broadcasts
    /// from other agents and direct messages to it). The returned cursor moves past every entry
    /// read, kept or not.
    pub async fn read_since(
        &self,
        agent: &AgentName,
        cursor: &Cursor,
        count: usize,
    ) -> CoordResult<Inbox> {
        const OP: &str = "read messages";
        let key = self.keys.bus();
        let reply: StreamRangeReply = self
            .redis
            .run(OP, |mut c| {
                let key = &key;
                async move {
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(format!("({}", cursor.as_str()))
                        .arg("+")
                        .arg("COUNT")
                        .arg(count.max(1))
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        let mut next = cursor.clone();
        let mut messages = Vec::new();
        for e in reply.ids {
            next = Cursor(e.id.clone());
            let from = entry::text(OP, &e.map, field::FROM)?;
            let to = entry::text(OP, &e.map, field::TO)?;
            let body = entry::text(OP, &e.map, field::BODY)?;
            let for_me = if to.is_empty() {
                from != agent.as_str()
            } else {
                to == agent.as_str()
            };
            if for_me {
                messages.push(Message {
                    id: EntryId::from_raw(e.id),
                    from,
                    to: (!to.is_empty()).then_some(to),
                    body,
                });
            }
        }
        Ok(Inbox {
            messages,
            cursor: next,
        })
    }
}
