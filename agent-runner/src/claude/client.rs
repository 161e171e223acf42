//! The HTTP side: one `POST {base}/v1/messages` per attempt, retried with exponential backoff
//! and full jitter while the failure is transient, honouring the API's `retry-after`.
//!
//! A call is one future over all its attempts and the waits between them: dropping it closes
//! the connection of the attempt in flight or ends the wait, and no later attempt is made. That
//! is how the agent gives up a call on a cancel, a deadline or a shutdown.

use std::time::Duration;

use futures::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderValue};

use super::error::ClaudeError;
use super::sse::{MessageAssembler, Progress, SseParser};
use super::types::{MessageResponse, MessagesRequest};

/// The public API endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The API version this client speaks.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The longest `retry-after` honoured; past it our own backoff applies (as Anthropic's SDKs do).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The Anthropic API key. It is only ever written into the `x-api-key` header: it has no
/// `Display`, and its `Debug` is redacted, so it cannot end up in a log line or an error.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline from a Secret file) is dropped.
    pub fn new(key: impl Into<String>) -> Result<Self, ClaudeError> {
        let key = key.into().trim().to_owned();
        if key.is_empty() {
            return Err(ClaudeError::Config("the API key is empty".to_owned()));
        }
        Ok(Self(key))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How often and how patiently failed calls are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The cap of the first backoff; each retry doubles it.
    pub initial_backoff: Duration,
    /// The largest backoff cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): uniformly random up to the exponential
    /// cap ("full jitter", so many agents retrying at once spread out), but never shorter than
    /// what the API asked for.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let cap = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_backoff);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(fastrand::u64(0..=millis));
        match retry_after {
            Some(asked) if asked <= MAX_RETRY_AFTER => jittered.max(asked),
            _ => jittered,
        }
    }
}

/// Where and how the client calls the API.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The API base URL, without `/v1/messages`.
    pub base_url: String,
    /// The key.
    pub api_key: ApiKey,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long the API may stay silent (between bytes of a stream, or before a whole answer).
    pub read_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration for `base_url` and `api_key` with default time-outs and retries.
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            api_key,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
        }
    }

    /// From `ANTHROPIC_API_KEY` (required) and `ANTHROPIC_BASE_URL` (optional).
    pub fn from_env() -> Result<Self, ClaudeError> {
        let key = std::env::var("ANTHROPIC_API_KEY")
            .map_err(|_| ClaudeError::Config("ANTHROPIC_API_KEY is not set".to_owned()))?;
        let base = std::env::var("ANTHROPIC_BASE_URL")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        Ok(Self::new(base, ApiKey::new(key)?))
    }
}

/// A Messages API client; cheap to clone, one connection pool for all clones.
#[derive(Clone, Debug)]
pub struct ClaudeClient {
    http: reqwest::Client,
    url: String,
    retry: RetryPolicy,
    retries: Option<prometheus_client::metrics::counter::Counter>,
}

impl ClaudeClient {
    /// Builds the client; the key goes into its default headers, marked sensitive.
    pub fn new(config: ClientConfig) -> Result<Self, ClaudeError> {
        if !(config.base_url.starts_with("https://") || config.base_url.starts_with("http://")) {
            return Err(ClaudeError::Config(format!(
                "the base URL must start with https:// or http://, not {:?}",
                config.base_url
            )));
        }
        let mut headers = HeaderMap::new();
        let mut key = HeaderValue::from_str(&config.api_key.0).map_err(|_| {
            ClaudeError::Config("the API key has characters a header cannot carry".to_owned())
        })?;
        key.set_sensitive(true);
        headers.insert("x-api-key", key);
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("maos-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| ClaudeError::Config(format!("cannot build the HTTP client: {err}")))?;
        Ok(Self {
            http,
            url: format!("{}/v1/messages", config.base_url),
            retry: config.retry,
            retries: None,
        })
    }

    /// The same client, counting every retry it makes in `counter`.
    pub fn with_retry_counter(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.retries = Some(counter);
        self
    }

    /// One answer, not streamed, retrying transient failures.
    pub async fn send(&self, request: &MessagesRequest) -> Result<MessageResponse, ClaudeError> {
        let mut request = request.clone().normalized();
        request.stream = false;
        self.with_retries(|| self.send_once(&request)).await
    }

    /// One answer, streamed; `on_progress` gets each piece of text or tool input as it arrives.
    /// A stream that fails midway is retried from the start, so `on_progress` may see pieces
    /// of a failed attempt first.
    pub async fn stream(
        &self,
        request: &MessagesRequest,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<MessageResponse, ClaudeError> {
        let mut request = request.clone().normalized();
        request.stream = true;
        let on_progress = &mut on_progress;
        let mut retry = 0;
        loop {
            match self.stream_once(&request, on_progress).await {
                Ok(message) => return Ok(message),
                Err(err) => retry = self.pause_before_retry(err, retry).await?,
            }
        }
    }

    async fn with_retries<F, Fut>(&self, mut call: F) -> Result<MessageResponse, ClaudeError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<MessageResponse, ClaudeError>>,
    {
        let mut retry = 0;
        loop {
            match call().await {
                Ok(message) => return Ok(message),
                Err(err) => retry = self.pause_before_retry(err, retry).await?,
            }
        }
    }

    /// Waits before retry number `retry` if `err` is worth retrying; otherwise gives `err` back.
    async fn pause_before_retry(&self, err: ClaudeError, retry: u32) -> Result<u32, ClaudeError> {
        if !err.is_retryable() {
            return Err(err);
        }
        if retry >= self.retry.max_retries {
            return Err(ClaudeError::RetriesExhausted {
                attempts: retry + 1,
                last: Box::new(err),
            });
        }
        if let Some(retries) = &self.retries {
            retries.inc();
        }
        let delay = self.retry.backoff(retry, err.retry_after());
        tracing::warn!(error = %err, retry = retry + 1, delay_ms = delay.as_millis() as u64, "model call failed; retrying");
        tokio::time::sleep(delay).await;
        Ok(retry + 1)
    }

    async fn post(&self, request: &MessagesRequest) -> Result<reqwest::Response, ClaudeError> {
        let response = self
            .http
            .post(&self.url)
            .json(request)
            .send()
            .await
            .map_err(transport_error)?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_from(response).await)
        }
    }

