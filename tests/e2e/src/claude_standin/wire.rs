//! The Messages API on the wire, as the stand-in checks and answers it: request validation with
//! the real API's error shapes, and response bodies (JSON and SSE events).
//!
//! It shares no types with the agent's client (`maos_agent_runner::claude`) on purpose: an
//! independent reading of the API is what lets the stand-in catch the client's mistakes.

use serde::Serialize;
use serde_json::{Value, json};

/// The API version header every request must carry (the current one).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Every `anthropic-version` the API documents; any of them is accepted.
pub const ANTHROPIC_VERSIONS: [&str; 2] = ["2023-06-01", "2023-01-01"];

/// A model the stand-in serves, as the API's models table lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// Its dated id, e.g. `claude-sonnet-4-5-20250929` (for newer models, the only id).
    pub id: &'static str,
    /// The alias that names its newest snapshot, e.g. `claude-sonnet-4-5`.
    pub alias: Option<&'static str>,
    /// The most `max_tokens` it accepts.
    pub max_output_tokens: u64,
    /// The shortest prefix, in tokens, that prompt caching caches.
    pub min_cacheable_tokens: u64,
}

const fn model(
    id: &'static str,
    alias: Option<&'static str>,
    max_output_tokens: u64,
    min_cacheable_tokens: u64,
) -> Model {
    Model {
        id,
        alias,
        max_output_tokens,
        min_cacheable_tokens,
    }
}

/// The models the stand-in knows (the API's models overview, 2026-12): any other name is 404.
pub const MODELS: &[Model] = &[
    model("claude-opus-4-6", None, 128_000, 1_024),
    model("claude-sonnet-4-6", None, 128_000, 1_024),
    model(
        "claude-opus-4-5-20251101",
        Some("claude-opus-4-5"),
        64_000,
        1_024,
    ),
    model(
        "claude-sonnet-4-5-20250929",
        Some("claude-sonnet-4-5"),
        64_000,
        1_024,
    ),
    model(
        "claude-haiku-4-5-20251001",
        Some("claude-haiku-4-5"),
        64_000,
        2_048,
    ),
    model(
        "claude-opus-4-1-20250805",
        Some("claude-opus-4-1"),
        32_000,
        1_024,
    ),
    model(
        "claude-opus-4-20250514",
        Some("claude-opus-4-0"),
        32_000,
        1_024,
    ),
    model(
        "claude-sonnet-4-20250514",
        Some("claude-sonnet-4-0"),
        64_000,
        1_024,
    ),
    model(
        "claude-3-7-sonnet-20250219",
        Some("claude-3-7-sonnet-latest"),
        64_000,
        1_024,
    ),
    model(
        "claude-3-5-haiku-20241022",
        Some("claude-3-5-haiku-latest"),
        8_192,
        2_048,
    ),
    model("claude-3-haiku-20240307", None, 4_096, 2_048),
];

/// The model a request names, by its id or its alias.
pub fn find_model(name: &str) -> Option<&'static Model> {
    MODELS
        .iter()
        .find(|m| m.id == name || m.alias == Some(name))
}

/// The fields a Messages request may have; any other is refused, as the API refuses it.
const REQUEST_FIELDS: [&str; 15] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
];

/// Largest request body the real API accepts (32 MB); larger gets 413.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// An error answer: HTTP status and the body `{"type":"error","error":{type,message}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The error type, e.g. `invalid_request_error`, `overloaded_error`.
    pub kind: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    /// The error for an HTTP status, with the type the real API uses for it.
    pub fn for_status(status: u16, message: impl Into<String>) -> Self {
        let kind = match status {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            529 => "overloaded_error",
            _ => "api_error",
        };
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str) -> Value {
        json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
            "request_id": request_id,
        })
    }
}

/// A checked request: the fields the stand-in's behaviours look at, plus the raw body.
#[derive(Clone, Debug, PartialEq)]
pub struct MessagesRequest {
    /// The model asked for.
    pub model: String,
    /// The most output tokens.
    pub max_tokens: u64,
    /// Whether the answer is streamed as SSE.
    pub stream: bool,
    /// The system prompt's text (blocks joined).
    pub system: String,
    /// The conversation.
    pub messages: Vec<Value>,
    /// The names of the tools offered.
    pub tool_names: Vec<String>,
    /// The sampling temperature asked for.
    pub temperature: Option<f64>,
    /// The extended-thinking budget, when thinking is enabled.
    pub thinking_budget: Option<u64>,
    /// The request's prefixes for prompt caching, one at the end of each block (tools, then
    /// system, then messages), marked where a block carries `cache_control`.
    pub cache_prefixes: Vec<CachePrefix>,
    /// The thinking blocks of the input, for the stand-in to check their signatures.
    pub thinking_inputs: Vec<ThinkingInput>,
    /// The whole body as sent.
    pub raw: Value,
}

