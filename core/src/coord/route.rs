//! Sending a Redis Cluster request whose keys share one slot straight to that slot's master.
//!
//! redis-rs's cluster connection hands every request to one background task, which routes it
//! and passes it on to a per-node connection: a channel hop and a routing step per request on
//! top of the node connection's own. On these 2-core machines that made our client spend about
//! 1.8× the CPU per call of a standalone connection, CPU the Redis servers on the same cores
//! then lacked (BENCHMARKS.md). Nearly every call of this layer addresses one task's or one
//! pool's keys, which share a hash tag, so a `Router` keeps a plain multiplexed connection to
//! each master and a slot → master table read from `CLUSTER SLOTS`, and sends such requests
//! there itself. Anything else (keyless commands, keys in several slots, commands this module
//! does not know) goes through the cluster client as before.
//!
//! The cluster client stays the authority on topology. When a direct request meets a topology
//! change (MOVED, ASK, a failover state, a lost connection), the table is marked stale and the
//! same request is sent again through the cluster client, which follows redirections; the table
//! is read again in the background, and until it is back requests take the cluster client's
//! path. A direct request that failed with a lost connection may have been applied, so sending
//! it again is at-least-once, exactly as the layer's own retries already are.
//!
//! `WAIT` counts only the writes of the connection it is sent on, so it is sent on the cluster
//! client and on every direct connection, and answers with the smallest count. For that the
//! direct connections outlive a reload: a master still at the same address keeps its
//! connection (checked with a `PING`), and a stale table is kept until a fresh one replaces it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Arg, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::config::{RedisConfig, node_client};
use super::error::{is_topology, is_transient};
use super::keys::slot_of_bytes;

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;
/// Marks a slot no master serves in the table.
const NO_OWNER: u16 = u16::MAX;
/// Shortest pause between two reads of the slot table, so a failover in progress (the table
/// read back still names the dead master) costs two reads a second at most, not one per request.
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// Where a command's keys live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keys {
    /// The command takes no key (`MULTI`, `EXEC`): it goes wherever the rest of its pipeline goes.
    None,
    /// Every key of the command hashes to this slot.
    Slot(u16),
    /// Keys in several slots, or a command this module does not know: the cluster client routes it.
    Unknown,
}

impl Keys {
    /// `self`, except that nothing keyed at all is left to the cluster client.
    fn keyed(self) -> Keys {
        match self {
            Keys::None => Keys::Unknown,
            k => k,
        }
    }

    /// The keys of two commands sent together.
    fn and(self, other: Keys) -> Keys {
        match (self, other) {
            (Keys::None, k) | (k, Keys::None) => k,
            (Keys::Slot(a), Keys::Slot(b)) if a == b => Keys::Slot(a),
            _ => Keys::Unknown,
        }
    }
}

/// Commands whose only key is their first argument.
const FIRST_KEY: &[&str] = &[
    "APPEND",
    "DECR",
    "DECRBY",
    "EXPIRE",
    "EXPIREAT",
    "GET",
    "GETDEL",
    "GETEX",
    "GETSET",
    "HDEL",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HMSET",
    "HSCAN",
    "HSET",
    "HSETNX",
    "HSTRLEN",
    "HVALS",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINDEX",
    "LLEN",
    "LPOP",
    "LPUSH",
    "LRANGE",
    "LREM",
    "LSET",
    "LTRIM",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PSETEX",
    "PTTL",
    "RPOP",
    "RPUSH",
    "SADD",
    "SCARD",
    "SET",
    "SETEX",
    "SETNX",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SPOP",
    "SRANDMEMBER",
    "SREM",
    "SSCAN",
    "STRLEN",
    "TTL",
    "TYPE",
    "XACK",
    "XADD",
    "XAUTOCLAIM",
    "XCLAIM",
    "XDEL",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREVRANGE",
    "XSETID",
    "XTRIM",
    "ZADD",
    "ZCARD",
    "ZCOUNT",
    "ZINCRBY",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZRANGE",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREM",
    "ZREMRANGEBYRANK",
    "ZREMRANGEBYSCORE",
    "ZREVRANGE",
    "ZSCAN",
    "ZSCORE",
];

/// Commands all of whose arguments are keys.
const ALL_KEYS: &[&str] = &["DEL", "EXISTS", "MGET", "TOUCH", "UNLINK"];

