//! A stand-in for the Claude Messages API: `POST /v1/messages` with the real headers, request
//! checks and error shapes, JSON and SSE answers, token usage, latency and injected faults.
//!
//! Agents reach it through `ANTHROPIC_BASE_URL`. It serves plain HTTP on loopback (the real API
//! is HTTPS); a test decides what the "model" says with a [`Behaviour`], and reads back every
//! request it received (the API key redacted) to check what an agent sent.

mod behaviour;
mod wire;

pub use behaviour::{
    Behaviour, Block, COMPLETE_SUBTASK, Fault, FaultMarkers, MaosAgent, Outcome, PlanShape, Reply,
    SUBMIT_PLAN, Scripted, WorkCall,
};
pub use wire::{
    ANTHROPIC_VERSION, ANTHROPIC_VERSIONS, ApiError, MODELS, MessagesRequest, Model, StopReason,
    Usage, find_model, parse_request,
};

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use behaviour::stop_reason_of;

type Body = BoxBody<Bytes, std::io::Error>;

/// How the stand-in behaves.
#[derive(Clone)]
pub struct StandInConfig {
    /// The only API key accepted.
    pub api_key: String,
    /// Model names accepted (with a 64,000-token output limit and a 1,024-token cache
    /// minimum); empty: the API's models table, [`MODELS`], aliases and dated ids.
    pub models: Vec<String>,
    /// How long each answer takes (spread over the events of a stream).
    pub latency: Duration,
    /// Characters per streamed text delta.
    pub stream_chunk: usize,
    /// What the model says.
    pub behaviour: Arc<dyn Behaviour>,
}

impl StandInConfig {
    /// A stand-in accepting `api_key`, answering at once as [`MaosAgent`], with
    /// `[[fault:...]]` markers in a prompt honoured ([`FaultMarkers`]).
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            models: Vec::new(),
            latency: Duration::ZERO,
            stream_chunk: 16,
            behaviour: Arc::new(FaultMarkers::new(MaosAgent::default())),
        }
    }
}