/// A prefix of a request, up to the end of one block: what identifies it for prompt caching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePrefix {
    /// A hash of the prefix.
    pub hash: u64,
    /// Its length in (estimated) tokens.
    pub tokens: u64,
    /// Whether its last block carries `cache_control`.
    pub breakpoint: bool,
}

/// A thinking or redacted_thinking block sent back in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinkingInput {
    /// Where it is, for the error (`messages.1.content.0`).
    pub path: String,
    /// `thinking` or `redacted_thinking`.
    pub kind: &'static str,
    /// The thinking text, or the redacted data.
    pub content: String,
    /// The signature (empty for redacted thinking).
    pub signature: String,
}

impl MessagesRequest {
    /// The text of the last user message (its text blocks joined), or "".
    pub fn last_user_text(&self) -> String {
        self.messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(text_of)
            .unwrap_or_default()
    }

    /// The text of the first user message, or "".
    pub fn first_user_text(&self) -> String {
        self.messages
            .iter()
            .find(|m| m["role"] == "user")
            .map(text_of)
            .unwrap_or_default()
    }

    /// The tool_result blocks of the last message, if it is a user message.
    pub fn last_tool_results(&self) -> Vec<&Value> {
        match self.messages.last() {
            Some(m) if m["role"] == "user" => m["content"]
                .as_array()
                .map(|blocks| {
                    blocks
                        .iter()
                        .filter(|b| b["type"] == "tool_result")
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Whether a tool of this name is offered.
    pub fn offers_tool(&self, name: &str) -> bool {
        self.tool_names.iter().any(|t| t == name)
    }
}

fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The block types a message may hold, with the fields each may have.
const BLOCK_FIELDS: [(&str, &[&str]); 7] = [
    ("text", &["type", "text", "cache_control", "citations"]),
    ("image", &["type", "source", "cache_control"]),
    (
        "document",
        &[
            "type",
            "source",
            "cache_control",
            "citations",
            "context",
            "title",
        ],
    ),
    (
        "tool_use",
        &["type", "id", "name", "input", "cache_control"],
    ),
    (
        "tool_result",
        &[
            "type",
            "tool_use_id",
            "content",
            "is_error",
            "cache_control",
        ],
    ),
    ("thinking", &["type", "thinking", "signature"]),
    ("redacted_thinking", &["type", "data"]),
];

/// The most `cache_control` breakpoints a request may set.
const MAX_CACHE_BREAKPOINTS: usize = 4;

/// The documentation the API's thinking errors point to.
const THINKING_DOCS: &str = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking";

/// Refuses the first field of `object` not in `allowed`, named under `path`.
fn no_extra_fields(
    object: &serde_json::Map<String, Value>,
    allowed: &[&str],
    path: &str,
) -> Result<(), ApiError> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(ApiError::invalid(format!(
            "{path}{extra}: Extra inputs are not permitted"
        ))),
        None => Ok(()),
    }
}

/// Checks a request body as the real API does and extracts what behaviours need.
pub fn parse_request(body: &[u8]) -> Result<MessagesRequest, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::for_status(
            413,
            "Request exceeds the maximum allowed number of bytes.",
        ));
    }
    let raw: Value = serde_json::from_slice(body).map_err(|err| {
        ApiError::invalid(format!(
            "There was an issue with your request body: invalid JSON: {err}"
        ))
    })?;
    let Some(object) = raw.as_object() else {
        return Err(ApiError::invalid("The request body is not a JSON object."));
    };
    no_extra_fields(object, &REQUEST_FIELDS, "")?;
    let model = match object.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => return Err(ApiError::invalid("model: Input should be a valid string")),
        None => return Err(ApiError::invalid("model: Field required")),
    };
    let max_tokens = match object.get("max_tokens") {
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(ApiError::invalid(
                    "max_tokens: Input should be greater than or equal to 1",
                ));
            }
        },
        None => return Err(ApiError::invalid("max_tokens: Field required")),
    };
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid("stream: Input should be a valid boolean")),
    };
    let system = match object.get("system") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                if block["type"] != "text" || !block["text"].is_string() {
                    return Err(ApiError::invalid(format!(
                        "system.{i}: system blocks must be text blocks"
                    )));
                }
            }
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "system: Input should be a valid string or list of text blocks",
            ));
        }
    };
    let temperature = match object.get("temperature") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_f64() {
            Some(t) if t < 0.0 => {
                return Err(ApiError::invalid(
                    "temperature: Input should be greater than or equal to 0",
                ));
            }
            Some(t) if t > 1.0 => {
                return Err(ApiError::invalid(
                    "temperature: Input should be less than or equal to 1",
                ));
            }
            Some(t) => Some(t),
            None => {
                return Err(ApiError::invalid(
                    "temperature: Input should be a valid number",
                ));
            }
        },
    };
    let thinking_budget = check_thinking(object.get("thinking"), max_tokens, temperature)?;
    let tool_names = check_tools(object.get("tools"))?;
    check_tool_choice(
        object.get("tool_choice"),
        &tool_names,
        thinking_budget.is_some(),
    )?;
    let messages = match object.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => messages.clone(),
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "messages: at least one message is required",
            ));
        }
        Some(_) => return Err(ApiError::invalid("messages: Input should be a valid list")),
        None => return Err(ApiError::invalid("messages: Field required")),
    };
    let (messages, thinking_inputs) = check_messages(&messages, thinking_budget.is_some())?;
    let cache_prefixes = cache_prefixes(object);
    let breakpoints = cache_prefixes.iter().filter(|p| p.breakpoint).count();
    if breakpoints > MAX_CACHE_BREAKPOINTS {
        return Err(ApiError::invalid(format!(
            "A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        )));
    }
    Ok(MessagesRequest {
        model,
        max_tokens,
        stream,
        system,
        messages,
        tool_names,
        temperature,
        thinking_budget,
        cache_prefixes,
        thinking_inputs,
        raw,
    })
}

/// The `max_tokens` a model allows, checked once the model is known.
pub fn check_model_limits(request: &MessagesRequest, model: &Model) -> Result<(), ApiError> {
    if request.max_tokens > model.max_output_tokens {
        return Err(ApiError::invalid(format!(
            "max_tokens: {} > {}, which is the maximum allowed number of output tokens for {}",
            request.max_tokens, model.max_output_tokens, model.id
        )));
    }
    Ok(())
}

/// The `thinking` setting: its budget when enabled, checked against `max_tokens` and the
/// temperature as the API checks them.
fn check_thinking(
    thinking: Option<&Value>,
    max_tokens: u64,
    temperature: Option<f64>,
) -> Result<Option<u64>, ApiError> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    let budget = match thinking["type"].as_str() {
        Some("disabled") => return Ok(None),
        Some("enabled") => {
            if let Some(object) = thinking.as_object() {
                no_extra_fields(object, &["type", "budget_tokens"], "thinking.enabled.")?;
            }
            match thinking["budget_tokens"].as_u64() {
                Some(n) if n >= 1_024 => n,
                Some(_) => {
                    return Err(ApiError::invalid(
                        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        "thinking.enabled.budget_tokens: Field required",
                    ));
                }
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "thinking: Input tag does not match any of the expected tags: 'disabled', 'enabled'",
            ));
        }
    };
    if max_tokens <= budget {
        return Err(ApiError::invalid(format!(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at {THINKING_DOCS}#max-tokens-and-context-window-size"
        )));
    }
    if temperature.is_some_and(|t| t != 1.0) {
        return Err(ApiError::invalid(format!(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our documentation at {THINKING_DOCS}#important-considerations-when-using-extended-thinking"
        )));
    }
    Ok(Some(budget))
}

