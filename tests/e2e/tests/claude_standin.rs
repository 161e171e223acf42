//! The Claude stand-in over real HTTP: headers, request checks, JSON and SSE answers, usage,
//! truncation and injected faults, as a Messages API client sees them.

use std::sync::Arc;

use maos_e2e::claude_standin::{
    ClaudeStandIn, Fault, MaosAgent, Outcome, Reply, Scripted, StandInConfig,
};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-0123456789";

fn start(behaviour: impl maos_e2e::claude_standin::Behaviour + 'static) -> ClaudeStandIn {
    let mut config = StandInConfig::new(KEY);
    config.behaviour = Arc::new(behaviour);
    ClaudeStandIn::start(config).expect("stand-in starts")
}

fn body(tools: &[&str], stream: bool) -> Value {
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t, "description": "d", "input_schema": {"type": "object", "properties": {}}}))
        .collect();
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": stream,
        "system": "You are a MAOS agent.",
        "tools": tools,
        "messages": [{"role": "user", "content": "Summarize the design.\nBe brief."}]
    })
}

async fn post(
    standin: &ClaudeStandIn,
    key: Option<&str>,
    version: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/messages", standin.base_url()))
        .json(body);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(version) = version {
        request = request.header("anthropic-version", version);
    }
    request.send().await.expect("the stand-in answers")
}

async fn ok_post(standin: &ClaudeStandIn, body: &Value) -> reqwest::Response {
    post(standin, Some(KEY), Some("2023-06-01"), body).await
}

#[tokio::test]
async fn a_tool_call_comes_back_as_a_message_with_usage() {
    let standin = start(MaosAgent::default());
    let response = ok_post(&standin, &body(&["complete_subtask"], false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    let message: Value = response.json().await.expect("json");
    assert_eq!(message["type"], "message");
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["type"], "tool_use");
    assert_eq!(message["content"][0]["name"], "complete_subtask");
    assert!(
        message["content"][0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_"))
    );
    assert_eq!(
        message["content"][0]["input"]["result"],
        "Stand-in answer to: Summarize the design."
    );
    assert!(message["usage"]["input_tokens"].as_u64() > Some(0));
    assert!(message["usage"]["output_tokens"].as_u64() > Some(0));
}

#[tokio::test]
async fn requests_without_the_right_key_are_refused_and_the_key_is_never_recorded() {
    let standin = start(MaosAgent::default());
    let missing = post(&standin, None, Some("2023-06-01"), &body(&[], false)).await;
    assert_eq!(missing.status(), 401);
    let error: Value = missing.json().await.expect("json");
    assert_eq!(error["error"]["type"], "authentication_error");
    let wrong = post(
        &standin,
        Some("sk-ant-wrong"),
        Some("2023-06-01"),
        &body(&[], false),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    ok_post(&standin, &body(&[], false)).await;
    let recorded = format!("{:?}", standin.requests());
    assert!(
        !recorded.contains(KEY) && !recorded.contains("sk-ant-wrong"),
        "a key was recorded"
    );
    assert_eq!(standin.requests().len(), 3);
}

#[tokio::test]
async fn a_missing_version_header_is_a_bad_request() {
    let standin = start(MaosAgent::default());
    let response = post(&standin, Some(KEY), None, &body(&[], false)).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("anthropic-version"))
    );
}

#[tokio::test]
async fn a_malformed_request_is_refused_naming_the_field() {
    let standin = start(MaosAgent::default());
    let mut bad = body(&[], false);
    bad.as_object_mut().expect("object").remove("max_tokens");
    let response = ok_post(&standin, &bad).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn an_unknown_model_is_not_found() {
    let standin = start(MaosAgent::default());
    let mut bad = body(&[], false);
    bad["model"] = json!("gpt-4");
    assert_eq!(ok_post(&standin, &bad).await.status(), 404);
}

#[tokio::test]
async fn scripted_faults_come_first_with_retry_after() {
    let standin = start(Scripted::new(
        [
            Outcome::Fail(Fault::rate_limited(7)),
            Outcome::Fail(Fault::OVERLOADED),
        ],
        MaosAgent::default(),
    ));
    let limited = ok_post(&standin, &body(&[], false)).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let overloaded = ok_post(&standin, &body(&[], false)).await;
    assert_eq!(overloaded.status(), 529);
    let error: Value = overloaded.json().await.expect("json");
    assert_eq!(error["error"]["type"], "overloaded_error");
    assert_eq!(ok_post(&standin, &body(&[], false)).await.status(), 200);
}

/// Reassembles a streamed message from its SSE events, as a client must.
fn assemble(sse: &str) -> Value {
    let mut message = Value::Null;
    let mut partial_json: Vec<String> = Vec::new();
    for event in sse.split("\n\n").filter(|e| !e.trim().is_empty()) {
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line");
        let data: Value = serde_json::from_str(data).expect("event json");
        match data["type"].as_str().unwrap_or_default() {
            "message_start" => message = data["message"].clone(),
            "content_block_start" => {
                message["content"]
                    .as_array_mut()
                    .expect("content")
                    .push(data["content_block"].clone());
                partial_json.push(String::new());
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().expect("index") as usize;
                match data["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        let text = format!(
                            "{}{}",
                            message["content"][index]["text"]
                                .as_str()
                                .unwrap_or_default(),
                            data["delta"]["text"].as_str().unwrap_or_default()
                        );
                        message["content"][index]["text"] = json!(text);
                    }
                    Some("input_json_delta") => partial_json[index]
                        .push_str(data["delta"]["partial_json"].as_str().unwrap_or_default()),
                    other => panic!("unexpected delta {other:?}"),
                }
            }
            "content_block_stop" => {
                let index = data["index"].as_u64().expect("index") as usize;
                if message["content"][index]["type"] == "tool_use" {
                    message["content"][index]["input"] =
                        serde_json::from_str(&partial_json[index]).expect("complete tool input");
                }
            }
            "message_delta" => {
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
            }
            "message_stop" | "ping" => {}
            other => panic!("unexpected event {other}"),
        }
    }
    message
}

