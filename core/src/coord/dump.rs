//! A whole task's keys as plain data, read atomically and written back under any task uid: what
//! a checkpoint stores.
//!
//! Reading is one Lua script over every key of the task. All of them share the task's hash tag,
//! so they sit in one cluster slot and the script sees them at a single instant, with no pause
//! of the agents. Journals are found through the journal index; the script checks that the index
//! still names exactly the journals it was given and asks for another try otherwise, so a journal
//! created between the two steps is never missed.
//!
//! Writing first removes whatever the target task has, writes every other key, and writes `meta`
//! last: `meta` marks a task's state as present, so a restore that stops half-way leaves a task
//! that still reads as lost, never one that runs on partial state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::keys::{TaskKeys, field};
use crate::dag::SubtaskName;

// KEYS: journal index, then every other key of the task. ARGV: the journal subtasks expected.
// Reply: {'retry'} when the index changed, else one {type, ...} per key in KEYS order:
// {'none'} | {'hash', flat} | {'set', members} | {'string', value} |
// {'stream', entries, last-generated-id, {group, last-delivered-id, ...}}.
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SCARD', KEYS[1]) ~= #ARGV then return {'retry'} end
for i = 1, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then return {'retry'} end
end
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'hash' then
    out[i] = {'hash', redis.call('HGETALL', key)}
  elseif kind == 'set' then
    out[i] = {'set', redis.call('SMEMBERS', key)}
  elseif kind == 'string' then
    out[i] = {'string', redis.call('GET', key)}
  elseif kind == 'stream' then
    local info = redis.call('XINFO', 'STREAM', key)
    local last = '0-0'
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then last = info[j + 1] end
    end
    local groups = {}
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local name, delivered
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1] end
        if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
      end
      groups[#groups + 1] = name
      groups[#groups + 1] = delivered
    end
    out[i] = {'stream', redis.call('XRANGE', key, '-', '+'), last, groups}
  else
    out[i] = {'none'}
  end
end
return out
",
    )
});

/// How often the read is tried again when journals appear while it runs.
const READ_TRIES: usize = 8;
/// Roughly how many bytes one pipeline of a restore carries.
const RESTORE_CHUNK_BYTES: usize = 4 << 20;
/// Most commands in one pipeline of a restore.
const RESTORE_CHUNK_COMMANDS: usize = 1_000;

/// The value of one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum KeyDump {
    /// A hash: field → value.
    Hash {
        /// The fields, sorted.
        fields: BTreeMap<String, String>,
    },
    /// A set of members.
    Set {
        /// The members, sorted.
        members: BTreeSet<String>,
    },
    /// A string.
    String {
        /// The value.
        value: String,
    },
    /// A stream with its entries, its last generated id and its consumer groups' positions.
    #[serde(rename_all = "camelCase")]
    Stream {
        /// The entries, oldest first.
        entries: Vec<StreamEntry>,
        /// The stream's last generated id (new entries must come after it).
        last_id: String,
        /// Consumer group → the last id delivered to it.
        groups: BTreeMap<String, String>,
    },
}

/// One stream entry: its id and its fields in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// The entry id, `<ms>-<seq>`.
    pub id: String,
    /// The field/value pairs, in the order they were written.
    pub fields: Vec<(String, String)>,
}

/// Every key of one task, by its name relative to the task (`meta`, `kv`, `journal:<subtask>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDump {
    /// Relative key name → value. Keys that do not exist are absent.
    pub keys: BTreeMap<String, KeyDump>,
}

impl TaskDump {
    /// How many Redis entries it holds: hash fields, set members, stream entries and strings.
    pub fn entries(&self) -> u64 {
        self.keys
            .values()
            .map(|k| match k {
                KeyDump::Hash { fields } => fields.len() as u64,
                KeyDump::Set { members } => members.len() as u64,
                KeyDump::String { .. } => 1,
                KeyDump::Stream { entries, .. } => entries.len() as u64,
            })
            .sum()
    }

    /// Whether the dump has the task's `meta` key, i.e. the task was registered when it was read.
    pub fn has_meta(&self) -> bool {
        self.keys.contains_key(META)
    }

    /// Sets where consumer `group` of the stream `relative` resumes after a restore (e.g. the
    /// operator group at the newest event its written status folded). No-op for other keys.
    pub fn set_group_position(&mut self, relative: &str, group: &str, id: &str) {
        if let Some(KeyDump::Stream { groups, .. }) = self.keys.get_mut(relative) {
            groups.insert(group.to_owned(), id.to_owned());
        }
    }
}

