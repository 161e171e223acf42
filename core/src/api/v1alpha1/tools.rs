//! Tools beyond MAOS's own: the MCP servers an AgentPool's agents may reach
//! (`AgentPool.spec.tools`), and which of them a Task's agents get (`Task.spec.tools`).
//!
//! A pool offers; a Task chooses. Adding a server to a pool therefore changes nothing for the
//! Tasks that already run on it: a Task gets no tool it does not name.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::pool::SecretKeyRef;

/// The server name reserved for Claude's own server tools (`claude/web_search`, ...).
pub const CLAUDE_SERVER: &str = "claude";

/// Separates a server's name from its tool's in the names the model sees (`<server>__<tool>`);
/// server names cannot contain it, so two servers' tools never collide.
pub const TOOL_NAME_SEPARATOR: &str = "__";

/// Default seconds one MCP tool call may take before it is abandoned as a timeout.
pub const DEFAULT_MCP_TIMEOUT_SECONDS: u32 = 30;

/// The tools an AgentPool's agents may use besides MAOS's own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolTools {
    /// Remote MCP servers (streamable HTTP transport) whose tools the agents list at start.
    /// A Task's agents get only the servers or tools the Task names in spec.tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MCP_SERVERS))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message(kube::core::Message::Expression("'tools.mcpServers names must be unique: ' + self.map(s, s.name).filter(n, self.filter(t, t.name == n).size() > 1)[0] + ' appears more than once'".into())))]
    pub mcp_servers: Vec<McpServer>,
}

/// One remote MCP server.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.name != 'claude'").message("the MCP server name claude is reserved for Claude's server tools (claude/web_search, ...)").field_path(".name"),
    validation = Rule::new("self.url.startsWith('http://') || self.url.startsWith('https://')").message(kube::core::Message::Expression("'the url of MCP server ' + self.name + ' must start with http:// or https://'".into())).field_path(".url"),
    validation = Rule::new("!has(self.headers) || self.headers.all(h, self.headers.exists_one(g, g.name.lowerAscii() == h.name.lowerAscii()))").message(kube::core::Message::Expression("'the headers of MCP server ' + self.name + ' must have unique names'".into())).field_path(".headers")
)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    /// The server's name, a DNS label of at most 24 characters: Tasks name it in spec.tools,
    /// and the model sees its tools as `<name>__<tool>`.
    #[schemars(length(min = 1, max = MAX_MCP_SERVER_NAME_LEN), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// The server's MCP endpoint (streamable HTTP), e.g. http://search.tools.svc:8080/mcp.
    #[schemars(length(min = 1, max = MAX_URL_LEN))]
    pub url: String,

    /// HTTP headers sent with every request to the server, e.g. Authorization; their values
    /// come from Secrets in the pool's namespace and only agent pods read them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MCP_HEADERS))]
    pub headers: Vec<McpHeader>,

    /// The server's tools agents may use, by the server's own tool names; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_MCP_TOOLS), inner(length(min = 1, max = MAX_MCP_TOOL_NAME_LEN)))]
    pub allowed_tools: Vec<String>,

    /// Seconds one tool call may take before it is abandoned and the model told it timed out.
    /// Default: 30.
    #[serde(default = "default_mcp_timeout_seconds")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: u32,
}

/// An HTTP header sent to an MCP server, its value from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpHeader {
    /// The header's name, e.g. Authorization.
    #[schemars(length(min = 1, max = 128), pattern(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"))]
    pub name: String,

    /// Where the header's value comes from.
    pub value_from: HeaderValueSource,
}

/// The source of an MCP header's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueSource {
    /// A key of a Secret in the pool's namespace; the whole value is sent as is (for a bearer
    /// token, store `Bearer <token>`).
    pub secret_key_ref: SecretKeyRef,
}

fn default_mcp_timeout_seconds() -> u32 {
    DEFAULT_MCP_TIMEOUT_SECONDS
}

/// One entry of `Task.spec.tools`: a whole MCP server of the pool, or one of its tools.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolRef<'a> {
    /// The pool's MCP server.
    pub server: &'a str,
    /// One tool of it (the server's own name for it); `None`: all the server offers.
    pub tool: Option<&'a str>,
}

