//! A pool's work queue: a Redis stream with consumer group `agents`, agent heartbeats, and the
//! reclaiming of a dead agent's work.
//!
//! Delivery is at-least-once. An agent acks an item after recording its result; an agent that
//! stops heartbeating is dead, and [`WorkQueue::reclaim`] moves each of its unacked items back to
//! the queue with attempt+1 in one Lua script (XACK + XDEL old, XADD new), so an item is never
//! lost and never in the queue twice, even when two reapers race.
//!
//! [`WorkQueue::enqueue_once`] marks each (task, subtask, attempt) it enqueues in the pool's
//! `dispatched` hash in the same script as the XADD, so a dispatcher that restarts (and cannot
//! know whether its last enqueue landed) never puts the same attempt in the queue twice.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::streams::{StreamPendingReply, StreamReadReply};
use redis::{Script, Value};

use super::conn::Redis;
use super::entry;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::{AgentName, GROUP_AGENTS, PoolKeys, TaskUid, field};
use super::script::Call;
use crate::dag::SubtaskName;

/// Most entries one reclaim script moves; larger backlogs take several calls, so one script
/// never blocks Redis for long.
const RECLAIM_BATCH: usize = 100;

/// What kind of work an item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkKind {
    /// Plan the task into a DAG.
    Plan,
    /// Work on one subtask.
    Work,
    /// Merge every result into the final answer.
    Synthesize,
}

impl WorkKind {
    /// The protocol string of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Work => "work",
            Self::Synthesize => "synthesize",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "plan" => Some(Self::Plan),
            "work" => Some(Self::Work),
            "synthesize" => Some(Self::Synthesize),
            _ => None,
        }
    }
}

/// One unit of work: which subtask of which task, which attempt, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    /// The task the subtask belongs to.
    pub task: TaskUid,
    /// The subtask to run.
    pub subtask: SubtaskName,
    /// 1 for the first delivery; +1 each time the item is reclaimed from a dead agent.
    pub attempt: u32,
    /// Plan, work or synthesize.
    pub kind: WorkKind,
    /// Deadline in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

impl WorkItem {
    fn fields(&self) -> [(&'static str, String); 5] {
        [
            (field::TASK, self.task.as_str().to_owned()),
            (field::SUBTASK, self.subtask.as_str().to_owned()),
            (field::ATTEMPT, self.attempt.to_string()),
            (field::KIND, self.kind.as_str().to_owned()),
            (field::DEADLINE, self.deadline_ms.to_string()),
        ]
    }

    /// The item's field in the pool's `dispatched` hash: `<task-uid>/<subtask>/<attempt>`.
    /// Neither a task uid nor a subtask name contains `/`, so the task's fields are exactly
    /// those matching `<task-uid>/*`.
    fn dispatch_marker(&self) -> String {
        format!("{}/{}/{}", self.task, self.subtask, self.attempt)
    }

    fn from_fields(map: &HashMap<String, Value>) -> CoordResult<Self> {
        const OP: &str = "claim";
        let bad = |what: &str| CoordError::protocol(OP, format!("work item has an invalid {what}"));
        let task = TaskUid::new(&entry::text(OP, map, field::TASK)?).map_err(|_| bad("task"))?;
        let subtask =
            SubtaskName::new(&entry::text(OP, map, field::SUBTASK)?).map_err(|_| bad("subtask"))?;
        let attempt =
            u32::try_from(entry::number(OP, map, field::ATTEMPT)?).map_err(|_| bad("attempt"))?;
        let kind =
            WorkKind::parse(&entry::text(OP, map, field::KIND)?).ok_or_else(|| bad("kind"))?;
        let deadline_ms = entry::number(OP, map, field::DEADLINE)?;
        Ok(Self {
            task,
            subtask,
            attempt,
            kind,
            deadline_ms,
        })
    }
}

/// A stream entry id (`<ms>-<seq>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId(String);

impl EntryId {
    pub(crate) fn from_raw(id: String) -> Self {
        Self(id)
    }

    /// The id before every entry (`0-0`): reading after it reads a stream from its start.
    pub fn zero() -> Self {
        Self("0-0".to_owned())
    }

