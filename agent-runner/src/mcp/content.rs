//! An MCP tool result as the model reads it: one bounded text for a `tool_result` block.
//!
//! Read from the result's JSON (the MCP schema), not from the SDK's types, so a content kind a
//! newer server sends is summarised rather than failing the call. Text and structured content
//! are passed on; images, audio and binary resources are described (kind, type, size), never
//! inlined: the model cannot see them through a text result and they would crowd out the
//! conversation.

use serde_json::Value;

/// Most bytes of one tool result the model gets; the rest is cut with a note saying so.
pub const MAX_RESULT_BYTES: usize = 32 * 1024;

/// What a tool call returned, ready for a `tool_result` block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// The text the model reads.
    pub text: String,
    /// Whether the tool reported an error.
    pub is_error: bool,
}

/// Renders a `CallToolResult` (as JSON) for the model.
pub fn render(result: &Value) -> Rendered {
    let is_error = result
        .get("isError")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut parts: Vec<String> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| blocks.iter().map(block).collect())
        .unwrap_or_default();
    if let Some(structured) = result.get("structuredContent").filter(|v| !v.is_null()) {
        // The spec has servers repeat structured content as text; do not say it twice.
        let json = structured.to_string();
        if !parts.iter().any(|p| same_json(p, structured)) {
            parts.push(json);
        }
    }
    let text = if parts.is_empty() {
        "(the tool returned no content)".to_owned()
    } else {
        parts.join("\n")
    };
    Rendered {
        text: bounded(text, MAX_RESULT_BYTES),
        is_error,
    }
}

fn same_json(text: &str, value: &Value) -> bool {
    serde_json::from_str::<Value>(text).is_ok_and(|parsed| &parsed == value)
}

fn block(block: &Value) -> String {
    let kind = block.get("type").and_then(Value::as_str).unwrap_or("");
    let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => text("text").to_owned(),
        "image" | "audio" => format!(
            "[{kind} of type {}, {} bytes; not shown]",
            or_unknown(text("mimeType")),
            base64_len(text("data"))
        ),
        "resource_link" => format!(
            "[resource link {} ({}){}]",
            text("uri"),
            or_unknown(text("name")),
            described(text("description"))
        ),
        "resource" => {
            let resource = block.get("resource").cloned().unwrap_or(Value::Null);
            let field = |key: &str| resource.get(key).and_then(Value::as_str).unwrap_or("");
            match resource.get("text").and_then(Value::as_str) {
                Some(content) => format!("[resource {}]\n{content}", field("uri")),
                None => format!(
                    "[resource {} of type {}, {} bytes; not shown]",
                    field("uri"),
                    or_unknown(field("mimeType")),
                    base64_len(field("blob"))
                ),
            }
        }
        other => format!("[content of kind {:?}; not shown]", or_unknown(other)),
    }
}

fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "unknown" } else { text }
}

fn described(description: &str) -> String {
    if description.is_empty() {
        String::new()
    } else {
        format!(": {description}")
    }
}

/// The decoded size of base64 `data`.
fn base64_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

/// `text`, cut at a character boundary to at most `max` bytes with a note saying how much was
/// left out.
pub fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let note = format!(
        "\n[cut: the tool returned {} bytes; the first {max} are shown]",
        text.len()
    );
    let mut end = max.saturating_sub(note.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{note}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_passed_on_and_errors_marked() {
        let ok = render(&json!({"content": [{"type": "text", "text": "4"}]}));
        assert_eq!(
            ok,
            Rendered {
                text: "4".into(),
                is_error: false
            }
        );
        let failed = render(
            &json!({"content": [{"type": "text", "text": "no such city"}], "isError": true}),
        );
        assert!(failed.is_error);
        assert_eq!(failed.text, "no such city");
    }

    #[test]
    fn structured_content_is_shown_once() {
        let both = render(&json!({
            "content": [{"type": "text", "text": "{\"sum\": 5}"}],
            "structuredContent": {"sum": 5}
        }));
        assert_eq!(both.text, "{\"sum\": 5}");
        let only = render(&json!({"content": [], "structuredContent": {"sum": 5}}));
        assert_eq!(only.text, "{\"sum\":5}");
    }

    #[test]
    fn binary_content_is_described_not_inlined() {
        let data = "iVBORw0KGgo=";
        let image = render(&json!({"content": [
            {"type": "image", "data": data, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file:///a.bin", "blob": data}},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
            {"type": "resource_link", "uri": "file:///b", "name": "b"},
            {"type": "hologram"}
        ]}));
        assert!(!image.text.contains(data), "{}", image.text);
        assert!(
            image
                .text
                .contains("[image of type image/png, 8 bytes; not shown]"),
            "{}",
            image.text
        );
        assert!(
            image.text.contains("[resource file:///a.txt]\nhello"),
            "{}",
            image.text
        );
        assert!(
            image.text.contains("[resource link file:///b (b)]"),
            "{}",
            image.text
        );
        assert!(image.text.contains("\"hologram\""), "{}", image.text);
    }

    #[test]
    fn a_huge_result_is_cut_with_a_note() {
        let huge = "é".repeat(MAX_RESULT_BYTES);
        let rendered = render(&json!({"content": [{"type": "text", "text": huge}]}));
        assert!(rendered.text.len() <= MAX_RESULT_BYTES);
        assert!(rendered.text.ends_with(&format!(
            "[cut: the tool returned {} bytes; the first {MAX_RESULT_BYTES} are shown]",
            2 * MAX_RESULT_BYTES
        )));
    }

    #[test]
    fn an_empty_result_still_says_something() {
        assert_eq!(render(&json!({})).text, "(the tool returned no content)");
    }
}