impl<'a> ToolRef<'a> {
    /// Reads `server` or `server/tool`; `None` when it is neither.
    pub fn parse(entry: &'a str) -> Option<Self> {
        let (server, tool) = match entry.split_once('/') {
            Some((server, tool)) => (server, Some(tool)),
            None => (entry, None),
        };
        let label = !server.is_empty()
            && server.len() <= MAX_MCP_SERVER_NAME_LEN as usize
            && server
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !server.starts_with('-')
            && !server.ends_with('-');
        let tool_ok =
            tool.is_none_or(|t| !t.is_empty() && t.len() <= MAX_MCP_TOOL_NAME_LEN as usize);
        (label && tool_ok).then_some(Self { server, tool })
    }

    /// Whether this entry grants `tool` of `server`.
    pub fn grants(&self, server: &str, tool: &str) -> bool {
        self.server == server && self.tool.is_none_or(|t| t == tool)
    }
}

impl std::fmt::Display for ToolRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tool {
            Some(tool) => write!(f, "{}/{tool}", self.server),
            None => f.write_str(self.server),
        }
    }
}

/// Why a Task's `spec.tools` cannot be served by its pool, as a message naming the entry.
pub fn unserved_tools(wanted: &[String], pool: Option<&PoolTools>) -> Option<String> {
    let servers = pool.map(|p| p.mcp_servers.as_slice()).unwrap_or_default();
    for entry in wanted {
        let Some(wanted) = ToolRef::parse(entry) else {
            return Some(format!(
                "spec.tools entry {entry:?} is not <server> or <server>/<tool>"
            ));
        };
        if wanted.server == CLAUDE_SERVER {
            return Some(format!(
                "spec.tools entry {entry}: Claude's server tools are not offered by this version of MAOS"
            ));
        }
        let Some(server) = servers.iter().find(|s| s.name == wanted.server) else {
            let offered: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
            return Some(format!(
                "spec.tools names MCP server {}, which the pool does not offer (its tools.mcpServers: {})",
                wanted.server,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ));
        };
        if let Some(tool) = wanted.tool
            && !server.allowed_tools.is_empty()
            && !server.allowed_tools.iter().any(|t| t == tool)
        {
            return Some(format!(
                "spec.tools names {wanted}, but the pool's MCP server {} allows only: {}",
                server.name,
                server.allowed_tools.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, allowed: &[&str]) -> McpServer {
        McpServer {
            name: name.to_owned(),
            url: "http://127.0.0.1:1/mcp".to_owned(),
            headers: Vec::new(),
            allowed_tools: allowed.iter().map(|t| (*t).to_owned()).collect(),
            timeout_seconds: DEFAULT_MCP_TIMEOUT_SECONDS,
        }
    }

    fn wanted(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn a_reference_is_a_server_or_a_server_and_tool() {
        assert_eq!(
            ToolRef::parse("search"),
            Some(ToolRef {
                server: "search",
                tool: None
            })
        );
        assert_eq!(
            ToolRef::parse("search/find.docs"),
            Some(ToolRef {
                server: "search",
                tool: Some("find.docs")
            })
        );
        for bad in ["", "/x", "Search", "-a", "a-", "a/", "a b"] {
            assert_eq!(ToolRef::parse(bad), None, "{bad:?}");
        }
        let all = ToolRef::parse("search").unwrap();
        assert!(all.grants("search", "anything"));
        assert!(!all.grants("other", "anything"));
        let one = ToolRef::parse("search/find").unwrap();
        assert!(one.grants("search", "find"));
        assert!(!one.grants("search", "other"));
    }

    #[test]
    fn tools_the_pool_does_not_offer_are_named() {
        let pool = PoolTools {
            mcp_servers: vec![server("search", &[]), server("db", &["query"])],
        };
        assert_eq!(
            unserved_tools(&wanted(&["search", "db/query"]), Some(&pool)),
            None
        );
        let missing = unserved_tools(&wanted(&["search", "git"]), Some(&pool)).unwrap();
        assert!(
            missing.contains("MCP server git") && missing.contains("search, db"),
            "{missing}"
        );
        let not_allowed = unserved_tools(&wanted(&["db/drop"]), Some(&pool)).unwrap();
        assert!(
            not_allowed.contains("db/drop") && not_allowed.contains("query"),
            "{not_allowed}"
        );
        let none = unserved_tools(&wanted(&["search"]), None).unwrap();
        assert!(none.contains("none"), "{none}");
        assert_eq!(unserved_tools(&[], None), None);
    }
}
