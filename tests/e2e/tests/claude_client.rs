//! The agent runner's Claude client against the stand-in: answers, streaming, which failures are
//! retried (and how patiently), and that the API key never shows up in anything it produces.

use std::sync::Arc;
use std::time::Duration;

use maos_agent_runner::claude::sse::Progress;
use maos_agent_runner::claude::types::{
    ContentBlock, Message, MessagesRequest, Role, StopReason, TextBlock, Thinking, Tool,
};
use maos_agent_runner::claude::{ApiKey, ClaudeClient, ClaudeError, ClientConfig, RetryPolicy};
use maos_e2e::claude_standin::{
    Behaviour, ClaudeStandIn, Fault, MaosAgent, Outcome, Scripted, StandInConfig,
};
use serde_json::json;

const KEY: &str = "sk-ant-e2e-RECOGNISABLE-7f3a9c";

fn standin(behaviour: impl Behaviour + 'static) -> ClaudeStandIn {
    let mut config = StandInConfig::new(KEY);
    config.behaviour = Arc::new(behaviour);
    ClaudeStandIn::start(config).expect("stand-in starts")
}

fn client(standin: &ClaudeStandIn, key: &str) -> ClaudeClient {
    let mut config = ClientConfig::new(standin.base_url(), ApiKey::new(key).expect("key"));
    config.retry = RetryPolicy {
        max_retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    };
    config.read_timeout = Duration::from_millis(500);
    ClaudeClient::new(config).expect("client")
}

fn request() -> MessagesRequest {
    MessagesRequest {
        model: "claude-sonnet-4-5".into(),
        max_tokens: 1024,
        // Long enough to be cached: the API caches no prefix under 1,024 tokens (Sonnet).
        system: vec![
            TextBlock::new(format!("You are a MAOS agent.\n{}", DESIGN.repeat(40))).cached(),
        ],
        messages: vec![Message::user_text("Summarize the design.")],
        tools: vec![Tool {
            name: "complete_subtask".into(),
            description: "Finish the subtask with its result.".into(),
            input_schema: json!({"type": "object", "properties": {"result": {"type": "string"}}, "required": ["result"]}),
        }],
        tool_choice: None,
        stream: false,
        stop_sequences: vec![],
        temperature: None,
        thinking: None,
    }
}

/// A paragraph of a system prompt.
const DESIGN: &str = "An agent claims a subtask, works it with tools and shared state, and completes it with a self-contained result.\n";

#[tokio::test]
async fn send_returns_the_models_tool_call_and_usage() {
    let standin = standin(MaosAgent::default());
    let message = client(&standin, KEY)
        .send(&request())
        .await
        .expect("answer");
    assert_eq!(message.stop_reason, Some(StopReason::ToolUse));
    let calls: Vec<_> = message.tool_uses().collect();
    assert_eq!(calls[0].1, "complete_subtask");
    assert_eq!(
        calls[0].2["result"],
        "Stand-in answer to: Summarize the design."
    );
    assert!(message.usage.input_tokens > 0 && message.usage.output_tokens > 0);
    assert!(
        message.usage.cache_creation_input_tokens > 0,
        "the cached system prompt is written first"
    );
    let again = client(&standin, KEY)
        .send(&request())
        .await
        .expect("answer");
    assert!(again.usage.cache_read_input_tokens > 0, "and read after");
}

#[tokio::test]
async fn stream_assembles_the_same_answer_and_reports_text_as_it_arrives() {
    let standin = standin(|_: &maos_e2e::claude_standin::MessagesRequest, _| {
        Outcome::Reply(maos_e2e::claude_standin::Reply::text(
            "A fairly long answer that arrives in several pieces.",
        ))
    });
    let client = client(&standin, KEY);
    let whole = client.send(&request()).await.expect("answer");
    let mut pieces = Vec::new();
    let streamed = client
        .stream(&request(), |progress| {
            if let Progress::Text(piece) = progress {
                pieces.push(piece.clone());
            }
        })
        .await
        .expect("answer");
    assert_eq!(streamed.content, whole.content);
    assert_eq!(streamed.usage.output_tokens, whole.usage.output_tokens);
    assert!(pieces.len() > 1, "text arrived in pieces: {pieces:?}");
    assert_eq!(pieces.concat(), whole.text());
    let last = standin.requests().pop().expect("recorded");
    assert_eq!(
        last.body.as_ref().map(|b| b["stream"].clone()),
        Some(json!(true))
    );
}

#[tokio::test]
async fn overloaded_and_server_errors_are_retried_until_an_answer() {
    let retries = prometheus_client::metrics::counter::Counter::<u64>::default();
    let standin = standin(Scripted::new(
        [
            Outcome::Fail(Fault::OVERLOADED),
            Outcome::Fail(Fault::Status {
                status: 500,
                retry_after: None,
            }),
            Outcome::Fail(Fault::ResetConnection),
        ],
        MaosAgent::default(),
    ));
    client(&standin, KEY)
        .with_retry_counter(retries.clone())
        .send(&request())
        .await
        .expect("answer after three failures");
    assert_eq!(standin.requests().len(), 4);
    assert_eq!(retries.get(), 3, "every retry is counted");
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let standin = standin(Scripted::new(
        [Outcome::Fail(Fault::rate_limited(1))],
        MaosAgent::default(),
    ));
    client(&standin, KEY)
        .send(&request())
        .await
        .expect("answer");
    let requests = standin.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at.duration_since(requests[0].at);
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?} despite retry-after: 1"
    );
}

