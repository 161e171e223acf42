//! MCP servers agents cannot reach, as they report them, so the pool's status says which of its
//! servers' tools the agents go without (`ToolsDegraded`) instead of each Task finding out alone.
//!
//! One hash per pool, `agent → report` (the servers down for that agent, with why): each agent
//! writes its own field when the set of servers it cannot use changes, and removes it once it
//! reaches them all again. The operator shows the reports of live agents and drops the fields
//! of agents that are gone.

use serde::{Deserialize, Serialize};

use super::conn::Redis;
use super::error::{CoordError, CoordResult};
use super::functions::Function;
use super::keys::{AgentName, PoolKeys};
use super::script::Call;

/// One server an agent cannot use, and why (never a header's value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerDown {
    /// The pool's name for the server.
    pub server: String,
    /// What went wrong when the agent last tried.
    pub why: String,
}

// KEYS: the pool's tool-error hash. ARGV: agent, report (JSON).
pub(crate) static REPORT: Function = Function::new(
    "maos_tool_error_report",
    r"
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
",
);

// KEYS: the pool's tool-error hash. ARGV: the agents whose reports go.
pub(crate) static CLEAR: Function = Function::new(
    "maos_tool_error_clear",
    r"
return redis.call('HDEL', KEYS[1], unpack(ARGV))
",
);

/// The MCP-server reports of one pool.
#[derive(Clone, Debug)]
pub struct ToolErrors {
    redis: Redis,
    key: String,
}

impl ToolErrors {
    /// The reports of the pool with `keys`.
    pub fn new(redis: Redis, keys: &PoolKeys) -> Self {
        Self {
            redis,
            key: keys.tool_errors(),
        }
    }

    /// Records the servers `agent` cannot use now; none clears its report.
    pub async fn report(&self, agent: &AgentName, down: &[ServerDown]) -> CoordResult<()> {
        if down.is_empty() {
            return self.clear(&[agent.as_str()]).await;
        }
        let value = serde_json::to_string(down)
            .map_err(|e| CoordError::protocol("report tool errors", e.to_string()))?;
        self.redis
            .run("report tool errors", |mut c| {
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

    /// Removes the reports of `agents`.
    pub async fn clear(&self, agents: &[&str]) -> CoordResult<()> {
        if agents.is_empty() {
            return Ok(());
        }
        self.redis
            .run("clear tool errors", |mut c| {
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

    /// Every agent's report, by agent name, sorted; a field that cannot be read is skipped (a
    /// report is a hint for status, never worth failing a reconcile over).
    pub async fn all(&self) -> CoordResult<Vec<(String, Vec<ServerDown>)>> {
        let fields: Vec<(String, String)> = self
            .redis
            .run("read tool errors", |mut c| {
                let key = &self.key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }
            })
            .await?;
        let mut reports: Vec<(String, Vec<ServerDown>)> = fields
            .into_iter()
            .filter_map(|(agent, value)| Some((agent, serde_json::from_str(&value).ok()?)))
            .collect();
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(reports)
    }
}
