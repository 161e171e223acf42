//! MAOS core: the custom resource types, the spec checks the CRD schema cannot express, the
//! subtask DAG, and the well-known names both binaries must agree on.
//!
//! The operator and the agent runner both depend on this crate; it has no binaries and does no
//! Kubernetes or network I/O of its own.

pub mod api;
pub mod coord;
pub mod dag;
pub mod field_error;
pub mod mcp;
pub mod meta;
pub mod price;
pub mod validate;