/// Commands whose key follows a subcommand (`XGROUP CREATE <key> …`, `XINFO STREAM <key>`).
const SUBCOMMAND_KEY: &[&str] = &["OBJECT", "XGROUP", "XINFO"];

/// Commands taking a key count, then the keys (`EVALSHA <sha> <numkeys> <key>… <arg>…`).
const COUNTED_KEYS: &[&str] = &[
    "EVAL",
    "EVALSHA",
    "EVALSHA_RO",
    "EVAL_RO",
    "FCALL",
    "FCALL_RO",
];

/// Commands that take no key and may share a pipeline with keyed ones.
const NO_KEY: &[&str] = &["DISCARD", "EXEC", "MULTI"];

/// Room for the longest command name of the lists above.
const NAME_MAX: usize = 16;

/// `name` in upper case, in `buf`; `None` if it is longer than any name of the lists.
fn upper<'b>(name: &[u8], buf: &'b mut [u8; NAME_MAX]) -> Option<&'b [u8]> {
    let upper = buf.get_mut(..name.len())?;
    for (to, from) in upper.iter_mut().zip(name) {
        *to = from.to_ascii_uppercase();
    }
    Some(upper)
}

/// Whether upper-case `name` is in `list` (sorted: every request is looked up here).
fn named(list: &[&str], name: &[u8]) -> bool {
    list.binary_search_by(|n| n.as_bytes().cmp(name)).is_ok()
}

/// The slot of every key among `keys`, if they share one and there is at least one.
fn slot_of_all<'a>(keys: impl Iterator<Item = Option<&'a [u8]>>) -> Keys {
    let mut found = Keys::None;
    for key in keys {
        let Some(key) = key else {
            return Keys::Unknown;
        };
        found = found.and(Keys::Slot(slot_of_bytes(key)));
    }
    found.keyed()
}

/// Where the keys of `cmd` live.
pub(crate) fn command_keys(cmd: &Cmd) -> Keys {
    let arg = |i: usize| match cmd.args_iter().nth(i) {
        Some(Arg::Simple(bytes)) => Some(bytes),
        _ => None,
    };
    let mut buf = [0; NAME_MAX];
    let Some(name) = arg(0).and_then(|name| upper(name, &mut buf)) else {
        return Keys::Unknown;
    };
    if named(FIRST_KEY, name) {
        slot_of_all(std::iter::once(arg(1)))
    } else if named(COUNTED_KEYS, name) {
        let count = arg(2)
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok());
        match count {
            Some(0) | None => Keys::Unknown,
            Some(n) => slot_of_all((3..3 + n).map(arg)),
        }
    } else if named(&["XREAD", "XREADGROUP"], name) {
        // `… STREAMS <key>… <id>…`: as many ids as keys follow the keyword.
        let args: Vec<Option<&[u8]>> = cmd.args_iter().map(simple).collect();
        let Some(streams) = args
            .iter()
            .position(|a| a.is_some_and(|a| a.eq_ignore_ascii_case(b"STREAMS")))
        else {
            return Keys::Unknown;
        };
        let rest = &args[streams + 1..];
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Keys::Unknown;
        }
        slot_of_all(rest[..rest.len() / 2].iter().copied())
    } else if named(ALL_KEYS, name) {
        slot_of_all(cmd.args_iter().skip(1).map(simple))
    } else if named(SUBCOMMAND_KEY, name) {
        slot_of_all(std::iter::once(arg(2)))
    } else if named(NO_KEY, name) {
        Keys::None
    } else {
        Keys::Unknown
    }
}

fn simple(arg: Arg<&[u8]>) -> Option<&[u8]> {
    match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    }
}

/// Where the keys of a whole pipeline live: one slot only if every keyed command shares it.
pub(crate) fn pipeline_keys(pipeline: &Pipeline) -> Keys {
    pipeline
        .cmd_iter()
        .fold(Keys::None, |acc, cmd| acc.and(command_keys(cmd)))
        .keyed()
}

/// Whether a failed direct request should go through the cluster client instead: a lost
/// connection or a topology error, also when it is one of a pipeline's or transaction's errors.
fn misrouted(err: &RedisError) -> bool {
    is_transient(err)
        || err.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, e)| e.kind().is_some_and(is_topology))
        })
}

fn misrouted_value(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind().is_some_and(is_topology))
}

/// Counts of requests, for tests and for whoever wants to know the shortcut is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteStats {
    /// Requests answered by a slot's master over its direct connection.
    pub direct: u64,
    /// Direct requests that met a topology change and were sent again through the cluster client.
    pub rerouted: u64,
    /// Times the slot table was read.
    pub table_loads: u64,
}

