//! A real S3-compatible server for tests and the testbed: moto's `moto_server` on a free
//! 127.0.0.1 port in a temporary directory, with authentication enforced, stopped by PID
//! (SIGTERM, then SIGKILL) when the handle is dropped.
//!
//! moto implements the S3 REST API in memory (buckets, objects, multipart uploads, listing,
//! versioning, …) and checks SigV4 signatures against the access keys of its own IAM. It
//! enforces that only after the first `INITIAL_NO_AUTH_ACTION_COUNT` authenticated API calls
//! (calls to its `/moto-api/` control endpoints do not count): the launcher spends exactly
//! those calls creating an IAM user, its access key and a policy allowing `s3:*`, so every
//! request after start-up must be signed with that key. Observed answers to anything else
//! (moto 5.2), all HTTP 403:
//!
//! - an access key id moto does not know: `InvalidAccessKeyId`;
//! - the right key id with a wrong secret: `SignatureDoesNotMatch`;
//! - no `Authorization` header at all: 403 with an empty body.
//!
//! Readiness is polled with a deadline (`GET /moto-api/config` answers), never assumed after a
//! sleep.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use super::{LaunchError, TempDir, free_port, poll_until};

/// Variable naming the `moto_server` to run, overriding the search.
pub const MOTO_SERVER_ENV: &str = "MAOS_MOTO_SERVER";
/// The program name, looked for in the build directory's venv and then on `PATH`.
const MOTO_SERVER: &str = "moto_server";
/// The venv `scripts/install-deps.sh` (`make deps`) creates in the build directory.
const MOTO_VENV: &str = "moto-venv";
/// How many API calls moto serves without authentication: exactly those of [`SETUP_SCRIPT`].
const SETUP_CALLS: u32 = 3;
/// The IAM user the launcher creates; its access key is the one clients use.
const IAM_USER: &str = "maos";
/// How often a freshly chosen port may turn out to be taken before we give up.
const PORT_ATTEMPTS: usize = 5;
/// How long moto (a Python program importing much of boto) may take to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long moto may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Creates the IAM user, its access key and an `s3:*` policy with the unauthenticated calls
/// (so any key signs them), with no retries (a retry would spend one more of those calls), and
/// prints the key as JSON. argv: endpoint, user name.
const SETUP_SCRIPT: &str = r#"
import json, sys
import boto3
from botocore.config import Config

endpoint, user = sys.argv[1], sys.argv[2]
iam = boto3.client(
    "iam",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bootstrap",
    aws_secret_access_key="bootstrap",
    config=Config(retries={"total_max_attempts": 1}),
)
iam.create_user(UserName=user)
key = iam.create_access_key(UserName=user)["AccessKey"]
policy = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}
iam.put_user_policy(UserName=user, PolicyName="s3-all", PolicyDocument=json.dumps(policy))
print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"#;

/// A `moto_server` on a free 127.0.0.1 port that accepts only requests signed with its one
/// access key; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    access_key_id: String,
    secret_access_key: String,
    _dir: TempDir,
}

impl S3Server {
    /// The region clients sign for (moto serves every region; this one needs no
    /// `LocationConstraint` when creating buckets).
    pub const REGION: &str = "us-east-1";

