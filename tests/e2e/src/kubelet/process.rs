//! One container as a local process: started in its own process group with a clean environment,
//! its stdout and stderr appended to the container's log file, stopped with SIGTERM and then
//! SIGKILL after the grace period, as a container runtime does.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The PATH a container process gets, like a typical image's.
const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run for one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The program (a path, or a name looked up in the container PATH).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub workdir: PathBuf,
    /// The file its stdout and stderr are appended to.
    pub log: PathBuf,
    /// Bind mounts into the process's own mount namespace, as a runtime mounts volumes; the
    /// targets are made on the host if missing.
    pub mounts: Vec<Mount>,
}

/// One bind mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The host directory or file.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
    /// Mounted read-only (`volumeMounts[].readOnly`): a write fails with EROFS.
    pub read_only: bool,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log file or working directory could not be prepared.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The program could not be executed.
    #[error("starting {program}: {source}")]
    Exec {
        /// The program.
        program: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A mount prepared before the fork: C strings and the flags of its read-only remount.
struct Prepared {
    source: CString,
    target: CString,
    read_only: bool,
}

/// Makes each mount's target on the host (a directory, or an empty file for a file) and turns
/// the paths into C strings for `pre_exec`.
fn prepare_mounts(mounts: &[Mount]) -> Result<Vec<Prepared>, StartError> {
    use std::os::unix::ffi::OsStrExt as _;
    let prepare = |path: &Path, result: std::io::Result<()>| {
        result.map_err(|source| StartError::Prepare {
            path: path.to_path_buf(),
            source,
        })
    };
    mounts
        .iter()
        .map(|mount| {
            let target = &mount.target;
            if mount.source.is_dir() {
                prepare(target, std::fs::create_dir_all(target))?;
            } else if std::fs::symlink_metadata(target).is_err() {
                if let Some(parent) = target.parent() {
                    prepare(target, std::fs::create_dir_all(parent))?;
                }
                prepare(target, File::create(target).map(drop))?;
            }
            let c = |path: &Path| {
                CString::new(path.as_os_str().as_bytes()).map_err(|_| StartError::Prepare {
                    path: path.to_path_buf(),
                    source: std::io::Error::other("a path with a NUL byte"),
                })
            };
            Ok(Prepared {
                source: c(&mount.source)?,
                target: c(target)?,
                read_only: mount.read_only,
            })
        })
        .collect()
}

/// In the child: a private mount namespace with the bind mounts, so the paths a container
/// expects (the ServiceAccount's, its volumes') show its pod's files and no other pod's.
fn mount_namespace(mounts: &[Prepared]) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls on valid NUL-terminated strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for mount in mounts {
            check(libc::mount(
                mount.source.as_ptr(),
                mount.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
            // A bind mount takes its flags from a remount, not from the first call.
            if mount.read_only {
                check(libc::mount(
                    std::ptr::null(),
                    mount.target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                    std::ptr::null(),
                ))?;
            }
        }
    }
    Ok(())
}

/// A running container process.
#[derive(Debug)]
pub struct ContainerProcess {
    child: Child,
    pid: Option<Pid>,
}

impl ContainerProcess {
    /// Starts the process in a new process group, so signals reach everything it started.
    pub fn start(spec: &ProcessSpec) -> Result<Self, StartError> {
        std::fs::create_dir_all(&spec.workdir).map_err(|source| StartError::Prepare {
            path: spec.workdir.clone(),
            source,
        })?;
        let log = open_log(&spec.log)?;
        let log_err = log.try_clone().map_err(|source| StartError::Prepare {
            path: spec.log.clone(),
            source,
        })?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .env("PATH", CONTAINER_PATH)
            .env("HOME", &spec.workdir)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&spec.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true);
        if !spec.mounts.is_empty() {
            let mounts = prepare_mounts(&spec.mounts)?;
            // SAFETY: between fork and exec the closure only makes system calls (unshare,
            // mount) on C strings prepared before the fork; it allocates nothing.
            unsafe {
                command.pre_exec(move || mount_namespace(&mounts));
            }
        }
        let child = command.spawn().map_err(|source| StartError::Exec {
            program: spec.program.clone(),
            source,
        })?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Ok(Self { child, pid })
    }

    /// The process id (also its process group id), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends `signal` to the process group; a group that is already gone is not an error.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid {
            // ESRCH: the group has exited already, which is what we wanted.
            let _ = killpg(pid, signal);
        }
    }

    /// SIGTERM, then SIGKILL if the process is still there after `grace`; returns how it ended.
    pub async fn terminate(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(Signal::SIGKILL);
                self.child.wait().await
            }
        }
    }
}

impl Drop for ContainerProcess {
    fn drop(&mut self) {
        // Never leave a stray process group behind, whatever happened to the kubelet.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Exit code and signal as a container runtime reports them: 128 + signal for a killed process.
pub fn exit_code(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (255, None),
    }
}

fn open_log(path: &Path) -> Result<File, StartError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StartError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| StartError::Prepare {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hi".into())],
            workdir: dir.join("work"),
            mounts: Vec::new(),
            log: dir.join("c.log"),
        }
    }

    /// Polls the log until it contains `needle`, for at most 10 s.
    async fn wait_for_log(log: &Path, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} never appeared in the log"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("maos-kubelet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn output_goes_to_the_log_and_the_exit_code_is_kept() {
        let dir = temp_dir("exit");
        let mut process =
            ContainerProcess::start(&spec(&dir, "echo $GREETING; echo oops >&2; exit 3"))
                .expect("starts");
        let status = process.wait().await.expect("waits");
        assert_eq!(exit_code(status), (3, None));
        let log = std::fs::read_to_string(dir.join("c.log")).expect("log exists");
        assert!(log.contains("hi\n") && log.contains("oops\n"), "{log:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn terminate_sends_sigterm_first() {
        let dir = temp_dir("term");
        let script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
        let mut process = ContainerProcess::start(&spec(&dir, script)).expect("starts");
        // Wait until the trap is installed (the script says so) before signalling.
        wait_for_log(&dir.join("c.log"), "ready").await;
        let status = process
            .terminate(Duration::from_secs(10))
            .await
            .expect("stops");
        assert_eq!(exit_code(status), (0, None));
        let log = std::fs::read_to_string(dir.join("c.log")).expect("log");
        assert!(log.contains("got-term"), "{log:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
        let dir = temp_dir("kill");
        let script = "trap '' TERM; echo ready; while :; do sleep 0.1; done";
        let mut process = ContainerProcess::start(&spec(&dir, script)).expect("starts");
        wait_for_log(&dir.join("c.log"), "ready").await;
        let status = process
            .terminate(Duration::from_millis(200))
            .await
            .expect("stops");
        assert_eq!(exit_code(status), (137, Some(9)));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_start_error() {
        let dir = temp_dir("missing");
        let mut bad = spec(&dir, "");
        bad.program = "/nonexistent/maos-binary".into();
        assert!(matches!(
            ContainerProcess::start(&bad),
            Err(StartError::Exec { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
