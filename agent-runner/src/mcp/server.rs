//! One MCP server as an agent keeps it: a connection supervised in the background (connect,
//! list the tools, list again when the server says they changed, reconnect with backoff when
//! the connection is lost), and calls made through it with the server's timeout.
//!
//! A server that cannot be reached never stops the agent: it is shown as down (with why) until
//! a later attempt succeeds, and the model is offered none of its tools meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maos_core::mcp::ServerConfig;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::sync::Notify;

/// The first wait before connecting again after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long connecting and listing the tools may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest description of a tool passed to the model.
const MAX_DESCRIPTION_BYTES: usize = 4_096;

/// A tool of a server, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct ListedTool {
    /// The server's name for it.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Its input's JSON schema (an object), as the server gave it.
    pub input_schema: Value,
}

/// Why a call made no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server is down (not connected, or it was lost).
    #[error("MCP server {server} is unavailable: {why}")]
    Unavailable {
        /// The server.
        server: String,
        /// What went wrong when it was last tried.
        why: String,
    },
    /// The call took longer than the server's timeout; it was cancelled.
    #[error("the call to MCP server {server} timed out after {seconds} s and was cancelled")]
    TimedOut {
        /// The server.
        server: String,
        /// Its timeout.
        seconds: u32,
    },
    /// The server or the connection failed the request.
    #[error("MCP server {server} failed the call: {why}")]
    Failed {
        /// The server.
        server: String,
        /// The protocol or transport error.
        why: String,
    },
}

type Client = RunningService<RoleClient, Handler>;

enum State {
    Connecting,
    Up {
        client: Arc<Client>,
        tools: Vec<ListedTool>,
    },
    Down {
        why: String,
    },
}

/// One supervised MCP server.
pub struct Server {
    config: ServerConfig,
    state: Mutex<State>,
    /// Woken to list the tools again (the server said they changed).
    relist: Arc<Notify>,
    /// Woken to reconnect (a call found the connection gone).
    lost: Notify,
    /// Woken whenever the state changes (tests and status reports wait on it).
    changed: Notify,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the headers: they hold secrets.
        f.debug_struct("Server")
            .field("name", &self.config.name)
            .field("url", &self.config.url)
            .finish_non_exhaustive()
    }
}

/// Receives the server's notifications: a changed tool list wakes the supervisor.
#[derive(Clone)]
pub struct Handler {
    relist: Arc<Notify>,
}

impl ClientHandler for Handler {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relist.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("maos-agent", env!("CARGO_PKG_VERSION")),
        )
    }
}

impl Server {
    /// Starts supervising the server `config` describes, with its header values from `env`
    /// (the agent's environment); the first connection is tried at once.
    pub fn spawn(config: ServerConfig, env: &dyn Fn(&str) -> Option<String>) -> Arc<Self> {
        let headers = headers(&config, env);
        let server = Arc::new(Self {
            config,
            state: Mutex::new(State::Connecting),
            relist: Arc::new(Notify::new()),
            lost: Notify::new(),
            changed: Notify::new(),
        });
        tokio::spawn(Arc::clone(&server).supervise(headers));
        server
    }

    /// The pool's name for the server.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The tools agents may use, as last listed (none while the server is down); the pool's
    /// `allowedTools` already applied.
    pub fn tools(&self) -> Vec<ListedTool> {
        match &*self.lock() {
            State::Up { tools, .. } => tools.clone(),
            _ => Vec::new(),
        }
    }

    /// Why the server is down, if it is (`None` while connecting for the first time or up).
    pub fn down(&self) -> Option<String> {
        match &*self.lock() {
            State::Down { why } => Some(why.clone()),
            _ => None,
        }
    }

    /// Whether the server is connected with its tools listed.
    pub fn is_up(&self) -> bool {
        matches!(&*self.lock(), State::Up { .. })
    }