    /// The id as Redis spells it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A work item delivered to an agent, with the id to ack it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    /// The entry id; pass it to [`WorkQueue::ack`] when done.
    pub id: EntryId,
    /// The work.
    pub item: WorkItem,
}

/// An item moved back to the queue from a dead agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reclaimed {
    /// The entry the dead agent held (now acked and deleted).
    pub old_id: EntryId,
    /// The new entry in the queue.
    pub new_id: EntryId,
    /// The new entry's attempt number.
    pub attempt: u32,
}

/// Queue numbers for autoscaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Items no agent has claimed yet.
    pub waiting: u64,
    /// Items claimed and not yet acked (agents busy with them).
    pub pending: u64,
}

/// What the operator knows of one agent: its last heartbeat and how much work it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentState {
    /// The agent's name (its pod name), as it appears in the heartbeats and the group.
    pub name: String,
    /// Its last heartbeat, ms on the Redis server's clock; `None` if it never beat (or was
    /// forgotten) but still holds work.
    pub last_heartbeat_ms: Option<u64>,
    /// Work items it has claimed and not acked.
    pub pending: u64,
}

/// Every agent of a pool that beats or holds work, read at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentsSnapshot {
    /// The Redis server's clock (TIME, in ms) when read: the clock heartbeats are stamped with,
    /// so `now_ms - last_heartbeat_ms` is an agent's silence whatever the local clock says.
    pub now_ms: u64,
    /// The agents, sorted by name.
    pub agents: Vec<AgentState>,
}

// KEYS: dispatched, work. ARGV: dispatch marker, then the item's field/value pairs.
// The marker and the entry are written together or not at all, so an attempt is enqueued at
// most once however often dispatch is retried. Reply: the new entry id, or nil if the marker
// was already set.
static ENQUEUE_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 0 then
  return false
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
",
    )
});

// KEYS: heartbeats, work. ARGV: group.
// One consistent read of the server clock (computed exactly as HEARTBEAT stamps beats), every
// heartbeat, and the group's per-consumer pending counts. A missing stream or group means no
// agent holds work. Reply: {now, {{name, beat}...}, {{name, pending}...}}.
static AGENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local beats = {}
local hb = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #hb, 2 do
  table.insert(beats, {hb[i], tonumber(hb[i + 1])})
end
local holding = {}
local ok, summary = pcall(redis.call, 'XPENDING', KEYS[2], ARGV[1])
if not ok then
  local msg = type(summary) == 'table' and summary.err or tostring(summary)
  if not string.find(msg, '^NOGROUP') then
    return redis.error_reply(msg)
  end
elseif summary[4] then
  for _, c in ipairs(summary[4]) do
    table.insert(holding, {c[1], tonumber(c[2])})
  end
end
return {now, beats, holding}
",
    )
});

// KEYS: work. ARGV: group, task field name, task uid, start (`-` or an exclusive `(id`), count.
// Counts the entries of one task among the next `count` pending (delivered, unacked) entries.
// Reply: {matching, last id examined, entries examined}.
static PENDING_FOR_TASK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], '+', tonumber(ARGV[5]))
local found = 0
local last = ''
for _, p in ipairs(pending) do
  last = p[1]
  -- A pending id whose entry was deleted (a purge) has no fields and counts for no task.
  local e = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
  if e then
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == ARGV[2] then
        if f[i + 1] == ARGV[3] then
          found = found + 1
        end
        break
      end
    end
  end
end
return {found, last, #pending}
",
    )
});

/// Pending entries one [`WorkQueue::pending_for_task`] script examines.
const PENDING_BATCH: usize = 500;

/// Dispatch markers one HSCAN step of [`WorkQueue::purge_task`] asks for.
const DISPATCHED_SCAN_BATCH: usize = 500;

// KEYS: work. ARGV: group. Creates the stream and its group; an existing group is fine.
pub(crate) static ENSURE_GROUP: Function = Function::new(
    "maos_work_ensure_group",
    r"
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, '^BUSYGROUP') then
  return redis.error_reply(r.err)
end
return 0
",
);

// KEYS: work. ARGV: group, then the entry ids. Acks and deletes them in one step.
pub(crate) static ACK: Function = Function::new(
    "maos_work_ack",
    r"
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
",
);

