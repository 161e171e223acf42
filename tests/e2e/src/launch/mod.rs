//! Launchers for the services the testbed and the tests need, as real processes on free
//! 127.0.0.1 ports in temporary directories, stopped by PID when their handle is dropped.

pub mod mcp;
pub mod redis;
pub mod redis_tls;
pub mod s3;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The service's binary is missing or cannot be executed (run `make deps`).
    #[error("cannot run `{program}` (is it installed? `make deps` installs it): {source}")]
    BinaryNotRunnable {
        /// The program that was run.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A temporary directory or free port could not be obtained.
    #[error("cannot prepare {what}: {source}")]
    Setup {
        /// What was being prepared.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited before it became ready.
    #[error("{what} exited during start-up ({status}); its log is in {log}")]
    ExitedEarly {
        /// Which service.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where its log file is (kept for diagnosis until the handle is dropped).
        log: String,
    },
    /// The service did not become ready before the deadline.
    #[error("{what} not ready after {waited:?}: {last}")]
    NotReady {
        /// Which service.
        what: String,
        /// How long we waited.
        waited: Duration,
        /// The last observation that was not yet "ready".
        last: String,
    },
    /// A set-up command the launcher sent was refused.
    #[error("{what} failed: {detail}")]
    SetupCommand {
        /// Which step.
        what: String,
        /// The server's answer.
        detail: String,
    },
}

/// A temporary directory removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory under the system temp directory.
    pub fn new(prefix: &str) -> Result<Self, LaunchError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| LaunchError::Setup {
            what: format!("directory {}", path.display()),
            source,
        })?;
        Ok(Self { path })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before our server binds it; launchers detect that (the server
/// exits) and retry with another port.
pub fn free_port() -> Result<u16, LaunchError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| LaunchError::Setup {
            what: "a free loopback port".to_owned(),
            source,
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| LaunchError::Setup {
            what: "a free loopback port".to_owned(),
            source,
        })
}

/// Polls `probe` until it returns `Ok(Some(_))`, an error, or `timeout` passes.
///
/// `probe` returns `Ok(None)` with a note of what it saw while the condition does not hold yet.
pub(crate) fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Result<T, String>, LaunchError>,
) -> Result<T, LaunchError> {
    let start = Instant::now();
    let mut interval = Duration::from_millis(5);
    loop {
        match probe()? {
            Ok(value) => return Ok(value),
            Err(last) => {
                if start.elapsed() >= timeout {
                    return Err(LaunchError::NotReady {
                        what: what.to_owned(),
                        waited: start.elapsed(),
                        last,
                    });
                }
            }
        }
        // A poll interval, not synchronisation: the condition is re-checked each round.
        std::thread::sleep(interval);
        interval = (interval * 2).min(Duration::from_millis(100));
    }
}