impl std::fmt::Debug for StandInConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("StandInConfig")
            .field("models", &self.models)
            .field("latency", &self.latency)
            .field("stream_chunk", &self.stream_chunk)
            .finish_non_exhaustive()
    }
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// When it arrived.
    pub at: Instant,
    /// When the answer was ready to send (for a stream, when it started), if it was.
    pub answered_at: Option<Instant>,
    /// Its headers, with `x-api-key` replaced by `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// Its body, if it was JSON.
    pub body: Option<Value>,
    /// The HTTP status answered; 0 while the answer is pending (or was never sent).
    pub status: u16,
    /// When the client closed the connection before the answer was ready (it gave up on the
    /// call: dropped it, or timed out), if it did.
    pub abandoned_at: Option<Instant>,
}

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the Claude stand-in: {0}")]
pub struct StandInError(#[from] std::io::Error);

struct State {
    config: StandInConfig,
    calls: AtomicU64,
    log: Mutex<Vec<RecordedRequest>>,
    /// Cached prefixes: (model id, prefix hash).
    cached_prefixes: Mutex<HashSet<(String, u64)>>,
    /// Signs the thinking the stand-in emits, so it can tell thinking sent back unchanged.
    signing_key: aws_lc_rs::hmac::Key,
}

impl State {
    /// The signature of `thinking`: an HMAC of its text under this stand-in's key.
    fn sign(&self, thinking: &str) -> String {
        use base64::Engine as _;
        let tag = aws_lc_rs::hmac::sign(&self.signing_key, thinking.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }

    /// Whether a thinking block sent back is one this stand-in emitted, unchanged.
    fn verify(&self, input: &wire::ThinkingInput) -> bool {
        match input.kind {
            "thinking" => self.sign(&input.content) == input.signature,
            // Redacted thinking carries its own signature: `<nonce>.<signature of the nonce>`.
            _ => input
                .content
                .split_once('.')
                .is_some_and(|(nonce, tag)| self.sign(&format!("redacted:{nonce}")) == tag),
        }
    }

    /// Redacted thinking for call `call`, verifiable by [`State::verify`].
    fn redacted(&self, call: u64) -> String {
        let nonce = format!("standin{call:08}");
        let tag = self.sign(&format!("redacted:{nonce}"));
        format!("{nonce}.{tag}")
    }
}

/// A running stand-in; stops when dropped.
pub struct ClaudeStandIn {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ClaudeStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaudeStandIn")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ClaudeStandIn {
    /// Starts serving on a free loopback port, on a thread of its own.
    pub fn start(config: StandInConfig) -> Result<Self, StandInError> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("claude-standin")
            .enable_all()
            .build()?;
        let state = Arc::new(State {
            config,
            calls: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            cached_prefixes: Mutex::new(HashSet::new()),
            signing_key: aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                uuid::Uuid::new_v4().as_bytes(),
            ),
        });
        let (shutdown, mut shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let serve_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("claude-standin".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = &mut shutdown_rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let state = serve_state.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |request| {
                                        let state = state.clone();
                                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The value for `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }
}

impl Drop for ClaudeStandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Body> {
    let call = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let request_id = format!("req_standin_{call:08}");
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = if name.as_str().eq_ignore_ascii_case("x-api-key")
                || name.as_str().eq_ignore_ascii_case("authorization")
            {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    // Recorded on arrival, so a request whose client gave up (a hung call) is still seen.
    let index = state
        .log
        .lock()
        .map(|mut log| {
            log.push(RecordedRequest {
                at: Instant::now(),
                answered_at: None,
                headers,
                body: None,
                status: 0,
                abandoned_at: None,
            });
            log.len() - 1
        })
        .ok();
    // hyper drops this future when the client closes the connection mid-request (HTTP/1
    // without half-close), which is how a client's abandoned call shows.
    let mut abandoned = Abandoned { state, index };
    let (response, body) = answer(state, request, call, &request_id, index).await;
    abandoned.index = None;
    if let (Some(index), Ok(mut log)) = (index, state.log.lock())
        && let Some(record) = log.get_mut(index)
    {
        record.body = body;
        record.status = response.status().as_u16();
        record.answered_at = Some(Instant::now());
    }
    response
}

/// Marks the request at `index` abandoned if dropped before the answer is ready.
struct Abandoned<'a> {
    state: &'a State,
    index: Option<usize>,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let (Some(index), Ok(mut log)) = (self.index, self.state.log.lock())
            && let Some(record) = log.get_mut(index)
        {
            record.abandoned_at = Some(Instant::now());
        }
    }
}

/// Checks the request and produces the answer, plus the parsed body for the log (where the
/// body is also put as soon as it is read, so a call that hangs is seen with its content).
async fn answer(
    state: &State,
    request: Request<Incoming>,
    call: u64,
    request_id: &str,
    index: Option<usize>,
) -> (Response<Body>, Option<Value>) {
    if request.method() != hyper::Method::POST || request.uri().path() != "/v1/messages" {
        let error = ApiError::for_status(
            404,
            format!("Not found: {} {}", request.method(), request.uri().path()),
        );
        return (error_response(&error, request_id, None), None);
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // The API takes the key as `x-api-key` or as an `Authorization: Bearer` token.
    let key = header("x-api-key").or_else(|| {
        header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
    });
    match key {
        None => {
            return (
                error_response(
                    &ApiError::for_status(401, "x-api-key header is required"),
                    request_id,
                    None,
                ),
                None,
            );
        }
        Some(key) if key != state.config.api_key => {
            return (
                error_response(
                    &ApiError::for_status(401, "invalid x-api-key"),
                    request_id,
                    None,
                ),
                None,
            );
        }
        Some(_) => {}
    }
    match header("anthropic-version") {
        None => {
            return (
                error_response(
                    &ApiError::invalid("anthropic-version: header is required"),
                    request_id,
                    None,
                ),
                None,
            );
        }
        Some(version) if !ANTHROPIC_VERSIONS.contains(&version.as_str()) => {
            let error = ApiError::invalid(format!("anthropic-version: invalid version {version}"));
            return (error_response(&error, request_id, None), None);
        }
        Some(_) => {}
    }
    let bytes = match Limited::new(request.into_body(), wire::MAX_REQUEST_BYTES + 1)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let error =
                ApiError::for_status(413, "Request exceeds the maximum allowed number of bytes.");
            return (error_response(&error, request_id, None), None);
        }
    };
    let parsed = match parse_request(&bytes) {
        Ok(parsed) => parsed,
        Err(error) => {
            return (
                error_response(&error, request_id, None),
                serde_json::from_slice(&bytes).ok(),
            );
        }
    };
    let body = Some(parsed.raw.clone());
    if let (Some(index), Ok(mut log)) = (index, state.log.lock())
        && let Some(record) = log.get_mut(index)
    {
        record.body = body.clone();
    }
    let model = if state.config.models.is_empty() {
        find_model(&parsed.model).copied()
    } else {
        state
            .config
            .models
            .contains(&parsed.model)
            .then_some(Model {
                id: "",
                alias: None,
                max_output_tokens: 64_000,
                min_cacheable_tokens: 1_024,
            })
    };
    let Some(model) = model else {
        let error = ApiError::for_status(404, format!("model: {}", parsed.model));
        return (error_response(&error, request_id, None), body);
    };
    if let Err(error) = wire::check_model_limits(&parsed, &model) {
        return (error_response(&error, request_id, None), body);
    }
    if let Some(forged) = parsed.thinking_inputs.iter().find(|t| !state.verify(t)) {
        let error = ApiError::invalid(match forged.kind {
            "thinking" => format!("{}: Invalid `signature` in `thinking` block", forged.path),
            _ => format!(
                "{}: Invalid `data` in `redacted_thinking` block",
                forged.path
            ),
        });
        return (error_response(&error, request_id, None), body);
    }
    let markers = AnswerMarkers::of(&parsed);
    // The API answers with the model's dated id; the stand-in does when told to.
    let answered_model = if markers.dated_model && !model.id.is_empty() {
        model.id.to_owned()
    } else {
        parsed.model.clone()
    };

    let reply = match state.config.behaviour.respond(&parsed, call) {
        Outcome::Fail(fault) => {
            return (
                fault_response(fault, request_id, &parsed, &model, state).await,
                body,
            );
        }
        Outcome::Reply(reply) => reply,
    };
    let (content, stop, usage) = render(state, &parsed, &model, &reply, &markers, call);
    let message_id = format!("msg_standin_{call:08}");
    let response = if parsed.stream {
        let events = wire::stream_events(
            &message_id,
            &answered_model,
            &content,
            stop,
            usage,
            state.config.stream_chunk,
        );
        stream_response(events, state.config.latency, request_id)
    } else {
        tokio::time::sleep(state.config.latency).await;
        let message = wire::message_body(&message_id, &answered_model, &content, stop, usage);
        json_response(StatusCode::OK, &message, request_id)
    };
    (response, body)
}

/// What a conversation's `[[answer:<kind>]]` markers (in its system prompt or opening
/// message) ask of every answer: `empty-text` (an empty text block first, as the real API
/// sometimes sends), `redacted-thinking` (with thinking enabled, a redacted_thinking block after
/// the thinking) and `dated-model` (the answer names the model's dated id, as the real API
/// does for an alias).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerMarkers {
    /// An empty text block comes first.
    pub empty_text: bool,
    /// A redacted_thinking block follows the thinking.
    pub redacted_thinking: bool,
    /// The answer names the dated model id.
    pub dated_model: bool,
}

impl AnswerMarkers {
    /// The markers of `request`'s conversation.
    pub fn of(request: &MessagesRequest) -> Self {
        let text = format!("{}\n{}", request.system, request.first_user_text());
        Self {
            empty_text: text.contains("[[answer:empty-text]]"),
            redacted_thinking: text.contains("[[answer:redacted-thinking]]"),
            dated_model: text.contains("[[answer:dated-model]]"),
        }
    }
}

/// The content blocks, stop reason and usage of a reply, truncated to max_tokens as the model
/// would be. With thinking enabled the answer starts with signed thinking, as the real model's.
fn render(
    state: &State,
    request: &MessagesRequest,
    model: &Model,
    reply: &Reply,
    markers: &AnswerMarkers,
    call: u64,
) -> (Vec<Value>, StopReason, Usage) {
    let mut content = Vec::new();
    if request.thinking_budget.is_some() {
        let thought = format!(
            "The stand-in thinks about: {}",
            request
                .last_user_text()
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("the tool results")
        );
        content.push(
            json!({"type": "thinking", "signature": state.sign(&thought), "thinking": thought}),
        );
        if markers.redacted_thinking {
            content.push(json!({"type": "redacted_thinking", "data": state.redacted(call)}));
        }
    }
    if markers.empty_text {
        content.push(json!({"type": "text", "text": ""}));
    }
    let mut tool_index = 0;
    for block in &reply.blocks {
        match block {
            Block::Text(text) => content.push(json!({"type": "text", "text": text})),
            Block::ToolUse { name, input } => {
                tool_index += 1;
                content.push(json!({"type": "tool_use", "id": format!("toolu_standin_{call:06}_{tool_index}"), "name": name, "input": input}));
            }
        }
    }
    let mut stop = stop_reason_of(reply);
    let mut output_tokens = tokens(&Value::Array(content.clone()).to_string());
    if output_tokens > request.max_tokens {
        // Cut the answer where the budget ends: text is truncated, tool calls are lost.
        let keep_chars =
            usize::try_from(request.max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
        content.retain(|b| b["type"] == "text");
        for block in &mut content {
            let text: String = block["text"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(keep_chars)
                .collect();
            block["text"] = Value::String(text);
        }
        stop = StopReason::MaxTokens;
        output_tokens = request.max_tokens;
    }
    let tool_prompt = if request.tool_names.is_empty() {
        0
    } else {
        wire::TOOL_USE_SYSTEM_PROMPT_TOKENS
    };
    let input = tokens(&request.raw.to_string()) + tool_prompt;
    let (read, write) = cache_use(state, request, model);
    let usage = Usage {
        input_tokens: input.saturating_sub(read + write),
        output_tokens,
        cache_creation_input_tokens: write,
        cache_read_input_tokens: read,
    };
    (content, stop, usage)
}

/// How far before a breakpoint the API looks for a cached prefix, in blocks.
const CACHE_LOOKBACK_BLOCKS: usize = 20;

/// The tokens a request reads from the prompt cache and writes to it, as the API counts them.
/// Only a prefix of at least the model's minimum is cached, at a breakpoint; a request reads
/// the longest cached prefix ending within [`CACHE_LOOKBACK_BLOCKS`] blocks before one of its
/// breakpoints, and writes the rest up to its last breakpoint.
fn cache_use(state: &State, request: &MessagesRequest, model: &Model) -> (u64, u64) {
    let prefixes = &request.cache_prefixes;
    let breakpoints: Vec<usize> = (0..prefixes.len())
        .filter(|&i| prefixes[i].breakpoint && prefixes[i].tokens >= model.min_cacheable_tokens)
        .collect();
    let Some(&last) = breakpoints.last() else {
        return (0, 0);
    };
    let Ok(mut cached) = state.cached_prefixes.lock() else {
        return (0, 0);
    };
    let id = model.id.to_owned();
    let read = (0..=last)
        .rev()
        .filter(|&i| {
            breakpoints
                .iter()
                .any(|&b| b >= i && b - i < CACHE_LOOKBACK_BLOCKS)
        })
        .find(|&i| {
            prefixes[i].tokens >= model.min_cacheable_tokens
                && cached.contains(&(id.clone(), prefixes[i].hash))
        })
        .map_or(0, |i| prefixes[i].tokens);
    for &b in &breakpoints {
        cached.insert((id.clone(), prefixes[b].hash));
    }
    (read, prefixes[last].tokens.saturating_sub(read))
}

/// Roughly four characters a token, at least one.
fn tokens(text: &str) -> u64 {
    u64::try_from(text.len() / 4).unwrap_or(u64::MAX).max(1)
}

async fn fault_response(
    fault: Fault,
    request_id: &str,
    request: &MessagesRequest,
    model: &Model,
    state: &State,
) -> Response<Body> {
    match fault {
        Fault::Status {
            status,
            retry_after,
        } => {
            let message = match status {
                429 => "Number of request tokens has exceeded your per-minute rate limit",
                529 => "Overloaded",
                _ => "Internal server error",
            };
            error_response(
                &ApiError::for_status(status, message),
                request_id,
                retry_after,
            )
        }
        Fault::Hang(duration) => {
            tokio::time::sleep(duration).await;
            error_response(
                &ApiError::for_status(504, "Request timed out"),
                request_id,
                None,
            )
        }
        Fault::MalformedBody => response(
            StatusCode::OK,
            "application/json",
            request_id,
            full("{\"id\": \"msg_1\", \"content\": ["),
        ),
        Fault::ResetConnection => {
            // Promise a body, then fail the stream: the client sees the connection cut.
            let chunks = vec![
                Ok(Frame::data(Bytes::from_static(b"{\"id\":"))),
                Err(std::io::Error::other("connection reset by the stand-in")),
            ];
            let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
            let mut resp = response(StatusCode::OK, "application/json", request_id, body);
            resp.headers_mut().insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from_static("4096"),
            );
            resp
        }
        Fault::StreamError => {
            let (_, _, usage) = render(
                state,
                request,
                model,
                &Reply::text("partial"),
                &AnswerMarkers::default(),
                0,
            );
            let mut events = wire::stream_events(
                "msg_standin_err",
                &request.model,
                &[json!({"type": "text", "text": "partial"})],
                StopReason::EndTurn,
                usage,
                4,
            );
            // Keep message_start, ping and the first block's start and delta, then fail.
            events.truncate(4);
            events.push(wire::sse("error", &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
            stream_response(events, Duration::ZERO, request_id)
        }
    }
}

fn stream_response(events: Vec<String>, latency: Duration, request_id: &str) -> Response<Body> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let count = u32::try_from(events.len()).unwrap_or(u32::MAX).max(1);
    tokio::spawn(async move {
        // A short wait for the first token, then the rest spread evenly.
        let first = latency / 10;
        let step = latency.saturating_sub(first) / count;
        tokio::time::sleep(first).await;
        for event in events {
            if sender
                .send(Ok(Frame::data(Bytes::from(event))))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(step).await;
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    response(
        StatusCode::OK,
        "text/event-stream",
        request_id,
        StreamBody::new(stream).boxed(),
    )
}

fn error_response(error: &ApiError, request_id: &str, retry_after: Option<u64>) -> Response<Body> {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, &error.body(request_id), request_id);
    if let Some(seconds) = retry_after
        && let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string())
    {
        resp.headers_mut().insert("retry-after", value);
    }
    resp
}

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response<Body> {
    response(
        status,
        "application/json",
        request_id,
        full(body.to_string()),
    )
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    request_id: &str,
    body: Body,
) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    // The rate-limit headers the API sends on every answer (fixed, generous limits: the
    // stand-in counts nothing).
    let reset = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60))
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    for (bucket, limit) in [
        ("requests", "4000"),
        ("input-tokens", "2000000"),
        ("output-tokens", "400000"),
        ("tokens", "2400000"),
    ] {
        for (what, value) in [("limit", limit), ("remaining", limit), ("reset", &reset)] {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(
                    format!("anthropic-ratelimit-{bucket}-{what}").as_bytes(),
                ),
                hyper::header::HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
    resp
}