#[tokio::test]
async fn a_bad_request_is_not_retried() {
    let standin = standin(Scripted::new(
        [Outcome::Fail(Fault::Status {
            status: 400,
            retry_after: None,
        })],
        MaosAgent::default(),
    ));
    let err = client(&standin, KEY)
        .send(&request())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, ClaudeError::Rejected { status: 400, .. }),
        "{err:?}"
    );
    assert_eq!(standin.requests().len(), 1);
}

#[tokio::test]
async fn retries_stop_at_the_limit() {
    let standin = standin(|_: &maos_e2e::claude_standin::MessagesRequest, _| {
        Outcome::Fail(Fault::OVERLOADED)
    });
    let err = client(&standin, KEY)
        .send(&request())
        .await
        .expect_err("gives up");
    assert!(
        matches!(err, ClaudeError::RetriesExhausted { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(standin.requests().len(), 4);
}

#[tokio::test]
async fn a_silent_api_times_out_and_the_call_is_retried() {
    let standin = standin(Scripted::new(
        [Outcome::Fail(Fault::Hang(Duration::from_secs(5)))],
        MaosAgent::default(),
    ));
    client(&standin, KEY)
        .send(&request())
        .await
        .expect("answer after a time-out");
    assert_eq!(
        standin.requests().len(),
        1 + 1,
        "one hung call, one answered"
    );
}

#[tokio::test]
async fn a_malformed_answer_is_an_error_not_a_panic() {
    let standin = standin(Scripted::new(
        [Outcome::Fail(Fault::MalformedBody)],
        MaosAgent::default(),
    ));
    let err = client(&standin, KEY)
        .send(&request())
        .await
        .expect_err("malformed");
    assert!(matches!(err, ClaudeError::MalformedResponse(_)), "{err:?}");
}

#[tokio::test]
async fn a_stream_that_fails_midway_is_retried() {
    let standin = standin(Scripted::new(
        [Outcome::Fail(Fault::StreamError)],
        MaosAgent::default(),
    ));
    let message = client(&standin, KEY)
        .stream(&request(), |_| {})
        .await
        .expect("answer");
    assert_eq!(message.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(standin.requests().len(), 2);
}

#[tokio::test]
async fn the_api_key_never_appears_in_errors_or_debug_output() {
    let standin = standin(MaosAgent::default());
    let wrong = "sk-ant-WRONG-RECOGNISABLE-0000";
    let client_with_wrong_key = client(&standin, wrong);
    let err = client_with_wrong_key
        .send(&request())
        .await
        .expect_err("unauthorized");
    assert!(
        matches!(&err, ClaudeError::Rejected { status: 401, kind, .. } if kind == "authentication_error"),
        "{err:?}"
    );
    let everything = format!(
        "{err} {err:?} {client_with_wrong_key:?} {:?}",
        client(&standin, KEY)
    );
    assert!(
        !everything.contains(wrong) && !everything.contains(KEY),
        "a key leaked: {everything}"
    );
}

#[tokio::test]
async fn thinking_comes_back_signed_and_the_next_turn_sends_it_back_unchanged() {
    let standin = standin(MaosAgent::default());
    let client = client(&standin, KEY);
    for stream in [false, true] {
        let mut first = request();
        first.max_tokens = 4096;
        first.thinking = Some(Thinking::enabled(2048));
        // The API refuses a temperature beside thinking: the client leaves it out.
        first.temperature = Some(0.3);
        let answer = if stream {
            client.stream(&first, |_| {}).await
        } else {
            client.send(&first).await
        }
        .expect("answer");
        let ContentBlock::Thinking { signature, .. } = &answer.content[0] else {
            panic!("thinking first: {:?}", answer.content);
        };
        assert!(
            !signature.is_empty(),
            "stream {stream}: the signature arrived"
        );
        let (id, _, _) = answer.tool_uses().next().expect("a tool call");
        let mut next = first.clone();
        next.messages.push(answer.to_message());
        next.messages.push(Message {
            role: Role::User,
            content: vec![ContentBlock::ToolResult {
                tool_use_id: id.to_owned(),
                content: "recorded".into(),
                is_error: false,
                cache_control: None,
            }],
        });
        // The stand-in refuses thinking whose signature does not match, and a tool loop's
        // turn without its thinking.
        client
            .send(&next)
            .await
            .expect("the thinking went back unchanged");
    }
    assert!(
        standin.requests().iter().all(|r| r.status == 200),
        "no request was refused"
    );
}