    /// Starts moto, waits (with a deadline) until it answers, and creates the access key
    /// clients must sign with.
    pub async fn start() -> Result<S3Server, LaunchError> {
        // Spawning and polling block; keep them off the runtime's worker threads.
        match tokio::task::spawn_blocking(Self::start_blocking).await {
            Ok(result) => result,
            Err(join) => match join.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(LaunchError::SetupCommand {
                    what: "starting moto_server".to_owned(),
                    detail: "the start-up task was cancelled".to_owned(),
                }),
            },
        }
    }

    fn start_blocking() -> Result<S3Server, LaunchError> {
        let program = moto_server_path()?;
        let dir = TempDir::new("maos-s3")?;
        let log = dir.path().join("moto.log");
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut child = spawn(&program, port, &log)?;
            match wait_ready(&mut child, port, &log) {
                Ok(()) => {
                    let mut server = S3Server {
                        child: Some(child),
                        port,
                        access_key_id: String::new(),
                        secret_access_key: String::new(),
                        _dir: dir,
                    };
                    // On failure `server` is dropped here, which stops moto.
                    let (id, secret) = create_access_key(&program, &server.endpoint())?;
                    server.access_key_id = id;
                    server.secret_access_key = secret;
                    return Ok(server);
                }
                Err(err @ LaunchError::ExitedEarly { .. }) if log_says_port_taken(&log) => {
                    last_err = Some(err);
                }
                Err(err) => {
                    crate::binaries::terminate(&mut child, STOP_GRACE);
                    return Err(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| LaunchError::NotReady {
            what: MOTO_SERVER.to_owned(),
            waited: Duration::ZERO,
            last: "no port attempt made".to_owned(),
        }))
    }

    /// The server's base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id requests must be signed with.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret of [`Self::access_key_id`].
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// An aws-sdk-s3 client for this server (path-style, region us-east-1, these credentials).
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_credentials(&self.access_key_id, &self.secret_access_key)
    }

    /// A client for this server that signs with other (for example wrong) credentials.
    pub fn client_with_credentials(&self, id: &str, secret: &str) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            // 127.0.0.1 has no DNS for `<bucket>.127.0.0.1`: the bucket goes in the path.
            .force_path_style(true)
            .region(Region::new(Self::REGION))
            .credentials_provider(Credentials::new(id, secret, None, None, "maos-s3-server"))
            // The SDK's default checksum behaviour is kept (CRC32 computed on uploads,
            // validated on downloads when the server sends one), as the operator uses it:
            // moto 5.2 stores and returns objects intact with it, single and multipart
            // (tests/s3_launcher.rs), so `RequestChecksumCalculation::WhenRequired` is not
            // needed.
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates bucket `name`, signed with this server's key.
    pub async fn create_bucket(&self, name: &str) -> Result<(), LaunchError> {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| LaunchError::SetupCommand {
                what: format!("CreateBucket {name}"),
                detail: aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
            })
    }

    /// The bytes of object `key` in `bucket`, read with this server's key; `None` when there is
    /// no such object.
    pub async fn object(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, LaunchError> {
        let failed = |what: &str, detail: String| LaunchError::SetupCommand {
            what: format!("{what} {bucket}/{key}"),
            detail,
        };
        let object = match self
            .client()
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => {
                let detail = aws_sdk_s3::error::DisplayErrorContext(err).to_string();
                return Err(failed("GetObject", detail));
            }
        };
        let body = object
            .body
            .collect()
            .await
            .map_err(|e| failed("reading", e.to_string()))?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    /// The environment an operator process needs to use this server: `MAOS_S3_ENDPOINT`,
    /// `MAOS_S3_FORCE_PATH_STYLE`, `MAOS_S3_REGION` and the standard AWS credential variables.
    pub fn operator_env(&self) -> Vec<(String, String)> {
        [
            ("MAOS_S3_ENDPOINT", self.endpoint()),
            ("MAOS_S3_FORCE_PATH_STYLE", "true".to_owned()),
            ("MAOS_S3_REGION", Self::REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", Self::REGION.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::binaries::terminate(&mut child, STOP_GRACE);
        }
    }
}

/// `MAOS_MOTO_SERVER` if set; else the venv `make deps` creates in the build directory (found
/// from this executable, as [`crate::binaries::find`] finds built binaries, then from
/// `CARGO_TARGET_DIR` or `<repo>/target`); else `moto_server` on `PATH`.
fn moto_server_path() -> Result<PathBuf, LaunchError> {
    if let Some(path) = std::env::var_os(MOTO_SERVER_ENV) {
        return Ok(PathBuf::from(path));
    }
    let in_venv = |target: &Path| target.join(MOTO_VENV).join("bin").join(MOTO_SERVER);
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(mut profile_dir) = exe.parent().map(Path::to_path_buf)
    {
        // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
        if profile_dir.ends_with("deps") {
            profile_dir.pop();
        }
        if let Some(target) = profile_dir.parent() {
            candidates.push(in_venv(target));
        }
    }
    let repo = crate::cluster::repo_root();
    let repo = repo.canonicalize().unwrap_or(repo);
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo.join(dir),
        None => repo.join("target"),
    };
    if !candidates.contains(&in_venv(&target)) {
        candidates.push(in_venv(&target));
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(MOTO_SERVER))
        .find(|p| p.is_file());
    on_path.ok_or_else(|| LaunchError::BinaryNotRunnable {
        program: MOTO_SERVER.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "not at {}, not on PATH, and {MOTO_SERVER_ENV} is not set",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ),
    })
}