/// The tokens the API adds for the tool-use system prompt of Claude 4 models when tools are
/// offered (`auto` or `none` tool choice: 346; `any` or `tool`: 313); part of the input and of
/// the tools' cached prefix.
pub const TOOL_USE_SYSTEM_PROMPT_TOKENS: u64 = 346;

/// The request's prefixes at every block boundary, in the order the API caches: tools, system,
/// messages. A block's `cache_control` marks a breakpoint but is not part of what is cached, so
/// one prefix hashes the same whether or not its last block carries the breakpoint.
fn cache_prefixes(object: &serde_json::Map<String, Value>) -> Vec<CachePrefix> {
    use std::hash::{Hash as _, Hasher as _};
    let tools = object.get("tools").and_then(Value::as_array);
    let blocks = tools
        .into_iter()
        .flatten()
        .chain(
            object
                .get("system")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .chain(
            object
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|m| m["content"].as_array().into_iter().flatten()),
        );
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut tokens = if tools.is_some_and(|t| !t.is_empty()) {
        TOOL_USE_SYSTEM_PROMPT_TOKENS
    } else {
        0
    };
    let mut prefixes = Vec::new();
    // A string system prompt is one block of its own (it cannot carry cache_control).
    if let Some(Value::String(system)) = object.get("system") {
        system.hash(&mut hasher);
        tokens += u64::try_from(system.len() / 4).unwrap_or(u64::MAX);
    }
    for block in blocks {
        let mut cached = block.clone();
        let breakpoint = cached
            .as_object_mut()
            .and_then(|b| b.remove("cache_control"))
            .is_some_and(|c| !c.is_null());
        let text = cached.to_string();
        text.hash(&mut hasher);
        tokens += u64::try_from(text.len() / 4).unwrap_or(u64::MAX);
        prefixes.push(CachePrefix {
            hash: hasher.clone().finish(),
            tokens,
            breakpoint,
        });
    }
    prefixes
}

