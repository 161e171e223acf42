//! A task's shared state: named values with a version per key, written by compare-and-set.
//!
//! A state key is chosen by the model, so it is only ever a *field* of the task's `kv` hash (and
//! of its `kv:ver` hash), never part of a Redis key: `../x` or `maos:*` is a harmless field name.
//! Versions only grow, also across deletes, so a CAS on a deleted-then-recreated key can never
//! succeed against a stale version (no ABA).

use redis::Value;

use super::conn::Redis;
use super::entry::parse;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::TaskKeys;
use super::script::Call;

/// Default cap on one value: 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Cap on a state key's length, so a key cannot be used to smuggle a value past the value cap.
pub const MAX_KEY_BYTES: usize = 1024;

// KEYS: kv, kv:ver. ARGV: key. Reply: {value or nil, version}.
pub(crate) static GET: Function = Function::new(
    "maos_state_get",
    r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
local ver = redis.call('HGET', KEYS[2], ARGV[1])
return {v, tonumber(ver) or 0}
",
);

// KEYS: kv, kv:ver. ARGV: key, value. Reply: new version.
pub(crate) static PUT: Function = Function::new(
    "maos_state_put",
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
",
);

// KEYS: kv, kv:ver. ARGV: key, expected version, value.
// Reply: {1, new version} on success, {0, current version, current value or nil} on a lost race.
pub(crate) static CAS: Function = Function::new(
    "maos_state_cas",
    r"
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0
if cur ~= tonumber(ARGV[2]) then
  return {0, cur, redis.call('HGET', KEYS[1], ARGV[1])}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {1, redis.call('HINCRBY', KEYS[2], ARGV[1], 1)}
",
);

// KEYS: kv, kv:ver. ARGV: key. Reply: 1 if a value was removed. The version is bumped, not
// removed, so versions stay monotonic.
pub(crate) static DELETE: Function = Function::new(
    "maos_state_delete",
    r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if removed == 1 then redis.call('HINCRBY', KEYS[2], ARGV[1], 1) end
return removed
",
);

/// A value with the version it was read at; `value` is `None` when the key has no value (never
/// written, or deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value's bytes.
    pub value: Option<Vec<u8>>,
    /// The key's version: 0 before the first write, then +1 per write or delete.
    pub version: u64,
}

/// What a compare-and-set did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written; this is its new version.
    Written {
        /// The version after the write.
        version: u64,
    },
    /// Another writer got there first; this is what is stored now, to retry or merge against.
    Conflict {
        /// The current value and version.
        current: Versioned,
    },
}

/// Shared state of one task.
#[derive(Clone, Debug)]
pub struct SharedState {
    redis: Redis,
    keys: TaskKeys,
    max_value_bytes: usize,
}

impl SharedState {
    /// The shared state of the task with `keys`, with the default value cap.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self {
            redis,
            keys,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }

    /// The same state with a different value cap in bytes.
    pub fn with_max_value_bytes(mut self, limit: usize) -> Self {
        self.max_value_bytes = limit;
        self
    }

    /// The value cap in bytes.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    fn check_key(key: &str) -> CoordResult<()> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(CoordError::InvalidStateKey {
                size: key.len(),
                limit: MAX_KEY_BYTES,
            });
        }
        Ok(())
    }

    fn check_value(&self, key: &str, value: &[u8]) -> CoordResult<()> {
        if value.len() > self.max_value_bytes {
            return Err(CoordError::ValueTooLarge {
                key: key.to_owned(),
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Reads `key`'s value and version in one atomic step.
    pub async fn get(&self, key: &str) -> CoordResult<Versioned> {
        Self::check_key(key)?;
        let (kv, ver) = (self.keys.kv(), self.keys.kv_versions());
        let reply: Value = self
            .redis
            .run("state get", |mut c| {
                let (kv, ver) = (&kv, &ver);
                async move {
                    Call::new(&GET, &[kv, ver], key.len())
                        .arg(key)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        let (value, version): (Option<Vec<u8>>, u64) = parse("state get", reply)?;
        Ok(Versioned { value, version })
    }

    /// Writes `value` unconditionally and returns the new version.
    pub async fn put(&self, key: &str, value: &[u8]) -> CoordResult<u64> {
        Self::check_key(key)?;
        self.check_value(key, value)?;
        let (kv, ver) = (self.keys.kv(), self.keys.kv_versions());
        self.redis
            .run("state put", |mut c| {
                let (kv, ver) = (&kv, &ver);
                async move {
                    Call::new(&PUT, &[kv, ver], key.len() + value.len())
                        .arg(key)
                        .arg(value)
                        .invoke(&mut c)
                        .await
                }
            })
            .await
    }

    /// Writes `value` only if `key` is still at `expected_version` (0: never written).
    ///
    /// A lost race returns the current value and version instead of an error: the caller
    /// retries or merges. If the reply to a successful write is lost and the call is retried,
    /// the retry reports a conflict whose current value is the caller's own.
    pub async fn cas(
        &self,
        key: &str,
        expected_version: u64,
        value: &[u8],
    ) -> CoordResult<CasOutcome> {
        Self::check_key(key)?;
        self.check_value(key, value)?;
        let (kv, ver) = (self.keys.kv(), self.keys.kv_versions());
        let reply: Value = self
            .redis
            .run("state cas", |mut c| {
                let (kv, ver) = (&kv, &ver);
                async move {
                    Call::new(&CAS, &[kv, ver], key.len() + value.len() + 20)
                        .arg(key)
                        .arg(expected_version)
                        .arg(value)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        let items: Vec<Value> = parse("state cas", reply)?;
        let mut items = items.into_iter();
        let won: i64 = parse("state cas", items.next().unwrap_or(Value::Nil))?;
        let version: u64 = parse("state cas", items.next().unwrap_or(Value::Nil))?;
        if won == 1 {
            return Ok(CasOutcome::Written { version });
        }
        let value: Option<Vec<u8>> = parse("state cas", items.next().unwrap_or(Value::Nil))?;
        Ok(CasOutcome::Conflict {
            current: Versioned { value, version },
        })
    }

    /// Removes `key`'s value (its version is kept and bumped); whether there was a value.
    pub async fn delete(&self, key: &str) -> CoordResult<bool> {
        Self::check_key(key)?;
        let (kv, ver) = (self.keys.kv(), self.keys.kv_versions());
        let removed: i64 = self
            .redis
            .run("state delete", |mut c| {
                let (kv, ver) = (&kv, &ver);
                async move {
                    Call::new(&DELETE, &[kv, ver], key.len())
                        .arg(key)
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        Ok(removed == 1)
    }

    /// The keys that have a value and start with `prefix`, sorted.
    ///
    /// The prefix is compared as plain bytes, so glob characters in it have no effect.
    pub async fn list(&self, prefix: &str) -> CoordResult<Vec<String>> {
        let kv = self.keys.kv();
        let mut keys: Vec<String> = self
            .redis
            .run("state list", |mut c| {
                let kv = &kv;
                async move { redis::cmd("HKEYS").arg(kv).query_async(&mut c).await }
            })
            .await?;
        keys.retain(|k| k.starts_with(prefix));
        keys.sort();
        Ok(keys)
    }
}
