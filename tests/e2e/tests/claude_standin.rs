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