fn check_tools(tools: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let tools = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(ApiError::invalid("tools: Input should be a valid list")),
    };
    let mut names = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let name = tool["name"].as_str().unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )));
        }
        if tool["input_schema"]["type"] != "object" {
            return Err(ApiError::invalid(format!(
                "tools.{i}.custom.input_schema.type: Input should be 'object'"
            )));
        }
        if names.iter().any(|n| n == name) {
            return Err(ApiError::invalid(format!(
                "tools: Tool names must be unique, {name} is repeated"
            )));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

fn check_tool_choice(
    choice: Option<&Value>,
    tools: &[String],
    thinking: bool,
) -> Result<(), ApiError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(());
    };
    if tools.is_empty() {
        return Err(ApiError::invalid(
            "tool_choice: `tool_choice` may only be specified while providing tools.",
        ));
    }
    if thinking && matches!(choice["type"].as_str(), Some("any" | "tool")) {
        return Err(ApiError::invalid(
            "Thinking may not be enabled when tool_choice forces tool use.",
        ));
    }
    match choice["type"].as_str() {
        Some("auto" | "any" | "none") => Ok(()),
        Some("tool") => {
            let name = choice["name"].as_str().unwrap_or_default();
            if tools.iter().any(|t| t == name) {
                Ok(())
            } else {
                Err(ApiError::invalid(format!(
                    "tool_choice.tool.name: Tool '{name}' not found in provided tools"
                )))
            }
        }
        _ => Err(ApiError::invalid(
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )),
    }
}

