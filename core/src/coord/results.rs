//! Subtask results: the first completion of a subtask is recorded, every later one is refused.
//!
//! Work is delivered at least once, so two agents can finish the same (subtask, attempt), or a
//! slow agent can finish an attempt that was already reclaimed and run again. A Lua script
//! records a result only if the subtask has none, and returns the stored winner; the caller won
//! if the winner is its own (attempt, agent), which also makes a retried call after a lost reply
//! report the truth.

use serde::{Deserialize, Serialize};

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::{AgentName, TaskKeys};
use super::script::Call;
use crate::dag::SubtaskName;

// KEYS: results. ARGV: subtask, encoded result. Reply: the stored encoded result (ours if we won).
pub(crate) static RECORD: Function = Function::new(
    "maos_result_record",
    r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return ARGV[2] end
return redis.call('HGET', KEYS[1], ARGV[1])
",
);

/// A recorded subtask result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskResult {
    /// The attempt that produced it.
    pub attempt: u32,
    /// The agent that produced it.
    pub agent: String,
    /// The result text.
    pub result: String,
}

/// Whether a [`Results::record`] call's result is the recorded one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    /// This call's result is the subtask's result.
    Won,
    /// Another completion was recorded first; this is it.
    Lost {
        /// The recorded result.
        recorded: SubtaskResult,
    },
}

/// The results of one task's subtasks.
#[derive(Clone, Debug)]
pub struct Results {
    redis: Redis,
    keys: TaskKeys,
}

fn decode(op: &'static str, raw: &[u8]) -> CoordResult<SubtaskResult> {
    serde_json::from_slice(raw).map_err(|e| CoordError::protocol(op, e.to_string()))
}

impl Results {
    /// The results of the task with `keys`.
    pub fn new(redis: Redis, keys: TaskKeys) -> Self {
        Self { redis, keys }
    }

    /// Records `result` for `subtask` unless a completion was recorded before.
    pub async fn record(
        &self,
        subtask: &SubtaskName,
        attempt: u32,
        agent: &AgentName,
        result: &str,
    ) -> CoordResult<RecordOutcome> {
        const OP: &str = "record result";
        let ours = SubtaskResult {
            attempt,
            agent: agent.as_str().to_owned(),
            result: result.to_owned(),
        };
        let encoded =
            serde_json::to_vec(&ours).map_err(|e| CoordError::protocol(OP, e.to_string()))?;
        let key = self.keys.results();
        let stored: Vec<u8> = self
            .redis
            .run(OP, |mut c| {
                let (key, encoded) = (&key, &encoded);
                async move {
                    Call::new(&RECORD, &[key], encoded.len() + 64)
                        .arg(subtask.as_str())
                        .arg(encoded.as_slice())
                        .invoke(&mut c)
                        .await
                }
            })
            .await?;
        let recorded = decode(OP, &stored)?;
        if recorded.attempt == ours.attempt && recorded.agent == ours.agent {
            Ok(RecordOutcome::Won)
        } else {
            Ok(RecordOutcome::Lost { recorded })
        }
    }

    /// The recorded result of `subtask`, if any.
    pub async fn get(&self, subtask: &SubtaskName) -> CoordResult<Option<SubtaskResult>> {
        const OP: &str = "get result";
        let key = self.keys.results();
        let raw: Option<Vec<u8>> = self
            .redis
            .run(OP, |mut c| {
                let key = &key;
                async move {
                    redis::cmd("HGET")
                        .arg(key)
                        .arg(subtask.as_str())
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        raw.map(|r| decode(OP, &r)).transpose()
    }

    /// Removes the recorded result of `subtask`, so a new attempt can record one (the operator,
    /// when it rejects a plan and asks for another).
    pub async fn forget(&self, subtask: &SubtaskName) -> CoordResult<()> {
        let key = self.keys.results();
        self.redis
            .run("forget result", |mut c| {
                let key = &key;
                async move {
                    redis::cmd("HDEL")
                        .arg(key)
                        .arg(subtask.as_str())
                        .query_async::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Every recorded result, by subtask name.
    pub async fn all(&self) -> CoordResult<Vec<(String, SubtaskResult)>> {
        const OP: &str = "all results";
        let key = self.keys.results();
        let raw: Vec<(String, Vec<u8>)> = self
            .redis
            .run(OP, |mut c| {
                let key = &key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }
            })
            .await?;
        let mut all = raw
            .into_iter()
            .map(|(name, r)| Ok((name, decode(OP, &r)?)))
            .collect::<CoordResult<Vec<_>>>()?;
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }
}
