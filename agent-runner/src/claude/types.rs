//! The Messages API's request and response types (`anthropic-version: 2023-06-01`).
//!
//! Only what MAOS sends and reads is typed; response blocks of kinds MAOS does not use are kept
//! as raw JSON so a conversation can be sent back unchanged. Thinking blocks are typed because a
//! stream builds them from deltas, and they must go back exactly as they came (signature too).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A `POST /v1/messages` body.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessagesRequest {
    /// The model, e.g. `claude-sonnet-4-5`.
    pub model: String,
    /// The most output tokens of this answer.
    pub max_tokens: u32,
    /// The system prompt, as text blocks (so a block can carry `cache_control`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<TextBlock>,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    /// How the model must use the tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Stream the answer as server-sent events; set by the client, not by callers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Strings that end the answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    /// Sampling temperature. Never sent with `thinking`, which the API refuses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Extended thinking: the model thinks, in blocks of its answer, before it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
}

impl MessagesRequest {
    /// The request as the API accepts it: no `temperature` beside `thinking` (the API allows
    /// only the default with thinking, so leaving it out keeps the same sampling).
    pub fn normalized(mut self) -> Self {
        if self.thinking.is_some() {
            self.temperature = None;
        }
        self
    }
}

/// The `thinking` setting of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Thinking {
    /// Extended thinking with a budget.
    Enabled {
        /// The most tokens the model may think before it answers: at least 1,024 and less
        /// than the request's `max_tokens`, which counts them.
        budget_tokens: u32,
    },
}

impl Thinking {
    /// The smallest budget the API accepts.
    pub const MIN_BUDGET_TOKENS: u32 = 1_024;

    /// Thinking enabled with `budget_tokens`.
    pub fn enabled(budget_tokens: u32) -> Self {
        Thinking::Enabled { budget_tokens }
    }

    /// The budget.
    pub fn budget_tokens(&self) -> u32 {
        match self {
            Thinking::Enabled { budget_tokens } => *budget_tokens,
        }
    }
}

/// A text block of the system prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TextBlock {
    /// Always `text`.
    #[serde(rename = "type")]
    pub kind: TextKind,
    /// The text.
    pub text: String,
    /// Marks the end of a cacheable prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
}

/// The `type` of a [`TextBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    /// A text block.
    Text,
}

impl TextBlock {
    /// A plain text block.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            kind: TextKind::Text,
            text: text.into(),
            cache_control: None,
        }
    }

    /// The same block, ending a cacheable prefix.
    pub fn cached(mut self) -> Self {
        self.cache_control = Some(CacheControl::Ephemeral);
        self
    }
}

/// A prompt-caching breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CacheControl {
    /// The default five-minute cache.
    Ephemeral,
}

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The caller (prompts and tool results).
    User,
    /// The model.
    Assistant,
}

/// One message of the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Vec<ContentBlock>,
}

impl Message {
    /// A user message of one text block.
    pub fn user_text(text: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: vec![ContentBlock::text(text)],
        }
    }

    /// The text of its text blocks, concatenated.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }
}

fn text_of(blocks: &[ContentBlock]) -> String {
    blocks
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// A block of message content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Marks the end of a cacheable prefix (set on a request's copy, never journaled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// A tool call by the model.
    ToolUse {
        /// Its id (`toolu_…`), which the result must name.
        id: String,
        /// The tool's name.
        name: String,
        /// Its input, an object matching the tool's schema.
        input: Value,
    },
    /// The answer to a tool call.
    ToolResult {
        /// The id of the call answered.
        tool_use_id: String,
        /// The result text.
        content: String,
        /// Whether the call failed (the model sees the error and can retry or adapt).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        /// Marks the end of a cacheable prefix (set on a request's copy, never journaled).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    /// The model's extended thinking; sent back unchanged, or the API refuses the signature.
    Thinking {
        /// What it thought.
        thinking: String,
        /// The API's signature over it (streamed last, in a `signature_delta`).
        #[serde(default)]
        signature: String,
    },
    /// Thinking the API keeps encrypted; sent back unchanged.
    RedactedThinking {
        /// The encrypted thinking.
        data: String,
    },
    /// A block kind MAOS does not interpret, kept as sent so it can be returned unchanged.
    #[serde(untagged)]
    Other(Value),
}

impl ContentBlock {
    /// Whether the API would refuse this block in a request: a text block with no text (an
    /// answer may hold one; "text content blocks must be non-empty" refuses it back).
    pub fn is_empty_text(&self) -> bool {
        matches!(self, ContentBlock::Text { text, .. } if text.trim().is_empty())
    }

    /// A text block.
    pub fn text(text: impl Into<String>) -> Self {
        ContentBlock::Text {
            text: text.into(),
            cache_control: None,
        }
    }

    /// The same block ending a cacheable prefix, if its kind can carry `cache_control`.
    pub fn cached(mut self) -> Self {
        if let ContentBlock::Text { cache_control, .. }
        | ContentBlock::ToolResult { cache_control, .. } = &mut self
        {
            *cache_control = Some(CacheControl::Ephemeral);
        }
        self
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its name: letters, digits, `_` and `-`.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON schema of its input (an object).
    pub input_schema: Value,
}

/// How the model must use tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// The model must call some tool.
    Any,
    /// The model must call this tool.
    Tool {
        /// The tool's name.
        name: String,
    },
    /// The model must not call tools.
    None,
}

/// A whole answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    /// Its id (`msg_…`).
    pub id: String,
    /// The model that answered.
    pub model: String,
    /// Always `assistant`.
    pub role: Role,
    /// What the model said.
    pub content: Vec<ContentBlock>,
    /// Why it stopped.
    pub stop_reason: Option<StopReason>,
    /// The stop sequence met, if that is why.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Tokens used.
    pub usage: Usage,
}

