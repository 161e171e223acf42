//! Server-sent events of a streamed answer: a byte-level parser, and an assembler that folds
//! the events into the same [`MessageResponse`] the non-streaming call returns.

use serde_json::Value;

use super::error::ClaudeError;
use super::types::{ContentBlock, MessageResponse, StopReason};

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (empty if absent).
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Splits a byte stream into events; feed it chunks as they arrive.
#[derive(Debug, Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl SseParser {
    /// Adds bytes and returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    events.push(SseEvent {
                        event: std::mem::take(&mut self.event),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        events
    }
}

/// Folds stream events into a message.
#[derive(Debug, Default)]
pub struct MessageAssembler {
    message: Option<MessageResponse>,
    /// Partial JSON of each tool_use block, by block index.
    partial_inputs: Vec<String>,
    finished: bool,
}

/// What one event contributed, for progress reporting.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// A piece of answer text, as it streamed in.
    Text(String),
    /// A piece of a tool call's input (partial JSON), as it streamed in.
    ToolInput(String),
    /// A piece of the model's extended thinking, as it streamed in.
    Thinking(String),
    /// Nothing a user would see.
    Nothing,
}

impl MessageAssembler {
    /// Applies one event; an `error` event or a malformed one is an error.
    pub fn apply(&mut self, event: &SseEvent) -> Result<Progress, ClaudeError> {
        let data: Value = serde_json::from_str(&event.data).map_err(|err| {
            ClaudeError::MalformedResponse(format!("stream event {}: {err}", event.event))
        })?;
        let kind = data["type"]
            .as_str()
            .unwrap_or(event.event.as_str())
            .to_owned();
        match kind.as_str() {
            "message_start" => {
                let mut message: MessageResponse = serde_json::from_value(data["message"].clone())
                    .map_err(|err| {
                        ClaudeError::MalformedResponse(format!("message_start: {err}"))
                    })?;
                message.content.clear();
                self.message = Some(message);
            }
            "content_block_start" => {
                let index = self.index(&data)?;
                let block: ContentBlock = serde_json::from_value(data["content_block"].clone())
                    .map_err(|err| {
                        ClaudeError::MalformedResponse(format!("content_block_start: {err}"))
                    })?;
                let message = self.message_mut()?;
                if index != message.content.len() {
                    return Err(ClaudeError::MalformedResponse(format!(
                        "content block {index} started out of order"
                    )));
                }
                message.content.push(block);
                self.partial_inputs.push(String::new());
            }
            "content_block_delta" => {
                let index = self.index(&data)?;
                let delta = &data["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let piece = delta["text"].as_str().unwrap_or_default();
                        let message = self.message_mut()?;
                        if let Some(ContentBlock::Text { text, .. }) =
                            message.content.get_mut(index)
                        {
                            text.push_str(piece);
                        } else {
                            return Err(ClaudeError::MalformedResponse(format!(
                                "text delta for block {index}, which is not text"
                            )));
                        }
                        return Ok(Progress::Text(piece.to_owned()));
                    }
                    Some("input_json_delta") => {
                        let piece = delta["partial_json"].as_str().unwrap_or_default();
                        match self.partial_inputs.get_mut(index) {
                            Some(partial) => partial.push_str(piece),
                            None => {
                                return Err(ClaudeError::MalformedResponse(format!(
                                    "input delta for unknown block {index}"
                                )));
                            }
                        }
                        return Ok(Progress::ToolInput(piece.to_owned()));
                    }
                    Some("thinking_delta") => {
                        let piece = delta["thinking"].as_str().unwrap_or_default();
                        let message = self.message_mut()?;
                        if let Some(ContentBlock::Thinking { thinking, .. }) =
                            message.content.get_mut(index)
                        {
                            thinking.push_str(piece);
                        } else {
                            return Err(ClaudeError::MalformedResponse(format!(
                                "thinking delta for block {index}, which is not thinking"
                            )));
                        }
                        return Ok(Progress::Thinking(piece.to_owned()));
                    }
                    Some("signature_delta") => {
                        let piece = delta["signature"].as_str().unwrap_or_default();
                        let message = self.message_mut()?;
                        if let Some(ContentBlock::Thinking { signature, .. }) =
                            message.content.get_mut(index)
                        {
                            signature.push_str(piece);
                        } else {
                            return Err(ClaudeError::MalformedResponse(format!(
                                "signature delta for block {index}, which is not thinking"
                            )));
                        }
                    }
                    // Deltas of block kinds MAOS keeps as raw JSON (e.g. citations).
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = self.index(&data)?;
                let partial = self.partial_inputs.get(index).cloned().unwrap_or_default();
                let message = self.message_mut()?;
                if let Some(ContentBlock::ToolUse { input, .. }) = message.content.get_mut(index) {
                    *input = if partial.trim().is_empty() {
                        Value::Object(Default::default())
                    } else {
                        serde_json::from_str(&partial).map_err(|err| {
                            ClaudeError::MalformedResponse(format!(
                                "tool input of block {index}: {err}"
                            ))
                        })?
                    };
                }
            }
            "message_delta" => {
                let message = self.message_mut()?;
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    message.stop_reason = Some(
                        serde_json::from_value(Value::String(reason.to_owned()))
                            .unwrap_or(StopReason::Unknown),
                    );
                }
                if let Some(sequence) = data["delta"]["stop_sequence"].as_str() {
                    message.stop_sequence = Some(sequence.to_owned());
                }
                let usage = &data["usage"];
                if let Some(n) = usage["output_tokens"].as_u64() {
                    message.usage.output_tokens = n;
                }
                if let Some(n) = usage["input_tokens"].as_u64() {
                    message.usage.input_tokens = n;
                }
                if let Some(n) = usage["cache_read_input_tokens"].as_u64() {
                    message.usage.cache_read_input_tokens = n;
                }
                if let Some(n) = usage["cache_creation_input_tokens"].as_u64() {
                    message.usage.cache_creation_input_tokens = n;
                }
            }
            "message_stop" => self.finished = true,
            "error" => {
                return Err(ClaudeError::Stream {
                    kind: data["error"]["type"]
                        .as_str()
                        .unwrap_or("unknown_error")
                        .to_owned(),
                    message: data["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
            // `ping`, and event kinds this client does not know yet.
            _ => {}
        }
        Ok(Progress::Nothing)
    }

    /// The assembled message, once `message_stop` arrived.
    pub fn finish(self) -> Result<MessageResponse, ClaudeError> {
        match (self.finished, self.message) {
            (true, Some(message)) => Ok(message),
            _ => Err(ClaudeError::MalformedResponse(
                "the stream ended before message_stop".to_owned(),
            )),
        }
    }

    fn index(&self, data: &Value) -> Result<usize, ClaudeError> {
        data["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| {
                ClaudeError::MalformedResponse("stream event without a block index".to_owned())
            })
    }

    fn message_mut(&mut self) -> Result<&mut MessageResponse, ClaudeError> {
        self.message.as_mut().ok_or_else(|| {
            ClaudeError::MalformedResponse("stream event before message_start".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
        ": a comment\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\r\n\r\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"t\",\"input\":{}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\": \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"[1, 2]}\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn assemble(chunks: &[&[u8]]) -> Result<(MessageResponse, String), ClaudeError> {
        let mut parser = SseParser::default();
        let mut assembler = MessageAssembler::default();
        let mut text = String::new();
        for chunk in chunks {
            for event in parser.push(chunk) {
                if let Progress::Text(piece) = assembler.apply(&event)? {
                    text.push_str(&piece);
                }
            }
        }
        Ok((assembler.finish()?, text))
    }

    #[test]
    fn a_stream_assembles_into_the_whole_message() {
        let (message, text) = assemble(&[STREAM.as_bytes()]).expect("assembles");
        assert_eq!(message.text(), "Hello");
        assert_eq!(text, "Hello");
        let tools: Vec<_> = message.tool_uses().collect();
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].2, &serde_json::json!({"a": [1, 2]}));
        assert_eq!(message.stop_reason, Some(StopReason::ToolUse));
        assert_eq!(
            (message.usage.input_tokens, message.usage.output_tokens),
            (12, 42)
        );
    }

    #[test]
    fn events_split_across_chunks_at_any_byte_assemble_the_same() {
        let bytes = STREAM.as_bytes();
        for cut in [1, 7, 100, bytes.len() / 2, bytes.len() - 3] {
            let (message, _) = assemble(&[&bytes[..cut], &bytes[cut..]]).expect("assembles");
            assert_eq!(message.text(), "Hello", "cut at {cut}");
        }
    }

    #[test]
    fn thinking_and_signature_deltas_assemble_into_the_thinking_block() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Two plus \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"two is four.\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCkYIARgC\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgB\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"4\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":30}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let (message, text) = assemble(&[stream.as_bytes()]).expect("assembles");
        assert_eq!(
            message.content,
            vec![
                ContentBlock::Thinking {
                    thinking: "Two plus two is four.".into(),
                    signature: "EqQBCkYIARgC".into(),
                },
                ContentBlock::RedactedThinking {
                    data: "EmwKAhgB".into()
                },
                ContentBlock::text("4"),
            ]
        );
        assert_eq!(text, "4", "thinking is not answer text");
    }

    #[test]
    fn an_error_event_is_an_error() {
        let stream = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert!(matches!(
            assemble(&[stream.as_bytes()]),
            Err(ClaudeError::Stream { kind, .. }) if kind == "overloaded_error"
        ));
    }

    #[test]
    fn a_stream_cut_before_message_stop_is_malformed() {
        let cut = &STREAM[..STREAM.find("event: message_delta").expect("present")];
        assert!(matches!(
            assemble(&[cut.as_bytes()]),
            Err(ClaudeError::MalformedResponse(_))
        ));
    }

    #[test]
    fn garbage_data_is_malformed_not_a_panic() {
        let stream = "event: content_block_delta\ndata: {not json\n\n";
        assert!(matches!(
            assemble(&[stream.as_bytes()]),
            Err(ClaudeError::MalformedResponse(_))
        ));
        let before_start = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
        assert!(matches!(
            assemble(&[before_start.as_bytes()]),
            Err(ClaudeError::MalformedResponse(_))
        ));
    }
}