const META: &str = "meta";
const JOURNAL_PREFIX: &str = "journal:";

/// The name of `key` relative to the task's key prefix.
fn relative<'a>(keys: &TaskKeys, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(keys.prefix())?.strip_prefix(':')
}

/// The full key for relative name `name`, refusing a name that is not one of a task's keys.
fn absolute(keys: &TaskKeys, name: &str) -> CoordResult<String> {
    if let Some(subtask) = name.strip_prefix(JOURNAL_PREFIX) {
        let subtask = SubtaskName::new(subtask).map_err(|e| CoordError::InvalidName {
            what: "journal in a dump",
            reason: e.to_string(),
        })?;
        return Ok(keys.journal(&subtask));
    }
    keys.fixed()
        .into_iter()
        .find(|k| relative(keys, k) == Some(name))
        .ok_or_else(|| CoordError::InvalidName {
            what: "key in a dump",
            reason: format!("{name:?} is not a key of a task"),
        })
}

/// Reads every key of the task at one instant.
pub async fn read(redis: &Redis, keys: &TaskKeys) -> CoordResult<TaskDump> {
    const OP: &str = "read task dump";
    let index = keys.journal_index();
    for _ in 0..READ_TRIES {
        let journals: Vec<String> = redis
            .run(OP, |mut c| {
                let index = &index;
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await?;
        let mut all: Vec<String> = vec![index.clone()];
        all.extend(keys.fixed().into_iter().filter(|k| *k != index));
        for subtask in &journals {
            let name = SubtaskName::new(subtask).map_err(|e| {
                CoordError::protocol(OP, format!("journal index names {subtask:?}: {e}"))
            })?;
            all.push(keys.journal(&name));
        }
        let reply: Value = redis
            .run(OP, |mut c| {
                let (all, journals) = (&all, &journals);
                async move {
                    let mut invocation = READ.prepare_invoke();
                    for key in all {
                        invocation.key(key);
                    }
                    for subtask in journals {
                        invocation.arg(subtask);
                    }
                    invocation.invoke_async(&mut c).await
                }
            })
            .await?;
        let Value::Array(per_key) = reply else {
            return Err(CoordError::protocol(OP, "reply is not an array"));
        };
        if matches!(per_key.first(), Some(v) if text(v).as_deref() == Some("retry")) {
            continue;
        }
        let mut dump = TaskDump::default();
        for (key, value) in all.iter().zip(per_key) {
            let name = relative(keys, key)
                .ok_or_else(|| CoordError::protocol(OP, "key outside the task"))?;
            if let Some(decoded) = decode_key(OP, value)? {
                dump.keys.insert(name.to_owned(), decoded);
            }
        }
        return Ok(dump);
    }
    Err(CoordError::protocol(
        OP,
        "journals kept appearing while the task was read",
    ))
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn owned_text(op: &'static str, value: Value) -> CoordResult<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b)
            .map_err(|_| CoordError::protocol(op, "a value is not UTF-8; it cannot be stored")),
        Value::SimpleString(s) => Ok(s),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(CoordError::protocol(
            op,
            format!("expected text, got {other:?}"),
        )),
    }
}

fn array(op: &'static str, value: Value) -> CoordResult<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(CoordError::protocol(
            op,
            format!("expected an array, got {other:?}"),
        )),
    }
}

fn pairs(op: &'static str, value: Value) -> CoordResult<Vec<(String, String)>> {
    let items = array(op, value)?;
    if items.len() % 2 != 0 {
        return Err(CoordError::protocol(
            op,
            "odd number of items in a pair list",
        ));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((owned_text(op, k)?, owned_text(op, v)?));
    }
    Ok(out)
}

fn decode_key(op: &'static str, value: Value) -> CoordResult<Option<KeyDump>> {
    let mut parts = array(op, value)?.into_iter();
    let kind = parts
        .next()
        .map(|k| owned_text(op, k))
        .transpose()?
        .unwrap_or_default();
    let mut next = || parts.next().unwrap_or(Value::Nil);
    Ok(match kind.as_str() {
        "none" => None,
        "hash" => Some(KeyDump::Hash {
            fields: pairs(op, next())?.into_iter().collect(),
        }),
        "set" => Some(KeyDump::Set {
            members: array(op, next())?
                .into_iter()
                .map(|m| owned_text(op, m))
                .collect::<CoordResult<_>>()?,
        }),
        "string" => Some(KeyDump::String {
            value: owned_text(op, next())?,
        }),
        "stream" => {
            let raw_entries = array(op, next())?;
            let mut entries = Vec::with_capacity(raw_entries.len());
            for raw in raw_entries {
                let mut entry = array(op, raw)?.into_iter();
                let id = owned_text(op, entry.next().unwrap_or(Value::Nil))?;
                let fields = pairs(op, entry.next().unwrap_or(Value::Nil))?;
                entries.push(StreamEntry { id, fields });
            }
            let last_id = owned_text(op, next())?;
            let groups = pairs(op, next())?.into_iter().collect();
            Some(KeyDump::Stream {
                entries,
                last_id,
                groups,
            })
        }
        other => {
            return Err(CoordError::protocol(
                op,
                format!("unexpected key type {other:?}"),
            ));
        }
    })
}

