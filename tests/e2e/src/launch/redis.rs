//! Real `redis-server` processes for tests and the testbed: a standalone server and a 6-node
//! Redis Cluster (3 masters, 3 replicas), each on free 127.0.0.1 ports in a temporary directory,
//! killed by PID when the handle is dropped.
//!
//! Readiness is polled with a deadline (PING; for the cluster, `CLUSTER INFO` on every node and
//! replication links up), never assumed after a sleep.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{LaunchError, TempDir, free_port, poll_until};

/// The server binary, found on `PATH`.
const REDIS_SERVER: &str = "redis-server";
/// How often a freshly chosen port may turn out to be taken before we give up.
const PORT_ATTEMPTS: usize = 5;
/// How long one server may take to answer PING.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Number of slots in a Redis Cluster.
const CLUSTER_SLOTS: u16 = 16384;

/// One `redis-server` process; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
struct Node {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// What a client needs to reach a TLS-only node (readiness checks included).
    tls: Option<redis::TlsCertificates>,
}

impl Node {
    /// Starts a server in `dir`, retrying with new ports when the chosen one was taken in the
    /// meantime. `cluster` makes it a cluster node (with a cluster-bus port of its own).
    fn start(dir: &Path, cluster: Option<&ClusterOptions>) -> Result<Self, LaunchError> {
        Self::start_with(dir, cluster, None)
    }