#[tokio::test]
async fn a_streamed_answer_assembles_into_the_same_message() {
    let standin = start(MaosAgent {
        plan_size: 3,
        ..MaosAgent::default()
    });
    let json_message: Value = ok_post(&standin, &body(&["submit_plan"], false))
        .await
        .json()
        .await
        .expect("json");
    let response = ok_post(&standin, &body(&["submit_plan"], true)).await;
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let streamed = assemble(&response.text().await.expect("body"));
    assert_eq!(
        streamed["content"][0]["input"],
        json_message["content"][0]["input"]
    );
    assert_eq!(streamed["stop_reason"], "tool_use");
    assert_eq!(
        streamed["usage"]["output_tokens"],
        json_message["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn an_answer_longer_than_max_tokens_is_cut_with_stop_reason_max_tokens() {
    let standin = start(|_: &maos_e2e::claude_standin::MessagesRequest, _| {
        Outcome::Reply(Reply::text("word ".repeat(500)))
    });
    let mut request = body(&[], false);
    request["max_tokens"] = json!(10);
    let message: Value = ok_post(&standin, &request)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(message["usage"]["output_tokens"], 10);
    assert!(
        message["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.len() <= 40)
    );
}

#[tokio::test]
async fn a_reset_connection_is_a_transport_error_and_a_malformed_body_a_parse_error() {
    let standin = start(Scripted::new(
        [
            Outcome::Fail(Fault::ResetConnection),
            Outcome::Fail(Fault::MalformedBody),
        ],
        MaosAgent::default(),
    ));
    let reset = reqwest::Client::new()
        .post(format!("{}/v1/messages", standin.base_url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body(&[], false))
        .send()
        .await;
    let body_error = match reset {
        Err(_) => true,
        Ok(response) => response.bytes().await.is_err(),
    };
    assert!(
        body_error,
        "a cut connection must not look like a whole answer"
    );
    let malformed = ok_post(&standin, &body(&[], false)).await;
    assert_eq!(malformed.status(), 200);
    assert!(malformed.json::<Value>().await.is_err());
}

#[tokio::test]
async fn a_stream_can_fail_midway_with_an_error_event() {
    let standin = start(Scripted::new(
        [Outcome::Fail(Fault::StreamError)],
        MaosAgent::default(),
    ));
    let text = ok_post(&standin, &body(&[], true))
        .await
        .text()
        .await
        .expect("body");
    assert!(text.starts_with("event: message_start"));
    assert!(text.contains("event: error") && text.contains("overloaded_error"));
    assert!(!text.contains("message_stop"));
}

/// Polls `probe` every 20 ms until it gives a value or `deadline` passes.
async fn eventually<T>(
    what: &str,
    deadline: std::time::Duration,
    probe: impl Fn() -> Option<T>,
) -> T {
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < until,
            "{what} within {deadline:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_call_the_client_drops_is_recorded_abandoned_with_its_body() {
    let standin = start(|_: &maos_e2e::claude_standin::MessagesRequest, _: u64| {
        Outcome::Fail(Fault::Hang(std::time::Duration::from_secs(60)))
    });
    let call = tokio::spawn({
        let url = format!("{}/v1/messages", standin.base_url());
        async move {
            reqwest::Client::new()
                .post(url)
                .header("x-api-key", KEY)
                .header("anthropic-version", "2023-06-01")
                .json(&body(&[], false))
                .send()
                .await
        }
    });
    // While it hangs the request is seen, with what it asked.
    let hanging = eventually(
        "the hanging request with its body",
        std::time::Duration::from_secs(10),
        || standin.requests().into_iter().find(|r| r.body.is_some()),
    )
    .await;
    assert_eq!(
        hanging.body.as_ref().map(|b| b["model"].clone()),
        Some(json!("claude-sonnet-4-5"))
    );
    assert_eq!((hanging.status, hanging.abandoned_at), (0, None));

    call.abort();
    let dropped = eventually(
        "the dropped call marked abandoned",
        std::time::Duration::from_secs(10),
        || {
            standin
                .requests()
                .into_iter()
                .find(|r| r.abandoned_at.is_some())
        },
    )
    .await;
    assert_eq!(dropped.status, 0, "no answer was ever sent");
    assert!(dropped.answered_at.is_none());
}

#[tokio::test]
async fn a_bearer_token_is_accepted_like_x_api_key_and_every_documented_version() {
    let standin = start(MaosAgent::default());
    let bearer = reqwest::Client::new()
        .post(format!("{}/v1/messages", standin.base_url()))
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body(&[], false))
        .send()
        .await
        .expect("answers");
    assert_eq!(bearer.status(), 200);
    let older = post(&standin, Some(KEY), Some("2023-01-01"), &body(&[], false)).await;
    assert_eq!(older.status(), 200);
    let unknown = post(&standin, Some(KEY), Some("2024-01-01"), &body(&[], false)).await;
    assert_eq!(unknown.status(), 400);
    assert!(
        !format!("{:?}", standin.requests()).contains(KEY),
        "the bearer token is recorded redacted"
    );
}

#[tokio::test]
async fn every_answer_carries_request_id_and_rate_limit_headers() {
    let standin = start(MaosAgent::default());
    let response = ok_post(&standin, &body(&[], false)).await;
    for name in [
        "request-id",
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ] {
        assert!(response.headers().contains_key(name), "{name} is missing");
    }
    let limited = start(Scripted::new(
        [Outcome::Fail(Fault::rate_limited(3))],
        MaosAgent::default(),
    ));
    let response = ok_post(&limited, &body(&[], false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    assert!(response.headers().contains_key("request-id"));
}

#[tokio::test]
async fn a_gateway_timeout_is_a_timeout_error() {
    let standin = start(Scripted::new(
        [Outcome::Fail(Fault::Status {
            status: 504,
            retry_after: None,
        })],
        MaosAgent::default(),
    ));
    let response = ok_post(&standin, &body(&[], false)).await;
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn models_are_those_of_the_api_table_by_alias_or_dated_id() {
    let standin = start(MaosAgent::default());
    for model in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5",
    ] {
        let mut request = body(&[], false);
        request["model"] = json!(model);
        let response = ok_post(&standin, &request).await;
        assert_eq!(response.status(), 200, "{model}");
        let message: Value = response.json().await.expect("json");
        assert_eq!(message["model"], model, "answered as asked unless told");
    }
    let mut unknown = body(&[], false);
    unknown["model"] = json!("claude-sonnet-9-9");
    let response = ok_post(&standin, &unknown).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "not_found_error");
    assert_eq!(error["error"]["message"], "model: claude-sonnet-9-9");
    let mut too_long = body(&[], false);
    too_long["max_tokens"] = json!(200_000);
    let response = ok_post(&standin, &too_long).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(
        error["error"]["message"],
        "max_tokens: 200000 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5-20250929"
    );
}

#[tokio::test]
async fn a_dated_model_marker_answers_with_the_dated_id() {
    let standin = start(MaosAgent::default());
    let mut request = body(&[], false);
    request["system"] = json!("You are a MAOS agent. [[answer:dated-model]]");
    let message: Value = ok_post(&standin, &request)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(message["model"], "claude-sonnet-4-5-20250929");
}

/// A body asking for thinking.
fn thinking_body(stream: bool) -> Value {
    let mut request = body(&["complete_subtask"], stream);
    request["max_tokens"] = json!(4096);
    request["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    request
}

#[tokio::test]
async fn thinking_is_signed_and_accepted_back_only_unchanged() {
    let standin = start(MaosAgent::default());
    let message: Value = ok_post(&standin, &thinking_body(false))
        .await
        .json()
        .await
        .expect("json");
    let content = message["content"].as_array().expect("content").clone();
    assert_eq!(content[0]["type"], "thinking");
    assert!(
        content[0]["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(content[1]["type"], "tool_use");
    let id = content[1]["id"].clone();
    let next = |turn: Vec<Value>| {
        let mut request = thinking_body(false);
        request["messages"] = json!([
            {"role": "user", "content": "Summarize the design.\nBe brief."},
            {"role": "assistant", "content": turn},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "recorded"}]}
        ]);
        request
    };
    assert_eq!(
        ok_post(&standin, &next(content.clone())).await.status(),
        200
    );
    let mut forged = content.clone();
    forged[0]["thinking"] = json!("Something else entirely.");
    let response = ok_post(&standin, &next(forged)).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(
        error["error"]["message"],
        "messages.1.content.0: Invalid `signature` in `thinking` block"
    );
    let response = ok_post(&standin, &next(content[1..].to_vec())).await;
    assert_eq!(
        response.status(),
        400,
        "a tool loop's turn without its thinking"
    );
}

#[tokio::test]
async fn a_streamed_answer_streams_its_thinking_and_signature() {
    let standin = start(MaosAgent::default());
    let sse = ok_post(&standin, &thinking_body(true))
        .await
        .text()
        .await
        .expect("body");
    assert!(sse.contains("\"thinking_delta\""), "{sse}");
    assert!(sse.contains("\"signature_delta\""), "{sse}");
}

#[tokio::test]
async fn prompt_caching_caches_only_a_prefix_of_the_models_minimum() {
    let standin = start(MaosAgent::default());
    let with_system = |model: &str, chars: usize| {
        let mut request = body(&[], false);
        request["model"] = json!(model);
        request["system"] = json!([{"type": "text", "text": "s".repeat(chars), "cache_control": {"type": "ephemeral"}}]);
        request
    };
    let usage = |message: Value| {
        (
            message["usage"]["cache_creation_input_tokens"].as_u64(),
            message["usage"]["cache_read_input_tokens"].as_u64(),
        )
    };
    // About 500 tokens: below every minimum, so never cached.
    let short = with_system("claude-sonnet-4-5", 2_000);
    for _ in 0..2 {
        let message: Value = ok_post(&standin, &short).await.json().await.expect("json");
        assert_eq!(usage(message), (Some(0), Some(0)));
    }
    // About 1,500 tokens: cached for Sonnet (minimum 1,024), written once and read after.
    let long = with_system("claude-sonnet-4-5", 6_000);
    let first: Value = ok_post(&standin, &long).await.json().await.expect("json");
    let (written, read) = usage(first);
    assert!(
        written.is_some_and(|w| w >= 1_024) && read == Some(0),
        "{written:?} {read:?}"
    );
    let second: Value = ok_post(&standin, &long).await.json().await.expect("json");
    assert_eq!(usage(second), (Some(0), written));
    // The same prefix is too short for Haiku (minimum 2,048).
    let haiku = with_system("claude-haiku-4-5", 6_000);
    let message: Value = ok_post(&standin, &haiku).await.json().await.expect("json");
    assert_eq!(usage(message), (Some(0), Some(0)));
}