/// Runs `moto_server` on `port` with its output in `log`, in its own process group.
fn spawn(program: &Path, port: u16, log: &Path) -> Result<Child, LaunchError> {
    let output = std::fs::File::create(log).map_err(|source| LaunchError::Setup {
        what: format!("moto_server log {}", log.display()),
        source,
    })?;
    let stderr = output.try_clone().map_err(|source| LaunchError::Setup {
        what: format!("moto_server log {}", log.display()),
        source,
    })?;
    Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", SETUP_CALLS.to_string())
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(stderr)
        // Its own process group: a Ctrl-C at the terminal reaches the launcher, which stops
        // the processes that use S3 before S3 itself.
        .process_group(0)
        .spawn()
        .map_err(|source| LaunchError::BinaryNotRunnable {
            program: program.display().to_string(),
            source,
        })
}

/// Polls `GET /moto-api/config` (which spends none of the unauthenticated calls) until moto
/// answers with a 2xx status, or fails if the process exits first.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), LaunchError> {
    let what = format!("moto_server on port {port}");
    poll_until(&what, READY_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::ExitedEarly {
                what: what.clone(),
                status,
                log: log.display().to_string(),
            });
        }
        Ok(match http_status(port, "/moto-api/config") {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(format!("GET /moto-api/config answered {status}")),
            Err(e) => Err(e.to_string()),
        })
    })
}

/// The status code of a plain `GET path` to 127.0.0.1:`port`.
fn http_status(port: u16, path: &str) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0_u8; 32];
    let mut len = 0;
    while len < head.len() {
        match stream.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    // "HTTP/1.1 200 OK": the code is the second word of the status line.
    String::from_utf8_lossy(&head[..len])
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line"))
}

fn log_says_port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log)
        .map(|s| s.contains("Address already in use"))
        .unwrap_or(false)
}

/// Runs [`SETUP_SCRIPT`] with the Python that runs `moto_server` (which has boto3, a
/// dependency of moto) and returns the new access key id and secret.
fn create_access_key(moto_server: &Path, endpoint: &str) -> Result<(String, String), LaunchError> {
    let python = python_of(moto_server);
    let output = Command::new(&python)
        .args(["-c", SETUP_SCRIPT, endpoint, IAM_USER])
        // The request goes to 127.0.0.1, never through a proxy the environment names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LaunchError::BinaryNotRunnable {
            program: python.display().to_string(),
            source,
        })?;
    let failed = |detail: String| LaunchError::SetupCommand {
        what: format!("creating IAM user {IAM_USER} and its access key in moto"),
        detail,
    };
    if !output.status.success() {
        return Err(failed(format!(
            "{} exited with {}: {}",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let key: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("unreadable output: {e}")))?;
    match (key["id"].as_str(), key["secret"].as_str()) {
        (Some(id), Some(secret)) => Ok((id.to_owned(), secret.to_owned())),
        _ => Err(failed(format!("no key in the output: {key}"))),
    }
}

/// The interpreter a pip-installed `moto_server` script names on its `#!` line (the venv's
/// Python); else a `python3` beside it; else `python3` on `PATH`.
fn python_of(moto_server: &Path) -> PathBuf {
    let shebang = std::fs::read(moto_server).ok().and_then(|bytes| {
        let first = bytes.split(|b| *b == b'\n').next()?;
        let line = String::from_utf8_lossy(first);
        let interpreter = line
            .strip_prefix("#!")?
            .split_whitespace()
            .next()?
            .to_owned();
        Some(PathBuf::from(interpreter))
    });
    if let Some(python) = shebang.filter(|p| {
        p.is_file()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
    }) {
        return python;
    }
    let beside = moto_server.with_file_name("python3");
    if beside.is_file() {
        beside
    } else {
        PathBuf::from("python3")
    }
}