/// The slot → master table and a connection to each master.
struct Table {
    owner: Box<[u16]>,
    /// `host:port` of each master, in the order of `masters`.
    addresses: Vec<String>,
    masters: Vec<MultiplexedConnection>,
}

impl Table {
    fn master(&self, slot: u16) -> Option<&MultiplexedConnection> {
        let index = *self.owner.get(usize::from(slot))?;
        self.masters.get(usize::from(index))
    }
}

/// Sends single-slot requests to the slot's master directly (see the module docs).
pub(crate) struct Router {
    config: Arc<RedisConfig>,
    response_timeout: Duration,
    table: RwLock<Option<Arc<Table>>>,
    /// Whether the table may route requests; a stale one is only kept for `WAIT` and reuse.
    fresh: AtomicBool,
    reloading: AtomicBool,
    /// When the router was made: the clock of `next_load_ms`.
    born: Instant,
    /// Milliseconds after `born` before which the table is not read again.
    next_load_ms: AtomicU64,
    direct: AtomicU64,
    rerouted: AtomicU64,
    table_loads: AtomicU64,
}

impl Router {
    /// A router with no table yet; [`Router::reload`] fills it.
    pub(crate) fn new(config: Arc<RedisConfig>, response_timeout: Duration) -> Self {
        Self {
            config,
            response_timeout,
            table: RwLock::new(None),
            fresh: AtomicBool::new(false),
            reloading: AtomicBool::new(false),
            born: Instant::now(),
            next_load_ms: AtomicU64::new(0),
            direct: AtomicU64::new(0),
            rerouted: AtomicU64::new(0),
            table_loads: AtomicU64::new(0),
        }
    }

    /// The counts so far.
    pub(crate) fn stats(&self) -> RouteStats {
        RouteStats {
            direct: self.direct.load(Ordering::Relaxed),
            rerouted: self.rerouted.load(Ordering::Relaxed),
            table_loads: self.table_loads.load(Ordering::Relaxed),
        }
    }