impl MessageResponse {
    /// The tool calls of the answer, in order.
    pub fn tool_uses(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.content.iter().filter_map(|block| match block {
            ContentBlock::ToolUse { id, name, input } => Some((id.as_str(), name.as_str(), input)),
            _ => None,
        })
    }

    /// The text of the answer, blocks joined.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }

    /// The answer as the assistant message to append to the conversation.
    pub fn to_message(&self) -> Message {
        Message {
            role: Role::Assistant,
            content: self.content.clone(),
        }
    }
}

/// Why the model stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It ran out of max_tokens.
    MaxTokens,
    /// It produced a stop sequence.
    StopSequence,
    /// The API paused a long turn; send the conversation back to continue it.
    PauseTurn,
    /// It declined to answer.
    Refusal,
    /// A reason this client does not know yet.
    #[serde(other)]
    Unknown,
}

/// Tokens one answer used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens billed at the normal rate.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub cache_read_input_tokens: u64,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_with_every_block_kind_parses() {
        let body = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "read_state", "input": {"key": "a"}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": null, "cache_read_input_tokens": 3}
        });
        let response: MessageResponse = serde_json::from_value(body).expect("parses");
        assert_eq!(response.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(
            response
                .tool_uses()
                .map(|(id, _, _)| id)
                .collect::<Vec<_>>(),
            ["toolu_1"]
        );
        assert_eq!(response.text(), "Let me check.");
        assert!(matches!(response.content[2], ContentBlock::Other(_)));
        assert_eq!(response.usage.cache_read_input_tokens, 3);
        assert_eq!(response.usage.cache_creation_input_tokens, 0);
    }

    #[test]
    fn unknown_stop_reasons_do_not_fail_parsing() {
        let reason: StopReason =
            serde_json::from_value(json!("model_context_window_exceeded")).expect("parses");
        assert_eq!(reason, StopReason::Unknown);
    }

    #[test]
    fn a_request_serializes_as_the_api_expects() {
        let request = MessagesRequest {
            model: "claude-sonnet-4-5".into(),
            max_tokens: 512,
            system: vec![TextBlock::new("You are an agent.").cached()],
            messages: vec![
                Message::user_text("go"),
                Message {
                    role: Role::Assistant,
                    content: vec![ContentBlock::ToolUse {
                        id: "toolu_1".into(),
                        name: "t".into(),
                        input: json!({}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![ContentBlock::ToolResult {
                        tool_use_id: "toolu_1".into(),
                        content: "bad input".into(),
                        is_error: true,
                        cache_control: None,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "t".into(),
                description: "d".into(),
                input_schema: json!({"type": "object"}),
            }],
            tool_choice: Some(ToolChoice::Auto),
            stream: false,
            stop_sequences: vec![],
            temperature: None,
            thinking: None,
        };
        let value = serde_json::to_value(&request).expect("serializes");
        assert_eq!(
            value["system"][0],
            json!({"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}})
        );
        assert_eq!(
            value["messages"][2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "toolu_1", "content": "bad input", "is_error": true})
        );
        assert_eq!(value["tool_choice"], json!({"type": "auto"}));
        assert!(value.get("stream").is_none());
        assert!(value.get("temperature").is_none());
        assert!(value.get("thinking").is_none());
    }

    #[test]
    fn thinking_blocks_parse_and_serialize_back_unchanged() {
        let content = json!([
            {"type": "thinking", "thinking": "Let me see.", "signature": "EqQBCkYIARgCIkB"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
            {"type": "text", "text": "Answer."}
        ]);
        let blocks: Vec<ContentBlock> = serde_json::from_value(content.clone()).expect("parses");
        assert_eq!(
            blocks[0],
            ContentBlock::Thinking {
                thinking: "Let me see.".into(),
                signature: "EqQBCkYIARgCIkB".into()
            }
        );
        assert_eq!(
            blocks[1],
            ContentBlock::RedactedThinking {
                data: "EmwKAhgBEgy3va3pzix".into()
            }
        );
        assert_eq!(serde_json::to_value(&blocks).expect("serializes"), content);
    }

    #[test]
    fn thinking_is_sent_enabled_with_its_budget_and_never_with_a_temperature() {
        let request = MessagesRequest {
            model: "claude-sonnet-4-5".into(),
            max_tokens: 6_000,
            system: vec![],
            messages: vec![Message::user_text("go")],
            tools: vec![],
            tool_choice: None,
            stream: false,
            stop_sequences: vec![],
            temperature: Some(0.2),
            thinking: Some(Thinking::enabled(2_048)),
        }
        .normalized();
        let value = serde_json::to_value(&request).expect("serializes");
        assert_eq!(
            value["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert!(value.get("temperature").is_none(), "{value}");
    }

    #[test]
    fn only_blank_text_blocks_are_empty() {
        assert!(ContentBlock::text("").is_empty_text());
        assert!(ContentBlock::text(" \n").is_empty_text());
        assert!(!ContentBlock::text("a").is_empty_text());
        assert!(
            !ContentBlock::RedactedThinking { data: "".into() }.is_empty_text(),
            "only text blocks"
        );
    }
}