    /// [`Node::start`]; with `tls`, the node speaks only TLS on its port.
    fn start_with(
        dir: &Path,
        cluster: Option<&ClusterOptions>,
        tls: Option<&super::redis_tls::TlsFiles>,
    ) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(dir).map_err(|source| LaunchError::Setup {
            what: format!("directory {}", dir.display()),
            source,
        })?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let (plain_port, tls_port) = match tls {
                Some(_) => ("0".to_owned(), Some(port.to_string())),
                None => (port.to_string(), None),
            };
            let mut args: Vec<String> = [
                "--port",
                &plain_port,
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir.display().to_string(),
                "--logfile",
                "redis.log",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--repl-diskless-sync-delay",
                "0",
                // Redis 7 refuses DEBUG to everyone by default; allowed here (from loopback),
                // a pool user's refusal in the ACL tests is the ACL's own.
                "--enable-debug-command",
                "local",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            if let Some(options) = cluster {
                let bus_port = free_port()?;
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus_port.to_string(),
                        "--cluster-node-timeout",
                        &options.node_timeout.as_millis().to_string(),
                    ]
                    .iter()
                    .map(|s| (*s).to_owned()),
                );
            }
            if let (Some(files), Some(tls_port)) = (tls, &tls_port) {
                args.extend(files.server_args(tls_port));
            }
            let mut node = Node {
                child: None,
                port,
                dir: dir.to_owned(),
                args,
                tls: tls.map(super::redis_tls::TlsFiles::client_certificates),
            };
            match node.spawn() {
                Ok(()) => return Ok(node),
                Err(err @ LaunchError::ExitedEarly { .. }) if node.log_says_port_taken() => {
                    last_err = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| LaunchError::NotReady {
            what: "redis-server".to_owned(),
            waited: Duration::ZERO,
            last: "no port attempt made".to_owned(),
        }))
    }

    /// Runs the server process with this node's arguments and waits until it answers.
    fn spawn(&mut self) -> Result<(), LaunchError> {
        let stderr = std::fs::File::create(self.dir.join("stderr.log")).map_err(|source| {
            LaunchError::Setup {
                what: "redis-server stderr file".to_owned(),
                source,
            }
        })?;
        let child = Command::new(REDIS_SERVER)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Its own process group: a Ctrl-C at the terminal reaches the launcher, which stops
            // the processes that use Redis before Redis itself.
            .process_group(0)
            .spawn()
            .map_err(|source| LaunchError::BinaryNotRunnable {
                program: REDIS_SERVER.to_owned(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), LaunchError> {
        let url = self.url();
        let what = format!("redis-server on port {}", self.port);
        poll_until(&what, SERVER_READY_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(LaunchError::ExitedEarly {
                    what: what.clone(),
                    status,
                    log: self.dir.join("redis.log").display().to_string(),
                });
            }
            Ok(
                match query_with(&url, self.tls.as_ref(), &redis::cmd("PING")) {
                    Ok(redis::Value::SimpleString(s)) if s == "PONG" => Ok(()),
                    Ok(other) => Err(format!("PING answered {other:?}")),
                    Err(e) => Err(e.to_string()),
                },
            )
        })
    }

    fn log_says_port_taken(&self) -> bool {
        ["redis.log", "stderr.log"].iter().any(|f| {
            std::fs::read_to_string(self.dir.join(f))
                .map(|s| s.contains("Address already in use"))
                .unwrap_or(false)
        })
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL by PID, then reap, so no zombie or stray server outlives the handle.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends one command to the server at `url` on a fresh connection with short timeouts.
fn query(url: &str, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
    query_with(url, None, cmd)
}

/// [`query`], over TLS with `tls` when given.
fn query_with(
    url: &str,
    tls: Option<&redis::TlsCertificates>,
    cmd: &redis::Cmd,
) -> redis::RedisResult<redis::Value> {
    let client = match tls {
        Some(certificates) => redis::Client::build_with_tls(url, certificates.clone())?,
        None => redis::Client::open(url)?,
    };
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    con.set_write_timeout(Some(Duration::from_secs(2)))?;
    cmd.query(&mut con)
}

/// Sends one command and renders a bulk or simple string answer as text.
fn query_text(url: &str, cmd: &redis::Cmd) -> Result<String, String> {
    match query(url, cmd) {
        Ok(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(redis::Value::SimpleString(s)) => Ok(s),
        Ok(redis::Value::Okay) => Ok("OK".to_owned()),
        Ok(redis::Value::VerbatimString { text, .. }) => Ok(text),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn setup_step(what: &str, url: &str, cmd: &redis::Cmd) -> Result<String, LaunchError> {
    query_text(url, cmd).map_err(|detail| LaunchError::SetupCommand {
        what: what.to_owned(),
        detail,
    })
}

/// A standalone `redis-server` on a free 127.0.0.1 port; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    node: Node,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits (with a deadline) until it answers PING.
    pub fn start() -> Result<Self, LaunchError> {
        let dir = TempDir::new("maos-redis")?;
        let node = Node::start(dir.path(), None)?;
        Ok(Self { node, _dir: dir })
    }

    /// Starts a server that speaks only TLS, with the certificates of `files`, and waits until
    /// it answers PING over TLS; its [`RedisServer::url`] is `rediss://`.
    pub fn start_tls(files: &super::redis_tls::TlsFiles) -> Result<Self, LaunchError> {
        let dir = TempDir::new("maos-redis-tls")?;
        let node = Node::start_with(dir.path(), None, Some(files))?;
        Ok(Self { node, _dir: dir })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// A `redis://` URL for the server (`rediss://` for one started with TLS).
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    /// Kills the server with SIGKILL (as a crash would) and reaps it; the handle keeps its port.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port (empty: nothing is persisted) and waits until it
    /// answers; kills it first if it still runs.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.node.kill();
        self.node.spawn()
    }
}

/// Settings of a launched cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `cluster-node-timeout`: how long a master may be unreachable before failover starts.
    pub node_timeout: Duration,
    /// How long to wait for the cluster to become healthy.
    pub ready_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_millis(2000),
            ready_timeout: Duration::from_secs(30),
        }
    }
}

/// A 6-node Redis Cluster (3 masters with one replica each) on free 127.0.0.1 ports; every node
/// is killed when dropped.
///
/// Nodes 0–2 start as masters owning a third of the slots each; node `i + 3` replicates node `i`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    options: ClusterOptions,
    _dir: TempDir,
}

