//! Tenant isolation in Redis: one ACL user per AgentPool, allowed only that pool's keys and its
//! tasks' keys, so a compromised agent cannot read another pool's tasks — Redis itself refuses
//! with NOPERM.
//!
//! A pool user runs an allow-list: reads of its pool's keys, the library's functions
//! ([`super::functions`]; no `EVAL`), and the few writes those functions make, on the keys
//! agents write only. Redis checks every command a function runs against its caller's ACL, so
//! the write commands are allowed directly too; what no agent can write is decided by the key
//! patterns: the task's budget limits, identity, plan and cancel flag are read-only to it.
//!
//! The operator (connected as a user that may run `ACL`) creates, rotates and deletes these
//! users. On a cluster every change is sent to each node, masters and replicas alike (ACL
//! changes are not replicated), so the user survives a failover. ACL users live in memory: a
//! node that restarts or joins later needs the operator to apply them again (it does, on its
//! next pool reconcile).

use super::config::Secret;
use super::conn::Redis;
use super::error::CoordResult;
use super::keys::PoolKeys;
use super::wake::WAKE_CHANNEL;

/// What a pool user may run on every key of its pool (read-only there): an allow-list, so
/// nothing administrative, no `EVAL`/`EVALSHA`/`SCRIPT` (an arbitrary script could stall the
/// server for every tenant), no `FUNCTION` but calling one, no `SCAN`/`KEYS`/`RANDOMKEY`
/// (they would list other pools' key names), no `MONITOR`, `CLIENT`, `CONFIG`, `DEBUG`,
/// `FLUSH*`. Redis runs a function with its caller's permissions, so every command the library's
/// functions run must be allowed here or in a selector below.
const POOL_USER_READS: [&str; 15] = [
    "-@all",
    // Reads of the agent path: plans, goals and results (HGET, HMGET, HGETALL), shared-state
    // keys (HKEYS), the cancel flag (GET), journals and the bus (XRANGE), and what the library's
    // functions read (HEXISTS, HMGET of the budget limits, EXISTS, XREVRANGE for newest ids).
    "+get",
    "+exists",
    "+hget",
    "+hmget",
    "+hgetall",
    "+hkeys",
    "+hexists",
    "+xrange",
    "+xrevrange",
    // Keyless: the server clock heartbeats and rate limits are stamped with (from inside the
    // functions); the publish function's wake-up on `maos:wake`, the only channel allowed
    // (inside a function PUBLISH is checked like a direct call, so it needs `+publish`;
    // SUBSCRIBE is not allowed).
    "+time",
    "+publish",
    // Connection housekeeping: redis-rs pings (the cluster router checks a master that way),
    // and the cluster client learns the slot map. AUTH and HELLO need no permission; redis-rs's
    // CLIENT SETINFO is sent with its reply ignored (Redis 7.0 does not know it).
    "+ping",
    "+cluster|slots",
    "+cluster|shards",
];

/// The work stream's selector (with the heartbeats, which the reclaim function takes with it:
/// a function's keys must all be writable in one selector): claiming (XREADGROUP, which Redis
/// counts as a read, so it is allowed on these keys alone: on a task's event stream it would
/// take deliveries from the operator's and the audit log's groups), and what the ack, group
/// and reclaim functions run (XACK, XDEL, XGROUP CREATE/DELCONSUMER, XPENDING, and XADD, which
/// puts a released item back: it also lets an agent queue work in its own pool, no more than it
/// could do to the pool's tasks anyway). On the heartbeats (a sorted set) the stream commands
/// fail with WRONGTYPE.
const POOL_USER_WORK: [&str; 8] = [
    "+fcall",
    "+xreadgroup",
    "+xack",
    "+xdel",
    "+xadd",
    "+xpending",
    "+xgroup|create",
    "+xgroup|delconsumer",
];

/// The write selector, on the keys of [`PoolKeys::acl_agent_write_patterns`] only: the
/// commands the library's functions write with. They are direct commands as well (Redis has
/// no permission for "only inside a function"), which is why the key patterns exclude the
/// task's budget limits, identity, plan and cancel flag: no agent can write those, through a
/// function or not.
const POOL_USER_WRITES: [&str; 9] = [
    "+fcall", "+xadd", "+hset", "+hsetnx", "+hdel", "+hincrby", "+zadd", "+zrem", "+sadd",
];

