//! MCP tools end to end: a pool offering a real MCP server (the Python-SDK fixture, which checks
//! the bearer token the pool sends from a Secret) and one that is unreachable; a Task granted
//! one tool uses it through the operator's agent pods; the pool says which server its agents go
//! without (`ToolsDegraded`); a Task naming a tool the pool does not offer waits, saying so.

use std::time::Duration;

use maos_core::api::v1alpha1::{AgentPool, Task};
use maos_e2e::claude_standin::{MaosAgent, WorkCall};
use maos_e2e::launch::free_port;
use maos_e2e::launch::mcp::McpServerProcess;
use maos_e2e::stack::{Stack, StackConfig, condition};
use serde_json::json;

const TOKEN: &str = "operator-mcp-token";
/// Long enough for a whole Task on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(120);

fn pool_condition(pool: &AgentPool, type_: &str) -> Option<(String, String, String)> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_uses_a_granted_mcp_tool_and_the_pool_names_the_server_it_cannot_reach() {
    let fixture = McpServerProcess::fixture(TOKEN).expect("fixture");
    let closed = free_port().expect("a port nothing listens on");
    let agent = MaosAgent {
        work_calls: vec![WorkCall {
            tool: "fixture__lookup".into(),
            input: json!({"city": "Oslo"}),
        }],
        ..MaosAgent::default()
    };
    let stack = Stack::start(StackConfig::new("e2e-mcp").claude_behaviour(agent))
        .await
        .expect("the stack starts");
    stack
        .apply(&format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: fixture-token}}
stringData: {{authorization: 'Bearer {TOKEN}'}}
---
apiVersion: maos.dev/v1alpha1
kind: AgentPool
metadata: {{name: tooled}}
spec:
  replicas: {{min: 1, max: 1}}
  apiKeySecretRef: {{name: {secret}, key: api-key}}
  tools:
    mcpServers:
    - name: fixture
      url: {url}
      headers:
      - name: Authorization
        valueFrom: {{secretKeyRef: {{name: fixture-token, key: authorization}}}}
    - name: gone
      url: http://127.0.0.1:{closed}/mcp
",
            secret = maos_e2e::stack::API_KEY_SECRET,
            url = fixture.url(),
        ))
        .expect("kubectl apply the pool");
    stack
        .apply(
            "apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: census}
spec:
  prompt: Find the population of Oslo.
  poolRef: {name: tooled}
  synthesize: false
  tools: [fixture/lookup]
  subtasks:
  - {name: oslo, prompt: Find the population of Oslo.}
---
apiVersion: maos.dev/v1alpha1
kind: Task
metadata: {name: wants-more}
spec:
  prompt: Search the web.
  poolRef: {name: tooled}
  tools: [fixture/lookup, search]
",
        )
        .expect("kubectl apply the tasks");

    let task = stack.wait_task_finished("census", DEADLINE).await;
    let succeeded = condition(&task, "Succeeded").expect("Succeeded");
    assert_eq!(succeeded.status, "True", "{succeeded:?}");
    let calls = fixture.calls().expect("calls");
    assert_eq!(
        calls["lookup:Oslo"], 1,
        "the agent pod called the tool once: {calls}"
    );
    let requests = stack.standin().requests();
    let offered: Vec<String> = requests
        .iter()
        .filter_map(|r| r.body.as_ref())
        .flat_map(|b| b["tools"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .filter(|n| n.contains("__"))
        .collect();
    assert!(
        offered.iter().all(|n| n == "fixture__lookup"),
        "{offered:?}"
    );
    assert!(!offered.is_empty());

    let waiting = stack
        .wait_task("wants-more", "held for its tools", DEADLINE, |t: &Task| {
            condition(t, "Accepted").is_some_and(|c| c.reason == "ToolsUnavailable")
        })
        .await;
    let accepted = condition(&waiting, "Accepted").expect("Accepted");
    assert_eq!(accepted.status, "False");
    assert!(
        accepted.message.contains("MCP server search"),
        "{accepted:?}"
    );
    assert!(accepted.message.contains("fixture, gone"), "{accepted:?}");

    let api: kube::Api<AgentPool> = kube::Api::namespaced(stack.client(), stack.namespace());
    let api = &api;
    let pool = stack
        .wait_until(
            "the pool names the unreachable server",
            DEADLINE,
            || async move {
                api.get_opt("tooled").await.ok().flatten().filter(|p| {
                    pool_condition(p, "ToolsDegraded").is_some_and(|(s, _, _)| s == "True")
                })
            },
        )
        .await;
    let (_, reason, message) = pool_condition(&pool, "ToolsDegraded").expect("ToolsDegraded");
    assert_eq!(reason, "ServersUnavailable");
    assert!(message.contains("MCP server gone"), "{message}");
    assert!(
        !message.contains("fixture"),
        "the reachable server is fine: {message}"
    );
    assert!(!message.contains(TOKEN), "{message}");
}
