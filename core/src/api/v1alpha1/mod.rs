//! `maos.dev/v1alpha1`: the Task, AgentPool and Checkpoint custom resources.
//!
//! The doc comments on these types become the descriptions `kubectl explain` shows, and the
//! `schemars`/`x_kube` attributes become the bounds and CEL rules the API server enforces at
//! apply time. What a schema cannot express is checked by [`crate::validate`].

// kube's `printcolumn(...)` repeats `type_ = ...` once per column, which clippy mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
mod checkpoint;
pub mod conditions;
pub mod limits;
#[allow(clippy::duplicated_attributes)]
mod pool;
mod schema;
#[allow(clippy::duplicated_attributes)]
mod task;
mod thinking;
mod tools;

pub use checkpoint::*;
pub use pool::*;
pub use task::*;
pub use thinking::*;
pub use tools::*;
