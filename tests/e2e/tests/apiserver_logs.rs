//! `pods/log` through the real kubectl: the API server serves whatever the node's log source
//! (the process kubelet, or here a log the test writes) holds, with `--tail` and `-f`.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maos_e2e::apiserver::{PodLogSource, TestbedConfig};
use maos_e2e::cluster::TestCluster;

const DEADLINE: Duration = Duration::from_secs(20);

/// A node-side log the test appends to, as a running container would.
#[derive(Default)]
struct WrittenLog(Mutex<String>);

impl WrittenLog {
    fn append(&self, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_str(text);
    }
}

impl PodLogSource for WrittenLog {
    fn logs(&self, _: &str, pod: &str, _: Option<&str>) -> Option<String> {
        (pod == "writer").then(|| self.0.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn running_pod(cluster: &TestCluster) {
    cluster
        .run_kubectl(&["run", "writer", "--image=local/exec"], None)
        .expect("pod is created");
    cluster
        .run_kubectl(
            &[
                "patch",
                "pod",
                "writer",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Running"}}"#,
            ],
            None,
        )
        .expect("pod is running");
}

#[test]
fn logs_honour_tail_lines() {
    let log = Arc::new(WrittenLog::default());
    let cluster = TestCluster::start_with(TestbedConfig {
        logs: log.clone(),
        ..Default::default()
    })
    .expect("cluster starts");
    if cluster.testbed().is_none() {
        return; // the log source is the testbed's; a real cluster has its own kubelet
    }
    running_pod(&cluster);
    log.append("one\ntwo\nthree\n");
    let all = cluster
        .run_kubectl(&["logs", "writer"], None)
        .expect("logs");
    assert_eq!(all, "one\ntwo\nthree\n");
    let tailed = cluster
        .run_kubectl(&["logs", "writer", "--tail=2"], None)
        .expect("logs");
    assert_eq!(tailed, "two\nthree\n");
}

#[test]
fn follow_streams_new_lines_until_the_pod_finishes() {
    let log = Arc::new(WrittenLog::default());
    let cluster = TestCluster::start_with(TestbedConfig {
        logs: log.clone(),
        ..Default::default()
    })
    .expect("cluster starts");
    if cluster.testbed().is_none() {
        return;
    }
    running_pod(&cluster);
    log.append("first\n");
    let mut follower = cluster
        .kubectl()
        .args(["logs", "-f", "writer"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f starts");
    let stdout = follower.stdout.take().expect("stdout is piped");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(lines.recv_timeout(DEADLINE).expect("first line"), "first");
    log.append("second\n");
    assert_eq!(lines.recv_timeout(DEADLINE).expect("second line"), "second");

    cluster
        .run_kubectl(
            &[
                "patch",
                "pod",
                "writer",
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Succeeded"}}"#,
            ],
            None,
        )
        .expect("pod finishes");
    let deadline = Instant::now() + DEADLINE;
    loop {
        match follower.try_wait().expect("kubectl state") {
            Some(status) => {
                assert!(status.success(), "kubectl logs -f ended with {status}");
                break;
            }
            None if Instant::now() > deadline => {
                let _ = follower.kill();
                panic!("kubectl logs -f did not end when the pod finished");
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
