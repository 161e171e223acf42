//! Tenant isolation in Redis: one ACL user per AgentPool, allowed only that pool's keys and its
//! tasks' keys, so a compromised agent cannot read another pool's tasks — Redis itself refuses
//! with NOPERM.
//!
//! The operator (connected as a user that may run `ACL`) creates, rotates and deletes these
//! users. On a cluster every change is sent to each node, masters and replicas alike (ACL
//! changes are not replicated), so the user survives a failover. ACL users live in memory: a node that restarts or joins
//! later needs the operator to apply them again (it does, on its next pool reconcile).

use super::config::Secret;
use super::conn::Redis;
use super::error::CoordResult;
use super::keys::PoolKeys;
use super::wake::WAKE_CHANNEL;

/// Command permissions of a pool user: data commands and running scripts, nothing
/// administrative or dangerous (no KEYS, FLUSHALL, CONFIG, ACL, DEBUG…), no pub/sub but the
/// publishing of wake-ups on their one channel (see `acl_channel` below), no
/// flushing the shared script cache or managing functions (both would reach other tenants),
/// plus the one cluster command a cluster client needs to learn the slot map. Scripts run with
/// the caller's permissions, so EVAL cannot reach another pool's keys either.
const POOL_USER_COMMANDS: [&str; 9] = [
    "+@all",
    "-@admin",
    "-@dangerous",
    "-@pubsub",
    "+publish",
    "-script|flush",
    "-script|kill",
    "-function",
    "+cluster|slots",
];

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
        cmd.arg("SETUSER")
            .arg(&username)
            .arg("reset")
            .arg("on")
            .arg(format!(">{}", password.expose()))
            .arg("resetchannels")
            // The event script wakes the operator on this channel (scripts run with the
            // caller's permissions); subscribing is refused above, so it cannot listen.
            .arg(format!("&{WAKE_CHANNEL}"));
        for pattern in keys.acl_key_patterns() {
            cmd.arg(format!("~{pattern}"));
        }
        for rule in POOL_USER_COMMANDS {
            cmd.arg(rule);
        }
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
