//! The Messages API on the wire, as the stand-in checks and answers it: request validation with
//! the real API's error shapes, and response bodies (JSON and SSE events).
//!
//! It shares no types with the agent's client (`maos_agent_runner::claude`) on purpose: an
//! independent reading of the API is what lets the stand-in catch the client's mistakes.

use serde::Serialize;
use serde_json::{Value, json};

/// The API version header every request must carry.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

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
    /// Whether any block asks for prompt caching.
    pub uses_cache_control: bool,
    /// The whole body as sent.
    pub raw: Value,
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

const BLOCK_TYPES: [&str; 5] = ["text", "image", "document", "tool_use", "tool_result"];

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
    let tool_names = check_tools(object.get("tools"))?;
    check_tool_choice(object.get("tool_choice"), &tool_names)?;
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
    check_messages(&messages)?;
    let uses_cache_control = raw.to_string().contains("\"cache_control\"");
    Ok(MessagesRequest {
        model,
        max_tokens,
        stream,
        system,
        messages,
        tool_names,
        uses_cache_control,
        raw,
    })
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

fn check_tool_choice(choice: Option<&Value>, tools: &[String]) -> Result<(), ApiError> {
    let Some(choice) = choice.filter(|c| !c.is_null()) else {
        return Ok(());
    };
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

/// Roles, block types, and the tool_use → tool_result pairing the real API enforces.
fn check_messages(messages: &[Value]) -> Result<(), ApiError> {
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(ApiError::invalid(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            )));
        }
        if i == 0 && role != "user" {
            return Err(ApiError::invalid(
                "messages: the first message must use the \"user\" role",
            ));
        }
        if i > 0 && messages[i - 1]["role"].as_str() == Some(role) {
            return Err(ApiError::invalid(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            )));
        }
        let blocks: Vec<Value> = match &message["content"] {
            Value::String(text) => {
                if text.is_empty() && i + 1 < messages.len() {
                    return Err(ApiError::invalid(format!(
                        "messages.{i}: all messages must have non-empty content"
                    )));
                }
                vec![json!({"type": "text", "text": text})]
            }
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.content: Input should be a valid string or list"
                )));
            }
        };
        let mut answered = Vec::new();
        let mut tool_uses = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let kind = block["type"].as_str().unwrap_or_default();
            if !BLOCK_TYPES.contains(&kind) {
                return Err(ApiError::invalid(format!(
                    "messages.{i}.content.{j}: Input tag '{kind}' found using 'type' does not match any of the expected tags"
                )));
            }
            match kind {
                "text" if !block["text"].is_string() => {
                    return Err(ApiError::invalid(format!(
                        "messages.{i}.content.{j}.text.text: Field required"
                    )));
                }
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
                    tool_uses.push(id.to_owned());
                }
                "tool_result" => {
                    if role != "user" {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}: tool_result blocks may only appear in user messages"
                        )));
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default();
                    if !pending_tool_uses.iter().any(|p| p == id) {
                        return Err(ApiError::invalid(format!(
                            "messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                        )));
                    }
                    answered.push(id.to_owned());
                }
                _ => {}
            }
        }
        let unanswered: Vec<&String> = pending_tool_uses
            .iter()
            .filter(|id| !answered.contains(id))
            .collect();
        if !unanswered.is_empty() {
            let ids: Vec<&str> = unanswered.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::invalid(format!(
                "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                ids.join(", ")
            )));
        }
        pending_tool_uses = tool_uses;
    }
    Ok(())
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
        body["messages"] =
            json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
        assert!(
            request(body)
                .expect_err("invalid")
                .message
                .contains("alternate")
        );
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