/// Accumulates commands into pipelines of bounded size and sends each when full.
struct Batch {
    conn: super::conn::Conn,
    pipe: redis::Pipeline,
    commands: usize,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, cmd: redis::Cmd, bytes: usize) {
        self.pipe.add_command(cmd).ignore();
        self.commands += 1;
        self.bytes += bytes;
    }

    async fn flush_if_full(&mut self) -> CoordResult<()> {
        if self.commands >= RESTORE_CHUNK_COMMANDS || self.bytes >= RESTORE_CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> CoordResult<()> {
        if self.commands == 0 {
            return Ok(());
        }
        let pipe = std::mem::take(&mut self.pipe);
        self.commands = 0;
        self.bytes = 0;
        pipe.query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| CoordError::from_redis("restore task dump", e))
    }
}

/// Writes `dump` as the state of the task with `keys`, replacing whatever it had; `meta` goes
/// last, with its pool and task fields set to `keys`' own. Returns how many entries it wrote.
///
/// Not retried inside: a failure leaves the task without `meta` (still lost), and the caller
/// runs the whole restore again.
pub async fn restore(redis: &Redis, keys: &TaskKeys, dump: &TaskDump) -> CoordResult<u64> {
    // Every name is checked before anything is written.
    let mut targets = Vec::with_capacity(dump.keys.len());
    for (name, value) in &dump.keys {
        targets.push((absolute(keys, name)?, name.as_str(), value));
    }
    super::task::Task::new(redis.clone(), keys.clone())
        .delete_all()
        .await?;
    let mut batch = Batch {
        conn: redis.connection(),
        pipe: redis::pipe(),
        commands: 0,
        bytes: 0,
    };
    let mut meta = None;
    for (key, name, value) in targets {
        if name == META {
            meta = Some((key, value));
            continue;
        }
        write_key(&mut batch, &key, value).await?;
    }
    batch.flush().await?;
    if let Some((key, KeyDump::Hash { fields })) = meta {
        let mut fields = fields.clone();
        fields.insert(field::META_POOL.to_owned(), keys.pool().as_str().to_owned());
        fields.insert(field::META_TASK.to_owned(), keys.task().as_str().to_owned());
        write_key(&mut batch, &key, &KeyDump::Hash { fields }).await?;
        batch.flush().await?;
    }
    Ok(dump.entries())
}

async fn write_key(batch: &mut Batch, key: &str, value: &KeyDump) -> CoordResult<()> {
    match value {
        KeyDump::String { value } => {
            batch.push(redis::cmd("SET").arg(key).arg(value).clone(), value.len());
        }
        KeyDump::Set { members } => {
            for member in members {
                batch.push(
                    redis::cmd("SADD").arg(key).arg(member).clone(),
                    member.len(),
                );
                batch.flush_if_full().await?;
            }
        }
        KeyDump::Hash { fields } => {
            for (f, v) in fields {
                batch.push(
                    redis::cmd("HSET").arg(key).arg(f).arg(v).clone(),
                    f.len() + v.len(),
                );
                batch.flush_if_full().await?;
            }
        }
        KeyDump::Stream {
            entries,
            last_id,
            groups,
        } => {
            for entry in entries {
                let mut cmd = redis::cmd("XADD");
                cmd.arg(key).arg(&entry.id);
                let mut bytes = 0;
                for (f, v) in &entry.fields {
                    cmd.arg(f).arg(v);
                    bytes += f.len() + v.len();
                }
                batch.push(cmd, bytes);
                batch.flush_if_full().await?;
            }
            for (group, position) in groups {
                batch.push(
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(key)
                        .arg(group)
                        .arg(position)
                        .arg("MKSTREAM")
                        .clone(),
                    0,
                );
            }
            if !entries.is_empty() || !groups.is_empty() {
                batch.push(redis::cmd("XSETID").arg(key).arg(last_id).clone(), 0);
            }
        }
    }
    batch.flush_if_full().await
}
