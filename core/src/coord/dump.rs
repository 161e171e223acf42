//! A whole task's keys as plain data, read atomically and written back under any task uid: what
//! a checkpoint stores.
//!
//! Reading is one MULTI/EXEC transaction of plain reads (HGETALL, XRANGE, XINFO, ...) over every
//! key of the task. All of them share the task's hash tag, so they sit in one cluster slot and
//! the transaction sees them at a single instant, with no pause of the agents. (A Lua script
//! would be atomic too, but copies every value into a Lua string and back: ten times longer
//! during which Redis serves no one else.) Journals are found through the journal index; the
//! transaction reads the index again and the read is repeated if it names other journals than
//! the ones read, so a journal created between the two steps is never missed.
//!
//! Writing first removes whatever the target task has, writes every other key, and writes `meta`
//! last: `meta` marks a task's state as present, so a restore that stops half-way leaves a task
//! that still reads as lost, never one that runs on partial state.

use redis::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::keys::{TaskKeys, field};
use crate::dag::SubtaskName;

/// How often the read is tried again when journals appear while it runs.
const READ_TRIES: usize = 8;
/// Roughly how many bytes one pipeline of a restore carries.
const RESTORE_CHUNK_BYTES: usize = 1 << 20;
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

/// How a key of a task is read, by its name (the journal index, the one set, is read apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Hash,
    String,
    Stream,
}

fn kind_of(name: &str) -> Kind {
    match name {
        "events" | "bus" => Kind::Stream,
        _ if name.starts_with(JOURNAL_PREFIX) => Kind::Stream,
        "cancel" => Kind::String,
        _ => Kind::Hash,
    }
}

/// Reads every key of the task at one instant.
pub async fn read(redis: &Redis, keys: &TaskKeys) -> CoordResult<TaskDump> {
    const OP: &str = "read task dump";
    let index = keys.journal_index();
    for _ in 0..READ_TRIES {
        let journals: BTreeSet<String> = redis
            .run(OP, |mut c| {
                let index = &index;
                async move { redis::cmd("SMEMBERS").arg(index).query_async(&mut c).await }
            })
            .await?;
        let mut all: Vec<String> = keys.fixed().into_iter().filter(|k| *k != index).collect();
        for subtask in &journals {
            let name = SubtaskName::new(subtask).map_err(|e| {
                CoordError::protocol(OP, format!("journal index names {subtask:?}: {e}"))
            })?;
            all.push(keys.journal(&name));
        }
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        pipe.cmd("SMEMBERS").arg(&index);
        let mut plan = Vec::with_capacity(all.len());
        for key in &all {
            let name = relative(keys, key)
                .ok_or_else(|| CoordError::protocol(OP, "key outside the task"))?;
            let kind = kind_of(name);
            match kind {
                Kind::Hash => {
                    pipe.cmd("HGETALL").arg(key);
                }
                Kind::String => {
                    pipe.cmd("GET").arg(key);
                }
                Kind::Stream => {
                    pipe.cmd("XRANGE").arg(key).arg("-").arg("+");
                    // Both fail on a missing stream: an error reply here means "absent".
                    pipe.cmd("XINFO").arg("STREAM").arg(key);
                    pipe.cmd("XINFO").arg("GROUPS").arg(key);
                }
            }
            plan.push((name.to_owned(), kind));
        }
        let reply: Value = redis
            .run(OP, |mut c| {
                let pipe = &pipe;
                async move { pipe.query_async(&mut c).await }
            })
            .await?;
        let mut replies = array(OP, reply)?.into_iter();
        let now: BTreeSet<String> = array(OP, replies.next().unwrap_or(Value::Nil))?
            .into_iter()
            .map(|m| owned_text(OP, m))
            .collect::<CoordResult<_>>()?;
        if now != journals {
            continue;
        }
        let mut dump = TaskDump::default();
        if !now.is_empty() {
            let name = relative(keys, &index).unwrap_or("journals").to_owned();
            dump.keys.insert(name, KeyDump::Set { members: now });
        }
        let mut next = || replies.next().unwrap_or(Value::Nil);
        for (name, kind) in plan {
            let value = match kind {
                Kind::Hash => {
                    let fields: BTreeMap<String, String> = pairs(OP, next())?.into_iter().collect();
                    (!fields.is_empty()).then_some(KeyDump::Hash { fields })
                }
                Kind::String => match next() {
                    Value::Nil => None,
                    v => Some(KeyDump::String {
                        value: owned_text(OP, v)?,
                    }),
                },
                Kind::Stream => {
                    let (range, info, groups) = (next(), next(), next());
                    stream(OP, range, info, groups)?
                }
            };
            if let Some(value) = value {
                dump.keys.insert(name, value);
            }
        }
        return Ok(dump);
    }
    Err(CoordError::protocol(
        OP,
        "journals kept appearing while the task was read",
    ))
}

/// A stream from its XRANGE, XINFO STREAM and XINFO GROUPS replies; `None` when it is absent.
fn stream(
    op: &'static str,
    range: Value,
    info: Value,
    groups: Value,
) -> CoordResult<Option<KeyDump>> {
    if matches!(info, Value::ServerError(_)) {
        return Ok(None);
    }
    let mut entries = Vec::new();
    for raw in array(op, range)? {
        let mut entry = array(op, raw)?.into_iter();
        let id = owned_text(op, entry.next().unwrap_or(Value::Nil))?;
        let fields = match entry.next().unwrap_or(Value::Nil) {
            Value::Nil => Vec::new(),
            flat => pairs(op, flat)?,
        };
        entries.push(StreamEntry { id, fields });
    }
    let last_id = fields_of(op, info)?
        .into_iter()
        .find(|(k, _)| k == "last-generated-id")
        .map(|(_, v)| owned_text(op, v))
        .transpose()?
        .unwrap_or_else(|| "0-0".to_owned());
    let mut by_group = BTreeMap::new();
    for group in array(op, groups)? {
        let mut name = None;
        let mut delivered = None;
        for (k, v) in fields_of(op, group)? {
            match k.as_str() {
                "name" => name = Some(owned_text(op, v)?),
                "last-delivered-id" => delivered = Some(owned_text(op, v)?),
                _ => {}
            }
        }
        if let (Some(name), Some(delivered)) = (name, delivered) {
            by_group.insert(name, delivered);
        }
    }
    Ok(Some(KeyDump::Stream {
        entries,
        last_id,
        groups: by_group,
    }))
}

/// The field/value pairs of a reply (a flat array in RESP2, a map in RESP3), values raw.
fn fields_of(op: &'static str, value: Value) -> CoordResult<Vec<(String, Value)>> {
    match value {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((owned_text(op, k)?, v)))
            .collect(),
        other => {
            let items = array(op, other)?;
            if items.len() % 2 != 0 {
                return Err(CoordError::protocol(
                    op,
                    "odd number of items in a pair list",
                ));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.push((owned_text(op, k)?, v));
            }
            Ok(out)
        }
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
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(CoordError::protocol(
            op,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// The field/value pairs of a hash or stream entry, as text.
fn pairs(op: &'static str, value: Value) -> CoordResult<Vec<(String, String)>> {
    fields_of(op, value)?
        .into_iter()
        .map(|(k, v)| Ok((k, owned_text(op, v)?)))
        .collect()
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
