//! `maos-testbed up` with every part: kubectl runs a pod on its kubelet, Redis and the Claude
//! stand-in answer at the printed addresses, an operator started by hand with exactly the
//! printed environment runs a Task, and SIGTERM stops everything it started.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maos_e2e::cluster::KUBECTL;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn kubectl(kubeconfig: &str, cache: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(KUBECTL)
        .env("KUBECONFIG", kubeconfig)
        .env("KUBECACHEDIR", cache)
        .args(args)
        .output()
        .expect("kubectl runs")
}

#[test]
fn up_runs_pods_starts_redis_and_the_stand_in_and_stops_them_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("maos-testbed-up-{}", std::process::id()));
    let mut testbed = Command::new(env!("CARGO_BIN_EXE_maos-testbed"))
        .args([
            "up",
            "--dir",
            &dir.display().to_string(),
            "--redis",
            "standalone",
            "--claude",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("maos-testbed starts");
    let mut lines = BufReader::new(testbed.stdout.take().expect("piped")).lines();
    let kubeconfig = lines.next().expect("kubeconfig line").expect("readable");
    let mut env = HashMap::new();
    loop {
        let line = lines.next().expect("an export line").expect("readable");
        if line == "# testbed up; Ctrl-C or SIGTERM stops it" {
            break;
        }
        let Some(export) = line.strip_prefix("export ") else {
            assert!(line.starts_with('#'), "only exports and comments: {line}");
            continue;
        };
        let (name, value) = export.split_once('=').expect("NAME=value");
        env.insert(name.to_owned(), value.to_owned());
    }
    let cache = dir.join("kube-cache");

    // A pod runs on the kubelet and its output reaches kubectl logs.
    let run = kubectl(
        &kubeconfig,
        &cache,
        &[
            "run",
            "hello",
            "--image=local/exec",
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            "echo hello from the kubelet",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let phase = kubectl(
            &kubeconfig,
            &cache,
            &["get", "pod", "hello", "-o", "jsonpath={.status.phase}"],
        );
        if String::from_utf8_lossy(&phase.stdout) == "Succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the pod never succeeded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = kubectl(&kubeconfig, &cache, &["logs", "hello"]);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from the kubelet\n"
    );

    // Redis answers at the printed URL.
    let redis_url = env["MAOS_REDIS_URLS"].clone();
    let client = redis::Client::open(redis_url.as_str()).expect("url");
    let mut connection = client.get_connection().expect("redis answers");
    let pong: String = redis::cmd("PING").query(&mut connection).expect("PING");
    assert_eq!(pong, "PONG");
    drop(connection);

    // The stand-in refuses a request without its key: it is there and checks keys.
    let base = env["ANTHROPIC_BASE_URL"]
        .trim_start_matches("http://")
        .to_owned();
    assert!(
        std::net::TcpStream::connect(&base).is_ok(),
        "the stand-in listens at {base}"
    );
    assert!(env["ANTHROPIC_API_KEY"].starts_with("sk-ant-"));

    // An operator started by hand with exactly the printed environment runs a Task.
    let root = maos_e2e::cluster::repo_root();
    for args in [
        vec!["apply", "-f", root.join("crds").to_str().expect("utf-8")],
        vec![
            "create",
            "secret",
            "generic",
            "anthropic",
            &format!("--from-literal=api-key={}", env["ANTHROPIC_API_KEY"]),
        ],
    ] {
        let out = kubectl(&kubeconfig, &cache, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let operator_log = std::fs::File::create(dir.join("operator.log")).expect("log file");
    let mut operator = Command::new(
        maos_e2e::binaries::find("maos-operator", "maos-operator").expect("maos-operator built"),
    )
    .arg("run")
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("KUBECONFIG", &kubeconfig)
    .envs(env.iter().filter(|(name, _)| name.starts_with("MAOS_")))
    .stdout(operator_log.try_clone().expect("log file"))
    .stderr(operator_log)
    .spawn()
    .expect("maos-operator starts");
    for example in ["examples/agentpool.yaml", "examples/hello-task.yaml"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        // The CRDs are served once discovery has them.
        loop {
            let out = kubectl(
                &kubeconfig,
                &cache,
                &["apply", "-f", root.join(example).to_str().expect("utf-8")],
            );
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let phase = kubectl(
            &kubeconfig,
            &cache,
            &["get", "mtask", "hello", "-o", "jsonpath={.status.phase}"],
        );
        if String::from_utf8_lossy(&phase.stdout) == "Succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hand-started operator did not run the Task: {}",
            std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = operator.kill();
    let _ = operator.wait();

    kill(Pid::from_raw(testbed.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = testbed.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "maos-testbed did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        redis::Client::open(redis_url.as_str())
            .expect("url")
            .get_connection()
            .is_err(),
        "redis-server was stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