/// Roles, block types and fields, non-empty content, the tool_use → tool_result pairing and
/// (with thinking) the thinking block before a tool loop's turn, as the real API enforces them.
/// Consecutive messages of one role are merged into one turn, as the API documents; the merged
/// conversation is returned with the thinking blocks to verify.
fn check_messages(
    messages: &[Value],
    thinking: bool,
) -> Result<(Vec<Value>, Vec<ThinkingInput>), ApiError> {
    // Each merged turn: its role, its blocks, and the index of its first message.
    let mut turns: Vec<(String, Vec<Value>, usize)> = Vec::new();
    let mut thinking_inputs = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let Some(object) = message.as_object() else {
            return Err(ApiError::invalid(format!(
                "messages.{i}: Input should be a valid dictionary"
            )));
        };
        no_extra_fields(object, &["role", "content"], &format!("messages.{i}."))?;
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        let final_assistant = i + 1 == messages.len() && role == "assistant";
        let blocks: Vec<Value> = match &message["content"] {
            Value::String(text) if text.is_empty() => Vec::new(),
            Value::String(text) => vec![json!({"type": "text", "text": text})],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                )));
            }
        };
        if blocks.is_empty() && !final_assistant {
            return Err(ApiError::invalid(format!(
                "messages.{i}: all messages must have non-empty content except for the optional final assistant message"
            )));
        }
        for (j, block) in blocks.iter().enumerate() {
            let kind = block["type"].as_str().unwrap_or_default();
            let Some((kind, fields)) = BLOCK_FIELDS.iter().find(|(k, _)| *k == kind) else {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.content.{j}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
                )));
            };
            if let Some(object) = block.as_object() {
                no_extra_fields(object, fields, &format!("messages.{i}.content.{j}.{kind}."))?;
            }
            match *kind {
                "text" => match block["text"].as_str() {
                    None => {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}.text.text: Field required"
                        )));
                    }
                    Some("") => {
                        return Err(ApiError::invalid(
                            "messages: text content blocks must be non-empty",
                        ));
                    }
                    Some(text) if text.trim().is_empty() => {
                        return Err(ApiError::invalid(
                            "messages: text content blocks must contain non-whitespace text",
                        ));
                    }
                    Some(_) => {}
                },
                "tool_use" => {
                    if role != "assistant" {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}: tool_use blocks may only appear in assistant messages"
                        )));
                    }
                    let id = block["id"].as_str().unwrap_or_default();
                    if id.is_empty() || !block["input"].is_object() || !block["name"].is_string() {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}.tool_use: id, name and an object input are required"
                        )));
                    }
                }
                "tool_result" if role != "user" => {
                    return Err(ApiError::invalid(format!(
                        "messages.{i}.content.{j}: tool_result blocks may only appear in user messages"
                    )));
                }
                "thinking" | "redacted_thinking" => {
                    if role != "assistant" {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}: {kind} blocks may only appear in assistant messages"
                        )));
                    }
                    let (content, signature) = if *kind == "thinking" {
                        (block["thinking"].as_str(), block["signature"].as_str())
                    } else {
                        (block["data"].as_str(), Some(""))
                    };
                    let (Some(content), Some(signature)) = (content, signature) else {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}.{kind}: Field required"
                        )));
                    };
                    thinking_inputs.push(ThinkingInput {
                        path: format!("messages.{i}.content.{j}"),
                        kind,
                        content: content.to_owned(),
                        signature: signature.to_owned(),
                    });
                }
                _ => {}
            }
        }
        match turns.last_mut() {
            // "Consecutive user or assistant turns in your request will be combined into a
            // single turn."
            Some((last, content, _)) if last == role => content.extend(blocks),
            _ => turns.push((role.to_owned(), blocks, i)),
        }
    }
    if turns.first().is_some_and(|(role, _, _)| role != "user") {
        return Err(ApiError::invalid(
            "messages: the first message must use the \"user\" role",
        ));
    }
    check_tool_pairing(&turns)?;
    if thinking {
        check_thinking_before_tool_loop(&turns)?;
    }
    let merged = turns
        .into_iter()
        .map(|(role, content, _)| json!({"role": role, "content": content}))
        .collect();
    Ok((merged, thinking_inputs))
}

/// Every tool_use answered by a tool_result at the start of the next turn, and no tool_result
/// without its tool_use.
fn check_tool_pairing(turns: &[(String, Vec<Value>, usize)]) -> Result<(), ApiError> {
    let mut pending: Vec<&str> = Vec::new();
    for (role, blocks, i) in turns {
        let results: Vec<(usize, &str)> = blocks
            .iter()
            .enumerate()
            .filter(|(_, b)| b["type"] == "tool_result")
            .map(|(j, b)| (j, b["tool_use_id"].as_str().unwrap_or_default()))
            .collect();
        if let Some((j, id)) = results.iter().find(|(_, id)| !pending.contains(id)) {
            return Err(ApiError::invalid(format!(
                "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )));
        }
        let unanswered: Vec<&str> = pending
            .iter()
            .copied()
            .filter(|id| !results.iter().any(|(_, r)| r == id))
            .collect();
        if !unanswered.is_empty() {
            return Err(ApiError::invalid(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                unanswered.join(", ")
            )));
        }
        let leading = blocks
            .iter()
            .take_while(|b| b["type"] == "tool_result")
            .count();
        if leading < pending.len() {
            return Err(ApiError::invalid(format!(
                "messages.{i}: Did not find {} `tool_result` block(s) at the beginning of this message. Messages following `tool_use` blocks must begin with a matching number of `tool_result` blocks.",
                pending.len()
            )));
        }
        pending = if role == "assistant" {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str())
                .collect()
        } else {
            Vec::new()
        };
    }
    Ok(())
}

/// With thinking, the assistant turn whose tool calls the last message answers must start
/// with its thinking block: the API needs the thinking a tool loop continues from.
fn check_thinking_before_tool_loop(turns: &[(String, Vec<Value>, usize)]) -> Result<(), ApiError> {
    let [.., (role, blocks, i), (_, last, _)] = turns else {
        return Ok(());
    };
    let continues_a_tool_loop = last.first().is_some_and(|b| b["type"] == "tool_result");
    if role != "assistant" || !continues_a_tool_loop {
        return Ok(());
    }
    let first = blocks[0]["type"].as_str().unwrap_or_default();
    if first == "thinking" || first == "redacted_thinking" {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. Please consult our documentation at {THINKING_DOCS}"
    )))
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It hit max_tokens.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// A long turn was paused; the client should continue it.
    PauseTurn,
    /// It declined to answer.
    Refusal,
}