    /// Waits until the state changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Waits until the first connection attempt has ended, up or down.
    pub async fn settled(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change between the two is not missed.
            notified.as_mut().enable();
            if !matches!(&*self.lock(), State::Connecting) {
                return;
            }
            notified.await;
        }
    }

    /// Calls `tool` with `input` (a JSON object), within the server's timeout; returns the
    /// `CallToolResult` as JSON. A call that times out is dropped, which cancels it at the
    /// server.
    pub async fn call(&self, tool: &str, input: &Value) -> Result<Value, CallError> {
        let client = match &*self.lock() {
            State::Up { client, .. } => Arc::clone(client),
            State::Connecting => {
                return Err(self.unavailable("still connecting".to_owned()));
            }
            State::Down { why } => return Err(self.unavailable(why.clone())),
        };
        let arguments = input.as_object().cloned().unwrap_or_default();
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let seconds = self.config.timeout_seconds;
        let call = client.peer().call_tool(request);
        match tokio::time::timeout(Duration::from_secs(u64::from(seconds)), call).await {
            Err(_) => Err(CallError::TimedOut {
                server: self.config.name.clone(),
                seconds,
            }),
            Ok(Err(error)) => {
                let why = error.to_string();
                if client.is_closed() {
                    self.set(State::Down { why: why.clone() });
                    self.lost.notify_one();
                }
                Err(CallError::Failed {
                    server: self.config.name.clone(),
                    why,
                })
            }
            Ok(Ok(result)) => serde_json::to_value(result).map_err(|e| CallError::Failed {
                server: self.config.name.clone(),
                why: format!("unreadable result: {e}"),
            }),
        }
    }

    fn unavailable(&self, why: String) -> CallError {
        CallError::Unavailable {
            server: self.config.name.clone(),
            why,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written (each write is
        // one assignment), so a poisoned lock is still sound to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, state: State) {
        *self.lock() = state;
        self.changed.notify_waiters();
    }

    /// Connects, lists, and keeps it so until the agent stops.
    async fn supervise(self: Arc<Self>, headers: Result<HeaderMap, String>) {
        let headers = match headers {
            Ok(headers) => headers,
            Err(why) => {
                // The pod's environment will not change: nothing to retry.
                tracing::error!(server = %self.config.name, %why, "MCP server not usable");
                self.set(State::Down { why });
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(&headers)).await {
                Ok(Ok((client, tools))) => {
                    backoff = FIRST_BACKOFF;
                    tracing::info!(server = %self.config.name, tools = tools.len(), "MCP server connected");
                    let client = Arc::new(client);
                    self.set(State::Up {
                        client: Arc::clone(&client),
                        tools,
                    });
                    self.stay_up(&client).await;
                    continue;
                }
                Ok(Err(why)) => self.went_down(why),
                Err(_) => {
                    self.went_down(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn went_down(&self, why: String) {
        tracing::warn!(server = %self.config.name, url = %self.config.url, %why, "MCP server unavailable; its tools are not offered until it is back");
        self.set(State::Down { why });
    }

    /// While connected: lists the tools again when told to; returns when the connection is
    /// lost (a failed call or listing says so).
    async fn stay_up(&self, client: &Arc<Client>) {
        loop {
            tokio::select! {
                () = self.relist.notified() => {
                    match list(client, &self.config).await {
                        Ok(tools) => {
                            tracing::info!(server = %self.config.name, tools = tools.len(), "MCP server's tools changed");
                            self.set(State::Up { client: Arc::clone(client), tools });
                        }
                        Err(why) => {
                            self.went_down(why);
                            return;
                        }
                    }
                }
                () = self.lost.notified() => return,
            }
        }
    }

    async fn connect(&self, headers: &HeaderMap) -> Result<(Client, Vec<ListedTool>), String> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.config.url.clone())
            .custom_headers(headers.clone());
        let transport = StreamableHttpClientTransport::from_config(config);
        let handler = Handler {
            relist: Arc::clone(&self.relist),
        };
        let client = handler
            .serve(transport)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let tools = list(&client, &self.config).await?;
        Ok((client, tools))
    }
}

type HeaderMap = HashMap<::http::HeaderName, ::http::HeaderValue>;

/// The server's headers with their values from `env`; an error names what is missing or
/// invalid, never a value.
fn headers(
    config: &ServerConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for header in &config.headers {
        let name = ::http::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| format!("header name {:?} is not valid", header.name))?;
        let value = env(&header.env).ok_or_else(|| {
            format!(
                "the value of header {} is missing ({} is not set)",
                header.name, header.env
            )
        })?;
        let mut value = ::http::HeaderValue::from_str(value.trim_end_matches(['\r', '\n']))
            .map_err(|_| {
                format!(
                    "the value of header {} is not a valid header value",
                    header.name
                )
            })?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// Every tool of the server the pool allows, with bounded descriptions.
async fn list(client: &Client, config: &ServerConfig) -> Result<Vec<ListedTool>, String> {
    let tools = client
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| format!("cannot list tools: {e}"))?;
    Ok(tools
        .into_iter()
        .filter_map(|tool| serde_json::to_value(tool).ok())
        .filter_map(|tool| {
            let name = tool.get("name")?.as_str()?.to_owned();
            let description = tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let input_schema = tool
                .get("inputSchema")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object"}));
            Some(ListedTool {
                name,
                description: super::content::bounded(description, MAX_DESCRIPTION_BYTES),
                input_schema,
            })
        })
        .filter(|tool| config.allowed_tools.is_empty() || config.allowed_tools.contains(&tool.name))
        .collect())
}