/// The `ACL SETUSER` rules of the pool with `keys` after its name, password excluded: reads of
/// every pool key, one selector for the work stream and one for the keys agents write.
fn pool_user_rules(keys: &PoolKeys) -> Vec<String> {
    let mut rules = vec![
        "reset".to_owned(),
        "on".to_owned(),
        "resetchannels".to_owned(),
        format!("&{WAKE_CHANNEL}"),
    ];
    rules.extend(keys.acl_key_patterns().map(|p| format!("%R~{p}")));
    rules.extend(POOL_USER_READS.iter().map(|r| (*r).to_owned()));
    let selector = |patterns: &[String], commands: &[&str]| {
        let mut parts: Vec<String> = patterns.iter().map(|p| format!("~{p}")).collect();
        parts.extend(commands.iter().map(|c| (*c).to_owned()));
        format!("({})", parts.join(" "))
    };
    rules.push(selector(&[keys.work(), keys.heartbeats()], &POOL_USER_WORK));
    rules.push(selector(
        &keys.acl_agent_write_patterns(),
        &POOL_USER_WRITES,
    ));
    rules
}

/// Credentials an agent connects with.
#[derive(Clone, Debug)]
pub struct PoolCredentials {
    /// The ACL user name.
    pub username: String,
    /// Its password (redacted in `Debug`).
    pub password: Secret,
}

/// Manages the per-pool ACL users (operator only).
#[derive(Clone, Debug)]
pub struct Acl {
    redis: Redis,
}

impl Acl {
    /// ACL management over `redis`, which must be connected as a user allowed to run `ACL`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// A fresh random password (244 bits from the OS's random source).
    pub fn generate_password() -> Secret {
        Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Creates (or resets to exactly these rules) the ACL user of the pool with `keys`.
    pub async fn create_pool_user(
        &self,
        keys: &PoolKeys,
        password: &Secret,
    ) -> CoordResult<PoolCredentials> {
        let username = keys.acl_user();
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg(&username);
        let mut rules = pool_user_rules(keys);
        // After `reset`, which clears passwords too.
        rules.insert(2, format!(">{}", password.expose()));
        cmd.arg(rules);
        self.redis.on_every_node("create pool user", &cmd).await?;
        Ok(PoolCredentials {
            username,
            password: password.clone(),
        })
    }

    /// Replaces the pool user's password; connections already authenticated stay open, new
    /// ones need `password`.
    pub async fn rotate_pool_password(
        &self,
        keys: &PoolKeys,
        password: &Secret,
    ) -> CoordResult<PoolCredentials> {
        let username = keys.acl_user();
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(&username)
            .arg("resetpass")
            .arg(format!(">{}", password.expose()));
        self.redis
            .on_every_node("rotate pool password", &cmd)
            .await?;
        Ok(PoolCredentials {
            username,
            password: password.clone(),
        })
    }

    /// Deletes the pool user (its open connections are closed by Redis).
    pub async fn delete_pool_user(&self, keys: &PoolKeys) -> CoordResult<()> {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("DELUSER").arg(keys.acl_user());
        self.redis.on_every_node("delete pool user", &cmd).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::PoolUid;

    #[test]
    fn pool_user_rules_start_from_nothing_and_read_only_their_pool() {
        let keys = PoolKeys::new(&PoolUid::new("p-1").expect("uid"));
        let rules = pool_user_rules(&keys);
        assert_eq!(rules[..3], ["reset", "on", "resetchannels"]);
        assert!(rules.contains(&"-@all".to_owned()));
        assert!(rules.contains(&"%R~maos:{pool:p-1}:*".to_owned()));
        assert!(rules.contains(&"%R~maos:pool:p-1:*".to_owned()));
        // Only the selectors' patterns are writable, and none is the broad one.
        assert!(!rules.iter().any(|r| r.starts_with("~")));
        assert!(!rules.iter().any(|r| r.contains("~maos:pool:p-1:* ")));
        for forbidden in [
            "+@all",
            "+eval",
            "+evalsha",
            "+script",
            "+function",
            "+scan",
            "+keys",
        ] {
            assert!(!rules.iter().any(|r| r.contains(forbidden)), "{forbidden}");
        }
    }
}