/// Token counts of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
}

/// A whole answer as the non-streaming endpoint returns it.
pub fn message_body(
    id: &str,
    model: &str,
    content: &[Value],
    stop: StopReason,
    usage: Usage,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage,
    })
}

/// One server-sent event, encoded.
pub fn sse(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The SSE events that stream `content` (text in `chunk`-character pieces, tool input as
/// partial JSON), in the order the real API sends them.
pub fn stream_events(
    id: &str,
    model: &str,
    content: &[Value],
    stop: StopReason,
    usage: Usage,
    chunk: usize,
) -> Vec<String> {
    let chunk = chunk.max(1);
    let mut events = Vec::new();
    let start_usage = Usage {
        output_tokens: 1,
        ..usage
    };
    events.push(sse(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage,
        }}),
    ));
    events.push(sse("ping", &json!({"type": "ping"})));
    for (index, block) in content.iter().enumerate() {
        let start_event = |start: Value| {
            sse(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": start}),
            )
        };
        let delta_event = |delta: Value| {
            sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        let stop_event = sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
        match block["type"].as_str() {
            // The thinking streams as thinking deltas, then its signature in one delta.
            Some("thinking") => {
                events.push(start_event(json!({"type": "thinking", "thinking": ""})));
                let thinking = block["thinking"].as_str().unwrap_or_default();
                for piece in split(thinking, chunk) {
                    events.push(delta_event(
                        json!({"type": "thinking_delta", "thinking": piece}),
                    ));
                }
                events.push(delta_event(
                    json!({"type": "signature_delta", "signature": block["signature"]}),
                ));
                events.push(stop_event);
                continue;
            }
            // Redacted thinking comes whole in its start event.
            Some("redacted_thinking") => {
                events.push(start_event(block.clone()));
                events.push(stop_event);
                continue;
            }
            _ => {}
        }
        let (start, pieces, delta_type, field) = match block["type"].as_str() {
            Some("tool_use") => {
                let input = block["input"].to_string();
                let start = json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}});
                (
                    start,
                    split(&input, chunk),
                    "input_json_delta",
                    "partial_json",
                )
            }
            _ => {
                let text = block["text"].as_str().unwrap_or_default();
                (
                    json!({"type": "text", "text": ""}),
                    split(text, chunk),
                    "text_delta",
                    "text",
                )
            }
        };
        events.push(sse(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for piece in pieces {
            events.push(sse(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": delta_type, field: piece}}),
            ));
        }
        events.push(sse(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(sse(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": {"output_tokens": usage.output_tokens}}),
    ));
    events.push(sse("message_stop", &json!({"type": "message_stop"})));
    events
}

/// Splits text into pieces of at most `chunk` characters (never inside a character).
fn split(text: &str, chunk: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(chunk).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<MessagesRequest, ApiError> {
        parse_request(body.to_string().as_bytes())
    }

    fn minimal() -> Value {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn a_minimal_request_is_accepted() {
        let parsed = request(minimal()).expect("valid");
        assert_eq!(parsed.last_user_text(), "hi");
        assert!(!parsed.stream);
    }

    #[test]
    fn missing_fields_are_named() {
        for (field, message) in [
            ("model", "model: Field required"),
            ("max_tokens", "max_tokens: Field required"),
            ("messages", "messages: Field required"),
        ] {
            let mut body = minimal();
            body.as_object_mut().expect("object").remove(field);
            assert_eq!(request(body).expect_err("invalid").message, message);
        }
    }

    #[test]
    fn malformed_json_is_a_400() {
        let err = parse_request(b"{not json").expect_err("invalid");
        assert_eq!((err.status, err.kind), (400, "invalid_request_error"));
    }

    #[test]
    fn a_tool_use_without_its_result_is_rejected() {
        let mut body = minimal();
        body["messages"] = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
            {"role": "user", "content": "no result here"}
        ]);
        let err = request(body).expect_err("invalid");
        assert!(
            err.message.contains("toolu_1") && err.message.starts_with("messages.2"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_tool_result_for_an_unknown_tool_use_is_rejected() {
        let mut body = minimal();
        body["messages"] = json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}]);
        assert!(
            request(body)
                .expect_err("invalid")
                .message
                .contains("toolu_x")
        );
    }

    #[test]
    fn a_paired_tool_result_is_accepted() {
        let mut body = minimal();
        body["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
        body["messages"] = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok", "is_error": true}]}
        ]);
        let parsed = request(body).expect("valid");
        assert_eq!(parsed.last_tool_results().len(), 1);
        assert!(parsed.offers_tool("t"));
    }

    #[test]
    fn roles_must_start_with_user_and_alternate() {
        let mut body = minimal();
        body["messages"] = json!([{"role": "assistant", "content": "hi"}]);
        assert!(
            request(body.clone())
                .expect_err("invalid")
                .message
                .contains("first message")
        );
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged_into_one_turn() {
        // "Consecutive user or assistant turns in your request will be combined into a single
        // turn" (the Messages API reference).
        let mut body = minimal();
        body["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
        body["messages"] = json!([
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}},
                                              {"type": "tool_use", "id": "toolu_2", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "1"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "2"}]}
        ]);
        let parsed = request(body).expect("valid");
        assert_eq!(parsed.messages.len(), 3);
        assert_eq!(parsed.first_user_text(), "a\nb");
        assert_eq!(parsed.last_tool_results().len(), 2);
    }

    #[test]
    fn unknown_fields_are_refused_as_extra_inputs() {
        let mut body = minimal();
        body["top_level_typo"] = json!(1);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "top_level_typo: Extra inputs are not permitted"
        );
        let mut body = minimal();
        body["messages"] = json!([{"role": "user", "content": "hi", "reasoning_details": []}]);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "messages.0.reasoning_details: Extra inputs are not permitted"
        );
        let mut body = minimal();
        body["messages"] = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}, "text": "x"}]}
        ]);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "messages.1.content.0.tool_use.text: Extra inputs are not permitted"
        );
    }

    #[test]
    fn empty_text_blocks_and_empty_content_are_refused() {
        let with_messages = |messages: Value| {
            let mut body = minimal();
            body["messages"] = messages;
            request(body).map(|_| ()).map_err(|e| e.message)
        };
        assert_eq!(
            with_messages(json!([{"role": "user", "content": [{"type": "text", "text": ""}]}])),
            Err("messages: text content blocks must be non-empty".into())
        );
        assert_eq!(
            with_messages(json!([{"role": "user", "content": [{"type": "text", "text": " \n"}]}])),
            Err("messages: text content blocks must contain non-whitespace text".into())
        );
        assert_eq!(
            with_messages(json!([
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": []},
                {"role": "user", "content": "again"}
            ])),
            Err("messages.1: all messages must have non-empty content except for the optional final assistant message".into())
        );
        assert_eq!(
            with_messages(
                json!([{"role": "user", "content": "go"}, {"role": "assistant", "content": []}])
            ),
            Ok(()),
            "the final assistant message may be empty"
        );
    }

    #[test]
    fn text_before_the_tool_results_of_a_turn_is_refused() {
        let mut body = minimal();
        body["messages"] = json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "text", "text": "here:"}, {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
        ]);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "messages.2: Did not find 1 `tool_result` block(s) at the beginning of this message. Messages following `tool_use` blocks must begin with a matching number of `tool_result` blocks."
        );
    }

    #[test]
    fn temperature_outside_zero_to_one_and_tool_choice_without_tools_are_refused() {
        let mut body = minimal();
        body["temperature"] = json!(1.5);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "temperature: Input should be less than or equal to 1"
        );
        let mut body = minimal();
        body["temperature"] = json!(-0.1);
        assert!(request(body).is_err());
        let mut body = minimal();
        body["tool_choice"] = json!({"type": "auto"});
        assert_eq!(
            request(body).expect_err("invalid").message,
            "tool_choice: `tool_choice` may only be specified while providing tools."
        );
    }

    #[test]
    fn thinking_is_checked_as_the_api_checks_it() {
        let thinking = |budget: u64, extra: Value| {
            let mut body = minimal();
            body["max_tokens"] = json!(4096);
            body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
            for (k, v) in extra.as_object().expect("object") {
                body[k] = v.clone();
            }
            request(body)
                .map(|r| r.thinking_budget)
                .map_err(|e| e.message)
        };
        assert_eq!(thinking(2048, json!({})), Ok(Some(2048)));
        assert_eq!(
            thinking(1000, json!({})),
            Err(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                    .into()
            )
        );
        assert!(
            thinking(4096, json!({}))
                .expect_err("refused")
                .starts_with("`max_tokens` must be greater than `thinking.budget_tokens`")
        );
        assert!(
            thinking(2048, json!({"temperature": 0.5}))
                .expect_err("refused")
                .starts_with("`temperature` may only be set to 1 when thinking is enabled")
        );
        assert_eq!(thinking(2048, json!({"temperature": 1})), Ok(Some(2048)));
        assert_eq!(
            thinking(
                2048,
                json!({"tools": [{"name": "t", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any"}})
            ),
            Err("Thinking may not be enabled when tool_choice forces tool use.".into())
        );
    }

    #[test]
    fn with_thinking_a_tool_loops_turn_must_start_with_its_thinking() {
        let mut body = minimal();
        body["max_tokens"] = json!(4096);
        body["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
        body["tools"] = json!([{"name": "t", "input_schema": {"type": "object"}}]);
        let turn = |first: Value| {
            json!([
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": [first, {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}
            ])
        };
        body["messages"] = turn(json!({"type": "text", "text": "Let me look."}));
        let err = request(body.clone()).expect_err("invalid").message;
        assert!(
            err.starts_with("messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `text`."),
            "{err}"
        );
        body["messages"] = turn(json!({"type": "thinking", "thinking": "hm", "signature": "s"}));
        let parsed = request(body).expect("valid");
        assert_eq!(parsed.thinking_inputs.len(), 1);
        assert_eq!(parsed.thinking_inputs[0].path, "messages.1.content.0");
    }

    #[test]
    fn max_tokens_above_the_models_limit_is_refused_naming_the_dated_id() {
        let sonnet = find_model("claude-sonnet-4-5").expect("an alias");
        assert_eq!(find_model("claude-sonnet-4-5-20250929"), Some(sonnet));
        assert_eq!(find_model("claude-sonnet-9"), None);
        let mut body = minimal();
        body["max_tokens"] = json!(64_001);
        let parsed = request(body).expect("the body is valid");
        assert_eq!(
            check_model_limits(&parsed, sonnet)
                .expect_err("too many")
                .message,
            "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5-20250929"
        );
    }

    #[test]
    fn at_most_four_cache_breakpoints_are_allowed() {
        let mut body = minimal();
        let cached = json!({"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}});
        body["system"] = json!([cached, cached, cached]);
        let parsed = request(body.clone()).expect("valid");
        assert_eq!(
            parsed
                .cache_prefixes
                .iter()
                .filter(|p| p.breakpoint)
                .count(),
            3
        );
        body["messages"] = json!([{"role": "user", "content": [cached, cached]}]);
        assert_eq!(
            request(body).expect_err("invalid").message,
            "A maximum of 4 blocks with cache_control may be provided. Found 5."
        );
    }

    #[test]
    fn a_gateway_timeout_is_a_timeout_error() {
        assert_eq!(ApiError::for_status(504, "x").kind, "timeout_error");
    }

    #[test]
    fn bad_tool_names_and_schemas_are_rejected() {
        let mut body = minimal();
        body["tools"] = json!([{"name": "has space", "input_schema": {"type": "object"}}]);
        assert!(request(body.clone()).is_err());
        body["tools"] = json!([{"name": "ok", "input_schema": {"type": "string"}}]);
        assert!(request(body).is_err());
    }

    #[test]
    fn the_stream_has_the_documented_event_order() {
        let content = vec![
            json!({"type": "text", "text": "hello"}),
            json!({"type": "tool_use", "id": "toolu_1", "name": "t", "input": {"a": 1}}),
        ];
        let events = stream_events(
            "msg_1",
            "m",
            &content,
            StopReason::ToolUse,
            Usage::default(),
            2,
        );
        let names: Vec<&str> = events
            .iter()
            .map(|e| {
                e.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("event: ")
            })
            .collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "content_block_start")
                .count(),
            2
        );
        let joined: String = events.join("");
        assert!(joined.contains("\"partial_json\""));
        assert!(joined.contains("\"stop_reason\":\"tool_use\""));
    }
}
