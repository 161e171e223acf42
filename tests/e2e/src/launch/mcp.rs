//! Real MCP servers for tests, on free 127.0.0.1 ports, stopped by PID when dropped:
//!
//! - [`McpServerProcess::everything`]: the reference server `@modelcontextprotocol/server-everything`
//!   from npm (tests/e2e/mcp/package-lock.json pins it), streamable HTTP at `/mcp`. It listens
//!   on every interface by itself; `loopback.mjs` is preloaded so it binds 127.0.0.1 only.
//! - [`McpServerProcess::fixture`]: tests/e2e/mcp/fixture_server.py, written with the official
//!   Python SDK (`mcp` from PyPI), which demands a bearer token and counts its calls.
//!
//! `scripts/install-deps.sh` installs both into the build directory (`mcp-node`, `mcp-venv`).
//! Readiness is polled with a deadline (the port accepts connections), never assumed.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{LaunchError, TempDir, free_port, poll_until};

/// The pinned version of the reference server (tests/e2e/mcp/package.json).
pub const EVERYTHING_VERSION: &str = "2026.8.31";
/// The pinned version of the Python SDK the fixture server is built with.
pub const PYTHON_SDK_VERSION: &str = "2.3.0";
/// How long a server may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Which server a process runs.
#[derive(Clone)]
enum Kind {
    Everything,
    Fixture { token: String },
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Everything => "server-everything",
            Kind::Fixture { .. } => "fixture_server.py",
        }
    }
}

/// A running MCP server.
pub struct McpServerProcess {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl McpServerProcess {
    /// The reference server from npm.
    pub fn everything() -> Result<Self, LaunchError> {
        Self::start(Kind::Everything)
    }

    /// The Python fixture server, requiring `Authorization: Bearer <token>`.
    pub fn fixture(token: &str) -> Result<Self, LaunchError> {
        Self::start(Kind::Fixture {
            token: token.to_owned(),
        })
    }

    fn start(kind: Kind) -> Result<Self, LaunchError> {
        let dir = TempDir::new("maos-mcp")?;
        let mut server = Self {
            kind,
            child: None,
            port: free_port()?,
            dir,
        };
        server.run()?;
        Ok(server)
    }

    /// The server's MCP endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGTERM, then SIGKILL), as a crash of the server would look to a client.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::binaries::terminate(&mut child, STOP_GRACE);
        }
    }

    /// Starts the server again on the same port, after [`Self::stop`].
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.stop();
        self.run()
    }

    /// The fixture's call counts by tool (and argument, for `lookup:<city>`).
    pub fn calls(&self) -> Result<serde_json::Value, LaunchError> {
        let fail = |detail: String| LaunchError::SetupCommand {
            what: "GET /calls of the MCP fixture".to_owned(),
            detail,
        };
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))
            .map_err(|e| fail(e.to_string()))?;
        use std::io::{Read as _, Write as _};
        write!(
            stream,
            "GET /calls HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| fail(e.to_string()))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| fail(e.to_string()))?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .ok_or_else(|| fail(format!("no body in {response:?}")))?;
        serde_json::from_str(body).map_err(|e| fail(format!("{e}: {body:?}")))
    }

    fn run(&mut self) -> Result<(), LaunchError> {
        let log = self.dir.path().join("server.log");
        let output = std::fs::File::create(&log).map_err(|source| LaunchError::Setup {
            what: format!("MCP server log {}", log.display()),
            source,
        })?;
        let stderr = output.try_clone().map_err(|source| LaunchError::Setup {
            what: format!("MCP server log {}", log.display()),
            source,
        })?;
        let fixtures = crate::cluster::repo_root().join("tests/e2e/mcp");
        let target = crate::cluster::target_dir();
        let mut command = match &self.kind {
            Kind::Everything => {
                let node_modules = target.join("mcp-node/node_modules");
                let mut command = Command::new("node");
                command
                    .arg("--import")
                    .arg(file_url(fixtures.join("loopback.mjs")))
                    .arg(node_modules.join("@modelcontextprotocol/server-everything/dist/index.js"))
                    .arg("streamableHttp")
                    .env("PORT", self.port.to_string());
                command
            }
            Kind::Fixture { token } => {
                let mut command = Command::new(target.join("mcp-venv/bin/python"));
                command
                    .arg(fixtures.join("fixture_server.py"))
                    .arg(self.port.to_string())
                    .arg(token);
                command
            }
        };
        let mut child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| LaunchError::BinaryNotRunnable {
                program: format!("{:?}", command.get_program()),
                source,
            })?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let ready = poll_until("MCP server", READY_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LaunchError::ExitedEarly {
                    what: format!("MCP server {}", self.kind.name()),
                    status,
                    log: log.display().to_string(),
                });
            }
            Ok(
                TcpStream::connect_timeout(&address, Duration::from_millis(200))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            )
        });
        match ready {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(err) => {
                crate::binaries::terminate(&mut child, STOP_GRACE);
                Err(err)
            }
        }
    }
}

fn file_url(path: PathBuf) -> String {
    format!("file://{}", path.display())
}

impl Drop for McpServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