// KEYS: heartbeats. ARGV: agent. Removes the agent's beat (a clean shutdown).
pub(crate) static FORGET: Function = Function::new(
    "maos_agent_forget",
    r"
return redis.call('ZREM', KEYS[1], ARGV[1])
",
);

// KEYS: heartbeats. ARGV: agent. Uses the Redis server's clock so agents' clocks never matter.
pub(crate) static HEARTBEAT: Function = Function::new(
    "maos_agent_heartbeat",
    r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
",
);

// KEYS: heartbeats, work. ARGV: threshold ms, group.
// Dead: last heartbeat older than the threshold, or never heartbeated while holding work idle
// for longer than the threshold (an agent that died before its first beat).
static DEAD_AGENTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local threshold = tonumber(ARGV[1])
local cutoff = string.format('(%.0f', now - threshold)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
if redis.call('EXISTS', KEYS[2]) == 1 then
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[2], ARGV[2])
  if ok then
    for _, c in ipairs(consumers) do
      local info = {}
      for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
      if tonumber(info['pending']) > 0 and tonumber(info['idle']) > threshold
         and not redis.call('ZSCORE', KEYS[1], info['name']) then
        table.insert(dead, info['name'])
      end
    end
  end
end
return dead
",
    )
});

// KEYS: work, heartbeats. ARGV: group, agent, attempt field name, batch size.
// Moves up to `batch` pending entries of `agent` back to the stream with attempt+1. Atomic, so
// a racing second reaper finds nothing pending and moves nothing. A library function, not an
// operator script: an agent shutting down (or failing) hands its own items back with it at
// once. Any agent of the pool could name another one of the same pool; that is no more than it
// could do to the pool's tasks anyway.
pub(crate) static RECLAIM: Function = Function::new(
    "maos_work_reclaim",
    r"
local batch = math.min(tonumber(ARGV[4]) or 0, 1000)
local moved = {}
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', batch, ARGV[2])
for _, p in ipairs(pending) do
  local id = p[1]
  local entries = redis.call('XRANGE', KEYS[1], id, id)
  local e = entries[1]
  if e then
    local fields = e[2]
    local attempt = 0
    for i = 1, #fields, 2 do
      if fields[i] == ARGV[3] then
        attempt = (tonumber(fields[i + 1]) or 0) + 1
        fields[i + 1] = tostring(attempt)
      end
    end
    local new_id = redis.call('XADD', KEYS[1], '*', unpack(fields))
    table.insert(moved, {id, new_id, attempt})
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
if #pending < batch then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return moved
",
);

// KEYS: work. ARGV: group, task field name, task uid, start (exclusive range bound), count.
// Removes (acks and deletes) the entries of one task among the next `count` entries.
// Reply: {removed, last id examined, entries examined}.
static PURGE_TASK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local entries = redis.call('XRANGE', KEYS[1], ARGV[4], '+', 'COUNT', tonumber(ARGV[5]))
local removed = 0
local last = ''
for _, e in ipairs(entries) do
  last = e[1]
  local f = e[2]
  for i = 1, #f, 2 do
    if f[i] == ARGV[2] and f[i + 1] == ARGV[3] then
      -- The group may not exist yet; the entry must go either way.
      pcall(redis.call, 'XACK', KEYS[1], ARGV[1], e[1])
      redis.call('XDEL', KEYS[1], e[1])
      removed = removed + 1
      break
    end
  end
end
return {removed, last, #entries}
",
    )
});

/// Entries one purge script examines; a long queue takes several short scripts.
const PURGE_BATCH: usize = 500;

/// A pool's work queue.
#[derive(Clone, Debug)]
pub struct WorkQueue {
    redis: Redis,
    keys: PoolKeys,
}

