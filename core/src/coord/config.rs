//! Where and as whom the coordination layer connects to Redis: the node URLs, the topology, the
//! ACL user, TLS and the retry policy, and the redis-rs client for one node built from them.
//! Both the connection handle (`conn`) and the per-master router (`route`) build on this.

use std::fmt;
use std::time::Duration;

use redis::{IntoConnectionInfo, RedisResult};

use super::error::{CoordError, CoordResult};
use super::tls::RedisTls;

/// A password that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The password itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    /// Any text is a password: for command-line and environment parsers.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Whether the nodes form one standalone server or a Redis Cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server (possibly behind a failover proxy); the first node URL is used.
    Standalone,
    /// A Redis Cluster; the node URLs are seeds for slot discovery.
    Cluster,
}

/// How transient failures (lost connections, failover, redirections) are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// Delay before the first retry; doubles each time.
    pub min_delay: Duration,
    /// Longest delay between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // About 20 s of retrying in all: enough to ride out a cluster failover (node timeout
        // plus election, a few seconds) or a restart, short enough that a Redis that stays
        // down is reported rather than waited on.
        Self {
            max_retries: 20,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://host:port` URLs: the server, or seed nodes of a cluster.
    pub nodes: Vec<String>,
    /// Standalone or cluster.
    pub topology: Topology,
    /// ACL user name (`None`: the default user).
    pub username: Option<String>,
    /// ACL password.
    pub password: Option<Secret>,
    /// How long one request may wait for its reply.
    pub response_timeout: Duration,
    /// How long connecting to one node may take.
    pub connection_timeout: Duration,
    /// Retries of transient failures inside the layer.
    pub retry: RetryPolicy,
    /// CA bundle and client certificate for `rediss://` nodes; `None`: the system's roots and
    /// no client certificate.
    pub tls: Option<RedisTls>,
}

impl RedisConfig {
    /// A config for `nodes` with the default user and default timeouts.
    pub fn new(topology: Topology, nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            nodes: nodes.into_iter().map(Into::into).collect(),
            topology,
            username: None,
            password: None,
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            tls: None,
        }
    }

    /// The same config, verifying `rediss://` servers with `tls` (and presenting its client
    /// certificate, if it has one).
    pub fn with_tls(mut self, tls: Option<RedisTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Refuses settings that cannot work together, before any connection is tried.
    pub(super) fn check(&self) -> CoordResult<()> {
        if self.tls.is_some()
            && let Some(plain) = self.nodes.iter().find(|u| !u.starts_with("rediss://"))
        {
            return Err(CoordError::InvalidConfig(format!(
                "TLS files are given but {plain} is not a rediss:// URL"
            )));
        }
        Ok(())
    }

    /// The same config, authenticating as `username` with `password`.
    pub fn with_user(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.username = Some(username.into());
        self.password = Some(password);
        self
    }
}

/// A redis-rs client for the single node at `url`, authenticating (and verifying TLS) as
/// `config` says.
pub(super) fn node_client(config: &RedisConfig, url: &str) -> RedisResult<redis::Client> {
    let mut info = url.into_connection_info()?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose());
    }
    info = info.set_redis_settings(settings);
    match &config.tls {
        Some(tls) if url.starts_with("rediss://") => {
            redis::Client::build_with_tls(info, tls.certificates())
        }
        _ => redis::Client::open(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_never_shows_the_password() {
        let config = RedisConfig::new(Topology::Standalone, ["redis://127.0.0.1:1/"])
            .with_user("maos-pool-a", Secret::new("hunter2-very-secret"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