    fn current(&self) -> Option<Arc<Table>> {
        match self.table.read() {
            Ok(table) => table.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, table: Arc<Table>) {
        match self.table.write() {
            Ok(mut slot) => *slot = Some(table),
            Err(poisoned) => *poisoned.into_inner() = Some(table),
        }
    }

    /// The connection to `slot`'s master; without a fresh table, starts reading one and says
    /// `None`.
    fn master(
        self: &Arc<Self>,
        slot: u16,
        cluster: &ClusterConnection,
    ) -> Option<MultiplexedConnection> {
        if self.fresh.load(Ordering::Acquire)
            && let Some(table) = self.current()
        {
            return table.master(slot).cloned();
        }
        self.reload_in_background(cluster);
        None
    }

    /// Counts a direct reply and says whether it met a topology change (`misrouted`); if it
    /// did, stops routing by the table and reads it again.
    fn must_reroute(self: &Arc<Self>, misrouted: bool, cluster: &ClusterConnection) -> bool {
        if !misrouted {
            self.direct.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.rerouted.fetch_add(1, Ordering::Relaxed);
        self.fresh.store(false, Ordering::Release);
        self.reload_in_background(cluster);
        true
    }

    fn millis_since_born(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts reading the table on a task of its own, unless a read is running or the last one
    /// began less than [`MIN_RELOAD_INTERVAL`] ago; a later request asks again meanwhile.
    fn reload_in_background(self: &Arc<Self>, cluster: &ClusterConnection) {
        if self.millis_since_born() < self.next_load_ms.load(Ordering::Relaxed)
            || self.reloading.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reloading.store(false, Ordering::Release);
            return;
        };
        let router = Arc::clone(self);
        let mut cluster = cluster.clone();
        runtime.spawn(async move {
            router.reload(&mut cluster).await;
            router.reloading.store(false, Ordering::Release);
        });
    }

    /// Reads the slot table through the cluster client and connects to every master; when
    /// either fails the table stays stale, so requests take the cluster client's path meanwhile.
    pub(crate) async fn reload(&self, cluster: &mut ClusterConnection) {
        let interval = u64::try_from(MIN_RELOAD_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        self.next_load_ms.store(
            self.millis_since_born().saturating_add(interval),
            Ordering::Relaxed,
        );
        self.table_loads.fetch_add(1, Ordering::Relaxed);
        let previous = self.current();
        match self.load(cluster, previous.as_deref()).await {
            Ok(table) => {
                tracing::debug!(masters = table.masters.len(), "cluster slot table loaded");
                self.set(Arc::new(table));
                self.fresh.store(true, Ordering::Release);
            }
            Err(error) => {
                tracing::debug!(%error, "cluster slot table not loaded; using the cluster client's routing");
                self.fresh.store(false, Ordering::Release);
            }
        }
    }

    /// A connection to the master at `address`: the previous table's if it still answers.
    async fn connect_master(
        &self,
        address: &str,
        previous: Option<&Table>,
        scheme: &str,
        connection_config: &redis::AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let known = previous.and_then(|table| {
            let index = table.addresses.iter().position(|a| a == address)?;
            table.masters.get(index).cloned()
        });
        if let Some(mut connection) = known
            && redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .is_ok()
        {
            return Ok(connection);
        }
        node_client(&self.config, &format!("{scheme}://{address}/"))?
            .get_multiplexed_async_connection_with_config(connection_config)
            .await
    }

    async fn load(
        &self,
        cluster: &mut ClusterConnection,
        previous: Option<&Table>,
    ) -> RedisResult<Table> {
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(cluster)
            .await?;
        let ranges = parse_slots(&reply).ok_or_else(|| {
            RedisError::from((redis::ErrorKind::Client, "unexpected CLUSTER SLOTS reply"))
        })?;
        let scheme = match self.config.nodes.first() {
            Some(url) if url.starts_with("rediss://") => "rediss",
            _ => "redis",
        };
        let connection_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connection_timeout))
            .set_response_timeout(Some(self.response_timeout));
        let mut owner = vec![NO_OWNER; SLOTS].into_boxed_slice();
        let mut addresses: Vec<String> = Vec::new();
        let mut masters = Vec::new();
        for (start, end, address) in ranges {
            let index = match addresses.iter().position(|a| *a == address) {
                Some(index) => index,
                None => {
                    masters.push(
                        self.connect_master(&address, previous, scheme, &connection_config)
                            .await?,
                    );
                    addresses.push(address);
                    addresses.len() - 1
                }
            };
            let index = u16::try_from(index).map_err(|_| {
                RedisError::from((redis::ErrorKind::Client, "too many cluster masters"))
            })?;
            for slot in start..=end {
                if let Some(entry) = owner.get_mut(slot) {
                    *entry = index;
                }
            }
        }
        Ok(Table {
            owner,
            addresses,
            masters,
        })
    }
}

/// The `(first slot, last slot, "host:port" of the master)` ranges of a `CLUSTER SLOTS` reply;
/// `None` if it is malformed or names a master by an unknown endpoint (`?` or empty).
fn parse_slots(reply: &Value) -> Option<Vec<(usize, usize, String)>> {
    let Value::Array(entries) = reply else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(fields) = entry else {
                return None;
            };
            let int = |v: &Value| match v {
                Value::Int(n) => usize::try_from(*n).ok().filter(|n| *n < SLOTS),
                _ => None,
            };
            let start = int(fields.first()?)?;
            let end = int(fields.get(1)?)?;
            let Value::Array(master) = fields.get(2)? else {
                return None;
            };
            let host = match master.first()? {
                Value::BulkString(b) => std::str::from_utf8(b).ok()?.to_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let Value::Int(port) = master.get(1)? else {
                return None;
            };
            if host.is_empty() || host == "?" || start > end {
                return None;
            }
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            Some((start, end, format!("{host}:{port}")))
        })
        .collect()
}

/// A Redis Cluster connection that sends single-slot requests to the slot's master itself.
#[derive(Clone)]
pub struct ClusterConn {
    cluster: ClusterConnection,
    router: Option<Arc<Router>>,
}

impl ClusterConn {
    /// Wraps the cluster client's connection; without a router every request goes through it.
    pub(crate) fn new(cluster: ClusterConnection, router: Option<Arc<Router>>) -> Self {
        Self { cluster, router }
    }

