//! The Redis coordination protocol (DESIGN.md §4), used by the operator and the agents alike.
//!
//! One [`Redis`] handle talks to a standalone server or a Redis Cluster through the same code.
//! A [`Pool`] handle addresses a pool's work queue, heartbeats and rate limits; a [`Task`] handle
//! addresses exactly one task's keys (shared state, events, messages, journals, results, budget),
//! so code holding a task handle cannot reach another task. Every multi-key atomic step is a Lua
//! script whose keys share one hash tag, so it runs on a cluster too.
//!
//! On a cluster, requests whose keys share a slot (nearly all of them, thanks to the hash tags)
//! go straight to that slot's master rather than through redis-rs's cluster task ([`route`]);
//! the cluster client still handles everything else and every topology change.

pub mod acl;
pub mod budget;
pub mod config;
pub mod conn;
pub mod dump;
mod entry;
pub mod error;
pub mod events;
pub mod failure;
pub mod functions;
pub mod journal;
pub mod keys;
pub mod mailbox;
pub mod model_errors;
pub mod plan;
pub mod pool;
pub mod queue;
pub mod ratelimit;
pub mod results;
pub mod route;
mod script;
pub mod state;
pub mod task;
pub mod tls;
pub mod tool_errors;
pub mod wake;

pub use config::{RedisConfig, RetryPolicy, Secret, Topology};
pub use conn::Redis;
pub use error::{CoordError, CoordResult};
pub use keys::{AgentName, PoolKeys, PoolUid, TaskKeys, TaskUid};
pub use pool::Pool;
pub use task::Task;
pub use tls::{RedisTls, TlsError};