    async fn send_once(&self, request: &MessagesRequest) -> Result<MessageResponse, ClaudeError> {
        let response = self.post(request).await?;
        let bytes = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice(&bytes)
            .map_err(|err| ClaudeError::MalformedResponse(err.to_string()))
    }

    async fn stream_once(
        &self,
        request: &MessagesRequest,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<MessageResponse, ClaudeError> {
        let response = self.post(request).await?;
        let mut bytes = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut assembler = MessageAssembler::default();
        while let Some(chunk) = bytes.next().await {
            let chunk = chunk.map_err(transport_error)?;
            for event in parser.push(&chunk) {
                let progress = assembler.apply(&event)?;
                if progress != Progress::Nothing {
                    on_progress(&progress);
                }
            }
        }
        assembler.finish()
    }
}

fn transport_error(err: reqwest::Error) -> ClaudeError {
    if err.is_timeout() {
        ClaudeError::Timeout
    } else {
        // reqwest's message names the URL, never the headers.
        ClaudeError::Transport(err.to_string())
    }
}

/// Turns an error answer into the matching error, reading the API's error body if it has one.
async fn error_from(response: reqwest::Response) -> ClaudeError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let kind = body["error"]["type"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    let should_retry = match header("x-should-retry").as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => matches!(status, 408 | 409 | 429 | 500..=599),
    };
    if should_retry {
        let retry_after = header("retry-after-ms")
            .and_then(|ms| ms.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
            .or_else(|| {
                header("retry-after")
                    .and_then(|s| s.parse::<f64>().ok())
                    .map(|s| Duration::from_secs_f64(s.max(0.0)))
            });
        ClaudeError::Unavailable {
            status,
            kind,
            message,
            retry_after,
        }
    } else {
        ClaudeError::Rejected {
            status,
            kind,
            message,
            request_id: header("request-id"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_doubling_cap() {
        let policy = RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1_000),
        };
        for _ in 0..200 {
            assert!(policy.backoff(0, None) <= Duration::from_millis(100));
            assert!(policy.backoff(2, None) <= Duration::from_millis(400));
            assert!(policy.backoff(10, None) <= Duration::from_millis(1_000));
        }
    }

    #[test]
    fn backoff_honours_retry_after_up_to_a_minute() {
        let policy = RetryPolicy::default();
        assert!(policy.backoff(0, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
        assert!(policy.backoff(0, Some(Duration::from_secs(3_600))) <= policy.max_backoff);
    }

    #[test]
    fn the_key_is_redacted_in_debug_output() {
        let key = ApiKey::new("sk-ant-secret-value\n").expect("key");
        let config = ClientConfig::new("http://127.0.0.1:1", key);
        let printed = format!("{config:?}");
        assert!(!printed.contains("sk-ant-secret-value"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn an_empty_key_or_a_bad_url_is_a_configuration_error() {
        assert!(matches!(ApiKey::new("  "), Err(ClaudeError::Config(_))));
        let key = ApiKey::new("k").expect("key");
        assert!(matches!(
            ClaudeClient::new(ClientConfig::new("ftp://x", key)),
            Err(ClaudeError::Config(_))
        ));
    }
}
