//! Checkpoints: a Task's spec, status and Redis state as one object in S3-compatible storage,
//! to resume it on an empty Redis. [`snapshot`] is the (pure) format, [`store`] the storage.

pub mod resume;
pub mod snapshot;
pub mod store;
