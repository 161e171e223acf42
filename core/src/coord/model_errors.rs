//! Refusals of the pool's API key or model that agents report, so the pool's status says at
//! once that no Task on it can run instead of every Task finding out alone.
//!
//! One hash per pool, `agent → report`: each agent writes its own field when the Claude API
//! refuses the key (401, 403) or the model (404), and removes it after a model call goes
//! through. The operator shows the reports of live agents as the pool's `Degraded` condition
//! and drops the fields of agents that are gone (a pool rolled onto a new key starts clean).

use serde::{Deserialize, Serialize};

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::failure::FailReason;
use super::functions::Function;
use super::keys::{AgentName, PoolKeys};
use super::script::Call;

/// One agent's latest refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelErrorReport {
    /// `ModelAuthFailed` or `ModelNotFound`.
    pub reason: FailReason,
    /// The API's answer (status, error type, message); never the key.
    pub message: String,
    /// When it was seen, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The stored form of a report.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    reason: String,
    message: String,
    at_ms: u64,
}

impl ModelErrorReport {
    /// Whether `reason` is about the pool (its key or model) rather than one request, and so
    /// belongs in the pool's status.
    pub fn concerns_pool(reason: FailReason) -> bool {
        matches!(
            reason,
            FailReason::ModelAuthFailed | FailReason::ModelNotFound
        )
    }
}

// KEYS: the pool's model-error hash. ARGV: agent, report (JSON).
pub(crate) static REPORT: Function = Function::new(
    "maos_model_error_report",
    r"
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
",
);

// KEYS: the pool's model-error hash. ARGV: the agents whose reports go.
pub(crate) static CLEAR: Function = Function::new(
    "maos_model_error_clear",
    r"
return redis.call('HDEL', KEYS[1], unpack(ARGV))
",
);

/// The model-error reports of one pool.
#[derive(Clone, Debug)]
pub struct ModelErrors {
    redis: Redis,
    key: String,
}

impl ModelErrors {
    /// The reports of the pool with `keys`.
    pub fn new(redis: Redis, keys: &PoolKeys) -> Self {
        Self {
            redis,
            key: keys.model_errors(),
        }
    }

    /// Records `report` as `agent`'s latest refusal.
    pub async fn report(&self, agent: &AgentName, report: &ModelErrorReport) -> CoordResult<()> {
        let stored = Stored {
            reason: report.reason.as_str().to_owned(),
            message: report.message.clone(),
            at_ms: report.at_ms,
        };
        let value = serde_json::to_string(&stored)
            .map_err(|e| CoordError::protocol("report model error", e.to_string()))?;
        self.redis
            .run("report model error", |mut c| {
                let (key, value) = (&self.key, &value);
                async move {
                    Call::new(&REPORT, &[key], value.len() + 64)
                        .arg(agent.as_str())
                        .arg(value)
                        .invoke::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Removes the reports of `agents` (an agent whose call went through, agents that are gone).
    pub async fn clear(&self, agents: &[&str]) -> CoordResult<()> {
        if agents.is_empty() {
            return Ok(());
        }
        self.redis
            .run("clear model errors", |mut c| {
                let key = &self.key;
                async move {
                    Call::new(&CLEAR, &[key], 64 * agents.len())
                        .arg(agents)
                        .invoke::<()>(&mut c)
                        .await
                }
            })
            .await
    }

    /// Every agent's report, by agent name, sorted. A field that cannot be read is skipped:
    /// a report is a hint for status, never worth failing a reconcile over.
    pub async fn all(&self) -> CoordResult<Vec<(String, ModelErrorReport)>> {
        let fields: Vec<(String, String)> = self
            .redis
            .run("read model errors", |mut c| {
                let key = &self.key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }
            })
            .await?;
        let mut reports: Vec<(String, ModelErrorReport)> = fields
            .into_iter()
            .filter_map(|(agent, value)| {
                let stored: Stored = serde_json::from_str(&value).ok()?;
                let reason = FailReason::ALL
                    .into_iter()
                    .find(|r| r.as_str() == stored.reason)?;
                Some((
                    agent,
                    ModelErrorReport {
                        reason,
                        message: stored.message,
                        at_ms: stored.at_ms,
                    },
                ))
            })
            .collect();
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(reports)
    }
}
