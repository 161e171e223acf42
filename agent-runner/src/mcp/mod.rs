//! Tools from the pool's MCP servers: which a Task's agents get, under which names the model
//! sees them, and calling them.
//!
//! The pool offers servers (`AgentPool.spec.tools.mcpServers`, in the agent's environment);
//! each work item's Task grants some of them (`Task.spec.tools`, in the task's goal). The model
//! is offered exactly the granted tools of the servers that are up, named `<server>__<tool>`
//! ([`maos_core::mcp::model_tool_name`]); a name it calls that is not among them is refused
//! like any unknown tool.

pub mod content;
pub mod server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use maos_core::api::v1alpha1::ToolRef;
use maos_core::mcp::{MCP_SERVERS_ENV, ServerConfig, model_tool_name};
use serde_json::Value;

use crate::claude::types::Tool;
pub use server::{CallError, ListedTool, Server};

/// The pool's MCP servers, as this agent keeps them.
#[derive(Clone, Debug, Default)]
pub struct McpTools {
    servers: Vec<Arc<Server>>,
}

/// An MCP tool the model may call, found by the name it called.
#[derive(Clone, Debug)]
pub struct Granted {
    /// Its server.
    pub server: Arc<Server>,
    /// The server's name for the tool.
    pub tool: String,
}

/// What one call came to, for the tool_result, the events and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReport {
    /// The text the model reads.
    pub text: String,
    /// Whether the model is told the call failed.
    pub is_error: bool,
    /// `ok`, `error` (the tool said so), `timeout` or `unavailable`/`failed` (the server).
    pub outcome: &'static str,
    /// How long the call took.
    pub duration: Duration,
}

/// Why the MCP configuration in the environment cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{MCP_SERVERS_ENV} is not a valid list of MCP servers: {0}")]
pub struct ConfigError(String);

impl McpTools {
    /// No servers.
    pub fn none() -> Self {
        Self::default()
    }

    /// Starts supervising the servers in the environment ([`MCP_SERVERS_ENV`]; unset: none).
    pub fn from_env() -> Result<Self, ConfigError> {
        let configs = match std::env::var(MCP_SERVERS_ENV) {
            Ok(json) => parse(&json)?,
            Err(_) => Vec::new(),
        };
        Ok(Self::start(configs, &|name| std::env::var(name).ok()))
    }

    /// Starts supervising `configs`, their header values from `env`.
    pub fn start(configs: Vec<ServerConfig>, env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            servers: configs.into_iter().map(|c| Server::spawn(c, env)).collect(),
        }
    }

    /// Waits until every server's first connection attempt has ended (each is then up or
    /// down), so the first work items are offered the tools of the servers that answer.
    pub async fn settled(&self) {
        futures::future::join_all(self.servers.iter().map(|s| s.settled())).await;
    }

    /// The servers.
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    /// The servers that are down, with why, by name.
    pub fn down(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .filter_map(|s| s.down().map(|why| (s.name().to_owned(), why)))
            .collect()
    }

    /// The tool definitions for a task that grants `granted` (`Task.spec.tools`), sorted by
    /// name so that agents of one task send the same tool list (one cached prompt prefix).
    pub fn definitions(&self, granted: &[String]) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .granted_tools(granted)
            .map(|(server, tool)| Tool {
                name: model_tool_name(server.name(), &tool.name),
                description: if tool.description.is_empty() {
                    format!("Tool {} of MCP server {}.", tool.name, server.name())
                } else {
                    tool.description
                },
                input_schema: tool.input_schema,
            })
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// The granted tool the model calls `name`, if there is one.
    pub fn find(&self, granted: &[String], name: &str) -> Option<Granted> {
        self.granted_tools(granted)
            .find(|(server, tool)| model_tool_name(server.name(), &tool.name) == name)
            .map(|(server, tool)| Granted {
                server: Arc::clone(server),
                tool: tool.name,
            })
    }

    fn granted_tools<'a>(
        &'a self,
        granted: &'a [String],
    ) -> impl Iterator<Item = (&'a Arc<Server>, ListedTool)> + 'a {
        let refs: Vec<ToolRef<'a>> = granted.iter().filter_map(|g| ToolRef::parse(g)).collect();
        self.servers.iter().flat_map(move |server| {
            let refs = refs.clone();
            server
                .tools()
                .into_iter()
                .filter(move |tool| refs.iter().any(|r| r.grants(server.name(), &tool.name)))
                .map(move |tool| (server, tool))
        })
    }
}

impl Granted {
    /// Calls the tool with `input`; never fails: what went wrong is told to the model.
    pub async fn call(&self, input: &Value) -> CallReport {
        let started = Instant::now();
        let (text, is_error, outcome) = match self.server.call(&self.tool, input).await {
            Ok(result) => {
                let rendered = content::render(&result);
                let outcome = if rendered.is_error { "error" } else { "ok" };
                (rendered.text, rendered.is_error, outcome)
            }
            Err(error) => {
                let outcome = match &error {
                    CallError::TimedOut { .. } => "timeout",
                    CallError::Unavailable { .. } => "unavailable",
                    CallError::Failed { .. } => "failed",
                };
                (error.to_string(), true, outcome)
            }
        };
        CallReport {
            text,
            is_error,
            outcome,
            duration: started.elapsed(),
        }
    }
}

/// Reads the servers from their JSON form.
pub fn parse(json: &str) -> Result<Vec<ServerConfig>, ConfigError> {
    serde_json::from_str(json).map_err(|e| ConfigError(e.to_string()))
}
