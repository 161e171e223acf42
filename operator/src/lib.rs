//! The MAOS operator: controllers for Task, AgentPool and Checkpoint, and the pure decisions
//! they apply (dispatch, autoscaling). The binary `maos-operator` is the entry point.

pub mod autoscale;
pub mod checkpoint;
pub mod config;
pub mod controller;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod pod;
pub mod scheduler;
pub mod status;
