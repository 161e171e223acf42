//! MAOS agent runner: a Claude agent that claims subtasks from its pool's queue and works them
//! through the tool loop. The binary `maos-agent` is the entry point; this library holds its parts.

pub mod agent;
pub mod claude;
pub mod config;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod replay;
pub mod tools;
pub mod worker;
