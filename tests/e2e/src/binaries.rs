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