/// Masters in a launched cluster.
const MASTERS: usize = 3;

impl RedisCluster {
    /// Starts a cluster with default options and waits until it is healthy.
    pub fn start() -> Result<Self, LaunchError> {
        Self::start_with(ClusterOptions::default())
    }

    /// Starts a cluster with `options` and waits until it is healthy: `cluster_state:ok` on
    /// every node, all 6 nodes known everywhere, every replica's link to its master up.
    pub fn start_with(options: ClusterOptions) -> Result<Self, LaunchError> {
        let dir = TempDir::new("maos-redis-cluster")?;
        let mut nodes = Vec::with_capacity(2 * MASTERS);
        for i in 0..2 * MASTERS {
            nodes.push(Node::start(
                &dir.path().join(format!("node{i}")),
                Some(&options),
            )?);
        }
        let cluster = Self {
            nodes,
            options,
            _dir: dir,
        };
        cluster.form()?;
        cluster.wait_healthy(cluster.options.ready_timeout)?;
        Ok(cluster)
    }

    fn form(&self) -> Result<(), LaunchError> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let url = node.url();
            // Distinct config epochs up front, as redis-cli does, so no epoch collision has to be
            // resolved later and failovers elect cleanly.
            setup_step(
                "CLUSTER SET-CONFIG-EPOCH",
                &url,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            )?;
            ids.push(setup_step(
                "CLUSTER MYID",
                &url,
                redis::cmd("CLUSTER").arg("MYID"),
            )?);
        }
        let per_master = CLUSTER_SLOTS / MASTERS as u16;
        for (i, node) in self.nodes.iter().take(MASTERS).enumerate() {
            let first = per_master * i as u16;
            let last = if i + 1 == MASTERS {
                CLUSTER_SLOTS - 1
            } else {
                first + per_master - 1
            };
            setup_step(
                "CLUSTER ADDSLOTSRANGE",
                &node.url(),
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            )?;
        }
        let seed = &self.nodes[0];
        let seed_bus = self.bus_port(0)?;
        for node in self.nodes.iter().skip(1) {
            setup_step(
                "CLUSTER MEET",
                &node.url(),
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(seed.port)
                    .arg(seed_bus),
            )?;
        }
        for replica in MASTERS..2 * MASTERS {
            let master_id = ids[replica - MASTERS].clone();
            let url = self.nodes[replica].url();
            // The replica must have learnt of its master by gossip before it can follow it.
            poll_until(
                "replica learns its master",
                self.options.ready_timeout,
                || {
                    Ok(
                        query_text(&url, redis::cmd("CLUSTER").arg("REPLICATE").arg(&master_id))
                            .map(|_| ()),
                    )
                },
            )?;
        }
        Ok(())
    }

    fn bus_port(&self, index: usize) -> Result<u16, LaunchError> {
        let url = self.nodes[index].url();
        let answer = query(&url, redis::cmd("CONFIG").arg("GET").arg("cluster-port"));
        let port = match answer {
            Ok(redis::Value::Array(items)) => items.get(1).and_then(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            }),
            Ok(redis::Value::Map(pairs)) => pairs.first().and_then(|(_, v)| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            }),
            _ => None,
        };
        port.ok_or_else(|| LaunchError::SetupCommand {
            what: "CONFIG GET cluster-port".to_owned(),
            detail: "no port in the answer".to_owned(),
        })
    }

    /// Waits until every live node reports `cluster_state:ok`, knows every live node, and every
    /// live replica's link to its master is up.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), LaunchError> {
        let live: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        poll_until("Redis Cluster healthy", timeout, || {
            // Replicas as they see themselves; every node's view must agree (gossip about a
            // node's new role reaches the others a moment after the role changes).
            let mut replicas = 0;
            for node in &live {
                let replication = query_text(&node.url(), redis::cmd("INFO").arg("replication"))
                    .unwrap_or_default();
                if replication.contains("role:slave") {
                    replicas += 1;
                }
            }
            for node in &live {
                let info = match query_text(&node.url(), redis::cmd("CLUSTER").arg("INFO")) {
                    Ok(info) => info,
                    Err(e) => return Ok(Err(format!("port {}: {e}", node.port))),
                };
                if !info.contains("cluster_state:ok") {
                    return Ok(Err(format!("port {}: cluster_state not ok", node.port)));
                }
                let nodes = match query_text(&node.url(), redis::cmd("CLUSTER").arg("NODES")) {
                    Ok(n) => n,
                    Err(e) => return Ok(Err(format!("port {}: {e}", node.port))),
                };
                let connected = nodes
                    .lines()
                    .filter(|l| !l.contains("fail") && !l.contains("handshake"))
                    .filter(|l| !l.contains("noaddr"))
                    .count();
                let seen_replicas = nodes
                    .lines()
                    .filter(|l| l.contains("slave") && !l.contains("fail"))
                    .count();
                if seen_replicas != replicas {
                    return Ok(Err(format!(
                        "port {}: sees {seen_replicas} of {replicas} replicas",
                        node.port
                    )));
                }
                if connected < live.len() {
                    return Ok(Err(format!(
                        "port {}: sees {connected} of {} nodes",
                        node.port,
                        live.len()
                    )));
                }
                let replication = query_text(&node.url(), redis::cmd("INFO").arg("replication"))
                    .unwrap_or_default();
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    return Ok(Err(format!("port {}: replica link not up", node.port)));
                }
            }
            Ok(Ok(()))
        })
    }

    /// `redis://` URLs of all nodes (including killed ones), node 0 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Ports of all nodes, node 0 first.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Process ids of all nodes; `None` for a node that was killed.
    pub fn node_pids(&self) -> Vec<Option<u32>> {
        self.nodes.iter().map(Node::pid).collect()
    }

    /// Index of the live node that currently serves `key` as master, as seen by a live node.
    pub fn master_of_key(&self, key: &str) -> Result<usize, LaunchError> {
        let Some(observer) = self.nodes.iter().find(|n| n.child.is_some()) else {
            return Err(LaunchError::SetupCommand {
                what: "find the master of a key".to_owned(),
                detail: "no node is running".to_owned(),
            });
        };
        let slot: u16 = query(
            &observer.url(),
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
        .ok()
        .and_then(|v| match v {
            redis::Value::Int(n) => u16::try_from(n).ok(),
            _ => None,
        })
        .ok_or_else(|| LaunchError::SetupCommand {
            what: "CLUSTER KEYSLOT".to_owned(),
            detail: key.to_owned(),
        })?;
        let nodes = setup_step(
            "CLUSTER NODES",
            &observer.url(),
            redis::cmd("CLUSTER").arg("NODES"),
        )?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
                continue;
            };
            if !flags.contains("master") || flags.contains("fail") {
                continue;
            }
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.splitn(2, '-');
                let first = ends.next().and_then(|s| s.parse::<u16>().ok());
                let last = ends.next().and_then(|s| s.parse::<u16>().ok()).or(first);
                matches!((first, last), (Some(a), Some(b)) if a <= slot && slot <= b)
            });
            if !serves {
                continue;
            }
            let port = addr
                .split('@')
                .next()
                .and_then(|hp| hp.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            if let Some(index) = self.nodes.iter().position(|n| Some(n.port) == port) {
                return Ok(index);
            }
        }
        Err(LaunchError::SetupCommand {
            what: "find the master of a key".to_owned(),
            detail: format!("no live master serves slot {slot}"),
        })
    }

    /// Kills node `index` with SIGKILL (as a crash would) and reaps it.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(node) = self.nodes.get_mut(index) {
            node.kill();
        }
    }
}
