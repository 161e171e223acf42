//! A small typed client for the Claude Messages API: JSON and streamed (SSE) answers, retries
//! with backoff and jitter that honour `retry-after`, and an API key that never leaves it.

mod client;
mod error;
pub mod sse;
pub mod types;

pub use client::{ApiKey, ClaudeClient, ClientConfig, DEFAULT_BASE_URL, RetryPolicy};
pub use error::ClaudeError;