fn is_no_group(err: &redis::RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

impl WorkQueue {
    /// The work queue of the pool with `keys`.
    pub fn new(redis: Redis, keys: PoolKeys) -> Self {
        Self { redis, keys }
    }

    /// The pool's keys.
    pub fn keys(&self) -> &PoolKeys {
        &self.keys
    }

    /// Creates the stream and its consumer group if missing; safe to call any number of times.
    pub async fn ensure_group(&self) -> CoordResult<()> {
        let work = self.keys.work();
        self.redis
            .run("create work group", |mut c| {
                let work = &work;
                async move {
                    Call::new(&ENSURE_GROUP, &[work], 16)
                        .arg(GROUP_AGENTS)
                        .invoke::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Adds `item` to the queue.
    pub async fn enqueue(&self, item: &WorkItem) -> CoordResult<EntryId> {
        let ids = self.enqueue_many(std::slice::from_ref(item)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| CoordError::protocol("enqueue", "XADD returned no id"))
    }

    /// Adds `items` in one pipelined round trip; ids in the same order.
    pub async fn enqueue_many(&self, items: &[WorkItem]) -> CoordResult<Vec<EntryId>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let work = self.keys.work();
        let mut pipe = redis::pipe();
        for item in items {
            pipe.cmd("XADD").arg(&work).arg("*");
            for (name, value) in item.fields() {
                pipe.arg(name).arg(value);
            }
        }
        let ids: Vec<String> = self
            .redis
            .run("enqueue", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        Ok(ids.into_iter().map(EntryId).collect())
    }

    /// Adds `item` unless this (task, subtask, attempt) was ever enqueued; its id, or `None`.
    ///
    /// A call whose reply was lost and is retried reports `None` though its item is queued:
    /// "already dispatched" is the truth either way.
    pub async fn enqueue_once(&self, item: &WorkItem) -> CoordResult<Option<EntryId>> {
        let ids = self.enqueue_many_once(std::slice::from_ref(item)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| CoordError::protocol("enqueue once", "no reply for the item"))
    }

    /// [`Self::enqueue_once`] for each of `items`, pipelined in one round trip; results in the
    /// same order.
    pub async fn enqueue_many_once(&self, items: &[WorkItem]) -> CoordResult<Vec<Option<EntryId>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (dispatched, work) = (self.keys.dispatched(), self.keys.work());
        let mut pipe = redis::pipe();
        // EVALSHA in a pipeline does not load a missing script by itself; loading it first on
        // the same node (the pool's slot decides where the pipeline goes) costs no round trip.
        pipe.load_script(&ENQUEUE_ONCE).ignore();
        for item in items {
            let mut invocation = ENQUEUE_ONCE.key(&dispatched);
            invocation.key(&work).arg(item.dispatch_marker());
            for (name, value) in item.fields() {
                invocation.arg(name).arg(value);
            }
            pipe.invoke_script(&invocation);
        }
        let ids: Vec<Option<String>> = self
            .redis
            .run("enqueue once", |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        if ids.len() != items.len() {
            return Err(CoordError::protocol(
                "enqueue once",
                format!("{} replies for {} items", ids.len(), items.len()),
            ));
        }
        Ok(ids.into_iter().map(|id| id.map(EntryId)).collect())
    }

    /// Claims up to `count` new items for `agent`, waiting up to `block` for one to arrive
    /// (`None`: do not wait). Give a blocking claimer its own connection
    /// ([`Redis::dedicated`]); a blocked multiplexed connection delays everyone sharing it.
    ///
    /// An entry that is not a valid work item (not written by this layer) is acked and
    /// dropped, so it cannot jam the queue.
    pub async fn claim(
        &self,
        agent: &AgentName,
        count: usize,
        block: Option<Duration>,
    ) -> CoordResult<Vec<Claimed>> {
        self.read_group(agent, count, block, ">").await
    }

    /// The items delivered to `agent` earlier and never acked, up to `count`: what an agent
    /// restarted under the same name (a container restart keeps the pod name) held when it
    /// died. It resumes them from their journals; no reclaim is needed, and none happens if it
    /// is back before it is declared dead.
    pub async fn claim_own_pending(
        &self,
        agent: &AgentName,
        count: usize,
    ) -> CoordResult<Vec<Claimed>> {
        self.read_group(agent, count, None, "0").await
    }

    async fn read_group(
        &self,
        agent: &AgentName,
        count: usize,
        block: Option<Duration>,
        from: &str,
    ) -> CoordResult<Vec<Claimed>> {
        let work = self.keys.work();
        let read = |mut c: super::conn::Conn| {
            let work = &work;
            async move {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP_AGENTS)
                    .arg(agent.as_str())
                    .arg("COUNT")
                    .arg(count.max(1));
                if let Some(block) = block {
                    cmd.arg("BLOCK").arg(block.as_millis().max(1) as u64);
                }
                cmd.arg("STREAMS").arg(work).arg(from);
                let reply: redis::RedisResult<Option<StreamReadReply>> =
                    cmd.query_async(&mut c).await;
                reply
            }
        };
        let reply = match self.redis.run("claim", read).await {
            // The group vanishes when the stream is deleted (cleanup, a flushed Redis);
            // recreate it rather than fail every agent forever.
            Err(CoordError::Redis { source, .. }) if is_no_group(&source) => {
                self.ensure_group().await?;
                self.redis.run("claim", read).await?
            }
            other => other?,
        };
        let mut claimed = Vec::new();
        let mut malformed = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                match WorkItem::from_fields(&entry.map) {
                    Ok(item) => claimed.push(Claimed {
                        id: EntryId(entry.id),
                        item,
                    }),
                    Err(_) => malformed.push(EntryId(entry.id)),
                }
            }
        }
        if !malformed.is_empty() {
            self.ack(&malformed).await?;
        }
        Ok(claimed)
    }

    /// Acks finished items and deletes them from the stream, in one function call.
    pub async fn ack(&self, ids: &[EntryId]) -> CoordResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let work = self.keys.work();
        let id_bytes: usize = ids.iter().map(|id| id.as_str().len() + 16).sum();
        self.redis
            .run("ack", |mut c| {
                let work = &work;
                async move {
                    let mut call = Call::new(&ACK, &[work], id_bytes).arg(GROUP_AGENTS);
                    for id in ids {
                        call = call.arg(id.as_str());
                    }
                    call.invoke::<()>(&mut c).await
                }
            })
            .await
    }

    /// Records that `agent` is alive, on the Redis server's clock.
    pub async fn heartbeat(&self, agent: &AgentName) -> CoordResult<()> {
        let hb = self.keys.heartbeats();
        self.redis
            .run("heartbeat", |mut c| {
                let hb = &hb;
                async move {
                    Call::new(&HEARTBEAT, &[hb], 64)
                        .arg(agent.as_str())
                        .invoke::<i64>(&mut c)
                        .await
                        .map(|_| ())
                }
            })
            .await
    }

    /// Removes `agent` from the heartbeats (a clean shutdown), so it is not reported dead.
    pub async fn forget(&self, agent: &AgentName) -> CoordResult<()> {
        let hb = self.keys.heartbeats();
        self.redis
            .run("forget agent", |mut c| {
                let hb = &hb;
                async move {
                    Call::new(&FORGET, &[hb], 64)
                        .arg(agent.as_str())
                        .invoke::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Agents whose last heartbeat is older than `threshold`, and agents that hold work, never
    /// beat, and have been idle longer than `threshold`.
    pub async fn dead_agents(&self, threshold: Duration) -> CoordResult<Vec<AgentName>> {
        let (hb, work) = (self.keys.heartbeats(), self.keys.work());
        let names: Vec<String> = self
            .redis
            .run("dead agents", |mut c| {
                let (hb, work) = (&hb, &work);
                async move {
                    Call::new(&DEAD_AGENTS, &[hb, work], 64)
                        .arg(threshold.as_millis() as u64)
                        .arg(GROUP_AGENTS)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        let mut agents: Vec<AgentName> = names
            .iter()
            .filter_map(|n| AgentName::new(n).ok())
            .collect();
        agents.sort();
        agents.dedup();
        Ok(agents)
    }

    /// Moves every unacked item of `dead` back to the queue with attempt+1 and forgets the
    /// agent. Racing reapers are safe: each item moves exactly once.
    pub async fn reclaim(&self, dead: &AgentName) -> CoordResult<Vec<Reclaimed>> {
        let (work, hb) = (self.keys.work(), self.keys.heartbeats());
        let mut all = Vec::new();
        loop {
            let moved: Vec<(String, String, u32)> = self
                .redis
                .run("reclaim", |mut c| {
                    let (work, hb) = (&work, &hb);
                    async move {
                        let r: redis::RedisResult<Vec<(String, String, u32)>> =
                            Call::new(&RECLAIM, &[work, hb], 64)
                                .arg(GROUP_AGENTS)
                                .arg(dead.as_str())
                                .arg(field::ATTEMPT)
                                .arg(RECLAIM_BATCH)
                                .invoke(&mut c)
                                .await;
                        match r {
                            // No stream or group: nothing can be pending.
                            Err(e) if is_no_group(&e) => Ok(Vec::new()),
                            other => other,
                        }
                    }
                })
                .await?;
            let full = moved.len() >= RECLAIM_BATCH;
            all.extend(moved.into_iter().map(|(old, new, attempt)| Reclaimed {
                old_id: EntryId(old),
                new_id: EntryId(new),
                attempt,
            }));
            if !full {
                return Ok(all);
            }
        }
    }

    /// Removes every item of `task` from the queue, waiting or claimed, and its dispatch
    /// markers (the Task finalizer's cleanup); returns how many items were removed. An agent
    /// still working on one finds its later ack a harmless no-op.
    pub async fn purge_task(&self, task: &TaskUid) -> CoordResult<u64> {
        let removed = self.purge_task_items(task).await?;
        // Markers last: a cleanup interrupted before this point still keeps the task's attempts
        // from being dispatched again, and its retry removes them.
        self.purge_dispatch_markers(task).await?;
        Ok(removed)
    }

    /// Deletes the `dispatched` fields (enqueue-once markers) of `task`, one HSCAN batch at a
    /// time: at cleanup, and when a finished task's retention ends (it dispatches nothing more).
    pub async fn purge_dispatch_markers(&self, task: &TaskUid) -> CoordResult<()> {
        let dispatched = self.keys.dispatched();
        // Task uids hold no glob characters (checked by TaskUid), so the pattern is literal.
        let pattern = format!("{task}/*");
        let mut cursor = 0u64;
        loop {
            let (next, pairs): (u64, Vec<String>) = self
                .redis
                .run("scan dispatch markers", |mut c| {
                    let (dispatched, pattern) = (&dispatched, &pattern);
                    async move {
                        redis::cmd("HSCAN")
                            .arg(dispatched)
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(DISPATCHED_SCAN_BATCH)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            // HSCAN replies field, value, field, value…
            let fields: Vec<&String> = pairs.iter().step_by(2).collect();
            if !fields.is_empty() {
                self.redis
                    .run("delete dispatch markers", |mut c| {
                        let (dispatched, fields) = (&dispatched, &fields);
                        async move {
                            redis::cmd("HDEL")
                                .arg(dispatched)
                                .arg(fields)
                                .query_async::<()>(&mut c)
                                .await
                        }
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Removes every work item of `task` from the stream; returns how many were removed.
    async fn purge_task_items(&self, task: &TaskUid) -> CoordResult<u64> {
        let work = self.keys.work();
        let mut start = "-".to_owned();
        let mut removed_total = 0;
        loop {
            let (removed, last, examined): (u64, String, usize) = self
                .redis
                .run("purge task work", |mut c| {
                    let (work, start) = (&work, &start);
                    async move {
                        Call::new(&PURGE_TASK, &[work], 64)
                            .arg(GROUP_AGENTS)
                            .arg(field::TASK)
                            .arg(task.as_str())
                            .arg(start)
                            .arg(PURGE_BATCH)
                            .invoke(&mut c)
                            .await
                    }
                })
                .await?;
            removed_total += removed;
            if examined < PURGE_BATCH {
                return Ok(removed_total);
            }
            start = format!("({last}");
        }
    }

    /// Every agent that heartbeats or holds work: its last beat and its pending count, with
    /// the Redis server's clock, read in one round trip.
    pub async fn agents(&self) -> CoordResult<AgentsSnapshot> {
        type Reply = (u64, Vec<(String, u64)>, Vec<(String, u64)>);
        let (hb, work) = (self.keys.heartbeats(), self.keys.work());
        let (now_ms, beats, holding): Reply = self
            .redis
            .run("list agents", |mut c| {
                let (hb, work) = (&hb, &work);
                async move {
                    Call::new(&AGENTS, &[hb, work], 64)
                        .arg(GROUP_AGENTS)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        let mut agents: BTreeMap<String, AgentState> = BTreeMap::new();
        let unknown = |name: &String| AgentState {
            name: name.clone(),
            last_heartbeat_ms: None,
            pending: 0,
        };
        for (name, beat) in beats {
            agents
                .entry(name.clone())
                .or_insert_with(|| unknown(&name))
                .last_heartbeat_ms = Some(beat);
        }
        for (name, pending) in holding {
            agents
                .entry(name.clone())
                .or_insert_with(|| unknown(&name))
                .pending = pending;
        }
        Ok(AgentsSnapshot {
            now_ms,
            agents: agents.into_values().collect(),
        })
    }

    /// How many items of `task` are delivered to an agent and not yet acked (waiting items do
    /// not count): zero means no agent is still working on the task.
    pub async fn pending_for_task(&self, task: &TaskUid) -> CoordResult<u64> {
        let work = self.keys.work();
        let mut start = "-".to_owned();
        let mut total = 0;
        loop {
            let (found, last, examined): (u64, String, usize) = self
                .redis
                .run("count task pending", |mut c| {
                    let (work, start) = (&work, &start);
                    async move {
                        let r = Call::new(&PENDING_FOR_TASK, &[work], 64)
                            .arg(GROUP_AGENTS)
                            .arg(field::TASK)
                            .arg(task.as_str())
                            .arg(start)
                            .arg(PENDING_BATCH)
                            .invoke(&mut c)
                            .await;
                        match r {
                            // No stream or group: nothing can be pending.
                            Err(e) if is_no_group(&e) => Ok((0, String::new(), 0)),
                            other => other,
                        }
                    }
                })
                .await?;
            total += found;
            if examined < PENDING_BATCH {
                return Ok(total);
            }
            start = format!("({last}");
        }
    }

    /// How many items wait and how many are being worked on.
    pub async fn stats(&self) -> CoordResult<QueueStats> {
        let work = self.keys.work();
        let (len, pending): (u64, StreamPendingReply) = self
            .redis
            .run("queue stats", |mut c| {
                let work = &work;
                async move {
                    let r: redis::RedisResult<(u64, StreamPendingReply)> = redis::pipe()
                        .cmd("XLEN")
                        .arg(work)
                        .cmd("XPENDING")
                        .arg(work)
                        .arg(GROUP_AGENTS)
                        .query_async(&mut c)
                        .await;
                    match r {
                        Err(e) if is_no_group(&e) => Ok((0, StreamPendingReply::Empty)),
                        other => other,
                    }
                }
            })
            .await?;
        let pending = pending.count() as u64;
        Ok(QueueStats {
            // Acked entries are deleted, so the stream holds exactly the waiting and pending ones.
            waiting: len.saturating_sub(pending),
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> WorkItem {
        WorkItem {
            task: TaskUid::new("t-1").expect("uid"),
            subtask: SubtaskName::new("research-a").expect("name"),
            attempt: 3,
            kind: WorkKind::Synthesize,
            deadline_ms: 1_900_000_000_000,
        }
    }

    fn as_stream_fields(item: &WorkItem) -> HashMap<String, Value> {
        item.fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::BulkString(v.into_bytes())))
            .collect()
    }

    #[test]
    fn work_item_survives_the_stream_encoding() {
        let item = sample();
        assert_eq!(
            WorkItem::from_fields(&as_stream_fields(&item)).expect("parse"),
            item
        );
    }

    #[test]
    fn work_item_with_a_bad_field_is_a_protocol_error() {
        for (name, bad) in [
            (field::TASK, "a:b"),
            (field::SUBTASK, "Not_A_Label"),
            (field::ATTEMPT, "-1"),
            (field::KIND, "explode"),
            (field::DEADLINE, "soon"),
        ] {
            let mut fields = as_stream_fields(&sample());
            fields.insert(name.to_owned(), Value::BulkString(bad.as_bytes().to_vec()));
            assert!(
                matches!(
                    WorkItem::from_fields(&fields),
                    Err(CoordError::Protocol { .. })
                ),
                "{name}={bad}"
            );
        }
        let mut missing = as_stream_fields(&sample());
        missing.remove(field::KIND);
        assert!(WorkItem::from_fields(&missing).is_err());
    }

    #[test]
    fn dispatch_marker_names_task_subtask_and_attempt() {
        assert_eq!(sample().dispatch_marker(), "t-1/research-a/3");
    }

    #[test]
    fn work_kinds_round_trip_through_their_protocol_names() {
        for kind in [WorkKind::Plan, WorkKind::Work, WorkKind::Synthesize] {
            assert_eq!(WorkKind::parse(kind.as_str()), Some(kind));
        }
    }
}