    /// The router's counts, if this connection routes requests itself.
    pub(crate) fn stats(&self) -> Option<RouteStats> {
        self.router.as_ref().map(|r| r.stats())
    }
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Some(router) = &self.router else {
            return self.cluster.req_packed_command(cmd);
        };
        let Keys::Slot(slot) = command_keys(cmd) else {
            // WAIT takes no key, so it is only looked for off the hot path.
            if is_wait(cmd) {
                let router = Arc::clone(router);
                return Box::pin(wait_everywhere(router, &mut self.cluster, cmd));
            }
            return self.cluster.req_packed_command(cmd);
        };
        let Some(mut master) = router.master(slot, &self.cluster) else {
            return self.cluster.req_packed_command(cmd);
        };
        let router = Arc::clone(router);
        let cluster = &mut self.cluster;
        Box::pin(async move {
            let reply = master.req_packed_command(cmd).await;
            let wrong = match &reply {
                Ok(value) => misrouted_value(value),
                Err(e) => misrouted(e),
            };
            if !router.must_reroute(wrong, cluster) {
                return reply;
            }
            cluster.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Some(router) = &self.router else {
            return self.cluster.req_packed_commands(pipeline, offset, count);
        };
        let Keys::Slot(slot) = pipeline_keys(pipeline) else {
            return self.cluster.req_packed_commands(pipeline, offset, count);
        };
        let Some(mut master) = router.master(slot, &self.cluster) else {
            return self.cluster.req_packed_commands(pipeline, offset, count);
        };
        let router = Arc::clone(router);
        let cluster = &mut self.cluster;
        Box::pin(async move {
            let reply = master.req_packed_commands(pipeline, offset, count).await;
            let wrong = match &reply {
                Ok(values) => values.iter().any(misrouted_value),
                Err(e) => misrouted(e),
            };
            if !router.must_reroute(wrong, cluster) {
                return reply;
            }
            cluster.req_packed_commands(pipeline, offset, count).await
        })
    }

    fn get_db(&self) -> i64 {
        self.cluster.get_db()
    }
}

fn is_wait(cmd: &Cmd) -> bool {
    matches!(cmd.args_iter().next(), Some(Arg::Simple(name)) if name.eq_ignore_ascii_case(b"WAIT"))
}

/// `WAIT` counts the replicas that have the writes of the connection it is sent on, and our
/// writes went out on the direct connections as well as the cluster client's: ask on all of
/// them and answer with the smallest count, as the cluster client does across its masters.
async fn wait_everywhere(
    router: Arc<Router>,
    cluster: &mut ClusterConnection,
    cmd: &Cmd,
) -> RedisResult<Value> {
    let mut fewest: Value = cluster.req_packed_command(cmd).await?;
    let masters = router
        .current()
        .map(|table| table.masters.clone())
        .unwrap_or_default();
    let replies = futures::future::join_all(
        masters
            .into_iter()
            .map(|mut master| async move { master.req_packed_command(cmd).await }),
    )
    .await;
    for reply in replies {
        match (reply?, &fewest) {
            (Value::Int(n), Value::Int(m)) if n < *m => fewest = Value::Int(n),
            (Value::Int(_), _) => {}
            (other, _) => return Ok(other),
        }
    }
    Ok(fewest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::keys::slot_of;

    #[test]
    fn command_lists_are_sorted_upper_case_and_fit_the_name_buffer() {
        for list in [FIRST_KEY, ALL_KEYS, SUBCOMMAND_KEY, COUNTED_KEYS, NO_KEY] {
            assert!(
                list.is_sorted(),
                "{list:?} must be sorted for binary search"
            );
            for name in list {
                assert_eq!(*name, name.to_ascii_uppercase());
                assert!(name.len() <= NAME_MAX, "{name} is longer than NAME_MAX");
            }
        }
        let lower = redis::cmd("xadd").arg("{t}:events").clone();
        assert_eq!(command_keys(&lower), Keys::Slot(slot_of("{t}:events")));
        let long = redis::cmd("AVERYLONGCOMMANDNAME").arg("k").clone();
        assert_eq!(command_keys(&long), Keys::Unknown);
    }

    #[test]
    fn single_key_commands_route_by_their_key() {
        let key = "maos:pool:p:{task:t}:kv";
        assert_eq!(
            command_keys(redis::cmd("HGET").arg(key).arg("../x")),
            Keys::Slot(slot_of(key))
        );
        assert_eq!(
            command_keys(redis::cmd("xadd").arg(key).arg("*").arg("f").arg("v")),
            Keys::Slot(slot_of(key))
        );
    }

    #[test]
    fn scripts_route_by_their_keys_and_refuse_mixed_slots() {
        let a = "maos:pool:p:{task:t}:kv";
        let b = "maos:pool:p:{task:t}:meta";
        let other = "maos:pool:p:{task:u}:kv";
        let script = |keys: &[&str]| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg("0123").arg(keys.len());
            for k in keys {
                cmd.arg(*k);
            }
            cmd.arg("value-that-looks-like-{task:u}");
            cmd
        };
        assert_eq!(command_keys(&script(&[a, b])), Keys::Slot(slot_of(a)));
        assert_eq!(command_keys(&script(&[a, other])), Keys::Unknown);
        assert_eq!(command_keys(&script(&[])), Keys::Unknown);
    }

    #[test]
    fn stream_reads_route_by_the_streams_not_the_ids() {
        let key = "maos:pool:p:{task:t}:events";
        let cmd = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("operator")
            .arg("op-1")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .clone();
        assert_eq!(command_keys(&cmd), Keys::Slot(slot_of(key)));
        let odd = redis::cmd("XREAD").arg("STREAMS").arg(key).clone();
        assert_eq!(command_keys(&odd), Keys::Unknown);
    }

    #[test]
    fn keyless_and_unknown_commands_are_left_to_the_cluster_client() {
        for cmd in [
            redis::cmd("PING"),
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            redis::cmd("ACL").arg("SETUSER").arg("maos:pool:x").clone(),
            redis::cmd("SCRIPT").arg("LOAD").arg("return 1").clone(),
            redis::cmd("WAIT").arg(1).arg(0).clone(),
            redis::cmd("KEYS").arg("maos:*").clone(),
        ] {
            assert_eq!(
                command_keys(&cmd),
                Keys::Unknown,
                "{:?}",
                cmd.args_iter().next()
            );
        }
    }

    #[test]
    fn subcommand_and_multi_key_commands() {
        let key = "maos:pool:p:{task:t}:events";
        let other = "maos:pool:p:{task:u}:events";
        assert_eq!(
            command_keys(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(key)
                    .arg("g")
                    .arg("$")
            ),
            Keys::Slot(slot_of(key))
        );
        assert_eq!(
            command_keys(redis::cmd("UNLINK").arg(key).arg(other)),
            Keys::Unknown
        );
        assert_eq!(
            command_keys(redis::cmd("UNLINK").arg(key).arg(key)),
            Keys::Slot(slot_of(key))
        );
    }

    #[test]
    fn pipelines_route_only_when_every_keyed_command_shares_a_slot() {
        let key = "maos:pool:p:{task:t}:kv";
        let other = "maos:pool:p:{task:u}:kv";
        let mut transaction = redis::pipe();
        transaction.atomic().hget(key, "a").hget(key, "b");
        assert_eq!(pipeline_keys(&transaction), Keys::Slot(slot_of(key)));
        let mut mixed = redis::pipe();
        mixed.hget(key, "a").hget(other, "b");
        assert_eq!(pipeline_keys(&mixed), Keys::Unknown);
        let mut keyless = redis::pipe();
        keyless.cmd("PING");
        assert_eq!(pipeline_keys(&keyless), Keys::Unknown);
    }

    #[test]
    fn slot_table_parses_ranges_and_refuses_unknown_endpoints() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(16383), node("::1", 7001)]),
        ]);
        assert_eq!(
            parse_slots(&reply),
            Some(vec![
                (0, 5460, "127.0.0.1:7000".to_owned()),
                (5461, 16383, "[::1]:7001".to_owned()),
            ])
        );
        let unknown = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            node("?", 7000),
        ])]);
        assert_eq!(parse_slots(&unknown), None);
        let out_of_range = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16384),
            node("127.0.0.1", 7000),
        ])]);
        assert_eq!(parse_slots(&out_of_range), None);
    }

    #[test]
    fn redirections_and_lost_connections_are_misrouted_permission_errors_are_not() {
        let moved = redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:7001\r\n").expect("parse");
        assert!(misrouted_value(&moved));
        let err = moved.extract_error().expect_err("an error");
        assert!(misrouted(&err));
        let ask = redis::parse_redis_value(b"-ASK 3999 127.0.0.1:7001\r\n").expect("parse");
        assert!(misrouted_value(&ask));
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(misrouted(&dropped));
        let noperm = redis::parse_redis_value(b"-NOPERM no permissions\r\n").expect("parse");
        assert!(!misrouted_value(&noperm));
        assert!(!misrouted(&noperm.extract_error().expect_err("an error")));
        assert!(!misrouted_value(&Value::Int(1)));
    }
}
