//! What the operator tells agents about their pool's MCP servers, and the names under which
//! agents offer those servers' tools to the model.
//!
//! The operator puts the servers in the agent pod's environment as [`MCP_SERVERS_ENV`], JSON
//! without any secret: each header names the environment variable that holds its value, which
//! the pod fills from a `secretKeyRef`, so the operator never reads the Secret.

use serde::{Deserialize, Serialize};

use crate::api::v1alpha1::{PoolTools, TOOL_NAME_SEPARATOR};

/// The agent's environment variable holding its pool's MCP servers (JSON, [`ServerConfig`]s).
pub const MCP_SERVERS_ENV: &str = "MAOS_MCP_SERVERS";

/// The longest tool name the Messages API accepts (names match `^[a-zA-Z0-9_-]{1,64}$`).
pub const MAX_MODEL_TOOL_NAME: usize = 64;

/// One MCP server as an agent reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    /// The pool's name for the server.
    pub name: String,
    /// Its streamable HTTP endpoint.
    pub url: String,
    /// Headers sent with every request, their values in the agent's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderConfig>,
    /// The server's tools agents may use; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Seconds one call may take.
    pub timeout_seconds: u32,
}

/// A header of an MCP server's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderConfig {
    /// The header's name.
    pub name: String,
    /// The environment variable holding its value.
    pub env: String,
}

/// The environment variable holding header `header` of server `server` (by position).
pub fn header_env(server: usize, header: usize) -> String {
    format!("MAOS_MCP_HEADER_{server}_{header}")
}

/// The servers of `tools` as agents get them.
pub fn server_configs(tools: &PoolTools) -> Vec<ServerConfig> {
    tools
        .mcp_servers
        .iter()
        .enumerate()
        .map(|(i, server)| ServerConfig {
            name: server.name.clone(),
            url: server.url.clone(),
            headers: server
                .headers
                .iter()
                .enumerate()
                .map(|(j, header)| HeaderConfig {
                    name: header.name.clone(),
                    env: header_env(i, j),
                })
                .collect(),
            allowed_tools: server.allowed_tools.clone(),
            timeout_seconds: server.timeout_seconds,
        })
        .collect()
}

/// The name the model sees for `tool` of `server`: `<server>__<tool>`, with every character
/// the Messages API does not allow in a tool name replaced by `_`. When that changed the name
/// or made it too long, a short digest of the original tool name is appended, so two tools of
/// one server never share a name; server names cannot contain `__`, so two servers' tools
/// never collide either.
pub fn model_tool_name(server: &str, tool: &str) -> String {
    let clean: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let plain = format!("{server}{TOOL_NAME_SEPARATOR}{clean}");
    if clean == tool && plain.len() <= MAX_MODEL_TOOL_NAME {
        return plain;
    }
    let digest = fnv1a(tool.as_bytes());
    let suffix = format!("_{:08x}", digest as u32);
    let room = MAX_MODEL_TOOL_NAME - server.len() - TOOL_NAME_SEPARATOR.len() - suffix.len();
    let kept: String = clean.chars().take(room).collect();
    format!("{server}{TOOL_NAME_SEPARATOR}{kept}{suffix}")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{HeaderValueSource, McpHeader, McpServer, SecretKeyRef};

    #[test]
    fn plain_tool_names_are_server_then_tool() {
        assert_eq!(model_tool_name("search", "find_docs"), "search__find_docs");
        assert_eq!(model_tool_name("db", "run-query"), "db__run-query");
    }

    #[test]
    fn names_the_api_would_refuse_are_cleaned_and_stay_distinct() {
        let dotted = model_tool_name("fs", "read.file");
        let underscored = model_tool_name("fs", "read_file");
        assert_ne!(dotted, underscored);
        assert!(dotted.starts_with("fs__read_file_"), "{dotted}");
        let long = "x".repeat(200);
        let longer = format!("{long}y");
        let (a, b) = (model_tool_name("s", &long), model_tool_name("s", &longer));
        assert_ne!(a, b);
        for name in [&dotted, &a, &b, &model_tool_name(&"a".repeat(24), &long)] {
            assert!(name.len() <= MAX_MODEL_TOOL_NAME, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{name}"
            );
        }
    }

    #[test]
    fn agents_get_header_variables_never_values() {
        let tools = PoolTools {
            mcp_servers: vec![McpServer {
                name: "search".into(),
                url: "http://search:8080/mcp".into(),
                headers: vec![McpHeader {
                    name: "Authorization".into(),
                    value_from: HeaderValueSource {
                        secret_key_ref: SecretKeyRef {
                            name: "search-token".into(),
                            key: "token".into(),
                        },
                    },
                }],
                allowed_tools: vec!["find".into()],
                timeout_seconds: 5,
            }],
        };
        let configs = server_configs(&tools);
        let json = serde_json::to_string(&configs).expect("json");
        assert!(!json.contains("search-token"), "{json}");
        assert_eq!(configs[0].headers[0].env, "MAOS_MCP_HEADER_0_0");
        let back: Vec<ServerConfig> = serde_json::from_str(&json).expect("back");
        assert_eq!(back, configs);
    }
}
