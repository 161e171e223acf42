//! The cluster an end-to-end test runs against: a real one when `MAOS_E2E_KUBECONFIG` names
//! its kubeconfig, otherwise a fresh [`Testbed`]. Tests get their client and `kubectl` here,
//! so the same test runs unchanged in both places.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apiserver::{Testbed, TestbedConfig, TestbedError, client_from_kubeconfig};

/// The environment variable that points the e2e tests at a real cluster.
pub const REAL_CLUSTER_ENV: &str = "MAOS_E2E_KUBECONFIG";

/// The real kubectl the tests drive.
pub const KUBECTL: &str = "/usr/bin/kubectl";

/// A kubectl run that failed.
#[derive(Debug, thiserror::Error)]
pub enum KubectlError {
    /// kubectl could not be started or fed.
    #[error("running kubectl {args}: {source}")]
    Spawn {
        /// The arguments.
        args: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// kubectl exited unsuccessfully.
    #[error("kubectl {args} failed ({status}): {stderr}")]
    Failed {
        /// The arguments.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl KubectlError {
    /// What kubectl printed on stderr (empty if it never ran).
    pub fn stderr(&self) -> &str {
        match self {
            KubectlError::Failed { stderr, .. } => stderr,
            KubectlError::Spawn { .. } => "",
        }
    }
}

/// A cluster for one test.
#[derive(Debug)]
pub enum TestCluster {
    /// A real cluster, from `MAOS_E2E_KUBECONFIG`.
    Real {
        /// Its kubeconfig.
        kubeconfig: PathBuf,
    },
    /// A testbed started for this test (stopped on drop).
    Testbed(Box<Testbed>),
}

impl TestCluster {
    /// The real cluster if `MAOS_E2E_KUBECONFIG` is set, else a testbed with default settings.
    pub fn start() -> Result<Self, TestbedError> {
        Self::start_with(TestbedConfig::default())
    }

    /// Like [`TestCluster::start`], with settings for the testbed case.
    pub fn start_with(config: TestbedConfig) -> Result<Self, TestbedError> {
        match std::env::var_os(REAL_CLUSTER_ENV) {
            Some(path) if !path.is_empty() => Ok(TestCluster::Real {
                kubeconfig: PathBuf::from(path),
            }),
            _ => Ok(TestCluster::Testbed(Box::new(Testbed::start(config)?))),
        }
    }

    /// The kubeconfig to use.
    pub fn kubeconfig(&self) -> &Path {
        match self {
            TestCluster::Real { kubeconfig } => kubeconfig,
            TestCluster::Testbed(testbed) => testbed.kubeconfig_path(),
        }
    }

    /// The testbed, when the test runs against one (for its test hooks).
    pub fn testbed(&self) -> Option<&Testbed> {
        match self {
            TestCluster::Real { .. } => None,
            TestCluster::Testbed(testbed) => Some(testbed),
        }
    }

    /// A kube-rs client for the cluster.
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        client_from_kubeconfig(self.kubeconfig()).await
    }

    /// A `kubectl` command for the cluster, with its discovery cache kept beside the kubeconfig
    /// rather than in the user's home.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(KUBECTL);
        command.env("KUBECONFIG", self.kubeconfig());
        let cache = self
            .kubeconfig()
            .parent()
            .map(|dir| dir.join("kube-cache"))
            .unwrap_or_else(|| std::env::temp_dir().join("maos-e2e-kube-cache"));
        command.env("KUBECACHEDIR", cache);
        command
    }

    /// Applies `crds/` and waits until every CRD is Established, as a user installs them.
    pub fn install_crds(&self) -> Result<(), KubectlError> {
        let crds = repo_root().join("crds").display().to_string();
        self.run_kubectl(&["apply", "-f", &crds], None)?;
        self.run_kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                &crds,
            ],
            None,
        )?;
        Ok(())
    }

    /// Runs kubectl with `args` (and `stdin`, if given); its stdout on success.
    pub fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, KubectlError> {
        let joined = args.join(" ");
        let spawn_error = |source| KubectlError::Spawn {
            args: joined.clone(),
            source,
        };
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(KubectlError::Failed {
                args: joined,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            })
        }
    }
}

/// A tool `make deps` installs into `<target dir>/tools` (e.g. `helm`); panics saying how to
/// install it when it is missing, so a test never passes without it.
pub fn installed_tool(name: &str) -> PathBuf {
    let path = target_dir().join("tools").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make deps` (scripts/install-deps.sh installs it)",
        path.display()
    );
    path
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else the one the running test binary is in.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // Test binaries run from <target>/<profile>/deps/.
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        })
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The repository's root directory (for `crds/` and `examples/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
