//! Where the workspace's own binaries (`maos-agent`, `maos-operator`) are, so tests and the
//! testbed can run them as processes, as a cluster would.

use std::path::PathBuf;

/// Why a binary could not be found.
#[derive(Debug, thiserror::Error)]
#[error("the {name} binary is not built at {path}: run `cargo build -p {package}` (or set {env})")]
pub struct MissingBinary {
    /// The binary.
    pub name: String,
    /// The package that builds it.
    pub package: String,
    /// Where it was looked for.
    pub path: String,
    /// The variable that overrides the path.
    pub env: String,
}

/// The path of `name` (built by `package`): `MAOS_<NAME>_BIN` if set, else the target directory
/// this process runs from (tests run from `target/<profile>/deps/`).
pub fn find(name: &str, package: &str) -> Result<PathBuf, MissingBinary> {
    let env = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingBinary {
            name: name.to_owned(),
            package: package.to_owned(),
            path: path.display().to_string(),
            env,
        })
    }
}

/// The agent runner, `maos-agent`.
pub fn agent() -> Result<PathBuf, MissingBinary> {
    find("maos-agent", "maos-agent-runner")
}

/// How [`terminate`] ended a process.
#[derive(Debug)]
pub enum Ended {
    /// It exited within the grace period, with this status.
    Exited(std::process::ExitStatus),
    /// It was still running after the grace period and was killed.
    Killed,
}

/// Stops `child` as a kubelet stops a container: SIGTERM, then SIGKILL if it has not exited
/// within `grace` (its exit is polled every 20 ms until then); the process is reaped either way.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) -> Ended {
    use std::time::{Duration, Instant};
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Ended::Exited(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ended::Killed
}
